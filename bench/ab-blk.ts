// Two vhostkit builds serving the same kind of disk to vhostkit blk-load, runs alternated
// (A B, then B A, ... per round): for deciding whether a change to the blk engine helps.
// Both backends stay up for the whole run (idle when not loaded), each on its own copy of
// one image, pinned to the backend CPU; the load generator is this checkout's.
//
//   node dist/bench/ab-blk.js --a DIST_A --b DIST_B [--dir /tmp] [--rounds 5] [--seconds 3]
//     [--configs randread:1,randwrite:1,randread:32,randwrite:32] [--bs 4096] [--queues 1]
//
// A config is RW:QD (RW randread or randwrite). Prints each run, then per config the medians,
// B / A of the medians and the median of the round ratios.
import { existsSync, openSync, writeSync, closeSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { benchArgs, usageError } from './lib/args.js';
import { commandLine, progress, runJson } from './lib/proc.js';
import { median } from './lib/report.js';
import { makeTempDir, startVhostkitBlk, vhostkitCli, type StorageDaemon } from '../test/lib/peers.js';
import type { BlkLoadResult } from '../src/loadgen/blk.js';

const USAGE = `usage: node dist/bench/ab-blk.js --a DIST_A --b DIST_B [OPTIONS]
  two vhostkit builds (the dist directories of two built checkouts) serving a file to blk-load, alternated
  --dir DIR             where the images are (its file system decides the engine's path; default /tmp)
  --image-mib N         image size (default 256), filled with data
  --configs LIST        RW:QD,... (default randread:1,randwrite:1,randread:32,randwrite:32)
  --bs BYTES            request size (default 4096)
  --queues N            queues (default 1)
  --rounds N            rounds (default 5)
  --seconds S           seconds per run (default 3)
  --backend-args ARGS   extra vhostkit blk arguments for both, space-separated
  --frontend-cpus LIST  CPUs of blk-load (default 0)
  --backend-cpus LIST   CPUs of the backends (default 1; 0 with one CPU)`;
const v = benchArgs(USAGE, {
  a: { type: 'string' },
  b: { type: 'string' },
  dir: { type: 'string', default: '/tmp' },
  'image-mib': { type: 'string', default: '256' },
  configs: { type: 'string', default: 'randread:1,randwrite:1,randread:32,randwrite:32' },
  bs: { type: 'string', default: '4096' },
  queues: { type: 'string', default: '1' },
  rounds: { type: 'string', default: '5' },
  seconds: { type: 'string', default: '3' },
  'backend-args': { type: 'string', default: '' },
  'frontend-cpus': { type: 'string', default: '0' },
  'backend-cpus': { type: 'string', default: cpus().length > 1 ? '1' : '0' },
});
const cli = (d: string | undefined, flag: string): string => {
  if (!d) usageError(USAGE, `--${flag} DIST: the dist directory of a built checkout`);
  const p = join(resolve(d), 'src', 'cli', 'main.js');
  if (!existsSync(p)) usageError(USAGE, `--${flag} ${d}: no ${p}`);
  return p;
};
const builds = { A: cli(v.a, 'a'), B: cli(v.b, 'b') } as const;
const configs = v.configs!.split(',').map((s) => {
  const [rw, qd] = s.split(':');
  if ((rw !== 'randread' && rw !== 'randwrite') || !/^\d+$/.test(qd ?? '')) usageError(USAGE, `--configs: ${s} is not RW:QD`);
  return { rw, qd: Number(qd) };
});
const num = (k: 'image-mib' | 'bs' | 'queues' | 'rounds' | 'seconds'): number => {
  const n = Number(v[k]);
  if (!(n > 0) || (k !== 'seconds' && !Number.isInteger(n))) usageError(USAGE, `--${k} ${v[k]}: a positive ${k === 'seconds' ? 'number' : 'integer'}`);
  return n;
};
const [imageMiB, bs, queues, rounds, seconds] = [num('image-mib'), num('bs'), num('queues'), num('rounds'), num('seconds')];

const dir = makeTempDir('vhostkit-ab-blk-', v.dir);
const servers: Partial<Record<'A' | 'B', StorageDaemon>> = {};
try {
  for (const n of ['A', 'B'] as const) {
    const img = dir.join(`${n}.img`);
    const fd = openSync(img, 'w');
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
    for (let m = 0; m < imageMiB; m++) writeSync(fd, chunk, 0, chunk.length, m << 20);
    closeSync(fd);
    const extra = v['backend-args']!.split(' ').filter((x) => x !== '');
    servers[n] = await startVhostkitBlk({ file: img, socket: dir.join(`${n}.sock`), numQueues: queues, cpus: v['backend-cpus'], extraArgs: extra, cli: builds[n] });
    progress(`${n}: ${commandLine([...servers[n]!.process.argv])}`);
  }
  const iops: Record<string, { A: number[]; B: number[] }> = {};
  for (let round = 0; round < rounds; round++) {
    for (const c of configs) {
      const key = `${c.rw} QD ${c.qd}`;
      iops[key] ??= { A: [], B: [] };
      for (const n of round % 2 === 0 ? (['A', 'B'] as const) : (['B', 'A'] as const)) {
        const argv = [
          'taskset',
          '-c',
          v['frontend-cpus']!,
          process.execPath,
          vhostkitCli,
          'blk-load',
          servers[n]!.socket,
          '--rw',
          c.rw,
          '--qd',
          String(c.qd),
          '--queues',
          String(queues),
          '--bs',
          String(bs),
          '--seconds',
          String(seconds),
          '--json',
        ];
        const r = await runJson<BlkLoadResult>(argv, (seconds + 30) * 1000);
        if (r.errors > 0) throw new Error(`${n} ${key}: ${r.errors} error statuses`);
        iops[key][n].push(r.iops);
        progress(`round ${round + 1} ${key} ${n}: ${(r.iops / 1000).toFixed(1)}k IOPS, p50 ${r.p50us.toFixed(1)} us, p99 ${r.p99us.toFixed(1)} us`);
      }
    }
  }
  console.log(`| config (${bs} B, ${queues} queue${queues > 1 ? 's' : ''}, ${v.dir}) | A (IOPS, median) | B (IOPS, median) | B / A of medians | median of round ratios | rounds B / A |`);
  console.log('|---|---|---|---|---|---|');
  for (const [key, s] of Object.entries(iops)) {
    const ratios = s.A.map((a, i) => s.B[i] / a);
    console.log(
      `| ${key} | ${(median(s.A) / 1000).toFixed(1)}k | ${(median(s.B) / 1000).toFixed(1)}k | ${(median(s.B) / median(s.A)).toFixed(3)} | ${median(ratios).toFixed(3)} | ${ratios.map((x) => x.toFixed(2)).join(' ')} |`,
    );
  }
} finally {
  for (const s of Object.values(servers)) await s.stop();
  dir.cleanup();
}
