// Case: the switch on several data-plane threads (issue 24).
//
// - Always: what a frame handed to another thread costs, and what a frame of a multiqueue
//   port costs when each thread serves a queue pair of each port (nothing crosses). One testpmd (flowgen, the switch
//   case's set-up) drives ports a and b both ways; the switch runs in event mode on one CPU
//   with one thread, and with two (a on thread 0, b on thread 1: every frame crosses, copied
//   into the ring to b's thread and delivered there). Measured: the switch process's CPU
//   seconds (every thread, /proc) per million frames. The ratio is the crossing path's cost
//   over the direct one's, and the notes turn it into the scaling to expect.
// - With two backend CPUs and two frontend CPUs (--backend-cpus 2,3 --frontend-cpus 0,1, so
//   4+ CPUs): the scaling itself. Two testpmds drive pairs a<->b and c<->d; the switch has
//   one thread, or two pinned to the two backend CPUs with each pair on one thread. Measured:
//   frames received by all four ports, in turns.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { makeTempDir, vhostkitCli, type Testpmd } from '../../test/lib/peers.js';
import { measureInTurns, rate, type Contender } from '../lib/interleave.js';
import { progress, spawnOwned, stopChild } from '../lib/proc.js';
import { median, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';
import { cpuSeconds } from './cpu.js';
import { generic, measureAll, startCombinedFrontend } from './switch.js';

async function startSwitch(argv: string[], socks: string[]): Promise<ChildProcess> {
  const sw = spawnOwned(argv);
  const end = Date.now() + 10_000;
  while (!socks.every((s) => existsSync(s))) {
    if (sw.exitCode !== null || Date.now() > end) {
      await stopChild(sw);
      throw new Error('vhostkit switch did not create its sockets');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return sw;
}

/** CPU seconds per million frames of the switch, a <-> b, event mode, on one CPU, with `threads` threads and `pairs` queue pairs a port. */
async function crossingCost(ctx: BenchContext, threads: number, pairs: number, commands: Set<string>): Promise<number> {
  const tmp = makeTempDir('vhostkit-bench-swt-');
  const sa = tmp.join('a.sock');
  const sb = tmp.join('b.sock');
  const cpu = ctx.backendCpus.split(',')[0];
  let sw: ChildProcess | null = null;
  let fe: Testpmd | null = null;
  try {
    const q = pairs > 1 ? `,queues=${pairs}` : '';
    const argv = ['taskset', '-c', cpu, process.execPath, vhostkitCli, 'switch', '--port', `a=${sa}${q}`, '--port', `b=${sb}${q}`, '--poll', 'event', '--threads', String(threads), '--cpus', cpu];
    commands.add(`vhostkit, ${threads} thread(s), ${pairs} queue pair(s) a port: ${generic(argv, sa, sb)}`);
    sw = await startSwitch(argv, [sa, sb]);
    fe = await startCombinedFrontend(ctx, sa, sb, false, commands, 64, pairs);
    // A statistics period to settle, then the window.
    await measureAll(fe, 1, 250);
    const cpu0 = cpuSeconds(sw.pid!);
    const w = await measureAll(fe, ctx.seconds, 0);
    const used = cpuSeconds(sw.pid!) - cpu0;
    return w.frames > 0 ? used / (w.frames / 1e6) : NaN;
  } finally {
    await fe?.stop();
    await stopChild(sw);
    tmp.cleanup();
  }
}

/** The 4+ CPU set-up: pairs a<->b and c<->d, the switch with `threads` threads. */
async function scalingSide(ctx: BenchContext, threads: number, commands: Set<string>): Promise<Contender> {
  const tmp = makeTempDir('vhostkit-bench-swt-');
  const s = (n: string) => tmp.join(`${n}.sock`);
  const back = ctx.backendCpus.split(',');
  const front = ctx.frontendCpus.split(',');
  let sw: ChildProcess | null = null;
  const fes: Testpmd[] = [];
  const stop = async () => {
    for (const f of fes) await f.stop();
    await stopChild(sw);
    tmp.cleanup();
  };
  try {
    const cpus = back.slice(0, threads).join(',');
    // Ports go to the thread with the fewest, in the order added: a, c, b, d puts a and b on
    // thread 0, c and d on thread 1 (two threads), so no frame crosses.
    const argv = ['taskset', '-c', back.join(','), process.execPath, vhostkitCli, 'switch', ...['a', 'c', 'b', 'd'].flatMap((n) => ['--port', `${n}=${s(n)}`])];
    argv.push('--poll', 'busy', '--threads', String(threads), '--cpus', cpus);
    commands.add(`vhostkit, ${threads} thread(s): ${generic(argv, s('a'), s('b')).replaceAll(s('c'), 'SOCK_C').replaceAll(s('d'), 'SOCK_D')}`);
    sw = await startSwitch(argv, ['a', 'b', 'c', 'd'].map(s));
    fes.push(await startCombinedFrontend({ ...ctx, frontendCpus: front[0] }, s('a'), s('b'), false, commands, 64));
    fes.push(await startCombinedFrontend({ ...ctx, frontendCpus: front[1] }, s('c'), s('d'), false, commands, 64));
  } catch (e) {
    await stop();
    throw e;
  }
  const pid = sw.pid!;
  return {
    pids: () => [pid, ...fes.map((f) => f.pid)],
    measure: async (periods, settleMs) => {
      const ws = await Promise.all(fes.map((f) => measureAll(f, periods, settleMs)));
      // Both frontends' rates over their own windows, as frames over the first one's seconds.
      const total = ws.reduce((acc, w) => acc + rate(w), 0);
      return { frames: total * ws[0].seconds, seconds: ws[0].seconds };
    },
    stop,
  };
}

/** Expected speed-up of n threads over one: ports spread evenly, traffic even between all pairs (a frame crosses with probability (n-1)/n). */
export function modelSpeedup(n: number, direct: number, crossing: number): number {
  return (n * direct) / (direct / n + (crossing * (n - 1)) / n);
}

export async function switchThreadsCase(ctx: BenchContext): Promise<CaseReport> {
  const rows: Row[] = [];
  const commands = new Set<string>();
  // Both rows name their sides alike (the report's table takes its columns from the first).
  // The same two sides with ports of two queue pairs: with two threads each thread serves a
  // pair of each port and delivers what it pops into the pair it serves, so nothing crosses.
  const costs = [1, 2].map((): Record<string, number[]> => ({ '2 threads': [], '1 thread': [] }));
  for (let round = 0; round < ctx.rounds; round++) {
    for (const pairs of [1, 2]) {
      for (const threads of round % 2 === 0 ? [1, 2] : [2, 1]) {
        const v = await crossingCost(ctx, threads, pairs, commands);
        costs[pairs - 1][`${threads} thread${threads > 1 ? 's' : ''}`].push(v);
        progress(`switch-threads: cost, ${threads} thread(s), ${pairs} pair(s), round ${round + 1}: ${v.toFixed(3)} CPU s/Mframe`);
      }
    }
  }
  const [cost, costMq] = costs;
  rows.push({ config: 'cost: split, 64 B, a <-> b, event mode, one CPU (with 2 threads every frame crosses)', unit: 'CPU s/Mframe', samples: cost, subject: '2 threads', reference: '1 thread' });
  rows.push({
    config: 'cost: the same, ports of 2 queue pairs (with 2 threads, a pair of each port on each: nothing crosses)',
    unit: 'CPU s/Mframe',
    samples: costMq,
    subject: '2 threads',
    reference: '1 thread',
  });
  const c1 = median(cost['1 thread']);
  const c2 = median(cost['2 threads']);
  const m1 = median(costMq['1 thread']);
  const m2 = median(costMq['2 threads']);
  const back = ctx.backendCpus.split(',');
  const front = ctx.frontendCpus.split(',');
  const scaling = back.length >= 2 && front.length >= 2;
  if (scaling) {
    let step = 0;
    const samples = await measureInTurns<string>(['2 threads', '1 thread'], (who) => scalingSide(ctx, who.startsWith('2') ? 2 : 1, commands), {
      rounds: ctx.rounds,
      turns: ctx.turns,
      periods: 1,
      onTurn: (who, round, turn, w) => progress(`switch-threads ${++step}: ${who}, round ${round + 1} turn ${turn + 1}: ${(rate(w) / 1e6).toFixed(2)} Mpps`),
    });
    for (const k of Object.keys(samples)) samples[k] = samples[k].map((pps) => pps / 1e6);
    rows.push({ config: 'scaling: split, 64 B, a <-> b and c <-> d, busy, each pair on one thread', unit: 'Mpps', samples, subject: '2 threads', reference: '1 thread' });
  }
  const fmt = (x: number) => x.toFixed(2);
  return {
    id: 'switch-threads',
    title: 'Case: the switch on several data-plane threads — the cost of a frame handed to another thread, and the scaling',
    notes: [
      `Cost: \`vhostkit switch --poll event\` on CPU ${back[0]}, with one data-plane thread or two (port a on thread 0, b on thread 1), one testpmd on CPU ${front[0]} driving a and b both ways (flowgen, 64 B). CPU seconds of the switch process (every thread, /proc, 10 ms resolution) per million frames received by a and b, over ${ctx.seconds} statistics periods; ${ctx.rounds} rounds alternating the order. With two threads every frame crosses: copied into the ring to b's thread (VLAN edit made, virtio_net_hdr kept) and delivered from there. Both threads share one CPU, so the figure includes their context switches and wake-ups: an upper bound of the crossing path's cost on CPUs of their own. Lower is better.`,
      `Model: with n threads on n CPUs, ports spread evenly and traffic even between all pairs, a frame crosses with probability (n-1)/n, so n threads forward n·c1 / (c1/n + c2·(n-1)/n) times what one does (c1 the direct cost, c2 the crossing cost, both per frame). With this run's medians (c1 = ${fmt(c1)}, c2 = ${fmt(c2)} CPU s/Mframe): 2 threads ${fmt(modelSpeedup(2, c1, c2))}x, 4 threads ${fmt(modelSpeedup(4, c1, c2))}x, 8 threads ${fmt(modelSpeedup(8, c1, c2))}x. When ports that talk to each other share a thread (a VM and its uplink), no frame crosses and n threads forward up to n times as much, until the table's lock (once per burst) or memory bandwidth bounds it.`,
      `Multiqueue: ports of two queue pairs, spread one pair of each port on each thread (the switch's default placement): a frame is delivered by the thread that popped it. Per frame ${fmt(m2)} CPU s/Mframe with two threads on one CPU against ${fmt(m1)} with one (ratio ${fmt(m2 / m1)}), against ${fmt(c2 / c1)} when every frame crosses: with n threads on n CPUs and as many pairs, n threads forward up to n·m1/m2 times what one does.`,
      scaling
        ? `Scaling: the switch (\`--poll busy\`) on CPUs ${ctx.backendCpus} with one thread or two, pairs a <-> b and c <-> d each on one thread; one testpmd per pair (CPUs ${front[0]} and ${front[1]}). Measured in turns: frames received by all four ports.`
        : `Scaling not measured: it needs two backend CPUs and two frontend CPUs of their own (\`--backend-cpus 2,3 --frontend-cpus 0,1\`, 4+ CPUs); this run had backend CPUs ${ctx.backendCpus} and frontend CPUs ${ctx.frontendCpus}.`,
    ],
    rows,
    commands: [...commands],
  };
}
