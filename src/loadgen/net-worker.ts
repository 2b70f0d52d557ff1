// A net-load data-plane thread: claims the queues the device hands it and serves them with
// a NetLoadServer (src/loadgen/net.ts), optionally pinned to a CPU. Counters go to a
// SharedArrayBuffer the main thread reads.
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory } from '../native/guest-memory.js';
import { Virtqueue, type RingLayout } from '../native/virtqueue.js';
import { setThreadAffinity } from '../native/affinity.js';
import { NetLoadServer } from './net.js';
import type { PollMode } from '../dataplane/poller.js';

const { poll, spec, counters, cpus } = workerData as {
  poll: PollMode;
  spec: { generate: boolean; frameBytes: number; burst: number };
  counters: Float64Array;
  cpus: number[];
};
const port = parentPort!;
if (cpus.length) setThreadAffinity(cpus);
const server = new NetLoadServer(poll, spec, counters);
const queues = new Map<number, Virtqueue>();
let memory: GuestMemory | null = null;
// Poll counters into the shared array a few times a second (the main thread prints them).
const sync = setInterval(() => server.syncPollStats(), 250);

const ops: Record<string, (...args: never[]) => unknown> = {
  ready: () => true,
  memory: (token: number) => {
    memory?.close();
    memory = GuestMemory.claim(token);
    for (const vq of queues.values()) vq.setMemoryView(memory);
  },
  start: (q: { index: number; hdrLen: number; mergeable: boolean }, layout: RingLayout, size: number, token: number, kickFd: number) => {
    const vq = new Virtqueue({ layout, size, token, burst: spec.burst });
    if (memory) vq.setMemoryView(memory);
    queues.set(q.index, vq);
    server.start(q, vq, kickFd, (reason) => {
      queues.delete(q.index);
      port.postMessage({ event: 'fail', index: q.index, reason });
    });
  },
  stop: (index: number) => {
    server.stop(index);
    queues.delete(index);
  },
  pause: () => server.pause(),
  resume: () => server.resume(),
  close: () => {
    clearInterval(sync);
    server.close();
    queues.clear();
    memory?.close();
    memory = null;
  },
};

port.on('message', (m: { id: number; op: string; args: never[] }) => {
  try {
    const f = ops[m.op];
    if (!f) throw new Error(`unknown net-load call ${m.op}`);
    port.postMessage({ id: m.id, ok: true, value: f(...m.args) });
  } catch (e) {
    port.postMessage({ id: m.id, ok: false, error: (e as Error).message });
  }
});
