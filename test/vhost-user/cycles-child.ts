// Child process of faults.test.ts: connect / negotiate / disconnect cycles against one
// backend, with resource counts before and after. Run with --expose-gc:
//   node --expose-gc dist/test/vhost-user/cycles-child.js <cycles> <warm-up cycles>
// Each cycle: connect our frontend, GET/SET features and protocol features, SET_OWNER,
// SET_MEM_TABLE (a 256 KiB memfd), start a queue (NUM, BASE, ADDR, CALL, KICK, ENABLE),
// echo one chain through it, disconnect, wait until the backend has torn the session down.
// Prints one JSON line: cycles, ms, fds / mappings / rss / heap before and after.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { EchoDevice } from '../lib/echo-device.js';
import { setLogSink } from '../../src/log.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');
const cycles = Number(process.argv[2] ?? 10000);
const warmup = Number(process.argv[3] ?? 3000);

let errors = 0;
setLogSink((r) => {
  if (r.level === 'error' || r.level === 'warn') errors++;
});

const fds = (): number => readdirSync('/proc/self/fd').length;
const maps = (): number =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:')).length;

async function settle(): Promise<{ fds: number; maps: number; rss: number; heap: number; external: number }> {
  for (let i = 0; i < 4; i++) {
    gc!();
    await new Promise((r) => setTimeout(r, 20));
  }
  const m = process.memoryUsage();
  return { fds: fds(), maps: maps(), rss: m.rss, heap: m.heapUsed, external: m.external };
}

const dir = mkdtempSync(join(tmpdir(), 'vk-cycles-'));
const socket = join(dir, 'vhost.sock');
const dev = new EchoDevice(1);
const be = new VhostUserBackend(dev, { socket });
await be.start();

async function cycle(i: number): Promise<void> {
  const fe = await VhostUserFrontend.connect(socket);
  const closed = new Promise<void>((resolve) => be.once('session-closed', () => resolve()));
  try {
    await fe.negotiate();
    await fe.setupMemory(256 * 1024);
    const q = await fe.startQueue(0, { size: 64 });
    const id = q.driver.add([
      { len: 4, writable: false, data: Uint8Array.of(i & 0xff, 1, 2, 3) },
      { len: 4, writable: true },
    ]);
    q.publishAndKick();
    const used = await q.waitUsed(1, 5000);
    if (used.length !== 1 || used[0].id !== id) throw new Error(`cycle ${i}: used ${JSON.stringify(used)}`);
  } finally {
    fe.close();
  }
  await closed;
  dev.events.length = 0; // the echo device records every session's events: not the backend's to free
}

for (let i = 0; i < warmup; i++) await cycle(i);
const before = await settle();
const t0 = Date.now();
/** RSS (after a gc) every tenth of the run: a leak grows with the cycles, a warm-up does not. */
const samples: number[] = [];
for (let i = 0; i < cycles; i++) {
  await cycle(i);
  if ((i + 1) % Math.max(1, Math.floor(cycles / 10)) === 0) {
    gc();
    samples.push(process.memoryUsage().rss);
    if (process.env.CYCLES_TRACE) process.stderr.write(`${i + 1}: ${JSON.stringify(process.memoryUsage())}\n`);
  }
}
const ms = Date.now() - t0;
const after = await settle();
await be.stop();
rmSync(dir, { recursive: true, force: true });
process.stdout.write(JSON.stringify({ cycles, warmup, ms, before, after, samples, served: dev.served, errors }) + '\n');
