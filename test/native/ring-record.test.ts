// The ring position record of packed rings (native/ring/packed_ring.h, ring-record.ts):
// what lets a packed-ring net port survive a backend killed with `kill -9`, when QEMU
// re-sends the SET_VRING_BASE of the previous start and gives net no inflight area.
// A restarted queue continues from the used position the dead one recorded, pops again
// the chains it had in flight, and finishes a push batch the dead one was writing.
import { expect } from 'chai';
import fc from 'fast-check';
import { closeSync } from 'node:fs';
import { fcParams, timeoutFor } from '../lib/fuzz-runs.js';
import { GuestMemory, createMemfd } from '../../src/native/guest-memory.js';
import { Virtqueue, ringRecordBytes } from '../../src/native/virtqueue.js';
import { PackedDriver, type Segment } from '../../src/virtio/driver.js';
import { Rig } from './ring-rig.js';

/** The base QEMU sends on the first start of a packed ring, and again after its backend died. */
const STALE_BASE = ((1 << 15) | (1 << 31)) >>> 0;
const MAGIC = 0x31524b56;

class RecordRig {
  readonly rig: Rig;
  readonly area: GuestMemory;
  readonly len: number;
  q: Virtqueue;

  constructor(
    readonly size: number,
    readonly frontendBase = STALE_BASE,
  ) {
    this.rig = new Rig('packed', { size });
    this.len = ringRecordBytes(size);
    const fd = createMemfd('ring-record', this.len);
    this.area = GuestMemory.map([{ fd, gpa: 0n, size: BigInt(this.len), uva: 0n, mmapOffset: 0n }]);
    closeSync(fd);
    this.rig.q.detach();
    this.q = this.start();
  }

  /** A backend starting the queue: SET_VRING_BASE, rings, record, then the start. */
  start(base = this.frontendBase, addrs = this.rig.ringAddrs()): Virtqueue {
    const q = new Virtqueue({ layout: 'packed', size: this.size });
    q.setFeatures({ eventIdx: false, indirect: true });
    q.setMemory(this.rig.mem);
    q.setBase(base);
    q.setRings(addrs, 'gpa');
    expect(q.setRingRecord(this.area, 0, this.len, base)).to.equal(true);
    q.syncUsedFromRing();
    return q;
  }

  /** The backend dies (nothing more is written) and a new one starts with the stale base. */
  restart(base = this.frontendBase): Virtqueue {
    this.q.detach();
    this.q = this.start(base);
    return this.q;
  }

  get drv(): PackedDriver {
    return this.rig.drv as PackedDriver;
  }
  get dv(): DataView {
    const b = this.area.view(0);
    return new DataView(b.buffer, b.byteOffset, this.len);
  }
  /** The ring's bytes (the descriptor table starts at drv.descAddr). */
  ringSlot(slot: number): Uint8Array {
    const v = this.rig.mem.view(0);
    const at = this.drv.descAddr - 0x100000 + 16 * slot;
    return v.subarray(at, at + 16);
  }

  popIds(max?: number): number[] {
    const n = this.q.pop(max);
    expect(n, `pop: ${this.q.error ?? ''}`).to.be.at.least(0);
    return Array.from(this.q.b.head.subarray(0, n));
  }

  push(ids: number[], lens: number[]): boolean {
    ids.forEach((id, i) => {
      this.q.b.usedId[i] = id;
      this.q.b.usedLen[i] = lens[i];
    });
    return this.q.push(ids.length);
  }

  close(): void {
    this.q.detach();
    this.rig.close();
    this.area.close();
  }
}

function chain(tag: number, descs = 1): Segment[] {
  const segs: Segment[] = [{ len: 4, writable: false, data: Uint8Array.of(tag & 0xff, tag >> 8, 0x5a, 0xa5) }];
  for (let i = 2; i < descs; i++) segs.push({ len: 8, writable: false });
  if (descs > 1) segs.push({ len: 64, writable: true });
  return segs;
}

describe('ring position record (packed ring, no inflight area)', () => {
  let r: RecordRig;
  afterEach(() => r.close());

  it('starts a fresh record: magic, size, the ring addresses, the frontend base, the used position', () => {
    r = new RecordRig(16);
    expect(r.q.ringRecordState).to.equal('fresh');
    expect(r.dv.getUint32(0, true)).to.equal(MAGIC);
    expect(r.dv.getUint16(4, true)).to.equal(16);
    const a = r.rig.ringAddrs();
    expect(r.dv.getBigUint64(8, true)).to.equal(a.desc);
    expect(r.dv.getBigUint64(16, true)).to.equal(a.driver);
    expect(r.dv.getBigUint64(24, true)).to.equal(a.device);
    expect(r.dv.getUint32(32, true)).to.equal(STALE_BASE);
    expect(r.dv.getUint16(36, true)).to.equal(0x8000);
  });

  it('a restarted queue continues from the recorded used position, popping the chains in flight again, across wraps', () => {
    r = new RecordRig(8);
    const d = r.drv;
    let tag = 0;
    // Round the ring several times (both wrap counters flip), completing everything.
    for (let round = 0; round < 5; round++) {
      const ids = [d.add(chain(tag++, 2)), d.add(chain(tag++, 1)), d.add(chain(tag++, 3))];
      d.publish();
      expect(r.popIds()).to.deep.equal(ids);
      r.push(ids, [1, 2, 3]);
      expect(d.used().map((u) => u.id)).to.deep.equal(ids);
    }
    // In flight at the crash: x and y popped, x completed, y not; z not popped yet.
    const x = d.add(chain(tag++, 2));
    const y = d.add(chain(tag++, 1));
    d.publish();
    expect(r.popIds()).to.deep.equal([x, y]);
    r.push([x], [7]);
    const z = d.addAndPublish(chain(tag++, 1));
    expect(r.dv.getUint16(36, true), 'used position recorded').to.equal(r.q.getBase() >>> 16);

    // A fresh start from the stale base would look at slot 0 and find nothing available.
    const q = r.restart();
    expect(q.ringRecordState).to.equal('recovered');
    const base = q.getBase();
    expect(base & 0xffff, 'avail position = used position').to.equal(base >>> 16);
    expect(r.popIds()).to.deep.equal([y, z]);
    r.push([y, z], [8, 9]);
    const used = d.used();
    expect(used.map((u) => [u.id, u.len])).to.deep.equal([
      [x, 7],
      [y, 8],
      [z, 9],
    ]);
    expect(d.outstanding).to.equal(0);
  });

  it('is not used for a different frontend base, other ring addresses, or after GET_VRING_BASE was answered', () => {
    r = new RecordRig(8);
    const d = r.drv;
    const ids = [d.add(chain(1)), d.add(chain(2))];
    d.publish();
    r.popIds();
    r.push(ids, [1, 1]);
    d.used();
    // The frontend learned a newer base: it is the truth, the record is started again.
    const now = r.q.getBase();
    let q = r.restart(now);
    expect(q.ringRecordState).to.equal('fresh');
    expect(r.dv.getUint32(32, true)).to.equal(now);
    // Other rings (a new driver after a guest reboot allocated them elsewhere).
    q.detach();
    const a = r.rig.ringAddrs();
    r.q = r.start(now, { ...a, device: a.device + 64n });
    expect(r.q.ringRecordState).to.equal('fresh');
    // GET_VRING_BASE answered: the record is dropped; the next start is fresh.
    r.q.detach();
    r.q = r.start(now);
    expect(r.q.ringRecordState).to.equal('fresh');
    r.q.forgetRingRecord();
    expect(r.dv.getUint32(0, true)).to.equal(0);
    q = r.restart(now);
    expect(q.ringRecordState).to.equal('fresh');
  });

  for (const stage of ['record only', 'some used descriptors, not the head', 'the head too, not committed'] as const) {
    it(`finishes a push batch the dead backend was writing (${stage})`, () => {
      r = new RecordRig(16);
      const d = r.drv;
      const ids = [d.add(chain(1, 2)), d.add(chain(2, 1)), d.add(chain(3, 3)), d.add(chain(4, 1))];
      d.publish();
      expect(r.popIds()).to.deep.equal(ids);
      r.push([ids[0]], [5]);
      expect(d.used().map((u) => u.id)).to.deep.equal([ids[0]]);
      // The batch [ids 1..3] at slots 2, 3, 6. Save the ring as it was before it.
      const headSlots = [2, 3, 6];
      const saved = headSlots.map((s) => Uint8Array.from(r.ringSlot(s)));
      const usedBefore = r.dv.getUint16(36, true);
      r.push(ids.slice(1), [10, 11, 12]);
      // Rewind to the moment the backend died: the batch logged (write-ahead), and the ring
      // holding none, some or all of it.
      if (stage === 'record only') headSlots.forEach((s, i) => r.ringSlot(s).set(saved[i]));
      if (stage === 'some used descriptors, not the head') r.ringSlot(2).set(saved[0]);
      r.dv.setUint16(36, usedBefore, true);
      r.dv.setUint8(6, 1);
      const q = r.restart();
      expect(q.ringRecordState).to.equal('recovered');
      expect(r.dv.getUint8(6), 'batch settled').to.equal(0);
      expect(d.used().map((u) => [u.id, u.len])).to.deep.equal([
        [ids[1], 10],
        [ids[2], 11],
        [ids[3], 12],
      ]);
      expect(d.outstanding).to.equal(0);
      // and the ring goes on
      const e = d.addAndPublish(chain(5, 2));
      expect(r.popIds()).to.deep.equal([e]);
      r.push([e], [3]);
      expect(d.used().map((u) => u.id)).to.deep.equal([e]);
    });
  }

  it('a batch whose head the driver already consumed and made available again is not written twice', () => {
    r = new RecordRig(4);
    const d = r.drv;
    const ids = [d.add(chain(1)), d.add(chain(2))];
    d.publish();
    r.popIds();
    const usedBefore = r.dv.getUint16(36, true);
    r.push(ids, [1, 2]);
    // The driver consumed the batch and offered a new chain in slot 2 (its next slot).
    expect(d.used().map((u) => u.id)).to.deep.equal(ids);
    const n = d.addAndPublish(chain(3));
    // The backend died after the head flags, before committing.
    r.dv.setUint16(36, usedBefore, true);
    r.dv.setUint8(6, 1);
    r.restart();
    expect(r.popIds()).to.deep.equal([n]);
    r.push([n], [4]);
    expect(d.used().map((u) => u.id)).to.deep.equal([n]);
  });

  it('a device completing chains out of pop order loses its record (a restart could not use it)', () => {
    r = new RecordRig(8);
    const d = r.drv;
    const ids = [d.add(chain(1)), d.add(chain(2))];
    d.publish();
    r.popIds();
    r.push([ids[1]], [1]);
    expect(r.q.ringRecordState).to.equal('out-of-order');
    expect(r.dv.getUint32(0, true)).to.equal(0);
    r.push([ids[0]], [1]);
    expect(d.used().map((u) => u.id)).to.deep.equal([ids[1], ids[0]]);
    expect(r.restart().ringRecordState).to.equal('fresh');
  });

  it('split rings keep no record (QEMU restores them from the used index)', () => {
    const rig = new Rig('split', { size: 8 });
    const fd = createMemfd('ring-record', 4096);
    const area = GuestMemory.map([{ fd, gpa: 0n, size: 4096n, uva: 0n, mmapOffset: 0n }]);
    closeSync(fd);
    expect(rig.q.setRingRecord(area, 0, 4096, 0)).to.equal(false);
    expect(rig.q.ringRecordState).to.equal('none');
    rig.q.detach();
    rig.close();
    area.close();
    r = new RecordRig(4); // for afterEach
  });

  it('property: restarts at any point, with any push batch cut short, complete every chain exactly once with its last length', function () {
    this.timeout(timeoutFor(300, 200)); // a loaded machine: no timing is asserted
    const op = fc.oneof(
      { weight: 4, arbitrary: fc.record({ k: fc.constant('add' as const), descs: fc.integer({ min: 1, max: 3 }), indirect: fc.boolean() }) },
      { weight: 3, arbitrary: fc.record({ k: fc.constant('pop' as const), max: fc.integer({ min: 1, max: 6 }) }) },
      { weight: 3, arbitrary: fc.record({ k: fc.constant('push' as const), m: fc.integer({ min: 1, max: 6 }) }) },
      { weight: 2, arbitrary: fc.record({ k: fc.constant('reap' as const) }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('restart' as const) }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('cut' as const), m: fc.integer({ min: 1, max: 6 }), stage: fc.integer({ min: 0, max: 2 }), reap: fc.boolean() }) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 12 }), fc.array(op, { maxLength: 60 }), (size, ops) => {
        const rr = new RecordRig(size);
        try {
          const d = rr.drv;
          let popped: number[] = [];
          const expectLen = new Map<number, number>();
          let lenCtr = 1;
          let tag = 0;
          const reap = () => {
            for (const u of d.used()) {
              expect(u.len, `length of id ${u.id}`).to.equal(expectLen.get(u.id));
              expectLen.delete(u.id);
            }
          };
          const push = (m: number) => {
            const ids = popped.slice(0, m);
            popped = popped.slice(ids.length);
            const lens = ids.map(() => lenCtr++);
            ids.forEach((id, i) => expectLen.set(id, lens[i]));
            if (ids.length > 0) rr.push(ids, lens);
            return ids;
          };
          for (const o of ops) {
            if (o.k === 'add') {
              const need = o.indirect ? 1 : o.descs;
              if (d.numFree < need || d.numFreeIds === 0) continue;
              d.addAndPublish(chain(tag++, o.descs), { indirect: o.indirect });
            } else if (o.k === 'pop') {
              popped.push(...rr.popIds(o.max));
            } else if (o.k === 'push') {
              push(o.m);
            } else if (o.k === 'reap') {
              reap();
            } else if (o.k === 'restart') {
              rr.restart();
              popped = [];
            } else {
              // A push batch cut short by the crash, at one of three points.
              if (popped.length === 0) continue;
              const base = rr.q.getBase();
              const before = rr.dv.getUint16(36, true);
              // the batch's used descriptors go to the chains' first slots, from the used position
              const slots: number[] = [];
              let pos = base >>> 16 & 0x7fff;
              const n = Math.min(o.m, popped.length);
              const nd = popped.slice(0, n).map((id) => d.chainSlots(id).length);
              for (let i = 0; i < n; i++) {
                slots.push(pos);
                pos = (pos + nd[i]) % size;
              }
              const saved = slots.map((s) => Uint8Array.from(rr.ringSlot(s)));
              push(n);
              if (o.stage === 0) slots.forEach((s, i) => rr.ringSlot(s).set(saved[i]));
              if (o.stage === 1) rr.ringSlot(slots[0]).set(saved[0]);
              if (o.stage === 2 && o.reap) reap();
              rr.dv.setUint16(36, before, true);
              rr.dv.setUint8(6, 1);
              rr.restart();
              popped = [];
            }
          }
          // Drain: everything in flight completes; everything available is popped and completes.
          for (let guard = 0; guard < 4 * size + 4; guard++) {
            push(popped.length);
            const more = rr.popIds();
            if (more.length === 0 && popped.length === 0) break;
            popped.push(...more);
          }
          push(popped.length);
          reap();
          expect(d.outstanding, 'every chain completed').to.equal(0);
          expect(expectLen.size).to.equal(0);
        } finally {
          rr.close();
        }
      }),
      fcParams(300),
    );
    r = new RecordRig(4); // for afterEach
  });
});
