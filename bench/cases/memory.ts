// Case 6: memory. Resident memory (VmRSS) of one vhostkit process serving 64 idle
// vhost-user net ports (a switch) and 8 RAM disks, against dpdk-testpmd serving 64 idle
// vhost PMD ports; and the cost of one more port, from the difference between 32 and 64
// ports. Idle: every socket listening, no frontend connected.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { makeTempDir, startTestpmd, type Testpmd } from '../../src/testing/peers.js';
import { commandLine, progress } from '../lib/proc.js';
import type { CaseReport, Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';

const DISKS = 8;
const hostMany = fileURLToPath(new URL('../lib/host-many.js', import.meta.url));

/** VmRSS of a process, in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]);
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function vhostkitRss(ctx: BenchContext, ports: number, commands: Set<string>): Promise<number> {
  const tmp = makeTempDir('vhostkit-bench-mem-');
  const argv = ['taskset', '-c', ctx.backendCpus, process.execPath, hostMany, '--dir', tmp.path, '--ports', String(ports), '--disks', String(DISKS)];
  commands.add(`vhostkit: ${commandLine(argv).replace(tmp.path, 'DIR')}`);
  const p: ChildProcess = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, VHOSTKIT_LOG: 'warn' } });
  try {
    await new Promise<void>((resolve, reject) => {
      const rl = createInterface({ input: p.stdout! });
      const timer = setTimeout(() => reject(new Error('host-many did not get ready in 60 s')), 60_000);
      rl.on('line', (l) => {
        if (l.includes('"ready":true')) {
          clearTimeout(timer);
          resolve();
        }
      });
      p.once('exit', (code) => reject(new Error(`host-many exited (${code}) before it was ready`)));
    });
    await settle(3000);
    return rssKiB(p.pid!);
  } finally {
    if (p.exitCode === null) {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
    tmp.cleanup();
  }
}

async function testpmdRss(ctx: BenchContext, ports: number, commands: Set<string>): Promise<number> {
  const tmp = makeTempDir('vhostkit-bench-mem-');
  const extra: string[] = [];
  for (let i = 1; i < ports; i++) extra.push('--vdev', `net_vhost${i},iface=${tmp.join(`t${i}.sock`)},queues=1`);
  let t: Testpmd | null = null;
  try {
    t = await startTestpmd({ role: 'vhost', socket: tmp.join('t0.sock'), forwardMode: 'io', cpu: Number(ctx.backendCpus.split(',')[0]), extraEalArgs: extra, statsPeriod: 0, readyTimeoutMs: 60_000 });
    commands.add(`reference (${ports} ports): ${commandLine([...t.process.argv]).replaceAll(tmp.path, 'DIR').replace(/--file-prefix \S+/, '--file-prefix PREFIX')}`);
    await settle(3000);
    return rssKiB(t.pid);
  } finally {
    await t?.stop();
    tmp.cleanup();
  }
}

export async function memoryCase(ctx: BenchContext): Promise<CaseReport> {
  const commands = new Set<string>();
  const s: Record<string, Record<number, number[]>> = { vhostkit: { 32: [], 64: [] }, testpmd: { 32: [], 64: [] } };
  const total = ctx.rounds * 4;
  let step = 0;
  for (let round = 0; round < ctx.rounds; round++) {
    for (const who of round % 2 === 0 ? (['vhostkit', 'testpmd'] as const) : (['testpmd', 'vhostkit'] as const)) {
      for (const ports of [32, 64]) {
        const kib = who === 'vhostkit' ? await vhostkitRss(ctx, ports, commands) : await testpmdRss(ctx, ports, commands);
        s[who][ports].push(kib / 1024);
        progress(`memory ${++step}/${total} ${who}, ${ports} ports${who === 'vhostkit' ? ` + ${DISKS} disks` : ''}, round ${round + 1}: ${(kib / 1024).toFixed(1)} MiB`);
      }
    }
  }
  const perPort = (who: string) => s[who][64].map((v, i) => ((v - s[who][32][i]) / 32) * 1024);
  const rows: Row[] = [
    { config: `64 idle ports (vhostkit: + ${DISKS} RAM disks)`, unit: 'MiB RSS', samples: { vhostkit: s.vhostkit[64], testpmd: s.testpmd[64] }, subject: 'vhostkit', reference: 'testpmd' },
    { config: `32 idle ports (vhostkit: + ${DISKS} RAM disks)`, unit: 'MiB RSS', samples: { vhostkit: s.vhostkit[32], testpmd: s.testpmd[32] }, subject: 'vhostkit', reference: 'testpmd' },
    { config: 'one more port (from 32 to 64 ports, per port)', unit: 'KiB RSS', samples: { vhostkit: perPort('vhostkit'), testpmd: perPort('testpmd') }, subject: 'vhostkit', reference: 'testpmd' },
  ];
  return {
    id: 'memory',
    title: 'Case 6: memory — resident memory of one process serving idle ports (and disks), vs dpdk-testpmd with the same vhost-user ports',
    notes: [
      `vhostkit: one process (bench/lib/host-many.ts) with a switch of N vhost-user ports (its data plane on a worker thread, event mode) and ${DISKS} RAM disks of 64 MiB (1 I/O thread each), every socket listening, nothing connected. testpmd: N net_vhost ports, io forwarding, \`--no-huge -m 512 --total-num-mbufs=16384\` (the settings every other case uses). VmRSS from /proc/<pid>/status 3 s after the last socket listens. Lower is better: a ratio below 1 means vhostkit uses less.`,
    ],
    rows,
    commands: [...commands],
    target: { what: 'resident memory below testpmd with the same ports', rows: (r) => r.config.startsWith('64 '), maxRatio: 1 },
  };
}
