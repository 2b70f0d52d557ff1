// Every hostile ring case the engine must refuse, each with its own error code, with
// proof that nothing was written anywhere (the whole region and the canaries around it
// are byte-for-byte unchanged) and that the queue stays broken until it is reset.
import { expect } from 'chai';
import { PackedDriver, SplitDriver } from '../../src/virtio/driver.js';
import { type VringErrorName } from '../../src/native/virtqueue.js';
import { PackedDescFlags as P, SplitDescFlags as S } from '../../src/virtio/ring-layout.js';
import { BASE, MiB, Rig } from './ring-rig.js';

const AV = P.AVAIL; // packed, wrap counter 1: AVAIL set, USED clear

function desc(addr: number | bigint, len: number, a: number, b: number): Uint8Array {
  const out = new Uint8Array(16);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(addr), true);
  dv.setUint32(8, len >>> 0, true);
  dv.setUint16(12, a, true);
  dv.setUint16(14, b, true);
  return out;
}

/** Writes an indirect table of split-layout entries; returns its gpa. */
function splitTable(rig: Rig, entries: Array<[number | bigint, number, number, number]>): number {
  const at = rig.alloc.alloc(entries.length * 16, 16);
  entries.forEach(([addr, len, flags, next], i) => rig.drv.write(at + 16 * i, desc(addr, len, flags, next)));
  return at;
}

function packedTable(rig: Rig, entries: Array<[number | bigint, number, number]>): number {
  const at = rig.alloc.alloc(entries.length * 16, 16);
  entries.forEach(([addr, len, flags], i) => rig.drv.write(at + 16 * i, desc(addr, len, 0, flags)));
  return at;
}

function expectBroken(rig: Rig, code: VringErrorName, detail?: RegExp): void {
  const before = rig.mem.read(BigInt(BASE), rig.regionSize);
  const n = rig.q.pop();
  expect(n, 'pop fails').to.be.below(0);
  const err = rig.q.error;
  expect(err?.code).to.equal(code);
  if (detail) expect(err?.detail).to.match(detail);
  expect(Buffer.from(rig.mem.read(BigInt(BASE), rig.regionSize)).equals(Buffer.from(before)), 'region unchanged').to.equal(true);
  expect(rig.canariesIntact(), 'canaries intact').to.equal(true);
  expect(rig.q.pop(), 'stays broken').to.equal(n);
  expect(rig.q.inFlight).to.equal(0);
}

describe('hostile split ring', () => {
  let rig: Rig;
  let d: SplitDriver;
  const setup = (o: { size?: number; indirect?: boolean } = {}) => {
    rig = new Rig('split', { size: o.size ?? 16, indirect: o.indirect ?? true, regionSize: 4 * MiB });
    d = rig.drv as SplitDriver;
  };
  const offer = (...heads: number[]) => {
    heads.forEach((h, i) => d.setAvailRing(i, h));
    d.setAvailIdx(heads.length);
  };
  const buf = () => rig.alloc.alloc(64);
  afterEach(() => rig?.close());

  it('DESC_ADDR: a buffer past the end of memory, below it, or wrapping u64', () => {
    for (const [addr, len] of [
      [BASE + 4 * MiB - 10, 20],
      [0, 16],
      [BASE - 8, 16],
      [0xfffffffffffffff8n, 16],
      [BASE, 0xffffffff],
    ] as Array<[number | bigint, number]>) {
      setup();
      d.writeDesc(0, { addr, len, flags: 0, next: 0 });
      offer(0);
      expectBroken(rig, 'DESC_ADDR', /outside guest memory/);
      rig.close();
    }
    setup();
  });

  it('DESC_LOOP: a chain that comes back to itself', () => {
    setup();
    d.writeDesc(0, { addr: buf(), len: 8, flags: S.NEXT, next: 1 });
    d.writeDesc(1, { addr: buf(), len: 8, flags: S.NEXT, next: 0 });
    offer(0);
    expectBroken(rig, 'DESC_LOOP', /visited twice/);
  });

  it('NEXT_OUT_OF_RANGE and HEAD_OUT_OF_RANGE', () => {
    setup();
    d.writeDesc(0, { addr: buf(), len: 8, flags: S.NEXT, next: 16 });
    offer(0);
    expectBroken(rig, 'NEXT_OUT_OF_RANGE');
    rig.close();
    setup();
    offer(16);
    expectBroken(rig, 'HEAD_OUT_OF_RANGE');
  });

  it('AVAIL_IDX_JUMP: avail idx more than the queue size ahead', () => {
    setup();
    d.setAvailIdx(17);
    expectBroken(rig, 'AVAIL_IDX_JUMP');
  });

  it('WRITE_BEFORE_READ', () => {
    setup();
    d.writeDesc(0, { addr: buf(), len: 8, flags: S.NEXT | S.WRITE, next: 1 });
    d.writeDesc(1, { addr: buf(), len: 8, flags: 0, next: 0 });
    offer(0);
    expectBroken(rig, 'WRITE_BEFORE_READ');
  });

  it('CHAIN_TOO_LONG: more segments than a chain may have', () => {
    setup({ size: 2048 });
    const b = buf();
    for (let i = 0; i < 1100; i++) d.writeDesc(i, { addr: b, len: 1, flags: S.NEXT, next: i + 1 });
    d.writeDesc(1100, { addr: b, len: 1, flags: 0, next: 0 });
    offer(0);
    expectBroken(rig, 'CHAIN_TOO_LONG');
  });

  it('ID_IN_FLIGHT: the same head offered twice', () => {
    setup();
    d.writeDesc(3, { addr: buf(), len: 8, flags: 0, next: 0 });
    offer(3, 3);
    expect(rig.q.pop(), 'the first is served').to.equal(1);
    expect(rig.q.error?.code).to.equal('ID_IN_FLIGHT');
    expect(rig.q.pop()).to.be.below(0);
  });

  it('indirect: nested, bad length, outside memory, with NEXT, looping, next outside the table, not negotiated', () => {
    const cases: Array<[VringErrorName, () => void]> = [
      ['INDIRECT_NESTED', () => d.writeDesc(0, { addr: splitTable(rig, [[buf(), 8, S.INDIRECT, 0]]), len: 16, flags: S.INDIRECT, next: 0 })],
      ['INDIRECT_LEN', () => d.writeDesc(0, { addr: splitTable(rig, [[buf(), 8, 0, 0], [buf(), 8, 0, 0]]), len: 24, flags: S.INDIRECT, next: 0 })],
      ['INDIRECT_LEN', () => d.writeDesc(0, { addr: buf(), len: 0, flags: S.INDIRECT, next: 0 })],
      ['INDIRECT_LEN', () => d.writeDesc(0, { addr: buf(), len: 1025 * 16, flags: S.INDIRECT, next: 0 })],
      ['INDIRECT_ADDR', () => d.writeDesc(0, { addr: BASE + 4 * MiB - 16, len: 32, flags: S.INDIRECT, next: 0 })],
      ['INDIRECT_NEXT', () => d.writeDesc(0, { addr: splitTable(rig, [[buf(), 8, 0, 0]]), len: 16, flags: S.INDIRECT | S.NEXT, next: 1 })],
      ['DESC_LOOP', () => d.writeDesc(0, { addr: splitTable(rig, [[buf(), 8, S.NEXT, 1], [buf(), 8, S.NEXT, 0]]), len: 32, flags: S.INDIRECT, next: 0 })],
      ['NEXT_OUT_OF_RANGE', () => d.writeDesc(0, { addr: splitTable(rig, [[buf(), 8, S.NEXT, 2], [buf(), 8, 0, 0]]), len: 32, flags: S.INDIRECT, next: 0 })],
      ['DESC_ADDR', () => d.writeDesc(0, { addr: splitTable(rig, [[0x10, 8, 0, 0]]), len: 16, flags: S.INDIRECT, next: 0 })],
      ['WRITE_BEFORE_READ', () => d.writeDesc(0, { addr: splitTable(rig, [[buf(), 8, S.WRITE | S.NEXT, 1], [buf(), 8, 0, 0]]), len: 32, flags: S.INDIRECT, next: 0 })],
    ];
    for (const [code, build] of cases) {
      setup();
      build();
      offer(0);
      expectBroken(rig, code);
      rig.close();
    }
    setup({ indirect: false });
    d.writeDesc(0, { addr: splitTable(rig, [[buf(), 8, 0, 0]]), len: 16, flags: S.INDIRECT, next: 0 });
    offer(0);
    expectBroken(rig, 'INDIRECT_NOT_NEGOTIATED');
  });

  it('delivers the good chains before a bad one, then stays broken until SET_VRING_BASE', () => {
    setup();
    const good = d.add([{ len: 8, writable: false }]);
    d.publish();
    d.setAvailRing(1, 99);
    d.setAvailIdx(2);
    expect(rig.q.pop()).to.equal(1);
    expect(rig.q.b.head[0]).to.equal(good);
    expect(rig.q.error?.code).to.equal('HEAD_OUT_OF_RANGE');
    expect(rig.q.pop()).to.be.below(0);
    // The chain that was popped can still be completed.
    rig.q.b.usedId[0] = good;
    rig.q.b.usedLen[0] = 0;
    rig.q.push(1);
    expect(d.used().map((u) => u.id)).to.deep.equal([good]);
    // A reset (SET_VRING_BASE past the bad entry) clears the latched error.
    rig.q.setBase(2);
    expect(rig.q.error).to.equal(null);
    expect(rig.q.pop()).to.equal(0);
  });
});

describe('hostile packed ring', () => {
  let rig: Rig;
  let d: PackedDriver;
  const setup = (o: { size?: number; indirect?: boolean } = {}) => {
    rig = new Rig('packed', { size: o.size ?? 16, indirect: o.indirect ?? true });
    d = rig.drv as PackedDriver;
  };
  const buf = () => rig.alloc.alloc(64);
  afterEach(() => rig?.close());

  it('DESC_ADDR, WRITE_BEFORE_READ', () => {
    setup();
    d.writeDesc(0, { addr: 0xfffffffffffffff0n, len: 32, id: 0, flags: AV });
    expectBroken(rig, 'DESC_ADDR');
    rig.close();
    setup();
    d.writeDesc(0, { addr: buf(), len: 8, id: 0, flags: AV | P.WRITE | P.NEXT });
    d.writeDesc(1, { addr: buf(), len: 8, id: 0, flags: AV });
    expectBroken(rig, 'WRITE_BEFORE_READ');
  });

  it('CHAIN_TOO_LONG: every descriptor of the ring chained', () => {
    setup({ size: 16 });
    const b = buf();
    for (let i = 0; i < 16; i++) d.writeDesc(i, { addr: b, len: 8, id: 0, flags: AV | P.NEXT });
    expectBroken(rig, 'CHAIN_TOO_LONG');
  });

  it('ID_OUT_OF_RANGE and ID_IN_FLIGHT', () => {
    setup();
    d.writeDesc(0, { addr: buf(), len: 8, id: 16, flags: AV });
    expectBroken(rig, 'ID_OUT_OF_RANGE');
    rig.close();
    setup();
    d.writeDesc(0, { addr: buf(), len: 8, id: 5, flags: AV });
    d.writeDesc(1, { addr: buf(), len: 8, id: 5, flags: AV });
    expect(rig.q.pop()).to.equal(1);
    expect(rig.q.error?.code).to.equal('ID_IN_FLIGHT');
  });

  it('indirect: nested, bad length, outside memory, with NEXT, bad entry address, not negotiated', () => {
    const cases: Array<[VringErrorName, () => void]> = [
      ['INDIRECT_NESTED', () => d.writeDesc(0, { addr: packedTable(rig, [[buf(), 8, P.INDIRECT]]), len: 16, id: 0, flags: AV | P.INDIRECT })],
      ['INDIRECT_LEN', () => d.writeDesc(0, { addr: buf(), len: 20, id: 0, flags: AV | P.INDIRECT })],
      ['INDIRECT_ADDR', () => d.writeDesc(0, { addr: 0x1000, len: 16, id: 0, flags: AV | P.INDIRECT })],
      ['INDIRECT_NEXT', () => d.writeDesc(0, { addr: packedTable(rig, [[buf(), 8, 0]]), len: 16, id: 0, flags: AV | P.INDIRECT | P.NEXT })],
      ['DESC_ADDR', () => d.writeDesc(0, { addr: packedTable(rig, [[BASE + 4 * MiB, 1, 0]]), len: 16, id: 0, flags: AV | P.INDIRECT })],
    ];
    for (const [code, build] of cases) {
      setup();
      build();
      expectBroken(rig, code);
      rig.close();
    }
    setup({ indirect: false });
    d.writeDesc(0, { addr: packedTable(rig, [[buf(), 8, 0]]), len: 16, id: 0, flags: AV | P.INDIRECT });
    expectBroken(rig, 'INDIRECT_NOT_NEGOTIATED');
  });

  it('BASE_OUT_OF_RANGE: SET_VRING_BASE beyond the ring', () => {
    setup({ size: 16 });
    expect(() => rig.q.setBase(16)).to.throw(/BASE_OUT_OF_RANGE/);
    expect(() => rig.q.setBase(16 << 16)).to.throw(/BASE_OUT_OF_RANGE/);
  });

  it('ignores descriptors whose AVAIL/USED bits do not match the wrap counter', () => {
    setup();
    d.writeDesc(0, { addr: 0xdead0000, len: 8, id: 0, flags: AV | P.USED }); // looks used
    expect(rig.q.pop()).to.equal(0);
    d.writeDesc(0, { addr: 0xdead0000, len: 8, id: 0, flags: 0 }); // wrap 0 avail: not ours yet
    expect(rig.q.pop()).to.equal(0);
    expect(rig.q.error).to.equal(null);
  });
});
