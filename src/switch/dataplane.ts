// Where the forwarding engine runs: on a worker thread (the default: the event loop never
// waits for the data plane and the data plane never waits for the event loop), or on the
// calling thread (tests, embedding). Both speak the same asynchronous interface.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { SwitchEngine, type BurstHook, type HostPortSpec, type QueueStartSpec, type VlanConfig } from './engine.js';
import type { PollMode } from '../dataplane/poller.js';
import type { FdbEntry } from './fdb.js';

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
  onQueueError?: (port: number, index: number, reason: string) => void;
}

export interface Dataplane {
  addPort(id: number, name: string, vlan: VlanConfig, counters: Float64Array): Promise<void>;
  removePort(id: number): Promise<void>;
  attachHost(id: number, spec: HostPortSpec): Promise<void>;
  setVlan(id: number, vlan: VlanConfig): Promise<void>;
  setMemory(port: number, token: number): Promise<void>;
  startQueue(spec: QueueStartSpec): Promise<void>;
  stopQueue(port: number, index: number): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  inject(port: number, frame: Uint8Array): Promise<void>;
  dumpFdb(): Promise<FdbEntry[]>;
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
  constructor(opts: DataplaneOptions = {}) {
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
  async startQueue(spec: QueueStartSpec): Promise<void> {
    this.engine.startQueue(spec);
  }
  async stopQueue(port: number, index: number): Promise<void> {
    this.engine.stopQueue(port, index);
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
  async setAging(ms: number): Promise<void> {
    this.engine.setAging(ms);
  }
  async close(): Promise<void> {
    this.engine.close();
  }
}

type Request = { id: number; op: string; args: unknown[] };
type Reply = { id: number; ok: boolean; value?: unknown; error?: string } | { event: 'queue-error'; port: number; index: number; reason: string };

/** The engine on a worker thread; calls are messages, answered in order. */
export class WorkerDataplane implements Dataplane {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;

  private constructor(opts: DataplaneOptions) {
    const hook = opts.hook && typeof opts.hook !== 'function' ? opts.hook : null;
    if (typeof opts.hook === 'function') throw new Error('a hook function cannot cross to a worker: give { module, export } instead');
    this.worker = new Worker(fileURLToPath(new URL('./dataplane-worker.js', import.meta.url)), {
      workerData: { burst: opts.burst ?? 32, agingMs: opts.agingMs ?? 300_000, hook, poll: opts.poll ?? 'event' },
    });
    this.worker.on('message', (m: Reply) => {
      if ('event' in m) {
        opts.onQueueError?.(m.port, m.index, m.reason);
        return;
      }
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(m.error));
    });
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`data-plane thread exited with code ${code}`)));
  }

  static async create(opts: DataplaneOptions = {}): Promise<WorkerDataplane> {
    const d = new WorkerDataplane(opts);
    await d.call('ready');
    return d;
  }

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private call<T>(op: string, ...args: unknown[]): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, args } satisfies Request);
    });
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
  startQueue(spec: QueueStartSpec): Promise<void> {
    return this.call('startQueue', spec);
  }
  stopQueue(port: number, index: number): Promise<void> {
    return this.call('stopQueue', port, index);
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
  setAging(ms: number): Promise<void> {
    return this.call('setAging', ms);
  }
  async close(): Promise<void> {
    if (!this.dead) await this.call('close').catch(() => undefined);
    await this.worker.terminate();
  }
}
