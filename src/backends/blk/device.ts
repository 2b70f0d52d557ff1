// virtio-blk over vhost-user (virtio 1.2 §5.2): features, config space, queues. Requests
// are parsed and executed by the native BlkEngine (native/blk/blk.cc) on its own
// threads, straight between the file (or RAM) and guest memory; this device pops bursts
// on kicks, submits them, and pushes completions when the engine signals them.
import { bit, has, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VirtioDeviceId } from '../../virtio/features.js';
import { BlkFeature, BLK_CONFIG_SIZE } from '../../virtio/blk.js';
import { ProtocolFeature } from '../../vhost-user/protocol.js';
import type { QueueContext, VhostUserDevice } from '../../vhost-user/device.js';
import { BlkEngine } from '../../native/blk.js';
import { VringError } from '../../native/virtqueue.js';

/** size_max: the engine takes segments of any size; 1 MiB is above what guests' block layers use. */
const SIZE_MAX_BYTES = 1 << 20;
/**
 * io_uring engine: bursts one serve() takes from a queue before it yields to the event loop
 * (and comes back on setImmediate). Completions inside the submit let a busy driver refill
 * the ring as fast as it is served, so without a bound one queue's loop would starve the
 * other queues' kicks and everything else on the loop.
 */
const URING_BURSTS_PER_SERVE = 4;
/** Default BlkDeviceOptions.maxInFlight. */
export const DEFAULT_MAX_IN_FLIGHT = 1024;

export interface BlkDeviceOptions {
  /** queues (num_queues with VIRTIO_BLK_F_MQ; default 1) */
  numQueues?: number;
  /** offer the packed ring (default true) */
  packed?: boolean;
  /** logical block size reported (default 512) */
  blockSize?: number;
  /** segments per request the driver may use (default 126) */
  segMax?: number;
  maxQueueSize?: number;
  /** write cache on (writeback, CONFIG_WCE) at start; default true */
  writeback?: boolean;
  /**
   * Most requests in flight (submitted to the engine, not yet completed and pushed) over
   * all queues; default DEFAULT_MAX_IN_FLIGHT (1024). At the cap the device stops popping:
   * further chains wait in their rings (flow control the driver sees as a slow disk) and
   * are taken as completions make room. Without it, up to numQueues x queue size
   * requests (64 x 32768) could be held at once.
   */
  maxInFlight?: number;
  /**
   * io_uring engine: after a kick's requests complete inline, keep popping the ring for up to
   * this many microseconds before going back to the event loop (0: off, the default). At QD 1
   * the driver's next request then needs no kick and no wakeup of an idle CPU; the cost is up
   * to this much CPU (and event-loop time) per kick. qemu-storage-daemon's iothreads poll the
   * same way (poll-max-ns, 32 µs by default). With several queues started the poll watches
   * them all and ends as soon as any has a chain (that queue is served on the next turn of the
   * event loop): no queue waits for another's poll to time out.
   */
  pollUs?: number;
}

export class BlkDevice implements VhostUserDevice {
  readonly kind = 'blk';
  readonly deviceId = VirtioDeviceId.BLOCK;
  readonly features: bigint;
  readonly protocolFeatures = bit(ProtocolFeature.INFLIGHT_SHMFD);
  readonly numQueues: number;
  readonly maxQueueSize: number;
  private readonly queues = new Map<number, QueueContext>();
  private stopWatch: (() => void) | null = null;
  private writeback: boolean;
  private readonly segMax: number;
  private readonly blockSize: number;
  readonly maxInFlight: number;
  /** the engine is io_uring: reap right after each submit */
  private readonly uring: boolean;
  /** BlkDeviceOptions.pollUs in nanoseconds (0n: no polling) */
  private readonly pollNs: bigint;
  /** BlkDeviceOptions.pollUs as it applies: 0 unless the engine is io_uring */
  get pollUs(): number {
    return Number(this.pollNs / 1000n);
  }
  /** queues a serve() left after URING_BURSTS_PER_SERVE bursts, and the setImmediate that resumes them */
  private readonly yielded = new Set<QueueContext>();
  private resume: NodeJS.Immediate | null = null;
  /** queues left with chains in their ring because of the in-flight cap */
  private readonly waiting = new Set<QueueContext>();
  /** queues being drained by queueStop: no new chain is taken from them */
  private readonly stopping = new Set<QueueContext>();
  /** queues whose log already said the cap was reached (once per start) */
  private readonly capLogged = new Set<QueueContext>();
  /** times a queue was left waiting because the cap was reached */
  heldBack = 0;
  /** polls started (pollUs), and those that found a chain before they timed out */
  polls = 0;
  pollHits = 0;
  /** sessions to tell when the config space changes (watchConfig) */
  private readonly configWatchers = new Set<() => void>();

  constructor(
    readonly engine: BlkEngine,
    opts: BlkDeviceOptions = {},
  ) {
    const nq = opts.numQueues ?? 1;
    if (!Number.isInteger(nq) || nq < 1 || nq > 64) throw new RangeError(`num-queues ${nq}: expected 1..64`);
    this.numQueues = nq;
    this.maxQueueSize = opts.maxQueueSize ?? 1024;
    this.segMax = opts.segMax ?? 126;
    this.blockSize = opts.blockSize ?? 512;
    this.writeback = opts.writeback ?? true;
    const cap = opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!Number.isInteger(cap) || cap < 1) throw new RangeError(`maxInFlight ${cap}: expected a positive integer`);
    this.maxInFlight = cap;
    this.uring = engine.engine === 'io_uring';
    const poll = opts.pollUs ?? 0;
    if (!Number.isInteger(poll) || poll < 0 || poll > 1000) throw new RangeError(`pollUs ${poll}: expected 0..1000`);
    this.pollNs = this.uring ? BigInt(poll) * 1000n : 0n;
    this.features =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_RING_F_EVENT_IDX) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      (opts.packed === false ? 0n : bit(VIRTIO_F_RING_PACKED)) |
      bit(BlkFeature.SIZE_MAX) |
      bit(BlkFeature.SEG_MAX) |
      bit(BlkFeature.BLK_SIZE) |
      bit(BlkFeature.TOPOLOGY) |
      bit(BlkFeature.FLUSH) |
      bit(BlkFeature.CONFIG_WCE) |
      bit(BlkFeature.DISCARD) |
      bit(BlkFeature.WRITE_ZEROES) |
      bit(BlkFeature.MQ) |
      (engine.readOnly ? bit(BlkFeature.RO) : 0n);
  }

  /** struct virtio_blk_config (the first 60 bytes). */
  configSpace(): Uint8Array {
    const b = new Uint8Array(BLK_CONFIG_SIZE);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, this.engine.capacitySectors, true);
    v.setUint32(8, SIZE_MAX_BYTES, true); // size_max: any guest segment size the block layer uses
    v.setUint32(12, this.segMax, true);
    v.setUint32(20, this.blockSize, true);
    b[24] = 0; // physical_block_exp
    b[25] = 0; // alignment_offset
    v.setUint16(26, 1, true); // min_io_size (blocks)
    v.setUint32(28, 1, true); // opt_io_size
    b[32] = this.writeback ? 1 : 0;
    v.setUint16(34, this.numQueues, true);
    v.setUint32(36, 32768, true); // max_discard_sectors
    v.setUint32(40, 1, true); // max_discard_seg
    v.setUint32(44, 1, true); // discard_sector_alignment
    v.setUint32(48, 32768, true); // max_write_zeroes_sectors
    v.setUint32(52, 1, true); // max_write_zeroes_seg
    b[56] = 1; // write_zeroes_may_unmap
    return b;
  }

  watchConfig(changed: () => void): () => void {
    this.configWatchers.add(changed);
    return () => this.configWatchers.delete(changed);
  }

  /**
   * Grows the disk to `bytes` (a multiple of the block size), or with no size re-reads a
   * file's or block device's size (after `truncate -s`): the config space's capacity
   * changes and every connected frontend gets CONFIG_CHANGE_MSG (QEMU then re-reads the
   * config and interrupts the guest, whose driver updates the disk size). From the next
   * request on, sectors up to the new end work; beyond it, IOERR. A RAM disk keeps its
   * contents; a file grows sparse (ftruncate).
   *
   * Shrinking is refused (RangeError): the guest keeps a filesystem or partition table
   * that may reach past the new end and would meet IOERR (or, for a file, lose the data
   * truncated away) with no warning; qemu-storage-daemon's block_resize allows it, but a
   * mistyped size there destroys data. Shrink with the guest's cooperation offline
   * instead (remove the disk, truncate, add it again).
   *
   * Returns the old and new size in bytes.
   */
  resize(bytes?: bigint): { oldBytes: bigint; newBytes: bigint } {
    const oldBytes = this.engine.capacitySectors * 512n;
    let sectors = 0n;
    if (bytes !== undefined) {
      if (bytes <= 0n || bytes % BigInt(this.blockSize) !== 0n) throw new RangeError(`size ${bytes}: expected a positive multiple of the block size (${this.blockSize} bytes)`);
      if (bytes < oldBytes) throw new RangeError(`size ${bytes}: smaller than the disk (${oldBytes} bytes); shrinking is refused (the guest may still address what would go)`);
      sectors = bytes / 512n;
    }
    let now: bigint;
    try {
      now = this.engine.resize(sectors);
    } catch (e) {
      throw new RangeError((e as Error).message.replace(/^resize: /, ''));
    }
    const newBytes = now * 512n;
    if (newBytes !== oldBytes) for (const w of [...this.configWatchers]) w();
    return { oldBytes, newBytes };
  }

  /** SET_CONFIG: only the writeback byte (CONFIG_WCE) is writable. */
  setConfig(offset: number, data: Uint8Array): boolean {
    if (offset !== 32 || data.length !== 1 || data[0] > 1) return false;
    this.writeback = data[0] === 1;
    return true;
  }

  get writebackEnabled(): boolean {
    return this.writeback;
  }

  queueStart(q: QueueContext): void {
    // Requests stay in flight across calls: a read that completes after a migration turned
    // dirty logging on must mark the guest pages it filled (Virtqueue.keepWrittenRanges).
    q.vq.keepWrittenRanges(true);
    this.queues.set(q.index, q);
    this.capLogged.delete(q);
    if (this.stopWatch === null) {
      this.stopWatch = this.engine.watch(() => {
        for (const c of this.queues.values()) this.engine.reap(c.vq);
        this.serveWaiting();
      });
    }
  }

  queueKick(q: QueueContext): void {
    this.serve(q);
  }

  /** Pops and submits what q has, as long as the in-flight cap leaves room. */
  private serve(q: QueueContext): void {
    // Checked before popping: a popped chain the engine cannot take would be lost.
    if (this.engine.completionFd < 0) throw new Error('BlkEngine is closed');
    try {
      for (let bursts = 0; ; bursts++) {
        if (this.uring && bursts === URING_BURSTS_PER_SERVE) {
          // The ring may still hold chains and the driver will not kick for them: come back.
          this.yieldTo(q);
          return;
        }
        const room = this.maxInFlight - this.engine.inFlight;
        if (room <= 0) {
          this.waiting.add(q);
          this.heldBack++;
          if (!this.capLogged.has(q)) {
            this.capLogged.add(q);
            q.log.info('requests in flight at the cap: further chains wait in the ring', { maxInFlight: this.maxInFlight });
          }
          return;
        }
        let n = q.vq.pop(Math.min(room, q.vq.burst));
        if (n === 0 && this.pollNs > 0n && this.engine.inFlight === 0) n = this.poll(q, room);
        if (n < 0) throw q.vq.error ?? new Error(`pop failed: ${n}`);
        if (n === 0) return;
        // io_uring: what completed inside the submit (cached pages, RAM) is pushed now, on
        // this wakeup, rather than on the completion fd's.
        if (this.uring) this.engine.submitReap(q.vq, n);
        else this.engine.submit(q.vq, n);
      }
    } catch (e) {
      if (e instanceof VringError) q.fail(e);
      else throw e;
    }
  }

  /** q is served again on the next turn of the event loop. */
  private yieldTo(q: QueueContext): void {
    this.yielded.add(q);
    if (this.resume === null) this.resume = setImmediate(() => this.serveYielded());
  }

  /** Serves the queues a bounded serve() left (if they are still served). */
  private serveYielded(): void {
    this.resume = null;
    const queues = [...this.yielded];
    this.yielded.clear();
    for (const q of queues) {
      if (this.queues.get(q.index) !== q || this.stopping.has(q)) continue;
      try {
        this.serve(q);
      } catch (e) {
        q.fail(e as Error); // on a setImmediate: nobody above to catch it
      }
    }
  }

  /**
   * Pops q until a chain comes or pollNs passes (pollUs), watching the other started queues
   * too; returns pop()'s last result. A queue that has a chain while q has none ends the
   * poll: it is served on the next turn of the event loop (setImmediate, before any wait),
   * not when its kick is read, and not from here, so queues that keep each other busy still
   * let the loop run between them.
   */
  private poll(q: QueueContext, room: number): number {
    this.polls++;
    const end = process.hrtime.bigint() + this.pollNs;
    for (;;) {
      const n = q.vq.pop(Math.min(room, q.vq.burst));
      if (n !== 0) {
        if (n > 0) this.pollHits++;
        return n;
      }
      if (this.queues.size > 1) {
        for (const o of this.queues.values()) {
          if (o !== q && o.vq.ready && !this.stopping.has(o) && o.vq.hasAvail()) {
            this.pollHits++;
            this.yieldTo(o);
            return 0;
          }
        }
      }
      if (process.hrtime.bigint() >= end) return 0;
    }
  }

  /** Completions made room: serve the queues the cap left waiting (if still served). */
  private serveWaiting(): void {
    if (this.waiting.size === 0 || this.engine.inFlight >= this.maxInFlight) return;
    const queues = [...this.waiting];
    this.waiting.clear();
    for (const q of queues) {
      if (this.queues.get(q.index) !== q || this.stopping.has(q)) continue;
      try {
        this.serve(q);
      } catch (e) {
        q.fail(e as Error); // on the engine's completion callback: nobody above to catch it
      }
    }
  }

  async queueStop(q: QueueContext): Promise<void> {
    // Everything submitted completes and is pushed before the ring state is handed back.
    this.stopping.add(q);
    this.waiting.delete(q);
    this.yielded.delete(q);
    try {
      await this.engine.drain(q.vq);
    } finally {
      this.stopping.delete(q);
    }
    this.queues.delete(q.index);
    this.capLogged.delete(q);
    if (this.queues.size === 0 && this.stopWatch) {
      this.stopWatch();
      this.stopWatch = null;
    }
    this.serveWaiting(); // the drain may have reaped what other queues wait for
  }

  reset(): void {
    this.waiting.clear();
    this.yielded.clear();
    if (this.resume !== null) clearImmediate(this.resume);
    this.resume = null;
    this.stopping.clear();
    this.capLogged.clear();
    this.queues.clear();
    if (this.stopWatch) {
      this.stopWatch();
      this.stopWatch = null;
    }
  }

  /** Whether the negotiated features carry the packed ring (for logs and tools). */
  static packed(f: bigint): boolean {
    return has(f, VIRTIO_F_RING_PACKED);
  }
}
