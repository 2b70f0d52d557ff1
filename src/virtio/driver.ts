// Driver-side virtqueue helper for tests.
//
// Lays out split (§2.7) and packed (§2.8) virtqueues in a plain Uint8Array that stands
// for guest memory, exactly as a virtio 1.2 driver would, so that device-side code can
// be exercised against hand-built rings. Pure TypeScript but for one native call: the
// full memory barrier before a kick decision (GuestMemory.fence), which JavaScript lacks.
//
// Memory model: `mem[0]` is guest-physical address `base`, so gpa X is `mem[X - base]`.
// All multi-byte fields are little-endian.

import { fullFence } from '../native/virtqueue.js';
import {
  AvailOffset,
  EventSuppressOffset,
  MAX_QUEUE_SIZE,
  PACKED_DESC_ALIGN,
  PACKED_DESC_SIZE,
  PACKED_EVENT_ALIGN,
  PACKED_EVENT_SUPPRESS_SIZE,
  PackedDescOffset,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  SPLIT_AVAIL_ALIGN,
  SPLIT_DESC_ALIGN,
  SPLIT_DESC_SIZE,
  SPLIT_USED_ALIGN,
  SPLIT_USED_ELEM_SIZE,
  SplitDescOffset,
  UsedElemOffset,
  UsedOffset,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_PACKED_EVENT_F_WRAP_CTR,
  VRING_USED_F_NO_NOTIFY,
  availEventOffset,
  isPowerOfTwo,
  isValidPackedSize,
  isValidSplitSize,
  packedDescRingSize,
  splitAvailSize,
  splitDescTableSize,
  splitUsedSize,
  usedEventOffset,
  vringNeedEvent,
} from './ring-layout.js';

const U64_LIMIT = 2 ** 64;

// ---------------------------------------------------------------------------
// Allocation
// ---------------------------------------------------------------------------

/** Bump allocator over the guest-physical range [base, base + size). Never frees individually. */
export class BumpAllocator {
  readonly base: number;
  readonly size: number;
  private cursor: number;

  constructor(base: number, size: number) {
    if (!Number.isSafeInteger(base) || base < 0) throw new RangeError(`allocator base ${base} is not a non-negative safe integer`);
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(base + size)) {
      throw new RangeError(`allocator size ${size} is invalid`);
    }
    this.base = base;
    this.size = size;
    this.cursor = base;
  }

  /** Returns the gpa of `len` fresh bytes aligned to `align` (a power of two). Throws when exhausted. */
  alloc(len: number, align = 16): number {
    if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`allocation length ${len} is invalid`);
    if (!isPowerOfTwo(align)) throw new RangeError(`alignment ${align} is not a power of two`);
    const addr = Math.ceil(this.cursor / align) * align;
    if (addr + len > this.base + this.size) {
      throw new RangeError(`BumpAllocator exhausted: need ${len} bytes aligned to ${align} at 0x${this.cursor.toString(16)}, ` + `${this.base + this.size - this.cursor} bytes left`);
    }
    this.cursor = addr + len;
    return addr;
  }

  /** Forget every allocation. */
  reset(): void {
    this.cursor = this.base;
  }

  /** gpa the next allocation starts from (before alignment). */
  get next(): number {
    return this.cursor;
  }

  get remaining(): number {
    return this.base + this.size - this.cursor;
  }
}

// ---------------------------------------------------------------------------
// Guest memory accessors
// ---------------------------------------------------------------------------

/** Little-endian accessors on a Uint8Array that represents guest memory starting at gpa `base`. */
export class GuestMemory {
  readonly bytes: Uint8Array;
  readonly base: number;
  private readonly dv: DataView;

  constructor(bytes: Uint8Array, base: number) {
    if (!Number.isSafeInteger(base) || base < 0) throw new RangeError(`memory base ${base} is not a non-negative safe integer`);
    this.bytes = bytes;
    this.base = base;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get end(): number {
    return this.base + this.bytes.length;
  }

  contains(gpa: number, len: number): boolean {
    const off = gpa - this.base;
    return Number.isInteger(off) && Number.isInteger(len) && len >= 0 && off >= 0 && off + len <= this.bytes.length;
  }

  /** Offset into `bytes` of gpa, throwing if [gpa, gpa + len) is not backed. */
  offset(gpa: number, len: number): number {
    if (!this.contains(gpa, len)) {
      throw new RangeError(`guest range [0x${gpa.toString(16)}, +${len}) is outside memory ` + `[0x${this.base.toString(16)}, 0x${this.end.toString(16)})`);
    }
    return gpa - this.base;
  }

  /** A copy of `len` bytes at gpa. */
  read(gpa: number, len: number): Uint8Array {
    const off = this.offset(gpa, len);
    return this.bytes.slice(off, off + len);
  }

  write(gpa: number, data: Uint8Array): void {
    const off = this.offset(gpa, data.length);
    this.bytes.set(data, off);
  }

  zero(gpa: number, len: number): void {
    const off = this.offset(gpa, len);
    this.bytes.fill(0, off, off + len);
  }

  u16(gpa: number): number {
    return this.dv.getUint16(this.offset(gpa, 2), true);
  }
  u32(gpa: number): number {
    return this.dv.getUint32(this.offset(gpa, 4), true);
  }
  u64(gpa: number): bigint {
    return this.dv.getBigUint64(this.offset(gpa, 8), true);
  }
  setU16(gpa: number, v: number): void {
    this.dv.setUint16(this.offset(gpa, 2), v & 0xffff, true);
  }
  setU32(gpa: number, v: number): void {
    this.dv.setUint32(this.offset(gpa, 4), v >>> 0, true);
  }
  setU64(gpa: number, v: number | bigint): void {
    this.dv.setBigUint64(this.offset(gpa, 8), toU64(v), true);
  }

  /**
   * A full memory barrier: every store above is visible to the device before any load
   * below (Linux virtio_mb(); §2.7.10 and §2.8.x "a full memory barrier"). Drivers call it
   * between publishing buffers and reading the device's notification suppression.
   */
  fence(): void {
    fullFence();
  }
}

function toU64(v: number | bigint): bigint {
  if (typeof v === 'bigint') return BigInt.asUintN(64, v);
  if (!Number.isInteger(v) || v < 0 || v >= U64_LIMIT) throw new RangeError(`${v} is not a u64`);
  return BigInt(v);
}

// ---------------------------------------------------------------------------
// Shared types
// ---------------------------------------------------------------------------

/** One element of a buffer (scatter/gather entry). */
export interface Segment {
  /** Element length in bytes (u32). */
  len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE) or device-readable. */
  writable: boolean;
  /**
   * Bytes copied into the element when it is added (at most `len`). Meant for readable
   * segments; for writable ones it simply pre-fills the buffer.
   */
  data?: Uint8Array;
  /**
   * Explicit gpa, used as-is without allocating (hostile tests): may be unbacked, overlap
   * the rings, etc. Any integer in [0, 2^64); `data` is only copied if given.
   */
  addr?: number;
}

/** Where one element of a chain lives. */
export interface BufferRef {
  addr: number;
  len: number;
  writable: boolean;
}

/** A chain returned by the device. */
export interface UsedEntry {
  /** Split: head descriptor index. Packed: buffer id. */
  id: number;
  /** Length the device reported (used elem len / used descriptor len). */
  len: number;
  /** The chain's elements, so the test can read what the device wrote. */
  buffers: BufferRef[];
}

export interface AddOptions {
  /** Put the elements in an indirect table and use a single ring descriptor with INDIRECT. */
  indirect?: boolean;
}

export interface PackedAddOptions extends AddOptions {
  /** Use this (free) buffer id instead of the next one from the free list. */
  id?: number;
}

export interface SplitDesc {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

export interface PackedDesc {
  addr: number | bigint;
  len: number;
  id: number;
  flags: number;
}

/** A descriptor as read back from memory; `addr` is exact below 2^53, `addrBig` always. */
export interface ReadSplitDesc {
  addr: number;
  addrBig: bigint;
  len: number;
  flags: number;
  next: number;
}

export interface ReadPackedDesc {
  addr: number;
  addrBig: bigint;
  len: number;
  id: number;
  flags: number;
}

export interface IndirectTable {
  addr: number;
  /** Number of 16-byte entries. */
  count: number;
}

interface ChainRecord {
  id: number;
  /** Ring descriptors occupied by the chain (split: descriptor indices; packed: ring slots). */
  descs: number[];
  buffers: BufferRef[];
  indirect?: IndirectTable;
  published: boolean;
}

function validateSegments(segments: Segment[]): void {
  if (!Array.isArray(segments) || segments.length === 0) throw new RangeError('a chain needs at least one segment');
  for (const s of segments) {
    if (!Number.isInteger(s.len) || s.len < 0 || s.len > 0xffffffff) throw new RangeError(`segment length ${s.len} is not a u32`);
    if (s.data && s.data.length > s.len) throw new RangeError(`segment data (${s.data.length} bytes) exceeds its length ${s.len}`);
    if (s.addr !== undefined && (!Number.isInteger(s.addr) || s.addr < 0 || s.addr >= U64_LIMIT)) {
      throw new RangeError(`segment addr ${s.addr} is not a u64`);
    }
  }
}

/** Allocate (and zero) or take the explicit address of each segment, copying `data` in. */
function placeSegments(memory: GuestMemory, alloc: BumpAllocator, segments: Segment[]): BufferRef[] {
  return segments.map((s) => {
    let addr: number;
    if (s.addr !== undefined) {
      addr = s.addr;
    } else {
      addr = alloc.alloc(s.len, 16);
      memory.zero(addr, s.len);
    }
    if (s.data && s.data.length > 0) memory.write(addr, s.data);
    return { addr, len: s.len, writable: s.writable };
  });
}

function gather(memory: GuestMemory, buffers: BufferRef[], len: number | undefined): Uint8Array {
  const writable = buffers.filter((b) => b.writable);
  const total = writable.reduce((n, b) => n + b.len, 0);
  const want = len === undefined ? total : Math.min(len, total);
  const out = new Uint8Array(want);
  let at = 0;
  for (const b of writable) {
    if (at >= want) break;
    const n = Math.min(b.len, want - at);
    out.set(memory.read(b.addr, n), at);
    at += n;
  }
  return out;
}

function cloneBuffers(buffers: BufferRef[]): BufferRef[] {
  return buffers.map((b) => ({ ...b }));
}

// ---------------------------------------------------------------------------
// Split virtqueue driver (§2.7)
// ---------------------------------------------------------------------------

export interface SplitDriverOptions {
  mem: Uint8Array;
  /** gpa of mem[0]. */
  base: number;
  /** Queue size: power of two, 1..32768. */
  size: number;
  alloc: BumpAllocator;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx?: boolean;
  /**
   * Initial avail/used index (u16, default 0). Both avail->idx and used->idx are written
   * with it; the device must be started with the same base (vhost-user SET_VRING_BASE).
   * Lets tests cross the 65535 -> 0 wrap without 65536 round trips.
   */
  startIdx?: number;
  /**
   * VIRTIO_F_IN_ORDER negotiated: the device may mark a batch of chains used with one used
   * ring entry carrying the last chain's head, and move used->idx by the batch (§2.7.9).
   */
  inOrder?: boolean;
}

export class SplitDriver {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  readonly memory: GuestMemory;
  readonly alloc: BumpAllocator;

  private readonly _descAddr: number;
  private readonly _availAddr: number;
  private readonly _usedAddr: number;

  /** Free descriptor indices; the next one handed out is at the end (stack). */
  private readonly freeDescs: number[] = [];
  /** Outstanding chains by head index. */
  private readonly chains = new Map<number, ChainRecord>();
  /** Chains already returned by used(), kept until one of their descriptors is reused. */
  private readonly completed = new Map<number, ChainRecord>();
  /** For each descriptor: head of the completed chain it belonged to, or -1. */
  private readonly completedOwner: Int32Array;
  /** Heads added but not yet published, in add order. */
  private pending: number[] = [];
  /** In order: the outstanding heads in the order they were made available. */
  private availOrder: number[] = [];

  /** Driver's copy of the next avail index (includes unpublished chains). */
  private availShadow: number;
  /** Value last written to avail->idx by publish(). */
  private publishedIdx: number;
  /** Next used index the driver will read. */
  private lastUsed: number;
  /** avail idx at the previous argument-less kickNeeded() call. */
  private kickMark: number;

  constructor(opts: SplitDriverOptions) {
    const { mem, base, size, alloc } = opts;
    if (!isValidSplitSize(size)) throw new RangeError(`split queue size ${size} must be a power of two in 1..${MAX_QUEUE_SIZE}`);
    const start = opts.startIdx ?? 0;
    if (!Number.isInteger(start) || start < 0 || start > 0xffff) throw new RangeError(`startIdx ${start} is not a u16`);
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.inOrder = opts.inOrder ?? false;
    this.memory = new GuestMemory(mem, base);
    this.alloc = alloc;

    this._descAddr = alloc.alloc(splitDescTableSize(size), SPLIT_DESC_ALIGN);
    this._availAddr = alloc.alloc(splitAvailSize(size), SPLIT_AVAIL_ALIGN);
    this._usedAddr = alloc.alloc(splitUsedSize(size), SPLIT_USED_ALIGN);
    this.memory.zero(this._descAddr, splitDescTableSize(size));
    this.memory.zero(this._availAddr, splitAvailSize(size));
    this.memory.zero(this._usedAddr, splitUsedSize(size));

    for (let i = size - 1; i >= 0; i--) this.freeDescs.push(i);
    this.completedOwner = new Int32Array(size).fill(-1);

    this.availShadow = start;
    this.publishedIdx = start;
    this.lastUsed = start;
    this.kickMark = start;
    this.memory.setU16(this._availAddr + AvailOffset.idx, start);
    this.memory.setU16(this._usedAddr + UsedOffset.idx, start);
  }

  // --- addresses ---------------------------------------------------------

  get descAddr(): number {
    return this._descAddr;
  }
  get availAddr(): number {
    return this._availAddr;
  }
  get usedAddr(): number {
    return this._usedAddr;
  }
  /** gpa of used_event (after avail->ring[size]). */
  get usedEventAddr(): number {
    return this._availAddr + usedEventOffset(this.size);
  }
  /** gpa of avail_event (after used->ring[size]). */
  get availEventAddr(): number {
    return this._usedAddr + availEventOffset(this.size);
  }

  // --- state ---------------------------------------------------------------

  /** Chains added (published or not) and not yet returned by used(). */
  get outstanding(): number {
    return this.chains.size;
  }
  /** Free descriptors in the table. */
  get numFree(): number {
    return this.freeDescs.length;
  }
  /** Driver's next avail index (u16), including chains not yet published. */
  get nextAvailIdx(): number {
    return this.availShadow;
  }
  /** Next used index the driver will read (u16). */
  get lastUsedIdx(): number {
    return this.lastUsed;
  }
  /** Raw avail->idx from memory. */
  get availIdx(): number {
    return this.memory.u16(this._availAddr + AvailOffset.idx);
  }
  /** Raw used->idx from memory. */
  get usedIdx(): number {
    return this.memory.u16(this._usedAddr + UsedOffset.idx);
  }
  /** Raw avail->flags. */
  get availFlags(): number {
    return this.memory.u16(this._availAddr + AvailOffset.flags);
  }

  // --- memory ----------------------------------------------------------------

  read(gpa: number, len: number): Uint8Array {
    return this.memory.read(gpa, len);
  }
  write(gpa: number, bytes: Uint8Array): void {
    this.memory.write(gpa, bytes);
  }

  // --- adding buffers --------------------------------------------------------

  /**
   * Add one chain and write its avail ring entry (not yet visible: call publish()).
   * Returns the head descriptor index, which is also the id the device returns.
   */
  add(segments: Segment[], opts: AddOptions = {}): number {
    validateSegments(segments);
    const indirect = opts.indirect ?? false;
    const need = indirect ? 1 : segments.length;
    if (need > this.freeDescs.length) {
      throw new RangeError(`split ring full: chain needs ${need} descriptors, ${this.freeDescs.length} free`);
    }
    const buffers = placeSegments(this.memory, this.alloc, segments);
    let table: IndirectTable | undefined;
    if (indirect) {
      const count = segments.length;
      const addr = this.alloc.alloc(count * SPLIT_DESC_SIZE, SPLIT_DESC_ALIGN);
      buffers.forEach((b, i) => {
        const last = i === count - 1;
        this.putDesc(addr + i * SPLIT_DESC_SIZE, {
          addr: b.addr,
          len: b.len,
          flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : i + 1,
        });
      });
      table = { addr, count };
    }

    const descs: number[] = [];
    for (let i = 0; i < need; i++) descs.push(this.freeDescs.pop()!);
    for (const d of descs) this.forgetCompleted(d);

    if (table) {
      this.writeDesc(descs[0], { addr: table.addr, len: table.count * SPLIT_DESC_SIZE, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    } else {
      descs.forEach((d, i) => {
        const last = i === need - 1;
        const b = buffers[i];
        this.writeDesc(d, {
          addr: b.addr,
          len: b.len,
          flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : descs[i + 1],
        });
      });
    }

    const head = descs[0];
    this.chains.set(head, { id: head, descs, buffers, indirect: table, published: false });
    this.setAvailRing(this.availShadow, head);
    this.availShadow = (this.availShadow + 1) & 0xffff;
    this.pending.push(head);
    if (this.inOrder) this.availOrder.push(head);
    return head;
  }

  /** Make every chain added since the last publish visible: writes avail->idx. Returns the new idx. */
  publish(): number {
    this.memory.setU16(this._availAddr + AvailOffset.idx, this.availShadow);
    this.publishedIdx = this.availShadow;
    for (const h of this.pending) {
      const rec = this.chains.get(h);
      if (rec) rec.published = true;
    }
    this.pending = [];
    return this.publishedIdx;
  }

  addAndPublish(segments: Segment[], opts: AddOptions = {}): number {
    const id = this.add(segments, opts);
    this.publish();
    return id;
  }

  // --- used buffers ------------------------------------------------------------

  /**
   * Read the used elements between the driver's last used index and used->idx, return
   * their descriptors to the free list and advance. In order, an entry whose id is a later
   * chain than the oldest outstanding one completes every chain up to it, one used index
   * each (the others with length 0). Throws (without consuming anything) if the device
   * returned more chains than are outstanding, an id that is not the head of a published
   * outstanding chain, or the same head twice.
   */
  used(): UsedEntry[] {
    const usedIdx = this.usedIdx;
    const count = (usedIdx - this.lastUsed) & 0xffff;
    let publishedOutstanding = 0;
    for (const c of this.chains.values()) if (c.published) publishedOutstanding++;
    if (count > publishedOutstanding) {
      throw new Error(`device moved used->idx from ${this.lastUsed} to ${usedIdx} (${count} entries) ` + `but only ${publishedOutstanding} published chains are outstanding`);
    }
    const out: UsedEntry[] = [];
    const seen = new Set<number>();
    const take = (id: number, len: number, idx: number): void => {
      const rec = this.chains.get(id);
      if (!rec || !rec.published || seen.has(id)) {
        throw new Error(`used ring entry ${idx} has id ${id}, which is not the head of a published outstanding chain`);
      }
      seen.add(id);
      out.push({ id, len, buffers: cloneBuffers(rec.buffers) });
    };
    let next = 0; // in order: the next outstanding head in availOrder
    while (out.length < count) {
      const idx = (this.lastUsed + out.length) & 0xffff;
      const { id, len } = this.readUsedElem(idx);
      if (!this.inOrder || !this.chains.has(id)) {
        take(id, len, idx);
        continue;
      }
      for (;;) {
        const head = this.availOrder[next++];
        if (head === undefined || out.length >= count) throw new Error(`used ring entry ${idx} has id ${id}, which no in-order batch of ${count - out.length} from there reaches`);
        take(head, head === id ? len : 0, idx);
        if (head === id) break;
      }
    }
    if (this.inOrder) this.availOrder = this.availOrder.filter((h) => !seen.has(h));
    for (const e of out) {
      const rec = this.chains.get(e.id)!;
      this.chains.delete(e.id);
      // Return the chain to the front of the free list, head first (as Linux detach_buf_split does).
      for (let i = rec.descs.length - 1; i >= 0; i--) this.freeDescs.push(rec.descs[i]);
      this.completed.set(e.id, rec);
      for (const d of rec.descs) this.completedOwner[d] = e.id;
    }
    this.lastUsed = usedIdx;
    return out;
  }

  /**
   * Elements of chain `id`: an outstanding chain, or one already returned by used() whose
   * descriptors have not been reused yet.
   */
  chainBuffers(id: number): BufferRef[] {
    const rec = this.chains.get(id) ?? this.completed.get(id);
    if (!rec) throw new Error(`no chain with head ${id}`);
    return cloneBuffers(rec.buffers);
  }

  /** Indirect table of chain `id`, if it was added with { indirect: true }. */
  indirectTable(id: number): IndirectTable | undefined {
    const rec = this.chains.get(id) ?? this.completed.get(id);
    if (!rec) throw new Error(`no chain with head ${id}`);
    return rec.indirect ? { ...rec.indirect } : undefined;
  }

  /** Concatenation of chain `id`'s writable elements, truncated to `len` bytes if given. */
  readWritten(id: number, len?: number): Uint8Array {
    return gather(this.memory, this.chainBuffers(id), len);
  }

  // --- notification suppression --------------------------------------------

  /** avail->flags = VRING_AVAIL_F_NO_INTERRUPT or 0. (With event idx the spec wants 0; not enforced.) */
  setNoInterrupt(on: boolean): void {
    this.memory.setU16(this._availAddr + AvailOffset.flags, on ? VRING_AVAIL_F_NO_INTERRUPT : 0);
  }

  /** Write used_event (le16 after avail->ring[size]). Only meaningful with event idx. */
  setUsedEvent(n: number): void {
    this.memory.setU16(this.usedEventAddr, n);
  }

  /** Read used_event back. */
  usedEvent(): number {
    return this.memory.u16(this.usedEventAddr);
  }

  /** avail_event (le16 after used->ring[size]), written by the device. */
  availEvent(): number {
    return this.memory.u16(this.availEventAddr);
  }

  /** used->flags, written by the device. */
  usedFlags(): number {
    return this.memory.u16(this._usedAddr + UsedOffset.flags);
  }

  /**
   * Whether the driver must notify the device after moving avail->idx from `oldAvailIdx`
   * to `newAvailIdx` (§2.7.13, Linux virtqueue_kick_prepare_split): with event idx,
   * vring_need_event(avail_event, new, old); otherwise !(used->flags & NO_NOTIFY).
   * Without arguments: old = avail idx at the previous argument-less call (or the start),
   * new = the last published avail idx; the mark then moves to new.
   */
  kickNeeded(oldAvailIdx?: number, newAvailIdx?: number): boolean {
    let oldIdx: number;
    let newIdx: number;
    if (oldAvailIdx === undefined && newAvailIdx === undefined) {
      oldIdx = this.kickMark;
      newIdx = this.publishedIdx;
      this.kickMark = newIdx;
    } else {
      oldIdx = (oldAvailIdx ?? this.kickMark) & 0xffff;
      newIdx = (newAvailIdx ?? this.publishedIdx) & 0xffff;
    }
    // The avail idx store (publish()) must be visible before avail_event / used->flags is
    // read: a device that wrote its threshold and then re-checked avail idx must not see the
    // old idx while we see its old threshold (both would skip the notification).
    this.memory.fence();
    if (this.eventIdx) return vringNeedEvent(this.availEvent(), newIdx, oldIdx);
    return (this.usedFlags() & VRING_USED_F_NO_NOTIFY) === 0;
  }

  // --- raw / hostile access ----------------------------------------------------

  /** Write descriptor table entry `i` verbatim (no bookkeeping). */
  writeDesc(i: number, d: SplitDesc): void {
    this.checkIndex(i);
    this.putDesc(this._descAddr + i * SPLIT_DESC_SIZE, d);
  }

  readDesc(i: number): ReadSplitDesc {
    this.checkIndex(i);
    const at = this._descAddr + i * SPLIT_DESC_SIZE;
    const addrBig = this.memory.u64(at + SplitDescOffset.addr);
    return {
      addr: Number(addrBig),
      addrBig,
      len: this.memory.u32(at + SplitDescOffset.len),
      flags: this.memory.u16(at + SplitDescOffset.flags),
      next: this.memory.u16(at + SplitDescOffset.next),
    };
  }

  /** Write avail->idx verbatim (memory only; the driver's own indices are untouched). */
  setAvailIdx(n: number): void {
    this.memory.setU16(this._availAddr + AvailOffset.idx, n);
  }

  /** Write avail->ring[pos % size] = head verbatim. `pos` may be a free-running avail index. */
  setAvailRing(pos: number, head: number): void {
    this.memory.setU16(this._availAddr + AvailOffset.ring + 2 * (pos & (this.size - 1)), head);
  }

  readAvailRing(pos: number): number {
    return this.memory.u16(this._availAddr + AvailOffset.ring + 2 * (pos & (this.size - 1)));
  }

  /** Read used->ring[pos % size]. */
  readUsedElem(pos: number): { id: number; len: number } {
    const at = this._usedAddr + UsedOffset.ring + SPLIT_USED_ELEM_SIZE * (pos & (this.size - 1));
    return { id: this.memory.u32(at + UsedElemOffset.id), len: this.memory.u32(at + UsedElemOffset.len) };
  }

  private putDesc(at: number, d: SplitDesc): void {
    this.memory.setU64(at + SplitDescOffset.addr, d.addr);
    this.memory.setU32(at + SplitDescOffset.len, d.len);
    this.memory.setU16(at + SplitDescOffset.flags, d.flags);
    this.memory.setU16(at + SplitDescOffset.next, d.next);
  }

  /** Descriptor `d` is being reused: drop the completed chain that owned it. */
  private forgetCompleted(d: number): void {
    const head = this.completedOwner[d];
    if (head < 0) return;
    const rec = this.completed.get(head);
    this.completed.delete(head);
    if (rec) for (const x of rec.descs) this.completedOwner[x] = -1;
  }

  private checkIndex(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.size) throw new RangeError(`descriptor index ${i} outside 0..${this.size - 1}`);
  }
}

// ---------------------------------------------------------------------------
// Packed virtqueue driver (§2.8)
// ---------------------------------------------------------------------------

export interface PackedDriverOptions {
  mem: Uint8Array;
  base: number;
  /** Queue size: any integer 1..32768. */
  size: number;
  alloc: BumpAllocator;
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx?: boolean;
  /**
   * VIRTIO_F_IN_ORDER negotiated: the device may mark a batch of buffers used with one used
   * descriptor at the batch's first slot, carrying the last buffer's id (§2.8.20).
   */
  inOrder?: boolean;
}

export interface PackedUsedEntry extends UsedEntry {
  /** Flags of the used descriptor (WRITE says whether `len` is meaningful). */
  flags: number;
}

interface PendingHead {
  id: number;
  slot: number;
  flags: number;
}

export class PackedDriver {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  readonly memory: GuestMemory;
  readonly alloc: BumpAllocator;

  private readonly _descAddr: number;
  private readonly _driverEventAddr: number;
  private readonly _deviceEventAddr: number;

  /** Free buffer ids; the next one handed out is at the end (stack). */
  private readonly freeIds: number[] = [];
  /** Free ring slots. */
  private freeSlots: number;
  private readonly chains = new Map<number, ChainRecord>();
  private readonly completed = new Map<number, ChainRecord>();
  /** Outstanding chains by the ring slot of their head (in order: where a batch starts). */
  private readonly headAt = new Map<number, number>();
  /** Head flags not yet written, in add order. */
  private pending: PendingHead[] = [];

  private nextAvail = 0;
  private availWrapCtr = 1;
  private nextUsed = 0;
  private usedWrapCtr = 1;
  /** Avail position/wrap as of the last publish(). */
  private publishedAvail = 0;
  private publishedWrap = 1;
  /** Ring descriptors published since the last argument-less kickNeeded() (Linux num_added). */
  private addedSinceKick = 0;

  constructor(opts: PackedDriverOptions) {
    const { mem, base, size, alloc } = opts;
    if (!isValidPackedSize(size)) throw new RangeError(`packed queue size ${size} must be an integer in 1..${MAX_QUEUE_SIZE}`);
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.inOrder = opts.inOrder ?? false;
    this.memory = new GuestMemory(mem, base);
    this.alloc = alloc;

    this._descAddr = alloc.alloc(packedDescRingSize(size), PACKED_DESC_ALIGN);
    this._driverEventAddr = alloc.alloc(PACKED_EVENT_SUPPRESS_SIZE, PACKED_EVENT_ALIGN);
    this._deviceEventAddr = alloc.alloc(PACKED_EVENT_SUPPRESS_SIZE, PACKED_EVENT_ALIGN);
    this.memory.zero(this._descAddr, packedDescRingSize(size));
    this.memory.zero(this._driverEventAddr, PACKED_EVENT_SUPPRESS_SIZE);
    this.memory.zero(this._deviceEventAddr, PACKED_EVENT_SUPPRESS_SIZE);

    for (let i = size - 1; i >= 0; i--) this.freeIds.push(i);
    this.freeSlots = size;
  }

  // --- addresses ---------------------------------------------------------

  get descAddr(): number {
    return this._descAddr;
  }
  /** Driver Event Suppression area (written by the driver). */
  get driverEventAddr(): number {
    return this._driverEventAddr;
  }
  /** Device Event Suppression area (written by the device). */
  get deviceEventAddr(): number {
    return this._deviceEventAddr;
  }

  // --- state ---------------------------------------------------------------

  get outstanding(): number {
    return this.chains.size;
  }
  /** Free ring slots. */
  get numFree(): number {
    return this.freeSlots;
  }
  /** Free buffer ids. */
  get numFreeIds(): number {
    return this.freeIds.length;
  }
  /** Next ring slot the driver will fill (includes unpublished chains). */
  get availIdx(): number {
    return this.nextAvail;
  }
  /** Driver ring wrap counter (0/1) for `availIdx`. */
  get availWrap(): number {
    return this.availWrapCtr;
  }
  /** Next ring slot the driver will look at for a used descriptor. */
  get usedIdx(): number {
    return this.nextUsed;
  }
  /** Used wrap counter (0/1) for `usedIdx`. */
  get usedWrap(): number {
    return this.usedWrapCtr;
  }
  /** Avail slot / wrap counter as of the last publish(): what the device can see. */
  get publishedAvailIdx(): number {
    return this.publishedAvail;
  }
  get publishedAvailWrap(): number {
    return this.publishedWrap;
  }

  // --- memory ----------------------------------------------------------------

  read(gpa: number, len: number): Uint8Array {
    return this.memory.read(gpa, len);
  }
  write(gpa: number, bytes: Uint8Array): void {
    this.memory.write(gpa, bytes);
  }

  // --- adding buffers --------------------------------------------------------

  /**
   * Write one chain into consecutive ring slots (wrapping). Every descriptor carries the
   * buffer id; all but the head get their flags immediately; the head's flags are staged
   * and written by publish(), so the device never sees a partial chain. Returns the id.
   */
  add(segments: Segment[], opts: PackedAddOptions = {}): number {
    validateSegments(segments);
    const indirect = opts.indirect ?? false;
    const need = indirect ? 1 : segments.length;
    if (need > this.freeSlots) throw new RangeError(`packed ring full: chain needs ${need} descriptors, ${this.freeSlots} free`);
    let idPos: number;
    if (opts.id !== undefined) {
      idPos = this.freeIds.indexOf(opts.id);
      if (idPos < 0) throw new RangeError(`buffer id ${opts.id} is not free`);
    } else {
      if (this.freeIds.length === 0) throw new RangeError('no free buffer ids');
      idPos = this.freeIds.length - 1;
    }

    const buffers = placeSegments(this.memory, this.alloc, segments);
    let table: IndirectTable | undefined;
    if (indirect) {
      const count = segments.length;
      const addr = this.alloc.alloc(count * PACKED_DESC_SIZE, PACKED_DESC_ALIGN);
      buffers.forEach((b, i) => {
        // Only WRITE is valid inside an indirect table; the id is reserved (written as 0).
        this.putDesc(addr + i * PACKED_DESC_SIZE, { addr: b.addr, len: b.len, id: 0, flags: b.writable ? VIRTQ_DESC_F_WRITE : 0 });
      });
      table = { addr, count };
    }

    const id = this.freeIds.splice(idPos, 1)[0];
    this.completed.delete(id);

    const slots: number[] = [];
    for (let i = 0; i < need; i++) {
      const slot = this.nextAvail;
      const wrapBits = this.availWrapCtr ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
      let desc: PackedDesc;
      if (table) {
        desc = { addr: table.addr, len: table.count * PACKED_DESC_SIZE, id, flags: VIRTQ_DESC_F_INDIRECT | wrapBits };
      } else {
        const b = buffers[i];
        const flags = (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (i < need - 1 ? VIRTQ_DESC_F_NEXT : 0) | wrapBits;
        desc = { addr: b.addr, len: b.len, id, flags };
      }
      const at = this.slotAddr(slot);
      this.memory.setU64(at + PackedDescOffset.addr, desc.addr);
      this.memory.setU32(at + PackedDescOffset.len, desc.len);
      this.memory.setU16(at + PackedDescOffset.id, desc.id);
      if (i === 0) this.pending.push({ id, slot, flags: desc.flags });
      else this.memory.setU16(at + PackedDescOffset.flags, desc.flags);
      slots.push(slot);
      if (++this.nextAvail >= this.size) {
        this.nextAvail = 0;
        this.availWrapCtr ^= 1;
      }
    }
    this.freeSlots -= need;
    this.chains.set(id, { id, descs: slots, buffers, indirect: table, published: false });
    this.headAt.set(slots[0], id);
    return id;
  }

  /** Write the staged head flags of every chain added since the last publish, in add order. */
  publish(): void {
    for (const p of this.pending) {
      this.memory.setU16(this.slotAddr(p.slot) + PackedDescOffset.flags, p.flags);
      const rec = this.chains.get(p.id);
      if (rec) {
        rec.published = true;
        this.addedSinceKick += rec.descs.length;
      }
    }
    this.pending = [];
    this.publishedAvail = this.nextAvail;
    this.publishedWrap = this.availWrapCtr;
  }

  addAndPublish(segments: Segment[], opts: PackedAddOptions = {}): number {
    const id = this.add(segments, opts);
    this.publish();
    return id;
  }

  // --- used buffers ------------------------------------------------------------

  /**
   * Read used descriptors at the driver's used position while AVAIL == USED == used wrap
   * counter; each one advances the position by the descriptor count of the chain whose id
   * it carries (wrapping and flipping the counter) and frees that id. In order, a used
   * descriptor whose id is a later chain than the one at its slot completes every chain
   * from there up to that one (the others with length 0). Throws (without consuming
   * anything) on an id that is not a published outstanding chain.
   */
  used(): PackedUsedEntry[] {
    const out: PackedUsedEntry[] = [];
    const seen = new Set<number>();
    let pos = this.nextUsed;
    let wrap = this.usedWrapCtr;
    let limit = 0;
    for (const c of this.chains.values()) if (c.published) limit++;
    const take = (id: number, len: number, flags: number, slot: number): void => {
      const rec = this.chains.get(id);
      if (!rec || !rec.published || seen.has(id)) {
        throw new Error(`used descriptor at slot ${slot} has id ${id}, which is not a published outstanding buffer`);
      }
      seen.add(id);
      out.push({ id, len, flags, buffers: cloneBuffers(rec.buffers) });
      pos += rec.descs.length;
      if (pos >= this.size) {
        pos -= this.size;
        wrap ^= 1;
      }
    };
    while (out.length < limit) {
      const slot = pos;
      const at = this.slotAddr(slot);
      const flags = this.memory.u16(at + PackedDescOffset.flags);
      const a = flags & VIRTQ_DESC_F_AVAIL ? 1 : 0;
      const u = flags & VIRTQ_DESC_F_USED ? 1 : 0;
      if (a !== u || u !== wrap) break;
      const id = this.memory.u16(at + PackedDescOffset.id);
      const len = this.memory.u32(at + PackedDescOffset.len);
      if (this.inOrder && this.chains.has(id)) {
        // The chains from this slot on, in ring order, up to the one with this id.
        for (;;) {
          const head = this.headAt.get(pos);
          if (head === undefined || out.length >= limit) throw new Error(`used descriptor at slot ${slot} has id ${id}, which no in-order batch from that slot reaches`);
          take(head, head === id ? len : 0, flags, slot);
          if (head === id) break;
        }
      } else {
        take(id, len, flags, slot);
      }
    }
    for (const e of out) {
      const rec = this.chains.get(e.id)!;
      this.headAt.delete(rec.descs[0]);
      this.chains.delete(e.id);
      this.freeSlots += rec.descs.length;
      this.freeIds.push(e.id);
      this.completed.set(e.id, rec);
    }
    this.nextUsed = pos;
    this.usedWrapCtr = wrap;
    return out;
  }

  /** Elements of buffer `id`: outstanding, or returned by used() and not reused since. */
  chainBuffers(id: number): BufferRef[] {
    const rec = this.chains.get(id) ?? this.completed.get(id);
    if (!rec) throw new Error(`no buffer with id ${id}`);
    return cloneBuffers(rec.buffers);
  }

  /** Ring slots occupied by buffer `id` (one slot for an indirect buffer). */
  chainSlots(id: number): number[] {
    const rec = this.chains.get(id) ?? this.completed.get(id);
    if (!rec) throw new Error(`no buffer with id ${id}`);
    return [...rec.descs];
  }

  indirectTable(id: number): IndirectTable | undefined {
    const rec = this.chains.get(id) ?? this.completed.get(id);
    if (!rec) throw new Error(`no buffer with id ${id}`);
    return rec.indirect ? { ...rec.indirect } : undefined;
  }

  readWritten(id: number, len?: number): Uint8Array {
    return gather(this.memory, this.chainBuffers(id), len);
  }

  // --- event suppression (§2.8.10) ----------------------------------------

  /** Write the driver area: off_wrap (bits 0-14 offset, bit 15 wrap) first, then flags. */
  setDriverEvent(flags: number, offWrap = 0): void {
    this.memory.setU16(this._driverEventAddr + EventSuppressOffset.offWrap, offWrap);
    this.memory.setU16(this._driverEventAddr + EventSuppressOffset.flags, flags);
  }

  driverEvent(): { offWrap: number; flags: number } {
    return {
      offWrap: this.memory.u16(this._driverEventAddr + EventSuppressOffset.offWrap),
      flags: this.memory.u16(this._driverEventAddr + EventSuppressOffset.flags),
    };
  }

  /** Read the device area (written by the device). */
  deviceEvent(): { offWrap: number; flags: number } {
    return {
      offWrap: this.memory.u16(this._deviceEventAddr + EventSuppressOffset.offWrap),
      flags: this.memory.u16(this._deviceEventAddr + EventSuppressOffset.flags),
    };
  }

  /**
   * Whether the driver must notify the device, as Linux virtqueue_kick_prepare_packed:
   * flags DISABLE -> false; flags other than DESC -> true; DESC -> vring_need_event on the
   * descriptor offset, shifted back by `size` if its wrap counter differs from the driver's
   * (published) wrap counter. `numAdded` = ring descriptors made available since the previous
   * decision; by default the count published since the previous argument-less call (which
   * then resets it). Like Linux, the DESC case is evaluated even without event idx.
   */
  kickNeeded(numAdded?: number): boolean {
    let added: number;
    if (numAdded === undefined) {
      added = this.addedSinceKick;
      this.addedSinceKick = 0;
    } else {
      added = numAdded;
    }
    const newIdx = this.publishedAvail;
    const oldIdx = (newIdx - added) & 0xffff;
    // The descriptor flags stores (publish()) before the device event suppression loads.
    this.memory.fence();
    const { offWrap, flags } = this.deviceEvent();
    if (flags !== RING_EVENT_FLAGS_DESC) return flags !== RING_EVENT_FLAGS_DISABLE;
    const wrap = (offWrap >> VRING_PACKED_EVENT_F_WRAP_CTR) & 1;
    let eventIdx = offWrap & ~(1 << VRING_PACKED_EVENT_F_WRAP_CTR) & 0xffff;
    if (wrap !== this.publishedWrap) eventIdx = (eventIdx - this.size) & 0xffff;
    return vringNeedEvent(eventIdx, newIdx, oldIdx);
  }

  // --- raw / hostile access ----------------------------------------------------

  /** Write ring slot `i` verbatim, flags included (no bookkeeping). */
  writeDesc(i: number, d: PackedDesc): void {
    this.checkIndex(i);
    this.putDesc(this.slotAddr(i), d);
  }

  readDesc(i: number): ReadPackedDesc {
    this.checkIndex(i);
    const at = this.slotAddr(i);
    const addrBig = this.memory.u64(at + PackedDescOffset.addr);
    return {
      addr: Number(addrBig),
      addrBig,
      len: this.memory.u32(at + PackedDescOffset.len),
      id: this.memory.u16(at + PackedDescOffset.id),
      flags: this.memory.u16(at + PackedDescOffset.flags),
    };
  }

  private slotAddr(i: number): number {
    return this._descAddr + i * PACKED_DESC_SIZE;
  }

  private putDesc(at: number, d: PackedDesc): void {
    this.memory.setU64(at + PackedDescOffset.addr, d.addr);
    this.memory.setU32(at + PackedDescOffset.len, d.len);
    this.memory.setU16(at + PackedDescOffset.id, d.id);
    this.memory.setU16(at + PackedDescOffset.flags, d.flags);
  }

  private checkIndex(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.size) throw new RangeError(`ring slot ${i} outside 0..${this.size - 1}`);
  }
}
