// Case 3: the switch, vs testpmd io forwarding between two vhost ports (which does no MAC
// lookup); the switch (or the reference) has a CPU of its own.
// - 2 CPUs (the default): one testpmd drives both virtio-user ports, A on one socket, B on
//   the other, in flowgen mode (receive and discard, send to the other port's MAC): the
//   switch forwards both ways. Measured: what A and B receive.
// - --frontend-cpus 0,2 (3+ CPUs): the set-up, A txonly (unicast to B's MAC) and B
//   rxonly (it sends one burst first with --tx-first, so the switch has learnt its MAC and
//   forwards unicast, not flooding), each on its own CPU. Measured: what B receives.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { makeTempDir, startTestpmd, vhostkitCli, type Testpmd } from '../../test/lib/peers.js';
import { measureInTurns, rate, testpmdWindow, turnsNote, type Contender, type Window } from '../lib/interleave.js';
import { commandLine, progress, spawnOwned, stopChild } from '../lib/proc.js';
import { rowsChart, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';

const MAC_A = '02:00:00:00:00:0a';
const MAC_B = '02:00:00:00:00:0b';

export function generic(argv: readonly string[], a: string, b: string): string {
  return commandLine([...argv])
    .replaceAll(a, 'SOCK_A')
    .replaceAll(b, 'SOCK_B')
    .replace(/--file-prefix \S+/, '--file-prefix PREFIX');
}

/** Frontend B (rxonly, sends one burst first so its MAC is learnt), then A (txonly to B's MAC) sending frames of `size` bytes. */
export async function startFrontends(ctx: BenchContext, sa: string, sb: string, packed: boolean, commands: Set<string>, size: number): Promise<{ a: Testpmd; b: Testpmd }> {
  const list = ctx.frontendCpus.split(',');
  const cpuF = Number(list[0]);
  const b = await startTestpmd({ role: 'virtio-user', socket: sb, forwardMode: 'rxonly', cpu: Number(list[1] ?? list[0]), packed, mac: MAC_B, extraArgs: ['--tx-first'] });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const a = await startTestpmd({ role: 'virtio-user', socket: sa, forwardMode: 'txonly', txpkts: size, cpu: cpuF, packed, mac: MAC_A, extraArgs: [`--eth-peer=0,${MAC_B}`] });
    commands.add(`frontend B (${packed ? 'packed' : 'split'}): ${generic(b.process.argv, sa, sb)}`);
    commands.add(`frontend A (${packed ? 'packed' : 'split'}): ${generic(a.process.argv, sa, sb)}`);
    return { a, b };
  } catch (e) {
    await b.stop();
    throw e;
  }
}

/**
 * Both frontends in one testpmd on one CPU (for machines with 2 CPUs, where two busy
 * frontends would share one CPU and the figure would be the scheduler's): virtio-user port
 * 0 on A's socket, port 1 on B's, one forwarding lcore in flowgen mode, which on each port
 * receives and discards a burst, then sends a burst to the other port's MAC (--eth-peer).
 * The switch forwards both ways, unicast to learnt MACs once each side has sent. Frames of
 * `size` bytes.
 */
/** queues: queue pairs of each port (flowgen sends on each). */
export async function startCombinedFrontend(ctx: BenchContext, sa: string, sb: string, packed: boolean, commands: Set<string>, size: number, queues = 1): Promise<Testpmd> {
  const cpuF = Number(ctx.frontendCpus.split(',')[0]);
  const fe = await startTestpmd({
    role: 'virtio-user',
    socket: sa,
    forwardMode: 'flowgen',
    txpkts: size,
    cpu: cpuF,
    packed,
    mac: MAC_A,
    queues,
    extraEalArgs: ['--vdev', `net_virtio_user1,path=${sb},queues=${queues},queue_size=1024${packed ? ',packed_vq=1' : ''},mac=${MAC_B}`],
    extraArgs: [`--eth-peer=0,${MAC_B}`, `--eth-peer=1,${MAC_A}`, ...(queues > 1 ? [`--rxq=${queues}`, `--txq=${queues}`] : [])],
  });
  commands.add(`frontend A+B (${packed ? 'packed' : 'split'}): ${generic(fe.process.argv, sa, sb)}`);
  return fe;
}

/** Packets received on both ports of `fe` (see testpmdWindow). */
export function measureAll(fe: Testpmd, periods: number, settleMs: number): Promise<Window> {
  return testpmdWindow(fe, periods, settleMs, [0, 1], (s) => s.ports[0].rxPackets + s.ports[1].rxPackets);
}

/** Packets B received (see testpmdWindow). */
export function measureAtB(b: Testpmd, periods: number, settleMs: number): Promise<Window> {
  return testpmdWindow(b, periods, settleMs, [0], (s) => s.ports[0].rxPackets);
}

/** One frontend process for A and B unless the frontends have a CPU each (--frontend-cpus 0,2). */
export function combined(ctx: BenchContext): boolean {
  return ctx.frontendCpus.split(',').length < 2;
}

/** The case's traffic through the switch on sockets sa, sb: what is measured, and how to stop it. */
export interface SwitchTraffic {
  /** frames over `periods` statistics periods, from the first that starts `settleMs` after the call */
  measure(periods: number, settleMs: number): Promise<Window>;
  /** the frontend processes */
  pids(): number[];
  /** where the rate is read: "at A and B" or "at B" */
  where: string;
  stop(): Promise<void>;
}

/** The case's traffic through the switch on sockets sa, sb, in frames of `size` bytes (64 unless said). */
export async function startSwitchTraffic(ctx: BenchContext, sa: string, sb: string, packed: boolean, commands: Set<string>, size = 64): Promise<SwitchTraffic> {
  if (combined(ctx)) {
    const fe = await startCombinedFrontend(ctx, sa, sb, packed, commands, size);
    return { measure: (p, ms) => measureAll(fe, p, ms), pids: () => [fe.pid], where: 'at A and B', stop: async () => void (await fe.stop()) };
  }
  const { a, b } = await startFrontends(ctx, sa, sb, packed, commands, size);
  return {
    measure: (p, ms) => measureAtB(b, p, ms),
    pids: () => [a.pid, b.pid],
    where: 'at B',
    stop: async () => {
      await a.stop();
      await b.stop();
    },
  };
}

type Who = 'vhostkit switch' | 'testpmd io';

/**
 * One side of the case, up and forwarding: the switch or the reference, and the traffic.
 * `cli`: the vhostkit CLI to run (another build's, to compare two builds: bench/ab.ts);
 * `size`: the frames' size in bytes.
 */
export async function startSwitchSide(ctx: BenchContext, who: Who, packed: boolean, commands: Set<string>, cli = vhostkitCli, size = 64): Promise<Contender> {
  const tmp = makeTempDir('vhostkit-bench-sw-');
  const sa = tmp.join('a.sock');
  const sb = tmp.join('b.sock');
  const cpuB = Number(ctx.backendCpus.split(',')[0]);
  let sw: ChildProcess | null = null;
  let ref: Testpmd | null = null;
  let traffic: SwitchTraffic | null = null;
  const stop = async (): Promise<void> => {
    await traffic?.stop();
    await ref?.stop();
    await stopChild(sw);
    tmp.cleanup();
  };
  try {
    if (who === 'vhostkit switch') {
      const argv = ['taskset', '-c', ctx.backendCpus, process.execPath, cli, 'switch', '--port', `a=${sa}`, '--port', `b=${sb}`, '--poll', 'busy'];
      commands.add(`vhostkit: ${generic(argv, sa, sb)}`);
      sw = spawnOwned(argv);
      const end = Date.now() + 10_000;
      while (!existsSync(sa) || !existsSync(sb)) {
        if (sw.exitCode !== null || Date.now() > end) throw new Error('vhostkit switch did not create its sockets');
        await new Promise((r) => setTimeout(r, 20));
      }
    } else {
      ref = await startTestpmd({ role: 'vhost', socket: sa, forwardMode: 'io', cpu: cpuB, extraEalArgs: ['--vdev', `net_vhost1,iface=${sb},queues=1`] });
      commands.add(`reference: ${generic(ref.process.argv, sa, sb)}`);
    }
    traffic = await startSwitchTraffic(ctx, sa, sb, packed, commands, size);
  } catch (e) {
    await stop();
    throw e;
  }
  const t = traffic;
  const backendPid = sw ? sw.pid! : ref!.pid;
  return { pids: () => [backendPid, ...t.pids()], measure: (p, ms) => t.measure(p, ms), stop };
}

/** Frame sizes of the case: the two (64 B, where per-frame work rules, and 1500 B, where copies do). */
const SIZES = [64, 1500] as const;

export async function switchCase(ctx: BenchContext): Promise<CaseReport> {
  const rows: Row[] = [];
  const commands = new Set<string>();
  let step = 0;
  const total = 2 * SIZES.length * ctx.rounds * ctx.turns * 2;
  for (const packed of [false, true]) {
    for (const size of SIZES) {
      const ring = packed ? 'packed' : 'split';
      const samples = await measureInTurns<Who>(['vhostkit switch', 'testpmd io'], (who) => startSwitchSide(ctx, who, packed, commands, vhostkitCli, size), {
        rounds: ctx.rounds,
        turns: ctx.turns,
        periods: 1,
        onTurn: (who, round, turn, w) => progress(`switch ${++step}/${total} ${ring} ${size} B, ${who}, round ${round + 1} turn ${turn + 1}: ${(rate(w) / 1e6).toFixed(2)} Mpps`),
      });
      for (const k of Object.keys(samples) as Who[]) samples[k] = samples[k].map((pps) => pps / 1e6);
      rows.push({ config: `${ring}, ${size} B, ${combined(ctx) ? 'A <-> B unicast' : 'A -> B unicast'}`, unit: 'Mpps', samples, subject: 'vhostkit switch', reference: 'testpmd io' });
    }
  }
  const notes = combined(ctx)
    ? [
        `The switch (\`vhostkit switch --poll busy\`, forwarding on its data-plane thread) or the reference pinned to CPU ${ctx.backendCpus}; one testpmd on CPU ${ctx.frontendCpus} drives both ports: virtio-user port 0 on A's socket, port 1 on B's, one forwarding lcore in flowgen mode (on each port: receive and discard a burst, send a burst of 64 B or 1500 B frames to the other port's MAC). The switch learns both MACs from the first frames and forwards unicast both ways; the reference forwards port to port (io). Measured: frames received on both ports.`,
        turnsNote(ctx.rounds, ctx.turns),
        "Why one frontend process: the issue's set-up (A txonly and B rxonly, each busy on its own CPU) needs 3 CPUs; on 2, the two frontends share one, B drains its ring only while A is descheduled, and both forwarders read about 0.1 Mpps, the scheduler's figure. With 3+ CPUs, `--frontend-cpus 0,2` runs that set-up (A on the first CPU listed, B on the second).",
      ]
    : [
        `The switch (\`vhostkit switch --poll busy\`, forwarding on its data-plane thread) or the reference pinned to CPU ${ctx.backendCpus}; frontend A (txonly, to B's MAC with --eth-peer) on CPU ${ctx.frontendCpus.split(',')[0]}, frontend B (rxonly; it sends one burst first with --tx-first so its MAC is learnt) on CPU ${ctx.frontendCpus.split(',')[1]}. Measured: what B receives.`,
        turnsNote(ctx.rounds, ctx.turns),
      ];
  return {
    id: 'switch',
    title: combined(ctx)
      ? 'Case 3: switch — testpmd virtio-user A <-> vhostkit switch <-> testpmd virtio-user B (one testpmd, flowgen, both ways), vs testpmd io forwarding between two vhost ports (Mpps received by A and B)'
      : 'Case 3: switch — testpmd virtio-user A (txonly) -> switch -> testpmd virtio-user B (rxonly), vs testpmd io forwarding between two vhost ports (Mpps at B)',
    notes,
    rows,
    commands: [...commands],
    target: { ratio: 1.0, rows: () => true, what: 'switch at 64 B and 1500 B: at least 1.0 x testpmd io forwarding (issue 24)' },
    charts: [rowsChart(rows, { file: 'switch', title: `switch: Mpps received ${combined(ctx) ? 'by A and B' : 'by B'}, by ring layout and frame size`, yLabel: 'Mpps' })],
  };
}
