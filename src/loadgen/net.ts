// A virtio-net port for benchmarks: a sink that takes every frame the driver sends, reads
// it into a buffer of its own (as the vhost PMD copies each frame into an mbuf) or, with
// `sink: 'drop'`, returns it unread; and optionally a generator that fills every receive buffer the driver gives
// with a fixed frame. The reference it is measured against is dpdk-testpmd's vhost PMD in
// rxonly / txonly mode. Queues are served by a Poller (busy, event or adaptive), on the
// calling thread or on data-plane worker threads (queue pair i on thread i mod threads,
// each thread optionally pinned to a CPU).
//
// Per burst: sink = one pop, one native call that copies the burst's frames out (not for
// 'drop') and one push (used length 0); generator = one native call that copies the
// burst's frames into receive buffers and pushes them.
import { WorkerRpc } from '../dataplane/worker-rpc.js';
import { NetLaneCalls, type NetLaneEvent } from './net-lane-calls.js';
import { fileURLToPath } from 'node:url';
import type { QueueContext, VhostUserDevice } from '../vhost-user/device.js';
import type { GuestMemory } from '../native/guest-memory.js';
import { bit, has, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VirtioDeviceId } from '../virtio/features.js';
import { NetFeature } from '../virtio/net.js';
import { DELIVER_STATS, DeliverStat, FlatFrames, FlatSink, MAX_FRAME, type RxSide } from '../native/net.js';
import { Poller, type PollMode, type PollTarget } from '../dataplane/poller.js';
import { ethFrame, macBytes } from '../virtio/net-frames.js';
import type { Virtqueue } from '../native/virtqueue.js';
import { handOver } from '../native/parked.js';

/**
 * What the sink does with a frame: 'copy' reads it into memory of its own (what a real
 * receiver must do; the vhost PMD copies it into an mbuf), 'drop' returns its buffer
 * without reading it (the ring's cost alone).
 */
export type SinkMode = 'copy' | 'drop';
export const SINK_MODES: readonly SinkMode[] = ['copy', 'drop'];

export interface NetLoadOptions {
  /** fill the driver's receive buffers with frames (a traffic generator) */
  generate?: boolean;
  /** what the sink does with each frame (default 'copy') */
  sink?: SinkMode;
  /** generated frame length in bytes (Ethernet header included, no FCS); default 64 */
  frameBytes?: number;
  poll?: PollMode;
  /** offer the packed ring (default true) */
  packed?: boolean;
  mac?: string;
  burst?: number;
  /** queue pairs offered (VIRTIO_NET_F_MQ above 1; default 1) */
  queuePairs?: number;
  /** data-plane worker threads (default 0: serve the queues on the calling thread) */
  threads?: number;
  /** CPUs to pin the worker threads to: thread k on cpus[k mod length] */
  cpus?: number[];
}

export interface NetLoadCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  noBuffers: number;
}

/** One data-plane thread: where it runs and what it serves. */
export interface NetLoadThreadStats {
  /** -1: the calling thread */
  thread: number;
  /** CPUs it is pinned to (empty: not pinned) */
  cpus: number[];
  /** queue indices it serves now */
  queues: number[];
  rxPackets: number;
  txPackets: number;
  poll: { slices: number; sleeps: number; wakes: number; polls: number; work: number };
}

// Counter slots of one thread (a Float64Array, shared with the main thread for workers).
const C = { RX_P: 0, RX_B: 1, TX_P: 2, TX_B: 3, NOBUF: 4, SLICES: 5, SLEEPS: 6, WAKES: 7, POLLS: 8, WORK: 9 } as const;
const C_LEN = 10;

/** What a thread needs to serve one queue. */
export interface QueueSpec {
  index: number;
  hdrLen: number;
  mergeable: boolean;
}

export interface FrameSpec {
  generate: boolean;
  sink: SinkMode;
  frameBytes: number;
  burst: number;
}

/** Serves net-load queues on the thread that creates it. */
export class NetLoadServer {
  readonly poller: Poller;
  private readonly targets = new Map<number, PollTarget>();
  private readonly frames: FlatFrames;
  private readonly stats = new Uint32Array(DELIVER_STATS);
  /** The copying sink (a burst of the largest frames fits its buffer, so a copy never stops short), and its counters. */
  private readonly copy: FlatSink | null;
  private readonly copyStats = new Uint32Array(DELIVER_STATS);

  constructor(
    poll: PollMode,
    private readonly spec: FrameSpec,
    readonly counters: Float64Array,
  ) {
    this.poller = new Poller(poll);
    const len = spec.frameBytes;
    const n = spec.burst;
    const data = new Uint8Array(len * n);
    const offsets = new Uint32Array(n);
    const lens = new Uint32Array(n).fill(len);
    for (let i = 0; i < n; i++) {
      data.set(ethFrame('02:00:00:00:00:02', '02:00:00:00:00:01', len, i), i * len);
      offsets[i] = i * len;
    }
    this.frames = new FlatFrames(data, offsets, lens, null, this.stats);
    this.copy = spec.sink === 'copy' ? new FlatSink(new Uint8Array(n * MAX_FRAME), new Uint32Array(n), new Uint32Array(n), this.copyStats) : null;
  }

  get queues(): number[] {
    return [...this.targets.keys()].sort((a, b) => a - b);
  }

  /** Serves queue q.index (odd: the driver's TX, drained; even: its RX, filled when generating). */
  start(q: QueueSpec, vq: Virtqueue, kickFd: number, fail: (reason: string) => void): void {
    let t: PollTarget;
    const broken = () => {
      this.stop(q.index);
      fail(vq.error?.message ?? 'queue broken');
    };
    if (q.index % 2 === 1) {
      t = { vq, kickFd, service: () => this.sink(vq, q.hdrLen, broken) };
    } else if (this.spec.generate) {
      const rx: RxSide = { q: vq, hdrLen: q.hdrLen, mergeable: q.mergeable };
      t = { vq, kickFd, service: () => this.generate(rx, broken) };
    } else {
      vq.setNotify(false); // a sink never fills receive buffers
      return;
    }
    this.targets.set(q.index, t);
    this.poller.add(t);
  }

  stop(index: number): void {
    const t = this.targets.get(index);
    if (t) this.poller.remove(t);
    this.targets.delete(index);
  }

  pause(): void {
    this.poller.pause();
  }

  resume(): void {
    this.poller.resume();
  }

  close(): void {
    this.poller.close();
    this.targets.clear();
  }

  /** Copies the poller's counters into the counter array. */
  syncPollStats(): void {
    const s = this.poller.stats;
    const c = this.counters;
    c[C.SLICES] = s.slices;
    c[C.SLEEPS] = s.sleeps;
    c[C.WAKES] = s.wakes;
    c[C.POLLS] = s.polls;
    c[C.WORK] = s.work;
  }

  private sink(vq: Virtqueue, hdr: number, broken: () => void): number {
    const c = this.copy;
    if (c) {
      const st = this.copyStats;
      const n = c.take(vq, hdr);
      if (n <= 0) {
        if (n < 0) broken();
        return 0;
      }
      // Frames shorter than an Ethernet header are taken but not copied (counted BAD), and their bytes not counted.
      this.counters[C.RX_P] += n;
      this.counters[C.RX_B] += st[DeliverStat.BYTES];
      st[DeliverStat.BYTES] = 0; // u32: taken every burst, it never wraps
      return n;
    }
    const n = vq.pop();
    if (n <= 0) {
      if (n < 0) broken();
      return 0;
    }
    const b = vq.b;
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += b.readLen[i];
    vq.pushPopped(n);
    this.counters[C.RX_P] += n;
    this.counters[C.RX_B] += bytes - n * hdr;
    return n;
  }

  private generate(rx: RxSide, broken: () => void): number {
    const st = this.stats;
    const before = st[DeliverStat.DELIVERED];
    const noBuf = st[DeliverStat.NO_BUFFERS];
    const r = this.frames.deliver(rx, this.spec.burst);
    if (r < 0) {
      broken();
      return 0;
    }
    const sent = st[DeliverStat.DELIVERED] - before;
    this.counters[C.TX_P] += sent;
    this.counters[C.TX_B] += sent * this.spec.frameBytes;
    this.counters[C.NOBUF] += st[DeliverStat.NO_BUFFERS] - noBuf;
    // Counters are u32: reset them before they wrap.
    if (st[DeliverStat.DELIVERED] > 0x7fffffff) st.fill(0);
    return sent;
  }
}

/** The calls a device makes on one data-plane thread (local or worker). */
interface Lane {
  readonly thread: number;
  readonly cpus: number[];
  readonly counters: Float64Array;
  queues(): number[];
  setMemory(memory: GuestMemory): void;
  start(q: QueueSpec, ctx: QueueContext): void;
  stop(index: number): Promise<void>;
  pause(): Promise<void>;
  resume(): void;
  close(): Promise<void>;
  syncPollStats(): void;
}

class LocalLane implements Lane {
  readonly thread = -1;
  readonly cpus: number[] = [];
  readonly counters = new Float64Array(C_LEN);
  readonly server: NetLoadServer;
  constructor(poll: PollMode, spec: FrameSpec) {
    this.server = new NetLoadServer(poll, spec, this.counters);
  }
  queues(): number[] {
    return this.server.queues;
  }
  setMemory(): void {
    // the queues use the session's memory views on this thread
  }
  start(q: QueueSpec, ctx: QueueContext): void {
    this.server.start(q, ctx.vq, ctx.kickFd, (r) => ctx.fail(r));
  }
  async stop(index: number): Promise<void> {
    this.server.stop(index);
  }
  async pause(): Promise<void> {
    this.server.pause();
  }
  resume(): void {
    this.server.resume();
  }
  async close(): Promise<void> {
    this.server.close();
  }
  syncPollStats(): void {
    this.server.syncPollStats();
  }
}

class WorkerLane implements Lane {
  readonly counters: Float64Array;
  private readonly rpc: WorkerRpc<NetLaneCalls, NetLaneEvent>;
  private readonly serving = new Set<number>();
  private readonly contexts = new Map<number, QueueContext>();
  private memory: GuestMemory | null = null;

  constructor(
    readonly thread: number,
    readonly cpus: number[],
    poll: PollMode,
    spec: FrameSpec,
  ) {
    this.counters = new Float64Array(new SharedArrayBuffer(C_LEN * 8));
    this.rpc = new WorkerRpc<NetLaneCalls, NetLaneEvent>(
      fileURLToPath(new URL('./net-worker.js', import.meta.url)),
      { poll, spec, counters: this.counters, cpus },
      NetLaneCalls,
      `net-load thread ${thread}`,
      (m) => {
        this.serving.delete(m.index);
        this.contexts.get(m.index)?.fail(m.reason);
      },
      (e) => {
        for (const ctx of this.contexts.values()) ctx.fail(e);
      },
    );
  }

  ready(): Promise<boolean> {
    return this.rpc.remote.ready();
  }

  queues(): number[] {
    return [...this.serving].sort((a, b) => a - b);
  }

  setMemory(memory: GuestMemory): void {
    if (memory === this.memory) return;
    this.memory = memory;
    void handOver(memory.park(), (token) => this.rpc.remote.memoryTable(token)).catch((e: Error) => this.failAll(e));
  }

  /** The worker could not take a change every queue depends on: each queue fails (the session logs it). */
  private failAll(e: Error): void {
    for (const ctx of this.contexts.values()) ctx.fail(e);
  }

  start(q: QueueSpec, ctx: QueueContext): void {
    this.setMemory(ctx.memory);
    this.serving.add(q.index);
    this.contexts.set(q.index, ctx);
    void handOver(ctx.vq.park(), (token) => this.rpc.remote.start(q, ctx.layout, ctx.size, token, ctx.kickFd)).catch((e: Error) => {
      this.serving.delete(q.index);
      ctx.fail(e);
    });
  }

  async stop(index: number): Promise<void> {
    this.serving.delete(index);
    this.contexts.delete(index);
    await this.rpc.remote.stop(index).catch((e: Error) => {
      // The worker is gone (WorkerRpc rejects every call after it exits): nothing serves the
      // queue any more, which is what stop asks. Any other failure is the caller's.
      if (!this.rpc.isDead) throw e;
    });
  }

  async pause(): Promise<void> {
    await this.rpc.remote.pause();
  }

  resume(): void {
    void this.rpc.remote.resume().catch((e: Error) => this.failAll(e));
  }

  async close(): Promise<void> {
    await this.rpc.close();
    this.contexts.clear();
  }

  syncPollStats(): void {
    // the worker keeps its poll counters in the shared array itself
  }
}

export class NetLoadDevice implements VhostUserDevice {
  readonly kind = 'net';
  readonly deviceId = VirtioDeviceId.NET;
  readonly handlesKicks = true;
  readonly protocolFeatures = 0n;
  readonly numQueues: number;
  readonly maxQueueSize = 32768;
  readonly features: bigint;
  private negotiated = 0n;
  private readonly mac: Uint8Array;
  private readonly lanes: Lane[];
  private readonly pairs: number;

  private constructor(
    readonly opts: NetLoadOptions,
    lanes: Lane[],
  ) {
    this.lanes = lanes;
    this.pairs = opts.queuePairs ?? 1;
    this.numQueues = 2 * this.pairs;
    this.mac = macBytes(opts.mac ?? '02:00:00:00:00:01');
    this.features =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_RING_F_EVENT_IDX) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      (opts.packed === false ? 0n : bit(VIRTIO_F_RING_PACKED)) |
      bit(NetFeature.MRG_RXBUF) |
      bit(NetFeature.MAC) |
      bit(NetFeature.STATUS) |
      (this.pairs > 1 ? bit(NetFeature.MQ) : 0n);
  }

  /** A device whose queues are served on the calling thread (threads 0) or on worker threads. */
  static async create(opts: NetLoadOptions = {}): Promise<NetLoadDevice> {
    const len = opts.frameBytes ?? 64;
    if (!Number.isInteger(len) || len < 60 || len > 9000) throw new RangeError(`frame length ${len}: expected 60..9000`);
    const pairs = opts.queuePairs ?? 1;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > 64) throw new RangeError(`queue pairs ${pairs}: expected 1..64`);
    const threads = opts.threads ?? 0;
    if (!Number.isInteger(threads) || threads < 0 || threads > 64) throw new RangeError(`threads ${threads}: expected 0..64`);
    if (threads === 0 && opts.cpus?.length) throw new RangeError('cpus: pinning needs worker threads (threads >= 1)');
    const sink = opts.sink ?? 'copy';
    if (!SINK_MODES.includes(sink)) throw new RangeError(`sink ${String(sink)}: expected ${SINK_MODES.join(' or ')}`);
    const spec: FrameSpec = { generate: opts.generate ?? false, sink, frameBytes: len, burst: opts.burst ?? 32 };
    const poll = opts.poll ?? 'event';
    let lanes: Lane[];
    if (threads === 0) {
      lanes = [new LocalLane(poll, spec)];
    } else {
      const cpus = opts.cpus ?? [];
      const w = Array.from({ length: threads }, (_, k) => new WorkerLane(k, cpus.length ? [cpus[k % cpus.length]] : [], poll, spec));
      try {
        await Promise.all(w.map((l) => l.ready()));
      } catch (e) {
        await Promise.all(w.map((l) => l.close()));
        throw e;
      }
      lanes = w;
    }
    return new NetLoadDevice(opts, lanes);
  }

  /** Totals over every thread. */
  get counters(): NetLoadCounters {
    const t = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, noBuffers: 0 };
    for (const l of this.lanes) {
      const c = l.counters;
      t.rxPackets += c[C.RX_P];
      t.rxBytes += c[C.RX_B];
      t.txPackets += c[C.TX_P];
      t.txBytes += c[C.TX_B];
      t.noBuffers += c[C.NOBUF];
    }
    return t;
  }

  /** Per data-plane thread: its CPUs, the queues assigned to it, its counters. */
  threadStats(): NetLoadThreadStats[] {
    return this.lanes.map((l) => {
      l.syncPollStats();
      const c = l.counters;
      return {
        thread: l.thread,
        cpus: l.cpus,
        queues: l.queues(),
        rxPackets: c[C.RX_P],
        txPackets: c[C.TX_P],
        poll: { slices: c[C.SLICES], sleeps: c[C.SLEEPS], wakes: c[C.WAKES], polls: c[C.POLLS], work: c[C.WORK] },
      };
    });
  }

  /** The poller counters summed over every thread. */
  get pollStats(): NetLoadThreadStats['poll'] {
    const s = { slices: 0, sleeps: 0, wakes: 0, polls: 0, work: 0 };
    for (const t of this.threadStats()) for (const k of Object.keys(s) as (keyof typeof s)[]) s[k] += t.poll[k];
    return s;
  }

  configSpace(): Uint8Array {
    const b = new Uint8Array(10);
    b.set(this.mac, 0);
    b[6] = 1; // VIRTIO_NET_S_LINK_UP
    b[8] = this.pairs & 0xff; // max_virtqueue_pairs
    b[9] = this.pairs >> 8;
    return b;
  }

  featuresNegotiated(f: bigint): void {
    this.negotiated = f;
  }

  private get hdrLen(): number {
    return has(this.negotiated, VIRTIO_F_VERSION_1) || has(this.negotiated, NetFeature.MRG_RXBUF) ? 12 : 10;
  }

  private lane(index: number): Lane {
    return this.lanes[(index >> 1) % this.lanes.length];
  }

  queueStart(q: QueueContext): void {
    this.lane(q.index).start({ index: q.index, hdrLen: this.hdrLen, mergeable: has(this.negotiated, NetFeature.MRG_RXBUF) }, q);
  }

  queueKick(): void {
    // the pollers watch kick fds (handlesKicks)
  }

  queueStop(q: QueueContext): Promise<void> {
    return this.lane(q.index).stop(q.index);
  }

  async pauseQueues(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.pause()));
  }

  resumeQueues(): void {
    for (const l of this.lanes) l.resume();
  }

  memoryChanged(memory: GuestMemory): void {
    for (const l of this.lanes) if (l.queues().length > 0) l.setMemory(memory);
  }

  reset(): void {
    this.negotiated = 0n;
  }

  async close(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.close()));
  }
}
