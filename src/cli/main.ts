#!/usr/bin/env node
// vhostkit command line. A thin layer over the library: every command calls the same
// public API a program would.
import { parseArgs } from 'node:util';
import { ringBench } from '../testing/ring-bench.js';
import type { RingLayout } from '../native/virtqueue.js';

const usage = `usage: vhostkit <command> [options]

commands:
  ring-bench [--layout split|packed|both] [--size N] [--burst N] [--bytes N] [--seconds S]
      In-process ring loopback: a TypeScript driver keeps a queue full, the native
      device side pops and pushes bursts. Prints chains per second per layout.
  help
`;

function fail(msg: string): never {
  process.stderr.write(`vhostkit: ${msg}\n`);
  process.exit(2);
}

function int(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} ${v}: expected an integer in ${min}..${max}`);
  return n;
}

function cmdRingBench(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: {
      layout: { type: 'string', default: 'both' },
      size: { type: 'string' },
      burst: { type: 'string' },
      bytes: { type: 'string' },
      seconds: { type: 'string' },
    },
    strict: true,
  });
  const layouts: RingLayout[] =
    values.layout === 'both' ? ['split', 'packed'] : values.layout === 'split' || values.layout === 'packed' ? [values.layout] : fail(`--layout ${values.layout}: expected split, packed or both`);
  const size = int(values.size, 'size', 256, 1, 32768);
  const burst = int(values.burst, 'burst', 32, 1, 1024);
  const packetBytes = int(values.bytes, 'bytes', 64, 1, 65536);
  const seconds = Number(values.seconds ?? '2');
  if (!(seconds > 0 && seconds <= 600)) fail(`--seconds ${values.seconds}: expected 0 < S <= 600`);
  for (const layout of layouts) {
    const r = ringBench({ layout, size, burst, packetBytes, seconds });
    process.stdout.write(
      `${layout.padEnd(6)} size ${size} burst ${burst} ${packetBytes} B: ${(r.chainsPerSecond / 1e6).toFixed(2)} M chains/s (${r.chains} in ${r.elapsed.toFixed(2)} s)\n`,
    );
  }
}

const [cmd, ...rest] = process.argv.slice(2);
try {
  switch (cmd) {
    case 'ring-bench':
      cmdRingBench(rest);
      break;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(usage);
      break;
    default:
      fail(`unknown command '${cmd}'\n${usage}`);
  }
} catch (e) {
  fail(e instanceof Error ? e.message : String(e));
}
