// Two vhostkit builds on one net or switch configuration, in turns (lib/interleave.ts):
// for deciding whether a change helps on a machine whose speed shifts between regimes,
// where runs one after the other cannot tell a few percent apart.
//
//   node dist/bench/ab.js --a DIST_A --b DIST_B --case net-tx|net-rx|switch [--packed]
//     [--size 64] [--rounds 5] [--turns 2] [--frontend-cpus 0 --backend-cpus 1]
//
// DIST_A, DIST_B: the dist directories of two built checkouts (each with its addon built).
// Prints each turn and, per round, B / A; then the medians.
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { benchArgs, usageError } from './lib/args.js';
import { startNetSide } from './cases/net.js';
import { startSwitchSide } from './cases/switch.js';
import { measureInTurns, rate } from './lib/interleave.js';
import { progress } from './lib/proc.js';
import { median } from './lib/report.js';
import type { BenchContext } from './run.js';

const USAGE = `usage: node dist/bench/ab.js --a DIST_A --b DIST_B [OPTIONS]
  two vhostkit builds (the dist directories of two built checkouts) on one configuration, in turns
  --case C              net-tx, net-rx or switch (default net-tx)
  --packed              packed rings (default split)
  --size BYTES          frame size (default 64)
  --rounds N            rounds (default 5)
  --turns T             turns per side per round (default 2)
  --frontend-cpus LIST  CPUs of the frontend (default 0)
  --backend-cpus LIST   CPUs of the builds under test (default 1; 0 with one CPU)`;
const values = benchArgs(USAGE, {
  a: { type: 'string' },
  b: { type: 'string' },
  case: { type: 'string', default: 'net-tx' },
  packed: { type: 'boolean', default: false },
  size: { type: 'string', default: '64' },
  rounds: { type: 'string', default: '5' },
  turns: { type: 'string', default: '2' },
  'frontend-cpus': { type: 'string', default: '0' },
  'backend-cpus': { type: 'string', default: cpus().length > 1 ? '1' : '0' },
});
const cli = (d: string | undefined, flag: string): string => {
  if (!d) usageError(USAGE, `--${flag} DIST: the dist directory of a built checkout`);
  const p = join(resolve(d), 'src', 'cli', 'main.js');
  if (!existsSync(p)) usageError(USAGE, `--${flag} ${d}: no ${p}`);
  return p;
};
const builds = { A: cli(values.a, 'a'), B: cli(values.b, 'b') };
const kase = values.case!;
if (!['net-tx', 'net-rx', 'switch'].includes(kase)) usageError(USAGE, `--case ${kase}: net-tx, net-rx or switch`);
const ctx: BenchContext = { rounds: Number(values.rounds), seconds: 1, turns: Number(values.turns), frontendCpus: values['frontend-cpus']!, backendCpus: values['backend-cpus']! };
const size = Number(values.size);
const commands = new Set<string>();
const samples = await measureInTurns<'A' | 'B'>(
  ['A', 'B'],
  (n) =>
    kase === 'switch'
      ? startSwitchSide(ctx, 'vhostkit switch', values.packed!, commands, builds[n], size)
      : startNetSide(ctx, kase === 'net-tx' ? 'tx' : 'rx', 'vhostkit', size, values.packed!, commands, builds[n]),
  {
    rounds: ctx.rounds,
    turns: ctx.turns,
    periods: 1,
    onTurn: (n, round, turn, w) => progress(`${n} round ${round + 1} turn ${turn + 1}: ${(rate(w) / 1e6).toFixed(2)} Mpps`),
  },
);
const ratios = samples.A.map((a, i) => samples.B[i] / a);
for (let i = 0; i < ratios.length; i++) console.log(`round ${i + 1}: A ${(samples.A[i] / 1e6).toFixed(2)} Mpps, B ${(samples.B[i] / 1e6).toFixed(2)} Mpps, B / A ${ratios[i].toFixed(3)}`);
console.log(
  `medians: A ${(median(samples.A) / 1e6).toFixed(2)}, B ${(median(samples.B) / 1e6).toFixed(2)}, B / A of medians ${(median(samples.B) / median(samples.A)).toFixed(3)}, median of round ratios ${median(ratios).toFixed(3)}`,
);
