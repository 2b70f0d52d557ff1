// A net-load data-plane thread: serves NetLaneCalls (net-lane-calls.ts) to its device,
// optionally pinned to a CPU.
import { parentPort, workerData } from 'node:worker_threads';
import { setThreadAffinity } from '../native/affinity.js';
import { NetLaneCalls } from './net-lane-calls.js';
import { serveCalls } from '../dataplane/worker-rpc.js';
import type { FrameSpec } from './net.js';
import type { PollMode } from '../dataplane/poller.js';

const { poll, spec, counters, cpus } = workerData as { poll: PollMode; spec: FrameSpec; counters: Float64Array; cpus: number[] };
const port = parentPort!;
if (cpus.length) setThreadAffinity(cpus);
serveCalls(port, new NetLaneCalls(poll, spec, counters, (e) => port.postMessage(e)), NetLaneCalls, 'net-load');
