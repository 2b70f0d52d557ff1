// EVPN's neighbor features (src/evpn/control.ts, arp-snoop.ts, neigh.ts) against FRR, with
// Linux endpoints on both sides (no guest: a TAP port's namespace is host 1's endpoint):
//   host 1 (10.x.0.1): a Switch (a TAP port; VXLAN port vx100 for VNI 100), GoBGP,
//     EvpnControl with ARP and ND snooping and ARP suppression / ND proxy;
//   host 3 (10.x.0.3): FRR (advertise-all-vni, br100 + vx100) with an endpoint behind br100
//     (10.27.0.3, fd27::3); br100 has addresses of its own, so that zebra learns the
//     endpoint's neighbors and advertises its MAC+IP routes.
// ND snooping: FRR shows the TAP endpoint's MAC+IPv6 route. Suppression: the TAP endpoint
// resolves the far endpoint's IPv4 and IPv6 addresses while no ARP request or neighbor
// solicitation leaves host 1 (tcpdump on its underlay); TCP still moves 8 MiB with md5 intact.
// The VXLAN port's VLAN changed, and the port removed and added again: the fabric's MACs and
// flood VTEP are installed again, and traffic and suppression go on.
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import { GoBgp } from '../../src/evpn/gobgp.js';
import { EvpnControl } from '../../src/evpn/control.js';
import { FrrVtep } from '../lib/frr.js';
import { Netns, ip, netnsUnavailable, pingCount } from '../lib/netns.js';
import { Underlay } from '../lib/underlay.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { setLogSink } from '../../src/log.js';
import { until } from '../lib/wait.js';
import { MIB8, client, server } from '../lib/http-md5.js';
import { capture } from '../lib/tcpdump.js';

const TAG = `en${process.pid.toString(36).slice(-4)}`;
const NET = `10.${150 + (process.pid % 50)}.0`;
const H1 = `${NET}.1`;
const H3 = `${NET}.3`;
const VNI = 100;
const ASN = 65000;

/** Replies to `count` pings from ns to an IPv6 address. */
function ping6Count(ns: Netns, addr: string, count: number): number {
  try {
    return Number(/(\d+) packets received/.exec(ns.exec('busybox', 'ping', '-6', '-c', String(count), '-A', '-W', '2', addr))?.[1] ?? 0);
  } catch (e) {
    return Number(/(\d+) packets received/.exec(String((e as { stdout?: Buffer }).stdout ?? ''))?.[1] ?? 0);
  }
}

describe('peers: EVPN ND snooping, ARP suppression and ND proxy with FRR', function () {
  this.timeout(180_000);
  let tmp: TempDir;
  let ul: Underlay;
  let h1: Netns;
  let h3: Netns;
  let t1: Netns;
  let ep: Netns;
  let frr: FrrVtep;
  let bgp: GoBgp;
  let sw: Switch;
  let evpn: EvpnControl;
  let oldSink: ReturnType<typeof setLogSink>;
  let t1Mac = '';
  let epMac = '';
  let tapDev = '';

  const handlerSent = async () => (await sw.handlers()).find((h) => h.name === 'evpn-arp')?.sent ?? 0;
  const suppressed = async () => (await evpn.status()).vnis[0].suppressed ?? [];

  before(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-evpn-neigh-');
    ul = new Underlay(TAG, NET);
    h1 = ul.addHost(1);
    h3 = ul.addHost(3);
    frr = new FrrVtep({ ns: h3, asn: ASN, routerId: H3, vtep: H3, underlayDev: 'eth0', neighbors: [H1], vnis: [VNI] });
    ({ ns: ep, mac: epMac } = frr.addEndpoint(`${TAG}e`, VNI, '10.27.0.3/24'));
    ep.ip('addr', 'add', 'fd27::3/64', 'dev', 'eth0', 'nodad');
    h3.ip('addr', 'add', '10.27.0.254/24', 'dev', `br${VNI}`);
    h3.ip('addr', 'add', 'fd27::fe/64', 'dev', `br${VNI}`, 'nodad');
    await frr.start();
    sw = await Switch.create({ dataplane: 'worker' });
    await sw.addVxlanPort({ name: 'vx100', remote: H3, vni: VNI, socketFd: h1.udpSocket(H1, 4789) });
    t1 = new Netns(`${TAG}t`);
    const tap = await sw.addTapPort({ name: 'tap', ifname: `${TAG}t0` });
    tapDev = tap.socket;
    ip('link', 'set', 'dev', tapDev, 'netns', t1.name);
    t1.ip('addr', 'add', '10.27.0.1/24', 'dev', tapDev);
    t1.ip('addr', 'add', 'fd27::1/64', 'dev', tapDev, 'nodad');
    t1.ip('link', 'set', 'dev', tapDev, 'up');
    t1Mac = /link\/ether ([0-9a-f:]{17})/.exec(t1.ip('link', 'show', tapDev))![1];
    bgp = await GoBgp.start({ dir: tmp.join('gobgp'), netns: h1.name, asn: ASN, routerId: H1, listenAddress: H1, neighbors: [{ address: H3, asn: ASN }] });
    evpn = new EvpnControl(bgp, sw, { asn: ASN, routerId: H1, vnis: [{ vni: VNI, port: 'vx100' }], arpSnooping: true, ndSnooping: true, arpSuppression: true });
    await evpn.start();
  });

  after(async () => {
    await evpn?.close();
    await bgp?.close();
    await sw?.close();
    await frr?.stop();
    t1?.delete();
    ep?.delete();
    ul?.delete();
    tmp?.cleanup();
    if (oldSink) setLogSink(oldSink);
  });

  it("FRR's MAC+IPv4 and MAC+IPv6 routes for its endpoint reach the switch's suppression table", async () => {
    await until("FRR's type-3", 40_000, () => (sw.vxlanRemotes('vx100').some((r) => r.address === H3 && r.flood) ? true : undefined));
    // FRR's host talks to its endpoint: zebra sees the neighbors on br100 and advertises them.
    h3.exec('busybox', 'ping', '-c', '1', '-W', '2', '10.27.0.3');
    h3.exec('busybox', 'ping', '-6', '-c', '1', '-W', '2', 'fd27::3');
    const got = await until('both addresses suppressed', 30_000, async () => {
      const s = await suppressed();
      return s.some((x) => x.ip === '10.27.0.3' && x.mac === epMac) && s.some((x) => x.ip === 'fd27::3' && x.mac === epMac) ? s : undefined;
    });
    expect(got.filter((x) => x.mac === epMac).length).to.be.at.least(2);
    const flows = (await sw.dumpFlows()).map((f) => f.line);
    expect(flows.some((l) => l.includes('arp,dl_vlan=1,arp_tpa=10.27.0.3,arp_op=1 actions=handler:evpn-arp'))).to.equal(true);
    expect(flows.some((l) => l.includes('icmp6,dl_vlan=1,ipv6_dst=ff02::1:ff00:3,icmp_type=135 actions=handler:evpn-arp'))).to.equal(true);
  });

  it('ND snooping: FRR shows the TAP endpoint as a MAC+IPv6 route ([2]:[0]:[48]:[MAC]:[128]:[IP])', async () => {
    expect(await until('ping6', 30_000, () => (ping6Count(t1, 'fd27::3', 2) === 2 ? 2 : undefined))).to.equal(2);
    const table = await until('MAC+IPv6 at FRR', 20_000, () => {
      const t = frr.vtysh('show bgp l2vpn evpn route type macip');
      return t.includes(`[2]:[0]:[48]:[${t1Mac}]:[128]:[fd27::1]`) ? t : undefined;
    });
    console.log(`      FRR's show bgp l2vpn evpn route type macip:\n${table.replace(/^/gm, '        ')}`);
    const st = await evpn.status();
    expect(st.vnis[0].localMacs.find((m) => m.mac === t1Mac)?.ips).to.include('fd27::1');
    expect(st.routesOut).to.include(`[2]:[0]:[48]:[${t1Mac}]:[128]:[fd27::1] rd ${H1}:100 vni 100 via ${H1}`);
  });

  it('ARP suppression and ND proxy: the endpoint resolves the far one with no request leaving the host', async () => {
    t1.ip('neigh', 'flush', 'dev', tapDev);
    const before = await handlerSent();
    const cap = await capture(h1, `src host ${H1} and udp port 4789`);
    expect(pingCount(t1, '10.27.0.3', 3)).to.equal(3);
    expect(ping6Count(t1, 'fd27::3', 3)).to.equal(3);
    // What did leave: the echo requests (so the capture saw the tunnel), no request for a neighbor.
    await until('the echo requests in the capture', 10_000, () => {
      const t = cap.text();
      return /10\.27\.0\.1 > 10\.27\.0\.3: ICMP echo request/.test(t) && /fd27::1 > fd27::3: ICMP6, echo request/.test(t) ? true : undefined;
    });
    const out = await cap.stop();
    expect(out).to.not.match(/ARP, Request/);
    expect(out).to.not.match(/> ff02::1:ff[0-9a-f:]+: ICMP6, neighbor solicitation/);
    const neigh = t1.ip('neigh', 'show', 'dev', tapDev);
    expect(neigh).to.match(new RegExp(`10\\.27\\.0\\.3 lladdr ${epMac}`));
    expect(neigh).to.match(new RegExp(`fd27::3 lladdr ${epMac}`));
    expect((await handlerSent()) - before, 'the answers (an ARP reply, a neighbor advertisement)').to.be.at.least(2);
    console.log(`      the endpoint's neighbors: ${neigh.trim().replace(/\n/g, '; ')}`);
  });

  it('8 MiB each way over TCP between the endpoints, md5 intact', async () => {
    const srv = await server(ep);
    try {
      const r = await client(t1, '10.27.0.3');
      expect(r.down).to.equal(`${srv.md5}:${MIB8}`);
      expect(r.up).to.equal(r.sent);
    } finally {
      srv.kill();
    }
  });

  it("the VXLAN port's VLAN changed: the fabric's MAC and flood VTEP are installed again in the new VLAN", async () => {
    await sw.setVlan('vx100', { mode: 'access', vid: 2 });
    await sw.setVlan('tap', { mode: 'access', vid: 2 });
    const e = await until('the endpoint installed in VLAN 2', 10_000, async () => (await sw.remoteMacs()).find((m) => m.mac === epMac && m.vlan === 2));
    expect(e).to.deep.include({ portName: 'vx100', vtep: H3 });
    expect(sw.vxlanRemotes('vx100')).to.deep.include({ address: H3, flood: true });
    const flows = (await sw.dumpFlows()).map((f) => f.line);
    expect(flows.some((l) => l.includes('arp,dl_vlan=2,arp_tpa=10.27.0.3,arp_op=1 actions=handler:evpn-arp'))).to.equal(true);
    expect(flows.some((l) => l.includes('dl_vlan=1,'))).to.equal(false);
    t1.ip('neigh', 'flush', 'dev', tapDev);
    const before = await handlerSent();
    expect(await until('pings in VLAN 2', 20_000, () => (pingCount(t1, '10.27.0.3', 2) === 2 ? 2 : undefined))).to.equal(2);
    expect((await handlerSent()) - before, 'ARP answered here').to.be.at.least(1);
  });

  it('the VXLAN port removed and added again: installed again, traffic goes on', async () => {
    await sw.removePort('vx100');
    await until('the port gone', 5_000, async () => ((await sw.remoteMacs()).length === 0 ? true : undefined));
    // Nothing is answered for a fabric the VNI cannot reach.
    await until('the suppression flows gone', 5_000, async () => ((await sw.dumpFlows()).some((f) => f.line.includes('handler:evpn-arp') && f.line.includes('arp_tpa=')) ? undefined : true));
    await sw.addVxlanPort({ name: 'vx100', remote: H3, vni: VNI, vlan: { mode: 'access', vid: 2 }, socketFd: h1.udpSocket(H1, 4789) });
    await until('the endpoint installed on the new port', 10_000, async () => (await sw.remoteMacs()).find((m) => m.mac === epMac && m.portName === 'vx100' && m.vtep === H3));
    await until('flood VTEP back', 10_000, () => (sw.vxlanRemotes('vx100').some((r) => r.address === H3 && r.flood) ? true : undefined));
    const flows = (await sw.dumpFlows()).map((f) => f.line);
    expect(flows.some((l) => l.includes('arp,dl_vlan=2,arp_tpa=10.27.0.3,arp_op=1 actions=handler:evpn-arp'))).to.equal(true);
    expect(flows.some((l) => l.includes('in_port=vx100,') && l.includes('actions=NORMAL'))).to.equal(true);
    expect(await until('pings', 20_000, () => (pingCount(t1, '10.27.0.3', 2) === 2 ? 2 : undefined))).to.equal(2);
    expect(await until('ping6', 20_000, () => (ping6Count(t1, 'fd27::3', 2) === 2 ? 2 : undefined))).to.equal(2);
  });
});
