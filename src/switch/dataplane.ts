// Where the forwarding engine runs: on a worker thread (the default: the event loop never
// waits for the data plane and the data plane never waits for the event loop), on several
// (dataplane-group.ts: a guest's queue pairs spread over them), or on the calling thread (tests,
// embedding). All are DataplaneCalls behind the same asynchronous interface; only capture
// differs, whose records arrive as events for the sink given here.
import { fileURLToPath } from 'node:url';
import { WorkerRpc, localCalls, type Remote } from '../dataplane/worker-rpc.js';
import { DataplaneCalls, type DataplaneEvent, type DataplaneSettings, type HookModule } from './dataplane-calls.js';
import type { BurstHook } from './engine.js';
import type { PollMode } from '../dataplane/poller.js';
import type { CaptureSink, CaptureSpec } from './capture.js';
import type { SharedThread } from './engine.js';
import { createGroup } from './dataplane-group.js';

export type { DataplaneThread, HookModule } from './dataplane-calls.js';

export interface DataplaneOptions {
  /** the engine on a worker thread (default) or on the calling thread */
  thread?: 'worker' | 'inline';
  burst?: number;
  agingMs?: number;
  hook?: BurstHook | HookModule | null;
  /** how TX queues are waited for (default event) */
  poll?: PollMode;
  /** pin the data-plane thread to these CPUs (worker only); with threads > 1, thread k to the k-th CPU */
  cpus?: number[];
  /** data-plane threads (worker only; default 1): each queue pair of a port is served by one of them */
  threads?: number;
  onQueueError?: (port: number, index: number, reason: string) => void;
  /** something the data plane does in the background failed (several threads: flow expiry) */
  onError?: (message: string) => void;
  /** a packet handler threw (its frames of that run are dropped) */
  onHandlerError?: (handler: string, message: string) => void;
}

/** The data plane as the switch sees it: every call of DataplaneCalls, and capture into a sink. */
export type Dataplane = Omit<Remote<DataplaneCalls>, 'ready' | 'startCapture' | 'close'> & {
  /** Captures a port's frames (both directions) as pcap records handed to `sink`. */
  startCapture(port: number, spec: CaptureSpec, sink: CaptureSink): Promise<void>;
  close(): Promise<void>;
  /** how many threads forward (each port's counters are that many blocks of PortCounter words, one per thread) */
  readonly threadCount: number;
};

/** A switch's data-plane threads: `threads` if given, else one per CPU of `cpus`, else 1. */
export function dataplaneThreads(o: { threads?: number; cpus?: readonly number[] }): number {
  return o.threads ?? Math.max(1, o.cpus?.length ?? 1);
}

export async function createDataplane(opts: DataplaneOptions = {}): Promise<Dataplane> {
  const inline = opts.thread === 'inline';
  const threads = opts.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new RangeError(`threads must be 1..64, not ${threads}`);
  if (inline && opts.cpus?.length) throw new Error('pinning (cpus) needs the worker data plane');
  if (inline && threads > 1) throw new Error('several data-plane threads need the worker data plane');
  if (!inline && typeof opts.hook === 'function') throw new Error('a hook function cannot cross to a worker: give { module, export } instead');
  if (threads > 1) {
    if (opts.hook) throw new Error('a dataplane hook needs a switch with one data-plane thread');
    const one = (k: number, shared: SharedThread) => openThread({ ...opts, cpus: opts.cpus?.length ? [opts.cpus[k % opts.cpus.length]] : [] }, k, shared);
    return createGroup(threads, one, (m) => opts.onError?.(m));
  }
  return openThread(opts, inline ? -1 : 0, null);
}

/** One data-plane thread (or the calling thread: number -1). */
async function openThread(opts: DataplaneOptions, thread: number, shared: SharedThread | null): Promise<Dataplane> {
  const inline = thread < 0;
  const settings: DataplaneSettings = {
    burst: opts.burst ?? 32,
    agingMs: opts.agingMs ?? 300_000,
    poll: opts.poll ?? 'event',
    hook: opts.hook ?? null,
    thread,
    shared,
    pinned: (opts.cpus?.length ?? 0) > 0,
  };
  // Each capture's sink by the number its start was given: a capture's last records, which
  // may come after the next capture of the port began, reach their own sink.
  const sinks = new Map<number, CaptureSink>();
  let captures = 0;
  const onEvent = (e: DataplaneEvent) => {
    if (e.event === 'queue-error') {
      opts.onQueueError?.(e.port, e.index, e.reason);
      return;
    }
    if (e.event === 'handler-error') {
      opts.onHandlerError?.(e.handler, e.message);
      return;
    }
    const sink = sinks.get(e.capture);
    if (e.done) sinks.delete(e.capture);
    sink?.(e.records, e.packets, e.done);
  };
  let calls: Remote<DataplaneCalls>;
  let close: () => Promise<void>;
  if (inline) {
    calls = localCalls(new DataplaneCalls(settings, onEvent), DataplaneCalls);
    close = () => calls.close();
  } else {
    const file = fileURLToPath(new URL('./dataplane-worker.js', import.meta.url));
    const rpc = new WorkerRpc<DataplaneCalls, DataplaneEvent>(file, { settings, cpus: opts.cpus ?? [] }, DataplaneCalls, shared ? `data-plane thread ${thread}` : 'data-plane thread', onEvent);
    calls = rpc.remote;
    close = () => rpc.close();
  }
  try {
    await calls.ready();
  } catch (e) {
    await close();
    throw e;
  }
  const { ready: _ready, startCapture, close: _close, ...rest } = calls;
  return {
    ...rest,
    async startCapture(port, spec, sink) {
      const id = ++captures;
      sinks.set(id, sink);
      try {
        await startCapture(port, spec, id);
      } catch (e) {
        sinks.delete(id);
        throw e;
      }
    },
    close,
    threadCount: 1,
  };
}
