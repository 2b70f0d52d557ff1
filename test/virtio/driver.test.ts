// Tests of the driver-side virtqueue helper alone (no native device code). The "device" here is a
// few lines of hand-written code in this file that writes used entries the way the spec says.
import { expect } from 'chai';
import { BumpAllocator, GuestMemory, PackedDriver, SplitDriver, type Segment } from '../../src/virtio/driver.js';
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  alignUp,
  layoutPacked,
  layoutSplit,
  packOffWrap,
  unpackOffWrap,
  vringNeedEvent,
} from '../../src/virtio/ring-layout.js';

const BASE = 0x10000;
const MEM_SIZE = 1 << 20;

function setup(): { mem: Uint8Array; alloc: BumpAllocator; gm: GuestMemory } {
  const mem = new Uint8Array(MEM_SIZE);
  return { mem, alloc: new BumpAllocator(BASE, MEM_SIZE), gm: new GuestMemory(mem, BASE) };
}

function bytes(...v: number[]): Uint8Array {
  return Uint8Array.from(v);
}

/**
 * Records, in program order, the 16-bit stores and loads a driver makes through its
 * GuestMemory and its fence() calls (the barrier still runs): what the kick decision's
 * ordering rests on, checked without racing a second thread.
 */
function recordOrder(gm: GuestMemory): string[] {
  const log: string[] = [];
  const { u16, setU16, fence } = gm;
  gm.u16 = (gpa: number) => (log.push(`load ${gpa}`), u16.call(gm, gpa));
  gm.setU16 = (gpa: number, v: number) => (log.push(`store ${gpa}`), setU16.call(gm, gpa, v));
  gm.fence = () => (log.push('fence'), fence.call(gm));
  return log;
}

/** Checks that a fence comes after the last store to `storeAt` and before the first load of `loadAt` that follows it. */
function expectFenceBetween(log: string[], storeAt: number, loadAt: number, what: string): void {
  const store = log.lastIndexOf(`store ${storeAt}`);
  expect(store, `${what}: the publishing store`).to.be.at.least(0);
  const load = log.indexOf(`load ${loadAt}`, store);
  expect(load, `${what}: the threshold load after it`).to.be.greaterThan(store);
  expect(log.slice(store + 1, load), `${what}: between the store and the load (${log.join(', ')})`).to.include('fence');
}

// ---------------------------------------------------------------------------
// Minimal devices written straight from the spec, used only to drive the helper.
// ---------------------------------------------------------------------------

/** Split device: consumes avail entries in order and returns them (optionally reordered). */
class FakeSplitDevice {
  lastAvail: number;
  constructor(
    private readonly drv: SplitDriver,
    start = 0,
  ) {
    this.lastAvail = start;
  }
  /** Heads the driver has published and the device has not yet taken. */
  take(): number[] {
    const availIdx = this.drv.availIdx;
    const heads: number[] = [];
    while (this.lastAvail !== availIdx) {
      heads.push(this.drv.readAvailRing(this.lastAvail));
      this.lastAvail = (this.lastAvail + 1) & 0xffff;
    }
    return heads;
  }
  /** In order: one used element for a batch of n chains (the last one's head), used->idx + n. */
  completeBatch(lastHead: number, n: number, len = 0): void {
    const gm = this.drv.memory;
    const idx = this.drv.usedIdx;
    const at = this.drv.usedAddr + 4 + 8 * (idx & (this.drv.size - 1));
    gm.setU32(at, lastHead);
    gm.setU32(at + 4, len);
    gm.setU16(this.drv.usedAddr + 2, (idx + n) & 0xffff);
  }
  /** Write used elements at used->idx and bump used->idx once at the end. */
  complete(entries: Array<{ id: number; len: number }>): void {
    const gm = this.drv.memory;
    let idx = this.drv.usedIdx;
    for (const e of entries) {
      const at = this.drv.usedAddr + 4 + 8 * (idx & (this.drv.size - 1));
      gm.setU32(at, e.id);
      gm.setU32(at + 4, e.len);
      idx = (idx + 1) & 0xffff;
    }
    gm.setU16(this.drv.usedAddr + 2, idx);
  }
}

/** Packed device: in-order reader of available descriptors, writes used descriptors. */
class FakePackedDevice {
  availIdx = 0;
  availWrap = 1;
  usedIdx = 0;
  usedWrap = 1;
  constructor(private readonly drv: PackedDriver) {}

  private isAvail(slot: number, wrap: number): boolean {
    const f = this.drv.readDesc(slot).flags;
    const a = f & VIRTQ_DESC_F_AVAIL ? 1 : 0;
    const u = f & VIRTQ_DESC_F_USED ? 1 : 0;
    return a === wrap && u !== wrap;
  }

  /** Read available chains: id from the last descriptor, count of ring descriptors. */
  take(): Array<{ id: number; count: number; slots: number[] }> {
    const out: Array<{ id: number; count: number; slots: number[] }> = [];
    while (this.isAvail(this.availIdx, this.availWrap)) {
      const slots: number[] = [];
      let id = -1;
      for (;;) {
        expect(this.isAvail(this.availIdx, this.availWrap), 'whole chain available').to.equal(true);
        const d = this.drv.readDesc(this.availIdx);
        slots.push(this.availIdx);
        id = d.id;
        if (++this.availIdx >= this.drv.size) {
          this.availIdx = 0;
          this.availWrap ^= 1;
        }
        if (!(d.flags & VIRTQ_DESC_F_NEXT)) break;
      }
      out.push({ id, count: slots.length, slots });
    }
    return out;
  }

  /** Write one used descriptor for a chain of `count` descriptors and skip past it. */
  complete(id: number, count: number, len: number): void {
    const flags = (this.usedWrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) | (len > 0 ? VIRTQ_DESC_F_WRITE : 0);
    this.drv.writeDesc(this.usedIdx, { addr: 0, len, id, flags });
    this.usedIdx += count;
    if (this.usedIdx >= this.drv.size) {
      this.usedIdx -= this.drv.size;
      this.usedWrap ^= 1;
    }
  }
}

// ---------------------------------------------------------------------------

describe('ring-layout', () => {
  it('split layout follows the §2.7 size/alignment table', () => {
    const l = layoutSplit(256, 0);
    expect(l.descAddr).to.equal(0);
    expect(l.availAddr).to.equal(16 * 256);
    // avail ring is 6 + 2*256 = 518 bytes; 4096 + 518 = 4614 is padded to 4616 for the used ring.
    expect(l.usedAddr).to.equal(4616);
    expect(l.usedEventAddr).to.equal(4096 + 4 + 2 * 256);
    expect(l.availEventAddr).to.equal(4616 + 4 + 8 * 256);
    expect(l.end).to.equal(4616 + 6 + 8 * 256);
    expect(l.totalBytes).to.equal(l.end);
  });

  it('split layout aligns an unaligned base and counts the padding', () => {
    const l = layoutSplit(1, 0x1003);
    expect(l.descAddr).to.equal(0x1010);
    expect(l.availAddr).to.equal(0x1020);
    expect(l.usedAddr).to.equal(0x1028); // 0x1020 + 8 is already 4-aligned
    expect(l.end).to.equal(0x1028 + 14);
    expect(l.totalBytes).to.equal(0x1028 + 14 - 0x1003);
    for (const n of [1, 2, 4, 64, 1024, 32768]) {
      const k = layoutSplit(n, 0x2002);
      expect(k.descAddr % 16).to.equal(0);
      expect(k.availAddr % 2).to.equal(0);
      expect(k.usedAddr % 4).to.equal(0);
      expect(k.availAddr - k.descAddr).to.equal(16 * n);
      expect(k.usedAddr - k.availAddr).to.equal(alignUp(6 + 2 * n, 4));
      expect(k.end - k.usedAddr).to.equal(6 + 8 * n);
    }
  });

  it('split layout rejects sizes that are not powers of two up to 32768', () => {
    for (const n of [0, 3, 100, 65536, -4, 1.5]) expect(() => layoutSplit(n), `size ${n}`).to.throw(RangeError);
  });

  it('packed layout follows the §2.8 table, any size', () => {
    const l = layoutPacked(3, 0x1001);
    expect(l.descAddr).to.equal(0x1010);
    expect(l.driverEventAddr).to.equal(0x1010 + 48);
    expect(l.deviceEventAddr).to.equal(0x1010 + 52);
    expect(l.end).to.equal(0x1010 + 56);
    expect(l.totalBytes).to.equal(0x1010 + 56 - 0x1001);
    expect(layoutPacked(32768).deviceEventAddr).to.equal(16 * 32768 + 4);
    for (const n of [0, 32769, 2.5]) expect(() => layoutPacked(n), `size ${n}`).to.throw(RangeError);
  });

  it('vringNeedEvent is the u16 window test of §2.7.10', () => {
    expect(vringNeedEvent(0, 1, 0)).to.equal(true);
    expect(vringNeedEvent(1, 1, 0)).to.equal(false);
    expect(vringNeedEvent(3, 10, 0)).to.equal(true);
    expect(vringNeedEvent(10, 10, 0)).to.equal(false);
    expect(vringNeedEvent(5, 5, 5)).to.equal(false);
    // Across the 65535 -> 0 wrap.
    expect(vringNeedEvent(65535, 1, 65534)).to.equal(true);
    expect(vringNeedEvent(0, 1, 65535)).to.equal(true);
    expect(vringNeedEvent(1, 1, 65535)).to.equal(false);
    expect(vringNeedEvent(65533, 1, 65534)).to.equal(false);
  });

  it('packs off_wrap with the wrap counter in bit 15', () => {
    expect(packOffWrap(5, 1)).to.equal(0x8005);
    expect(packOffWrap(0x7fff, false)).to.equal(0x7fff);
    expect(unpackOffWrap(0x8005)).to.deep.equal({ offset: 5, wrap: 1 });
    expect(() => packOffWrap(0x8000, 0)).to.throw(RangeError);
  });
});

describe('BumpAllocator / GuestMemory', () => {
  it('aligns, bounds and resets', () => {
    const a = new BumpAllocator(0x1001, 64);
    expect(a.alloc(3)).to.equal(0x1010);
    expect(a.alloc(1, 2)).to.equal(0x1014);
    expect(a.alloc(4, 4)).to.equal(0x1018);
    expect(() => a.alloc(64)).to.throw(RangeError);
    expect(() => a.alloc(1, 3)).to.throw(RangeError);
    a.reset();
    expect(a.alloc(1, 1)).to.equal(0x1001);
  });

  it('is little-endian and bounds-checked', () => {
    const mem = new Uint8Array(16);
    const gm = new GuestMemory(mem, 0x100);
    gm.setU32(0x104, 0x11223344);
    expect([...mem.subarray(4, 8)]).to.deep.equal([0x44, 0x33, 0x22, 0x11]);
    gm.setU64(0x108, 0x0102030405060708n);
    expect(gm.u64(0x108)).to.equal(0x0102030405060708n);
    expect(() => gm.u16(0xff)).to.throw(RangeError);
    expect(() => gm.u16(0x10f)).to.throw(RangeError);
    expect(() => gm.read(0x100, 17)).to.throw(RangeError);
  });
});

describe('SplitDriver', () => {
  it('allocates the three areas with spec alignment and zeroes them', () => {
    const { mem, alloc } = setup();
    mem.fill(0xaa);
    alloc.alloc(1, 1); // misalign the cursor
    const start = alloc.next;
    const d = new SplitDriver({ mem, base: BASE, size: 256, alloc });
    const l = layoutSplit(256, start);
    expect(d.descAddr).to.equal(l.descAddr);
    expect(d.availAddr).to.equal(l.availAddr);
    expect(d.usedAddr).to.equal(l.usedAddr);
    expect(d.descAddr % 16).to.equal(0);
    expect(d.availAddr % 2).to.equal(0);
    expect(d.usedAddr % 4).to.equal(0);
    expect(d.usedEventAddr).to.equal(d.availAddr + 4 + 2 * 256);
    expect(d.availEventAddr).to.equal(d.usedAddr + 4 + 8 * 256);
    const zero = (a: number, n: number): boolean => d.read(a, n).every((b) => b === 0);
    expect(zero(d.descAddr, 16 * 256)).to.equal(true);
    expect(zero(d.availAddr, 6 + 2 * 256)).to.equal(true);
    expect(zero(d.usedAddr, 6 + 8 * 256)).to.equal(true);
    expect(mem[d.usedAddr - 1 - BASE], 'padding before the used ring is untouched').to.equal(0xaa);
    expect(mem[l.end - BASE]).to.equal(0xaa);
    expect(() => new SplitDriver({ mem, base: BASE, size: 6, alloc })).to.throw(RangeError);
  });

  it('writes a chain as linked descriptors and publishes it through avail->idx', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 8, alloc });
    const segs: Segment[] = [
      { len: 4, writable: false, data: bytes(1, 2, 3, 4) },
      { len: 2, writable: false, data: bytes(9, 9) },
      { len: 16, writable: true },
    ];
    const head = d.add(segs);
    expect(head).to.equal(0);
    expect(d.outstanding).to.equal(1);
    expect(d.numFree).to.equal(5);
    expect(d.readAvailRing(0)).to.equal(0);
    expect(d.availIdx, 'not visible before publish').to.equal(0);
    expect(d.nextAvailIdx).to.equal(1);

    const bufs = d.chainBuffers(head);
    let i = head;
    for (let k = 0; k < 3; k++) {
      const desc = d.readDesc(i);
      expect(desc.addr).to.equal(bufs[k].addr);
      expect(desc.len).to.equal(segs[k].len);
      expect(desc.flags & VIRTQ_DESC_F_WRITE ? true : false).to.equal(segs[k].writable);
      expect(desc.flags & VIRTQ_DESC_F_INDIRECT).to.equal(0);
      if (k < 2) {
        expect(desc.flags & VIRTQ_DESC_F_NEXT).to.equal(VIRTQ_DESC_F_NEXT);
        i = desc.next;
      } else {
        expect(desc.flags & VIRTQ_DESC_F_NEXT).to.equal(0);
      }
    }
    expect([...d.read(bufs[0].addr, 4)]).to.deep.equal([1, 2, 3, 4]);
    expect([...d.read(bufs[1].addr, 2)]).to.deep.equal([9, 9]);

    expect(d.publish()).to.equal(1);
    expect(d.availIdx).to.equal(1);
  });

  it('returns used chains to the free list and exposes what the device wrote', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 4, alloc });
    const dev = new FakeSplitDevice(d);
    const a = d.add([
      { len: 8, writable: false },
      { len: 8, writable: true },
    ]);
    const b = d.add([
      { len: 4, writable: true },
      { len: 4, writable: true },
    ]);
    expect(d.numFree).to.equal(0);
    expect(() => d.add([{ len: 1, writable: true }])).to.throw(RangeError);
    d.publish();
    expect(dev.take()).to.deep.equal([a, b]);

    // Device writes into b's buffers and completes b first (out of order).
    const bb = d.chainBuffers(b);
    d.write(bb[0].addr, bytes(1, 2, 3, 4));
    d.write(bb[1].addr, bytes(5, 6));
    dev.complete([{ id: b, len: 6 }]);
    const u1 = d.used();
    expect(u1.map(({ id, len }) => ({ id, len }))).to.deep.equal([{ id: b, len: 6 }]);
    expect(u1[0].buffers).to.deep.equal(bb);
    expect([...d.readWritten(b, u1[0].len)]).to.deep.equal([1, 2, 3, 4, 5, 6]);
    expect(d.numFree).to.equal(2);
    expect(d.outstanding).to.equal(1);
    expect(d.used()).to.deep.equal([]);

    dev.complete([{ id: a, len: 0 }]);
    expect(d.used().map((e) => e.id)).to.deep.equal([a]);
    expect(d.numFree).to.equal(4);
    expect(d.outstanding).to.equal(0);
    expect(d.lastUsedIdx).to.equal(2);

    // The freed descriptors are handed out again; head of the last freed chain first.
    const c = d.add([{ len: 1, writable: true }]);
    expect(c).to.equal(a);
    expect(() => d.chainBuffers(3)).to.throw();
  });

  it('rejects bogus used entries without consuming anything', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 4, alloc });
    const dev = new FakeSplitDevice(d);
    const a = d.addAndPublish([{ len: 8, writable: true }]);
    const unpublished = d.add([{ len: 8, writable: true }]);
    dev.complete([{ id: 3, len: 0 }]);
    expect(() => d.used()).to.throw(/id 3/);
    expect(d.lastUsedIdx).to.equal(0);
    // An entry for a chain the device could not have seen yet.
    d.memory.setU32(d.usedAddr + 4, unpublished);
    expect(() => d.used()).to.throw(/not the head/);
    // Too many entries.
    d.memory.setU16(d.usedAddr + 2, 0);
    dev.complete([
      { id: a, len: 0 },
      { id: a, len: 0 },
    ]);
    expect(() => d.used()).to.throw(/outstanding/);
    // Repair: one valid entry.
    d.memory.setU16(d.usedAddr + 2, 1);
    expect(d.used().map((e) => e.id)).to.deep.equal([a]);
    expect(d.outstanding).to.equal(1);
  });

  it('wraps the free-running indices past 65535', function () {
    this.timeout(20000);
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 4, alloc });
    const dev = new FakeSplitDevice(d);
    const buf = alloc.alloc(1); // reused by every chain so the bump allocator lasts
    let total = 0;
    let sawWrap = false;
    for (let round = 0; total < 70000; round++) {
      const n = 1 + (round % 3);
      const ids: number[] = [];
      const before = d.availIdx;
      for (let k = 0; k < n; k++) ids.push(d.add([{ len: 1, writable: true, addr: buf }], { indirect: k === 1 && round % 16 === 0 }));
      expect(d.publish()).to.equal((before + n) & 0xffff);
      if (d.availIdx < before) sawWrap = true;
      const taken = dev.take();
      expect(taken).to.deep.equal(ids);
      const done = [...taken].reverse().map((id, j) => ({ id, len: j }));
      dev.complete(done);
      const got = d.used().map(({ id, len }) => ({ id, len }));
      expect(got).to.deep.equal(done);
      expect(d.lastUsedIdx).to.equal(d.usedIdx);
      expect(d.numFree).to.equal(4);
      total += n;
    }
    expect(sawWrap).to.equal(true);
    expect(d.availIdx).to.equal(total & 0xffff);
    expect(d.usedIdx).to.equal(total & 0xffff);
  });

  it('startIdx places both indices near the wrap', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 8, alloc, startIdx: 65534 });
    const dev = new FakeSplitDevice(d, 65534);
    expect(d.availIdx).to.equal(65534);
    expect(d.usedIdx).to.equal(65534);
    const ids = [0, 1, 2, 3].map(() => d.add([{ len: 2, writable: true }]));
    d.publish();
    expect(d.availIdx).to.equal(2);
    // Ring slots 65534 % 8 = 6, 7, 0, 1.
    expect([6, 7, 0, 1].map((p) => d.readAvailRing(p))).to.deep.equal(ids);
    expect(dev.take()).to.deep.equal(ids);
    dev.complete(ids.map((id) => ({ id, len: 2 })));
    expect(d.usedIdx).to.equal(2);
    expect(d.used().map((e) => e.id)).to.deep.equal(ids);
  });

  it('builds well-formed indirect tables', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 2, alloc });
    const segs: Segment[] = [
      { len: 3, writable: false, data: bytes(7, 7, 7) },
      { len: 5, writable: true },
      { len: 6, writable: true },
    ];
    const head = d.add(segs, { indirect: true });
    expect(d.numFree).to.equal(1);
    const ring = d.readDesc(head);
    const table = d.indirectTable(head)!;
    expect(ring.flags).to.equal(VIRTQ_DESC_F_INDIRECT);
    expect(ring.addr).to.equal(table.addr);
    expect(ring.len).to.equal(3 * 16);
    expect(table.addr % 16).to.equal(0);
    const bufs = d.chainBuffers(head);
    const gm = d.memory;
    for (let i = 0; i < 3; i++) {
      const at = table.addr + 16 * i;
      expect(Number(gm.u64(at))).to.equal(bufs[i].addr);
      expect(gm.u32(at + 8)).to.equal(segs[i].len);
      const flags = gm.u16(at + 12);
      expect(flags & VIRTQ_DESC_F_INDIRECT).to.equal(0);
      expect(flags & VIRTQ_DESC_F_WRITE ? true : false).to.equal(segs[i].writable);
      expect(flags & VIRTQ_DESC_F_NEXT ? true : false).to.equal(i < 2);
      if (i < 2) expect(gm.u16(at + 14)).to.equal(i + 1);
    }
    expect([...d.read(bufs[0].addr, 3)]).to.deep.equal([7, 7, 7]);
  });

  it('explicit segment addresses are used as-is', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 2, alloc });
    const next = alloc.next;
    const head = d.add([{ len: 0x1000, writable: false, addr: 0xffff_ffff_ffff_f000 }]);
    expect(alloc.next).to.equal(next);
    expect(d.readDesc(head).addrBig).to.equal(0xffff_ffff_ffff_f000n);
  });

  it('event suppression fields sit where §2.7 puts them', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 16, alloc, eventIdx: true });
    const gm = d.memory;
    d.setNoInterrupt(true);
    expect(gm.u16(d.availAddr)).to.equal(VRING_AVAIL_F_NO_INTERRUPT);
    d.setNoInterrupt(false);
    expect(d.availFlags).to.equal(0);
    d.setUsedEvent(0x1234);
    expect(gm.u16(d.availAddr + 4 + 2 * 16)).to.equal(0x1234);
    gm.setU16(d.usedAddr + 4 + 8 * 16, 0x4321);
    expect(d.availEvent()).to.equal(0x4321);
    gm.setU16(d.usedAddr, 1);
    expect(d.usedFlags()).to.equal(1);
  });

  it('kickNeeded without event idx follows VRING_USED_F_NO_NOTIFY', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 16, alloc });
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded()).to.equal(true);
    d.memory.setU16(d.usedAddr, VRING_USED_F_NO_NOTIFY);
    d.memory.setU16(d.availEventAddr, 0); // ignored without event idx
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded()).to.equal(false);
  });

  it('kickNeeded puts a full barrier between the avail idx store and reading avail_event or used->flags', () => {
    for (const eventIdx of [true, false]) {
      const { mem, alloc } = setup();
      const d = new SplitDriver({ mem, base: BASE, size: 16, alloc, eventIdx });
      const log = recordOrder(d.memory);
      d.addAndPublish([{ len: 1, writable: true }]);
      d.kickNeeded();
      const threshold = eventIdx ? d.availEventAddr : d.usedAddr;
      expectFenceBetween(log, d.availAddr + 2, threshold, `split, event idx ${eventIdx}`);
    }
  });

  it('kickNeeded with event idx follows avail_event', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 16, alloc, eventIdx: true });
    d.memory.setU16(d.usedAddr, VRING_USED_F_NO_NOTIFY); // ignored with event idx
    d.memory.setU16(d.availEventAddr, 2); // device wants a kick once avail idx passes 2
    d.addAndPublish([{ len: 1, writable: true }]);
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded(), 'idx 0 -> 2').to.equal(false);
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded(), 'idx 2 -> 3').to.equal(true);
    d.addAndPublish([{ len: 1, writable: true }]);
    expect(d.kickNeeded(), 'idx 3 -> 4').to.equal(false);
    expect(d.kickNeeded(65535, 3)).to.equal(true);
    expect(d.kickNeeded(3, 3)).to.equal(false);
  });

  it('raw hostile writes bypass bookkeeping', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 4, alloc });
    d.writeDesc(3, { addr: 0xdead_beef_0000n, len: 0xffffffff, flags: VIRTQ_DESC_F_NEXT, next: 3 });
    expect(d.readDesc(3)).to.deep.include({ len: 0xffffffff, flags: VIRTQ_DESC_F_NEXT, next: 3, addrBig: 0xdead_beef_0000n });
    d.setAvailRing(5, 3);
    expect(d.readAvailRing(1)).to.equal(3);
    d.setAvailIdx(40000);
    expect(d.availIdx).to.equal(40000);
    expect(d.nextAvailIdx).to.equal(0);
    expect(d.numFree).to.equal(4);
    expect(() => d.writeDesc(4, { addr: 0, len: 0, flags: 0, next: 0 })).to.throw(RangeError);
  });
});

describe('SplitDriver in order', () => {
  it('one used element with the last head completes the batch, used->idx moved by its size, across the index wrap', () => {
    const { mem, alloc } = setup();
    const d = new SplitDriver({ mem, base: BASE, size: 8, alloc, inOrder: true, startIdx: 65530 });
    const dev = new FakeSplitDevice(d, 65530);
    for (let round = 0; round < 4; round++) {
      const heads = [1, 2, 1].map((n) => d.add(Array.from({ length: n }, () => ({ len: 4, writable: false }))));
      d.publish();
      expect(dev.take()).to.deep.equal(heads);
      dev.completeBatch(heads[2], 3);
      expect(d.used().map((u) => [u.id, u.len])).to.deep.equal(heads.map((h) => [h, 0]));
      expect(d.outstanding).to.equal(0);
    }
    // a batch, then a single element with a length, read at once
    const heads = [0, 1, 2].map(() => d.add([{ len: 8, writable: true }]));
    d.publish();
    dev.take();
    dev.completeBatch(heads[1], 2);
    dev.complete([{ id: heads[2], len: 8 }]);
    expect(d.used().map((u) => [u.id, u.len])).to.deep.equal([
      [heads[0], 0],
      [heads[1], 0],
      [heads[2], 8],
    ]);
  });

  it('a batch longer than used->idx moved, or an unpublished head, is refused and nothing is consumed', () => {
    for (const bad of ['longer', 'unpublished'] as const) {
      const { mem, alloc } = setup();
      const d = new SplitDriver({ mem, base: BASE, size: 8, alloc, inOrder: true });
      const dev = new FakeSplitDevice(d);
      const heads = [0, 1, 2].map(() => d.add([{ len: 4, writable: false }]));
      d.publish();
      const late = d.add([{ len: 4, writable: false }]); // not published
      dev.take();
      if (bad === 'longer')
        dev.completeBatch(heads[2], 2); // names the third chain, moves used->idx by 2
      else dev.completeBatch(late, 3);
      expect(() => d.used(), bad).to.throw(/no in-order batch|not the head of a published outstanding chain/);
      expect(d.outstanding, bad).to.equal(4);
      expect(d.lastUsedIdx, bad).to.equal(0);
    }
  });
});

describe('PackedDriver', () => {
  it('allocates the descriptor ring and both event areas with spec alignment, zeroed', () => {
    const { mem, alloc } = setup();
    mem.fill(0x55);
    alloc.alloc(3, 1);
    const start = alloc.next;
    const d = new PackedDriver({ mem, base: BASE, size: 3, alloc });
    const l = layoutPacked(3, start);
    expect(d.descAddr).to.equal(l.descAddr);
    expect(d.driverEventAddr).to.equal(l.driverEventAddr);
    expect(d.deviceEventAddr).to.equal(l.deviceEventAddr);
    expect(d.descAddr % 16).to.equal(0);
    expect(d.driverEventAddr % 4).to.equal(0);
    expect(d.deviceEventAddr % 4).to.equal(0);
    expect(d.read(l.descAddr, l.end - l.descAddr).every((b) => b === 0)).to.equal(true);
    expect(d.availIdx).to.equal(0);
    expect(d.availWrap).to.equal(1);
    expect(d.usedWrap).to.equal(1);
    expect(() => new PackedDriver({ mem, base: BASE, size: 0, alloc })).to.throw(RangeError);
    expect(() => new PackedDriver({ mem, base: BASE, size: 32769, alloc })).to.throw(RangeError);
  });

  it('writes chains with the id everywhere and defers head flags to publish()', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 8, alloc });
    const a = d.add([
      { len: 4, writable: false, data: bytes(1, 2, 3, 4) },
      { len: 8, writable: true },
    ]);
    const b = d.add([
      { len: 2, writable: false },
      { len: 2, writable: false },
      { len: 6, writable: true },
    ]);
    expect([a, b]).to.deep.equal([0, 1]);
    expect(d.availIdx).to.equal(5);
    // Heads (slots 0 and 2) not yet available; the rest are.
    expect(d.readDesc(0).flags).to.equal(0);
    expect(d.readDesc(2).flags).to.equal(0);
    expect(d.readDesc(1).flags).to.equal(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_WRITE);
    expect(d.readDesc(3).flags).to.equal(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
    expect(d.readDesc(4).flags).to.equal(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_WRITE);
    expect(new FakePackedDevice(d).take()).to.deep.equal([]);
    d.publish();
    expect(d.readDesc(0).flags).to.equal(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
    expect(d.readDesc(2).flags).to.equal(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
    expect([0, 1, 2, 3, 4].map((s) => d.readDesc(s).id)).to.deep.equal([a, a, b, b, b]);
    const ab = d.chainBuffers(a);
    expect(d.readDesc(0).addr).to.equal(ab[0].addr);
    expect(d.readDesc(1).len).to.equal(8);
    expect([...d.read(ab[0].addr, 4)]).to.deep.equal([1, 2, 3, 4]);
    expect(new FakePackedDevice(d).take()).to.deep.equal([
      { id: a, count: 2, slots: [0, 1] },
      { id: b, count: 3, slots: [2, 3, 4] },
    ]);
  });

  it('in order: one used descriptor with the last id completes every chain from its slot up to that one, across the wrap', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 8, alloc, inOrder: true });
    const dev = new FakePackedDevice(d);
    const ro = (n: number): Segment[] => Array.from({ length: n }, () => ({ len: 4, writable: false }));
    for (let round = 0; round < 4; round++) {
      // 2 + 1 + 3 = 6 slots a round: rounds 2 and 3 cross the wrap
      const ids = [d.add(ro(2)), d.add(ro(1)), d.add(ro(3))];
      d.publish();
      expect(dev.take().map((c) => c.id)).to.deep.equal(ids);
      dev.complete(ids[2], 6, 0); // the batch: one descriptor at the first chain's slot
      expect(d.used().map((u) => [u.id, u.len])).to.deep.equal(ids.map((id) => [id, 0]));
      expect(d.outstanding).to.equal(0);
      expect(d.numFree).to.equal(8);
    }
    // a batch and a single completion read in one call
    const ids = [d.add(ro(1)), d.add(ro(1)), d.add(ro(2))];
    d.publish();
    dev.take();
    dev.complete(ids[1], 2, 0);
    dev.complete(ids[2], 2, 7);
    expect(d.used().map((u) => [u.id, u.len])).to.deep.equal([
      [ids[0], 0],
      [ids[1], 0],
      [ids[2], 7],
    ]);
  });

  it('in order: a used id that no batch from its slot reaches is refused, and nothing is consumed', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 8, alloc, inOrder: true });
    const a = d.add([{ len: 4, writable: false }]);
    d.publish();
    const b = d.add([{ len: 4, writable: false }]); // added, not published
    new FakePackedDevice(d).complete(b, 2, 0);
    expect(() => d.used()).to.throw(/not a published outstanding buffer|no in-order batch/);
    expect(d.outstanding).to.equal(2);
    expect(d.chainSlots(a)).to.deep.equal([0]);
  });

  it('flips the avail wrap counter after size descriptors and sets AVAIL/USED from it', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 3, alloc });
    const dev = new FakePackedDevice(d);
    const a = d.add([
      { len: 1, writable: true },
      { len: 1, writable: true },
    ]);
    expect(d.availWrap).to.equal(1);
    d.publish();
    for (const c of dev.take()) dev.complete(c.id, c.count, 1);
    expect(d.used().map((e) => e.id)).to.deep.equal([a]);
    expect(d.usedIdx).to.equal(2);

    // The next chain occupies slot 2 (wrap 1) and slot 0 (wrap 0).
    const b = d.add([
      { len: 1, writable: false },
      { len: 1, writable: true },
    ]);
    expect(d.availIdx).to.equal(1);
    expect(d.availWrap).to.equal(0);
    expect(d.readDesc(0).flags, 'second descriptor, new lap').to.equal(VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
    d.publish();
    expect(d.readDesc(2).flags, 'head, old lap').to.equal(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
    expect(d.readDesc(2).id).to.equal(b);
    expect(d.readDesc(0).id).to.equal(b);
    const taken = dev.take();
    expect(taken).to.deep.equal([{ id: b, count: 2, slots: [2, 0] }]);
    dev.complete(b, 2, 0);
    expect(dev.usedWrap).to.equal(0);
    const u = d.used();
    expect(u.map((e) => e.id)).to.deep.equal([b]);
    expect(d.usedIdx).to.equal(1);
    expect(d.usedWrap).to.equal(0);
    expect(d.outstanding).to.equal(0);
    expect(d.numFree).to.equal(3);
  });

  it('tracks the wrap counter over many laps of an odd-sized ring', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 5, alloc });
    const dev = new FakePackedDevice(d);
    let descs = 0;
    for (let round = 0; round < 500; round++) {
      const ids: number[] = [];
      const lens = [1 + (round % 3), 1 + ((round + 1) % 2)];
      for (const n of lens) {
        const segs = Array.from({ length: n }, () => ({ len: 1, writable: true }));
        ids.push(d.add(segs, { indirect: round % 7 === 0 && n > 1 }));
        descs += round % 7 === 0 && n > 1 ? 1 : n;
      }
      d.publish();
      expect(d.availIdx).to.equal(descs % 5);
      expect(d.availWrap).to.equal(1 ^ (Math.floor(descs / 5) & 1));
      const taken = dev.take();
      expect(taken.map((t) => t.id)).to.deep.equal(ids);
      // Complete in reverse order: the used descriptor of the later chain lands first.
      for (const t of [...taken].reverse()) dev.complete(t.id, t.count, t.id);
      const got = d.used();
      expect(got.map((e) => e.id)).to.deep.equal([...ids].reverse());
      expect(got.map((e) => e.len)).to.deep.equal([...ids].reverse());
      expect(d.usedIdx).to.equal(dev.usedIdx);
      expect(d.usedWrap).to.equal(dev.usedWrap);
      expect(d.outstanding).to.equal(0);
      expect(d.numFree).to.equal(5);
      expect(d.numFreeIds).to.equal(5);
    }
  });

  it('hands ids out from a free list and takes them back', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 4, alloc });
    const dev = new FakePackedDevice(d);
    const ids = [0, 1, 2].map(() => d.add([{ len: 1, writable: true }]));
    expect(ids).to.deep.equal([0, 1, 2]);
    expect(() => d.add([{ len: 1, writable: true }], { id: 1 })).to.throw(RangeError);
    expect(() =>
      d.add([
        { len: 1, writable: true },
        { len: 1, writable: true },
      ]),
    ).to.throw(RangeError);
    d.publish();
    dev.take();
    dev.complete(1, 1, 0);
    expect(d.used().map((e) => e.id)).to.deep.equal([1]);
    expect(d.add([{ len: 1, writable: true }])).to.equal(1);
    expect(d.add([{ len: 1, writable: true }], { id: 3 })).to.equal(3);
    expect(d.numFreeIds).to.equal(0);
    expect(() => d.add([{ len: 1, writable: true }])).to.throw(RangeError);
  });

  it('rejects a used descriptor with an unknown id without consuming anything', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 4, alloc });
    d.addAndPublish([{ len: 1, writable: true }]);
    d.writeDesc(0, { addr: 0, len: 0, id: 3, flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED });
    expect(() => d.used()).to.throw(/id 3/);
    expect(d.usedIdx).to.equal(0);
    expect(d.outstanding).to.equal(1);
    // A used descriptor from the wrong lap is not used.
    d.writeDesc(0, { addr: 0, len: 0, id: 0, flags: 0 });
    expect(d.used()).to.deep.equal([]);
    d.writeDesc(0, { addr: 0, len: 0, id: 0, flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED });
    expect(d.used().map((e) => e.id)).to.deep.equal([0]);
  });

  it('builds well-formed indirect tables', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 4, alloc });
    const segs: Segment[] = [
      { len: 10, writable: false, data: bytes(5) },
      { len: 20, writable: true },
      { len: 30, writable: true },
    ];
    const id = d.addAndPublish(segs, { indirect: true });
    expect(d.availIdx).to.equal(1);
    expect(d.numFree).to.equal(3);
    const ring = d.readDesc(0);
    const table = d.indirectTable(id)!;
    expect(ring.flags).to.equal(VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_AVAIL);
    expect(ring.id).to.equal(id);
    expect(ring.addr).to.equal(table.addr);
    expect(ring.len).to.equal(48);
    expect(table.addr % 16).to.equal(0);
    const bufs = d.chainBuffers(id);
    for (let i = 0; i < 3; i++) {
      const at = table.addr + 16 * i;
      expect(Number(d.memory.u64(at))).to.equal(bufs[i].addr);
      expect(d.memory.u32(at + 8)).to.equal(segs[i].len);
      expect(d.memory.u16(at + 12)).to.equal(0);
      expect(d.memory.u16(at + 14)).to.equal(segs[i].writable ? VIRTQ_DESC_F_WRITE : 0);
    }
    expect(d.read(bufs[0].addr, 2)[0]).to.equal(5);
  });

  it('event suppression areas: driver writes off_wrap then flags, reads the device area', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 8, alloc, eventIdx: true });
    d.setDriverEvent(RING_EVENT_FLAGS_DESC, packOffWrap(6, 1));
    expect(d.memory.u16(d.driverEventAddr)).to.equal(0x8006);
    expect(d.memory.u16(d.driverEventAddr + 2)).to.equal(RING_EVENT_FLAGS_DESC);
    d.memory.setU16(d.deviceEventAddr, 0x8003);
    d.memory.setU16(d.deviceEventAddr + 2, RING_EVENT_FLAGS_DISABLE);
    expect(d.deviceEvent()).to.deep.equal({ offWrap: 0x8003, flags: RING_EVENT_FLAGS_DISABLE });
  });

  it('kickNeeded puts a full barrier between the descriptor flags store and reading the device event area', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 4, alloc, eventIdx: true });
    const log = recordOrder(d.memory);
    const id = d.addAndPublish([{ len: 1, writable: true }]);
    d.kickNeeded();
    const headFlags = d.descAddr + 16 * d.chainSlots(id)[0] + 14;
    expectFenceBetween(log, headFlags, d.deviceEventAddr + 2, 'packed: flags of the device event area');
    expectFenceBetween(log, headFlags, d.deviceEventAddr, 'packed: off_wrap of the device event area');
  });

  it('kickNeeded follows the device event suppression area', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 4, alloc, eventIdx: true });
    const dev = new FakePackedDevice(d);
    const setDev = (flags: number, offWrap = 0): void => {
      d.memory.setU16(d.deviceEventAddr, offWrap);
      d.memory.setU16(d.deviceEventAddr + 2, flags);
    };
    const cycle = (n: number): void => {
      const segs = Array.from({ length: n }, () => ({ len: 1, writable: true }));
      d.addAndPublish(segs);
      for (const t of dev.take()) dev.complete(t.id, t.count, 0);
      d.used();
    };

    setDev(RING_EVENT_FLAGS_ENABLE);
    cycle(1);
    expect(d.kickNeeded()).to.equal(true);
    setDev(RING_EVENT_FLAGS_DISABLE);
    cycle(1);
    expect(d.kickNeeded()).to.equal(false);

    // Now at slot 2, wrap 1. Device wants a kick when slot 3 (wrap 1) is made available.
    setDev(RING_EVENT_FLAGS_DESC, packOffWrap(3, 1));
    cycle(1); // slot 2
    expect(d.kickNeeded(), 'slot 2 only').to.equal(false);
    cycle(1); // slot 3
    expect(d.kickNeeded(), 'slot 3 made available').to.equal(true);
    expect(d.availWrap).to.equal(0);

    // Slot 1 in the new lap (wrap 0): a 2-descriptor chain at 0..1 crosses it.
    setDev(RING_EVENT_FLAGS_DESC, packOffWrap(1, 0));
    cycle(2);
    expect(d.kickNeeded()).to.equal(true);
    // Event for slot 1 of the old lap (wrap 1) is already behind: no kick for slot 2.
    setDev(RING_EVENT_FLAGS_DESC, packOffWrap(1, 1));
    cycle(1);
    expect(d.kickNeeded()).to.equal(false);

    // A batch that wraps: slot 3 (wrap 0) and slot 0 (wrap 1); event at slot 3 wrap 0.
    setDev(RING_EVENT_FLAGS_DESC, packOffWrap(3, 0));
    cycle(2);
    expect(d.availWrap).to.equal(1);
    expect(d.kickNeeded()).to.equal(true);
  });

  it('raw descriptor writes and reads', () => {
    const { mem, alloc } = setup();
    const d = new PackedDriver({ mem, base: BASE, size: 2, alloc });
    d.writeDesc(1, { addr: 2n ** 64n - 1n, len: 7, id: 0xffff, flags: 0xffff });
    expect(d.readDesc(1)).to.deep.include({ addrBig: 2n ** 64n - 1n, len: 7, id: 0xffff, flags: 0xffff });
    expect(() => d.readDesc(2)).to.throw(RangeError);
  });
});
