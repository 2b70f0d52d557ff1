// Case 4: virtio-blk. Our frontend (vhostkit blk-load: a lean polling driver) runs 4 KiB
// random reads and writes at queue depth 1 and 32, on 1 and 2 queues, against vhostkit blk
// (its default engine, io_uring; with --poll-us; with the thread pool) and
// qemu-storage-daemon (its default; and its best here: an iothread with aio=io_uring or
// aio=native and cache.direct=on), each serving its own copy of one image on tmpfs, and
// vhostkit --ram. The backends are pinned to one CPU, the frontend to the other; runs
// alternate between backends.
import { openSync, writeSync, closeSync, rmSync, truncateSync } from 'node:fs';
import { startStorageDaemon, startVhostkitBlk, vhostkitCli, makeTempDir, type StorageDaemon } from '../../test/lib/peers.js';
import type { BlkLoadResult } from '../../src/loadgen/blk.js';
import { commandLine, progress, runJson } from '../lib/proc.js';
import { median, pairedRatio, ratio, rowsChart, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';

const IMAGE_BYTES = 256 << 20;
/** vhostkit blk --poll-us of the polling variant: qemu-storage-daemon's iothread default poll-max-ns (32768) */
const POLL_US = 32;

function fillImage(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  try {
    for (let off = 0; off < IMAGE_BYTES; off += chunk.length) {
      chunk.writeUInt32LE(off, 0);
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
}

export async function blkCase(ctx: BenchContext): Promise<CaseReport> {
  const dir = makeTempDir('vhostkit-bench-blk-', '/dev/shm');
  // One copy of the image per server: each takes its lock on its own file.
  const images: string[] = [];
  const imageCopy = (name: string): string => {
    const path = dir.join(`${name}.img`);
    fillImage(path);
    images.push(path);
    return path;
  };
  const servers: Array<{ name: string; s: StorageDaemon; cmd: string; socket: string }> = [];
  try {
    const qsd = await startStorageDaemon({ image: imageCopy('qsd'), socket: dir.join('qsd.sock'), numQueues: 2, cpus: ctx.backendCpus });
    servers.push({ name: 'qemu-storage-daemon', s: qsd, cmd: commandLine([...qsd.process.argv]), socket: qsd.socket });
    // qemu-storage-daemon's best configurations here: the export in an iothread (which polls
    // up to poll-max-ns before it sleeps), O_DIRECT, and io_uring or Linux AIO. The helper
    // exports a small placeholder image on its own socket; the export measured is the second.
    for (const aio of ['io_uring', 'native'] as const) {
      const img = imageCopy(`qsd-${aio}`);
      const sock = dir.join(`qsd-${aio}.sock`);
      const placeholder = dir.join(`qsd-${aio}-placeholder.img`);
      closeSync(openSync(placeholder, 'w'));
      truncateSync(placeholder, 1 << 20);
      images.push(placeholder);
      const best = await startStorageDaemon({
        image: placeholder,
        socket: dir.join(`qsd-${aio}-placeholder.sock`),
        cpus: ctx.backendCpus,
        extraArgs: [
          '--object',
          'iothread,id=io0',
          '--blockdev',
          `driver=file,node-name=b,filename=${img},aio=${aio},cache.direct=on`,
          '--export',
          `type=vhost-user-blk,id=eb,node-name=b,addr.type=unix,addr.path=${sock},writable=on,num-queues=2,iothread=io0`,
        ],
      });
      servers.push({ name: `qsd iothread aio=${aio} direct`, s: best, cmd: commandLine([...best.process.argv]), socket: sock });
    }
    const variants: Array<{ name: string; args: string[] }> = [
      { name: 'vhostkit', args: [] },
      { name: `vhostkit --poll-us ${POLL_US}`, args: ['--poll-us', String(POLL_US)] },
      { name: 'vhostkit --engine threads', args: ['--engine', 'threads'] },
    ];
    for (const v of variants) {
      const sock = dir.join(`vk-${servers.length}.sock`);
      const vk = await startVhostkitBlk({ file: imageCopy(`vk-${servers.length}`), socket: sock, numQueues: 2, cpus: ctx.backendCpus, extraArgs: v.args });
      servers.push({ name: v.name, s: vk, cmd: commandLine([...vk.process.argv]), socket: sock });
    }
    const ram = await startVhostkitBlk({ ram: `${IMAGE_BYTES >> 20}M`, socket: dir.join('ram.sock'), numQueues: 2, cpus: ctx.backendCpus });
    servers.push({ name: 'vhostkit --ram', s: ram, cmd: commandLine([...ram.process.argv]), socket: ram.socket });

    const configs: Array<{ rw: 'randread' | 'randwrite'; qd: number; queues: number }> = [];
    for (const rw of ['randread', 'randwrite'] as const) for (const queues of [1, 2]) for (const qd of [1, 32]) configs.push({ rw, qd, queues });
    const rows: Row[] = [];
    const loadArgv = (sock: string, c: (typeof configs)[0]) => [
      'taskset',
      '-c',
      ctx.frontendCpus,
      process.execPath,
      vhostkitCli,
      'blk-load',
      sock,
      '--rw',
      c.rw,
      '--qd',
      String(c.qd),
      '--queues',
      String(c.queues),
      '--bs',
      '4096',
      '--seconds',
      String(ctx.seconds),
      '--json',
    ];
    let step = 0;
    const total = configs.length * ctx.rounds * servers.length;
    for (const c of configs) {
      const samples: Record<string, number[]> = {};
      const p50: Record<string, number[]> = {};
      const p99: Record<string, number[]> = {};
      for (const s of servers) {
        samples[s.name] = [];
        p50[s.name] = [];
        p99[s.name] = [];
      }
      for (let round = 0; round < ctx.rounds; round++) {
        // A B C, then B C A, ...: every backend runs first, middle and last once per 3 rounds.
        const order = servers.map((_, i) => servers[(i + round) % servers.length]);
        for (const s of order) {
          const r = await runJson<BlkLoadResult>(loadArgv(s.socket, c), 60_000 + ctx.seconds * 2000);
          if (r.errors) throw new Error(`${s.name}: ${r.errors} requests failed`);
          samples[s.name].push(r.iops);
          p50[s.name].push(r.p50us);
          p99[s.name].push(r.p99us);
          progress(`blk ${++step}/${total} ${c.rw} qd ${c.qd} x ${c.queues}q, ${s.name}, round ${round + 1}: ${Math.round(r.iops)} IOPS`);
        }
      }
      const lat = (n: string) => `${median(p50[n]).toFixed(0)} / ${median(p99[n]).toFixed(0)}`;
      // vhostkit against qemu-storage-daemon's best configuration for this row: both estimates.
      const bestName = ['qsd iothread aio=io_uring direct', 'qsd iothread aio=native direct'].reduce((a, b) => (median(samples[b]) > median(samples[a]) ? b : a));
      const vsBest = (subject: string): string => {
        const r: Row = { config: '', unit: 'IOPS', samples: { [subject]: samples[subject], [bestName]: samples[bestName] }, subject, reference: bestName };
        return `${ratio(r).toFixed(2)} / ${pairedRatio(r).toFixed(2)}`;
      };
      rows.push({
        config: `${c.rw} 4 KiB, QD ${c.qd}, ${c.queues} queue${c.queues > 1 ? 's' : ''}`,
        unit: 'IOPS',
        samples,
        subject: 'vhostkit',
        reference: 'qemu-storage-daemon',
        extra: {
          'qsd best here': bestName.replace('qsd iothread ', '').replace(' direct', ''),
          'vhostkit / qsd best (medians / round ratios)': vsBest('vhostkit'),
          [`--poll-us ${POLL_US} / qsd best`]: vsBest(`vhostkit --poll-us ${POLL_US}`),
          'p50 / p99 us vhostkit': lat('vhostkit'),
          [`p50 / p99 us --poll-us ${POLL_US}`]: lat(`vhostkit --poll-us ${POLL_US}`),
          'p50 / p99 us threads': lat('vhostkit --engine threads'),
          'p50 / p99 us qsd': lat('qemu-storage-daemon'),
          'p50 / p99 us qsd best': lat(bestName),
        },
      });
    }
    return {
      id: 'blk',
      title: 'Case 4: virtio-blk, 4 KiB random I/O (IOPS)',
      notes: [
        `A ${IMAGE_BYTES >> 20} MiB image on tmpfs (/dev/shm), filled with data, one copy per server, 2 queues each: qemu-storage-daemon by default (buffered, main loop, aio=threads) and at its best here (an iothread, cache.direct=on, aio=io_uring or aio=native); vhostkit blk with its default engine (io_uring: small requests of a tmpfs file are copied on the event loop, no thread hop), with --poll-us ${POLL_US} (after a kick, poll the ring ${POLL_US} us before sleeping, as qsd's iothread does) and with --engine threads (the thread pool); vhostkit --ram is a RAM disk of the same size.`,
        `Frontend: \`vhostkit blk-load\` (our lean polling split-ring driver, no interrupts, EVENT_IDX kicks), pinned to CPU ${ctx.frontendCpus}; every backend pinned to CPU ${ctx.backendCpus}. QD is per queue; ${ctx.seconds} s per run after 0.5 s of warm-up; ${ctx.rounds} rounds alternating the backends.`,
        'Latency is measured by the frontend from avail-ring publication to seeing the used element.',
      ],
      rows,
      commands: [...servers.map((s) => `${s.name} (socket ${s.socket}): ${s.cmd}`), `load (one run): ${commandLine(loadArgv('SOCKET', { rw: 'randread', qd: 32, queues: 1 }))}`],
      target: {
        ratio: 1.0,
        rows: (r) => r.config.includes('QD 1,'),
        what: 'blk 4 KiB randread and randwrite at QD 1: at least 1.0 x qemu-storage-daemon (issue 24; the columns give the ratio to its best configuration too)',
      },
      charts: [
        rowsChart(rows, {
          file: 'blk-iops',
          title: 'virtio-blk 4 KiB random I/O: IOPS by queue depth and queues',
          yLabel: 'IOPS',
          label: (r) => r.config.replace(' 4 KiB', '').replaceAll(', ', '\n'),
        }),
      ],
    };
  } finally {
    for (const s of servers) await s.s.stop();
    for (const img of images) rmSync(img, { force: true });
    dir.cleanup();
  }
}
