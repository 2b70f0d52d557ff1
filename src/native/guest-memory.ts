// Guest memory as the backend sees it: the frontend's regions mapped MAP_SHARED, with
// overflow-safe translation of guest-physical addresses. Thin typed layer over the
// native MemTable (native/memory/memory.cc, bind_memory.cc).
import { readSync } from 'node:fs';
import { addon } from './binding.js';
import { FdWatcher } from './unix-socket.js';

/** A region as the frontend describes it (vhost-user SET_MEM_TABLE / ADD_MEM_REG). */
export interface RegionSpec {
  /** fd to map; stays owned by the caller (close it after mapping). */
  fd: number;
  /** guest physical address of the first byte */
  gpa: bigint;
  size: bigint;
  /** frontend (e.g. QEMU) virtual address of the first byte */
  uva: bigint;
  /** offset of the region in the fd */
  mmapOffset: bigint;
}

export interface RegionInfo {
  gpa: bigint;
  size: bigint;
  uva: bigint;
  mmapOffset: bigint;
  /** whether the fd is sealed against shrinking (an unsealed fd could be truncated under us) */
  sealed: boolean;
  /** whether the SIGBUS guard covers the mapping (every unsealed region, see guestFaultGuard) */
  guarded: boolean;
}

export interface Translation {
  region: number;
  /** byte offset inside the region */
  offset: number;
  /** bytes contiguous from there inside the region */
  contiguous: number;
}

interface RawMemTable {
  regions(): RegionInfo[];
  buffer(i: number): ArrayBuffer;
  translate(gpa: bigint, len: bigint): Translation | null;
  translateUva(uva: bigint, len: bigint): { region: number; offset: number } | null;
  withRegion(r: RegionSpec): RawMemTable;
  withoutRegion(gpa: bigint, size: bigint, uva: bigint): RawMemTable;
  park(): number;
  lostRegions(): number[];
  close(): void;
}
/** The SIGBUS guard of guest memory (native/memory/guest_fault.h). */
export interface GuestFaultGuard {
  /** the handler is installed (false under a sanitizer that keeps SIGBUS: see scripts/test.mjs) */
  installed: boolean;
  error: string | null;
  /** eventfd written after each recovered fault */
  fd: number;
  /** faults recovered so far in this process */
  epoch: number;
}
interface RawMemoryAddon {
  MemTable: new (regions: RegionSpec[] | number) => RawMemTable;
  memfdCreate(name: string, size: bigint, sealing?: boolean): number;
  maxRegions: number;
  guestFaultGuard(): GuestFaultGuard;
}
const raw = addon as RawMemoryAddon;

/** Most regions one table holds (vhost-user GET_MAX_MEM_SLOTS). */
export const MAX_REGIONS: number = raw.maxRegions;

/**
 * Creates a memfd of `size` bytes (CLOEXEC, sealing allowed unless `sealing` is false: then
 * whoever holds it can shrink it under a mapping). The caller owns the fd.
 */
export function createMemfd(name: string, size: number | bigint, sealing = true): number {
  return raw.memfdCreate(name, BigInt(size), sealing);
}

/** State of the process's SIGBUS guard over guest memory. */
export function guestFaultGuard(): GuestFaultGuard {
  return raw.guestFaultGuard();
}

// One watcher of the guard's eventfd for the whole thread, running while anyone listens.
const faultListeners = new Set<() => void>();
let faultWatcher: FdWatcher | null = null;
const drain = Buffer.alloc(8);

/**
 * Calls `listener` (on this thread's event loop) after guest memory of this process lost
 * pages to a truncated file: the owner of a memory table then asks it `lostRegions()`.
 * Returns the function that stops listening. Meant for the thread that owns the sessions
 * (one thread drains the eventfd).
 */
export function onGuestMemoryFault(listener: () => void): () => void {
  faultListeners.add(listener);
  if (faultWatcher === null) {
    const g = raw.guestFaultGuard();
    if (g.fd >= 0) {
      faultWatcher = new FdWatcher(g.fd, () => {
        try {
          readSync(g.fd, drain, 0, 8, null);
        } catch {
          // EAGAIN: another reader drained it
        }
        for (const l of [...faultListeners]) l();
      });
      faultWatcher.start(true, false);
    }
  }
  return () => {
    faultListeners.delete(listener);
    if (faultListeners.size === 0 && faultWatcher !== null) {
      faultWatcher.close();
      faultWatcher = null;
    }
  };
}

// A view handed out keeps its GuestMemory reachable, so the table is never collected
// (and its mappings never dropped) while JavaScript can still reach the bytes.
const viewOwner = new WeakMap<Uint8Array, GuestMemory>();

/**
 * An immutable table of mapped guest memory regions. `withRegion`/`withoutRegion`
 * build new tables that share the existing mappings. A mapping is released when the
 * last table and the last queue using it let go of it; `close()` lets go of this
 * table's hold and detaches every view it handed out.
 */
export class GuestMemory {
  /** @internal */ readonly raw: RawMemTable;
  private readonly info: RegionInfo[];
  private readonly views: (Uint8Array | undefined)[] = [];
  private closed = false;

  private constructor(rawTable: RawMemTable) {
    this.raw = rawTable;
    this.info = rawTable.regions();
  }

  /** Maps the regions (throws an Error with code REGION_MAP or MEM_TABLE on bad input). */
  static map(regions: RegionSpec[]): GuestMemory {
    return new GuestMemory(new raw.MemTable(regions));
  }

  get regions(): readonly RegionInfo[] {
    return this.info;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Hands the same mappings to another thread: pass the token (e.g. in a worker message)
   * to GuestMemory.claim there, once. The mappings live until both sides let go.
   */
  park(): number {
    this.check();
    return this.raw.park();
  }

  /** Takes a table parked by another thread. */
  static claim(token: number): GuestMemory {
    return new GuestMemory(new raw.MemTable(token));
  }

  /**
   * Regions whose file the frontend truncated under the mapping: their lost pages read as
   * zeros now (the SIGBUS guard mapped anonymous memory there). [] once closed.
   */
  lostRegions(): number[] {
    return this.closed ? [] : this.raw.lostRegions();
  }

  /** A new table with one more region (vhost-user ADD_MEM_REG). */
  withRegion(r: RegionSpec): GuestMemory {
    this.check();
    return new GuestMemory(this.raw.withRegion(r));
  }

  /** A new table without the region that matches exactly (vhost-user REM_MEM_REG). */
  withoutRegion(gpa: bigint, size: bigint, uva: bigint): GuestMemory {
    this.check();
    return new GuestMemory(this.raw.withoutRegion(gpa, size, uva));
  }

  /** Zero-copy view of a whole region. Detached (length 0) once the table is closed. */
  view(region: number): Uint8Array {
    this.check();
    let v = this.views[region];
    if (v === undefined || v.byteLength === 0) {
      v = new Uint8Array(this.raw.buffer(region));
      this.views[region] = v;
      viewOwner.set(v, this);
    }
    return v;
  }

  /** Where guest-physical `gpa` lives, or null if [gpa, gpa+len) is not all mapped. */
  translate(gpa: bigint, len: number): Translation | null {
    this.check();
    return this.raw.translate(gpa, BigInt(len));
  }

  /** Where frontend-virtual `uva` lives, if [uva, uva+len) lies inside one region. */
  translateUva(uva: bigint, len: number): { region: number; offset: number } | null {
    this.check();
    return this.raw.translateUva(uva, BigInt(len));
  }

  /** Copies guest bytes out (control plane and tests; the data plane uses views). */
  read(gpa: bigint, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.walk(gpa, len, (view, off, at, n) => out.set(view.subarray(off, off + n), at));
    return out;
  }

  /** Copies bytes into guest memory (control plane and tests). */
  write(gpa: bigint, data: Uint8Array): void {
    this.walk(gpa, data.length, (view, off, at, n) => view.set(data.subarray(at, at + n), off));
  }

  private walk(gpa: bigint, len: number, fn: (view: Uint8Array, off: number, at: number, n: number) => void): void {
    const t0 = this.translate(gpa, len);
    if (t0 === null) throw new RangeError(`guest range 0x${gpa.toString(16)}+${len} is not mapped`);
    let at = 0;
    let t: Translation | null = t0;
    while (at < len) {
      if (t === null) throw new RangeError(`guest range 0x${gpa.toString(16)}+${len} is not mapped`);
      const n = Math.min(t.contiguous, len - at);
      fn(this.view(t.region), t.offset, at, n);
      at += n;
      if (at < len) t = this.translate(gpa + BigInt(at), len - at);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.views.length = 0;
    this.raw.close();
  }

  private check(): void {
    if (this.closed) throw new Error('GuestMemory is closed');
  }
}
