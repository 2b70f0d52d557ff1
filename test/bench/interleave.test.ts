// bench/lib/interleave.ts: the side being measured runs and every other side is stopped;
// turns go A B B A A B ...; a round's figure is frames over time summed over its turns;
// every process is resumed and stopped at the end, also when a measurement fails.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { measureInTurns, type Contender, type Window } from '../../bench/lib/interleave.js';

/** The state letter of /proc/<pid>/stat: R, S, T (stopped) ... */
function state(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2)[0];
}

async function waitState(pid: number, want: (s: string) => boolean): Promise<string> {
  const end = Date.now() + 2000;
  for (;;) {
    const s = state(pid);
    if (want(s) || Date.now() > end) return s;
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('bench: measuring two sides in turns', () => {
  const children: ChildProcess[] = [];
  const sleeper = (): ChildProcess => {
    const c = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(c);
    return c;
  };
  afterEach(() => {
    for (const c of children.splice(0)) {
      try {
        process.kill(c.pid!, 'SIGCONT');
      } catch {
        // gone
      }
      c.kill('SIGKILL');
    }
  });

  /** A side of two processes; each turn records who ran and what the others' state was. */
  function side(name: string, log: string[], others: () => number[], frames: number[], failAt = -1): () => Promise<Contender> {
    return async () => {
      const procs = [sleeper(), sleeper()];
      let turn = 0;
      let stopped = false;
      return {
        pids: () => procs.map((p) => p.pid!),
        measure: async (periods: number, settleMs: number): Promise<Window> => {
          expect(periods).to.equal(2);
          expect(settleMs).to.equal(250);
          for (const p of procs) expect(await waitState(p.pid!, (s) => s !== 'T')).to.not.equal('T');
          for (const pid of others()) expect(await waitState(pid, (s) => s === 'T')).to.equal('T');
          log.push(name);
          if (turn === failAt) throw new Error(`${name} failed`);
          return { frames: frames[turn++], seconds: 2 };
        },
        stop: async () => {
          expect(stopped).to.equal(false);
          stopped = true;
          for (const p of procs) expect(await waitState(p.pid!, (s) => s !== 'T')).to.not.equal('T');
          log.push(`${name} stopped`);
        },
      };
    };
  }

  it('runs one side at a time, A B B A, and gives each round frames over time', async () => {
    const log: string[] = [];
    const pidsOf: Record<string, number[]> = {};
    const starters: Record<string, () => Promise<Contender>> = {
      a: side('a', log, () => pidsOf.b ?? [], [10, 20, 30, 40, 50, 60]),
      b: side('b', log, () => pidsOf.a ?? [], [1, 1, 1, 3, 5, 7]),
    };
    const turns: string[] = [];
    const samples = await measureInTurns(
      ['a', 'b'],
      async (n) => {
        const c = await starters[n]();
        pidsOf[n] = c.pids();
        return c;
      },
      { rounds: 2, turns: 3, periods: 2, onTurn: (n, round, turn, w) => turns.push(`${n}${round}.${turn}:${w.frames}`) },
    );
    expect(log).to.deep.equal(['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a', 'a', 'b', 'b', 'a', 'a stopped', 'b stopped']);
    expect(turns).to.deep.equal(['a0.0:10', 'b0.0:1', 'b0.1:1', 'a0.1:20', 'a0.2:30', 'b0.2:1', 'b1.0:3', 'a1.0:40', 'a1.1:50', 'b1.1:5', 'b1.2:7', 'a1.2:60']);
    // (10 + 20 + 30) frames over 6 s, then (40 + 50 + 60) over 6 s.
    expect(samples.a).to.deep.equal([10, 25]);
    expect(samples.b).to.deep.equal([0.5, 2.5]);
  });

  it('resumes and stops every side when a measurement fails', async () => {
    const log: string[] = [];
    const pidsOf: Record<string, number[]> = {};
    const starters: Record<string, () => Promise<Contender>> = {
      a: side('a', log, () => pidsOf.b ?? [], [1, 1, 1, 1], 1),
      b: side('b', log, () => pidsOf.a ?? [], [1, 1, 1, 1]),
    };
    let err: Error | null = null;
    try {
      await measureInTurns(
        ['a', 'b'],
        async (n) => {
          const c = await starters[n]();
          pidsOf[n] = c.pids();
          return c;
        },
        { rounds: 2, turns: 2, periods: 2 },
      );
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.equal('a failed');
    expect(log).to.deep.equal(['a', 'b', 'b', 'a', 'a stopped', 'b stopped']);
  });
});
