import { expect } from 'chai';
import { PackedDriver, SplitDriver } from '../../src/virtio/driver.js';
import { Virtqueue } from '../../src/native/virtqueue.js';
import { PackedEventFlags, VRING_USED_F_NO_NOTIFY } from '../../src/virtio/ring-layout.js';
import { BASE, MiB, Rig, bytes, concat } from './ring-rig.js';

for (const layout of ['split', 'packed'] as const) {
  describe(`Virtqueue (${layout} ring, device side)`, () => {
    let rig: Rig;
    afterEach(() => rig?.close());

    it('pops a single readable descriptor as one in-place segment', () => {
      rig = new Rig(layout);
      const data = bytes(100);
      const id = rig.drv.addAndPublish([{ len: 100, writable: false, data }]);
      expect(rig.q.pop()).to.equal(1);
      expect(rig.q.b.head[0]).to.equal(id);
      expect(rig.q.b.readLen[0]).to.equal(100);
      expect(rig.q.b.writeLen[0]).to.equal(0);
      const [seg] = rig.q.segments(0);
      const buf = rig.drv.chainBuffers(id)[0];
      expect(seg).to.deep.equal({ region: 0, offset: buf.addr - BASE, len: 100, writable: false });
      expect(Buffer.from(rig.q.views(0)[0]).equals(Buffer.from(data))).to.equal(true);
      expect(rig.q.inFlight).to.equal(1);
      expect(rig.q.pop(), 'nothing more').to.equal(0);
    });

    it('translates one-descriptor chains in either region, and one that crosses from one region into the next as two segments', () => {
      rig = new Rig(layout, { splitAt: 2 * MiB });
      const edge = BASE + 2 * MiB;
      const a = bytes(100, 1);
      const b = bytes(100, 2);
      const c = bytes(300, 3);
      // First a chain in the first region (the lookup cache settles there), then one in the
      // second, then one straddling the boundary, then the first region again.
      rig.drv.add([{ len: 100, writable: false, data: a, addr: edge - 4096 }]);
      rig.drv.add([{ len: 100, writable: false, data: b, addr: edge + 4096 }]);
      rig.drv.add([{ len: 300, writable: false, data: c, addr: edge - 100 }]);
      rig.drv.add([{ len: 100, writable: false, data: a, addr: edge - 8192 }]);
      rig.drv.publish();
      expect(rig.q.pop()).to.equal(4);
      expect(rig.q.segments(0)).to.deep.equal([{ region: 0, offset: 2 * MiB - 4096, len: 100, writable: false }]);
      expect(rig.q.segments(1)).to.deep.equal([{ region: 1, offset: 4096, len: 100, writable: false }]);
      expect(rig.q.segments(2)).to.deep.equal([
        { region: 0, offset: 2 * MiB - 100, len: 100, writable: false },
        { region: 1, offset: 0, len: 200, writable: false },
      ]);
      expect(rig.q.segments(3)).to.deep.equal([{ region: 0, offset: 2 * MiB - 8192, len: 100, writable: false }]);
      expect(Buffer.from(concat(rig.q.views(2))).equals(Buffer.from(c))).to.equal(true);
      expect(Buffer.from(rig.q.views(1)[0]).equals(Buffer.from(b))).to.equal(true);
      // A descriptor running past the end of the table (from the region the cache holds) is refused.
      rig.drv.addAndPublish([{ len: 8192, writable: false, addr: BASE + 4 * MiB - 4096 }]);
      expect(rig.q.pop()).to.be.lessThan(0);
      expect(rig.q.error?.code).to.equal('DESC_ADDR');
    });

    it('serves chained descriptors: readable then writable, device writes land in the driver buffers', () => {
      rig = new Rig(layout);
      const req = bytes(300, 7);
      const id = rig.drv.addAndPublish([
        { len: 100, writable: false, data: req.subarray(0, 100) },
        { len: 200, writable: false, data: req.subarray(100) },
        { len: 64, writable: true },
        { len: 512, writable: true },
      ]);
      expect(rig.serve()).to.equal(1);
      const used = rig.drv.used();
      expect(used.map((u) => [u.id, u.len])).to.deep.equal([[id, 300]]);
      const back = rig.drv.readWritten(id, 300);
      expect(Buffer.from(back).equals(Buffer.from(req.slice().reverse()))).to.equal(true);
      expect(rig.q.inFlight).to.equal(0);
      expect(rig.canariesIntact()).to.equal(true);
    });

    it('serves indirect tables, and refuses them when INDIRECT_DESC was not negotiated', () => {
      rig = new Rig(layout);
      const req = bytes(48, 3);
      const id = rig.drv.addAndPublish(
        [
          { len: 16, writable: false, data: req.subarray(0, 16) },
          { len: 32, writable: false, data: req.subarray(16) },
          { len: 48, writable: true },
        ],
        { indirect: true },
      );
      expect(rig.q.pop()).to.equal(1);
      expect(rig.q.segments(0).map((s) => [s.len, s.writable])).to.deep.equal([[16, false], [32, false], [48, true]]);
      rig.q.b.usedId[0] = id;
      rig.q.b.usedLen[0] = 0;
      rig.q.push(1);
      expect(rig.drv.used().map((u) => u.id)).to.deep.equal([id]);
      rig.close();

      rig = new Rig(layout, { indirect: false });
      rig.drv.addAndPublish([{ len: 16, writable: false }], { indirect: true });
      expect(rig.q.pop()).to.be.below(0);
      expect(rig.q.error?.code).to.equal('INDIRECT_NOT_NEGOTIATED');
    });

    it('carries indices across the 16-bit wrap / flips the packed wrap counters', () => {
      const size = 8;
      rig = new Rig(layout, { size, startIdx: 65530 });
      let expected = 0;
      for (let round = 0; round < 40; round++) {
        // chains of 1..3 descriptors so packed chains straddle the ring end
        const nseg = 1 + (round % 3);
        const ids: number[] = [];
        const count = 1 + (round % 2);
        for (let c = 0; c < count; c++) {
          ids.push(rig.drv.add(Array.from({ length: nseg }, (_, k) => ({ len: 8 + k, writable: k === nseg - 1 })), { indirect: false }));
        }
        rig.drv.publish();
        expect(rig.serve((r) => r)).to.equal(count);
        const used = rig.drv.used();
        expect(used.map((u) => u.id)).to.deep.equal(ids);
        expected += count;
      }
      if (layout === 'split') {
        expect((rig.drv as SplitDriver).usedIdx).to.equal((65530 + expected) & 0xffff);
        expect(rig.q.getBase()).to.equal((65530 + expected) & 0xffff);
      } else {
        const d = rig.drv as PackedDriver;
        const base = rig.q.getBase();
        expect(base & 0x7fff).to.equal(d.availIdx);
        expect((base >>> 15) & 1).to.equal(d.availWrap);
        expect((base >>> 16) & 0x7fff).to.equal(d.usedIdx);
        expect(base >>> 31).to.equal(d.usedWrap);
      }
    });

    it('fills the ring and drains it in bursts, several times over', () => {
      const size = 128;
      rig = new Rig(layout, { size, burst: 32 });
      for (let lap = 0; lap < 5; lap++) {
        const ids = new Set<number>();
        for (let i = 0; i < size; i++) ids.add(rig.drv.add([{ len: 64, writable: true }]));
        rig.drv.publish();
        expect(() => rig.drv.add([{ len: 64, writable: true }]), 'ring is full').to.throw();
        let popped = 0;
        for (;;) {
          const n = rig.q.pop();
          if (n === 0) break;
          expect(n).to.be.at.most(32);
          for (let i = 0; i < n; i++) {
            rig.q.b.usedId[i] = rig.q.b.head[i];
            rig.q.b.usedLen[i] = 64;
          }
          rig.q.push(n);
          popped += n;
        }
        expect(popped).to.equal(size);
        const used = rig.drv.used();
        expect(new Set(used.map((u) => u.id))).to.deep.equal(ids);
      }
    });

    it('pops at most max chains and continues where it stopped', () => {
      rig = new Rig(layout);
      const ids = Array.from({ length: 10 }, (_, i) => rig.drv.add([{ len: 10 + i, writable: false }]));
      rig.drv.publish();
      expect(rig.q.pop(3)).to.equal(3);
      expect(Array.from(rig.q.b.head.subarray(0, 3))).to.deep.equal(ids.slice(0, 3));
      expect(rig.q.pop()).to.equal(7);
      expect(Array.from(rig.q.b.head.subarray(0, 7))).to.deep.equal(ids.slice(3));
    });

    it('completes out of order, and refuses to push an id that is not in flight', () => {
      rig = new Rig(layout);
      const a = rig.drv.add([{ len: 10, writable: true }]);
      const b = rig.drv.add([{ len: 10, writable: true }, { len: 10, writable: true }]);
      rig.drv.publish();
      expect(rig.q.pop()).to.equal(2);
      rig.q.b.usedId[0] = b;
      rig.q.b.usedLen[0] = 20;
      rig.q.push(1);
      expect(rig.drv.used().map((u) => [u.id, u.len])).to.deep.equal([[b, 20]]);
      rig.q.b.usedId[0] = b;
      expect(() => rig.q.push(1), 'b twice').to.throw(RangeError);
      rig.q.b.usedId[0] = a;
      rig.q.b.usedId[1] = a;
      expect(() => rig.q.push(2), 'a twice in one batch').to.throw(RangeError);
      expect(rig.q.inFlight, 'nothing was consumed by the failed pushes').to.equal(1);
      rig.q.b.usedLen[0] = 0;
      rig.q.push(1);
      expect(rig.drv.used().map((u) => u.id)).to.deep.equal([a]);
    });

    it('keeps state across setBase/getBase (GET/SET_VRING_BASE) onto a new queue object', () => {
      rig = new Rig(layout, { size: 16 });
      for (let i = 0; i < 21; i++) {
        rig.drv.add([{ len: 4, writable: true }]);
        rig.drv.publish();
        rig.serve();
        rig.drv.used();
      }
      const base = rig.q.getBase();
      const q2 = new Virtqueue({ layout, size: 16 });
      q2.setFeatures({ eventIdx: false, indirect: true });
      q2.setMemory(rig.mem);
      q2.setBase(base);
      q2.setRings(rig.ringAddrs(), 'gpa');
      q2.syncUsedFromRing();
      const id = rig.drv.addAndPublish([{ len: 4, writable: true }]);
      expect(q2.pop()).to.equal(1);
      expect(q2.b.head[0]).to.equal(id);
      q2.b.usedId[0] = id;
      q2.b.usedLen[0] = 4;
      q2.push(1);
      expect(rig.drv.used().map((u) => u.id)).to.deep.equal([id]);
      q2.detach();
    });

    it('refuses ring addresses outside memory or misaligned (RING_ADDR)', () => {
      rig = new Rig(layout);
      const a = rig.ringAddrs();
      expect(() => rig.q.setRings({ ...a, desc: 0x10n }, 'gpa')).to.throw(/RING_ADDR.*descriptor table/);
      expect(() => rig.q.setRings({ ...a, desc: a.desc + 8n }, 'gpa')).to.throw(/misaligned/);
      expect(() => rig.q.setRings({ ...a, device: BigInt(BASE + rig.regionSize - 2) }, 'gpa')).to.throw(/RING_ADDR/);
      expect(() => rig.q.setRings(a, 'uva'), 'gpa values are not frontend addresses').to.throw(/RING_ADDR/);
      const uva = (x: bigint) => x - BigInt(BASE) + 0x7f0000000000n;
      rig.q.setRings({ desc: uva(a.desc), driver: uva(a.driver), device: uva(a.device) }, 'uva');
      rig.drv.addAndPublish([{ len: 1, writable: false }]);
      expect(rig.q.pop()).to.equal(1);
    });
  });
}

describe('packed SET_VRING_BASE from frontends that send only the avail half', () => {
  it('takes the used state from the avail state when the upper 16 bits are zero (DPDK virtio-user)', () => {
    const rig = new Rig('packed', { size: 16 });
    try {
      rig.q.setBase(1 << 15); // what dpdk virtio-user sends for a fresh packed ring
      expect(rig.q.getBase()).to.equal(((1 << 15) | (1 << 31)) >>> 0);
      rig.q.setRings(rig.ringAddrs(), 'gpa');
      const id = rig.drv.addAndPublish([{ len: 8, writable: true }]);
      expect(rig.q.pop()).to.equal(1);
      rig.q.b.usedId[0] = id;
      rig.q.b.usedLen[0] = 8;
      rig.q.push(1);
      expect(rig.drv.used().map((u) => u.id), 'used with the right wrap counter').to.deep.equal([id]);
    } finally {
      rig.close();
    }
  });
});

describe('notification suppression, split ring', () => {
  let rig: Rig;
  afterEach(() => rig?.close());

  it('honors VRING_AVAIL_F_NO_INTERRUPT without EVENT_IDX, and sets VRING_USED_F_NO_NOTIFY', () => {
    rig = new Rig('split');
    const d = rig.drv as SplitDriver;
    d.addAndPublish([{ len: 1, writable: true }]);
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(rig.q.pop()).to.equal(2);
    rig.q.b.usedId[0] = rig.q.b.head[0];
    rig.q.b.usedLen[0] = 1;
    expect(rig.q.push(1), 'interrupts wanted').to.equal(true);
    d.setNoInterrupt(true);
    rig.q.b.usedId[0] = rig.q.b.head[1];
    expect(rig.q.push(1), 'NO_INTERRUPT').to.equal(false);
    expect(rig.q.setNotify(false)).to.equal(false);
    expect(d.usedFlags() & VRING_USED_F_NO_NOTIFY).to.equal(VRING_USED_F_NO_NOTIFY);
    const old = d.availIdx;
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded(old, d.availIdx), 'kicks off').to.equal(false);
    expect(rig.q.setNotify(true), 'a chain is waiting').to.equal(true);
    expect(d.usedFlags() & VRING_USED_F_NO_NOTIFY).to.equal(0);
  });

  it('with EVENT_IDX signals exactly when used idx passes used_event, and asks for kicks via avail_event', () => {
    rig = new Rig('split', { eventIdx: true });
    const d = rig.drv as SplitDriver;
    for (let i = 0; i < 8; i++) d.add([{ len: 1, writable: true }]);
    d.publish();
    expect(rig.q.pop()).to.equal(8);
    expect(d.availEvent(), 'device wants a kick once the driver goes past 8').to.equal(8);
    d.setUsedEvent(4); // driver: interrupt me when entry 4 is used (idx goes 4 -> 5)
    const pushOne = (i: number) => {
      rig.q.b.usedId[0] = rig.q.b.head[i];
      rig.q.b.usedLen[0] = 1;
      return rig.q.push(1);
    };
    expect(pushOne(0), 'first push after start always signals').to.equal(true);
    const got = [1, 2, 3, 4, 5, 6, 7].map(pushOne);
    // used idx after each push: 2..8; used_event 4 is crossed by the push that makes idx 5
    expect(got).to.deep.equal([false, false, false, true, false, false, false]);
    const old = d.availIdx;
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded(old, d.availIdx), 'avail_event 8 is crossed').to.equal(true);
    expect(rig.q.pop()).to.equal(1);
    expect(d.availEvent()).to.equal(9);
    rig.q.setNotify(false);
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.availEvent(), 'kicks off: avail_event not advanced').to.equal(9);
    expect(rig.q.setNotify(true)).to.equal(true);
  });
});

describe('notification suppression, packed ring', () => {
  let rig: Rig;
  afterEach(() => rig?.close());
  const pushOne = (i: number, len = 1) => {
    rig.q.b.usedId[0] = rig.q.b.head[i];
    rig.q.b.usedLen[0] = len;
    return rig.q.push(1);
  };

  it('honors the driver event flags ENABLE and DISABLE, and writes DISABLE/ENABLE for kicks', () => {
    rig = new Rig('packed', { size: 16 });
    const d = rig.drv as PackedDriver;
    for (let i = 0; i < 3; i++) d.add([{ len: 1, writable: true }]);
    d.publish();
    expect(rig.q.pop()).to.equal(3);
    expect(pushOne(0)).to.equal(true);
    d.setDriverEvent(PackedEventFlags.DISABLE);
    expect(pushOne(1)).to.equal(false);
    d.setDriverEvent(PackedEventFlags.ENABLE);
    expect(pushOne(2)).to.equal(true);
    expect(rig.q.setNotify(false)).to.equal(false);
    expect(d.deviceEvent().flags).to.equal(PackedEventFlags.DISABLE);
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded(1)).to.equal(false);
    expect(rig.q.setNotify(true)).to.equal(true);
    expect(d.deviceEvent().flags).to.equal(PackedEventFlags.ENABLE);
  });

  it('with EVENT_IDX signals when the used index passes off_wrap, across a wrap of the ring', () => {
    const size = 8;
    rig = new Rig('packed', { size, eventIdx: true });
    const d = rig.drv as PackedDriver;
    // Move both sides near the end of the ring first.
    for (let i = 0; i < 6; i++) d.add([{ len: 1, writable: true }]);
    d.publish();
    expect(rig.q.pop()).to.equal(6);
    for (let i = 0; i < 6; i++) pushOne(i);
    d.used();
    // used position is 6 (wrap 1). Ask to be signalled once the entry at 1 of the next lap is used.
    for (let i = 0; i < 5; i++) d.add([{ len: 1, writable: true }]);
    d.publish();
    expect(rig.q.pop()).to.equal(5);
    const dev = d.deviceEvent();
    expect(dev.flags).to.equal(PackedEventFlags.DESC);
    expect(dev.offWrap, 'device asks for a kick at avail 3 of wrap 0').to.equal(3);
    d.setDriverEvent(PackedEventFlags.DESC, 1 /* off 1, wrap 0 */);
    // The pushes write used descriptors at 6, 7, 0 (wrap 0), 1 (wrap 0), 2: the driver asked
    // to be signalled when the descriptor at 1 of wrap 0 is used, i.e. by the 4th push.
    expect([0, 1, 2, 3, 4].map((i) => pushOne(i))).to.deep.equal([false, false, false, true, false]);
  });
});
