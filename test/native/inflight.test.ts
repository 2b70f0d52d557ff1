// Inflight I/O tracking (vhost-user.rst "Inflight I/O tracking", split rings): a backend
// killed with requests in flight is replaced by a new one that pops exactly those chains
// again, oldest first, and nothing else twice.
import { expect } from 'chai';
import { closeSync, readSync } from 'node:fs';
import { DirtyLog } from '../../src/vhost-user/dirty-log.js';
import { GuestMemory, createMemfd } from '../../src/native/guest-memory.js';
import { Virtqueue } from '../../src/native/virtqueue.js';
import { SplitDriver } from '../../src/virtio/driver.js';
import { inflightQueueBytes } from '../../src/vhost-user/session.js';
import { Rig } from './ring-rig.js';

describe('inflight tracking (split ring)', () => {
  let rig: Rig;
  let area: GuestMemory;
  const size = 16;
  const per = inflightQueueBytes(size, false);

  beforeEach(() => {
    rig = new Rig('split', { size });
    const fd = createMemfd('inflight', per);
    area = GuestMemory.map([{ fd, gpa: 0n, size: BigInt(per), uva: 0n, mmapOffset: 0n }]);
    closeSync(fd);
    expect(rig.q.setInflight(area, 0, per)).to.equal(true);
    rig.q.syncUsedFromRing(); // initializes the area
  });
  afterEach(() => {
    rig.close();
    area.close();
  });

  /** A new backend over the same rings and inflight area, as after kill -9 and a restart. */
  function restart(base: number): Virtqueue {
    rig.q.detach();
    const q = new Virtqueue({ layout: 'split', size });
    q.setFeatures({ eventIdx: false, indirect: true });
    q.setMemory(rig.mem);
    q.setBase(base);
    q.setRings(rig.ringAddrs(), 'gpa');
    expect(q.setInflight(area, 0, per)).to.equal(true);
    q.syncUsedFromRing();
    return q;
  }

  function complete(q: Virtqueue, ids: number[]): void {
    ids.forEach((id, i) => {
      q.b.usedId[i] = id;
      q.b.usedLen[i] = 1;
    });
    q.push(ids.length);
  }

  it('initializes a fresh area (version 1, desc_num = queue size)', () => {
    const v = new DataView(area.view(0).buffer, area.view(0).byteOffset);
    expect(v.getUint16(8, true)).to.equal(1);
    expect(v.getUint16(10, true)).to.equal(size);
  });

  it('resubmits exactly the chains in flight, oldest first, after a restart; completed ones are not redone', () => {
    const d = rig.drv as SplitDriver;
    const ids = Array.from({ length: 6 }, (_, i) => d.add([{ len: 4, writable: false, data: Uint8Array.of(i, i, i, i) }, { len: 1, writable: true }]));
    d.publish();
    expect(rig.q.pop()).to.equal(6);
    complete(rig.q, [ids[1], ids[3], ids[4]]);
    expect(d.used().map((u) => u.id)).to.deep.equal([ids[1], ids[3], ids[4]]);
    // The backend dies. QEMU restores last avail idx to the used idx (3) and restarts it.
    const q = restart(3);
    expect(q.resubmitPending).to.equal(3);
    const more = d.addAndPublish([{ len: 4, writable: false }, { len: 1, writable: true }]);
    expect(q.pop()).to.equal(4);
    expect(Array.from(q.b.head.subarray(0, 4)), 'in-flight ones first, in pop order, then the new one').to.deep.equal([ids[0], ids[2], ids[5], more]);
    expect(Array.from(q.views(0)[0])).to.deep.equal([0, 0, 0, 0]);
    complete(q, [ids[0], ids[2], ids[5], more]);
    expect(d.used().map((u) => u.id)).to.deep.equal([ids[0], ids[2], ids[5], more]);
    expect(q.pop()).to.equal(0);
    q.detach();
  });

  it('chains waiting for resubmission go before new ones even when they do not fit one burst', () => {
    const d = rig.drv as SplitDriver;
    // Two chains of 600 segments each (indirect): a burst holds 1024 segments, so one at a time.
    const big = (tag: number) => Array.from({ length: 600 }, (_, i) => ({ len: 1, writable: i > 0, data: i === 0 ? Uint8Array.of(tag) : undefined }));
    const a = d.add(big(1), { indirect: true });
    const b = d.add(big(2), { indirect: true });
    d.publish();
    expect(rig.q.pop()).to.equal(1);
    expect(rig.q.pop()).to.equal(1);
    const q = restart(0);
    expect(q.resubmitPending).to.equal(2);
    const small = d.addAndPublish([{ len: 4, writable: false }, { len: 1, writable: true }]);
    expect(q.pop()).to.equal(1);
    expect(q.b.head[0]).to.equal(a);
    expect(q.pop()).to.equal(2);
    expect(Array.from(q.b.head.subarray(0, 2)), 'the second resubmission, then the new chain').to.deep.equal([b, small]);
    complete(q, [a, b, small]);
    expect(d.used().map((u) => u.id)).to.deep.equal([a, b, small]);
    q.detach();
  });

  it('a resubmitted chain is dirty-logged like any other when it completes (live migration)', () => {
    const d = rig.drv as SplitDriver;
    const id = d.addAndPublish([{ len: 4, writable: false }, { len: 4096, writable: true }]);
    expect(rig.q.pop()).to.equal(1);
    const q = restart(0);
    const logFd = createMemfd('dirty-log', 4096);
    const log = DirtyLog.map(logFd, 4096n, 0n);
    try {
      q.setDirtyLog(log.raw, null);
      expect(q.pop()).to.equal(1);
      expect(q.b.head[0]).to.equal(id);
      complete(q, [id]);
      const w = d.chainBuffers(id).find((b) => b.writable)!;
      const page = Math.floor(w.addr / 4096);
      const bits = new Uint8Array(4096);
      readSync(logFd, bits, 0, 4096, 0);
      expect((bits[page >> 3] >> (page & 7)) & 1, `page ${page} of the resubmitted chain's buffer`).to.equal(1);
    } finally {
      q.setDirtyLog(null, null);
      log.close();
      closeSync(logFd);
      q.detach();
    }
  });

  it('settles a batch that reached the used ring before the backend died clearing its flags', () => {
    const d = rig.drv as SplitDriver;
    const ids = Array.from({ length: 3 }, () => d.add([{ len: 4, writable: false }, { len: 1, writable: true }]));
    d.publish();
    rig.q.pop();
    complete(rig.q, [ids[0], ids[1]]);
    // Simulate dying between the used idx update and clearing the flags.
    const v = new DataView(area.view(0).buffer, area.view(0).byteOffset);
    for (const id of [ids[0], ids[1]]) area.view(0)[16 + 16 * id] = 1;
    v.setUint16(14, 0, true); // used_idx still at 0
    const q = restart(2);
    expect(q.resubmitPending, 'only the one really in flight').to.equal(1);
    expect(q.pop()).to.equal(1);
    expect(q.b.head[0]).to.equal(ids[2]);
    q.detach();
  });

  it('reinitializes a garbage area and resubmits nothing', () => {
    area.view(0).fill(0x5a);
    const q = restart(0);
    expect(q.resubmitPending).to.equal(0);
    expect(q.pop()).to.equal(0);
    const v = new DataView(area.view(0).buffer, area.view(0).byteOffset);
    expect(v.getUint16(8, true)).to.equal(1);
    q.detach();
  });

  it('refuses an area too small for the queue (split and packed)', () => {
    const q = new Virtqueue({ layout: 'split', size: 64 });
    expect(q.setInflight(area, 0, per)).to.equal(false);
    const p = new Virtqueue({ layout: 'packed', size: 16 });
    expect(p.setInflight(area, 0, per), 'the packed layout needs more than the split one').to.equal(false);
    expect(inflightQueueBytes(16, true)).to.be.greaterThan(per);
  });

  it('a chain given back (unpop) is not resubmitted, and a resubmitted one given back is popped again', () => {
    const d = rig.drv as SplitDriver;
    const a = d.addAndPublish([{ len: 4, writable: false }, { len: 1, writable: true }]);
    const b = d.addAndPublish([{ len: 4, writable: false }, { len: 1, writable: true }]);
    expect(rig.q.pop()).to.equal(2);
    rig.q.unpop([b]);
    let q = restart(0);
    expect(q.resubmitPending).to.equal(1);
    expect(q.pop()).to.equal(2);
    expect(Array.from(q.b.head.subarray(0, 2))).to.deep.equal([a, b]);
    q.unpop([a, b]);
    expect(q.resubmitPending, 'a goes back to the resubmission list').to.equal(1);
    expect(q.pop()).to.equal(2);
    expect(Array.from(q.b.head.subarray(0, 2))).to.deep.equal([a, b]);
    complete(q, [a, b]);
    expect(d.used().map((u) => u.id)).to.deep.equal([a, b]);
    q.detach();
    rig.q.detach();
    q = restart(2);
    expect(q.resubmitPending).to.equal(0);
    q.detach();
  });
});
