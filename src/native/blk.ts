// The virtio-blk request engine (native/blk/blk.cc): requests of a popped burst are
// parsed natively and executed by a pool of native threads, straight between the backend
// (a file, a block device or RAM) and guest memory; completions are pushed back in one
// used-ring update per reap(). The JavaScript thread only pops, submits and reaps.
import { addon } from './binding.js';
import { FdWatcher } from './unix-socket.js';
import type { Virtqueue } from './virtqueue.js';

/** Request types (virtio 1.2 §5.2.6, `type` of struct virtio_blk_req). */
export const BlkReqType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  GET_LIFETIME: 10,
  DISCARD: 11,
  WRITE_ZEROES: 13,
  SECURE_ERASE: 14,
} as const;
export type BlkReqTypeName = keyof typeof BlkReqType;

/** Values of the status byte that ends every request (§5.2.6). */
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
export type BlkStatusName = keyof typeof BlkStatus;

/** Bytes per sector: the unit of `sector`, capacity and discard / write zeroes ranges. */
export const BLK_SECTOR_SIZE = 512;
/** Bytes of a GET_ID answer (VIRTIO_BLK_ID_BYTES). */
export const BLK_ID_BYTES = 20;
/** Bit 0 of a discard / write zeroes segment's flags: the range may be deallocated. */
export const BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** What the engine accepts of DISCARD and WRITE_ZEROES (the config space's max_* fields). */
export interface BlkEngineLimits {
  /** most sectors in one discard segment (default 4194303); more: IOERR */
  maxDiscardSectors?: number;
  /** most segments in one discard request (default 1); more: IOERR. 0: DISCARD answers UNSUPP */
  maxDiscardSeg?: number;
  /** most sectors in one write zeroes segment (default 4194303) */
  maxWriteZeroesSectors?: number;
  /** most segments in one write zeroes request (default 1). 0: WRITE_ZEROES answers UNSUPP */
  maxWriteZeroesSeg?: number;
}

/**
 * How requests execute. 'threads': a pool of native threads doing preadv / pwritev.
 * 'io_uring': IN, OUT and FLUSH on a file go through an io_uring owned by the submitting
 * thread (one kernel entry per burst; what completes inside it, such as buffered I/O on
 * cached pages, is pushed by the reap that follows with no thread hop), and a RAM disk or
 * a file on tmpfs (whose reads io_uring would hand to a kernel thread) copies requests up
 * to 64 KiB on the submitting thread; the pool keeps the rest (discard,
 * write zeroes, O_DIRECT bounces, large RAM copies). 'auto': io_uring where the kernel
 * allows it (engineNote says why not otherwise).
 */
export type BlkEngineKind = 'threads' | 'io_uring';

export interface BlkEngineCommonOptions extends BlkEngineLimits {
  /** OUT, DISCARD and WRITE_ZEROES answer IOERR (implied by an fd open O_RDONLY) */
  readOnly?: boolean;
  /** GET_ID answer: up to 20 bytes (a string's UTF-8), NUL-padded */
  serial?: string | Uint8Array;
  /** worker threads executing the I/O, 1..64 (default 2) */
  threads?: number;
  /** default 'auto': io_uring where the kernel allows it, else threads */
  engine?: BlkEngineKind | 'auto';
}

export interface BlkFileEngineOptions extends BlkEngineCommonOptions {
  /** a regular file or block device holding a raw image; the engine keeps its own duplicate */
  fd: number;
  /** disk size; default: the file or device size, rounded down to a sector */
  capacitySectors?: number | bigint;
  /**
   * O_DIRECT discipline: requests whose guest buffers are not 512-byte aligned go through
   * an aligned bounce buffer. On by itself when the fd was opened with O_DIRECT.
   */
  direct?: boolean;
}

export interface BlkRamEngineOptions extends BlkEngineCommonOptions {
  /** a RAM disk: an anonymous private mapping, zero-filled, allocated as it is written */
  ram: true;
  capacitySectors: number | bigint;
}

export type BlkEngineOptions = BlkFileEngineOptions | BlkRamEngineOptions;

/** Why requests failed; each is counted once per request. */
export interface BlkErrorCounts {
  /** no device-writable byte: completed with used len 0, no status written */
  noStatus: number;
  /** fewer than 16 device-readable bytes (no header) */
  shortHeader: number;
  /** sectors beyond the capacity */
  range: number;
  /** IN / OUT data not a multiple of 512 bytes */
  unalignedLen: number;
  /** a write on a read-only disk */
  readOnly: number;
  /** discard / write zeroes with more segments than allowed */
  tooManySegs: number;
  /** a discard / write zeroes segment with more sectors than allowed */
  tooManySectors: number;
  /** discard / write zeroes payload empty or not a multiple of 16 bytes */
  badPayload: number;
  /** unknown segment flags, or UNMAP on a discard (UNSUPP, §5.2.6.2) */
  badFlags: number;
  /** unknown or switched-off request type (UNSUPP) */
  unsupported: number;
  /** the backend's syscall failed */
  io: number;
  /** a segment outside guest memory (the memory table changed under a burst) */
  badSegment: number;
  /** the frontend truncated guest memory's file under the request (the session ends) */
  guestMemoryLost: number;
}

export interface BlkEngineStats {
  /** requests by type (those with a readable header) */
  requests: { in: number; out: number; flush: number; getId: number; discard: number; writeZeroes: number; other: number };
  submitted: number;
  completed: number;
  reaped: number;
  bytesRead: number;
  bytesWritten: number;
  ok: number;
  ioerr: number;
  unsupp: number;
  errors: BlkErrorCounts;
  /** O_DIRECT requests that went through the aligned bounce buffer */
  bounced: number;
  /** fdatasync calls (FLUSH on a file backend) */
  fdatasyncs: number;
  /** ranges deallocated (fallocate PUNCH_HOLE; MADV_DONTNEED for RAM) */
  holesPunched: number;
  /** ranges zeroed with fallocate ZERO_RANGE */
  zeroRanges: number;
  /** ranges zeroed by writing zeros */
  zeroWrites: number;
  /** submitted and not yet reaped */
  inFlight: number;
  /** submitted and not yet completed */
  executing: number;
  /** submit-to-completion latency: bucket k counts [2^k, 2^(k+1)) µs (bucket 0: under 2 µs) */
  latencyUs: number[];
  /** the io_uring engine (all 0 with threads) */
  uring: {
    /** SQEs submitted */
    sqes: number;
    /** completions harvested inside the submit that issued them (no thread hop) */
    inline: number;
    /** completions harvested later (reap, waitIdle) */
    later: number;
    /** requests, or the rest of a short transfer, handed to the worker pool */
    toPool: number;
    /** requests of a RAM disk or a file on tmpfs copied on the submitting thread */
    copiedInline: number;
    /**
     * the ring runs with SINGLE_ISSUER | DEFER_TASKRUN: a buffered file on tmpfs, where the
     * kernel allows it (io-wq completions posted on this thread's next entry into the ring)
     */
    deferTaskrun: boolean;
  };
}

interface RawBlkEngine {
  submit(q: unknown, n: number): void;
  reap(q: unknown): number;
  submitReap(q: unknown, n: number): number;
  noteWake(): void;
  waitIdle(timeoutMs?: number): boolean;
  resize(sectors: bigint): bigint;
  inFlightOf(q: unknown): number;
  stats(): BlkEngineStats;
  close(): void;
  readonly inFlight: number;
  readonly completionFd: number;
  readonly capacitySectors: bigint;
  readonly readOnly: boolean;
  readonly direct: boolean;
  readonly engine: BlkEngineKind;
  readonly engineNote: string;
}
const raw = addon as { BlkEngine: new (opts: Record<string, unknown>) => RawBlkEngine };

/**
 * Serves virtio-blk requests (virtio 1.2 §5.2.6) of one or more virtqueues off the
 * JavaScript thread. The driver may frame a request any way it likes; every malformed
 * request is answered (IOERR / UNSUPP) and the device keeps serving.
 *
 * ```ts
 * const eng = BlkEngine.forFile(fd, { serial: 'disk0' });
 * // on a kick:        eng.serve(q);
 * // on completionFd:  eng.reap(q);
 * // queue stop:       await eng.drain(q);
 * ```
 *
 * submit / serve / reap must be called on one thread (the one that pushes to the queue).
 * Drain a queue before detaching it or changing its rings: completions are pushed by
 * chain id, and a queue reset under in-flight requests refuses them (reap returns -1).
 */
export class BlkEngine {
  readonly #raw: RawBlkEngine;
  #watcher: FdWatcher | null = null;
  #onReady: (() => void) | null = null;
  #waiters: Array<() => void> = [];

  constructor(opts: BlkEngineOptions) {
    const o: Record<string, unknown> = { ...opts };
    if (typeof opts.serial === 'string' && Buffer.byteLength(opts.serial) > BLK_ID_BYTES) {
      throw new RangeError(`serial '${opts.serial}' is ${Buffer.byteLength(opts.serial)} bytes, at most ${BLK_ID_BYTES}`);
    }
    this.#raw = new raw.BlkEngine(o);
  }

  /** An engine over a raw image file or block device (the fd is duplicated). */
  static forFile(fd: number, opts: Omit<BlkFileEngineOptions, 'fd'> = {}): BlkEngine {
    return new BlkEngine({ ...opts, fd });
  }

  /** A RAM disk of `capacitySectors` 512-byte sectors, zero-filled. */
  static inRam(capacitySectors: number | bigint, opts: BlkEngineCommonOptions = {}): BlkEngine {
    return new BlkEngine({ ...opts, ram: true, capacitySectors });
  }

  /** Disk size in 512-byte sectors (the config space's capacity). */
  get capacitySectors(): bigint {
    return this.#raw.capacitySectors;
  }

  /**
   * Grows the disk to `sectors`; 0n (the default) re-reads a file's or block device's size.
   * A regular file given a size is extended (sparse ftruncate); a RAM disk keeps its
   * contents. Requests submitted from now on are checked against the new capacity.
   * Shrinking, or a size for a block device, throws; the capacity is then unchanged.
   * Returns the capacity in sectors.
   */
  resize(sectors: bigint = 0n): bigint {
    return this.#raw.resize(sectors);
  }

  /** Writes are refused (offer VIRTIO_BLK_F_RO). */
  get readOnly(): boolean {
    return this.#raw.readOnly;
  }

  /** The engine executing requests ('auto' resolved). */
  get engine(): BlkEngineKind {
    return this.#raw.engine;
  }

  /** Why the engine is 'threads' although 'auto' allowed io_uring (the kernel refused it); '' otherwise. */
  get engineNote(): string {
    return this.#raw.engineNote;
  }

  /** Whether unaligned requests go through a bounce buffer (O_DIRECT). */
  get direct(): boolean {
    return this.#raw.direct;
  }

  /**
   * An eventfd that becomes readable when completed requests wait for reap() (one write
   * per batch of completions; reap() resets it). -1 after close().
   */
  get completionFd(): number {
    return this.#raw.completionFd;
  }

  /** Requests submitted and not yet reaped, over every queue. */
  get inFlight(): number {
    return this.#raw.inFlight;
  }

  /** Requests of `q` submitted and not yet reaped. */
  inFlightOf(q: Virtqueue): number {
    return this.#raw.inFlightOf(q.slot);
  }

  /**
   * Takes chains [0, n) of q's last pop(). Each completes later with a status (or with used
   * len 0 when it has no device-writable byte). Throws if the engine is closed.
   */
  submit(q: Virtqueue, n: number): void {
    this.#raw.submit(q.slot, n);
  }

  /**
   * submit(q, n), then reap(q), in one call: what completed inside the submit (cached
   * pages, a RAM disk, small copies of a tmpfs file) is pushed at once, and costs no write
   * and read of the completion fd. Returns reap()'s result.
   */
  submitReap(q: Virtqueue, n: number): number {
    const r = this.#raw.submitReap(q.slot, n);
    if (r === -2) throw new Error('BlkEngine is closed');
    return r;
  }

  /**
   * Pops every chain available on `q` and submits it. Returns how many. Throws the queue's
   * VringError if the driver broke the ring.
   */
  serve(q: Virtqueue): number {
    // Checked before popping: a popped chain the engine cannot take would be lost.
    if (this.#raw.completionFd < 0) throw new Error('BlkEngine is closed');
    let total = 0;
    for (;;) {
      const n = q.pop();
      if (n < 0) throw q.error ?? new Error(`pop failed: ${n}`);
      if (n === 0) return total;
      this.#raw.submit(q.slot, n);
      total += n;
    }
  }

  /**
   * Pushes every completed request of `q` in one used-ring update and signals the driver
   * once if it asked. Returns the number pushed; -1 if the queue refused them (it was reset
   * with requests in flight: they are dropped).
   */
  reap(q: Virtqueue): number {
    return this.#raw.reap(q.slot);
  }

  /**
   * Blocks the calling thread until no request is executing (they may still need reap()),
   * at most `timeoutMs` (default: no limit). Returns false on timeout.
   */
  waitIdle(timeoutMs = -1): boolean {
    return this.#raw.waitIdle(timeoutMs);
  }

  /**
   * Calls `onReady` on the event loop whenever completions wait (the completion fd is
   * readable); the callback is expected to reap() every queue this engine serves. Returns a
   * function that stops watching. One watcher per engine.
   */
  watch(onReady: () => void): () => void {
    if (this.#onReady !== null) throw new Error('BlkEngine.watch: already watched');
    this.#onReady = onReady;
    this.#ensureWatcher();
    return () => {
      this.#onReady = null;
      this.#maybeStopWatcher();
    };
  }

  /**
   * Waits, without blocking the event loop, until every request of `q` has completed and
   * been pushed (queue stop, before GET_VRING_BASE). Rejects after `timeoutMs`.
   */
  async drain(q: Virtqueue, timeoutMs = 30000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.reap(q);
      if (this.inFlightOf(q) === 0) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`BlkEngine.drain: ${this.inFlightOf(q)} requests still in flight after ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.#waiters = this.#waiters.filter((w) => w !== done);
          this.#maybeStopWatcher();
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 100));
        this.#waiters.push(done);
        this.#ensureWatcher();
      });
    }
  }

  /** Counters since creation. */
  stats(): BlkEngineStats {
    return this.#raw.stats();
  }

  /**
   * Lets every submitted request finish, stops the threads, releases the backend and the
   * completion fd. Completed requests can still be reaped. Idempotent.
   */
  close(): void {
    this.#watcher?.close();
    this.#watcher = null;
    this.#onReady = null;
    this.#raw.close();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #ensureWatcher(): void {
    if (this.#watcher === null) {
      const fd = this.#raw.completionFd;
      if (fd < 0) throw new Error('BlkEngine is closed');
      this.#watcher = new FdWatcher(fd, () => this.#ready());
    }
    if (!this.#watcher.active) this.#watcher.start(true, false);
  }

  #ready(): void {
    // Level-triggered: the fd stays readable until a reap() resets it, which it does
    // after this whatever else the engine knows.
    this.#raw.noteWake();
    for (const w of [...this.#waiters]) w();
    if (this.#onReady !== null) {
      this.#onReady();
    } else {
      this.#maybeStopWatcher();
    }
  }

  #maybeStopWatcher(): void {
    if (this.#onReady === null && this.#waiters.length === 0) this.#watcher?.stop();
  }
}
