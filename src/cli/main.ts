#!/usr/bin/env node
// vhostkit command line. A thin layer over the library: every command calls the same
// public API a program would.
import { readFileSync } from 'node:fs';
import { LEVELS, setLogFormat, setLogLevel, type Level } from '../log.js';
import { parseArgs } from 'node:util';
import { ringBench } from '../loadgen/ring-bench.js';
import type { RingLayout } from '../native/virtqueue.js';
import { formatProbe, probe, type ProbeType } from '../vhost-user/probe.js';
import { cmdSwitch } from './switch.js';
import { cmdBlk } from './blk.js';
import { cmdNetLoad } from './net-load.js';
import { cmdRun } from './run.js';
import { cmdCtl } from './ctl.js';
import { cmdConformance } from './conformance.js';
import { runBlkLoad } from '../loadgen/blk.js';
import { cmdTrace } from './trace.js';

const usage = `usage: vhostkit <command> [options]

commands:
  run [--config FILE] [--port ...] [--disk ...] [--api ADDR]
      One process for a host: switches, ports and disks from a file and/or flags, a
      management API (HTTP on a Unix socket), /metrics (see "vhostkit run --help").
  ctl <command> [args]
      The management API's client: ports, disks, fdb, vlan, counters, metrics...
      (see "vhostkit ctl --help").
  ring-bench [--layout split|packed|both] [--size N] [--burst N] [--bytes N] [--seconds S]
      In-process ring loopback: a TypeScript driver keeps a queue full, the native
      device side pops and pushes bursts. Prints chains per second per layout.
  probe <socket> [--type net|blk] [--timeout MS] [--json]
      Connects to any vhost-user backend and prints what it offers: device features
      and protocol features by name, queue count, config space. Exits 1 if the socket
      is not a vhost-user backend.
  switch --port [NAME=]SOCKET[,...] [--tap IFNAME] [--vxlan remote=ADDR,vni=N] [--poll MODE] [--hook FILE[:EXPORT]]
      A software L2 switch joining QEMU guests over vhost-user (see "vhostkit switch --help").
  blk --socket PATH (--file IMAGE | --ram SIZE) [--read-only] [--serial ID] [--num-queues N]
      Serve a raw image or a RAM disk as vhost-user-blk (see "vhostkit blk --help").
  net-load --socket PATH [--gen] [--size BYTES] [--poll busy|event|adaptive]
      A virtio-net port that drops what it gets and, with --gen, sends a fixed frame into
      every receive buffer: one end of a ring benchmark (see "vhostkit net-load --help").
  blk-load <socket> [--rw randread|randwrite] [--qd N] [--queues N] [--bs BYTES] [--seconds S] [--json]
      Drive any vhost-user-blk backend (vhostkit, qemu-storage-daemon) from our own
      frontend: random I/O at a fixed queue depth, polling; prints IOPS and latency.
      Writes change the disk. Pin it: taskset -c 0 vhostkit blk-load ...
  conformance <socket> [--type net|blk] [--spawn CMD] [--json] [--only GROUP]
      Check any vhost-user backend against the spec and hostile input; after each case a
      fresh connection must still move data. Reports passed / rejected / failed / crashed /
      hung / leaked per case (see "vhostkit conformance --help").
  trace --listen FRONT.sock --connect BACK.sock [--out trace.jsonl] [--rings]
      A proxy between a frontend and a backend that prints every message both ways,
      decoded, with the fds passed; "trace replay trace.jsonl --connect BACK.sock" plays
      a recorded session against a backend (see "vhostkit trace --help").
  help, --version

Every command also takes --log-level debug|info|warn|error and --log-format pretty|json
(default: pretty on a terminal, JSON lines otherwise).
`;

/** The version in the package's package.json (dist/src/cli/main.js is three levels below it). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** The lines of `usage` that describe `command` (its synopsis and what follows it). */
function commandUsage(command: string): string {
  const lines = usage.split('\n');
  const at = lines.findIndex((l) => l.startsWith(`  ${command} `) || l === `  ${command}`);
  const end = lines.findIndex((l, i) => i > at && /^ {2}\S/.test(l));
  return `usage: vhostkit${lines
    .slice(at, end < 0 ? undefined : end)
    .join('\n')
    .replace(/^ {1}/, '')}\n`;
}

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
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(commandUsage('ring-bench'));
    return;
  }
  const layouts: RingLayout[] =
    values.layout === 'both' ? ['split', 'packed'] : values.layout === 'split' || values.layout === 'packed' ? [values.layout] : fail(`--layout ${values.layout}: expected split, packed or both`);
  const size = int(values.size, 'size', 256, 1, 32768);
  const burst = int(values.burst, 'burst', 32, 1, 1024);
  const packetBytes = int(values.bytes, 'bytes', 64, 1, 65536);
  const seconds = Number(values.seconds ?? '2');
  if (!(seconds > 0 && seconds <= 600)) fail(`--seconds ${values.seconds}: expected 0 < S <= 600`);
  for (const layout of layouts) {
    const r = ringBench({ layout, size, burst, packetBytes, seconds });
    process.stdout.write(`${layout.padEnd(6)} size ${size} burst ${burst} ${packetBytes} B: ${(r.chainsPerSecond / 1e6).toFixed(2)} M chains/s (${r.chains} in ${r.elapsed.toFixed(2)} s)\n`);
  }
}

async function cmdProbe(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { type: { type: 'string' }, timeout: { type: 'string' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', default: false } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(commandUsage('probe'));
    return;
  }
  if (positionals.length !== 1) fail('probe: expected one socket path');
  const type = values.type;
  if (type !== undefined && type !== 'net' && type !== 'blk') fail(`--type ${type}: expected net or blk`);
  const timeoutMs = int(values.timeout, 'timeout', 3000, 10, 600000);
  let r;
  try {
    r = await probe(positionals[0], { type: type as ProbeType | undefined, timeoutMs });
  } catch (e) {
    process.stderr.write(`vhostkit probe: ${positionals[0]}: ${(e as Error).message}\n`);
    process.exit(1);
  }
  if (values.json) {
    process.stdout.write(JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2) + '\n');
  } else {
    process.stdout.write(formatProbe(r));
  }
}

async function cmdBlkLoad(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      rw: { type: 'string', default: 'randread' },
      qd: { type: 'string' },
      queues: { type: 'string' },
      bs: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(commandUsage('blk-load'));
    return;
  }
  if (positionals.length !== 1) fail('blk-load: expected one socket path');
  if (values.rw !== 'randread' && values.rw !== 'randwrite') fail(`--rw ${values.rw}: expected randread or randwrite`);
  const seconds = Number(values.seconds ?? '5');
  if (!(seconds > 0 && seconds <= 3600)) fail(`--seconds ${values.seconds}: expected 0 < S <= 3600`);
  const warmup = Number(values.warmup ?? '0.5');
  if (!(warmup >= 0 && warmup <= 60)) fail(`--warmup ${values.warmup}: expected 0 <= S <= 60`);
  const r = await runBlkLoad({
    socket: positionals[0],
    pattern: values.rw,
    depth: int(values.qd, 'qd', 32, 1, 85),
    queues: int(values.queues, 'queues', 1, 1, 64),
    blockSize: int(values.bs, 'bs', 4096, 512, 1 << 20),
    seconds,
    warmupSeconds: warmup,
  });
  if (values.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
  } else {
    process.stdout.write(
      `${r.pattern} bs ${r.blockSize} qd ${r.depth} x ${r.queues} queue(s): ${Math.round(r.iops)} IOPS, ` +
        `p50 ${r.p50us.toFixed(1)} us, p99 ${r.p99us.toFixed(1)} us, ${r.requests} requests in ${r.seconds.toFixed(2)} s` +
        (r.errors ? `, ${r.errors} errors` : '') +
        '\n',
    );
  }
  if (r.errors) process.exitCode = 1;
}

/** Takes --log-level and --log-format (any command, anywhere on the line) out of argv and applies them. */
function logFlags(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const m = /^--log-(level|format)(?:=(.*))?$/.exec(argv[i]);
    if (!m) {
      out.push(argv[i]);
      continue;
    }
    const v = m[2] ?? argv[++i];
    if (m[1] === 'level') {
      if (!LEVELS.includes(v as Level)) fail(`--log-level ${v}: expected one of ${LEVELS.join(', ')}`);
      setLogLevel(v as Level);
    } else {
      if (v !== 'pretty' && v !== 'json') fail(`--log-format ${v}: expected pretty or json`);
      setLogFormat(v);
    }
  }
  return out;
}

const [cmd, ...rest] = logFlags(process.argv.slice(2));
try {
  // --version answers on every subcommand too (vhostkit switch --version).
  if (cmd !== undefined && rest.includes('--version')) {
    process.stdout.write(`vhostkit ${packageVersion()}\n`);
    process.exit(0);
  }
  switch (cmd) {
    case 'probe':
      await cmdProbe(rest);
      break;
    case 'run':
      await cmdRun(rest);
      break;
    case 'ctl':
      process.exitCode = await cmdCtl(rest);
      break;
    case 'switch':
      await cmdSwitch(rest);
      break;
    case 'blk':
      await cmdBlk(rest);
      break;
    case 'net-load':
      await cmdNetLoad(rest);
      break;
    case 'blk-load':
      await cmdBlkLoad(rest);
      break;
    case 'conformance':
      process.exitCode = await cmdConformance(rest);
      break;
    case 'trace':
      process.exitCode = await cmdTrace(rest);
      break;
    case 'ring-bench':
      cmdRingBench(rest);
      break;
    case '--version':
    case '-V':
    case 'version':
      process.stdout.write(`vhostkit ${packageVersion()}\n`);
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
