// How many fast-check runs the property tests make. `npm test` uses the defaults (each
// property file well under 20 s here); `npm run test:fast` scales them down with
//   VHOSTKIT_TEST_SCALE=F    each default times F (0 < F <= 1; at least 1 run)
// and a longer fuzzing session sets
//   VHOSTKIT_FUZZ_RUNS=N     runs per property (instead of each property's default)
//   VHOSTKIT_FUZZ_SEED=S     replay a failure fast-check reported (with its "path" if given)
//   VHOSTKIT_FUZZ_PATH=P
//   VHOSTKIT_FUZZ_NO_SHRINK=1 report the first failure as found (when runs share state,
//                            a shrunk counterexample can be misleading)
// e.g. VHOSTKIT_FUZZ_RUNS=5000 mocha --timeout 0 'dist/test/vhost-user/*-property.test.js'
import type { Parameters as FcParameters } from 'fast-check';

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name}=${v}: expected a positive integer`);
  return n;
}

/** VHOSTKIT_TEST_SCALE: the fraction of its default work a scaled test does (1 when unset). */
export function testScale(): number {
  const v = process.env.VHOSTKIT_TEST_SCALE;
  if (v === undefined || v === '') return 1;
  const f = Number(v);
  if (!(f > 0 && f <= 1)) throw new RangeError(`VHOSTKIT_TEST_SCALE=${v}: expected a number in (0, 1]`);
  return f;
}

/** `n` scaled by VHOSTKIT_TEST_SCALE, at least `min`. */
export function scaled(n: number, min = 1): number {
  return Math.max(min, Math.round(n * testScale()));
}

/** Runs for one property: VHOSTKIT_FUZZ_RUNS if set, else the property's default (scaled). */
export function fuzzRuns(defaultRuns: number): number {
  return envInt('VHOSTKIT_FUZZ_RUNS') ?? scaled(defaultRuns);
}

/** fast-check parameters: the run count, and a seed / path to replay when given. */
export function fcParams<T>(defaultRuns: number, more: FcParameters<T> = {}): FcParameters<T> {
  const seed = process.env.VHOSTKIT_FUZZ_SEED;
  const path = process.env.VHOSTKIT_FUZZ_PATH;
  return {
    numRuns: fuzzRuns(defaultRuns),
    ...(seed ? { seed: Number(seed) } : {}),
    ...(path ? { path } : {}),
    ...(process.env.VHOSTKIT_FUZZ_NO_SHRINK ? { endOnFailure: true } : {}),
    ...more,
  };
}

/** A mocha timeout for a property whose run takes at most `msPerRun` (generous: no timing is asserted). */
export function timeoutFor(defaultRuns: number, msPerRun: number): number {
  return Math.max(20000, fuzzRuns(defaultRuns) * msPerRun);
}
