// What the switch's control plane asks of its data plane, written once: DataplaneCalls owns a
// SwitchEngine and is served on a worker thread (dataplane-worker.ts, through serveCalls) or
// on the calling thread (dataplane.ts, through localCalls). Its methods are the calls; their
// arguments and results cross threads by structured clone.
import { SwitchEngine, type SharedThread, type BurstHook, type HostPortSpec, type QueueStartSpec, type QueueStat, type VlanConfig } from './engine.js';
import type { PollMode } from '../dataplane/poller.js';
import type { FdbEntry } from './fdb.js';
import type { FlowEntry } from './flow-table.js';
import type { FlowSpec } from './flows.js';
import type { HandlerModule, HandlerStats, PacketHandler } from './handlers.js';
import type { CaptureSpec } from './capture.js';
import { getThreadAffinity } from '../native/affinity.js';

export interface HookModule {
  /** module path (absolute, or a file: URL) loaded in the data-plane thread */
  module: string;
  /** export name (default: "default") */
  export?: string;
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

/** What the data plane tells its owner without being asked. */
export type DataplaneEvent =
  { event: 'queue-error'; port: number; index: number; reason: string } | { event: 'capture'; port: number; capture: number; records: Uint8Array; packets: number; done: boolean } | HandlerError;

export interface DataplaneSettings {
  burst: number;
  agingMs: number;
  poll: PollMode;
  /** a function (calling thread only) or a module to load */
  hook: BurstHook | HookModule | null;
  /** the thread's number in threads(): 0 for the worker (k of several), -1 for the calling thread */
  thread: number;
  /** one of several threads of the switch: the state they share */
  shared: SharedThread | null;
  /** whether the thread was pinned (threads() then reports its CPUs) */
  pinned: boolean;
}

/** A function given as is (calling thread only) or exported by a module loaded here. */
async function loadFunction<F>(h: F | HookModule, what: string): Promise<F> {
  if (typeof h === 'function') return h;
  const m = h as HookModule;
  const mod = (await import(m.module.startsWith('file:') ? m.module : `file://${m.module}`)) as Record<string, unknown>;
  const f = mod[m.export ?? 'default'];
  if (typeof f !== 'function') throw new Error(`${what} module ${m.module} has no function export ${m.export ?? 'default'}`);
  return f as F;
}

/** What the data plane tells its owner of a handler that threw. */
export interface HandlerError {
  event: 'handler-error';
  handler: string;
  message: string;
}

export class DataplaneCalls {
  private readonly engine: SwitchEngine;
  private readonly hookLoaded: Promise<void>;

  constructor(
    private readonly settings: DataplaneSettings,
    /** `transfer`: buffers handed over rather than copied when the event crosses threads */
    private readonly emit: (e: DataplaneEvent, transfer?: ArrayBuffer[]) => void,
  ) {
    this.engine = new SwitchEngine(
      settings.burst,
      settings.agingMs,
      { queueError: (port, index, reason) => emit({ event: 'queue-error', port, index, reason }) },
      settings.poll,
      settings.shared,
      Math.max(0, settings.thread),
    );
    const hook = settings.hook;
    this.hookLoaded = (hook ? loadFunction<BurstHook>(hook, 'hook') : Promise.resolve(null)).then((h) => this.engine.setHook(h));
  }

  /** Resolves when the hook is loaded (rejects if it cannot be). */
  ready(): Promise<void> {
    return this.hookLoaded;
  }
  /** owner: the thread that serves the port, of a switch with several (default: this one). */
  addPort(id: number, name: string, vlan: VlanConfig, counters: Float64Array, owner?: number): void {
    this.engine.addPort(id, name, vlan, counters, owner);
  }
  /** Port `id` is served by thread `owner` from now on (several threads; the port idle here). */
  setOwner(id: number, owner: number): void {
    this.engine.setOwner(id, owner);
  }
  removePort(id: number): void {
    this.engine.removePort(id);
  }
  attachHost(id: number, spec: HostPortSpec): void {
    this.engine.attachHost(id, spec);
  }
  setVlan(id: number, vlan: VlanConfig): void {
    this.engine.setVlan(id, vlan);
  }
  /** The port's guest memory (a parked GuestMemory). */
  setMemory(port: number, token: number): void {
    this.engine.setMemory(port, token);
  }
  /** Unmaps the port's guest memory: its guest is gone (queues left on it are stopped). */
  releaseMemory(port: number): void {
    this.engine.releaseMemory(port);
  }
  startQueue(spec: QueueStartSpec): void {
    this.engine.startQueue(spec);
  }
  stopQueue(port: number, index: number): void {
    this.engine.stopQueue(port, index);
  }
  /** The MTU the port's guest was given changed (NET_SET_MTU after start); 0: no limit. */
  setMtu(port: number, mtu: number): void {
    this.engine.setMtu(port, mtu);
  }
  pause(): void {
    this.engine.pause();
  }
  resume(): void {
    this.engine.resume();
  }
  inject(port: number, frame: Uint8Array): void {
    this.engine.inject(port, frame, Uint32Array.of(0), Uint32Array.of(frame.length), 1);
  }
  dumpFdb(): FdbEntry[] {
    return this.engine.dumpFdb();
  }
  /** EVPN: a VXLAN port's remote VTEPs and the MACs installed behind them (engine.ts). */
  setVtep(id: number, remote: number, dest: Uint8Array | null, flood: boolean): void {
    this.engine.setVtep(id, remote, dest, flood);
  }
  setRemoteMac(mac: number, vlan: number, id: number, remote: number): boolean {
    return this.engine.setRemoteMac(mac, vlan, id, remote);
  }
  removeRemoteMac(mac: number, vlan: number, id: number, remote: number): boolean {
    return this.engine.removeRemoteMac(mac, vlan, id, remote);
  }
  dumpRemoteMacs(): Array<{ mac: number; vlan: number; port: number; remote: number }> {
    return this.engine.dumpRemoteMacs();
  }
  /** The flow table (flows.ts parses the flows). */
  addFlow(spec: FlowSpec): void {
    this.engine.addFlow(spec);
  }
  removeFlows(words: Int32Array, strict: boolean): number {
    return this.engine.removeFlows(words, strict);
  }
  dumpFlows(): FlowEntry[] {
    return this.engine.dumpFlows();
  }
  /** Removes the flow of this priority and match (a switch with several threads expires flows so); true if it was there. */
  removeFlow(priority: number, match: string): boolean {
    return this.engine.removeFlow(priority, match);
  }
  /** A packet handler: a function (calling thread only) or a module's export, loaded here. */
  async addHandler(id: number, name: string, h: PacketHandler | HandlerModule): Promise<void> {
    let fn = await loadFunction<PacketHandler>(h, 'handler');
    if (typeof h !== 'function' && h.options !== undefined) {
      const made = (fn as unknown as (o: unknown) => unknown)(h.options);
      if (typeof made !== 'function') throw new Error(`handler module ${h.module}: ${h.export ?? 'default'}(options) did not return a handler function`);
      fn = made as PacketHandler;
    }
    this.engine.addHandler(id, name, fn, (handler, e) => this.emit({ event: 'handler-error', handler, message: e instanceof Error ? e.message : String(e) }));
  }
  /** Removes a handler and the flows that send to it; returns how many flows. */
  removeHandler(id: number): number {
    return this.engine.removeHandler(id);
  }
  handlerStats(): HandlerStats[] {
    return this.engine.handlerStats();
  }
  /** The data-plane threads: CPUs each is pinned to (empty: not pinned), poll mode, the queues it serves. */
  threads(): DataplaneThread[] {
    const s = this.settings;
    return [{ thread: s.thread, cpus: s.pinned ? getThreadAffinity() : [], poll: s.poll, queues: this.engine.queues(), ...this.engine.threadTimes() }];
  }
  /** Counters and ring fill of every guest queue. */
  queueStats(): QueueStat[] {
    return this.engine.queueStats();
  }
  /** Captures a port's frames (both directions): pcap records come as 'capture' events. */
  startCapture(port: number, spec: CaptureSpec, capture: number): void {
    this.engine.startCapture(port, spec, (records, packets, done) => this.emit({ event: 'capture', port, capture, records, packets, done }, [records.buffer as ArrayBuffer]));
  }
  stopCapture(port: number): void {
    this.engine.stopCapture(port);
  }
  setAging(ms: number): void {
    this.engine.setAging(ms);
  }
  close(): void {
    this.engine.close();
  }
}
