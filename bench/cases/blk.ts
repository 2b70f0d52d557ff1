// Case 4: virtio-blk. Our frontend (vhostkit blk-load: a lean polling driver) runs 4 KiB
// random reads and writes at queue depth 1 and 32, on 1 and 2 queues, against vhostkit blk
// and qemu-storage-daemon serving the same image on tmpfs, and vhostkit --ram. The backends
// are pinned to one CPU, the frontend to the other; runs alternate between backends.
import { openSync, writeSync, closeSync, rmSync } from 'node:fs';
import { startStorageDaemon, startVhostkitBlk, vhostkitCli, makeTempDir, type StorageDaemon } from '../../test/lib/peers.js';
import type { BlkLoadResult } from '../../src/loadgen/blk.js';
import { commandLine, progress, runJson } from '../lib/proc.js';
import { median, rowsChart, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';

const IMAGE_BYTES = 256 << 20;

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
  const image = dir.join('disk.img');
  fillImage(image);
  const servers: Array<{ name: string; s: StorageDaemon; cmd: string }> = [];
  try {
    const qsdSock = dir.join('qsd.sock');
    const vkSock = dir.join('vk.sock');
    const ramSock = dir.join('ram.sock');
    const qsd = await startStorageDaemon({ image, socket: qsdSock, numQueues: 2, cpus: ctx.backendCpus });
    servers.push({ name: 'qemu-storage-daemon', s: qsd, cmd: commandLine([...qsd.process.argv]) });
    const vk = await startVhostkitBlk({ file: image, socket: vkSock, numQueues: 2, cpus: ctx.backendCpus });
    servers.push({ name: 'vhostkit', s: vk, cmd: commandLine([...vk.process.argv]) });
    const ram = await startVhostkitBlk({ ram: `${IMAGE_BYTES >> 20}M`, socket: ramSock, numQueues: 2, cpus: ctx.backendCpus });
    servers.push({ name: 'vhostkit --ram', s: ram, cmd: commandLine([...ram.process.argv]) });

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
          const r = await runJson<BlkLoadResult>(loadArgv(s.s.socket, c), 60_000 + ctx.seconds * 2000);
          if (r.errors) throw new Error(`${s.name}: ${r.errors} requests failed`);
          samples[s.name].push(r.iops);
          p50[s.name].push(r.p50us);
          p99[s.name].push(r.p99us);
          progress(`blk ${++step}/${total} ${c.rw} qd ${c.qd} x ${c.queues}q, ${s.name}, round ${round + 1}: ${Math.round(r.iops)} IOPS`);
        }
      }
      const lat = (n: string) => `${median(p50[n]).toFixed(0)} / ${median(p99[n]).toFixed(0)}`;
      rows.push({
        config: `${c.rw} 4 KiB, QD ${c.qd}, ${c.queues} queue${c.queues > 1 ? 's' : ''}`,
        unit: 'IOPS',
        samples,
        subject: 'vhostkit',
        reference: 'qemu-storage-daemon',
        extra: {
          'p50 / p99 us vhostkit': lat('vhostkit'),
          'p50 / p99 us qsd': lat('qemu-storage-daemon'),
          'p50 / p99 us --ram': lat('vhostkit --ram'),
        },
      });
    }
    return {
      id: 'blk',
      title: 'Case 4: virtio-blk, 4 KiB random I/O (IOPS)',
      notes: [
        `One ${IMAGE_BYTES >> 20} MiB image on tmpfs (/dev/shm), filled with data, served by qemu-storage-daemon and by vhostkit blk (buffered I/O, 2 queues each); vhostkit --ram is a RAM disk of the same size.`,
        `Frontend: \`vhostkit blk-load\` (our lean polling split-ring driver, no interrupts, EVENT_IDX kicks), pinned to CPU ${ctx.frontendCpus}; every backend pinned to CPU ${ctx.backendCpus}. QD is per queue; ${ctx.seconds} s per run after 0.5 s of warm-up; ${ctx.rounds} rounds alternating the backends.`,
        'Latency is measured by the frontend from avail-ring publication to seeing the used element.',
      ],
      rows,
      commands: [...servers.map((s) => `${s.name}: ${s.cmd}`), `load (one run): ${commandLine(loadArgv('SOCKET', { rw: 'randread', qd: 32, queues: 1 }))}`],
      target: { ratio: 1.0, rows: (r) => r.config.startsWith('randread') && r.config.includes('QD 32'), what: 'blk 4 KiB randread at QD 32: at least 1.0 x qemu-storage-daemon' },
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
    rmSync(image, { force: true });
    dir.cleanup();
  }
}
