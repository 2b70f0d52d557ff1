// EVPN over an IPv6 underlay: two vhostkit hosts whose VTEPs, BGP session and next hops are
// IPv6 addresses (fd00:NN::1 and ::2). Each host: a Switch with a TAP port (its namespace is
// the endpoint, IPv4 10.28.0.x: the overlay carries any traffic) and a VXLAN port whose UDP
// socket is bound to the host's IPv6 address, GoBGP peering over IPv6, EvpnControl with the
// IPv6 VTEP. FRR is not the peer here: FRR 8.4 (Debian 12) has IPv4 VTEPs only (IPv6 VTEPs
// came in FRR 10.6, FRRouting/frr#20116).
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import { GoBgp } from '../../src/evpn/gobgp.js';
import { EvpnControl } from '../../src/evpn/control.js';
import { Netns, ip, netnsUnavailable, pingCount } from '../lib/netns.js';
import { Underlay } from '../lib/underlay.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { setLogSink } from '../../src/log.js';
import { until } from '../lib/wait.js';
import { MIB8, client, server } from '../lib/http-md5.js';
import { capture } from '../lib/tcpdump.js';

const TAG = `e6${process.pid.toString(36).slice(-4)}`;
const NET = `10.${200 + (process.pid % 50)}.0`;
const V6 = `fd00:${(process.pid % 0xffff).toString(16)}`;
const VNI = 100;
const ASN = 65000;

interface Host {
  ns: Netns;
  vtep: string;
  routerId: string;
  sw: Switch;
  bgp: GoBgp;
  evpn: EvpnControl;
  ep: Netns;
  mac: string;
}

describe('peers: EVPN over an IPv6 underlay between two vhostkit hosts', function () {
  this.timeout(180_000);
  let tmp: TempDir;
  let ul: Underlay;
  const hosts: Host[] = [];
  let oldSink: ReturnType<typeof setLogSink>;

  async function host(i: number): Promise<Host> {
    const ns = ul.addHost(i);
    const vtep = `${V6}::${i}`;
    const peer = `${V6}::${3 - i}`;
    ns.ip('addr', 'add', `${vtep}/64`, 'dev', 'eth0', 'nodad');
    const routerId = ul.address(i);
    const sw = await Switch.create({ dataplane: 'worker' });
    // The static remote is the VTEP itself: used only until EVPN starts.
    await sw.addVxlanPort({ name: 'vx100', remote: vtep, vni: VNI, socketFd: ns.udpSocket(vtep, 4789) });
    const ep = new Netns(`${TAG}t${i}`);
    ep.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    const tap = await sw.addTapPort({ name: 'tap', ifname: `${TAG}t${i}` });
    ip('link', 'set', 'dev', tap.socket, 'netns', ep.name);
    ep.ip('addr', 'add', `10.28.0.${i}/24`, 'dev', tap.socket);
    ep.ip('link', 'set', 'dev', tap.socket, 'up');
    const mac = /link\/ether ([0-9a-f:]{17})/.exec(ep.ip('link', 'show', tap.socket))![1];
    const bgp = await GoBgp.start({ dir: tmp.join(`gobgp${i}`), netns: ns.name, asn: ASN, routerId, listenAddress: vtep, neighbors: [{ address: peer, asn: ASN }] });
    const evpn = new EvpnControl(bgp, sw, { asn: ASN, routerId, vtep, vnis: [{ vni: VNI, port: 'vx100' }], arpSnooping: true });
    await evpn.start();
    return { ns, vtep, routerId, sw, bgp, evpn, ep, mac };
  }

  before(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-evpn-v6-');
    ul = new Underlay(TAG, NET);
    hosts.push(await host(1), await host(2));
  });

  after(async () => {
    for (const h of hosts) {
      await h.evpn.close();
      await h.bgp.close();
      await h.sw.close();
      h.ep.delete();
    }
    ul?.delete();
    tmp?.cleanup();
    if (oldSink) setLogSink(oldSink);
  });

  it('the session comes up over IPv6; each host floods to the other VTEP (a type-3 route with a 128-bit originator)', async () => {
    const [a, b] = hosts;
    await until('type-3 both ways', 40_000, () =>
      a.sw.vxlanRemotes('vx100').some((r) => r.address === b.vtep && r.flood) && b.sw.vxlanRemotes('vx100').some((r) => r.address === a.vtep && r.flood) ? true : undefined,
    );
    const st = await a.evpn.status();
    expect(st.neighbors.map((n) => [n.address, n.state])).to.deep.equal([[b.vtep, 'established']]);
    expect(st.routesIn.map((r) => r.route)).to.include(`[3]:[0]:[128]:[${b.vtep}] rd ${b.routerId}:100 vni 100 via ${b.vtep}`);
    expect(st.routesOut).to.include(`[3]:[0]:[128]:[${a.vtep}] rd ${a.routerId}:100 vni 100 via ${a.vtep}`);
  });

  it('the endpoints ping; each MAC is installed behind the other IPv6 VTEP, with its IPv4 in a MAC+IP route', async () => {
    const [a, b] = hosts;
    // What host 2 receives: VXLAN in IPv6 from host 1's VTEP.
    const cap = await capture(b.ns, `ip6 and src host ${a.vtep} and udp port 4789`);
    expect(await until('pings', 30_000, () => (pingCount(a.ep, '10.28.0.2', 3) === 3 ? 3 : undefined))).to.equal(3);
    const seen = await until('the echo requests in IPv6 VXLAN at host 2', 10_000, () => (/IP 10\.28\.0\.1 > 10\.28\.0\.2: ICMP echo request/.test(cap.text()) ? cap.text() : undefined));
    await cap.stop();
    expect(seen).to.include(`IP6 ${a.vtep}.`);
    expect(seen).to.include('vni 100');
    const ra = await until('b installed at a', 20_000, async () => (await a.sw.remoteMacs()).find((m) => m.mac === b.mac));
    const rb = await until('a installed at b', 20_000, async () => (await b.sw.remoteMacs()).find((m) => m.mac === a.mac));
    expect([ra.vtep, rb.vtep]).to.deep.equal([b.vtep, a.vtep]);
    const st = await until('MAC+IP route of b at a', 20_000, async () => {
      const s = await a.evpn.status();
      return s.routesIn.some((r) => r.route.startsWith(`[2]:[0]:[48]:[${b.mac}]:[32]:[10.28.0.2] rd ${b.routerId}:100 vni 100 via ${b.vtep}`)) ? s : undefined;
    });
    console.log(`      host 1's routes in: ${st.routesIn.map((r) => r.route).join('; ')}`);
  });

  it('8 MiB each way over TCP across the IPv6 underlay, md5 intact', async () => {
    const [a, b] = hosts;
    const srv = await server(b.ep);
    try {
      const r = await client(a.ep, '10.28.0.2');
      expect(r.down).to.equal(`${srv.md5}:${MIB8}`);
      expect(r.up).to.equal(r.sent);
    } finally {
      srv.kill();
    }
    const vx = a.sw.counters('vx100');
    console.log(`      host 1's VXLAN port: ${vx.rx_packets} frames in, ${vx.tx_packets} out, ${vx.flooded} flooded in`);
    expect(vx.tx_packets).to.be.greaterThan(1000);
  });
});
