// `vhostkit net-load`: a virtio-net port that takes what the driver sends (a sink) and, with
// --gen, fills every receive buffer with a fixed frame (a generator): one end of a ring
// benchmark against any vhost-user frontend (dpdk-testpmd virtio-user, QEMU).
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { VhostUserBackend } from '../vhost-user/backend.js';
import { NetLoadDevice, SINK_MODES, type SinkMode } from '../loadgen/net.js';
import { POLL_MODES, type PollMode } from '../dataplane/poller.js';
import { log } from '../log.js';
import { parseCpuList } from '../native/affinity.js';
import { untilSignal } from './signals.js';

export const netLoadUsage = `vhostkit net-load --socket PATH [--gen] [--size BYTES] [--poll busy|event|adaptive] [options]

  --socket PATH        the vhost-user socket (server; --client to connect to a frontend's)
  --gen                fill the driver's receive buffers with frames (default: only sink)
  --sink MODE          copy: read every frame the driver sends into memory of the sink's
                       own, as a real receiver does; drop: return its buffer unread, the
                       ring's cost alone (default copy)
  --size BYTES         generated frame length, Ethernet header included (default 64)
  --poll MODE          busy: spin on the rings; event: sleep on kicks; adaptive: spin while
                       traffic flows, sleep after 200 us idle (default event)
  --split-only         do not offer the packed ring
  --queues N           queue pairs offered (VIRTIO_NET_F_MQ above 1; default 1)
  --threads N          data-plane worker threads; queue pair i is served by thread i mod N
                       (default: the main thread serves every queue)
  --cpus LIST          pin the data-plane threads: thread k on the k-th CPU of LIST (e.g.
                       1 or 2-3,6; default: as many threads as CPUs listed)
  --seconds S          exit after S seconds (default: run until SIGINT/SIGTERM)
  --json               print counters as one JSON object per second on stdout

Prints frames and bytes received and sent per second.`;

export async function cmdNetLoad(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      socket: { type: 'string' },
      gen: { type: 'boolean', default: false },
      sink: { type: 'string', default: 'copy' },
      size: { type: 'string' },
      poll: { type: 'string', default: 'event' },
      'split-only': { type: 'boolean', default: false },
      queues: { type: 'string', default: '1' },
      threads: { type: 'string' },
      cpus: { type: 'string' },
      seconds: { type: 'string' },
      json: { type: 'boolean', default: false },
      client: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(netLoadUsage + '\n');
    return;
  }
  if (!values.socket) throw new Error('net-load: --socket is required');
  if (!SINK_MODES.includes(values.sink as SinkMode)) throw new Error(`--sink ${values.sink}: expected ${SINK_MODES.join(' or ')}`);
  if (!POLL_MODES.includes(values.poll as PollMode)) throw new Error(`--poll ${values.poll}: expected ${POLL_MODES.join(', ')}`);
  const size = values.size === undefined ? 64 : Number(values.size);
  const seconds = values.seconds === undefined ? Infinity : Number(values.seconds);
  if (!(seconds > 0)) throw new Error(`--seconds ${values.seconds}: a positive number`);
  const queuePairs = Number(values.queues);
  const cpus = values.cpus === undefined ? undefined : parseCpuList(values.cpus);
  const threads = values.threads === undefined ? (cpus?.length ?? 0) : Number(values.threads);
  if (!Number.isInteger(threads) || threads < 0) throw new Error(`--threads ${values.threads}: a whole number`);
  if (cpus && threads === 0) throw new Error('--cpus needs --threads of 1 or more');
  const dev = await NetLoadDevice.create({
    generate: values.gen,
    sink: values.sink as SinkMode,
    frameBytes: size,
    poll: values.poll as PollMode,
    packed: !values['split-only'],
    queuePairs,
    threads,
    cpus,
  });
  const socket = resolve(values.socket);
  const be = new VhostUserBackend(dev, { socket, mode: values.client ? 'client' : 'server', log: log.child({ port: 'net-load' }) });
  await be.start();
  // Signals are handled before the first line that says we serve.
  let tick: NodeJS.Timeout | undefined = undefined; // set below, once the first line is out
  const stopped = untilSignal(
    async () => {
      clearInterval(tick);
      await be.stop();
      await dev.close();
    },
    { afterMs: seconds * 1000 },
  );
  if (!values.json) {
    const where = threads === 0 ? 'on the main thread' : `on ${threads} thread${threads > 1 ? 's' : ''}${cpus ? ` pinned to CPU ${cpus.join(',')}` : ''}`;
    process.stdout.write(
      `vhostkit net-load: ${values.gen ? 'sink and generator' : 'sink'} (${values.sink}) on ${socket}, ${queuePairs} queue pair${queuePairs > 1 ? 's' : ''} ${where}, poll ${values.poll}\n`,
    );
  }
  let last = { t: performance.now(), rx: 0, tx: 0 };
  tick = setInterval(() => {
    const now = performance.now();
    const dt = (now - last.t) / 1000;
    const c = dev.counters;
    if (values.json) {
      process.stdout.write(JSON.stringify({ t: now / 1000, ...c, poll: dev.pollStats, threads: dev.threadStats() }) + '\n');
    } else {
      process.stdout.write(`rx ${((c.rxPackets - last.rx) / dt / 1e6).toFixed(3)} Mpps  tx ${((c.txPackets - last.tx) / dt / 1e6).toFixed(3)} Mpps  (total rx ${c.rxPackets}, tx ${c.txPackets})\n`);
    }
    last = { t: now, rx: c.rxPackets, tx: c.txPackets };
  }, 1000);
  await stopped;
}
