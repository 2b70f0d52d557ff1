// vhostkit's BGP EVPN speaker (src/evpn/gobgp.ts: gobgpd driven over its gRPC API) against
// FRR, the reference EVPN VTEP (zebra + bgpd, `advertise-all-vni` over a Linux bridge and a
// kernel vxlan device), in namespaces joined by a bridged veth underlay:
//   host 1 (10.200.x.1): gobgpd started by GoBgp.start, VTEP 10.200.x.1;
//   host 3 (10.200.x.3): FRR, VNI 100 on br100/vx100, and a Linux endpoint behind br100.
// FRR must show and install (kernel fdb) the type-2 and type-3 routes vhostkit advertises,
// vhostkit must see FRR's type-3 and the type-2 of the endpoint's MAC; a higher MAC mobility
// sequence number replaces a route; a withdrawal removes it; a session that drops takes its
// routes with it, and they come back with the session.
import { expect } from 'chai';
import { join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { DEFAULT_PROTO_DIR, GoBgp, decodePath, encodePath, formatRoute, type EvpnMacIpRoute, type EvpnMulticastRoute, type EvpnRouteEvent } from '../../src/evpn/gobgp.js';
import { FrrVtep } from '../lib/frr.js';
import { Netns, netnsUnavailable } from '../lib/netns.js';
import { Underlay } from '../lib/underlay.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { setLogSink } from '../../src/log.js';
import { until } from '../lib/wait.js';

const TAG = `eg${process.pid.toString(36).slice(-4)}`;
const NET = `10.${200 + (process.pid % 50)}.0`;
const H1 = `${NET}.1`;
const H3 = `${NET}.3`;
const VNI = 100;
const ASN = 65000;
const RT = `${ASN}:${VNI}`;
const GUEST_MAC = '52:54:00:00:26:01';

describe('peers: EVPN routes between vhostkit (GoBGP) and FRR', function () {
  this.timeout(120_000);
  let tmp: TempDir;
  let ul: Underlay;
  let ep: Netns;
  let frr: FrrVtep;
  let bgp: GoBgp;
  let oldSink: ReturnType<typeof setLogSink>;
  const events: EvpnRouteEvent[] = [];
  const mcast: EvpnMulticastRoute = { kind: 'multicast', rd: `${H1}:${VNI}`, ethernetTag: 0, originator: H1, vni: VNI, nextHop: H1, routeTargets: [RT] };
  const mac = (seq: number): EvpnMacIpRoute => ({ kind: 'macip', rd: `${H1}:${VNI}`, ethernetTag: 0, mac: GUEST_MAC, ip: '10.26.0.1', vni: VNI, nextHop: H1, routeTargets: [RT], seq, sticky: false });
  let epMac = '';

  before(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-evpn-gobgp-');
    ul = new Underlay(TAG, NET);
    const h1 = ul.addHost(1);
    const h3 = ul.addHost(3);
    frr = new FrrVtep({ ns: h3, asn: ASN, routerId: H3, vtep: H3, underlayDev: 'eth0', neighbors: [H1], vnis: [VNI] });
    // The Linux endpoint behind FRR's bridge.
    ({ ns: ep, mac: epMac } = frr.addEndpoint(`${TAG}e`, VNI, '10.26.0.3/24'));
    await frr.start();
    bgp = await GoBgp.start({ dir: tmp.join('gobgp'), netns: h1.name, asn: ASN, routerId: H1, listenAddress: H1, neighbors: [{ address: H3, asn: ASN }] });
    bgp.on('route', (e) => events.push(e));
    bgp.watch();
  });

  after(async () => {
    await bgp?.close();
    await frr?.stop();
    ep?.delete();
    ul?.delete();
    tmp?.cleanup();
    if (oldSink) setLogSink(oldSink);
  });

  it('the session with FRR comes up (ListPeer: established)', async () => {
    const n = await until('an established session', 40_000, async () => {
      const ns = await bgp.neighbors();
      return ns.length === 1 && ns[0].state === 'established' ? ns : undefined;
    });
    expect(n[0]).to.include({ address: H3, asn: ASN, state: 'established' });
    expect((await bgp.global()).routerId).to.equal(H1);
  });

  it("FRR shows vhostkit's type-3 and type-2 routes and installs them in the kernel's fdb", async () => {
    await bgp.advertise(mcast);
    await bgp.advertise(mac(0));
    const table = await until('both routes in FRR', 20_000, () => {
      const t = frr.vtysh('show bgp l2vpn evpn');
      return t.includes(`[3]:[0]:[32]:[${H1}]`) && t.includes(`[2]:[0]:[48]:[${GUEST_MAC}]:[32]:[10.26.0.1]`) ? t : undefined;
    });
    console.log(`      FRR's show bgp l2vpn evpn (route distinguisher ${H1}:${VNI} is vhostkit's):\n${table.replace(/^/gm, '        ')}`);
    expect(table).to.include(`Route Distinguisher: ${H1}:${VNI}`);
    // zebra took them as a remote VTEP of VNI 100 and a remote MAC behind it: the kernel has
    // the flood entry (all-zero MAC) and the unicast entry, both towards vhostkit's VTEP.
    const fdb = await until('kernel fdb entries', 10_000, () => {
      const f = frr.kernelFdb(VNI);
      return f.includes(`00:00:00:00:00:00 dst ${H1}`) && f.includes(`${GUEST_MAC} dst ${H1}`) ? f : undefined;
    });
    expect(fdb).to.match(new RegExp(`${GUEST_MAC} dst ${H1.replace(/\./g, '\\.')} self extern_learn`));
    const vni = frr.vtyshJson<Record<string, unknown>>(`show evpn vni ${VNI}`);
    expect(JSON.stringify(vni)).to.include(H1);
  });

  it("vhostkit sees FRR's type-3 route and the type-2 route of the endpoint behind it", async () => {
    // The endpoint says something on its bridge, so the bridge learns its MAC and zebra advertises it.
    await until('FRR to advertise the endpoint', 20_000, () => {
      try {
        ep.exec('ping', '-c', '1', '-W', '1', '10.26.0.99');
      } catch {
        // nobody there; the ARP request is what counts
      }
      return events.some((e) => !e.withdrawn && e.route.kind === 'macip' && e.route.mac === epMac) ? true : undefined;
    });
    const fromFrr = bgp.routesIn().filter((e) => e.neighbor === H3);
    console.log(`      vhostkit's routes in from FRR:\n${fromFrr.map((e) => `        ${formatRoute(e.route)}`).join('\n')}`);
    const t3 = fromFrr.find((e) => e.route.kind === 'multicast');
    expect(t3?.route).to.deep.include({ kind: 'multicast', originator: H3, vni: VNI, nextHop: H3, routeTargets: [RT] });
    const t2 = fromFrr.find((e) => e.route.kind === 'macip' && e.route.mac === epMac);
    expect(t2?.route).to.deep.include({ kind: 'macip', mac: epMac, vni: VNI, nextHop: H3, routeTargets: [RT] });
    // The table as ListPath has it agrees with the watch.
    const listed = await bgp.listPaths();
    expect(listed.some((e) => e.neighbor === H3 && e.route.kind === 'macip' && e.route.mac === epMac)).to.equal(true);
    expect(listed.some((e) => e.neighbor === null && e.route.kind === 'multicast' && e.route.originator === H1)).to.equal(true);
  });

  it('a higher MAC mobility sequence number replaces the route at FRR (RFC 7432 §15)', async () => {
    await bgp.advertise(mac(2));
    const t = await until('MM:2 at FRR', 20_000, () => {
      const s = frr.vtysh(`show evpn mac vni ${VNI} mac ${GUEST_MAC}`);
      return /Remote VTEP: \S+/.test(s) && /seq.*\b2\b/i.test(s) ? s : undefined;
    });
    console.log(`      FRR's show evpn mac vni ${VNI} mac ${GUEST_MAC}:\n${t.replace(/^/gm, '        ')}`);
    expect(frr.vtysh('show bgp l2vpn evpn route type macip')).to.include('MM:2');
    expect(bgp.routesOut().filter((r) => r.kind === 'macip')).to.have.length(1);
  });

  it("a withdrawn type-2 route leaves FRR's table and the kernel's fdb", async () => {
    expect(await bgp.withdraw(mac(2))).to.equal(true);
    expect(await bgp.withdraw(mac(2)), 'a second withdrawal finds nothing').to.equal(false);
    await until('the MAC gone from FRR', 20_000, () => (frr.vtysh('show bgp l2vpn evpn').includes(GUEST_MAC) ? undefined : true));
    await until('the MAC gone from the kernel fdb', 10_000, () => (frr.kernelFdb(VNI).includes(GUEST_MAC) ? undefined : true));
    expect(frr.kernelFdb(VNI)).to.include(`00:00:00:00:00:00 dst ${H1}`);
  });

  it("a session that drops takes FRR's routes away; they return with it", async () => {
    await frr.stopBgpd();
    await until('FRR routes withdrawn in vhostkit', 30_000, () => (bgp.routesIn().some((e) => e.neighbor === H3) ? undefined : true));
    const withdrawn = events.filter((e) => e.withdrawn && e.neighbor === H3).map((e) => e.route.kind);
    expect(withdrawn).to.include.members(['multicast', 'macip']);
    expect((await bgp.neighbors())[0].state).to.not.equal('established');
    await frr.startBgpd();
    await until('FRR type-3 back', 40_000, () => (bgp.routesIn().some((e) => e.neighbor === H3 && e.route.kind === 'multicast') ? true : undefined));
    await until("vhostkit's type-3 back at FRR", 20_000, () => (frr.vtysh('show bgp l2vpn evpn').includes(`[3]:[0]:[32]:[${H1}]`) ? true : undefined));
  });

  it('bad routes and options get a clear error; the speaker keeps working', async () => {
    await expectReject(bgp.advertise({ ...mac(0), mac: 'zz' }), /MAC: expected a MAC address/);
    await expectReject(bgp.advertise({ ...mac(0), vni: 0 }), /VNI: expected an integer 1\.\.16777215/);
    await expectReject(bgp.advertise({ ...mcast, rd: 'nope' }), /route distinguisher: expected ADDRESS:N or ASN:N/);
    await expectReject(bgp.advertise({ ...mcast, routeTargets: [] }), /route targets: expected at least one/);
    await expectReject(GoBgp.start({ dir: tmp.join('bad'), asn: 0, routerId: H1, neighbors: [] }), /asn: expected an integer 1\.\.4294967295, got 0/);
    await expectReject(GoBgp.start({ dir: tmp.join('bad'), asn: ASN, routerId: 'x', neighbors: [] }), /routerId: expected an IPv4 address/);
    await expectReject(GoBgp.connect(`unix:${tmp.join('nothing.sock')}`, { timeoutMs: 1000 }), /did not answer/);
    expect((await bgp.neighbors())[0].address).to.equal(H3);
  });
});

async function expectReject(p: Promise<unknown>, re: RegExp): Promise<void> {
  let err: unknown = null;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected a rejection matching ${re}`).to.be.instanceOf(Error);
  expect((err as Error).message).to.match(re);
}

describe("peers: EVPN routes through GoBGP's API codec (the .proto files of golang-github-osrg-gobgp-dev)", () => {
  // What vhostkit sends is what it reads back: an AddPath request serialized to protobuf
  // bytes and parsed again, Any-wrapped NLRI and attributes included.
  const def = protoLoader.loadSync(
    ['gobgp.proto', 'attribute.proto'].map((f) => join(DEFAULT_PROTO_DIR, f)),
    { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, json: true, includeDirs: [DEFAULT_PROTO_DIR] },
  );
  const addPath = (def['apipb.GobgpApi'] as Record<string, { requestSerialize: (v: object) => Buffer; requestDeserialize: (b: Buffer) => Record<string, unknown> }>).AddPath;
  const wire = (p: Record<string, unknown>) => addPath.requestDeserialize(addPath.requestSerialize({ table_type: 'GLOBAL', path: p })).path as Record<string, unknown>;

  it('type 2 with an IPv4 and an IPv6 address, a four-octet ASN route target and a sequence number', () => {
    for (const ip of ['10.0.0.7', 'fd00::7', undefined]) {
      const r: EvpnMacIpRoute = {
        kind: 'macip',
        rd: '65000:7',
        ethernetTag: 0,
        mac: '52:54:00:ab:cd:ef',
        ...(ip ? { ip } : {}),
        vni: 16777215,
        nextHop: '192.0.2.1',
        routeTargets: ['65000:7', '4200000000:7'],
        seq: 9,
        sticky: false,
      };
      const bytes = addPath.requestSerialize({ table_type: 'GLOBAL', path: encodePath(r) });
      expect(bytes.includes(Buffer.from('apipb.EVPNMACIPAdvertisementRoute')), 'the NLRI is an Any of its own type').to.equal(true);
      expect(decodePath(wire(encodePath(r)))).to.deep.equal(r);
    }
  });

  it('type 3 with an IPv4 and an IPv6 originator (PMSI ingress replication, label = VNI)', () => {
    for (const a of ['192.0.2.9', '2001:db8::9']) {
      const r: EvpnMulticastRoute = { kind: 'multicast', rd: '192.0.2.9:42', ethernetTag: 0, originator: a, vni: 42, nextHop: a, routeTargets: ['65000:42'] };
      const p = wire(encodePath(r));
      expect(decodePath(p)).to.deep.equal(r);
      const pmsi = (p.pattrs as Record<string, unknown>[]).find((x) => String(x['@type']).endsWith('PmsiTunnelAttribute'))!;
      expect(pmsi).to.include({ type: 6, label: 42 });
      expect(Buffer.from(pmsi.id as Uint8Array)).to.have.length(a.includes(':') ? 16 : 4);
    }
  });

  it('anything that is not EVPN type 2 or 3 decodes to null', () => {
    expect(
      decodePath(wire({ family: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' }, nlri: { '@type': 'type.googleapis.com/apipb.IPAddressPrefix', prefix: '10.0.0.0', prefix_len: 8 }, pattrs: [] })),
    ).to.equal(null);
  });
});
