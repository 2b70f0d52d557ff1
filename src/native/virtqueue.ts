// Device side of a virtqueue, split or packed, over the native ring engine
// (native/ring/split_ring.cc, packed_ring.cc). A burst is exchanged through typed
// arrays allocated once per queue: pop() fills the chain and segment arrays, push()
// reads the used arrays. No object is created per chain or per descriptor.
import { addon } from './binding.js';
import type { GuestMemory } from './guest-memory.js';

/** Why a queue stopped: each hostile-ring case has its own code. */
export const VringErrorCode = {
  NOT_READY: 1,
  RING_ADDR: 2,
  AVAIL_IDX_JUMP: 3,
  HEAD_OUT_OF_RANGE: 4,
  NEXT_OUT_OF_RANGE: 5,
  DESC_LOOP: 6,
  CHAIN_TOO_LONG: 7,
  DESC_ADDR: 8,
  WRITE_BEFORE_READ: 9,
  INDIRECT_NOT_NEGOTIATED: 10,
  INDIRECT_NESTED: 11,
  INDIRECT_LEN: 12,
  INDIRECT_ADDR: 13,
  INDIRECT_NEXT: 14,
  ID_OUT_OF_RANGE: 15,
  ID_IN_FLIGHT: 16,
  BASE_OUT_OF_RANGE: 17,
  INFLIGHT_CORRUPT: 18,
  GUEST_MEMORY_LOST: 19,
} as const;
export type VringErrorName = keyof typeof VringErrorCode;

/** A queue that the driver broke: which rule, and the details (indices, addresses). */
export class VringError extends Error {
  constructor(
    readonly code: VringErrorName,
    readonly detail: string,
  ) {
    super(detail);
    this.name = 'VringError';
  }
}

export type RingLayout = 'split' | 'packed';

export type RingRecordState = 'none' | 'fresh' | 'recovered' | 'out-of-order';
const RING_RECORD_STATES: readonly RingRecordState[] = ['none', 'fresh', 'recovered', 'out-of-order'];
/** Bytes of one packed queue's ring position record (native/ring/packed_ring.h), 64-aligned. */
export function ringRecordBytes(queueSize: number): number {
  return Math.ceil((64 + 8 * queueSize) / 64) * 64;
}

export interface VirtqueueOptions {
  layout: RingLayout;
  /** claim the queue another thread parked under this token (layout and size must match it) */
  token?: number;
  /** queue size (split: a power of 2 up to 32768; packed: 1..32768) */
  size: number;
  /** most chains per pop / used elements per push (default 32, DPDK's burst) */
  burst?: number;
  /** segment capacity of one burst (default and minimum: MAX_CHAIN_SEGS) */
  maxSegs?: number;
}

interface RawQueue {
  setFeatures(eventIdx: boolean, indirect: boolean): void;
  setMemory(mem: unknown): void;
  setRings(desc: bigint, driver: bigint, device: bigint, guestPhysical: boolean): void;
  detach(): void;
  setDirtyLog(log: unknown, usedGpa: bigint | null): void;
  setKeepWritten(on: boolean): void;
  setInflight(mem: unknown, offset: bigint, len: bigint): boolean;
  resubmitPending(): number;
  setRingRecord(mem: unknown, offset: bigint, len: bigint, frontendBase: number): boolean;
  forgetRingRecord(): void;
  ringRecordState(): number;
  getBase(): number;
  setBase(base: number): void;
  syncUsedFromRing(): void;
  setCallFd(fd: number): void;
  pop(max?: number): number;
  push(n: number): number;
  unpop(ids: number[]): void;
  signal(): void;
  setNotify(enable: boolean): boolean;
  hasAvail(): boolean;
  availCount(): number;
  error(): number;
  errorDetail(): string | null;
  inFlight(): number;
  park(): number;
  /** this thread's number for the queue (see UnwrapQueue in bind_queue.cc) */
  readonly slot: number;
  readonly packed: boolean;
  readonly size: number;
}
interface RawQueueAddon {
  Virtqueue: new (packedOrToken: boolean | number, size: number, arrays: BurstArrays, maxChains: number, maxSegs: number) => RawQueue;
  vqErrorNames(): Record<number, string>;
  maxChainSegs: number;
  fullFence(): void;
}
const raw = addon as RawQueueAddon;

/**
 * A full memory barrier (C++ __atomic_thread_fence(SEQ_CST)): the guest-memory stores made
 * before the call are visible to other threads before any load after it. A driver calls it
 * between publishing avail idx / descriptor flags and reading the device's kick threshold
 * (avail_event, used->flags, the device event suppression area), as Linux virtio_mb() does:
 * without it the load can pass the store and both sides can decide not to notify.
 */
export const fullFence: () => void = raw.fullFence;

/** Most segments one chain may expand to; a longer chain breaks the queue (CHAIN_TOO_LONG). */
export const MAX_CHAIN_SEGS: number = raw.maxChainSegs;

// The TypeScript and C++ tables of error codes must agree.
{
  const names = raw.vqErrorNames();
  for (const [name, code] of Object.entries(VringErrorCode)) {
    if (names[code] !== name) throw new Error(`vhostkit: native error ${code} is ${names[code]}, expected ${name}`);
  }
}
const nameOfCode = new Map<number, VringErrorName>(
  Object.entries(VringErrorCode).map(([k, v]) => [v, k as VringErrorName]),
);

/** The arrays a burst travels in. Chain i owns segments firstSeg[i] .. firstSeg[i+1]-1. */
export interface BurstArrays {
  /** split: head descriptor index; packed: buffer id. Give it back in usedId. */
  head: Uint16Array;
  firstSeg: Uint32Array;
  /** device-readable bytes of the chain */
  readLen: Uint32Array;
  /** device-writable bytes of the chain */
  writeLen: Uint32Array;
  /** region index in the queue's GuestMemory */
  segRegion: Uint32Array;
  /** byte offset inside that region */
  segOffset: Float64Array;
  segLen: Uint32Array;
  /** bit 0: device-writable */
  segFlags: Uint8Array;
  usedId: Uint16Array;
  usedLen: Uint32Array;
}

export class Virtqueue {
  readonly layout: RingLayout;
  readonly size: number;
  readonly burst: number;
  /** Burst arrays, overwritten by every pop(): read a chain before the next pop. */
  readonly b: BurstArrays;
  private readonly q: RawQueue;
  /** @internal the native object */
  get native(): unknown {
    return this.q;
  }
  /** @internal how other native calls (net.ts, host-io.ts, blk.ts) name this queue: its slot on this thread */
  get slot(): number {
    return this.q.slot;
  }
  private mem: GuestMemory | null = null;

  constructor(opts: VirtqueueOptions) {
    this.layout = opts.layout;
    this.size = opts.size;
    this.burst = opts.burst ?? 32;
    const maxSegs = Math.max(opts.maxSegs ?? MAX_CHAIN_SEGS, MAX_CHAIN_SEGS);
    this.b = {
      head: new Uint16Array(this.burst),
      firstSeg: new Uint32Array(this.burst + 1),
      readLen: new Uint32Array(this.burst),
      writeLen: new Uint32Array(this.burst),
      segRegion: new Uint32Array(maxSegs),
      segOffset: new Float64Array(maxSegs),
      segLen: new Uint32Array(maxSegs),
      segFlags: new Uint8Array(maxSegs),
      usedId: new Uint16Array(this.burst),
      usedLen: new Uint32Array(this.burst),
    };
    this.q = new raw.Virtqueue(opts.token ?? opts.layout === 'packed', opts.size, this.b, this.burst, maxSegs);
    if (opts.token !== undefined && (this.q.packed !== (opts.layout === 'packed') || this.q.size !== opts.size)) {
      throw new Error(`claimed queue is ${this.q.packed ? 'packed' : 'split'} of size ${this.q.size}, expected ${opts.layout} of ${opts.size}`);
    }
  }

  /** Ring features the driver negotiated: VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC. */
  setFeatures(f: { eventIdx: boolean; indirect: boolean }): void {
    this.q.setFeatures(f.eventIdx, f.indirect);
  }

  /** The memory the rings and buffers live in. Ring addresses must be set again after. */
  setMemory(mem: GuestMemory | null): void {
    this.q.setMemory(mem === null ? null : mem.raw);
    this.mem = mem;
  }

  get memory(): GuestMemory | null {
    return this.mem;
  }

  /**
   * The GuestMemory this thread uses for views(), when the native queue's memory was set
   * by another thread (a data-plane worker claiming a running queue).
   */
  setMemoryView(mem: GuestMemory | null): void {
    this.mem = mem;
  }

  /**
   * Ring addresses: descriptor table, avail ring / driver area, used ring / device area.
   * vhost-user gives frontend-virtual addresses ('uva'); a driver in the same process
   * may give guest-physical ones ('gpa'). Throws VringError RING_ADDR if not mapped,
   * misaligned or too small.
   */
  setRings(addrs: { desc: bigint; driver: bigint; device: bigint }, space: 'uva' | 'gpa' = 'uva'): void {
    try {
      this.q.setRings(addrs.desc, addrs.driver, addrs.device, space === 'gpa');
    } catch (e) {
      throw toVringError(e);
    }
  }

  /**
   * Dirty logging for live migration: with a log, every push marks the bytes the device
   * reported writing (the first `len` bytes of the chain's writable buffers) and, when
   * `usedGpa` (the used ring's log_guest_addr) is given, the ring bytes it wrote.
   * Pass null to stop logging. `log` is a vhost-user DirtyLog's raw handle.
   */
  setDirtyLog(log: { raw: unknown } | unknown | null, usedGpa: bigint | null): void {
    this.q.setDirtyLog(log, usedGpa);
  }

  /**
   * For a device that holds chains across calls (virtio-blk): each chain's writable ranges
   * are kept from its pop, so that one completed after dirty logging started still marks
   * the pages it wrote.
   */
  keepWrittenRanges(on: boolean): void {
    this.q.setKeepWritten(on);
  }

  /**
   * Hands the native queue to another thread: there, `new Virtqueue({ layout, size,
   * token })` claims it (with its own burst arrays). Only one thread may use it at a time.
   */
  park(): number {
    return this.q.park();
  }

  /**
   * Inflight I/O tracking (vhost-user GET/SET_INFLIGHT_FD): this queue's area, `len` bytes
   * at `offset` of the inflight memory (region 0 of `mem`). Set before syncUsedFromRing():
   * chains a previous backend had in flight are then popped again first (packed rings
   * also take their position from the area). Returns false if the area is too small.
   */
  setInflight(mem: GuestMemory | null, offset = 0, len = 0): boolean {
    return this.q.setInflight(mem === null ? null : mem.raw, BigInt(offset), BigInt(len));
  }

  /**
   * Ring position record (packed rings of devices that complete chains in pop order, when
   * the frontend keeps no inflight area): this queue's `len` bytes at `offset` of `mem`
   * (region 0; a file that outlives the process, see RingRecordFile). QEMU cannot restore
   * a packed ring's position after its backend died; the record can. `frontendBase` is the
   * frontend's last SET_VRING_BASE. Set before syncUsedFromRing(), which then continues
   * from the record if a previous backend left it for these rings and this base, and
   * starts a fresh one otherwise. Returns false if the area is too small or the layout
   * keeps no record (split). Bytes one queue needs: ringRecordBytes(size).
   */
  setRingRecord(mem: GuestMemory | null, offset = 0, len = 0, frontendBase = 0): boolean {
    return this.q.setRingRecord(mem === null ? null : mem.raw, BigInt(offset), BigInt(len), frontendBase >>> 0);
  }

  /** GET_VRING_BASE answered: the frontend knows the ring state, the record is invalidated. */
  forgetRingRecord(): void {
    this.q.forgetRingRecord();
  }

  /**
   * 'none': no record; 'fresh': started one; 'recovered': the ring position came from a
   * previous backend's record; 'out-of-order': the device completed chains out of pop
   * order, so the record was dropped (a restart cannot use it).
   */
  get ringRecordState(): RingRecordState {
    return RING_RECORD_STATES[this.q.ringRecordState()] ?? 'none';
  }

  /** Chains recovered from the inflight area that pop() has not returned yet. */
  get resubmitPending(): number {
    return this.q.resubmitPending();
  }

  /** Forgets the rings and the memory (the queue stops). */
  detach(): void {
    this.q.detach();
    this.mem = null;
  }

  get ready(): boolean {
    return this.mem !== null;
  }

  /** GET_VRING_BASE value (split: last avail idx; packed: avail idx|wrap<<15|used idx<<16|wrap<<31). */
  getBase(): number {
    return this.q.getBase();
  }

  /** SET_VRING_BASE; also clears a latched error. Throws VringError BASE_OUT_OF_RANGE. */
  setBase(base: number): void {
    try {
      this.q.setBase(base >>> 0);
    } catch (e) {
      throw toVringError(e);
    }
  }

  /**
   * On start. Split: continue from the used index found in the ring (after a reconnect).
   * With an inflight area (setInflight), recover what a previous backend had in flight;
   * packed rings also take their ring position from the area.
   */
  syncUsedFromRing(): void {
    this.q.syncUsedFromRing();
  }

  /** The fd push() writes when the driver wants a notification (-1: none; push() still reports it). */
  setCallFd(fd: number): void {
    this.q.setCallFd(fd);
  }

  /**
   * Pops up to `max` (default: the burst) available chains into `b`. Returns how many,
   * or a negative VringErrorCode once the queue is broken (see `error`).
   */
  pop(max?: number): number {
    return max === undefined ? this.q.pop() : this.q.pop(max);
  }

  /**
   * Gives back the last chains popped (ids in pop order) as if they had not been popped:
   * the next pop() returns them again. Ids not in flight are ignored.
   */
  unpop(ids: number[]): void {
    this.q.unpop(ids);
  }

  /**
   * Pushes `n` used elements from b.usedId / b.usedLen. Returns true if the driver asked
   * to be notified (the call fd, if set, was written). Throws if an id is not in flight.
   */
  push(n: number): boolean {
    const r = this.q.push(n);
    if (r < 0) throw new RangeError('push: an id is not in flight (or pushed twice), or the rings are not set');
    return r === 1;
  }

  /**
   * Gives back the whole last popped burst (`n` chains, in pop order) with used length 0:
   * what a device that only reads (a sink, a switch's TX side) returns. No allocation.
   */
  pushPopped(n: number): boolean {
    const b = this.b;
    for (let i = 0; i < n; i++) {
      b.usedId[i] = b.head[i];
      b.usedLen[i] = 0;
    }
    return this.push(n);
  }

  /** Writes the call fd unconditionally. */
  signal(): void {
    this.q.signal();
  }

  /** Kicks from the driver on or off. Returns true if chains are already waiting. */
  setNotify(enable: boolean): boolean {
    return this.q.setNotify(enable);
  }

  hasAvail(): boolean {
    return this.q.hasAvail();
  }

  /** Entries (split) / descriptors (packed) the driver made available and the device has not taken: how full the ring is. */
  availCount(): number {
    return this.q.availCount();
  }

  /** Chains popped and not yet pushed. */
  get inFlight(): number {
    return this.q.inFlight();
  }

  /** Why the queue is broken, or null. */
  get error(): VringError | null {
    const code = this.q.error();
    if (code === 0) return null;
    return new VringError(nameOfCode.get(code) ?? 'NOT_READY', this.q.errorDetail() ?? '');
  }

  // Helpers for code that is not on the hot path (tests, control plane, examples).

  /** Segments of chain i of the last burst. */
  segments(i: number): Array<{ region: number; offset: number; len: number; writable: boolean }> {
    const out = [];
    for (let s = this.b.firstSeg[i]; s < this.b.firstSeg[i + 1]; s++) {
      out.push({ region: this.b.segRegion[s], offset: this.b.segOffset[s], len: this.b.segLen[s], writable: (this.b.segFlags[s] & 1) === 1 });
    }
    return out;
  }

  /** Zero-copy views of chain i's segments (one Uint8Array per segment). */
  views(i: number): Uint8Array[] {
    if (this.mem === null) throw new Error('queue has no memory');
    const out: Uint8Array[] = [];
    for (let s = this.b.firstSeg[i]; s < this.b.firstSeg[i + 1]; s++) {
      const v = this.mem.view(this.b.segRegion[s]);
      out.push(v.subarray(this.b.segOffset[s], this.b.segOffset[s] + this.b.segLen[s]));
    }
    return out;
  }
}

function toVringError(e: unknown): unknown {
  const code = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  if (typeof code === 'string' && code in VringErrorCode) {
    return new VringError(code as VringErrorName, (e as Error).message);
  }
  return e;
}
