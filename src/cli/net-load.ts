// `vhostkit net-load`: a virtio-net port that drops what the driver sends (a sink) and, with
// --gen, fills every receive buffer with a fixed frame (a generator): one end of a ring
// benchmark against any vhost-user frontend (dpdk-testpmd virtio-user, QEMU).
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { VhostUserBackend } from '../vhost-user/backend.js';
import { NetLoadDevice } from '../loadgen/net.js';
import { POLL_MODES, type PollMode } from '../dataplane/poller.js';
import { log } from '../log.js';

export const netLoadUsage = `vhostkit net-load --socket PATH [--gen] [--size BYTES] [--poll busy|event|adaptive] [options]

  --socket PATH        the vhost-user socket (server; --client to connect to a frontend's)
  --gen                fill the driver's receive buffers with frames (default: only sink)
  --size BYTES         generated frame length, Ethernet header included (default 64)
  --poll MODE          busy: spin on the rings; event: sleep on kicks; adaptive: spin while
                       traffic flows, sleep after 200 us idle (default event)
  --split-only         do not offer the packed ring
  --seconds S          exit after S seconds (default: run until SIGINT/SIGTERM)
  --json               print counters as one JSON object per second on stdout

Prints frames and bytes received and sent per second.`;

export async function cmdNetLoad(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      socket: { type: 'string' },
      gen: { type: 'boolean', default: false },
      size: { type: 'string' },
      poll: { type: 'string', default: 'event' },
      'split-only': { type: 'boolean', default: false },
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
  if (!POLL_MODES.includes(values.poll as PollMode)) throw new Error(`--poll ${values.poll}: expected ${POLL_MODES.join(', ')}`);
  const size = values.size === undefined ? 64 : Number(values.size);
  const seconds = values.seconds === undefined ? Infinity : Number(values.seconds);
  if (!(seconds > 0)) throw new Error(`--seconds ${values.seconds}: a positive number`);
  const dev = new NetLoadDevice({ generate: values.gen, frameBytes: size, poll: values.poll as PollMode, packed: !values['split-only'] });
  const socket = resolve(values.socket);
  const be = new VhostUserBackend(dev, { socket, mode: values.client ? 'client' : 'server', log: log.child({ port: 'net-load' }) });
  await be.start();
  if (!values.json) process.stdout.write(`vhostkit net-load: ${values.gen ? 'sink and generator' : 'sink'} on ${socket}, poll ${values.poll}\n`);
  const c = dev.counters;
  let last = { t: performance.now(), rx: 0, tx: 0 };
  const tick = setInterval(() => {
    const now = performance.now();
    const dt = (now - last.t) / 1000;
    if (values.json) {
      process.stdout.write(JSON.stringify({ t: now / 1000, ...c, poll: dev.poller.stats }) + '\n');
    } else {
      process.stdout.write(
        `rx ${((c.rxPackets - last.rx) / dt / 1e6).toFixed(3)} Mpps  tx ${((c.txPackets - last.tx) / dt / 1e6).toFixed(3)} Mpps  (total rx ${c.rxPackets}, tx ${c.txPackets})\n`,
      );
    }
    last = { t: now, rx: c.rxPackets, tx: c.txPackets };
  }, 1000);
  await new Promise<void>((done) => {
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) process.exit(1);
      stopping = true;
      clearInterval(tick);
      log.info('stopping', { why });
      void be
        .stop()
        .then(() => dev.close())
        .then(done, done);
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    if (Number.isFinite(seconds)) setTimeout(() => stop(`${seconds} s elapsed`), seconds * 1000);
  });
}
