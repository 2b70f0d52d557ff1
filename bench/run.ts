// npm run bench: every case against its reference in the same run, alternating them, at
// least 3 rounds; medians and ratios go to bench/results/<date>.md with the commands that
// reproduce each measurement, and SVG charts beside it.
//
//   npm run bench [-- --cases blk,... --rounds N --seconds S --turns T --frontend-cpus 0 --backend-cpus 1]
//
// --seconds is the length of one run of the blk, cpu and memory cases and of the api case's
// runs without traffic. The net and switch cases keep both sides up and measure them in
// turns of one statistics period, --turns turns per side per round (lib/interleave.ts); the
// api case turns its API load off and on the same way.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { peerAvailability, type PeerName } from '../test/lib/peers.js';
import { apiCase } from './cases/api.js';
import { blkCase } from './cases/blk.js';
import { cpuCase } from './cases/cpu.js';
import { memoryCase } from './cases/memory.js';
import { netCase } from './cases/net.js';
import { switchCase } from './cases/switch.js';
import { switchFlowsCase } from './cases/switch-flows.js';
import { switchThreadsCase } from './cases/switch-threads.js';
import { barChartSvg } from './lib/chart.js';
import { checkTarget, markdownTable, type CaseReport } from './lib/report.js';
import { progress } from './lib/proc.js';
import { benchArgs, usageError } from './lib/args.js';

export interface BenchContext {
  rounds: number;
  seconds: number;
  /** net, switch, switch-flows and api cases: turns per side per round */
  turns: number;
  frontendCpus: string;
  backendCpus: string;
}

interface CaseDef {
  id: string;
  peers: PeerName[];
  run: (ctx: BenchContext) => Promise<CaseReport>;
}

const CASES: CaseDef[] = [
  { id: 'net-rx', peers: ['dpdk-testpmd'], run: netCase('rx') },
  { id: 'net-tx', peers: ['dpdk-testpmd'], run: netCase('tx') },
  { id: 'switch', peers: ['dpdk-testpmd'], run: switchCase },
  { id: 'blk', peers: ['qemu-storage-daemon'], run: blkCase },
  { id: 'cpu', peers: ['dpdk-testpmd'], run: cpuCase },
  { id: 'memory', peers: ['dpdk-testpmd'], run: memoryCase },
  { id: 'api', peers: ['dpdk-testpmd'], run: apiCase },
  { id: 'switch-flows', peers: ['dpdk-testpmd'], run: switchFlowsCase },
  { id: 'switch-threads', peers: ['dpdk-testpmd'], run: switchThreadsCase },
];

const USAGE = `usage: npm run bench [-- OPTIONS]   (or: node dist/bench/run.js OPTIONS, after a build)
  --cases LIST          cases to run, of ${CASES.map((c) => c.id).join(',')} (default: all)
  --rounds N            rounds per case, at least 3 (default 3)
  --seconds S           length of one run of the blk, cpu and memory cases, and of the api case's runs without traffic (default 3)
  --turns T             net, switch, switch-flows and api: turns per side per round (default 4)
  --frontend-cpus LIST  CPUs of the frontends (default 0)
  --backend-cpus LIST   CPUs of vhostkit and of the reference backends (default 1; 0 with one CPU)
  --out DIR             where the report and charts go (default bench/results)`;
const values = benchArgs(USAGE, {
  cases: { type: 'string' },
  rounds: { type: 'string', default: '3' },
  seconds: { type: 'string', default: '3' },
  turns: { type: 'string', default: '4' },
  'frontend-cpus': { type: 'string', default: '0' },
  'backend-cpus': { type: 'string', default: cpus().length > 1 ? '1' : '0' },
  out: { type: 'string' },
});
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
if (!Number.isInteger(rounds) || rounds < 3) usageError(USAGE, `--rounds ${values.rounds}: at least 3`);
if (!(seconds > 0)) usageError(USAGE, `--seconds ${values.seconds}: a positive number`);
const turns = Number(values.turns);
if (!Number.isInteger(turns) || turns < 1) usageError(USAGE, `--turns ${values.turns}: a positive integer`);
const ctx: BenchContext = { rounds, seconds, turns, frontendCpus: values['frontend-cpus'], backendCpus: values['backend-cpus'] };
const wanted = values.cases ? values.cases.split(',') : CASES.map((c) => c.id);
for (const w of wanted) if (!CASES.some((c) => c.id === w)) usageError(USAGE, `unknown case ${w}; cases: ${CASES.map((c) => c.id).join(', ')}`);

const peers = await peerAvailability();
const missing = (c: CaseDef) => c.peers.filter((p) => !peers[p].available);
const reports: CaseReport[] = [];
const skipped: string[] = [];
for (const c of CASES.filter((x) => wanted.includes(x.id))) {
  const m = missing(c);
  if (m.length) {
    const line = `case ${c.id} skipped: missing ${m.join(', ')} (install: sudo apt-get install -y ${m.map((p) => peers[p].debianPackage).join(' ')})`;
    progress(line);
    skipped.push(line);
    continue;
  }
  progress(`case ${c.id}: ${rounds} rounds${c.id.startsWith('net') || c.id.startsWith('switch') || c.id === 'api' ? `, ${turns} turns per side per round` : ` of ${seconds} s per run`}`);
  reports.push(await c.run(ctx));
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');
const outDir = values.out ?? root;
mkdirSync(outDir, { recursive: true });
const date = new Date().toISOString().slice(0, 10);
const md: string[] = [`# vhostkit benchmarks, ${date}`, ''];
md.push(
  `Machine: ${cpus().length} x ${cpus()[0]?.model ?? 'CPU'}, Node ${process.version}. Medians of ${rounds} rounds; every case runs its reference in the same run, alternating (net, switch and api: ${turns} turns per side per round).`,
);
md.push(
  '',
  'Two ratios per row: the ratio of the medians, and the median of the per-round ratios. These 2-CPU machines switch between regimes of different speed, for seconds to a minute at a time (docs/performance.md, "This machine\'s two speeds"). The net and switch cases therefore keep both sides up and measure them in short turns, A B B A ..., so that the two figures of a round span the same stretch of time (the api case likewise turns its API load off and on under one running traffic); the other cases alternate whole runs. A target is met only if both ratios meet it; the figures are given as "ratio of medians / median of round ratios".',
);
md.push(`Reproduce: \`npm run bench -- --cases ${wanted.join(',')} --rounds ${rounds} --seconds ${seconds} --turns ${turns}\`.`, '');
for (const s of skipped) md.push(`- ${s}`);
for (const r of reports) {
  md.push(`## ${r.title}`, '');
  for (const n of r.notes) md.push(n, '');
  md.push(markdownTable(r));
  const t = checkTarget(r);
  if (t) md.push(`Target (${r.target!.what}): ${t.ok ? 'met' : 'NOT met'} (${t.figures.join(', ')}).`, '');
  for (const ch of r.charts ?? []) {
    const file = `${date}-${ch.file}.svg`;
    writeFileSync(join(outDir, file), barChartSvg(ch));
    md.push(`![${ch.title}](${file})`, '');
  }
  md.push('Commands:', '', '```', ...r.commands, '```', '');
}
const mdPath = join(outDir, `${date}.md`);
writeFileSync(mdPath, md.join('\n'));
process.stdout.write(md.join('\n') + '\n');
progress(`report: ${mdPath}`);
