// Regression (found by the packed ring fuzz target, native/fuzz/corpus/packed_ring/
// regression-resubmit-reused-id): after a backend restart with an inflight area, chains
// waiting for resubmission come before any chain of the ring. When the resubmissions did
// not fit one burst, Pop went on to take chains from the ring, and a driver offering the
// buffer id of a chain still waiting had it taken as a new chain (its saved copy
// overwritten), then resubmitted as well: the same id in flight twice.
import { expect } from 'chai';
import { closeSync } from 'node:fs';
import { GuestMemory, createMemfd } from '../../src/native/guest-memory.js';
import { MAX_CHAIN_SEGS, Virtqueue } from '../../src/native/virtqueue.js';
import { PackedDriver, type Segment } from '../../src/virtio/driver.js';
import { PackedDescFlags as P } from '../../src/virtio/ring-layout.js';
import { inflightQueueBytes } from '../../src/vhost-user/session.js';
import { Rig } from './ring-rig.js';

const SIZE = 8;
const FRESH_BASE = (1 << 15) | (1 << 31);

describe('inflight tracking (packed ring): resubmissions that do not fit one burst', () => {
  let rig: Rig;
  let area: GuestMemory;
  let q: Virtqueue;
  const per = inflightQueueBytes(SIZE, true);

  afterEach(() => {
    q.detach();
    rig.close();
    area.close();
  });

  it('takes no chain from the ring until every resubmission is popped; the id offered again is ID_IN_FLIGHT', () => {
    rig = new Rig('packed', { size: SIZE });
    const fd = createMemfd('inflight', per);
    area = GuestMemory.map([{ fd, gpa: 0n, size: BigInt(per), uva: 0n, mmapOffset: 0n }]);
    closeSync(fd);
    q = rig.q;
    expect(q.setInflight(area, 0, per)).to.equal(true);
    q.syncUsedFromRing();
    const d = rig.drv as PackedDriver;
    // Two indirect chains of 600 segments each: one burst holds MAX_CHAIN_SEGS segments,
    // so not both.
    const many = (n: number): Segment[] => Array.from({ length: n }, (_, i) => ({ len: 8, writable: i === n - 1 }));
    expect(600 * 2).to.be.above(MAX_CHAIN_SEGS);
    const a = d.add(many(600), { indirect: true });
    const b = d.add(many(600), { indirect: true });
    d.publish();
    expect(q.pop()).to.equal(1);
    expect(q.pop()).to.equal(1);
    expect(q.inFlight).to.equal(2);

    // The backend dies with both in flight; a new one starts over the same area.
    q.detach();
    q = new Virtqueue({ layout: 'packed', size: SIZE });
    q.setFeatures({ eventIdx: false, indirect: true });
    q.setMemory(rig.mem);
    q.setBase(FRESH_BASE);
    q.setRings(rig.ringAddrs(), 'gpa');
    expect(q.setInflight(area, 0, per)).to.equal(true);
    q.syncUsedFromRing();
    expect(q.resubmitPending).to.equal(2);

    // A hostile driver offers b's buffer id again, in one descriptor (as many as b's saved
    // copy: its indirect descriptor) of one segment, in the slot after b.
    const buf = rig.alloc.alloc(16);
    d.writeDesc(2, { addr: buf, len: 16, id: b, flags: P.AVAIL | P.WRITE });

    expect(q.pop(), 'a alone: b does not fit the rest of the burst').to.equal(1);
    expect(q.b.head[0]).to.equal(a);
    expect(q.pop(), 'b, resubmitted').to.equal(1);
    expect(q.b.head[0]).to.equal(b);
    expect(q.views(0).length, "b's own 600 segments, from its saved copy").to.equal(600);
    expect(q.inFlight).to.equal(2);
    expect(q.pop(), 'b offered while in flight').to.be.below(0);
    expect(q.error?.code).to.equal('ID_IN_FLIGHT');
    expect(q.inFlight).to.equal(2);
  });
});
