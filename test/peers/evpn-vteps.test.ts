// One VXLAN port, many remote VTEPs (EVPN's data plane, RFC 8365): the switch's VXLAN port
// knows two Linux VTEPs (kernel vxlan devices, VNI 100, in namespaces a and b on a bridged
// underlay) as flood VTEPs, and has their MACs installed behind them. A Linux endpoint behind
// the switch's TAP port (namespace t) pings both: ARP (broadcast) reaches both by head-end
// replication, and the ICMP unicast to a's MAC reaches a alone (b's vxlan device receives
// none of it). With a's MAC removed, the same unicast is unknown and flooded to b as well.
// Frames from the tunnel never move an installed entry.
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import { Netns, ip, netnsUnavailable } from '../lib/netns.js';
import { Underlay } from '../lib/underlay.js';
import { setLogSink } from '../../src/log.js';

const TAG = `ev${process.pid.toString(36).slice(-4)}`;
const NET = `10.${150 + (process.pid % 50)}.0`;
const VNI = 100;

function rxPackets(ns: Netns, dev: string): number {
  const j = JSON.parse(ns.ip('-s', '-j', 'link', 'show', dev)) as Array<{ stats64: { rx: { packets: number } } }>;
  return j[0].stats64.rx.packets;
}

function macOf(ns: Netns, dev: string): string {
  return /link\/ether ([0-9a-f:]{17})/.exec(ns.ip('link', 'show', dev))![1];
}

function ping(ns: Netns, addr: string, count: number): number {
  try {
    // busybox's ping (busybox-static is a test dependency; iputils-ping is not)
    const out = ns.exec('busybox', 'ping', '-c', String(count), '-A', '-W', '2', addr);
    return Number(/(\d+) packets received/.exec(out)?.[1] ?? 0);
  } catch (e) {
    const out = String((e as { stdout?: Buffer }).stdout ?? '');
    return Number(/(\d+) packets received/.exec(out)?.[1] ?? 0);
  }
}

describe('peers: a VXLAN port with many remote VTEPs (head-end replication, installed MACs)', function () {
  this.timeout(60_000);
  let ul: Underlay;
  let t: Netns;
  let sw: Switch;
  let oldSink: ReturnType<typeof setLogSink>;
  const A = `${NET}.1`;
  const B = `${NET}.2`;
  const H = `${NET}.9`;
  let macA = '';
  let macB = '';

  before(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    oldSink = setLogSink(() => undefined);
    ul = new Underlay(TAG, NET);
    const a = ul.addHost(1);
    const b = ul.addHost(2);
    const h = ul.addHost(9);
    for (const [ns, addr, inner] of [
      [a, A, '10.27.0.1'],
      [b, B, '10.27.0.2'],
    ] as const) {
      ns.ip('link', 'add', 'vx0', 'type', 'vxlan', 'id', String(VNI), 'local', addr, 'dstport', '4789', 'nolearning', 'dev', 'eth0');
      ns.exec('bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', H);
      ns.ip('addr', 'add', `${inner}/24`, 'dev', 'vx0');
      ns.ip('link', 'set', 'vx0', 'up');
    }
    macA = macOf(a, 'vx0');
    macB = macOf(b, 'vx0');
    sw = await Switch.create({ dataplane: 'worker' });
    // The switch's end of the tunnel: a UDP socket bound in namespace h, one static remote
    // (unused once it has remote VTEPs).
    await sw.addVxlanPort({ name: 'vx', remote: A, vni: VNI, socketFd: h.udpSocket(H, 4789) });
    t = new Netns(`${TAG}t`);
    // IPv6 off in the endpoint: its MLD reports and router solicitations would be flooded to
    // b at times of their own, and b must see only what the test sends.
    t.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    t.exec('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
    const tap = await sw.addTapPort({ name: 'tap', ifname: `${TAG}t0` });
    ip('link', 'set', 'dev', tap.socket, 'netns', t.name);
    t.exec('sysctl', '-qw', `net.ipv6.conf.${tap.socket}.disable_ipv6=1`);
    t.ip('addr', 'add', '10.27.0.3/24', 'dev', tap.socket);
    t.ip('link', 'set', 'dev', tap.socket, 'up');
    await sw.setVxlanRemote('vx', A, { flood: true });
    await sw.setVxlanRemote('vx', B, { flood: true });
    await sw.installRemoteMac('vx', macA, A);
    await sw.installRemoteMac('vx', macB, B);
  });

  after(async () => {
    await sw?.close();
    t?.delete();
    ul?.delete();
    if (oldSink) setLogSink(oldSink);
  });

  it('pings both VTEPs: ARP by head-end replication, replies back through the one port', () => {
    expect(ping(t, '10.27.0.1', 3)).to.equal(3);
    expect(ping(t, '10.27.0.2', 3)).to.equal(3);
    expect(sw.vxlanRemotes('vx')).to.deep.equal([
      { address: A, flood: true },
      { address: B, flood: true },
    ]);
  });

  it("unicast to a's MAC reaches a alone; frames from the tunnel leave the installed entries as they are", async () => {
    const [a, b] = ul.hosts;
    const a0 = rxPackets(a, 'vx0');
    const b0 = rxPackets(b, 'vx0');
    expect(ping(t, '10.27.0.1', 20)).to.equal(20);
    const da = rxPackets(a, 'vx0') - a0;
    const db = rxPackets(b, 'vx0') - b0;
    console.log(`      20 pings to a: a's vxlan device received ${da} frames, b's ${db}`);
    expect(da).to.be.at.least(20);
    expect(db, "frames b's vxlan device received").to.equal(0);
    const installed = (await sw.remoteMacs()).map((e) => `${e.mac} ${e.vtep} ${e.portName} ${e.vlan}`).sort();
    expect(installed).to.deep.equal([`${macA} ${A} vx 1`, `${macB} ${B} vx 1`].sort());
  });

  it("with a's MAC removed, the unicast is unknown and flooded: b gets copies too", async () => {
    const [a, b] = ul.hosts;
    expect(await sw.removeRemoteMac('vx', macA, A)).to.equal(true);
    expect(await sw.removeRemoteMac('vx', macA, A), 'a second removal finds nothing').to.equal(false);
    const b0 = rxPackets(b, 'vx0');
    const a0 = rxPackets(a, 'vx0');
    // a's replies come through the tunnel and are learned (port vx, no VTEP): still unknown
    // as to which VTEP, so flooded.
    expect(ping(t, '10.27.0.1', 10)).to.equal(10);
    expect(rxPackets(a, 'vx0') - a0).to.be.at.least(10);
    expect(rxPackets(b, 'vx0') - b0).to.be.at.least(10);
    await sw.installRemoteMac('vx', macA, A);
    const b1 = rxPackets(b, 'vx0');
    expect(ping(t, '10.27.0.1', 10)).to.equal(10);
    expect(rxPackets(b, 'vx0') - b1, 'installed again: b gets none').to.equal(0);
  });

  it('bad requests get clear errors', async () => {
    let err: Error | null = null;
    try {
      await sw.installRemoteMac('tap', macA, A);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.equal('port tap is not a VXLAN port');
    err = null;
    try {
      await sw.installRemoteMac('vx', 'zz', A);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.match(/bad MAC address zz/);
  });
});
