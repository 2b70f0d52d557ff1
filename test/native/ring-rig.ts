// A test rig: guest memory in a memfd, a driver (src/virtio/driver.ts) laying out a
// split or packed ring in it, and the native device-side Virtqueue over the same ring.
// The memfd is larger than the region the queue sees, with canary bytes around it, and a
// second mapping of the whole fd lets a test check that nothing outside was written.
import { closeSync } from 'node:fs';
import { GuestMemory, createMemfd } from '../../src/native/guest-memory.js';
import { Virtqueue, type RingLayout } from '../../src/native/virtqueue.js';
import { BumpAllocator, PackedDriver, SplitDriver } from '../../src/virtio/driver.js';

export const MiB = 1024 * 1024;
/** guest-physical address of the region's first byte */
export const BASE = 0x100000;
/** bytes of the memfd before and after the region (canaries) */
export const GUARD = MiB;
export const CANARY = 0xa5;

export interface RigOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  startIdx?: number;
  burst?: number;
  regionSize?: number;
  /** give the queue the region as two adjacent memory-table regions, split this many bytes in */
  splitAt?: number;
}

export class Rig {
  readonly mem: GuestMemory;
  /** what the queue translates through (mem, or mem's bytes split in two regions) */
  readonly table: GuestMemory;
  readonly whole: GuestMemory;
  readonly q: Virtqueue;
  readonly drv: SplitDriver | PackedDriver;
  readonly alloc: BumpAllocator;
  readonly regionSize: number;
  private readonly fd: number;

  constructor(readonly layout: RingLayout, opts: RigOptions = {}) {
    const size = opts.size ?? 256;
    this.regionSize = opts.regionSize ?? 4 * MiB;
    this.fd = createMemfd('rig', GUARD + this.regionSize + GUARD);
    this.whole = GuestMemory.map([{ fd: this.fd, gpa: 0n, size: BigInt(GUARD * 2 + this.regionSize), uva: 0x200000000000n, mmapOffset: 0n }]);
    this.whole.view(0).fill(CANARY);
    this.mem = GuestMemory.map([{ fd: this.fd, gpa: BigInt(BASE), size: BigInt(this.regionSize), uva: 0x7f0000000000n, mmapOffset: BigInt(GUARD) }]);
    // The queue's table: the same bytes, as one region or as two adjacent ones.
    this.table = opts.splitAt
      ? GuestMemory.map([
          { fd: this.fd, gpa: BigInt(BASE), size: BigInt(opts.splitAt), uva: 0x7e0000000000n, mmapOffset: BigInt(GUARD) },
          { fd: this.fd, gpa: BigInt(BASE + opts.splitAt), size: BigInt(this.regionSize - opts.splitAt), uva: 0x7e8000000000n, mmapOffset: BigInt(GUARD + opts.splitAt) },
        ])
      : this.mem;
    closeSync(this.fd);
    const view = this.mem.view(0);
    view.fill(0);
    this.alloc = new BumpAllocator(BASE, this.regionSize);
    const common = { mem: view, base: BASE, size, alloc: this.alloc, eventIdx: opts.eventIdx ?? false };
    this.drv = layout === 'split' ? new SplitDriver({ ...common, startIdx: opts.startIdx }) : new PackedDriver(common);
    this.q = new Virtqueue({ layout, size, burst: opts.burst ?? 32 });
    this.q.setFeatures({ eventIdx: opts.eventIdx ?? false, indirect: opts.indirect ?? true });
    this.q.setMemory(this.table);
    this.q.setBase(layout === 'split' ? (opts.startIdx ?? 0) : (1 << 15) | (1 << 31));
    this.q.setRings(this.ringAddrs(), 'gpa');
    this.q.syncUsedFromRing();
  }

  ringAddrs(): { desc: bigint; driver: bigint; device: bigint } {
    if (this.drv instanceof SplitDriver) {
      return { desc: BigInt(this.drv.descAddr), driver: BigInt(this.drv.availAddr), device: BigInt(this.drv.usedAddr) };
    }
    return { desc: BigInt(this.drv.descAddr), driver: BigInt(this.drv.driverEventAddr), device: BigInt(this.drv.deviceEventAddr) };
  }

  /** Checks every segment of the last burst lies inside its region. */
  assertSegmentsInBounds(n: number): void {
    const b = this.q.b;
    for (let s = 0; s < b.firstSeg[n]; s++) {
      const r = this.mem.regions[b.segRegion[s]];
      if (r === undefined) throw new Error(`segment ${s}: region ${b.segRegion[s]} does not exist`);
      if (b.segOffset[s] < 0 || b.segOffset[s] + b.segLen[s] > Number(r.size) || b.segLen[s] === 0) {
        throw new Error(`segment ${s} [${b.segOffset[s]}, +${b.segLen[s]}) is outside region ${b.segRegion[s]}`);
      }
    }
  }

  /** The canary bytes around the region are intact. */
  canariesIntact(): boolean {
    const all = this.whole.view(0);
    for (let i = 0; i < GUARD; i++) if (all[i] !== CANARY) return false;
    for (let i = GUARD + this.regionSize; i < all.length; i++) if (all[i] !== CANARY) return false;
    return true;
  }

  /**
   * Plays the device: pops everything available, writes `fill(i)` into the writable
   * segments of each chain (as much as fits), pushes used with the bytes written.
   */
  serve(fill: (readable: Uint8Array) => Uint8Array = (r) => r.slice().reverse()): number {
    let total = 0;
    for (;;) {
      const n = this.q.pop();
      if (n < 0) throw this.q.error!;
      if (n === 0) return total;
      this.assertSegmentsInBounds(n);
      for (let i = 0; i < n; i++) {
        const views = this.q.views(i);
        const flags = this.q.segments(i).map((s) => s.writable);
        const readable = concat(views.filter((_, k) => !flags[k]));
        const out = fill(readable);
        let at = 0;
        views.forEach((v, k) => {
          if (!flags[k] || at >= out.length) return;
          const m = Math.min(v.length, out.length - at);
          v.set(out.subarray(at, at + m));
          at += m;
        });
        this.q.b.usedId[i] = this.q.b.head[i];
        this.q.b.usedLen[i] = at;
      }
      this.q.push(n);
      total += n;
    }
  }

  close(): void {
    this.q.detach();
    if (this.table !== this.mem) this.table.close();
    this.mem.close();
    this.whole.close();
  }
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}
