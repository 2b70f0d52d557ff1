// Where the forwarding engine runs: on a worker thread (the default: the event loop never
// waits for the data plane and the data plane never waits for the event loop), or on the
// calling thread (tests, embedding). Both speak the same asynchronous interface.
import { WorkerRpc } from '../dataplane/worker-rpc.js';
import { fileURLToPath } from 'node:url';
import { SwitchEngine, type BurstHook, type HostPortSpec, type QueueStartSpec, type QueueStat, type VlanConfig } from './engine.js';
import type { PollMode } from '../dataplane/poller.js';
import type { FdbEntry } from './fdb.js';
import type { CaptureSink, CaptureSpec } from './capture.js';

export interface HookModule {
  /** module path (absolute, or a file: URL) loaded in the data-plane thread */
  module: string;
  /** export name (default: "default") */
  export?: string;
}

export interface DataplaneOptions {
  burst?: number;
  agingMs?: number;
  hook?: BurstHook | HookModule | null;
  /** how TX queues are waited for (default event) */
  poll?: PollMode;
  /** pin the data-plane thread to these CPUs (worker only) */
  cpus?: number[];
  onQueueError?: (port: number, index: number, reason: string) => void;
}

export interface DataplaneThread {
  thread: number;
  cpus: number[];
  poll: PollMode;
  queues: Array<{ port: string; index: number }>;
  /** time spent serving queues that had work, and the rest (empty polls, asleep) */
  busySeconds: number;
  idleSeconds: number;
}

export interface Dataplane {
  addPort(id: number, name: string, vlan: VlanConfig, counters: Float64Array): Promise<void>;
  removePort(id: number): Promise<void>;
  attachHost(id: number, spec: HostPortSpec): Promise<void>;
  setVlan(id: number, vlan: VlanConfig): Promise<void>;
  setMemory(port: number, token: number): Promise<void>;
  /** Unmaps the port's guest memory: its guest is gone (queues left on it are stopped). */
  releaseMemory(port: number): Promise<void>;
  startQueue(spec: QueueStartSpec): Promise<void>;
  stopQueue(port: number, index: number): Promise<void>;
  /** The MTU the port's guest was given changed (NET_SET_MTU after start); 0: no limit. */
  setMtu(port: number, mtu: number): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  inject(port: number, frame: Uint8Array): Promise<void>;
  dumpFdb(): Promise<FdbEntry[]>;
  /** The data-plane threads: CPUs each is pinned to (empty: not pinned), poll mode, the queues it serves. */
  threads(): Promise<DataplaneThread[]>;
  /** Counters and ring fill of every guest queue. */
  queueStats(): Promise<QueueStat[]>;
  /** Captures a port's frames (both directions) as pcap records handed to `sink`. */
  startCapture(port: number, spec: CaptureSpec, sink: CaptureSink): Promise<void>;
  stopCapture(port: number): Promise<void>;
  setAging(ms: number): Promise<void>;
  close(): Promise<void>;
}

async function loadHook(h: BurstHook | HookModule | null | undefined): Promise<BurstHook | null> {
  if (!h) return null;
  if (typeof h === 'function') return h;
  const mod = (await import(h.module.startsWith('file:') ? h.module : `file://${h.module}`)) as Record<string, unknown>;
  const f = mod[h.export ?? 'default'];
  if (typeof f !== 'function') throw new Error(`hook module ${h.module} has no function export ${h.export ?? 'default'}`);
  return f as BurstHook;
}

/** The engine on the calling thread. */
export class InProcessDataplane implements Dataplane {
  readonly engine: SwitchEngine;
  private readonly poll: PollMode;
  constructor(opts: DataplaneOptions = {}) {
    if (opts.cpus?.length) throw new Error('pinning (cpus) needs the worker data plane');
    this.poll = opts.poll ?? 'event';
    this.engine = new SwitchEngine(opts.burst ?? 32, opts.agingMs ?? 300_000, { queueError: (p, i, r) => opts.onQueueError?.(p, i, r) }, opts.poll);
    if (typeof opts.hook === 'function') this.engine.setHook(opts.hook);
  }
  static async create(opts: DataplaneOptions = {}): Promise<InProcessDataplane> {
    const d = new InProcessDataplane(opts);
    d.engine.setHook(await loadHook(opts.hook));
    return d;
  }
  async addPort(id: number, name: string, vlan: VlanConfig, counters: Float64Array): Promise<void> {
    this.engine.addPort(id, name, vlan, counters);
  }
  async removePort(id: number): Promise<void> {
    this.engine.removePort(id);
  }
  async attachHost(id: number, spec: HostPortSpec): Promise<void> {
    this.engine.attachHost(id, spec);
  }
  async setVlan(id: number, vlan: VlanConfig): Promise<void> {
    this.engine.setVlan(id, vlan);
  }
  async setMemory(port: number, token: number): Promise<void> {
    this.engine.setMemory(port, token);
  }
  async releaseMemory(port: number): Promise<void> {
    this.engine.releaseMemory(port);
  }
  async startQueue(spec: QueueStartSpec): Promise<void> {
    this.engine.startQueue(spec);
  }
  async stopQueue(port: number, index: number): Promise<void> {
    this.engine.stopQueue(port, index);
  }
  async setMtu(port: number, mtu: number): Promise<void> {
    this.engine.setMtu(port, mtu);
  }
  async pause(): Promise<void> {
    this.engine.pause();
  }
  async resume(): Promise<void> {
    this.engine.resume();
  }
  async inject(port: number, frame: Uint8Array): Promise<void> {
    this.engine.inject(port, frame, Uint32Array.of(0), Uint32Array.of(frame.length), 1);
  }
  async dumpFdb(): Promise<FdbEntry[]> {
    return this.engine.dumpFdb();
  }
  async threads(): Promise<DataplaneThread[]> {
    return [{ thread: -1, cpus: [], poll: this.poll, queues: this.engine.queues(), ...this.engine.threadTimes() }];
  }
  async queueStats(): Promise<QueueStat[]> {
    return this.engine.queueStats();
  }
  async startCapture(port: number, spec: CaptureSpec, sink: CaptureSink): Promise<void> {
    this.engine.startCapture(port, spec, sink);
  }
  async stopCapture(port: number): Promise<void> {
    this.engine.stopCapture(port);
  }
  async setAging(ms: number): Promise<void> {
    this.engine.setAging(ms);
  }
  async close(): Promise<void> {
    this.engine.close();
  }
}

type Event =
  | { event: 'queue-error'; port: number; index: number; reason: string }
  | { event: 'capture'; port: number; records: Uint8Array; packets: number; done: boolean };

/** The engine on a worker thread; calls are messages, answered in order. */
export class WorkerDataplane implements Dataplane {
  private readonly rpc: WorkerRpc<Event>;
  private readonly captureSinks = new Map<number, CaptureSink>();

  private constructor(opts: DataplaneOptions) {
    const hook = opts.hook && typeof opts.hook !== 'function' ? opts.hook : null;
    if (typeof opts.hook === 'function') throw new Error('a hook function cannot cross to a worker: give { module, export } instead');
    this.rpc = new WorkerRpc<Event>(
      fileURLToPath(new URL('./dataplane-worker.js', import.meta.url)),
      { burst: opts.burst ?? 32, agingMs: opts.agingMs ?? 300_000, hook, poll: opts.poll ?? 'event', cpus: opts.cpus ?? [] },
      'data-plane thread',
      (m) => {
        if (m.event === 'queue-error') opts.onQueueError?.(m.port, m.index, m.reason);
        else {
          const sink = this.captureSinks.get(m.port);
          if (m.done) this.captureSinks.delete(m.port);
          sink?.(m.records, m.packets, m.done);
        }
      },
    );
  }

  static async create(opts: DataplaneOptions = {}): Promise<WorkerDataplane> {
    const d = new WorkerDataplane(opts);
    await d.call('ready');
    return d;
  }

  private call<T>(op: string, ...args: unknown[]): Promise<T> {
    return this.rpc.call<T>(op, ...args);
  }

  addPort(id: number, name: string, vlan: VlanConfig, counters: Float64Array): Promise<void> {
    return this.call('addPort', id, name, vlan, counters);
  }
  removePort(id: number): Promise<void> {
    return this.call('removePort', id);
  }
  attachHost(id: number, spec: HostPortSpec): Promise<void> {
    return this.call('attachHost', id, spec);
  }
  setVlan(id: number, vlan: VlanConfig): Promise<void> {
    return this.call('setVlan', id, vlan);
  }
  setMemory(port: number, token: number): Promise<void> {
    return this.call('setMemory', port, token);
  }
  releaseMemory(port: number): Promise<void> {
    return this.call('releaseMemory', port);
  }
  startQueue(spec: QueueStartSpec): Promise<void> {
    return this.call('startQueue', spec);
  }
  stopQueue(port: number, index: number): Promise<void> {
    return this.call('stopQueue', port, index);
  }
  setMtu(port: number, mtu: number): Promise<void> {
    return this.call('setMtu', port, mtu);
  }
  pause(): Promise<void> {
    return this.call('pause');
  }
  resume(): Promise<void> {
    return this.call('resume');
  }
  inject(port: number, frame: Uint8Array): Promise<void> {
    return this.call('inject', port, frame);
  }
  dumpFdb(): Promise<FdbEntry[]> {
    return this.call('dumpFdb');
  }
  threads(): Promise<DataplaneThread[]> {
    return this.call('threads');
  }
  queueStats(): Promise<QueueStat[]> {
    return this.call('queueStats');
  }
  async startCapture(port: number, spec: CaptureSpec, sink: CaptureSink): Promise<void> {
    this.captureSinks.set(port, sink);
    try {
      await this.call('startCapture', port, spec);
    } catch (e) {
      this.captureSinks.delete(port);
      throw e;
    }
  }
  stopCapture(port: number): Promise<void> {
    return this.call('stopCapture', port);
  }
  setAging(ms: number): Promise<void> {
    return this.call('setAging', ms);
  }
  close(): Promise<void> {
    return this.rpc.close();
  }

}
