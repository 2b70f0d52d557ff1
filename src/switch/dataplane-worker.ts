// The data-plane thread: serves DataplaneCalls (dataplane-calls.ts) to the control plane.
import { parentPort, workerData } from 'node:worker_threads';
import { DataplaneCalls, type DataplaneSettings } from './dataplane-calls.js';
import { serveCalls } from '../dataplane/worker-rpc.js';
import { setThreadAffinity } from '../native/affinity.js';

const { settings, cpus } = workerData as { settings: DataplaneSettings; cpus: number[] };
const port = parentPort!;
if (cpus.length) setThreadAffinity(cpus);
const calls = new DataplaneCalls(settings, (e, transfer) => port.postMessage(e, transfer));
serveCalls(port, calls, DataplaneCalls, 'data-plane');
