// One queue of a session, from the frontend's configuration to the device serving it: the
// values SET_VRING_* gave (size, addresses, base, kick/call/err fds), and the lifecycle of
// the ring (vhost-user.rst "Ring states"): start on SET_VRING_KICK, run while enabled,
// stop and hand back its position on GET_VRING_BASE, break on a driver error. Around the
// native Virtqueue it attaches what the session negotiated: features, memory, the inflight
// area or the ring record, the dirty log.
import { closeSync, readSync, writeSync } from 'node:fs';
import { Virtqueue, VringError, type RingLayout } from '../native/virtqueue.js';
import { FdWatcher } from '../native/unix-socket.js';
import type { GuestMemory } from '../native/guest-memory.js';
import { has, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VHOST_F_LOG_ALL } from '../virtio/features.js';
import type { Logger } from '../log.js';
import type { QueueContext, VhostUserDevice } from './device.js';
import type { DirtyLog } from './dirty-log.js';
import type { RingRecordFile } from './ring-record.js';
import { ProtocolError, VRING_F_LOG, type VringAddr } from './protocol.js';

/** How long a device may take to drain a stopping queue. */
const STOP_TIMEOUT_MS = 10000;

/** The inflight area the frontend gave (GET/SET_INFLIGHT_FD), shared by the session's rings. */
export interface InflightArea {
  memory: GuestMemory;
  numQueues: number;
  queueSize: number;
}

/** What a ring needs from its session: the negotiated state, and where to report a break. */
export interface VringOwner {
  readonly device: VhostUserDevice;
  readonly log: Logger;
  /** queue burst size for the native rings */
  readonly burst: number;
  memory(): GuestMemory | null;
  /** the features the frontend acknowledged (SET_FEATURES) */
  acked(): bigint;
  inflight(): InflightArea | null;
  dirtyLog(): DirtyLog | null;
  /** the ring record file, opened on first use; null: none */
  ringRecords(): RingRecordFile | null;
  /** Whether the whole session is ending (its guest memory is lost): a ring then stays as it is. */
  ending(): boolean;
  /** The ring broke by the driver: the session's status and listeners learn it (before the err fd is written). */
  broken(index: number, why: string): void;
}

/**
 * Bytes of one queue's inflight region, 64-aligned: split rings use vhost-user.rst's
 * QueueRegionSplit, packed rings vhostkit's own layout (native/ring/packed_ring.h).
 */
export function inflightQueueBytes(queueSize: number, packed: boolean): number {
  const raw = packed ? 64 + 34 * queueSize : 16 + 16 * queueSize;
  return Math.ceil(raw / 64) * 64;
}

const kickBuf = Buffer.alloc(8);

function writeEventFd(fd: number): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(1n);
  writeSync(fd, b);
}

export class Vring {
  num = 0;
  addr: VringAddr | null = null;
  base = 0;
  /** the frontend's last SET_VRING_BASE (base also changes when the ring stops) */
  frontendBase = 0;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  polling = false;
  /** SET_VRING_KICK received since the last stop */
  started = false;
  enabled = false;
  vq: Virtqueue | null = null;
  private ctx: QueueContext | null = null;
  running = false;
  broken = false;
  /** the device's queueStop in progress, if any */
  stopping: Promise<void> | null = null;
  private kickWatcher: FdWatcher | null = null;
  private pollTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly index: number,
    private readonly owner: VringOwner,
  ) {}

  private get device(): VhostUserDevice {
    return this.owner.device;
  }

  /** SET_VRING_KICK: the ring starts (spec: "Ring states"). A started ring was stopped first. */
  start(): void {
    const memory = this.owner.memory();
    if (memory === null) throw new ProtocolError(`queue ${this.index}: started before SET_MEM_TABLE`);
    if (this.addr === null) throw new ProtocolError(`queue ${this.index}: started before SET_VRING_ADDR`);
    if (this.num === 0) throw new ProtocolError(`queue ${this.index}: started before SET_VRING_NUM`);
    const acked = this.owner.acked();
    const layout: RingLayout = has(acked, VIRTIO_F_RING_PACKED) ? 'packed' : 'split';
    const vq = new Virtqueue({ layout, size: this.num, burst: this.owner.burst });
    vq.setFeatures({ eventIdx: has(acked, VIRTIO_RING_F_EVENT_IDX), indirect: has(acked, VIRTIO_RING_F_INDIRECT_DESC) });
    vq.setMemory(memory);
    const log = this.owner.log.child({ queue: this.index });
    try {
      try {
        vq.setBase(this.base);
        vq.setRings(ringAddrs(this.addr), 'uva');
      } catch (e) {
        throw new ProtocolError(`queue ${this.index}: ${(e as Error).message}`);
      }
      const inflight = this.owner.inflight();
      if (inflight && this.index < inflight.numQueues) {
        const per = inflightQueueBytes(inflight.queueSize, layout === 'packed');
        if (inflight.queueSize !== this.num || !vq.setInflight(inflight.memory, this.index * per, per)) {
          log.warn('inflight tracking not available for this queue', { layout, size: this.num, inflightQueueSize: inflight.queueSize });
        }
      } else if (layout === 'packed') {
        this.attachRingRecord(vq, log);
      }
      vq.syncUsedFromRing();
      if (vq.resubmitPending > 0) log.info('resubmitting requests in flight before the restart', { count: vq.resubmitPending });
      vq.setCallFd(this.callFd);
      if (vq.ringRecordState === 'recovered') {
        // The dead backend may have completed chains without the interrupt reaching the
        // driver; one spurious interrupt is harmless.
        log.info('ring position taken from the ring record of the previous backend', { frontendBase: this.frontendBase, base: vq.getBase() });
        vq.signal();
      }
      this.attachLog(vq);
    } catch (e) {
      // A ring that does not start lets go of guest memory now, not when it is collected.
      vq.detach();
      throw e;
    }
    this.vq = vq;
    this.started = true;
    this.broken = false;
    const owner = this.owner;
    this.ctx = {
      index: this.index,
      layout,
      size: this.num,
      vq,
      get memory() {
        return owner.memory()!;
      },
      features: acked,
      log,
      kickFd: this.kickFd,
      fail: (reason) => this.fail(reason),
    };
    log.info('ring started', { layout, size: this.num, base: this.base, kick: this.polling ? 'polling' : 'eventfd' });
    if (this.device.handlesKicks) {
      // the device watches ctx.kickFd itself
    } else if (this.kickFd >= 0) {
      this.kickWatcher = new FdWatcher(this.kickFd, () => this.onKick());
      this.kickWatcher.start(true, false);
    } else {
      this.pollTimer = setInterval(() => this.kickDevice(), 1);
    }
    this.updateRunning();
  }

  /** A packed ring without an inflight area keeps its position in the ring record file. */
  private attachRingRecord(vq: Virtqueue, log: Logger): void {
    if (!this.device.completesInOrder) return;
    const records = this.owner.ringRecords();
    if (records === null) return;
    const a = records.area(this.index);
    if (!vq.setRingRecord(records.memory, a.offset, a.len, this.frontendBase)) log.warn('ring record too small for this queue', { size: this.num });
  }

  /** Attaches the session's dirty log to the running ring, or detaches it (features, log base or LOG flag changed). */
  attachLog(vq: Virtqueue | null = this.vq): void {
    if (vq === null) return;
    const dirtyLog = this.owner.dirtyLog();
    if (dirtyLog && has(this.owner.acked(), VHOST_F_LOG_ALL)) {
      // Ring writes are logged when the frontend set VHOST_VRING_F_LOG on the ring.
      vq.setDirtyLog(dirtyLog.raw, this.addr !== null && this.addr.flags & VRING_F_LOG ? this.addr.log : null);
    } else {
      vq.setDirtyLog(null, null);
    }
  }

  /** The guest's memory table changed under the ring: its rings are found again in it. */
  remap(memory: GuestMemory): void {
    if (!this.vq || !this.addr) return;
    this.vq.setMemory(memory);
    try {
      this.vq.setRings(ringAddrs(this.addr), 'uva');
    } catch (e) {
      this.fail(`its rings are not mapped by the new memory table: ${(e as Error).message}`);
    }
  }

  /** SET_VRING_ADDR on a started ring: the rings move (the caller pauses the device around it). */
  moveRings(a: VringAddr): void {
    if (!this.vq) return;
    try {
      this.vq.setRings(ringAddrs(a), 'uva');
    } catch (e) {
      throw new ProtocolError(`SET_VRING_ADDR queue ${this.index}: ${(e as Error).message}`);
    }
  }

  private onKick(): void {
    // Drain the eventfd (made non-blocking by the watcher): one wakeup for any number of kicks.
    try {
      readSync(this.kickFd, kickBuf, 0, 8, null);
    } catch {
      // EAGAIN: already drained
    }
    this.kickDevice();
  }

  private kickDevice(): void {
    if (!this.running || this.ctx === null) return;
    try {
      this.device.queueKick(this.ctx);
    } catch (e) {
      this.fail(e as Error);
    }
  }

  /** started && (enabled || PROTOCOL_FEATURES not negotiated) => running. */
  updateRunning(): void {
    const want = this.started && !this.broken && (this.enabled || !has(this.owner.acked(), VHOST_USER_F_PROTOCOL_FEATURES));
    if (want && !this.running && this.stopping) {
      // The device is still draining this queue: start it again once it has.
      void this.stopping.then(() => this.updateRunning());
      return;
    }
    if (want && !this.running && this.ctx) {
      this.running = true;
      this.device.queueStart(this.ctx);
      this.kickDevice(); // chains may already be waiting
    } else if (!want && this.running) {
      void this.stopRunning();
    }
  }

  /**
   * Tells the device to stop serving the queue. The returned promise (also kept as
   * `stopping`, so a later stop waits for it) resolves when the device has drained it, or
   * after STOP_TIMEOUT_MS with an error logged; it never rejects.
   */
  private stopRunning(): Promise<void> {
    if (!this.running || this.ctx === null) return this.stopping ?? Promise.resolve();
    this.running = false;
    const ctx = this.ctx;
    let timer: NodeJS.Timeout | undefined;
    const stop = Promise.resolve()
      .then(() => this.device.queueStop(ctx))
      .catch((e) => this.owner.log.error('device failed to stop a queue', { queue: this.index, error: (e as Error).message }));
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.owner.log.error('device did not stop a queue in time; continuing without it', { queue: this.index, ms: STOP_TIMEOUT_MS });
        resolve();
      }, STOP_TIMEOUT_MS);
    });
    const p = Promise.race([stop, timeout]).finally(() => {
      clearTimeout(timer);
      if (this.stopping === p) this.stopping = null;
    });
    this.stopping = p;
    return p;
  }

  /**
   * GET_VRING_BASE / reset / disconnect: the ring stops; returns its position. `answered`:
   * the position goes to the frontend (GET_VRING_BASE), so the ring record is no longer
   * needed for a restart.
   */
  async stop(answered = false): Promise<number> {
    await this.stopRunning();
    this.kickWatcher?.close();
    this.kickWatcher = null;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
    if (this.kickFd >= 0) closeSync(this.kickFd);
    this.kickFd = -1;
    const base = this.vq ? this.vq.getBase() : this.base;
    if (this.vq) {
      if (answered) this.vq.forgetRingRecord();
      if (this.vq.ringRecordState === 'out-of-order') this.owner.log.warn('the device completed chains out of order: this ring kept no position record', { queue: this.index });
      this.vq.detach();
      this.owner.log.info('ring stopped', { queue: this.index, base });
    }
    this.vq = null;
    this.ctx = null;
    this.started = false;
    this.base = base;
    return base;
  }

  /** After stop, for a device reset: the fds close and the configuration is forgotten (the position too, unless kept). */
  forget(keepPosition: boolean): void {
    for (const k of ['callFd', 'errFd'] as const) {
      if (this[k] >= 0) closeSync(this[k]);
      this[k] = -1;
    }
    this.num = 0;
    this.addr = null;
    if (!keepPosition) {
      this.base = 0;
      this.frontendBase = 0;
    }
    this.enabled = false;
    this.broken = false;
  }

  /** The driver broke the ring (a device found it, or its memory went away): it stops, the frontend hears of it on the err fd. */
  fail(reason: VringError | Error | string): void {
    // A ring that broke on guest memory the frontend truncated: the whole table is
    // untrustworthy, so the session ends (not only the queue).
    if (this.owner.ending()) return;
    if (this.broken) return;
    this.broken = true;
    const why = reason instanceof VringError ? `${reason.code}: ${reason.detail}` : reason instanceof Error ? reason.message : reason;
    this.owner.log.error('queue broken by the driver, stopping it', { queue: this.index, reason: why });
    void this.stopRunning();
    this.owner.broken(this.index, why);
    if (this.errFd >= 0) {
      try {
        writeEventFd(this.errFd);
      } catch {
        // the frontend closed its end
      }
    }
  }

  /** State of the queue, for tools and tests. */
  info(): { index: number; started: boolean; enabled: boolean; running: boolean; broken: boolean; size: number; layout: RingLayout | null } {
    return { index: this.index, started: this.started, enabled: this.enabled, running: this.running, broken: this.broken, size: this.num, layout: this.vq?.layout ?? null };
  }
}

/** The ring areas in frontend addresses. split: driver area = avail ring, device area = used ring; packed: the event areas. */
function ringAddrs(a: VringAddr): { desc: bigint; driver: bigint; device: bigint } {
  return { desc: a.desc, driver: a.avail, device: a.used };
}
