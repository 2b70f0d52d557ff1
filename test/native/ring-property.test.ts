// Property-based tests: random descriptor tables, avail rings, indices and indirect
// tables. Whatever the driver writes, the engine must not crash, must return only
// segments inside guest memory, must write nothing outside the ring areas it owns, and
// must either serve chains or report one of its error codes.
import { expect } from 'chai';
import fc from 'fast-check';
import { fcParams } from '../lib/fuzz-runs.js';
import { PackedDriver, SplitDriver } from '../../src/virtio/driver.js';
import { VringErrorCode } from '../../src/native/virtqueue.js';
import { BASE, MiB, Rig } from './ring-rig.js';

const REGION = 1 * MiB;
const SIZE = 16;
// A scratch area inside the region that random descriptors point into, and where random
// indirect tables live.
const SCRATCH = BASE + 256 * 1024;
const TABLES = BASE + 512 * 1024;

const addrArb = fc.oneof(
  fc.integer({ min: 0, max: REGION - 1 }).map((o) => BigInt(SCRATCH + (o % (256 * 1024)))),
  fc.integer({ min: 0, max: 64 }).map((o) => BigInt(BASE + REGION - o)),
  fc.integer({ min: 0, max: 7 }).map((k) => BigInt(TABLES + 16 * k * 8)),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  fc.constantFrom(0n, BigInt(BASE), BigInt(BASE - 1), (1n << 64n) - 1n),
);
const lenArb = fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(16, 32, 48, 0xffffffff, 0x80000000), fc.integer({ min: 0, max: 0xffffffff }));
const descArb = fc.record({ addr: addrArb, len: lenArb, a: fc.integer({ min: 0, max: 0xffff }), b: fc.integer({ min: 0, max: 0xffff }) });
const smallFlags = fc.integer({ min: 0, max: 7 });

function encode(d: { addr: bigint; len: number; a: number; b: number }): Uint8Array {
  const out = new Uint8Array(16);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, d.addr, true);
  dv.setUint32(8, d.len >>> 0, true);
  dv.setUint16(12, d.a, true);
  dv.setUint16(14, d.b, true);
  return out;
}

const knownCodes = new Set<number>(Object.values(VringErrorCode));

/** Pops until empty or broken, checks bounds, pushes everything back with random lens. */
function drive(rig: Rig, lens: number[]): void {
  const before = rig.mem.read(BigInt(BASE), REGION);
  let rounds = 0;
  for (; rounds < 8; rounds++) {
    const n = rig.q.pop();
    if (n < 0) {
      expect(knownCodes.has(-n), `error code ${-n}`).to.equal(true);
      expect(rig.q.error).to.not.equal(null);
      break;
    }
    if (n === 0) break;
    rig.assertSegmentsInBounds(n);
    for (let i = 0; i < n; i++) {
      rig.q.b.usedId[i] = rig.q.b.head[i];
      rig.q.b.usedLen[i] = lens[i % lens.length] ?? 0;
    }
    rig.q.push(n);
  }
  expect(rig.canariesIntact(), 'canaries').to.equal(true);
  // Outside the ring areas the device may write (used ring / device area, and the
  // used-slot writes of packed descriptors), the region is unchanged.
  const after = rig.mem.read(BigInt(BASE), REGION);
  const a = rig.ringAddrs();
  const owned: Array<[number, number]> =
    rig.layout === 'split'
      ? [[Number(a.device) - BASE, 6 + 8 * SIZE]]
      : [[Number(a.desc) - BASE, 16 * SIZE], [Number(a.device) - BASE, 4]];
  for (let i = 0; i < REGION; i++) {
    if (before[i] === after[i]) continue;
    const ok = owned.some(([o, l]) => i >= o && i < o + l);
    if (!ok) throw new Error(`byte at region offset ${i} changed outside the ring areas`);
  }
}

describe('ring engine properties (fast-check)', function () {
  this.timeout(120000);

  it('split: random descriptor tables, avail rings and indices never crash or escape memory', () => {
    fc.assert(
      fc.property(
        fc.array(descArb, { minLength: SIZE, maxLength: SIZE }),
        fc.array(fc.integer({ min: 0, max: 20 }), { minLength: SIZE, maxLength: SIZE }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.array(descArb, { minLength: 64, maxLength: 64 }),
        fc.array(smallFlags, { minLength: SIZE, maxLength: SIZE }),
        fc.boolean(),
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 4 }),
        (descs, heads, availIdx, tables, flags, eventIdx, lens) => {
          const rig = new Rig('split', { size: SIZE, regionSize: REGION, eventIdx, indirect: true });
          try {
            const d = rig.drv as SplitDriver;
            // Mostly-plausible flags and next indices, so chains get walked deeply.
            descs.forEach((x, i) => d.write(d.descAddr + 16 * i, encode({ ...x, a: flags[i], b: x.b % 24 })));
            tables.forEach((x, i) => d.write(TABLES + 16 * i, encode({ ...x, a: x.a & 7, b: x.b % 10 })));
            heads.forEach((h, i) => d.setAvailRing(i, h));
            d.setAvailIdx(availIdx % 2 === 0 ? availIdx % (SIZE + 4) : availIdx);
            drive(rig, lens);
          } finally {
            rig.close();
          }
        },
      ),
      fcParams(300),
    );
  });

  it('packed: random descriptor rings and indirect tables never crash or escape memory', () => {
    fc.assert(
      fc.property(
        fc.array(descArb, { minLength: SIZE, maxLength: SIZE }),
        fc.array(descArb, { minLength: 64, maxLength: 64 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: SIZE, maxLength: SIZE }),
        fc.boolean(),
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 4 }),
        (descs, tables, availBits, eventIdx, lens) => {
          const rig = new Rig('packed', { size: SIZE, regionSize: REGION, eventIdx, indirect: true });
          try {
            const d = rig.drv as PackedDriver;
            descs.forEach((x, i) => {
              // flags: random NEXT/WRITE/INDIRECT, and AVAIL/USED bits mostly "available"
              const avail = availBits[i] === 0 ? 0 : availBits[i] === 1 ? 1 << 15 : 1 << 7;
              d.write(d.descAddr + 16 * i, encode({ ...x, a: x.a % 20, b: (x.b & 7) | avail }));
            });
            tables.forEach((x, i) => d.write(TABLES + 16 * i, encode({ ...x, b: x.b & 7 })));
            drive(rig, lens);
          } finally {
            rig.close();
          }
        },
      ),
      fcParams(300),
    );
  });

  it('split and packed: random well-formed traffic round-trips exactly', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('split' as const, 'packed' as const),
        fc.array(
          fc.record({
            segs: fc.array(fc.record({ len: fc.integer({ min: 0, max: 300 }), writable: fc.boolean() }), { minLength: 1, maxLength: 5 }),
            indirect: fc.boolean(),
          }),
          { minLength: 1, maxLength: 40 },
        ),
        (layout, chains) => {
          const rig = new Rig(layout, { size: 8, regionSize: REGION });
          try {
            let sent = 0;
            for (const c of chains) {
              const segs = [...c.segs].sort((x, y) => Number(x.writable) - Number(y.writable));
              if (rig.drv.outstanding >= 4) {
                rig.serve((r) => r);
                sent -= rig.drv.used().length;
              }
              try {
                rig.drv.add(segs.map((s) => ({ len: s.len, writable: s.writable })), { indirect: c.indirect });
              } catch {
                continue; // the driver's ring is full for this shape
              }
              rig.drv.publish();
              sent++;
            }
            rig.serve((r) => r);
            expect(rig.drv.used().length).to.equal(sent);
            expect(rig.q.inFlight).to.equal(0);
            expect(rig.q.error).to.equal(null);
          } finally {
            rig.close();
          }
        },
      ),
      fcParams(200),
    );
  });
});
