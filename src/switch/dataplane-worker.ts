// The data-plane thread: hosts a SwitchEngine and answers the control plane's calls.
import { parentPort, workerData } from 'node:worker_threads';
import { SwitchEngine, type BurstHook } from './engine.js';
import type { HookModule } from './dataplane.js';
import type { CaptureSpec } from './capture.js';
import type { PollMode } from '../dataplane/poller.js';
import { getThreadAffinity, setThreadAffinity } from '../native/affinity.js';

const { burst, agingMs, hook, poll, cpus } = workerData as { burst: number; agingMs: number; hook: HookModule | null; poll: PollMode; cpus: number[] };
const port = parentPort!;
if (cpus.length) setThreadAffinity(cpus);
const engine = new SwitchEngine(
  burst,
  agingMs,
  { queueError: (p, index, reason) => port.postMessage({ event: 'queue-error', port: p, index, reason }) },
  poll,
);

let ready: Promise<void> = Promise.resolve();
if (hook) {
  ready = import(hook.module.startsWith('file:') ? hook.module : `file://${hook.module}`).then((mod: Record<string, unknown>) => {
    const f = mod[hook.export ?? 'default'];
    if (typeof f !== 'function') throw new Error(`hook module ${hook.module} has no function export ${hook.export ?? 'default'}`);
    engine.setHook(f as BurstHook);
  });
}

const ops: Record<string, (...args: never[]) => unknown> = {
  ready: () => ready,
  addPort: (id: number, name: string, vlan, counters: Float64Array) => engine.addPort(id, name, vlan, counters),
  removePort: (id: number) => engine.removePort(id),
  attachHost: (id: number, spec) => engine.attachHost(id, spec),
  setVlan: (id: number, vlan) => engine.setVlan(id, vlan),
  setMemory: (p: number, token: number) => engine.setMemory(p, token),
  releaseMemory: (p: number) => engine.releaseMemory(p),
  startQueue: (spec) => engine.startQueue(spec),
  stopQueue: (p: number, index: number) => engine.stopQueue(p, index),
  setMtu: (p: number, mtu: number) => engine.setMtu(p, mtu),
  pause: () => engine.pause(),
  resume: () => engine.resume(),
  inject: (p: number, frame: Uint8Array) => engine.inject(p, frame, Uint32Array.of(0), Uint32Array.of(frame.length), 1),
  dumpFdb: () => engine.dumpFdb(),
  threads: () => [{ thread: 0, cpus: cpus.length ? getThreadAffinity() : [], poll, queues: engine.queues(), ...engine.threadTimes() }],
  queueStats: () => engine.queueStats(),
  startCapture: (p: number, spec: CaptureSpec) =>
    engine.startCapture(p, spec, (records, packets, done) => port.postMessage({ event: 'capture', port: p, records, packets, done }, [records.buffer as ArrayBuffer])),
  stopCapture: (p: number) => engine.stopCapture(p),
  setAging: (ms: number) => engine.setAging(ms),
  close: () => engine.close(),
};

port.on('message', async (m: { id: number; op: string; args: never[] }) => {
  try {
    const f = ops[m.op];
    if (!f) throw new Error(`unknown data-plane call ${m.op}`);
    const value = await f(...m.args);
    port.postMessage({ id: m.id, ok: true, value });
  } catch (e) {
    port.postMessage({ id: m.id, ok: false, error: (e as Error).message });
  }
});
