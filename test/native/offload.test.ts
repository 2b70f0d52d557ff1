// Offloads end to end through netDeliver: passed through to receivers that negotiated
// them, completed / segmented in software for those that did not, checked byte for byte.
import { expect } from 'chai';
import fc from 'fast-check';
import { fcParams, timeoutFor } from '../lib/fuzz-runs.js';
import { DeliverStat, RxOffload, netDeliver } from '../../src/native/net.js';
import { checkTcp, offloadHdr, tcpFrame } from '../lib/packets.js';
import { Rig } from './ring-rig.js';

const HDR = 12;
const chains = Uint16Array.from({ length: 32 }, (_, i) => i);

function send(tx: Rig, hdr: Uint8Array, frame: Uint8Array, cuts: number[] = []): void {
  const all = new Uint8Array(HDR + frame.length);
  all.set(hdr);
  all.set(frame, HDR);
  const pts = [0, ...cuts.filter((c) => c > 0 && c < all.length).sort((a, b) => a - b), all.length];
  const segs = [];
  for (let i = 0; i + 1 < pts.length; i++) if (pts[i + 1] > pts[i]) segs.push({ len: pts[i + 1] - pts[i], writable: false, data: all.subarray(pts[i], pts[i + 1]) });
  tx.drv.add(segs);
  tx.drv.publish();
}

function received(rx: Rig): Array<{ hdr: Uint8Array; frame: Uint8Array }> {
  const used = rx.drv.used();
  const out = [];
  for (let i = 0; i < used.length; ) {
    const first = rx.drv.readWritten(used[i].id, used[i].len);
    const nb = first[10] | (first[11] << 8);
    const parts = [first];
    for (let k = 1; k < nb; k++) parts.push(rx.drv.readWritten(used[i + k].id, used[i + k].len));
    const all = Buffer.concat(parts);
    out.push({ hdr: new Uint8Array(all.subarray(0, HDR)), frame: new Uint8Array(all.subarray(HDR)) });
    i += Math.max(1, nb);
  }
  return out;
}

function payloadOf(n: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed) & 0xff);
}

describe('offloads through the switch path (checksum, TSO)', () => {
  let tx: Rig;
  let rx: Rig;
  const stats = new Uint32Array(7);
  beforeEach(() => {
    tx = new Rig('split', { size: 256, regionSize: 8 << 20 });
    rx = new Rig('split', { size: 1024, regionSize: 16 << 20 });
    stats.fill(0);
    for (let i = 0; i < 512; i++) rx.drv.add([{ len: 2048, writable: true }]);
    rx.drv.publish();
  });
  afterEach(() => {
    tx.close();
    rx.close();
  });

  for (const v6 of [false, true]) {
    it(`cuts a 64 KiB TSO ${v6 ? 'IPv6' : 'IPv4'} frame into valid MSS segments whose payloads rebuild the stream exactly`, () => {
      const payload = payloadOf(65000 - 100, v6 ? 3 : 7);
      const { frame, l4 } = tcpFrame(payload, { v6, partialCsum: true, seq: 0xfffff000, flags: 0x19 /* FIN|PSH|ACK */ });
      send(tx, offloadHdr({ gso: v6 ? 'tcpv6' : 'tcpv4', gsoSize: 1448, csumStart: l4, csumOffset: 16, hdrLen: l4 + 20 }), frame, [HDR + 14, HDR + 3000]);
      expect(tx.q.pop()).to.equal(1);
      netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true }, tx.q, HDR, true, chains, 1, stats);
      const got = received(rx);
      expect(got.length).to.equal(Math.ceil(payload.length / 1448));
      expect(stats[DeliverStat.SEGMENTED]).to.equal(got.length);
      const parts: Uint8Array[] = [];
      got.forEach((g, i) => {
        expect(g.hdr[0], 'no offload flags for a receiver that did not ask').to.equal(0);
        const c = checkTcp(g.frame);
        expect(c.ok, `segment ${i}: ${c.why}`).to.equal(true);
        expect(c.seq).to.equal((0xfffff000 + i * 1448) >>> 0);
        expect(c.flags, 'FIN and PSH only on the last segment').to.equal(i === got.length - 1 ? 0x19 : 0x10);
        if (!v6) expect(c.ipId).to.equal((0x1234 + i) & 0xffff);
        expect(c.payload.length).to.equal(i === got.length - 1 ? payload.length - i * 1448 : 1448);
        parts.push(c.payload);
      });
      expect(Buffer.concat(parts).equals(Buffer.from(payload)), 'payload rebuilt byte for byte').to.equal(true);
    });
  }

  it('segments two TSO frames of one burst, and a plain frame after them, each byte for byte (segments are built in one scratch area)', () => {
    const pa = payloadOf(10000, 5);
    const pb = payloadOf(7000, 9);
    const fa = tcpFrame(pa, { partialCsum: true, seq: 1000 });
    const fb = tcpFrame(pb, { partialCsum: true, seq: 50000 });
    const plain = tcpFrame(payloadOf(300, 11), { seq: 7 }).frame;
    send(tx, offloadHdr({ gso: 'tcpv4', gsoSize: 1448, csumStart: fa.l4, csumOffset: 16, hdrLen: fa.l4 + 20 }), fa.frame);
    send(tx, offloadHdr({ gso: 'tcpv4', gsoSize: 1448, csumStart: fb.l4, csumOffset: 16, hdrLen: fb.l4 + 20 }), fb.frame);
    send(tx, new Uint8Array(HDR), plain);
    expect(tx.q.pop()).to.equal(3);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true }, tx.q, HDR, true, chains, 3, stats);
    const got = received(rx);
    const na = Math.ceil(pa.length / 1448);
    const nb = Math.ceil(pb.length / 1448);
    expect(got.length).to.equal(na + nb + 1);
    const rebuild = (from: number, count: number, seq: number) =>
      Buffer.concat(
        got.slice(from, from + count).map((g, i) => {
          const c = checkTcp(g.frame);
          expect(c.ok, `segment ${from + i}: ${c.why}`).to.equal(true);
          expect(c.seq).to.equal(seq + i * 1448);
          return c.payload;
        }),
      );
    expect(rebuild(0, na, 1000).equals(Buffer.from(pa)), 'first frame rebuilt').to.equal(true);
    expect(rebuild(na, nb, 50000).equals(Buffer.from(pb)), 'second frame rebuilt').to.equal(true);
    expect(Buffer.from(got[na + nb].frame).equals(Buffer.from(plain)), 'the plain frame').to.equal(true);
  });

  it('passes a TSO frame through unchanged to a receiver that negotiated GUEST_TSO4 + GUEST_CSUM', () => {
    const { frame, l4 } = tcpFrame(payloadOf(20000), { partialCsum: true });
    const hdr = offloadHdr({ gso: 'tcpv4', gsoSize: 1448, csumStart: l4, csumOffset: 16, hdrLen: l4 + 20 });
    send(tx, hdr, frame);
    tx.q.pop();
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true, offloads: RxOffload.CSUM | RxOffload.TSO4 }, tx.q, HDR, true, chains, 1, stats);
    const [g] = received(rx);
    expect(Buffer.from(g.frame).equals(Buffer.from(frame))).to.equal(true);
    expect(Array.from(g.hdr.subarray(0, 10))).to.deep.equal(Array.from(hdr.subarray(0, 10)));
    expect(stats[DeliverStat.SEGMENTED]).to.equal(0);
  });

  it('completes a partial checksum for a receiver without GUEST_CSUM, keeps it partial for one with it', () => {
    const { frame, l4 } = tcpFrame(payloadOf(1000), { partialCsum: true });
    const hdr = offloadHdr({ csumStart: l4, csumOffset: 16 });
    send(tx, hdr, frame);
    send(tx, hdr, frame);
    expect(tx.q.pop()).to.equal(2);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true }, tx.q, HDR, true, chains.subarray(0, 1), 1, stats);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true, offloads: RxOffload.CSUM }, tx.q, HDR, true, chains.subarray(1), 1, stats);
    const [done, partial] = received(rx);
    expect(checkTcp(done.frame).ok).to.equal(true);
    expect(done.hdr[0]).to.equal(0);
    expect(stats[DeliverStat.CSUM_DONE]).to.equal(1);
    expect(checkTcp(partial.frame).ok, 'still partial: the receiver completes it').to.equal(false);
    expect(partial.hdr[0]).to.equal(1);
  });

  it('inserting a VLAN tag shifts csum_start and keeps TSO segments valid', () => {
    const { frame, l4 } = tcpFrame(payloadOf(5000), { partialCsum: true });
    send(tx, offloadHdr({ gso: 'tcpv4', gsoSize: 1000, csumStart: l4, csumOffset: 16, hdrLen: l4 + 20 }), frame);
    send(tx, offloadHdr({ csumStart: l4, csumOffset: 16 }), tcpFrame(payloadOf(300), { partialCsum: true }).frame);
    tx.q.pop();
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true }, tx.q, HDR, true, chains, 1, stats, 0x0064);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true, offloads: RxOffload.CSUM }, tx.q, HDR, true, chains.subarray(1), 1, stats, 0x0064);
    const got = received(rx);
    expect(got.length).to.equal(6);
    for (const g of got.slice(0, 5)) expect(checkTcp(g.frame).ok).to.equal(true);
    const last = got[5];
    expect(new DataView(last.hdr.buffer).getUint16(6, true), 'csum_start moved by the tag').to.equal(l4 + 4);
  });

  it('refuses malformed offload requests (bad csum offsets, not TCP, zero MSS) without reading or writing out of bounds', function () {
    this.timeout(timeoutFor(200, 200)); // a loaded machine: no timing is asserted
    fc.assert(
      fc.property(
        fc.record({ flags: fc.integer({ min: 0, max: 255 }), gso: fc.constantFrom(0, 1, 3, 4, 0x81, 0x7f), hdrLen: fc.integer({ min: 0, max: 0xffff }), gsoSize: fc.integer({ min: 0, max: 0xffff }), csumStart: fc.integer({ min: 0, max: 0xffff }), csumOffset: fc.integer({ min: 0, max: 0xffff }) }),
        fc.integer({ min: 14, max: 3000 }),
        fc.boolean(),
        (h, len, tcp) => {
          const t = new Rig('split', { size: 16, regionSize: 1 << 20 });
          const r = new Rig('split', { size: 128, regionSize: 4 << 20 });
          try {
            for (let i = 0; i < 100; i++) r.drv.add([{ len: 2048, writable: true }]);
            r.drv.publish();
            const frame = tcp ? tcpFrame(payloadOf(Math.max(0, len - 54))).frame : payloadOf(len);
            const hdr = new Uint8Array(12);
            const dv = new DataView(hdr.buffer);
            hdr[0] = h.flags;
            hdr[1] = h.gso;
            dv.setUint16(2, h.hdrLen, true);
            dv.setUint16(4, h.gsoSize, true);
            dv.setUint16(6, h.csumStart, true);
            dv.setUint16(8, h.csumOffset, true);
            send(t, hdr, frame);
            t.q.pop();
            const st = new Uint32Array(7);
            netDeliver({ q: r.q, hdrLen: HDR, mergeable: true }, t.q, HDR, true, chains, 1, st);
            for (const g of received(r)) expect(g.frame.length).to.be.at.most(frame.length);
            expect(r.canariesIntact() && t.canariesIntact()).to.equal(true);
            expect(r.q.inFlight).to.equal(0);
          } finally {
            t.close();
            r.close();
          }
        },
      ),
      fcParams(200),
    );
  });
});
