// Case 7: the management API under full data-plane load. `vhostkit run` serves a switch with
// two ports (busy polling, the case 3 set-up: testpmd virtio-user A txonly -> switch ->
// testpmd virtio-user B rxonly) and its API on a Unix socket. autocannon sends API requests
// (GET /metrics, /v1/ports, /v1/switches/sw0/queues, /v1/status) while the traffic flows:
// paced at a monitoring-like rate, then as fast as 4 connections can go. Reported: the rate B
// receives with and without the API load (does the data plane keep its rate?), and the API's
// latency and throughput with the data plane loaded and idle (does the API stay responsive?).
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import autocannon from 'autocannon';
import { makeTempDir, vhostkitCli } from '../../test/lib/peers.js';
import { progress, spawnOwned, stopChild } from '../lib/proc.js';
import { median, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';
import { combined, generic, startSwitchTraffic, type SwitchTraffic } from './switch.js';

const PACED_RATE = 200;
const CONNECTIONS = 4;
const REQUESTS = ['/metrics', '/v1/ports', '/v1/switches/sw0/queues', '/v1/status'];

type Load = 'paced' | 'saturated';
interface ApiResult {
  reqPerSec: number;
  p50: number;
  p99: number;
  max: number;
  requests: number;
}

/** Runs autocannon against the API until `stop()`; rejects if any request failed. */
function apiLoad(socketPath: string, load: Load): { stop: () => Promise<ApiResult> } {
  let finished: (r: ApiResult) => void = () => {};
  let failed: (e: Error) => void = () => {};
  const done = new Promise<ApiResult>((res, rej) => {
    finished = res;
    failed = rej;
  });
  const started = Date.now();
  const inst = autocannon(
    {
      url: 'http://localhost',
      socketPath,
      connections: CONNECTIONS,
      duration: 3600,
      ...(load === 'paced' ? { overallRate: PACED_RATE } : {}),
      requests: REQUESTS.map((path) => ({ method: 'GET' as const, path })),
    },
    (err, r) => {
      if (err) return failed(err);
      if (r.errors || r.non2xx || r.timeouts) return failed(new Error(`API under load: ${r.errors} errors, ${r.non2xx} non-2xx answers, ${r.timeouts} timeouts in ${r.requests.sent} requests`));
      const secs = (Date.now() - started) / 1000;
      finished({ reqPerSec: r.requests.sent / secs, p50: r.latency.p50, p99: r.latency.p99, max: r.latency.max, requests: r.requests.sent });
    },
  );
  return {
    stop: async () => {
      inst.stop();
      return done;
    },
  };
}

async function startDaemon(tmp: ReturnType<typeof makeTempDir>, ctx: BenchContext, commands: Set<string>): Promise<{ daemon: ChildProcess; api: string; sa: string; sb: string }> {
  const sa = tmp.join('a.sock');
  const sb = tmp.join('b.sock');
  const api = tmp.join('api.sock');
  const argv = ['taskset', '-c', ctx.backendCpus, process.execPath, vhostkitCli, 'run', '--port', `a=${sa}`, '--port', `b=${sb}`, '--poll', 'busy', '--api', `unix:${api}`];
  commands.add(`vhostkit: ${generic(argv, sa, sb).replaceAll(api, 'API_SOCK')}`);
  const daemon = spawnOwned(argv);
  const end = Date.now() + 15_000;
  while (!existsSync(sa) || !existsSync(sb) || !existsSync(api)) {
    if (daemon.exitCode !== null || Date.now() > end) {
      await stopChild(daemon);
      throw new Error('vhostkit run did not create its sockets');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { daemon, api, sa, sb };
}

/** Sets the CPU list of every thread of this process; returns the list it had. */
function pinProcess(cpus: string): string {
  const run = (args: string[]) => {
    const r = spawnSync('taskset', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`taskset ${args.join(' ')}: ${r.stderr || r.error?.message}`);
    return r.stdout;
  };
  const before = /list: (\S+)/.exec(run(['-c', '-p', String(process.pid)]))?.[1];
  if (!before) throw new Error('taskset -c -p: no CPU list in its answer');
  run(['-a', '-c', '-p', cpus, String(process.pid)]);
  return before;
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

interface Round {
  mpps: Record<'none' | Load, number>;
  loaded: Record<Load, ApiResult>;
  idle: Record<Load, ApiResult>;
}

/** Per-turn API results of one load, combined: requests over time, median p50 / p99, largest max. */
function combine(turns: ApiResult[], seconds: number[]): ApiResult {
  const requests = turns.reduce((a, t) => a + t.requests, 0);
  const secs = seconds.reduce((a, t) => a + t, 0);
  return {
    reqPerSec: requests / secs,
    p50: median(turns.map((t) => t.p50)),
    p99: median(turns.map((t) => t.p99)),
    max: Math.max(...turns.map((t) => t.max)),
    requests,
  };
}

async function runRound(ctx: BenchContext, round: number, commands: Set<string>): Promise<Round> {
  const out: Partial<Round> = { mpps: { none: 0, paced: 0, saturated: 0 }, loaded: {} as Round['loaded'], idle: {} as Round['idle'] };
  // With traffic, in turns of one statistics period (as the switch case measures its two
  // sides): none, paced, saturated, then the other way round, ctx.turns times each, the
  // first load turning with the round; a load's figure is its frames over its time.
  const forward: Array<'none' | Load> = (['none', 'paced', 'saturated'] as const).map((_, i, a) => a[(i + round) % 3]);
  const frames = { none: 0, paced: 0, saturated: 0 };
  const secs = { none: 0, paced: 0, saturated: 0 };
  const perTurn: Record<Load, ApiResult[]> = { paced: [], saturated: [] };
  const turnSecs: Record<Load, number[]> = { paced: [], saturated: [] };
  let tmp = makeTempDir('vhostkit-bench-api-');
  let d: Awaited<ReturnType<typeof startDaemon>> | null = null;
  let fe: SwitchTraffic | null = null;
  try {
    d = await startDaemon(tmp, ctx, commands);
    fe = await startSwitchTraffic(ctx, d.sa, d.sb, false, commands);
    await fe.measure(1, 2000); // past the start (learning, the rings filling)
    for (let t = 0; t < ctx.turns; t++) {
      for (const w of t % 2 ? [...forward].reverse() : forward) {
        const load = w === 'none' ? null : apiLoad(d.api, w);
        const started = Date.now();
        const win = await fe.measure(1, 250);
        frames[w] += win.frames;
        secs[w] += win.seconds;
        if (load) {
          perTurn[w as Load].push(await load.stop());
          turnSecs[w as Load].push((Date.now() - started) / 1000);
        }
      }
    }
    for (const w of forward) {
      out.mpps![w] = frames[w] / secs[w] / 1e6;
      if (w !== 'none') out.loaded![w] = combine(perTurn[w], turnSecs[w]);
      progress(
        `api round ${round + 1}: traffic, API ${w}: ${out.mpps![w].toFixed(2)} Mpps ${fe.where}${w !== 'none' ? `, API ${out.loaded![w].reqPerSec.toFixed(0)} req/s, p99 ${out.loaded![w].p99} ms` : ''}`,
      );
    }
  } finally {
    await fe?.stop();
    await stopChild(d?.daemon ?? null);
    tmp.cleanup();
  }
  // The same API loads with no traffic (the daemon's data-plane thread still busy-polls its
  // two idle ports, as a daemon waiting for guests does).
  tmp = makeTempDir('vhostkit-bench-api-');
  d = null;
  try {
    d = await startDaemon(tmp, ctx, commands);
    for (const w of round % 2 ? (['saturated', 'paced'] as const) : (['paced', 'saturated'] as const)) {
      const load = apiLoad(d.api, w);
      await sleep((ctx.seconds + 2) * 1000);
      out.idle![w] = await load.stop();
      progress(`api round ${round + 1}: no traffic, API ${w}: ${out.idle![w].reqPerSec.toFixed(0)} req/s, p99 ${out.idle![w].p99} ms`);
    }
  } finally {
    await stopChild(d?.daemon ?? null);
    tmp.cleanup();
  }
  return out as Round;
}

export async function apiCase(ctx: BenchContext): Promise<CaseReport> {
  const commands = new Set<string>();
  const rounds: Round[] = [];
  // autocannon runs in this process: keep it (every thread of it) on the frontends' CPUs,
  // off the CPU of the data plane whose rate is measured.
  const mask = pinProcess(ctx.frontendCpus);
  try {
    for (let r = 0; r < ctx.rounds; r++) rounds.push(await runRound(ctx, r, commands));
  } finally {
    pinProcess(mask);
  }
  const med = (f: (x: Round) => number) => median(rounds.map(f));
  const ms = (v: number) => (Number.isInteger(v) || v >= 10 ? v.toFixed(0) : v.toFixed(1));
  const rows: Row[] = (['paced', 'saturated'] as const).map((w) => ({
    config: w === 'paced' ? `API paced at ${PACED_RATE} req/s` : `API saturated (${CONNECTIONS} connections)`,
    unit: 'Mpps',
    samples: { 'traffic with API load': rounds.map((x) => x.mpps[w]), 'traffic without': rounds.map((x) => x.mpps.none) },
    subject: 'traffic with API load',
    reference: 'traffic without',
    extra: {
      'API req/s, traffic / idle': `${med((x) => x.loaded[w].reqPerSec).toFixed(0)} / ${med((x) => x.idle[w].reqPerSec).toFixed(0)}`,
      'API p50 ms, traffic / idle': `${ms(med((x) => x.loaded[w].p50))} / ${ms(med((x) => x.idle[w].p50))}`,
      'API p99 ms, traffic / idle': `${ms(med((x) => x.loaded[w].p99))} / ${ms(med((x) => x.idle[w].p99))}`,
      'API max ms, traffic': ms(med((x) => x.loaded[w].max)),
    },
  }));
  commands.add(`API load: autocannon -S API_SOCK -c ${CONNECTIONS} [-R ${PACED_RATE}] ${REQUESTS.map((p) => `http://localhost${p}`).join(' ')} (bench/cases/api.ts cycles the four paths)`);
  return {
    id: 'api',
    title: `Case 7: the management API under full data-plane load — case 3 traffic through \`vhostkit run\` (split, 64 B, Mpps ${combined(ctx) ? 'at A and B' : 'at B'}) with and without autocannon on the API; the API with the traffic and without`,
    notes: [
      `\`vhostkit run\` (switch sw0 with ports a and b, \`--poll busy\`, API on a Unix socket) pinned to CPU ${ctx.backendCpus}: its main thread, which serves the API, shares that CPU with the busy-polling data-plane thread. The testpmd frontends and autocannon share CPU ${ctx.frontendCpus}. Each round measures the traffic on one running set-up in turns of one testpmd statistics period (~2 s, counted from the first period 250 ms after the load started or stopped): no API load, paced, saturated, then the other way round, ${ctx.turns} turns each, so that the three figures of a round span the same stretch of time (this machine changes speed on the scale of seconds, docs/performance.md); then the two API loads against a daemon with no traffic. The API figures with traffic combine the turns: requests over time, the median of the turns' p50 and p99, the largest max. ${ctx.rounds} rounds; every API request must answer 200 (a failure ends the run).`,
      'Requests cycle through GET /metrics, /v1/ports, /v1/switches/sw0/queues (a round trip to the data-plane thread) and /v1/status. Paced: a monitoring-like load. Saturated: 4 connections as fast as the API answers, which takes CPU time from the data-plane thread on a shared core; with a control-plane core of its own (3+ CPUs) it would not.',
    ],
    rows,
    commands: [...commands],
    target: {
      ratio: 0.9,
      rows: (r) => r.config.startsWith('API paced'),
      what: 'the data plane keeps its rate under a paced API load: at least 0.9 x its rate without (our reading of "keeps its rate")',
    },
  };
}
