// One connected frontend: the vhost-user state machine. Messages are dispatched through
// a table (request -> payload size, fds, ordering rule, reply kind, handler), one at a
// time: the channel is paused while an async handler (GET_VRING_BASE waiting for the
// device to drain) runs. Any malformed, unknown or out-of-order message ends this
// session with a log line naming it; the process and other sessions keep going.
import { closeSync, fstatSync, readlinkSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { GuestMemory, MAX_REGIONS, createMemfd, guestFaultGuard, onGuestMemoryFault, type RegionSpec } from '../native/guest-memory.js';
import { bit, has, DeviceStatus, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VHOST_F_LOG_ALL } from '../virtio/features.js';
import { RingRecordFile } from './ring-record.js';
import { Vring, inflightQueueBytes, type VringOwner } from './vring.js';

export { inflightQueueBytes } from './vring.js';
import { log as rootLog, type Logger } from '../log.js';
import { MessageChannel, closeFds, takeFd } from './channel.js';
import type { VhostUserDevice } from './device.js';
import { DirtyLog } from './dirty-log.js';
import {
  BackendReq,
  CONFIG_FLAG_MIGRATION,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  LimitError,
  ProtocolError,
  ProtocolFeature,
  Req,
  VRING_IDX_MASK,
  checkRequest,
  configSpace,
  decodeBody,
  inflightArea,
  reqName,
  requestSpec,
  u64,
  vringState,
  type Message,
} from './protocol.js';

/** Protocol features every session implements, whatever the device. */
export const SESSION_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.LOG_SHMFD) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.BACKEND_REQ) |
  bit(ProtocolFeature.RESET_DEVICE) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  bit(ProtocolFeature.STATUS);

/** Features the session itself can honor for any device (dirty logging). */
const SESSION_FEATURES = bit(VHOST_F_LOG_ALL);

type Reply = 'none' | 'payload';
/**
 * What a handler returns: the reply payload (with an fd for GET_INFLIGHT_FD, which stays
 * the session's: the kernel sends a duplicate), or for requests without a reply of their
 * own false to refuse (REPLY_ACK 1) and anything else to accept.
 */
type Result = Uint8Array | { payload: Uint8Array; fd: number } | boolean | void;
/** How the session serves one request; its payload size and fds are checked by the codec (protocol.ts REQUESTS). */
interface Entry {
  /** allowed before SET_OWNER */
  beforeOwner?: boolean;
  /** protocol feature that must have been negotiated */
  needs?: ProtocolFeature;
  reply: Reply;
  handler: (s: Session, m: Message) => Result | Promise<Result>;
}

/**
 * What one frontend may make the session hold. Going past a limit ends the session with
 * a LimitError naming the limit; nothing is mapped or allocated first.
 */
export interface SessionLimits {
  /**
   * Memory regions at once (SET_MEM_TABLE carries at most 8 by the protocol; ADD_MEM_REG
   * adds one at a time). GET_MAX_MEM_SLOTS answers this. Default and most: MAX_REGIONS (64).
   */
  maxMemSlots?: number;
  /**
   * Bytes mapped from the frontend's fds at once: every memory region (with the mmap
   * offset in front of it, which is mapped too), the dirty log (SET_LOG_BASE) and the
   * inflight area (GET/SET_INFLIGHT_FD). Default DEFAULT_MAX_MAPPED_BYTES (1 TiB) keeps a
   * hostile frontend from exhausting the process's address space with sparse memfds.
   */
  maxMappedBytes?: number | bigint;
}

/** Default SessionLimits.maxMappedBytes: 1 TiB of address space per session. */
export const DEFAULT_MAX_MAPPED_BYTES = 1n << 40n;
/** Most queues a device may have: SET_VRING_KICK/CALL/ERR carry the index in 8 bits. */
export const MAX_QUEUES = Number(VRING_IDX_MASK) + 1;
/** Largest queue size (virtio 1.2 §2.6 and §2.8: at most 32768). */
export const MAX_QUEUE_SIZE = 32768;

/** Limits with their defaults applied; throws RangeError on a nonsensical value. */
export function resolveLimits(l: SessionLimits = {}): Required<{ maxMemSlots: number; maxMappedBytes: bigint }> {
  const maxMemSlots = l.maxMemSlots ?? MAX_REGIONS;
  if (!Number.isInteger(maxMemSlots) || maxMemSlots < 1 || maxMemSlots > MAX_REGIONS) throw new RangeError(`maxMemSlots ${maxMemSlots}: expected 1..${MAX_REGIONS}`);
  const maxMappedBytes = BigInt(l.maxMappedBytes ?? DEFAULT_MAX_MAPPED_BYTES);
  if (maxMappedBytes < 4096n) throw new RangeError(`maxMappedBytes ${maxMappedBytes}: expected at least 4096`);
  return { maxMemSlots, maxMappedBytes };
}

/** Throws RangeError if a device declares more queues, or larger ones, than vhost-user can address. */
export function checkDevice(d: VhostUserDevice): void {
  if (!Number.isInteger(d.numQueues) || d.numQueues < 1 || d.numQueues > MAX_QUEUES) throw new RangeError(`device ${d.kind}: ${d.numQueues} queues, expected 1..${MAX_QUEUES}`);
  if (!Number.isInteger(d.maxQueueSize) || d.maxQueueSize < 1 || d.maxQueueSize > MAX_QUEUE_SIZE) {
    throw new RangeError(`device ${d.kind}: largest queue size ${d.maxQueueSize}, expected 1..${MAX_QUEUE_SIZE}`);
  }
}

export interface SessionOptions {
  log?: Logger;
  /** queue burst size for the native rings (default 32) */
  burst?: number;
  limits?: SessionLimits;
  /**
   * Ring position record file (see ring-record.ts): packed rings of a device that
   * completes chains in order (device.inOrder) keep their position there when the
   * frontend offers no inflight area, so a restarted backend continues where the dead one
   * stopped. Unset: no record.
   */
  ringRecord?: string;
}

let nextSessionId = 1;

export class Session extends EventEmitter {
  readonly id = nextSessionId++;
  readonly log: Logger;
  private readonly ch: MessageChannel;
  private owner = false;
  private features = 0n;
  private protocolFeatures = 0n;
  private acked = 0n;
  private status = 0;
  private memory: GuestMemory | null = null;
  /** the regions of `memory` with their fds (owned by the session) */
  private regionSpecs: RegionSpec[] = [];
  /**
   * Regions sent more than once: QEMU before 8.1 sends a multiqueue device's ADD_MEM_REG
   * and REM_MEM_REG once for each queue pair's vhost device, all on this one connection,
   * each device adding and removing the same regions in turn. A region added again (the
   * same guest range at the same frontend address, from the same file at the same offset)
   * is counted, not mapped twice, and unmapped when its last add is taken back. A region
   * some device removed already gives way to one that overlaps it (the first device's
   * replacement); the removals the other devices still send for it are then taken
   * (`replaced`).
   */
  private readonly regionAdds = new Map<RegionSpec, { adds: number; removed: boolean }>();
  private replaced: Array<{ gpa: bigint; size: bigint; uva: bigint; left: number }> = [];
  private readonly slots: Vring[];
  private backendChannel: MessageChannel | null = null;
  private dirtyLog: DirtyLog | null = null;
  private logFd = -1;
  private inflight: { memory: GuestMemory; fd: number; numQueues: number; queueSize: number; bytes: bigint } | null = null;
  /** bytes the dirty log maps (size + offset) */
  private logBytes = 0n;
  private closing = false;
  /** stops listening for guest memory faults (set while a memory table is mapped) */
  private stopFaultWatch: (() => void) | null = null;
  /** a file under guest memory was truncated: the session is ending */
  private memoryLost = false;
  private readonly burst: number;
  private readonly ringRecordPath: string | null;
  private ringRecords: RingRecordFile | null = null;
  readonly limits: { readonly maxMemSlots: number; readonly maxMappedBytes: bigint };

  constructor(
    fd: number,
    readonly device: VhostUserDevice,
    opts: SessionOptions = {},
  ) {
    super();
    this.log = (opts.log ?? rootLog).child({ session: this.id, device: device.kind });
    this.burst = opts.burst ?? 32;
    this.ringRecordPath = opts.ringRecord ?? null;
    checkDevice(device);
    this.limits = resolveLimits(opts.limits);
    const owner = this.vringOwner();
    this.slots = Array.from({ length: device.numQueues }, (_, i) => new Vring(i, owner));
    this.ch = new MessageChannel(fd, {
      message: (m) => this.dispatch(m),
      closed: (reason, err) => void this.teardown(reason, err),
    });
    this.unwatchConfig =
      device.watchConfig?.(() => {
        if (!this.ch.closed) this.notifyConfigChange();
      }) ?? null;
    this.log.info('frontend connected');
  }

  private readonly unwatchConfig: (() => void) | null;

  /** Features offered in GET_FEATURES. */
  get offeredFeatures(): bigint {
    return this.device.features | SESSION_FEATURES | bit(VHOST_USER_F_PROTOCOL_FEATURES);
  }

  get offeredProtocolFeatures(): bigint {
    return SESSION_PROTOCOL_FEATURES | (this.device.configSpace ? bit(ProtocolFeature.CONFIG) : 0n) | this.device.protocolFeatures;
  }

  get negotiatedFeatures(): bigint {
    return this.acked;
  }

  get negotiatedProtocolFeatures(): bigint {
    return this.protocolFeatures;
  }

  get deviceStatus(): number {
    return this.status;
  }

  get closed(): boolean {
    return this.ch.closed;
  }

  /** The session is closed or closing, or its frontend has closed the connection. */
  get frontendGone(): boolean {
    return this.closing || this.ch.peerGone;
  }

  /** Ends the session: rings stopped, regions unmapped, fds closed. */
  close(reason = 'closed by the backend'): Promise<void> {
    this.ch.close(reason);
    return this.done;
  }

  /** Resolves when the session is torn down. */
  readonly done: Promise<void> = new Promise((resolve) => this.once('closed', () => resolve()));

  /**
   * Tells the frontend the config space changed: CONFIG_CHANGE_MSG on the backend channel
   * (vhost-user.rst: needs the CONFIG and BACKEND_REQ protocol features; NEED_REPLY when
   * REPLY_ACK was negotiated, and a non-zero answer is logged). QEMU's vhost-user-blk
   * answers it by reading the config space again (GET_CONFIG) and, if the capacity
   * changed, interrupting the guest (virtio_notify_config). Returns false, and says why
   * in the log, when the frontend cannot be told.
   */
  notifyConfigChange(): boolean {
    const missing = [ProtocolFeature.CONFIG, ProtocolFeature.BACKEND_REQ].filter((f) => !(this.protocolFeatures & bit(f)));
    if (missing.length > 0) {
      this.log.warn('config space changed; the frontend cannot be told', { reason: `protocol feature ${missing.map((f) => ProtocolFeature[f]).join(', ')} not negotiated` });
      return false;
    }
    if (!this.backendChannel || this.backendChannel.closed) {
      this.log.warn('config space changed; the frontend cannot be told', { reason: 'no backend channel (SET_BACKEND_REQ_FD)' });
      return false;
    }
    const ack = (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
    this.backendChannel.send(BackendReq.CONFIG_CHANGE_MSG, ack ? FLAG_NEED_REPLY : 0);
    this.configChangesSent++;
    this.log.info('config space changed; frontend notified (CONFIG_CHANGE_MSG)', { replyAck: ack });
    return true;
  }

  /** CONFIG_CHANGE_MSG sent, and the answers (REPLY_ACK) received: ok and failed. */
  configChangesSent = 0;
  readonly configChangeReplies = { ok: 0, failed: 0 };

  private onBackendReply(r: Message): void {
    closeFds(r.fds);
    if (r.request !== BackendReq.CONFIG_CHANGE_MSG || !(r.flags & FLAG_REPLY)) return;
    let v: bigint;
    try {
      v = u64.decode(r.payload, 'CONFIG_CHANGE_MSG reply');
    } catch {
      v = -1n;
    }
    if (v === 0n) this.configChangeReplies.ok++;
    else {
      this.configChangeReplies.failed++;
      this.log.warn('the frontend refused CONFIG_CHANGE_MSG', { answer: String(v) });
    }
  }

  /** State of each queue, for tools and tests. */
  queues(): Array<ReturnType<Vring['info']>> {
    return this.slots.map((s) => s.info());
  }

  // ---- dispatch ------------------------------------------------------------

  private dispatch(m: Message): void {
    const name = reqName(m.request);
    const entry = Session.table.get(m.request as Req);
    try {
      if (entry === undefined) throw new ProtocolError(`unknown or unsupported ${name}`);
      checkRequest(m); // header flags, payload size, fd count
      if (!this.owner && !entry.beforeOwner) throw new ProtocolError(`${name} before VHOST_USER_SET_OWNER`);
      if (entry.needs !== undefined && !(this.protocolFeatures & bit(entry.needs))) {
        throw new ProtocolError(`${name} without protocol feature ${ProtocolFeature[entry.needs]}`);
      }
      this.log.debug('message', { request: name, size: m.payload.length, fds: m.fds.length });
      const r = entry.handler(this, m);
      if (r instanceof Promise) {
        this.ch.pause();
        r.then(
          (v) => {
            this.finishMessage(m, entry, v);
            this.ch.resume();
          },
          (e) => this.fatal(m, e),
        );
      } else {
        this.finishMessage(m, entry, r);
      }
    } catch (e) {
      this.fatal(m, e);
    }
  }

  private finishMessage(m: Message, entry: Entry, result: Result): void {
    closeFds(m.fds); // every fd the handler did not take
    if (this.ch.closed) return;
    if (entry.reply === 'payload') {
      // An explicit reply is the only answer: NEED_REPLY brings no REPLY_ACK on top
      // (vhost-user.rst, "REPLY_ACK": no behavioural change for messages with a reply).
      if (result instanceof Uint8Array) this.ch.send(m.request, FLAG_REPLY, result);
      else if (typeof result === 'object') this.ch.send(m.request, FLAG_REPLY, result.payload, [result.fd]);
      else this.ch.send(m.request, FLAG_REPLY, new Uint8Array(0));
    } else if (m.flags & FLAG_NEED_REPLY && this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) {
      this.ch.send(m.request, FLAG_REPLY, u64.encode(result === false ? 1n : 0n));
    }
  }

  private fatal(m: Message, e: unknown): void {
    closeFds(m.fds);
    const reason = e instanceof Error ? e.message : String(e);
    // REPLY_ACK's failure answer, for requests without an explicit reply of their own: a
    // u64 sent for one (GET_VRING_BASE, GET_CONFIG, ...) would read as that reply.
    const explicit = Session.table.get(m.request as Req)?.reply === 'payload' || requestSpec(m.request)?.reply !== undefined;
    if (!this.ch.closed && !explicit && m.flags & FLAG_NEED_REPLY && this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) {
      try {
        this.ch.send(m.request, FLAG_REPLY, u64.encode(1n));
      } catch {
        // the connection is going away anyway
      }
    }
    this.log.error('closing session', { request: reqName(m.request), reason });
    this.ch.close(reason);
  }

  // ---- queues --------------------------------------------------------------

  private slot(index: number, what: string): Vring {
    const s = this.slots[index];
    if (!Number.isInteger(index) || s === undefined) throw new ProtocolError(`${what}: queue ${index}, the device has ${this.slots.length}`);
    return s;
  }

  /** A device's data plane found queue `index` broken by the driver (see QueueContext.fail). */
  failQueueByIndex(index: number, reason: string): void {
    this.slots[index]?.fail(reason);
  }

  /** What the rings see of the session (vring.ts). */
  private vringOwner(): VringOwner {
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias
    return {
      device: this.device,
      log: this.log,
      burst: this.burst,
      memory: () => self.memory,
      acked: () => self.acked,
      inflight: () => self.inflight,
      dirtyLog: () => self.dirtyLog,
      ringRecords: () => self.openRingRecords(),
      ending: () => self.endIfMemoryLost(),
      broken: (index, why) => {
        if (self.protocolFeatures & bit(ProtocolFeature.STATUS)) self.status |= DeviceStatus.DEVICE_NEEDS_RESET;
        self.emit('queue-error', index, why);
      },
    };
  }

  /** The ring record file, opened on first use; null when the session keeps none or it cannot be opened. */
  private openRingRecords(): RingRecordFile | null {
    if (this.ringRecordPath === null) return null;
    try {
      this.ringRecords ??= RingRecordFile.open(this.ringRecordPath, this.device.numQueues);
    } catch (e) {
      // The ring works without it; only a restart after a crash cannot continue it.
      this.log.warn('ring record file not available; a restarted backend will not find this ring position', { path: this.ringRecordPath, error: (e as Error).message });
      return null;
    }
    return this.ringRecords;
  }

  /**
   * Ends the session if the frontend truncated a file under its memory table (the SIGBUS
   * guard, native/memory/guest_fault.h, recovered the access and marked the region): one
   * log line per region lost, naming it. Returns whether it did.
   */
  private endIfMemoryLost(): boolean {
    if (this.memoryLost) return true; // said once; the session is ending
    if (this.closing) return false;
    if (this.dirtyLog?.lost) {
      this.memoryLost = true;
      this.log.error('guest memory file truncated, ending the session', { region: 'dirty log', size: this.dirtyLog.size, fd: -1, file: '' });
      void this.close('guest memory file truncated');
      return true;
    }
    const mem = this.memory;
    if (mem === null) return false;
    const lost = mem.lostRegions();
    if (lost.length === 0) return false;
    this.memoryLost = true;
    for (const i of lost) {
      const r = mem.regions[i];
      const spec = this.regionSpecs.find((x) => x.gpa === r.gpa && x.size === r.size);
      let file = '';
      try {
        if (spec) file = readlinkSync(`/proc/self/fd/${spec.fd}`);
      } catch {
        // the fd is gone: name the region without it
      }
      this.log.error('guest memory file truncated, ending the session', { region: i, gpa: r.gpa, size: r.size, mmapOffset: r.mmapOffset, fd: spec?.fd ?? -1, file });
    }
    void this.close('guest memory file truncated');
    return true;
  }

  /** Runs `change` with the device's running queues paused (if the device needs it). */
  private async underPause<T>(change: () => T): Promise<T> {
    const running = this.slots.some((s) => s.running);
    if (running && this.device.pauseQueues) await this.device.pauseQueues();
    try {
      return change();
    } finally {
      if (running && this.device.pauseQueues) this.device.resumeQueues?.();
    }
  }

  /** Bytes the memory table maps: each region with the mmap offset in front of it. */
  private static tableBytes(regions: ReadonlyArray<{ size: bigint; mmapOffset: bigint }>): bigint {
    return regions.reduce((n, r) => n + r.size + r.mmapOffset, 0n);
  }

  /**
   * Refuses a change that would map more than limits.maxMappedBytes in all: the memory
   * table, the dirty log and the inflight area, each as it would be after the change.
   */
  private checkMapped(what: string, change: { memory?: bigint; log?: bigint; inflight?: bigint }): void {
    const memory = change.memory ?? (this.memory ? Session.tableBytes(this.memory.regions) : 0n);
    const total = memory + (change.log ?? this.logBytes) + (change.inflight ?? this.inflight?.bytes ?? 0n);
    if (total > this.limits.maxMappedBytes) throw new LimitError('maxMappedBytes', what, `${total} bytes mapped`, this.limits.maxMappedBytes);
  }

  private checkSlots(what: string, regions: number): void {
    if (regions > this.limits.maxMemSlots) throw new LimitError('maxMemSlots', what, `${regions} memory regions`, this.limits.maxMemSlots);
  }

  /** Swaps guest memory under running queues (SET_MEM_TABLE, ADD/REM_MEM_REG). */
  replaceMemory(mem: GuestMemory, specs: RegionSpec[]): Promise<void> {
    return this.underPause(() => this.swapMemory(mem, specs));
  }

  /** Closes the region fds of `specs` that `keep` does not hold. */
  private static closeRegionFds(specs: RegionSpec[], keep: RegionSpec[] = []): void {
    for (const r of specs) if (!keep.some((k) => k.fd === r.fd)) closeSync(r.fd);
  }

  private swapMemory(mem: GuestMemory, specs: RegionSpec[]): void {
    if (this.closing) {
      // Torn down while the device paused its queues: this table belongs to no one.
      mem.close();
      Session.closeRegionFds(specs, this.regionSpecs);
      return;
    }
    const old = this.memory;
    this.memory = mem;
    this.stopFaultWatch ??= onGuestMemoryFault(() => this.endIfMemoryLost());
    if (mem.regions.some((r) => !r.sealed && !r.guarded)) {
      this.log.warn('guest memory can be truncated by the frontend and the SIGBUS guard is not installed: that would kill the process', { error: guestFaultGuard().error });
    }
    Session.closeRegionFds(this.regionSpecs, specs);
    this.regionSpecs = specs;
    for (const s of this.slots) s.remap(mem);
    if (this.slots.some((s) => s.vq)) this.device.memoryChanged?.(mem);
    old?.close();
    this.log.info('memory table set', { regions: mem.regions.length, bytes: mem.regions.reduce((n, r) => n + r.size, 0n) });
  }

  /**
   * Stops every ring and forgets the negotiation. `keepPositions`: each ring keeps where it
   * stopped, for a GET_VRING_BASE that follows (see setStatus); the next start of a ring is
   * preceded by SET_VRING_BASE all the same.
   */
  async resetDevice(why: string, keepPositions = false): Promise<void> {
    for (const s of this.slots) await s.stop();
    for (const s of this.slots) s.forget(keepPositions);
    this.acked = 0n;
    this.status = 0;
    this.device.reset?.();
    this.log.info('device reset', { why });
  }

  private async teardown(reason: string, err?: Error): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.unwatchConfig?.();
    const level = reason === 'eof' ? 'info' : 'warn';
    this.log[level]('frontend disconnected', { reason, ...(err && !(err instanceof ProtocolError) ? { error: err.message } : {}) });
    try {
      await this.resetDevice('disconnect');
    } catch (e) {
      this.log.error('device stop failed during teardown', { error: (e as Error).message });
    }
    this.stopFaultWatch?.();
    this.stopFaultWatch = null;
    this.memory?.close();
    this.memory = null;
    Session.closeRegionFds(this.regionSpecs);
    this.regionSpecs = [];
    this.regionAdds.clear();
    this.replaced = [];
    this.backendChannel?.close('session closed');
    this.backendChannel = null;
    this.dirtyLog?.close();
    this.dirtyLog = null;
    this.logBytes = 0n;
    if (this.logFd >= 0) closeSync(this.logFd);
    this.logFd = -1;
    if (this.inflight) {
      this.inflight.memory.close();
      closeSync(this.inflight.fd);
      this.inflight = null;
    }
    this.ringRecords?.close();
    this.ringRecords = null;
    this.emit('closed', reason);
  }

  // ---- handlers (called through the table) --------------------------------

  /** The request handlers, by name; the dispatch table (Session.table) says which serves which request. */
  private readonly h = {
    getFeatures: (): Uint8Array => u64.encode(this.offeredFeatures),
    setFeatures: (m: Message): boolean | void => {
      const f = decodeBody(Req.SET_FEATURES, m);
      const extra = f & ~this.offeredFeatures;
      if (extra) throw new ProtocolError(`SET_FEATURES acks features never offered: 0x${extra.toString(16)}`);
      const wasLogging = has(this.acked, VHOST_F_LOG_ALL);
      this.acked = f;
      this.device.featuresNegotiated?.(f);
      if (wasLogging !== has(f, VHOST_F_LOG_ALL)) for (const s of this.slots) s.attachLog();
      this.log.info('features negotiated', { features: f });
    },
    getProtocolFeatures: (): Uint8Array => u64.encode(this.offeredProtocolFeatures),
    setProtocolFeatures: (m: Message): void => {
      const f = decodeBody(Req.SET_PROTOCOL_FEATURES, m);
      const extra = f & ~this.offeredProtocolFeatures;
      if (extra) throw new ProtocolError(`SET_PROTOCOL_FEATURES acks features never offered: 0x${extra.toString(16)}`);
      this.protocolFeatures = f;
      this.log.info('protocol features negotiated', { protocolFeatures: f });
    },
    setOwner: (): void => {
      this.owner = true;
    },
    resetOwner: async (): Promise<void> => {
      // Deprecated; the spec recommends disabling the rings.
      for (const s of this.slots) await s.stop();
    },
    // Every table is mapped whole from the regions' fds (kept in regionSpecs), never
    // derived with GuestMemory.withRegion / withoutRegion: a derived table's mappings
    // stay until the garbage collector frees a native handle, long after close(), and a
    // frontend adding and removing regions could pile up address space meanwhile.
    setMemTable: (m: Message): Promise<void> => {
      const regions = decodeBody(Req.SET_MEM_TABLE, m);
      this.checkSlots('SET_MEM_TABLE', regions.length);
      this.checkMapped('SET_MEM_TABLE', { memory: Session.tableBytes(regions) });
      const specs: RegionSpec[] = regions.map((r, i) => ({ fd: m.fds[i], ...r }));
      const mem = mapOrThrow(() => GuestMemory.map(specs));
      regions.forEach((_, i) => takeFd(m, i)); // kept for the next ADD/REM_MEM_REG
      this.regionAdds.clear();
      this.replaced = [];
      return this.replaceMemory(mem, specs);
    },
    getMaxMemSlots: (): Uint8Array => u64.encode(BigInt(this.limits.maxMemSlots)),
    addMemReg: (m: Message): Promise<void> => {
      const r = decodeBody(Req.ADD_MEM_REG, m);
      const same = this.regionSpecs.findIndex((x) => x.gpa === r.gpa && x.size === r.size && x.uva === r.uva && x.mmapOffset === r.mmapOffset && sameFile(x.fd, m.fds[0]));
      if (same >= 0) {
        // (its fd is closed with the message's)
        const x = this.regionSpecs[same];
        const c = this.regionAdds.get(x) ?? { adds: 1, removed: false };
        c.adds++;
        this.regionAdds.set(x, c);
        this.log.debug('memory region added again: counted, not mapped twice', { gpa: r.gpa, size: r.size });
        return Promise.resolve();
      }
      const overlapped = this.regionSpecs.filter((x) => x.gpa < r.gpa + r.size && r.gpa < x.gpa + x.size);
      const givesWay = overlapped.length > 0 && overlapped.every((x) => this.regionAdds.get(x)?.removed === true);
      for (const x of givesWay ? overlapped : []) {
        this.replaced.push({ gpa: x.gpa, size: x.size, uva: x.uva, left: this.regionAdds.get(x)!.adds });
        this.regionAdds.delete(x);
      }
      // (a frontend that never sends those removals cannot grow the list past its slots)
      this.replaced.splice(0, Math.max(0, this.replaced.length - this.limits.maxMemSlots));
      const kept = givesWay ? this.regionSpecs.filter((x) => !overlapped.includes(x)) : this.regionSpecs;
      this.checkSlots('ADD_MEM_REG', kept.length + 1);
      this.checkMapped('ADD_MEM_REG', { memory: Session.tableBytes([...kept, r]) });
      const specs = [...kept, { fd: m.fds[0], ...r }];
      const mem = mapOrThrow(() => GuestMemory.map(specs));
      takeFd(m);
      return this.replaceMemory(mem, specs);
    },
    remMemReg: (m: Message): Promise<void> => {
      const r = decodeBody(Req.REM_MEM_REG, m);
      if (this.memory === null) throw new ProtocolError('REM_MEM_REG with no memory table');
      const i = this.regionSpecs.findIndex((x) => x.gpa === r.gpa && x.size === r.size && x.uva === r.uva);
      if (i < 0) {
        const g = this.replaced.findIndex((x) => x.gpa === r.gpa && x.size === r.size && x.uva === r.uva);
        if (g < 0) throw ProtocolError.mismatch('REM_MEM_REG', `no region at gpa 0x${r.gpa.toString(16)} of size 0x${r.size.toString(16)}`, 'expected one of the memory table');
        if (--this.replaced[g].left === 0) this.replaced.splice(g, 1);
        return Promise.resolve();
      }
      const c = this.regionAdds.get(this.regionSpecs[i]);
      if (c && c.adds > 1) {
        c.adds--;
        c.removed = true;
        return Promise.resolve();
      }
      this.regionAdds.delete(this.regionSpecs[i]);
      const specs = this.regionSpecs.filter((_, k) => k !== i);
      return this.replaceMemory(
        mapOrThrow(() => GuestMemory.map(specs)),
        specs,
      );
    },
    setVringNum: (m: Message): void => {
      const st = decodeBody(Req.SET_VRING_NUM, m);
      const s = this.slot(st.index, 'SET_VRING_NUM');
      if (s.started) throw new ProtocolError(`SET_VRING_NUM on running queue ${st.index}`);
      const packed = has(this.acked, VIRTIO_F_RING_PACKED);
      if (st.num === 0 || st.num > this.device.maxQueueSize || (!packed && (st.num & (st.num - 1)) !== 0)) {
        throw new ProtocolError(`SET_VRING_NUM: queue size ${st.num} (at most ${this.device.maxQueueSize}${packed ? '' : ', a power of 2'})`);
      }
      s.num = st.num;
    },
    setVringAddr: async (m: Message): Promise<void> => {
      const a = decodeBody(Req.SET_VRING_ADDR, m);
      const s = this.slot(a.index, 'SET_VRING_ADDR');
      const old = s.addr;
      s.addr = a;
      if (s.vq) {
        // On a running ring QEMU changes the LOG flag (migration start/stop): thread-safe.
        s.attachLog();
        if (old === null || old.desc !== a.desc || old.used !== a.used || old.avail !== a.avail) await this.underPause(() => s.moveRings(a));
      }
    },
    setVringBase: (m: Message): void => {
      const st = decodeBody(Req.SET_VRING_BASE, m);
      const s = this.slot(st.index, 'SET_VRING_BASE');
      if (s.started) throw new ProtocolError(`SET_VRING_BASE on running queue ${st.index}`);
      s.base = st.num;
      s.frontendBase = st.num;
    },
    getVringBase: async (m: Message): Promise<Uint8Array> => {
      const st = decodeBody(Req.GET_VRING_BASE, m);
      const s = this.slot(st.index, 'GET_VRING_BASE');
      const base = await s.stop(true);
      return vringState.encode({ index: st.index, num: base });
    },
    setVringKick: async (m: Message): Promise<void> => {
      const f = decodeBody(Req.SET_VRING_KICK, m);
      const s = this.slot(f.index, 'SET_VRING_KICK');
      const fd = f.noFd ? -1 : takeFd(m);
      // A new kick fd for a started ring: stop it (the device drains, the ring state
      // carries over), then start again with the new fd.
      if (s.started || s.stopping) {
        try {
          await s.stop();
        } catch (e) {
          if (fd >= 0) closeSync(fd);
          throw e;
        }
      }
      s.kickFd = fd;
      s.polling = f.noFd;
      s.start();
    },
    setVringCall: (m: Message): void => {
      const f = decodeBody(Req.SET_VRING_CALL, m);
      const s = this.slot(f.index, 'SET_VRING_CALL');
      if (s.callFd >= 0) closeSync(s.callFd);
      s.callFd = f.noFd ? -1 : takeFd(m);
      s.vq?.setCallFd(s.callFd);
    },
    setVringErr: (m: Message): void => {
      const f = decodeBody(Req.SET_VRING_ERR, m);
      const s = this.slot(f.index, 'SET_VRING_ERR');
      if (s.errFd >= 0) closeSync(s.errFd);
      s.errFd = f.noFd ? -1 : takeFd(m);
    },
    getQueueNum: (): Uint8Array => u64.encode(BigInt(this.device.numQueues)),
    setVringEnable: (m: Message): void => {
      const st = decodeBody(Req.SET_VRING_ENABLE, m);
      const s = this.slot(st.index, 'SET_VRING_ENABLE');
      if (st.num > 1) throw new ProtocolError(`SET_VRING_ENABLE: value ${st.num}`);
      if (!has(this.acked, VHOST_USER_F_PROTOCOL_FEATURES) && this.acked !== 0n) {
        throw new ProtocolError('SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES negotiated');
      }
      s.enabled = st.num === 1;
      s.updateRunning();
    },
    sendRarp: (m: Message): boolean => {
      if (!this.device.sendRarp) return false;
      this.device.sendRarp(decodeBody(Req.SEND_RARP, m));
      return true;
    },
    netSetMtu: (m: Message): boolean | Promise<boolean> => {
      const mtu = decodeBody(Req.NET_SET_MTU, m);
      if (!this.device.setMtu || mtu > 65535n) return false;
      return this.device.setMtu(Number(mtu));
    },
    setBackendReqFd: (m: Message): void => {
      this.backendChannel?.close('replaced');
      this.backendChannel = new MessageChannel(takeFd(m), {
        message: (r) => this.onBackendReply(r), // replies to our requests (CONFIG_CHANGE_MSG's REPLY_ACK)
        closed: () => {
          this.backendChannel = null;
        },
      });
    },
    getConfig: (m: Message): Uint8Array => {
      const c = decodeBody(Req.GET_CONFIG, m);
      const space = this.device.configSpace?.();
      if (!space || c.offset + c.size > space.length) return new Uint8Array(0); // zero length: error
      return configSpace.encode({ ...c, data: space.subarray(c.offset, c.offset + c.size) });
    },
    setConfig: (m: Message): boolean => {
      const c = decodeBody(Req.SET_CONFIG, m);
      if (!this.device.setConfig) return false;
      return this.device.setConfig(c.offset, c.data, c.flags & CONFIG_FLAG_MIGRATION);
    },
    setLogBase: (m: Message): Uint8Array => {
      const a = decodeBody(Req.SET_LOG_BASE, m);
      this.checkMapped('SET_LOG_BASE', { log: a.size + a.offset });
      const fd = takeFd(m);
      try {
        const next = DirtyLog.map(fd, a.size, a.offset);
        this.dirtyLog?.close();
        this.dirtyLog = next;
        this.stopFaultWatch ??= onGuestMemoryFault(() => this.endIfMemoryLost());
        this.logBytes = a.size + a.offset;
      } catch (e) {
        throw new ProtocolError(`SET_LOG_BASE: ${(e as Error).message}`);
      } finally {
        closeSync(fd);
      }
      for (const s of this.slots) s.attachLog();
      return u64.encode(0n);
    },
    setLogFd: (m: Message): void => {
      if (this.logFd >= 0) closeSync(this.logFd);
      this.logFd = takeFd(m);
    },
    getInflightFd: (m: Message): { payload: Uint8Array; fd: number } => {
      const a = decodeBody(Req.GET_INFLIGHT_FD, m);
      if (a.numQueues === 0 || a.numQueues > this.device.numQueues || a.queueSize === 0 || a.queueSize > this.device.maxQueueSize) {
        throw new ProtocolError(`GET_INFLIGHT_FD: ${a.numQueues} queues of ${a.queueSize} (device: ${this.device.numQueues} of at most ${this.device.maxQueueSize})`);
      }
      const size = a.numQueues * inflightQueueBytes(a.queueSize, has(this.acked, VIRTIO_F_RING_PACKED));
      this.checkMapped('GET_INFLIGHT_FD', { inflight: BigInt(size) });
      const fd = createMemfd('vhostkit-inflight', size);
      this.setInflight(fd, BigInt(size), 0n, a.numQueues, a.queueSize);
      return { payload: inflightArea.encode({ mmapSize: BigInt(size), mmapOffset: 0n, numQueues: a.numQueues, queueSize: a.queueSize }), fd };
    },
    setInflightFd: (m: Message): void => {
      const a = decodeBody(Req.SET_INFLIGHT_FD, m);
      const expect = BigInt(a.numQueues * inflightQueueBytes(a.queueSize, has(this.acked, VIRTIO_F_RING_PACKED)));
      if (a.numQueues > this.device.numQueues || a.queueSize > this.device.maxQueueSize || a.mmapSize < expect) {
        throw new ProtocolError(`SET_INFLIGHT_FD: ${a.numQueues} queues of ${a.queueSize} in ${a.mmapSize} bytes`);
      }
      this.checkMapped('SET_INFLIGHT_FD', { inflight: a.mmapSize + a.mmapOffset });
      const fd = takeFd(m);
      this.setInflight(fd, a.mmapSize, a.mmapOffset, a.numQueues, a.queueSize);
    },
    resetDevice: (): Promise<void> => this.resetDevice('RESET_DEVICE'),
    setStatus: async (m: Message): Promise<void> => {
      const st = Number(decodeBody(Req.SET_STATUS, m) & 0xffn);
      if (st === 0) {
        // QEMU before 8.1 stops a device (VM stop, live migration) with SET_STATUS 0 and only
        // then asks each ring's position with GET_VRING_BASE, and migrates what it is told:
        // the positions outlive this reset (a driver's own reset is followed by SET_VRING_BASE).
        await this.resetDevice('status 0', true);
        return;
      }
      this.status = (this.status & DeviceStatus.DEVICE_NEEDS_RESET) | st;
      this.log.info('device status', { status: st });
    },
    getStatus: (): Uint8Array => u64.encode(BigInt(this.status)),
  };

  private static H(k: keyof Session['h']): Entry['handler'] {
    return (s, m) => (s.h[k] as (m: Message) => ReturnType<Entry['handler']>)(m);
  }

  /** The dispatch table: every front-end request we serve. */
  private static readonly table = new Map<Req, Entry>([
    [Req.GET_FEATURES, { beforeOwner: true, reply: 'payload', handler: Session.H('getFeatures') }],
    [Req.SET_FEATURES, { reply: 'none', handler: Session.H('setFeatures') }],
    [Req.GET_PROTOCOL_FEATURES, { beforeOwner: true, reply: 'payload', handler: Session.H('getProtocolFeatures') }],
    [Req.SET_PROTOCOL_FEATURES, { beforeOwner: true, reply: 'none', handler: Session.H('setProtocolFeatures') }],
    [Req.SET_OWNER, { beforeOwner: true, reply: 'none', handler: Session.H('setOwner') }],
    [Req.RESET_OWNER, { reply: 'none', handler: Session.H('resetOwner') }],
    [Req.SET_MEM_TABLE, { reply: 'none', handler: Session.H('setMemTable') }],
    [Req.GET_MAX_MEM_SLOTS, { beforeOwner: true, needs: ProtocolFeature.CONFIGURE_MEM_SLOTS, reply: 'payload', handler: Session.H('getMaxMemSlots') }],
    [Req.ADD_MEM_REG, { needs: ProtocolFeature.CONFIGURE_MEM_SLOTS, reply: 'none', handler: Session.H('addMemReg') }],
    [Req.REM_MEM_REG, { needs: ProtocolFeature.CONFIGURE_MEM_SLOTS, reply: 'none', handler: Session.H('remMemReg') }],
    [Req.SET_VRING_NUM, { reply: 'none', handler: Session.H('setVringNum') }],
    [Req.SET_VRING_ADDR, { reply: 'none', handler: Session.H('setVringAddr') }],
    [Req.SET_VRING_BASE, { reply: 'none', handler: Session.H('setVringBase') }],
    [Req.GET_VRING_BASE, { reply: 'payload', handler: Session.H('getVringBase') }],
    [Req.SET_VRING_KICK, { reply: 'none', handler: Session.H('setVringKick') }],
    [Req.SET_VRING_CALL, { reply: 'none', handler: Session.H('setVringCall') }],
    [Req.SET_VRING_ERR, { reply: 'none', handler: Session.H('setVringErr') }],
    [Req.GET_QUEUE_NUM, { beforeOwner: true, needs: ProtocolFeature.MQ, reply: 'payload', handler: Session.H('getQueueNum') }],
    [Req.SET_VRING_ENABLE, { reply: 'none', handler: Session.H('setVringEnable') }],
    [Req.SEND_RARP, { needs: ProtocolFeature.RARP, reply: 'none', handler: Session.H('sendRarp') }],
    [Req.NET_SET_MTU, { needs: ProtocolFeature.MTU, reply: 'none', handler: Session.H('netSetMtu') }],
    [Req.SET_BACKEND_REQ_FD, { beforeOwner: true, needs: ProtocolFeature.BACKEND_REQ, reply: 'none', handler: Session.H('setBackendReqFd') }],
    [Req.GET_CONFIG, { beforeOwner: true, needs: ProtocolFeature.CONFIG, reply: 'payload', handler: Session.H('getConfig') }],
    [Req.SET_CONFIG, { needs: ProtocolFeature.CONFIG, reply: 'none', handler: Session.H('setConfig') }],
    [Req.SET_LOG_BASE, { needs: ProtocolFeature.LOG_SHMFD, reply: 'payload', handler: Session.H('setLogBase') }],
    [Req.SET_LOG_FD, { reply: 'none', handler: Session.H('setLogFd') }],
    [Req.GET_INFLIGHT_FD, { needs: ProtocolFeature.INFLIGHT_SHMFD, reply: 'payload', handler: Session.H('getInflightFd') }],
    [Req.SET_INFLIGHT_FD, { needs: ProtocolFeature.INFLIGHT_SHMFD, reply: 'none', handler: Session.H('setInflightFd') }],
    [Req.RESET_DEVICE, { needs: ProtocolFeature.RESET_DEVICE, reply: 'none', handler: Session.H('resetDevice') }],
    [Req.SET_STATUS, { needs: ProtocolFeature.STATUS, reply: 'none', handler: Session.H('setStatus') }],
    [Req.GET_STATUS, { needs: ProtocolFeature.STATUS, reply: 'payload', handler: Session.H('getStatus') }],
  ]);

  /** Requests the session serves (for docs and tests). */
  static requests(): Req[] {
    return [...Session.table.keys()];
  }

  private setInflight(fd: number, size: bigint, offset: bigint, numQueues: number, queueSize: number): void {
    let memory: GuestMemory;
    try {
      memory = GuestMemory.map([{ fd, gpa: 0n, size, uva: 0n, mmapOffset: offset }]);
    } catch (e) {
      closeSync(fd);
      throw new ProtocolError(`inflight area: ${(e as Error).message}`);
    }
    if (this.inflight) {
      this.inflight.memory.close();
      closeSync(this.inflight.fd);
    }
    this.inflight = { memory, fd, numQueues, queueSize, bytes: size + offset };
  }
}

function mapOrThrow(f: () => GuestMemory): GuestMemory {
  try {
    return f();
  } catch (e) {
    throw new ProtocolError((e as Error).message);
  }
}

/** Requests the session serves (for docs and tests). */
export const supportedRequests: Req[] = Session.requests();

/** Whether two fds open the same file (device and inode). */
function sameFile(a: number, b: number | undefined): boolean {
  if (b === undefined || b < 0) return false;
  const x = fstatSync(a);
  const y = fstatSync(b);
  return x.dev === y.dev && x.ino === y.ino;
}
