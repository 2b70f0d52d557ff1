// Inflight I/O tracking for packed rings (vhostkit's own layout, native/ring/packed_ring.h).
// A backend killed with requests in flight is replaced by a new one that pops exactly
// those chains again, oldest first, from saved copies of their descriptors (the device
// writes used descriptors over in-flight ones), and continues the ring from the position
// saved in the area (QEMU cannot restore a packed ring's position after a backend died).
import { expect } from 'chai';
import fc from 'fast-check';
import { fcParams } from '../lib/fuzz-runs.js';
import { closeSync } from 'node:fs';
import { GuestMemory, createMemfd } from '../../src/native/guest-memory.js';
import { Virtqueue, VringErrorCode } from '../../src/native/virtqueue.js';
import { PackedDriver, type Segment } from '../../src/virtio/driver.js';
import { inflightQueueBytes } from '../../src/vhost-user/session.js';
import { Rig } from './ring-rig.js';

/** The base QEMU sends on every start of a fresh packed ring (and again after a backend died). */
const STALE_BASE = (1 << 15) | (1 << 31);

class PackedInflightRig {
  readonly rig: Rig;
  readonly area: GuestMemory;
  readonly per: number;
  q: Virtqueue;

  constructor(readonly size: number) {
    this.rig = new Rig('packed', { size });
    this.per = inflightQueueBytes(size, true);
    const fd = createMemfd('inflight', this.per);
    this.area = GuestMemory.map([{ fd, gpa: 0n, size: BigInt(this.per), uva: 0n, mmapOffset: 0n }]);
    closeSync(fd);
    this.q = this.rig.q;
    expect(this.q.setInflight(this.area, 0, this.per)).to.equal(true);
    this.q.syncUsedFromRing();
  }

  get drv(): PackedDriver {
    return this.rig.drv as PackedDriver;
  }
  get bytes(): Uint8Array {
    return this.area.view(0);
  }
  get dv(): DataView {
    return new DataView(this.bytes.buffer, this.bytes.byteOffset, this.per);
  }

  /** The backend dies; a new one starts over the same rings and area. */
  restart(base = STALE_BASE): Virtqueue {
    this.q.detach();
    const q = new Virtqueue({ layout: 'packed', size: this.size });
    q.setFeatures({ eventIdx: false, indirect: true });
    q.setMemory(this.rig.mem);
    q.setBase(base);
    q.setRings(this.rig.ringAddrs(), 'gpa');
    expect(q.setInflight(this.area, 0, this.per)).to.equal(true);
    q.syncUsedFromRing();
    this.q = q;
    return q;
  }

  complete(ids: number[]): void {
    ids.forEach((id, i) => {
      this.q.b.usedId[i] = id;
      this.q.b.usedLen[i] = 1;
    });
    this.q.push(ids.length);
  }

  popIds(max?: number): number[] {
    const n = this.q.pop(max);
    expect(n).to.be.at.least(0);
    return Array.from(this.q.b.head.subarray(0, n));
  }

  close(): void {
    this.q.detach();
    this.rig.close();
    this.area.close();
  }
}

function chain(tag: number, descs = 2): Segment[] {
  const data = Uint8Array.of(tag & 0xff, tag >> 8, 0x5a, 0xa5);
  const segs: Segment[] = [{ len: 4, writable: false, data }];
  for (let i = 2; i < descs; i++) segs.push({ len: 8, writable: false });
  segs.push({ len: 1, writable: true });
  return segs;
}

describe('inflight tracking (packed ring)', () => {
  let r: PackedInflightRig;
  afterEach(() => r.close());

  it('initializes a fresh area: magic, queue size, the ring position from SET_VRING_BASE', () => {
    r = new PackedInflightRig(16);
    expect(r.dv.getUint32(0, true)).to.equal(0x31504b56);
    expect(r.dv.getUint16(4, true)).to.equal(16);
    expect(r.dv.getUint16(8, true)).to.equal(0x8000);
    expect(r.dv.getUint16(16, true)).to.equal(0x8000);
  });

  it('resubmits in-flight chains from their saved copies after used descriptors overwrote them, and continues the ring where it was', () => {
    r = new PackedInflightRig(8);
    const d = r.drv;
    // A (3 descriptors), B (1, indirect), C (2): 6 of 8 slots.
    const a = d.add(chain(1, 3));
    const b = d.add(chain(2, 3), { indirect: true });
    const c = d.add(chain(3, 2));
    d.publish();
    expect(r.popIds()).to.deep.equal([a, b, c]);
    // C then B complete: their used descriptors land in slots 0 and 2, over A's chain.
    r.complete([c]);
    r.complete([b]);
    expect(d.used().map((u) => u.id)).to.deep.equal([c, b]);
    // The driver reuses the freed slots (6, 7, 0, 1): D wraps round over A's slots.
    const dd = d.add(chain(4, 4));
    d.publish();
    const q = r.restart();
    expect(q.resubmitPending).to.equal(1);
    expect(r.popIds()).to.deep.equal([a, dd]);
    expect(Array.from(q.views(0)[0]), "A's data, from the saved descriptors").to.deep.equal([1, 0, 0x5a, 0xa5]);
    expect(q.views(0).length).to.equal(3);
    expect(Array.from(q.views(1)[0])).to.deep.equal([4, 0, 0x5a, 0xa5]);
    r.complete([dd, a]);
    expect(d.used().map((u) => u.id)).to.deep.equal([dd, a]);
    expect(d.outstanding).to.equal(0);
    // And the ring goes on normally.
    const e = d.addAndPublish(chain(5));
    expect(r.popIds()).to.deep.equal([e]);
    r.complete([e]);
    expect(d.used().map((u) => u.id)).to.deep.equal([e]);
  });

  it('a push batch that reached the ring before the backend died committing it is not redone', () => {
    r = new PackedInflightRig(16);
    const d = r.drv;
    const ids = [d.add(chain(1)), d.add(chain(2)), d.add(chain(3))];
    d.publish();
    r.popIds();
    const usedBefore = r.dv.getUint16(16, true);
    r.complete([ids[1]]);
    // Put the area back as it was between writing the ring and the commit.
    r.dv.setUint16(18, r.dv.getUint16(16, true), true);
    r.dv.setUint16(16, usedBefore, true);
    r.bytes[64 + 16 * ids[1]] = 2;
    r.bytes[6] = 1;
    const q = r.restart();
    expect(q.resubmitPending).to.equal(2);
    expect(r.popIds()).to.deep.equal([ids[0], ids[2]]);
    r.complete([ids[0], ids[2]]);
    expect(d.used().map((u) => u.id)).to.deep.equal([ids[1], ids[0], ids[2]]);
  });

  it('a push batch marked but not yet written to the ring stays in flight', () => {
    r = new PackedInflightRig(16);
    const d = r.drv;
    const ids = [d.add(chain(1)), d.add(chain(2))];
    d.publish();
    r.popIds();
    // The backend marked id 0's completion (state 2, batch valid) and died before the ring.
    r.bytes[64 + 16 * ids[0]] = 2;
    r.dv.setUint16(18, r.dv.getUint16(16, true) + 2, true);
    r.bytes[6] = 1;
    const q = r.restart();
    expect(q.resubmitPending).to.equal(2);
    expect(r.popIds()).to.deep.equal([ids[0], ids[1]]);
    r.complete([ids[1], ids[0]]);
    expect(d.used().map((u) => u.id)).to.deep.equal([ids[1], ids[0]]);
  });

  it('chains of a pop burst that was never committed are popped again from the ring, once', () => {
    r = new PackedInflightRig(16);
    const d = r.drv;
    const a = d.addAndPublish(chain(1));
    r.popIds();
    const committed = r.dv.getBigUint64(8, true);
    const b = d.addAndPublish(chain(2));
    r.popIds();
    r.dv.setBigUint64(8, committed, true); // died before the second burst's commit
    const q = r.restart();
    expect(q.resubmitPending).to.equal(1);
    expect(r.popIds()).to.deep.equal([a, b]);
    expect(r.popIds()).to.deep.equal([]);
    r.complete([a, b]);
    expect(d.used().map((u) => u.id)).to.deep.equal([a, b]);
  });

  it('a chain given back (unpop) is neither resubmitted nor lost', () => {
    r = new PackedInflightRig(16);
    const d = r.drv;
    const a = d.addAndPublish(chain(1));
    const b = d.addAndPublish(chain(2, 3));
    expect(r.popIds()).to.deep.equal([a, b]);
    r.q.unpop([b]);
    let q = r.restart();
    expect(q.resubmitPending).to.equal(1);
    expect(r.popIds()).to.deep.equal([a, b]);
    q.unpop([a, b]);
    expect(q.resubmitPending).to.equal(1);
    expect(r.popIds()).to.deep.equal([a, b]);
    r.complete([b, a]);
    expect(d.used().map((u) => u.id)).to.deep.equal([b, a]);
    q = r.restart();
    expect(q.resubmitPending).to.equal(0);
    expect(r.popIds()).to.deep.equal([]);
  });

  it('an inconsistent area is reinitialized (nothing resubmitted, position from SET_VRING_BASE)', () => {
    r = new PackedInflightRig(16);
    const d = r.drv;
    d.addAndPublish(chain(1));
    r.popIds();
    for (const garbage of [
      (b: Uint8Array) => b.fill(0xff, 8),
      (b: Uint8Array) => b.fill(0x01, 64),
      (b: Uint8Array) => b.fill(0x5a, 4),
    ]) {
      garbage(r.bytes);
      const q = r.restart(STALE_BASE);
      expect(q.resubmitPending).to.equal(0);
      expect(q.getBase()).to.equal(STALE_BASE >>> 0);
      expect(r.dv.getUint32(0, true)).to.equal(0x31504b56);
    }
  });

  it('a copy changed in the area breaks the queue with INFLIGHT_CORRUPT, not the process', () => {
    r = new PackedInflightRig(16);
    const d = r.drv;
    const a = d.addAndPublish(chain(1, 3));
    expect(r.popIds()).to.deep.equal([a]);
    // Clear NEXT in the first saved descriptor: the copy now ends early.
    const first = r.dv.getUint16(64 + 16 * a + 4, true);
    const flagsAt = 64 + 16 * 16 + 16 * first + 14;
    r.dv.setUint16(flagsAt, r.dv.getUint16(flagsAt, true) & ~1, true);
    const q = r.restart();
    expect(q.resubmitPending).to.equal(1);
    expect(q.pop()).to.equal(-VringErrorCode.INFLIGHT_CORRUPT);
    expect(q.error?.message).to.match(/saved copy of in-flight buffer id/);
  });

  it('a driver putting more descriptors in flight than the queue size breaks the queue', () => {
    r = new PackedInflightRig(4);
    const d = r.drv;
    const a = d.addAndPublish(chain(1, 4));
    expect(r.popIds()).to.deep.equal([a]);
    // Hostile: slot 0 offered again in the next round (AVAIL=0, USED=1) with another id.
    d.writeDesc(0, { addr: BigInt(d.chainBuffers(a)[0].addr), len: 4, id: 1, flags: 1 << 15 });
    expect(r.q.pop()).to.equal(-VringErrorCode.CHAIN_TOO_LONG);
    expect(r.q.error?.message).to.match(/more than 4 descriptors in flight/);
  });

  it('property: kills at any point between bursts lose nothing and complete nothing twice', function () {
    this.timeout(60000);
    type Op =
      | { k: 'add'; n: number; descs: number; indirect: boolean }
      | { k: 'pop'; max: number }
      | { k: 'complete'; pick: number[] }
      | { k: 'used' }
      | { k: 'restart' };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ k: fc.constant('add' as const), n: fc.integer({ min: 1, max: 4 }), descs: fc.integer({ min: 2, max: 4 }), indirect: fc.boolean() }),
      fc.record({ k: fc.constant('pop' as const), max: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ k: fc.constant('complete' as const), pick: fc.array(fc.nat(), { maxLength: 6 }) }),
      fc.constant({ k: 'used' as const }),
      fc.constant({ k: 'restart' as const }),
    );
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 50 }), (ops) => {
        const t = new PackedInflightRig(8);
        try {
          const d = t.drv;
          const tagOf = new Map<number, number>();
          const done: number[] = [];
          let held: number[] = [];
          let tag = 0;
          const pop = (max?: number): void => {
            const n = t.q.pop(max);
            expect(n).to.be.at.least(0);
            for (let i = 0; i < n; i++) {
              const id = t.q.b.head[i];
              expect(held).to.not.include(id);
              const want = tagOf.get(id)!;
              expect(Array.from(t.q.views(i)[0]), `data of id ${id}`).to.deep.equal([want & 0xff, want >> 8, 0x5a, 0xa5]);
              held.push(id);
            }
          };
          const consume = (): void => {
            for (const u of d.used()) done.push(tagOf.get(u.id)!);
          };
          for (const o of ops) {
            if (o.k === 'add') {
              for (let i = 0; i < o.n; i++) {
                const need = o.indirect ? 1 : o.descs;
                if (d.numFree < need || d.numFreeIds === 0) break;
                const id = d.add(chain(++tag, o.descs), { indirect: o.indirect });
                tagOf.set(id, tag);
              }
              d.publish();
            } else if (o.k === 'pop') {
              pop(o.max);
            } else if (o.k === 'complete') {
              const ids: number[] = [];
              for (const p of o.pick) {
                if (held.length === 0) break;
                ids.push(held.splice(p % held.length, 1)[0]);
              }
              if (ids.length > 0) t.complete(ids);
            } else if (o.k === 'used') {
              consume();
            } else {
              const before = held.length + t.q.resubmitPending;
              t.restart();
              expect(t.q.resubmitPending, 'resubmitted = held by the dead backend').to.equal(before);
              held = [];
            }
          }
          for (let round = 0; round < 20 && (d.outstanding > 0 || held.length > 0); round++) {
            pop();
            if (held.length > 0) t.complete(held.splice(0));
            consume();
          }
          expect(d.outstanding).to.equal(0);
          expect(done.slice().sort((x, y) => x - y)).to.deep.equal(Array.from({ length: tag }, (_, i) => i + 1));
        } finally {
          t.close();
        }
      }),
      fcParams(300),
    );
  });
});
