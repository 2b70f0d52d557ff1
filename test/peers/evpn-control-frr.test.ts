// The EVPN control plane (src/evpn/control.ts) of a vhostkit switch against FRR, with Linux
// endpoints on both sides (no guest: a TAP port's namespace is host 1's endpoint):
//   host 1 (10.x.0.1): a Switch (a TAP port, a VXLAN port for VNI 100 whose socket is in
//     host 1's namespace), GoBGP, EvpnControl;
//   host 3 (10.x.0.3): FRR (advertise-all-vni, br100 + vx100) and an endpoint behind br100.
// The endpoints ping and move 8 MiB over TCP both ways with md5 intact; FRR shows vhostkit's
// type-2 (the TAP endpoint's MAC, learned by the switch, and with ARP snooping its MAC+IP)
// and type-3 routes; the switch has
// FRR's endpoint installed and FRR's VTEP as a flood VTEP; a MAC that ages out is withdrawn;
// a session that drops takes FRR's routes out of the switch, and traffic resumes when it
// comes back.
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

const TAG = `ec${process.pid.toString(36).slice(-4)}`;
const NET = `10.${100 + (process.pid % 50)}.0`;
const H1 = `${NET}.1`;
const H3 = `${NET}.3`;
const VNI = 100;
const ASN = 65000;
const AGING_S = 4;

describe('peers: EVPN control plane of a vhostkit switch with FRR', function () {
  this.timeout(180_000);
  let tmp: TempDir;
  let ul: Underlay;
  let t1: Netns;
  let ep: Netns;
  let frr: FrrVtep;
  let bgp: GoBgp;
  let sw: Switch;
  let evpn: EvpnControl;
  let oldSink: ReturnType<typeof setLogSink>;
  let t1Mac = '';
  let epMac = '';

  before(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-evpn-ctl-');
    ul = new Underlay(TAG, NET);
    const h1 = ul.addHost(1);
    const h3 = ul.addHost(3);
    frr = new FrrVtep({ ns: h3, asn: ASN, routerId: H3, vtep: H3, underlayDev: 'eth0', neighbors: [H1], vnis: [VNI] });
    ({ ns: ep, mac: epMac } = frr.addEndpoint(`${TAG}e`, VNI, '10.26.0.3/24'));
    await frr.start();
    sw = await Switch.create({ dataplane: 'worker', agingSeconds: AGING_S });
    await sw.addVxlanPort({ name: 'vx100', remote: H3, vni: VNI, socketFd: h1.udpSocket(H1, 4789) });
    t1 = new Netns(`${TAG}t`);
    // IPv6 off in the endpoint: no router solicitations or ND keep its MAC alive when it is idle.
    t1.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    t1.exec('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
    const tap = await sw.addTapPort({ name: 'tap', ifname: `${TAG}t0` });
    ip('link', 'set', 'dev', tap.socket, 'netns', t1.name);
    t1.ip('addr', 'add', '10.26.0.1/24', 'dev', tap.socket);
    t1.ip('link', 'set', 'dev', tap.socket, 'up');
    t1Mac = /link\/ether ([0-9a-f:]{17})/.exec(t1.ip('link', 'show', tap.socket))![1];
    bgp = await GoBgp.start({ dir: tmp.join('gobgp'), netns: h1.name, asn: ASN, routerId: H1, listenAddress: H1, neighbors: [{ address: H3, asn: ASN }] });
    evpn = new EvpnControl(bgp, sw, { asn: ASN, routerId: H1, vnis: [{ vni: VNI, port: 'vx100' }], agingSeconds: AGING_S, arpSnooping: true });
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

  it("FRR's VTEP becomes a flood VTEP of the VXLAN port (its type-3 route)", async () => {
    await until("FRR's type-3", 40_000, () => (sw.vxlanRemotes('vx100').some((r) => r.address === H3 && r.flood) ? true : undefined));
  });

  it('the endpoints ping each other; FRR shows the MAC the switch learned (type-2) and the type-3', async () => {
    expect(await until('pings', 30_000, () => (pingCount(t1, '10.26.0.3', 3) === 3 ? 3 : undefined))).to.equal(3);
    // With ARP snooping, the MAC is advertised with its IPv4 address too (a MAC+IP route).
    const table = await until('type-2 (MAC, MAC+IP) and type-3 at FRR', 20_000, () => {
      const t = frr.vtysh('show bgp l2vpn evpn');
      return t.includes(`[2]:[0]:[48]:[${t1Mac}]\n`) && t.includes(`[2]:[0]:[48]:[${t1Mac}]:[32]:[10.26.0.1]`) && t.includes(`[3]:[0]:[32]:[${H1}]`) ? t : undefined;
    });
    console.log(`      FRR's show bgp l2vpn evpn:\n${table.replace(/^/gm, '        ')}`);
    expect(frr.kernelFdb(VNI)).to.include(`${t1Mac} dst ${H1}`);
    const installed = await until("FRR's endpoint installed in the switch", 20_000, async () => {
      const r = (await sw.remoteMacs()).find((e) => e.mac === epMac);
      return r;
    });
    expect(installed).to.deep.include({ mac: epMac, vtep: H3, portName: 'vx100' });
    const st = await evpn.status();
    console.log(`      vhostkit: routes in ${JSON.stringify(st.routesIn)}; out ${JSON.stringify(st.routesOut)}`);
    expect(st.vnis[0].floodVteps).to.deep.equal([H3]);
    expect(st.vnis[0].localMacs.find((m) => m.mac === t1Mac)).to.deep.include({ ip: '10.26.0.1' });
    expect(JSON.stringify(frr.vtyshJson(`show evpn arp-cache vni ${VNI}`))).to.include('10.26.0.1');
  });

  it('8 MiB each way over TCP between the endpoints, md5 intact', async () => {
    const srv = await server(ep);
    try {
      const r = await client(t1, '10.26.0.3');
      expect(r.down).to.equal(`${srv.md5}:${MIB8}`);
      expect(r.up).to.equal(r.sent);
    } finally {
      srv.kill();
    }
    const vx = sw.counters('vx100');
    console.log(`      VXLAN port: ${vx.rx_packets} frames in, ${vx.tx_packets} out, ${vx.flooded} flooded in`);
  });

  it('a MAC that ages out of the switch is withdrawn from FRR', async () => {
    // The endpoint falls silent (its ARP entry for the peer made permanent: no probes).
    t1.ip('neigh', 'replace', '10.26.0.3', 'lladdr', epMac, 'dev', `${TAG}t0`, 'nud', 'permanent');
    await until(`${t1Mac} withdrawn at FRR`, 40_000, () => (frr.vtysh('show bgp l2vpn evpn').includes(t1Mac) ? undefined : true));
    expect(frr.kernelFdb(VNI)).to.not.include(t1Mac);
    // It speaks again: learned, advertised again.
    expect(pingCount(t1, '10.26.0.3', 2)).to.equal(2);
    await until(`${t1Mac} back at FRR`, 20_000, () => (frr.vtysh('show bgp l2vpn evpn').includes(t1Mac) ? true : undefined));
  });

  it("a session that drops takes FRR's routes out of the switch; traffic resumes when it returns", async () => {
    await frr.stopBgpd();
    await until("FRR's routes gone from the switch", 40_000, async () => {
      const flood = sw.vxlanRemotes('vx100').some((r) => r.flood);
      const mac = (await sw.remoteMacs()).some((e) => e.mac === epMac);
      return !flood && !mac ? true : undefined;
    });
    await frr.startBgpd();
    await until("FRR's type-3 back", 60_000, () => (sw.vxlanRemotes('vx100').some((r) => r.address === H3 && r.flood) ? true : undefined));
    expect(await until('pings again', 30_000, () => (pingCount(t1, '10.26.0.3', 3) === 3 ? 3 : undefined))).to.equal(3);
  });
  it('gobgpd dying is logged; the process and the switch go on, status says why', async () => {
    const logs: string[] = [];
    setLogSink((r) => logs.push(`${r.level} ${r.msg} ${String(r.error ?? '')}`));
    process.kill(bgp.pid!, 'SIGKILL');
    await until('the failure logged', 10_000, () => (logs.some((l) => l.startsWith('error BGP speaker failed') || l.startsWith('error gobgpd exited')) ? true : undefined));
    // What the fabric had installed goes (no withdrawal can come any more).
    await until('installed MACs and flood VTEPs removed', 10_000, async () => ((await sw.remoteMacs()).length === 0 && !sw.vxlanRemotes('vx100').some((r) => r.flood) ? true : undefined));
    let err: Error | null = null;
    try {
      await evpn.status();
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.match(/GoBGP ListPeer/);
  });
});
