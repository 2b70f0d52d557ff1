// The switch's flow table: flows in ovs-ofctl's syntax (src/switch/flows.ts) run by the
// native forwarder after classification (native/switch/switch_flows.cc), on a switch with
// its data plane on a worker and our frontend as the guests.
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import type { NetGuest } from '../../src/loadgen/net-guest.js';
import { A, B, C, ThreeGuests } from './three-guests.js';
import { DEFAULT_PRIORITY, formatFlow, parseFlow } from '../../src/switch/flows.js';
import { FlowOp, FlowWord } from '../../src/native/switch.js';
import { setLogSink } from '../../src/log.js';
import { NetFeature } from '../../src/virtio/net.js';
import { bit } from '../../src/virtio/features.js';
import { arpRequest, checkTcp, ethernet, icmpEchoRequest, offloadHdr, tcpFrame } from '../lib/packets.js';

const ports: Record<string, number> = { vm1: 1, vm2: 2 };
const port = (n: string) => {
  if (!(n in ports)) throw new RangeError(`no port ${n}`);
  return ports[n];
};

describe('flows: ovs-ofctl syntax', () => {
  it('parses matches and actions, writes them back in canonical form', () => {
    const f = parseFlow('priority=100,tcp,nw_dst=10.0.0.0/24,tp_dst=80,actions=drop', port);
    expect([f.priority, f.match, f.actions]).to.deep.equal([100, 'tcp,nw_dst=10.0.0.0/24,tp_dst=80', 'drop']);
    expect(f.words[FlowWord.NW_DST_MASK] >>> 0).to.equal(0xffffff00);
    const g = parseFlow('in_port=vm1,dl_vlan=10,dl_dst=52:54:00:00:00:01,actions=output:vm2', port);
    expect([g.priority, g.match, g.actions]).to.deep.equal([DEFAULT_PRIORITY, 'in_port=vm1,dl_dst=52:54:00:00:00:01,dl_vlan=10', 'output:vm2']);
    expect(g.words[FlowWord.N_ACTIONS]).to.equal(1);
    expect([...g.words.subarray(FlowWord.WORDS)]).to.deep.equal([FlowOp.OUTPUT, 2, 0, 0, 0]);
    expect(parseFlow('icmp,nw_src=10.1.2.3,actions=normal', port).match).to.equal('icmp,nw_src=10.1.2.3');
    expect(parseFlow('dl_type=0x88b5,actions=flood', port).match).to.equal('dl_type=0x88b5');
    expect(parseFlow('', port, true).words[FlowWord.FIELDS], 'an empty match for del-flows: every flow').to.equal(0);
    const e = parseFlow('tcp,tcp_flags=+syn-ack,nw_ttl=64,actions=pop_vlan,mod_vlan_vid:7,mod_dl_dst:52:54:00:00:00:0C,mod_nw_src:10.9.9.9,mod_tp_dst:8080,dec_ttl,output:vm1,NORMAL', port);
    expect([e.match, e.actions]).to.deep.equal([
      'tcp,nw_ttl=64,tcp_flags=+syn-ack',
      'strip_vlan,mod_vlan_vid:7,mod_dl_dst:52:54:00:00:00:0c,mod_nw_src:10.9.9.9,mod_tp_dst:8080,dec_ttl,output:vm1,NORMAL',
    ]);
    expect([e.words[FlowWord.TCP_FLAGS], e.words[FlowWord.TCP_FLAGS_MASK]]).to.deep.equal([0x002, 0x012]);
    expect(e.words[FlowWord.N_ACTIONS]).to.equal(8);
    expect(parseFlow('tcp,tcp_flags=0x2/0x12,actions=drop', port).match).to.equal('tcp,tcp_flags=+syn-ack');
    const v6 = parseFlow('tcp6,ipv6_src=FD00:0:0:0:0:0:0:1,ipv6_dst=fd00:0:0:1::99/64,tp_dst=80,actions=set_field:fd00::9->ipv6_dst,set_field:8080->tcp_dst,dec_ttl,output:vm1', port);
    expect([v6.match, v6.actions]).to.deep.equal(['tcp6,ipv6_src=fd00::1,ipv6_dst=fd00:0:0:1::/64,tp_dst=80', 'set_field:fd00::9->ipv6_dst,mod_tp_dst:8080,dec_ttl,output:vm1']);
    expect(v6.words[FlowWord.IPV6_DST_LEN]).to.equal(64);
    expect(parseFlow('icmp6,ipv6_dst=::,actions=drop', port).match).to.equal('icmp6,ipv6_dst=::');
    expect(parseFlow('ipv6,ipv6_src=1:0:0:2::3:0:4/128,actions=drop', port).match).to.equal('ipv6,ipv6_src=1::2:0:3:0:4');
    // ICMP type and code (Open vSwitch's icmp_type, icmp_code; icmpv6_type for ICMPv6) in the ports' words.
    const nd = parseFlow('icmp6,icmpv6_type=135,icmpv6_code=0,actions=normal', port);
    expect([nd.match, nd.words[FlowWord.TP_SRC], nd.words[FlowWord.TP_DST]]).to.deep.equal(['icmp6,icmp_type=135,icmp_code=0', 135, 0]);
    expect(parseFlow('icmp,icmp_type=8,actions=drop', port).match).to.equal('icmp,icmp_type=8');
    expect(parseFlow('icmp6,icmp_type=136,actions=drop', port).match).to.equal('icmp6,icmp_type=136');
    // ARP's addresses and opcode in IPv4's words.
    const a = parseFlow('arp,arp_op=1,arp_tpa=10.0.0.9,arp_spa=10.0.0.0/8,actions=normal', port);
    expect([a.match, a.words[FlowWord.NW_PROTO], a.words[FlowWord.NW_DST], a.words[FlowWord.NW_SRC_MASK] >>> 0]).to.deep.equal([
      'arp,arp_spa=10.0.0.0/8,arp_tpa=10.0.0.9,arp_op=1',
      1,
      0x0a000009,
      0xff000000,
    ]);
    for (const t of [nd, a]) expect([...parseFlow(`${t.match},actions=${t.actions}`, port).words]).to.deep.equal([...t.words]);
    // Written back, a flow parses to the same words.
    const again = parseFlow(`priority=${e.priority},${e.match},actions=${e.actions}`, port);
    expect([...again.words]).to.deep.equal([...e.words]);
    const t = parseFlow('idle_timeout=10,hard_timeout=300,udp,actions=normal', port);
    expect([t.match, t.idleTimeout, t.hardTimeout, t.words[FlowWord.IDLE_TIMEOUT], t.words[FlowWord.HARD_TIMEOUT]]).to.deep.equal(['udp', 10, 300, 10, 300]);
    expect(formatFlow(t, 1, 60, 2500)).to.equal(' table=0, n_packets=1, n_bytes=60, idle_timeout=10, hard_timeout=300, idle_age=2, priority=32768,udp actions=NORMAL');
  });

  it('refuses what it cannot run, saying why', () => {
    const bad: Array<[string, RegExp]> = [
      ['tcp,tp_dst=80', /no actions=/],
      ['nw_dst=10.0.0.1,actions=drop', /need ip/],
      ['ip,tp_dst=80,actions=drop', /need tcp or udp/],
      ['tcp,tp_dst=70000,actions=drop', /tp_dst=70000: expected a number 0..65535/],
      ['foo=1,actions=drop', /foo: unknown field/],
      ['sctp,actions=drop', /sctp: unknown keyword/],
      ['ip,nw_dst=10.0.0.300,actions=drop', /expected an IPv4 address/],
      ['in_port=vm9,actions=drop', /no port vm9/],
      ['ip,actions=output:vm2,strip_vlan', /edits come before outputs/],
      ['ip,actions=mod_nw_dst:10.0.0.1', /edits without an output/],
      ['ip,actions=frob,output:vm2', /frob: unknown action/],
      ['ip,actions=mod_vlan_vid:5000,output:vm2', /0..4095/],
      ['ip,actions=mod_nw_dst:10.0.0.0/24,output:vm2', /not a prefix/],
      ['ip,actions=handler:fw', /no handlers on this switch/],
      ['udp,tcp_flags=+syn,actions=drop', /tcp_flags needs tcp/],
      ['tcp,tcp_flags=+syn-foo,actions=drop', /unknown flag foo/],
      ['ip,nw_ttl=300,actions=drop', /nw_ttl=300/],
      ['ip,ipv6_dst=fd00::1,actions=drop', /need ipv6/],
      ['ipv6,ipv6_dst=fd00::1::2,actions=drop', /expected an IPv6 address/],
      ['ipv6,ipv6_dst=fd00::/129,actions=drop', /expected an IPv6 address/],
      ['ipv6,actions=set_field:1->frob,output:vm1', /set_field of frob/],
      ['tcp,udp,actions=drop', /nw_proto is given twice/],
      ['idle_timeout=70000,actions=drop', /idle_timeout=70000/],
      ['tcp,icmp_type=8,actions=drop', /icmp_type: need icmp/],
      ['icmp,icmpv6_type=135,actions=drop', /icmpv6_type: need icmp/],
      ['icmp,icmp_type=256,actions=drop', /icmp_type=256: expected a number 0..255/],
      ['icmp,icmp_type=8,tp_src=8,actions=drop', /tp_src and tp_dst need tcp or udp/],
      ['icmp6,icmp_type=135,icmpv6_type=136,actions=drop', /the same field given twice/],
      ['ip,arp_tpa=10.0.0.1,actions=drop', /arp_tpa: need arp/],
      ['arp,nw_dst=10.0.0.1,actions=drop', /an ARP flow matches arp_spa/],
      ['arp,arp_op=1,nw_proto=1,actions=drop', /nw_proto need ip or ipv6/],
      ['arp,arp_tpa=10.0.0.256,actions=drop', /expected an IPv4 address/],
    ];
    for (const [t, re] of bad) expect(() => parseFlow(t, port), t).to.throw(RangeError, re);
    expect(() => parseFlow('tcp,actions=drop', port, true)).to.throw(/no actions=/);
    expect(() => parseFlow('tcp,idle_timeout=5', port, true)).to.throw(/idle_timeout: not a match field/);
  });
});

// With two data-plane threads too: a and c on thread 0, b on thread 1.
for (const threads of [1, 2]) {
  describe(`flows on a running switch (${threads} data-plane thread${threads > 1 ? 's' : ''})`, function () {
    this.timeout(20_000);
    let sw: Switch;
    let rig: ThreeGuests;
    let guests: Record<string, NetGuest>;
    let oldSink: ReturnType<typeof setLogSink>;

    beforeEach(async () => {
      oldSink = setLogSink(() => undefined);
      sw = await Switch.create({ dataplane: 'worker', threads });
      // a may send offloads (partial checksums, TSO); b and c take none.
      rig = await ThreeGuests.attach(sw, (name) => (name === 'a' ? { extraFeatures: bit(NetFeature.CSUM) | bit(NetFeature.HOST_TSO4), maxFrame: 66000 } : { rxBuffers: 256 }));
      guests = rig.guests;
    });
    afterEach(async () => {
      rig.close();
      await sw.close();
      setLogSink(oldSink);
    });

    const got = (ms = 300) => rig.got(ms);

    it('drops what a drop flow matches and counts it; the rest is switched as before', async () => {
      await sw.addFlow('priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80,actions=drop');
      const web = tcpFrame(new Uint8Array(10), { src: A, dst: B, dport: 80 }).frame;
      const ssh = tcpFrame(new Uint8Array(10), { src: A, dst: B, dport: 22 }).frame;
      expect(guests.a.send([web, web, ssh])).to.equal(3);
      const r = await got();
      expect(r.b.length, 'only the frame to port 22 reaches b').to.equal(1);
      expect(r.c.length).to.equal(0);
      const [flow] = await sw.dumpFlows();
      expect(flow.line).to.equal(` table=0, n_packets=2, n_bytes=${2 * web.length}, priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80 actions=drop`);
      expect(sw.counters('a').drop_flow).to.equal(2);
    });

    it('sends to another port, floods, and lets the higher priority win; del-flows removes strictly or by match', async () => {
      await sw.addFlow(`priority=10,in_port=a,dl_dst=${B},actions=output:c`);
      await sw.addFlow(`priority=20,in_port=a,dl_dst=${B},icmp,actions=flood`);
      guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame]);
      let r = await got();
      expect([r.b.length, r.c.length], 'to c instead of b').to.deep.equal([0, 1]);
      guests.a.send([icmpEchoRequest(B, A, '10.0.0.1', '10.0.0.2', 1, 1)]);
      r = await got();
      expect([r.b.length, r.c.length], 'ICMP flooded by the higher priority').to.deep.equal([1, 1]);
      expect((await sw.dumpFlows()).map((f) => [f.priority, f.packets])).to.deep.equal([
        [20, 1],
        [10, 1],
      ]);
      // Re-adding a flow of the same priority and match replaces its action, keeps its counters.
      await sw.addFlow(`priority=10,in_port=a,dl_dst=${B},actions=drop`);
      expect((await sw.dumpFlows()).map((f) => [f.priority, f.actions, f.packets])).to.deep.equal([
        [20, 'FLOOD', 1],
        [10, 'drop', 1],
      ]);
      expect(await sw.delFlows(`priority=30,in_port=a,dl_dst=${B}`, true), 'strict: no flow of that priority').to.equal(0);
      expect(await sw.delFlows(`in_port=a`), 'every flow matching in_port=a').to.equal(2);
      expect(await sw.dumpFlows()).to.deep.equal([]);
      guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame]);
      r = await got();
      expect([r.b.length, r.c.length], 'the learning switch again').to.deep.equal([1, 0]);
    });

    it('edits frames (MACs, IPv4 addresses, ports, TTL) with checksums kept right, complete or partial', async () => {
      await sw.addFlow(`priority=100,tcp,in_port=a,nw_dst=10.0.0.2,tp_dst=80,actions=mod_dl_dst:${C},mod_nw_dst:10.0.0.3,mod_tp_dst:8080,dec_ttl,output:c`);
      await sw.addFlow(`priority=100,tcp,in_port=c,nw_src=10.0.0.3,tp_src=8080,actions=mod_dl_src:${B},mod_nw_src:10.0.0.2,mod_tp_src:80,output:a`);
      const payload = new Uint8Array(300).map((_, i) => (i * 7) & 0xff);
      const full = tcpFrame(payload, { src: A, dst: B, dport: 80 }).frame;
      expect(guests.a.send([full])).to.equal(1);
      let r = await got();
      expect([r.b.length, r.c.length], 'to c, not b').to.deep.equal([0, 1]);
      let f = r.c[0];
      expect(checkTcp(f), 'complete checksums updated').to.include({ ok: true });
      const dv = (x: Uint8Array) => new DataView(x.buffer, x.byteOffset, x.byteLength);
      expect([...f.subarray(0, 6)]).to.deep.equal([2, 0, 0, 0, 0, 0x0c]);
      expect([...f.subarray(30, 34)], 'nw_dst').to.deep.equal([10, 0, 0, 3]);
      expect(dv(f).getUint16(36), 'tp_dst').to.equal(8080);
      expect(f[22], 'TTL').to.equal(63);
      expect(Buffer.from(f.subarray(54)).equals(Buffer.from(payload)), 'payload intact').to.equal(true);
      // A partial checksum (NEEDS_CSUM: the field holds the pseudo-header sum): the address
      // change goes into it, the port change does not; the receiver (no GUEST_CSUM) gets it
      // completed in software and right.
      const part = tcpFrame(payload, { src: A, dst: B, dport: 80, partialCsum: true }).frame;
      guests.a.send([part], offloadHdr({ csumStart: 34, csumOffset: 16 }));
      r = await got();
      expect(r.c.length).to.equal(1);
      expect(checkTcp(r.c[0]), 'partial checksum kept right').to.include({ ok: true });
      // A TSO frame: edited once, cut into segments for c, each right.
      const big = Uint8Array.from({ length: 20000 }, (_, i) => (i * 13) & 0xff);
      const tso = tcpFrame(big, { src: A, dst: B, dport: 80, partialCsum: true }).frame;
      guests.a.send([tso], offloadHdr({ gso: 'tcpv4', gsoSize: 1448, csumStart: 34, csumOffset: 16, hdrLen: 54 }));
      const segs = (await guests.c.receive(Math.ceil(20000 / 1448), 3000)).map((x) => x.frame);
      expect(segs.length).to.equal(Math.ceil(20000 / 1448));
      for (const seg of segs) {
        expect(checkTcp(seg)).to.include({ ok: true });
        expect([...seg.subarray(30, 34), dv(seg).getUint16(36), seg[22]]).to.deep.equal([10, 0, 0, 3, 8080, 63]);
      }
      expect(Buffer.concat(segs.map((x) => checkTcp(x).payload)).equals(Buffer.from(big)), 'the payload, in order').to.equal(true);
      // The way back: c's replies seem to come from b.
      const reply = tcpFrame(payload, { src: C, dst: A, sport: 8080, dport: 40000 }).frame;
      reply.set([10, 0, 0, 3, 10, 0, 0, 1], 26);
      fixIpv4(reply);
      guests.c.send([reply]);
      r = await got();
      expect(r.a.length).to.equal(1);
      f = r.a[0];
      expect(checkTcp(f)).to.include({ ok: true });
      expect([...f.subarray(6, 12), ...f.subarray(26, 30), dv(f).getUint16(34)]).to.deep.equal([2, 0, 0, 0, 0, 0x0b, 10, 0, 0, 2, 80]);
      expect((await sw.dumpFlows()).map((x) => x.packets)).to.deep.equal([3, 1]);
    });

    it('edits IPv6 frames: addresses and ports with the TCP checksum kept, hop limit', async () => {
      await sw.addFlow(`priority=100,tcp6,in_port=a,ipv6_dst=fd00::2,tp_dst=80,actions=mod_dl_dst:${C},set_field:fd00::3->ipv6_dst,set_field:fd00::7->ipv6_src,mod_tp_dst:8080,dec_ttl,output:c`);
      const payload = new Uint8Array(500).map((_, i) => (i * 11) & 0xff);
      for (const partialCsum of [false, true]) {
        const f = tcpFrame(payload, { v6: true, src: A, dst: B, dport: 80, partialCsum }).frame;
        guests.a.send([f], partialCsum ? offloadHdr({ csumStart: 54, csumOffset: 16 }) : undefined);
        const r = await got();
        expect([r.b.length, r.c.length], partialCsum ? 'partial' : 'complete').to.deep.equal([0, 1]);
        const x = r.c[0];
        expect(checkTcp(x), partialCsum ? 'partial checksum kept right' : 'complete checksum updated').to.include({ ok: true });
        expect([x[21], x[37], x[53], (x[56] << 8) | x[57]], 'hop limit, src, dst, port').to.deep.equal([63, 7, 3, 8080]);
      }
      expect((await sw.dumpFlows())[0].packets).to.equal(2);
    });

    it('matches the TCP flags of IPv6 frames, tagged or not (bytes 66-67 and 70-71 of the frame)', async () => {
      await sw.addFlow('priority=100,tcp6,tcp_flags=+syn-ack,actions=drop');
      await sw.setVlan('a', { mode: 'trunk', native: 1 });
      await sw.setVlan('b', { mode: 'trunk', native: 1 });
      const syn = tcpFrame(new Uint8Array(10), { v6: true, src: A, dst: B, flags: 0x02 }).frame;
      const ack = tcpFrame(new Uint8Array(10), { v6: true, src: A, dst: B, flags: 0x10 }).frame;
      const tagged = (f: Uint8Array) => Uint8Array.from([...f.subarray(0, 12), 0x81, 0, 0, 1, ...f.subarray(12)]);
      guests.a.send([syn, ack, tagged(syn), tagged(ack)]);
      const r = await got();
      expect(
        r.b.map((f) => (f[12] === 0x81 ? f[18 + 53] : f[14 + 53])),
        'the ACKs pass, the SYNs are dropped',
      ).to.deep.equal([0x10, 0x10]);
      expect((await sw.dumpFlows())[0].packets).to.equal(2);
    });

    it('matches ICMP and ICMPv6 types and codes, and ARP opcodes and addresses', async () => {
      await sw.addFlow('priority=100,icmp,icmp_type=8,actions=drop');
      await sw.addFlow('priority=100,icmp6,icmp_type=135,icmp_code=0,actions=output:c');
      await sw.addFlow('priority=100,arp,arp_op=1,arp_tpa=10.0.0.9,actions=output:c');
      await sw.addFlow('priority=90,arp,arp_spa=10.0.0.0/24,actions=drop');
      const reply = icmpEchoRequest(B, A, '10.0.0.1', '10.0.0.2', 1, 1);
      reply[14 + 20] = 0; // type 0: an echo reply (its checksum is not what flows look at)
      // ICMPv6 of type 135 (a neighbor solicitation) and 128 (an echo request), tagged the same.
      const icmp6 = (type: number, code = 0) => {
        const ip6 = new Uint8Array(40 + 24);
        ip6[0] = 0x60;
        ip6[5] = 24;
        ip6[6] = 58;
        ip6[7] = 255;
        ip6.set([0xfe, 0x80], 8);
        ip6[23] = 1;
        ip6.set([0xff, 0x02], 24);
        ip6[39] = 2;
        ip6[40] = type;
        ip6[41] = code;
        return ethernet(B, A, 0x86dd, ip6);
      };
      guests.a.send([icmpEchoRequest(B, A, '10.0.0.1', '10.0.0.2', 1, 1), reply, icmp6(135), icmp6(128), icmp6(135, 1)]);
      let r = await got();
      expect(r.b.length, 'b: the echo reply, the echo request v6, and the NS of code 1').to.equal(3);
      expect(r.c.length, 'c: the NS').to.equal(1);
      expect(r.c[0][14 + 40]).to.equal(135);
      guests.a.send([arpRequest(A, '10.0.0.1', '10.0.0.9'), arpRequest(A, '10.0.0.1', '10.0.0.2'), arpRequest(A, '10.1.0.1', '10.0.0.2')]);
      r = await got();
      expect(r.c.length, 'c: the request for 10.0.0.9, and the flood of 10.1.0.1').to.equal(2);
      expect(r.b.length, 'b: the flood of the one from 10.1.0.1 only').to.equal(1);
      expect((await sw.dumpFlows()).map((f) => [f.match, f.packets])).to.deep.equal([
        ['icmp,icmp_type=8', 1],
        ['icmp6,icmp_type=135,icmp_code=0', 1],
        ['arp,arp_tpa=10.0.0.9,arp_op=1', 1],
        ['arp,arp_spa=10.0.0.0/24', 1],
      ]);
    });

    it('removes a flow its idle timeout after its last match, and one its hard timeout after it was added', async () => {
      await sw.addFlow('priority=100,idle_timeout=2,tcp,tp_dst=80,actions=drop');
      await sw.addFlow('priority=100,hard_timeout=2,tcp,tp_dst=81,actions=drop');
      await sw.addFlow('priority=100,tcp,tp_dst=82,actions=drop');
      const to = (dport: number) => tcpFrame(new Uint8Array(10), { src: A, dst: B, dport }).frame;
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
      // Frames to port 80 every 200 ms keep the idle flow; the hard one goes whatever it matches.
      const ports80 = async () => (await sw.dumpFlows()).map((f) => f.match);
      let hardGone = false;
      for (let t = 0; t < 25; t++) {
        guests.a.send([to(80), to(81)]);
        await sleep(200);
        const m = await ports80();
        expect(m, 'the idle flow, matched every 200 ms, stays').to.include('tcp,tp_dst=80');
        if (!m.includes('tcp,tp_dst=81')) hardGone = true;
      }
      expect(hardGone, 'the hard-timeout flow went while it matched frames').to.equal(true);
      const line = (await sw.dumpFlows()).find((f) => f.match === 'tcp,tp_dst=80')?.line;
      expect(line).to.match(/ idle_timeout=2, idle_age=0, priority=100,tcp,tp_dst=80 actions=drop$/);
      // Then no more frames: the idle flow goes; the flow without timeouts stays.
      let left = await ports80();
      for (let t = 0; t < 50 && left.includes('tcp,tp_dst=80'); t++) {
        await sleep(200);
        left = await ports80();
      }
      expect(left).to.deep.equal(['tcp,tp_dst=82']);
      await got();
    });

    it('drops a frame whose TTL dec_ttl would take to 0, counted as a flow drop', async () => {
      await sw.addFlow(`tcp,actions=dec_ttl,output:c`);
      const f = tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame;
      f[22] = 1;
      fixIpv4(f);
      guests.a.send([f]);
      const r = await got();
      expect([r.b.length, r.c.length]).to.deep.equal([0, 0]);
      expect(sw.counters('a').drop_flow).to.equal(1);
    });

    it('moves frames to another VLAN (ports take them by their VLAN rules) and strips tags', async () => {
      await sw.addFlow(`priority=10,in_port=a,actions=mod_vlan_vid:42,mod_vlan_pcp:5,output:b,output:c`);
      await sw.setVlan('b', { mode: 'trunk' });
      await sw.setVlan('c', { mode: 'access', vid: 42 });
      const f = tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame;
      guests.a.send([f]);
      let r = await got();
      expect([r.b.length, r.c.length]).to.deep.equal([1, 1]);
      let t = r.b[0];
      expect([...t.subarray(12, 16)], 'to the trunk tagged: TPID, PCP 5, VID 42').to.deep.equal([0x81, 0x00, 0xa0, 42]);
      expect(Buffer.from(t.subarray(16)).equals(Buffer.from(f.subarray(12)))).to.equal(true);
      expect(checkTcp(t)).to.include({ ok: true });
      expect(Buffer.from(r.c[0]).equals(Buffer.from(f)), "to VLAN 42's access port untagged").to.equal(true);
      // A VLAN no port of which is a is not delivered there.
      await sw.addFlow(`priority=10,in_port=a,actions=mod_vlan_vid:43,output:b,output:c`);
      guests.a.send([f]);
      r = await got();
      expect([r.b.length, r.c.length], 'the trunk carries 43, the access port of 42 does not').to.deep.equal([1, 0]);
      // A tagged frame from the trunk, its tag stripped: untagged on any port.
      await sw.setVlan('c', { mode: 'access', vid: 7 });
      await sw.addFlow(`priority=20,in_port=b,dl_vlan=42,actions=strip_vlan,output:c`);
      guests.b.send([t]);
      r = await got();
      expect(r.c.length).to.equal(1);
      t = r.c[0];
      expect(Buffer.from(t).equals(Buffer.from(f)), 'the frame as a sent it').to.equal(true);
    });

    it('sends one frame to several outputs: ports, and normal', async () => {
      await sw.addFlow(`in_port=a,dl_dst=${B},actions=output:c,NORMAL`);
      guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame]);
      const r = await got();
      expect([r.b.length, r.c.length], 'mirrored to c, switched to b').to.deep.equal([1, 1]);
      await sw.addFlow(`in_port=a,dl_dst=${B},actions=mod_dl_dst:${C},NORMAL`);
      guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame]);
      const s2 = await got();
      expect([s2.b.length, s2.c.length], 'normal looks up the edited destination').to.deep.equal([0, 1]);
    });

    it('sends a frame out of a port once, however many of its outputs name the port', async () => {
      // A whole burst and more, each frame named twice for c and twice (FLOOD, and NORMAL
      // to an unknown MAC: a flood) for every port.
      await sw.addFlow('in_port=a,actions=output:c,output:c,FLOOD,NORMAL');
      const frames = Array.from({ length: 48 }, (_, k) => tcpFrame(new Uint8Array(10 + k), { src: A, dst: '02:00:00:00:0f:0f' }).frame);
      guests.a.send(frames);
      const r = await got();
      expect([r.b.length, r.c.length], 'each frame once at b and at c').to.deep.equal([48, 48]);
      expect(r.c.map((f) => f.length)).to.deep.equal(frames.map((f) => f.length));
    });
  });
}

/** Rewrites an IPv4 header checksum (at 14) and the TCP checksum after test edits. */
function fixIpv4(f: Uint8Array): void {
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  dv.setUint16(24, 0);
  let acc = 0;
  for (let i = 14; i < 34; i += 2) acc += dv.getUint16(i);
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  dv.setUint16(24, ~acc & 0xffff);
  dv.setUint16(50, 0);
  acc = dv.getUint16(26) + dv.getUint16(28) + dv.getUint16(30) + dv.getUint16(32) + 6 + (f.length - 34);
  for (let i = 34; i + 1 < f.length; i += 2) acc += dv.getUint16(i);
  if ((f.length - 34) & 1) acc += f[f.length - 1] << 8;
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  dv.setUint16(50, ~acc & 0xffff);
}
