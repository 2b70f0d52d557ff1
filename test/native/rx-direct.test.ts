// The receive fast path (Virtqueue PopDirect, taken by every net delivery): RX chains that
// are one device-writable descriptor each are handed out without the burst arrays; any
// other chain goes through Pop. Both kinds mixed in one ring, in two memory regions,
// given back when a frame cannot use them, refused when hostile, and not taken while
// dirty logging is on (Pop's bookkeeping marks the pages).
import { expect } from 'chai';
import { closeSync, readSync } from 'node:fs';
import { createMemfd } from '../../src/native/guest-memory.js';
import { DeliverStat, netDeliverFlat } from '../../src/native/net.js';
import type { RingLayout } from '../../src/native/virtqueue.js';
import { PackedDriver, SplitDriver } from '../../src/virtio/driver.js';
import { PackedDescFlags as P, SplitDescFlags as S } from '../../src/virtio/ring-layout.js';
import { DirtyLog } from '../../src/vhost-user/dirty-log.js';
import { BASE, MiB, Rig } from './ring-rig.js';

const HDR = 12;

function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i * 11 + seed * 29 + (i >> 7)) & 0xff;
  return f;
}

/** Frames laid out one after another, as netDeliverFlat takes them. */
function flat(frames: Uint8Array[]): { data: Uint8Array; offsets: Uint32Array; lens: Uint32Array } {
  const data = new Uint8Array(frames.reduce((n, f) => n + f.length, 0) + 1);
  const offsets = new Uint32Array(frames.length);
  const lens = new Uint32Array(frames.length);
  let at = 0;
  frames.forEach((f, i) => {
    data.set(f, at);
    offsets[i] = at;
    lens[i] = f.length;
    at += f.length;
  });
  return { data, offsets, lens };
}

function deliver(rig: Rig, frames: Uint8Array[], stats: Uint32Array, mergeable = true): number {
  const f = flat(frames);
  return netDeliverFlat({ q: rig.q, hdrLen: HDR, mergeable }, f.data, f.offsets, f.lens, frames.length, null, stats);
}

/** The frames the driver received, in used-ring order, joined over num_buffers chains; and the ids. */
function received(rig: Rig): { frames: Uint8Array[]; ids: number[] } {
  const used = rig.drv.used();
  const frames: Uint8Array[] = [];
  for (let i = 0; i < used.length; ) {
    const first = rig.drv.readWritten(used[i].id, used[i].len);
    const nb = first[10] | (first[11] << 8);
    const parts = [first];
    for (let k = 1; k < nb; k++) parts.push(rig.drv.readWritten(used[i + k].id, used[i + k].len));
    frames.push(new Uint8Array(Buffer.concat(parts).subarray(HDR)));
    i += Math.max(nb, 1);
  }
  return { frames, ids: used.map((u) => u.id) };
}

function same(a: Uint8Array[], b: Uint8Array[]): void {
  expect(a.map((x) => x.length)).to.deep.equal(b.map((x) => x.length));
  a.forEach((x, i) => expect(Buffer.from(x).equals(Buffer.from(b[i])), `frame ${i}`).to.equal(true));
}

for (const layout of ['split', 'packed'] as RingLayout[]) {
  describe(`receive fast path (${layout})`, () => {
    let rig: Rig;
    const stats = new Uint32Array(7);
    beforeEach(() => stats.fill(0));
    afterEach(() => rig?.close());

    it('mixes one-descriptor and chained RX buffers in one burst: frames arrive in order, byte-exact, ids in posting order', () => {
      rig = new Rig(layout, { size: 64 });
      const posted: number[] = [];
      for (let i = 0; i < 12; i++) {
        // Runs of one-descriptor buffers, broken by two-descriptor and readable-first chains.
        const segs =
          i % 5 === 3 ? [{ len: 20, writable: true }, { len: 2028, writable: true }] : i % 7 === 6 ? [{ len: 4, writable: false }, { len: 2048, writable: true }] : [{ len: 2048, writable: true }];
        posted.push(rig.drv.add(segs));
      }
      rig.drv.publish();
      const frames = Array.from({ length: 12 }, (_, i) => frame(60 + 97 * i, i));
      expect(deliver(rig, frames, stats)).to.be.at.least(0);
      expect(stats[DeliverStat.DELIVERED]).to.equal(12);
      const got = received(rig);
      same(got.frames, frames);
      expect(got.ids).to.deep.equal(posted);
      expect(rig.q.inFlight).to.equal(0);
      expect(rig.canariesIntact()).to.equal(true);
    });

    it('spreads a frame over several one-descriptor buffers (mergeable), and refuses it whole when not mergeable', () => {
      rig = new Rig(layout, { size: 64 });
      const posted = Array.from({ length: 8 }, () => rig.drv.add([{ len: 512, writable: true }]));
      rig.drv.publish();
      const big = frame(1400, 3);
      deliver(rig, [frame(60, 1), big, frame(70, 2)], stats);
      const got = received(rig);
      same(got.frames, [frame(60, 1), big, frame(70, 2)]);
      expect(got.ids).to.deep.equal(posted.slice(0, 5)); // 1412 bytes in three 512-byte buffers
      // Not mergeable: the big frame is counted and dropped, its buffers given back in order.
      stats.fill(0);
      deliver(rig, [big, frame(61, 4)], stats, false);
      expect(stats[DeliverStat.TOO_BIG]).to.equal(1);
      expect(stats[DeliverStat.DELIVERED]).to.equal(1);
      const after = received(rig); // what was used since the last look
      same(after.frames, [frame(61, 4)]);
      expect(after.ids).to.deep.equal([posted[5]], 'the refused frame\'s buffer taken again');
      expect(rig.q.inFlight).to.equal(0);
      // The buffers popped ahead were given back too: two more frames take the next two.
      deliver(rig, [frame(62, 5), frame(63, 6)], stats, false);
      expect(received(rig).ids).to.deep.equal([posted[6], posted[7]]);
      expect(rig.q.inFlight).to.equal(0);
    });

    it('takes buffers in either of two memory regions; one straddling them goes the chained way', () => {
      rig = new Rig(layout, { size: 64, splitAt: 2 * MiB });
      const edge = BASE + 2 * MiB;
      const at = [edge - 8192, edge + 4096, edge - 100, edge + 8192, edge - 4096];
      const posted = at.map((addr) => rig.drv.add([{ len: 1024, writable: true, addr }]));
      rig.drv.publish();
      const frames = at.map((_, i) => frame(200 + i, i));
      deliver(rig, frames, stats);
      const got = received(rig);
      same(got.frames, frames);
      expect(got.ids).to.deep.equal(posted);
      expect(rig.canariesIntact()).to.equal(true);
    });

    it('leaves a hostile buffer to Pop, which refuses it: the frames before it are delivered, the queue breaks', () => {
      rig = new Rig(layout, { size: 16 });
      const buf = () => rig.alloc.alloc(2048);
      if (layout === 'split') {
        const d = rig.drv as SplitDriver;
        d.writeDesc(0, { addr: buf(), len: 2048, flags: S.WRITE, next: 0 });
        d.writeDesc(1, { addr: buf(), len: 2048, flags: S.WRITE, next: 0 });
        [0, 1, 0].forEach((h, i) => d.setAvailRing(i, h)); // head 0 offered again while held
        d.setAvailIdx(3);
      } else {
        const d = rig.drv as PackedDriver;
        d.writeDesc(0, { addr: buf(), len: 2048, id: 0, flags: P.AVAIL | P.WRITE });
        d.writeDesc(1, { addr: buf(), len: 2048, id: 1, flags: P.AVAIL | P.WRITE });
        d.writeDesc(2, { addr: buf(), len: 2048, id: 0, flags: P.AVAIL | P.WRITE });
      }
      const r = deliver(rig, [frame(60, 1), frame(60, 2), frame(60, 3)], stats);
      expect(stats[DeliverStat.DELIVERED]).to.equal(2);
      expect(r).to.be.below(0);
      expect(rig.q.error?.code).to.equal('ID_IN_FLIGHT');
    });

    it('is not taken while dirty logging is on: delivered buffers are marked in the log', () => {
      rig = new Rig(layout, { size: 16 });
      const ids = [0, 1, 2].map(() => rig.drv.add([{ len: 2048, writable: true }]));
      rig.drv.publish();
      const logFd = createMemfd('dirty-log', 4096);
      const log = DirtyLog.map(logFd, 4096n, 0n);
      try {
        rig.q.setDirtyLog(log.raw, null);
        deliver(rig, [frame(60, 1), frame(1000, 2)], stats);
        expect(stats[DeliverStat.DELIVERED]).to.equal(2);
        const bits = new Uint8Array(4096);
        readSync(logFd, bits, 0, 4096, 0);
        for (const id of ids.slice(0, 2)) {
          const page = Math.floor(rig.drv.chainBuffers(id)[0].addr / 4096);
          expect((bits[page >> 3] >> (page & 7)) & 1, `page ${page} of buffer ${id}`).to.equal(1);
        }
      } finally {
        rig.q.setDirtyLog(null, null);
        log.close();
        closeSync(logFd);
      }
      // Logging off: the fast path again, same result.
      deliver(rig, [frame(61, 3)], stats);
      same(received(rig).frames, [frame(60, 1), frame(1000, 2), frame(61, 3)]);
    });
  });
}
