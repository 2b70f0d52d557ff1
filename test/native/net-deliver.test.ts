// netDeliver / netPeek: frames from one guest's TX ring into another guest's RX buffers.
import { expect } from 'chai';
import fc from 'fast-check';
import { fcParams } from '../lib/fuzz-runs.js';
import { DeliverStat, RxOffload, VLAN_KEEP, netDeliver, netPeek } from '../../src/native/net.js';
import { Rig } from './ring-rig.js';

const HDR = 12;

function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i * 7 + seed * 13 + (i >> 8)) & 0xff;
  return f;
}

/** Adds a TX chain: a 12-byte header with `hdrBytes`, then the frame split at `cuts`. */
function addTx(rig: Rig, f: Uint8Array, cuts: number[] = [], hdrBytes?: Uint8Array, hdrLen = HDR): number {
  const all = new Uint8Array(hdrLen + f.length);
  if (hdrBytes) all.set(hdrBytes.subarray(0, hdrLen));
  all.set(f, hdrLen);
  const points = [0, ...cuts.filter((c) => c > 0 && c < all.length).sort((a, b) => a - b), all.length];
  const segs = [];
  for (let i = 0; i + 1 < points.length; i++) {
    if (points[i + 1] > points[i]) segs.push({ len: points[i + 1] - points[i], writable: false, data: all.subarray(points[i], points[i + 1]) });
  }
  return rig.drv.add(segs);
}

function postRx(rig: Rig, count: number, size: number, split = false): void {
  for (let i = 0; i < count; i++) {
    rig.drv.add(split ? [{ len: 6, writable: true }, { len: size - 6, writable: true }] : [{ len: size, writable: true }]);
  }
  rig.drv.publish();
}

/** Reads the packets the RX driver got: header + frame, joined over num_buffers chains. */
function receive(rig: Rig): Array<{ hdr: Uint8Array; frame: Uint8Array; numBuffers: number }> {
  const used = rig.drv.used();
  const out = [];
  for (let i = 0; i < used.length; ) {
    const first = rig.drv.readWritten(used[i].id, used[i].len);
    const nb = first[10] | (first[11] << 8);
    const parts = [first];
    for (let k = 1; k < nb; k++) parts.push(rig.drv.readWritten(used[i + k].id, used[i + k].len));
    const all = Buffer.concat(parts);
    out.push({ hdr: all.subarray(0, HDR), frame: new Uint8Array(all.subarray(HDR)), numBuffers: nb });
    i += Math.max(nb, 1);
  }
  return out;
}

describe('netDeliver / netPeek (guest TX ring -> guest RX ring, one copy)', () => {
  let tx: Rig;
  let rx: Rig;
  const stats = new Uint32Array(7);
  const chains = Uint16Array.from({ length: 32 }, (_, i) => i);
  beforeEach(() => {
    tx = new Rig('split', { size: 256 });
    rx = new Rig('packed', { size: 256 });
    stats.fill(0);
  });
  afterEach(() => {
    tx.close();
    rx.close();
  });

  it('peeks the first bytes and the length of each frame, whatever the segmentation', () => {
    const frames = [frame(60, 1), frame(1514, 2), frame(100, 3)];
    addTx(tx, frames[0]);
    addTx(tx, frames[1], [5, 12, 13, 20, 700]);
    addTx(tx, frames[2], [12]);
    tx.drv.publish();
    expect(tx.q.pop()).to.equal(3);
    const out = new Uint8Array(3 * 64);
    const lens = new Uint32Array(3);
    netPeek(tx.q, 3, HDR, out, 64, lens);
    expect(Array.from(lens)).to.deep.equal([60, 1514, 100]);
    for (let i = 0; i < 3; i++) expect(Array.from(out.subarray(i * 64, i * 64 + Math.min(64, frames[i].length)))).to.deep.equal(Array.from(frames[i].subarray(0, 64)));
    expect(Array.from(out.subarray(60, 64)), 'zero padding past a short frame').to.deep.equal([0, 0, 0, 0]);
  });

  it('delivers frames into one RX buffer each, with num_buffers = 1 and a zeroed header', () => {
    const frames = Array.from({ length: 10 }, (_, i) => frame(60 + i * 140, i));
    frames.forEach((f, i) => addTx(tx, f, i % 2 ? [HDR, HDR + 30] : [], new Uint8Array(12).fill(0x55)));
    tx.drv.publish();
    postRx(rx, 16, 2048);
    expect(tx.q.pop()).to.equal(10);
    const r = netDeliver({ q: rx.q, hdrLen: HDR, mergeable: false }, tx.q, HDR, false, chains, 10, stats);
    expect(r).to.be.at.least(0);
    expect(stats[DeliverStat.DELIVERED]).to.equal(10);
    const got = receive(rx);
    expect(got.map((g) => Buffer.from(g.frame).toString('hex'))).to.deep.equal(frames.map((f) => Buffer.from(f).toString('hex')));
    expect(got.every((g) => g.numBuffers === 1 && g.hdr.subarray(0, 10).every((b) => b === 0))).to.equal(true);
    expect(rx.canariesIntact() && tx.canariesIntact()).to.equal(true);
  });

  it('spreads a large frame over several mergeable buffers, and passes the sender header through when asked', () => {
    const big = frame(9000, 7);
    const hdr = Uint8Array.of(1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0);
    addTx(tx, big, [HDR + 1000, HDR + 4000], hdr);
    tx.drv.publish();
    postRx(rx, 10, 1536, true);
    expect(tx.q.pop()).to.equal(1);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true, offloads: RxOffload.CSUM | RxOffload.TSO4 }, tx.q, HDR, true, chains, 1, stats);
    const [g] = receive(rx);
    expect(g.numBuffers).to.equal(Math.ceil((9000 + HDR) / 1536));
    expect(Buffer.from(g.frame).equals(Buffer.from(big))).to.equal(true);
    expect(Array.from(g.hdr.subarray(0, 10))).to.deep.equal(Array.from(hdr.subarray(0, 10)));
  });

  it('publishes a frame spread over more buffers than a burst holds in one used-ring update (64 KiB, 43 buffers)', () => {
    const big = frame(65000, 8);
    addTx(tx, big);
    tx.drv.publish();
    postRx(rx, 60, 1536);
    expect(tx.q.pop()).to.equal(1);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true }, tx.q, HDR, false, chains, 1, stats);
    const [g] = receive(rx);
    expect(g.numBuffers).to.equal(Math.ceil((65000 + HDR) / 1536));
    expect(Buffer.from(g.frame).equals(Buffer.from(big))).to.equal(true);
    expect(rx.canariesIntact()).to.equal(true);
  });

  it('drops (and counts) when the receiver has no buffers, too-small buffers or a bad frame; never blocks or loses buffers', () => {
    addTx(tx, frame(100, 1));
    addTx(tx, frame(3000, 2));
    tx.drv.add([{ len: 20, writable: false }]); // header + 8 bytes: not a frame
    tx.drv.publish();
    expect(tx.q.pop()).to.equal(3);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: false }, tx.q, HDR, false, chains, 3, stats);
    expect(Array.from(stats.subarray(0, 4))).to.deep.equal([0, 2, 0, 1]);
    postRx(rx, 2, 1536);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: false }, tx.q, HDR, false, chains, 2, stats);
    expect(stats[DeliverStat.DELIVERED]).to.equal(1);
    expect(stats[DeliverStat.TOO_BIG], '3000 B in one 1536 B buffer without MRG_RXBUF').to.equal(1);
    expect(rx.q.inFlight, 'the buffer the big frame did not fit was given back').to.equal(0);
    postRx(rx, 0, 0);
    // The remaining RX buffer still takes the next frame.
    addTx(tx, frame(64, 9));
    tx.drv.publish();
    tx.q.b.usedId.set(tx.q.b.head.subarray(0, 3));
    tx.q.b.usedLen.fill(0);
    tx.q.push(3);
    expect(tx.q.pop()).to.equal(1);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: false }, tx.q, HDR, false, chains, 1, stats);
    expect(receive(rx).map((g) => g.frame.length)).to.deep.equal([100, 64]);
  });

  it('a frame that needs more mergeable buffers than are left is dropped, and smaller frames after it in the same call take them', () => {
    addTx(tx, frame(1000, 3)); // header + 1000 B: 4 buffers of 256 B
    addTx(tx, frame(64, 4));
    addTx(tx, frame(80, 5));
    tx.drv.publish();
    expect(tx.q.pop()).to.equal(3);
    postRx(rx, 2, 256);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true }, tx.q, HDR, false, chains, 3, stats);
    expect(stats[DeliverStat.NO_BUFFERS], 'the 1000 B frame').to.equal(1);
    expect(stats[DeliverStat.DELIVERED]).to.equal(2);
    expect(receive(rx).map((g) => g.frame.length)).to.deep.equal([64, 80]);
    expect(rx.q.inFlight).to.equal(0);
    // An empty ring: every frame of the call is dropped and counted, nothing is held.
    stats.fill(0);
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: true }, tx.q, HDR, false, chains, 3, stats);
    expect(stats[DeliverStat.NO_BUFFERS]).to.equal(3);
    expect(stats[DeliverStat.DELIVERED]).to.equal(0);
    expect(rx.q.inFlight).to.equal(0);
  });

  it('inserts and strips 802.1Q tags on the way', async () => {
    const { VLAN_STRIP } = await import('../../src/native/net.js');
    const f = frame(100, 5);
    addTx(tx, f, [HDR + 13]);
    tx.drv.publish();
    postRx(rx, 4, 2048);
    tx.q.pop();
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: false }, tx.q, HDR, false, chains, 1, stats, 0x2064);
    const [tagged] = receive(rx);
    expect(tagged.frame.length).to.equal(104);
    expect(Array.from(tagged.frame.subarray(12, 16))).to.deep.equal([0x81, 0x00, 0x20, 0x64]);
    expect(Buffer.concat([tagged.frame.subarray(0, 12), tagged.frame.subarray(16)]).equals(Buffer.from(f))).to.equal(true);
    // and back: strip it again
    tx.q.b.usedId[0] = tx.q.b.head[0];
    tx.q.b.usedLen[0] = 0;
    tx.q.push(1);
    addTx(tx, tagged.frame, [HDR + 14]);
    tx.drv.publish();
    tx.q.pop();
    netDeliver({ q: rx.q, hdrLen: HDR, mergeable: false }, tx.q, HDR, false, chains, 1, stats, VLAN_STRIP);
    expect(Buffer.from(receive(rx)[0].frame).equals(Buffer.from(f))).to.equal(true);
  });

  it('delivers frames from a host buffer (netDeliverFlat), with per-frame offload headers', async () => {
    const { netDeliverFlat } = await import('../../src/native/net.js');
    const a = frame(60, 1);
    const b = frame(1400, 2);
    const data = new Uint8Array(4096);
    data.set(a, 100);
    data.set(b, 1000);
    const hdr10 = new Uint8Array(20);
    hdr10.set([1, 0, 0, 0, 0, 0, 34, 0, 16, 0], 10);
    postRx(rx, 4, 2048);
    netDeliverFlat({ q: rx.q, hdrLen: HDR, mergeable: false, offloads: RxOffload.CSUM }, data, Uint32Array.of(100, 1000), Uint32Array.of(60, 1400), 2, hdr10, stats);
    const got = receive(rx);
    expect(got.map((g) => g.frame.length)).to.deep.equal([60, 1400]);
    expect(Buffer.from(got[1].frame).equals(Buffer.from(b))).to.equal(true);
    expect(Array.from(got[1].hdr.subarray(0, 10))).to.deep.equal([1, 0, 0, 0, 0, 0, 34, 0, 16, 0]);
    expect(stats[4], 'bytes').to.equal(1460);
    expect(() => netDeliverFlat({ q: rx.q, hdrLen: HDR, mergeable: false }, data, Uint32Array.of(4000), Uint32Array.of(200), 1, null, stats)).to.throw(/outside the data buffer/);
  });

  it('delivers from arrays given once (FlatFrames), rechecking their contents on every call', async () => {
    const { FlatFrames } = await import('../../src/native/net.js');
    const a = frame(60, 5);
    const b = frame(700, 6);
    const data = new Uint8Array(2048);
    data.set(a, 0);
    data.set(b, 64);
    const offsets = Uint32Array.of(0, 64);
    const lens = Uint32Array.of(60, 700);
    const hdr10 = new Uint8Array(20);
    hdr10.set([1, 0, 0, 0, 0, 0, 34, 0, 16, 0], 10);
    const st = new Uint32Array(7);
    const ff = new FlatFrames(data, offsets, lens, hdr10, st);
    postRx(rx, 4, 2048);
    expect(ff.deliver({ q: rx.q, hdrLen: HDR, mergeable: false, offloads: RxOffload.CSUM }, 2, VLAN_KEEP, true)).to.be.at.least(0);
    let got = receive(rx);
    expect(got.map((g) => g.frame.length)).to.deep.equal([60, 700]);
    expect(Buffer.from(got[1].frame).equals(Buffer.from(b))).to.equal(true);
    expect(Array.from(got[1].hdr.subarray(0, 10))).to.deep.equal([1, 0, 0, 0, 0, 0, 34, 0, 16, 0]);
    expect(st[0], 'delivered').to.equal(2);
    expect(st[4], 'bytes').to.equal(760);
    // Contents changed between calls are what the next call sends (no header: a zeroed one).
    data.set(frame(90, 7), 1000);
    offsets[0] = 1000;
    lens[0] = 90;
    postRx(rx, 2, 2048);
    ff.deliver({ q: rx.q, hdrLen: HDR, mergeable: false }, 1);
    got = receive(rx);
    expect(got.map((g) => g.frame.length)).to.deep.equal([90]);
    expect(Buffer.from(got[0].frame).equals(Buffer.from(frame(90, 7)))).to.equal(true);
    expect(Array.from(got[0].hdr.subarray(0, 10))).to.deep.equal(new Array(10).fill(0));
    expect(st[0]).to.equal(3);
    // Every call checks its frames against the data buffer, its count against the arrays.
    offsets[1] = 2000;
    expect(() => ff.deliver({ q: rx.q, hdrLen: HDR, mergeable: false }, 2)).to.throw(RangeError, /outside the data buffer/);
    expect(() => ff.deliver({ q: rx.q, hdrLen: HDR, mergeable: false }, 3)).to.throw(RangeError, /more frames than the arrays hold/);
    expect(() => ff.deliver({ q: rx.q, hdrLen: 11, mergeable: false }, 1)).to.throw(RangeError, /10 or 12/);
    expect(() => ff.deliver({ q: rx.q, hdrLen: HDR, mergeable: false }, 1, 0x10000)).to.throw(RangeError, /vlan/);
    expect(() => new FlatFrames(data, offsets, lens, null, st).deliver({ q: rx.q, hdrLen: HDR, mergeable: false }, 1, VLAN_KEEP, true)).to.throw(/no hdr10/);
    expect(() => new FlatFrames(data, offsets, lens, null, new Uint32Array(6))).to.throw(RangeError, /stats/);
    expect(() => new FlatFrames(data, new Uint16Array(2) as unknown as Uint32Array, lens, null, st)).to.throw(TypeError, /offsets/);
    expect(st[0], 'nothing delivered by a refused call').to.equal(3);
    // The native side keeps pointers into the buffers: they cannot be moved away (detached).
    try {
      structuredClone(data.buffer, { transfer: [data.buffer] }); // Node 20 clones it, 21+ throws
    } catch {
      // refused
    }
    expect(data.byteLength, 'still attached').to.equal(2048);
    const resizable = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer)(64, { maxByteLength: 128 });
    expect(() => new FlatFrames(new Uint8Array(resizable), offsets, lens, null, st)).to.throw(TypeError, /resizable/);
  });

  it('names queues by their slot on this thread, and refuses a number that is not a live queue', async () => {
    const { netDeliverFlat } = await import('../../src/native/net.js');
    expect(rx.q.slot).to.be.a('number');
    expect(rx.q.slot).to.not.equal(tx.q.slot);
    const data = frame(60, 3);
    for (const slot of [-1, 1.5, 1e6, NaN]) {
      const q = { slot } as unknown as typeof rx.q;
      expect(() => netDeliverFlat({ q, hdrLen: HDR, mergeable: false }, data, Uint32Array.of(0), Uint32Array.of(60), 1, null, stats), String(slot)).to.throw(TypeError, /slot/);
    }
    // The queue's own slot names it.
    postRx(rx, 1, 2048);
    expect(netDeliverFlat({ q: rx.q, hdrLen: HDR, mergeable: false }, data, Uint32Array.of(0), Uint32Array.of(60), 1, null, stats)).to.equal(1);
    expect(receive(rx).map((g) => g.frame.length)).to.deep.equal([60]);
  });

  it('converts between a 10-byte legacy header and a 12-byte one', () => {
    addTx(tx, frame(80, 4), [], undefined, 10);
    tx.drv.publish();
    postRx(rx, 1, 2048);
    tx.q.pop();
    netDeliver({ q: rx.q, hdrLen: 12, mergeable: false }, tx.q, 10, false, chains, 1, stats);
    expect(receive(rx)[0].frame.length).to.equal(80);
  });

  it('property: random frames, segmentations and RX buffer sizes arrive byte-exact or are counted as dropped', function () {
    // A fixed amount of work: about 10 s on a loaded 2-CPU machine, several times that under ASan.
    this.timeout(180_000);
    fc.assert(
      fc.property(
        fc.array(fc.record({ len: fc.integer({ min: 14, max: 4000 }), cuts: fc.array(fc.integer({ min: 0, max: 4012 }), { maxLength: 4 }) }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 64, max: 2048 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 40 }),
        (frames, bufSize, mergeable, nbuf) => {
          const t = new Rig('split', { size: 64, regionSize: 1 << 20 });
          const r = new Rig('split', { size: 64, regionSize: 1 << 20 });
          try {
            const fs = frames.map((f, i) => frame(f.len, i));
            fs.forEach((f, i) => addTx(t, f, frames[i].cuts));
            t.drv.publish();
            postRx(r, nbuf, bufSize);
            const n = t.q.pop();
            const st = new Uint32Array(7);
            netDeliver({ q: r.q, hdrLen: HDR, mergeable }, t.q, HDR, false, chains, n, st);
            const got = receive(r);
            expect(got.length).to.equal(st[0]);
            expect(st[0] + st[1] + st[2] + st[3]).to.equal(fs.length);
            // Delivered frames are the sent ones, in order, byte-exact.
            let k = 0;
            for (const g of got) {
              while (Buffer.from(fs[k]).compare(Buffer.from(g.frame)) !== 0) k++;
              k++;
            }
            expect(r.q.inFlight).to.equal(0);
            expect(r.canariesIntact()).to.equal(true);
          } finally {
            t.close();
            r.close();
          }
        },
      ),
      fcParams(150),
    );
  });
});
