// Pinning the calling JS thread (main or worker) to CPUs, and CPU lists as the command line
// gives them ("1", "0,2", "2-5,8").
import { addon } from './binding.js';

const raw = addon as unknown as { setThreadAffinity(cpus: number[]): void; getThreadAffinity(): number[] };

/** Pins the thread that calls it to `cpus` (sched_setaffinity of this thread only). */
export function setThreadAffinity(cpus: readonly number[]): void {
  raw.setThreadAffinity([...cpus]);
}

/** The CPUs the calling thread may run on. */
export function getThreadAffinity(): number[] {
  return raw.getThreadAffinity();
}

/** "0-2,5" -> [0, 1, 2, 5]; throws a RangeError naming what is wrong. */
export function parseCpuList(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new RangeError(`CPU list "${s}": "${part}" is not a CPU number or a range a-b`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a || b > 4095) throw new RangeError(`CPU list "${s}": bad range ${part}`);
    for (let c = a; c <= b; c++) if (!out.includes(c)) out.push(c);
  }
  return out;
}
