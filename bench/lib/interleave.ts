// Subject and reference measured in turns while both stay up: every process of both is
// started once, the one not being measured is held stopped (SIGSTOP: it uses no CPU and
// keeps its vhost-user connection, rings and memory), and the two take turns of a few
// seconds, A B B A A B ... Restarting processes between runs put 10-15 s between a subject's
// window and the reference's; these 2-CPU machines switch between two speeds on about that
// scale (docs/performance.md, "This machine's two speeds"), so a round could compare one
// side's fast regime with the other's slow one. Turns seconds apart compare like with like
// far more often, and cost little, so a case can afford more of them.
import type { Testpmd, TestpmdStatsSnapshot } from '../../test/lib/peers.js';

/** What a side did over a measured window. */
export interface Window {
  frames: number;
  seconds: number;
}

/** One side of a comparison, started and ready to be measured. */
export interface Contender {
  /** Every process of this side (the backend and its frontends); all are stopped and resumed together. */
  pids(): number[];
  /**
   * The frames counted over `periods` statistics periods, counted from the first period
   * that starts at least `settleMs` after the call (the time spent stopped is never counted).
   */
  measure(periods: number, settleMs: number): Promise<Window>;
  stop(): Promise<void>;
}

function signalAll(c: Contender, sig: 'SIGSTOP' | 'SIGCONT'): void {
  for (const pid of c.pids()) {
    try {
      process.kill(pid, sig);
    } catch (e) {
      // A process that already exited: its measure() reports it.
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }
}

export interface TurnsOptions<N> {
  rounds: number;
  /** turns per side in a round */
  turns: number;
  /** statistics periods measured per turn */
  periods: number;
  /** after a side resumes, the time before its count may start (warm-up) */
  settleMs?: number;
  onTurn?: (name: N, round: number, turn: number, w: Window) => void;
}

/**
 * Starts every contender (each one stopped once it is ready, before the next one starts),
 * then measures them in turns, A B B A A B ..., `turns` turns each per round. A side's
 * sample for a round is its rate over that round's turns: frames / seconds, summed over
 * them, so both sides' samples span the same stretch of time. Resolves with each side's
 * samples (frames per second), one per round. Every contender is resumed and stopped at
 * the end, also on error.
 */
export async function measureInTurns<N extends string>(names: readonly N[], start: (name: N) => Promise<Contender>, opts: TurnsOptions<N>): Promise<Record<N, number[]>> {
  const live = new Map<N, Contender>();
  const samples = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<N, number[]>;
  try {
    for (const n of names) {
      const c = await start(n);
      live.set(n, c);
      signalAll(c, 'SIGSTOP');
    }
    let k = 0;
    for (let round = 0; round < opts.rounds; round++) {
      const sum = new Map<N, Window>(names.map((n) => [n, { frames: 0, seconds: 0 }]));
      for (let turn = 0; turn < opts.turns; turn++, k++) {
        for (const n of k % 2 === 0 ? names : [...names].reverse()) {
          const c = live.get(n)!;
          signalAll(c, 'SIGCONT');
          let w: Window;
          try {
            w = await c.measure(opts.periods, opts.settleMs ?? 250);
          } finally {
            signalAll(c, 'SIGSTOP');
          }
          const acc = sum.get(n)!;
          acc.frames += w.frames;
          acc.seconds += w.seconds;
          opts.onTurn?.(n, round, turn, w);
        }
      }
      for (const n of names) samples[n].push(sum.get(n)!.frames / sum.get(n)!.seconds);
    }
    return samples;
  } finally {
    for (const c of live.values()) signalAll(c, 'SIGCONT');
    for (const c of live.values()) await c.stop();
  }
}

/**
 * The frames in testpmd's own counters (`count` of a statistics print) from the first print
 * received at least `settleMs` after the call to the print `periods` later. Both prints
 * must be whole for the ports counted (`ports`: each port's block belongs to that print).
 */
export async function testpmdWindow(t: Testpmd, periods: number, settleMs: number, ports: number[], count: (s: TestpmdStatsSnapshot) => number): Promise<Window> {
  const whole = (s: TestpmdStatsSnapshot) => ports.every((p) => s.ports[p]?.seq === s.seq);
  const from = Date.now() + settleMs;
  const first = await t.waitForStats((s) => s.at >= from && whole(s), 30_000 + settleMs);
  const last = await t.waitForStats((s) => s.seq >= first.seq + periods && whole(s), (periods * 2 + 10) * 1000);
  return { frames: count(last) - count(first), seconds: (last.at - first.at) / 1000 };
}

export function rate(w: Window): number {
  return w.frames / w.seconds;
}

/** How a case measured in turns reads, for its notes in the report. */
export function turnsNote(rounds: number, turns: number): string {
  return (
    `Both sides of a row stay up for the whole row and take turns, A B B A A B ...; the side not measured is held stopped (SIGSTOP), and a turn counts one statistics period of testpmd's, starting at least 250 ms after the side resumed. ` +
    `A round is ${turns} turns per side; a side's figure for the round is its frames over its measured time in those turns, so both figures of a round span the same stretch of time. ${rounds} rounds; medians of the rounds.`
  );
}
