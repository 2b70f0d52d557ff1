// `vhostkit blk`: serve a raw image file or a RAM disk to a QEMU guest as vhost-user-blk.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { VhostUserBackend } from '../vhost-user/backend.js';
import { openDisk, parseSize } from '../backends/blk/disk.js';
import { log } from '../log.js';
import { untilSignal } from './signals.js';
import { parseDiskConfig } from '../host/config.js';
import { numberOr } from './run.js';

export const blkUsage = `vhostkit blk --socket PATH (--file IMAGE | --ram SIZE) [options]

  --socket PATH        the vhost-user socket (server; --client to connect to QEMU's)
  --file IMAGE         a raw image file or block device
  --ram SIZE           a RAM disk (e.g. 1G), zeroed, never written to a file
  --read-only          refuse writes (the guest sees VIRTIO_BLK_F_RO)
  --direct             open the file with O_DIRECT
  --serial ID          the GET_ID answer (20 bytes at most)
  --threads N          I/O threads (default 2)
  --engine E           threads | io_uring | auto (default: io_uring where the kernel allows it)
  --poll-us N          io_uring: poll the ring up to N µs after serving a kick (default 0)
  --num-queues N       request queues (default: one per I/O thread)
  --client             connect to a socket QEMU listens on (server=on)

Runs until SIGINT or SIGTERM; prints the QEMU arguments that attach to the disk.`;

export async function cmdBlk(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      socket: { type: 'string' },
      file: { type: 'string' },
      ram: { type: 'string' },
      'read-only': { type: 'boolean', default: false },
      direct: { type: 'boolean', default: false },
      serial: { type: 'string' },
      'num-queues': { type: 'string' },
      threads: { type: 'string' },
      engine: { type: 'string' },
      'poll-us': { type: 'string' },
      client: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(blkUsage + '\n');
    return;
  }
  if (!values.socket) throw new Error('blk: --socket is required');
  if (!values.file === !values.ram) throw new Error('blk: give exactly one of --file and --ram');
  // The same checks as a configuration file's disk (and the API's), before anything is opened.
  const cfg = parseDiskConfig({
    socket: resolve(values.socket),
    ...(values.file ? { file: resolve(values.file) } : { ram: values.ram }),
    serial: values.serial,
    ...(values.threads !== undefined ? { threads: Number(values.threads) } : {}),
    ...(values['num-queues'] !== undefined ? { queues: Number(values['num-queues']) } : {}),
    ...(values.engine !== undefined ? { engine: values.engine } : {}),
    ...(values['poll-us'] !== undefined ? { pollUs: numberOr(values['poll-us']) } : {}),
  });
  const engine = values.engine as 'threads' | 'io_uring' | 'auto' | undefined;
  const threads = values.threads === undefined ? 2 : Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new Error(`--threads ${values.threads}: expected 1..64`);
  const numQueues = values['num-queues'] === undefined ? threads : Number(values['num-queues']);
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 64) throw new Error(`--num-queues ${values['num-queues']}: expected 1..64`);
  const disk = openDisk({
    file: values.file ? resolve(values.file) : undefined,
    ramBytes: values.ram ? parseSize(values.ram) : undefined,
    readOnly: values['read-only'],
    direct: values.direct,
    serial: values.serial,
    numQueues,
    threads,
    engine,
    pollUs: cfg.pollUs,
  });
  const socket = resolve(values.socket);
  const be = new VhostUserBackend(disk.device, { socket, mode: values.client ? 'client' : 'server', log: log.child({ disk: values.file ?? `ram:${values.ram}` }) });
  await be.start();
  const chardev = values.client ? `-chardev socket,id=c1,path=${socket},server=on,wait=off` : `-chardev socket,id=c1,path=${socket},reconnect=1`;
  const stopped = untilSignal(async () => {
    await be.stop();
    disk.close();
  });
  process.stdout.write(
    `vhostkit blk: ${values.file ?? `RAM ${values.ram}`} (${disk.size} bytes${values['read-only'] ? ', read-only' : ''}, engine ${disk.engine.engine}) on ${socket}\n` +
      `  qemu ... -object memory-backend-memfd,id=mem,size=<RAM>,share=on -numa node,memdev=mem \\\n` +
      `    ${chardev} -device vhost-user-blk-pci,chardev=c1${numQueues > 1 ? `,num-queues=${numQueues}` : ''}\n`,
  );
  await stopped;
}
