// Where the forwarding engine runs: on a worker thread (the default: the event loop never
// waits for the data plane and the data plane never waits for the event loop), or on the
// calling thread (tests, embedding). Both are DataplaneCalls behind the same asynchronous
// interface; only capture differs, whose records arrive as events for the sink given here.
import { fileURLToPath } from 'node:url';
import { WorkerRpc, localCalls, type Remote } from '../dataplane/worker-rpc.js';
import { DataplaneCalls, type DataplaneEvent, type DataplaneSettings, type HookModule } from './dataplane-calls.js';
import type { BurstHook } from './engine.js';
import type { PollMode } from '../dataplane/poller.js';
import type { CaptureSink, CaptureSpec } from './capture.js';

export type { DataplaneThread, HookModule } from './dataplane-calls.js';

export interface DataplaneOptions {
  /** the engine on a worker thread (default) or on the calling thread */
  thread?: 'worker' | 'inline';
  burst?: number;
  agingMs?: number;
  hook?: BurstHook | HookModule | null;
  /** how TX queues are waited for (default event) */
  poll?: PollMode;
  /** pin the data-plane thread to these CPUs (worker only) */
  cpus?: number[];
  onQueueError?: (port: number, index: number, reason: string) => void;
  /** a packet handler threw (its frames of that run are dropped) */
  onHandlerError?: (handler: string, message: string) => void;
}

/** The data plane as the switch sees it: every call of DataplaneCalls, and capture into a sink. */
export type Dataplane = Omit<Remote<DataplaneCalls>, 'ready' | 'startCapture' | 'close'> & {
  /** Captures a port's frames (both directions) as pcap records handed to `sink`. */
  startCapture(port: number, spec: CaptureSpec, sink: CaptureSink): Promise<void>;
  close(): Promise<void>;
};

export async function createDataplane(opts: DataplaneOptions = {}): Promise<Dataplane> {
  const inline = opts.thread === 'inline';
  if (inline && opts.cpus?.length) throw new Error('pinning (cpus) needs the worker data plane');
  if (!inline && typeof opts.hook === 'function') throw new Error('a hook function cannot cross to a worker: give { module, export } instead');
  const settings: DataplaneSettings = {
    burst: opts.burst ?? 32,
    agingMs: opts.agingMs ?? 300_000,
    poll: opts.poll ?? 'event',
    hook: opts.hook ?? null,
    thread: inline ? -1 : 0,
    pinned: (opts.cpus?.length ?? 0) > 0,
  };
  const sinks = new Map<number, CaptureSink>();
  const onEvent = (e: DataplaneEvent) => {
    if (e.event === 'queue-error') {
      opts.onQueueError?.(e.port, e.index, e.reason);
      return;
    }
    if (e.event === 'handler-error') {
      opts.onHandlerError?.(e.handler, e.message);
      return;
    }
    const sink = sinks.get(e.port);
    if (e.done) sinks.delete(e.port);
    sink?.(e.records, e.packets, e.done);
  };
  let calls: Remote<DataplaneCalls>;
  let close: () => Promise<void>;
  if (inline) {
    calls = localCalls(new DataplaneCalls(settings, onEvent), DataplaneCalls);
    close = () => calls.close();
  } else {
    const file = fileURLToPath(new URL('./dataplane-worker.js', import.meta.url));
    const rpc = new WorkerRpc<DataplaneCalls, DataplaneEvent>(file, { settings, cpus: opts.cpus ?? [] }, DataplaneCalls, 'data-plane thread', onEvent);
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
      sinks.set(port, sink);
      try {
        await startCapture(port, spec);
      } catch (e) {
        sinks.delete(port);
        throw e;
      }
    },
    close,
  };
}
