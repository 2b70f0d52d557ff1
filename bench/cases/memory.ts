// Case 6: memory. Resident memory (VmRSS) of one vhostkit process serving 64 idle
// vhost-user net ports (a switch) and 8 RAM disks, against dpdk-testpmd serving idle vhost
// PMD ports: 32 of them, the most Debian's DPDK build takes (RTE_MAX_ETHPORTS = 32: the
// 33rd vdev fails with "Failed to create net_vhost32"); and the cost of one more port, from
// the difference between 16 and 32 ports. Idle: every socket listening, no frontend
// connected. testpmd runs with the least memory that serves 32 ports here
// (--no-huge -m 128 --total-num-mbufs=2048).
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { makeTempDir, startTestpmd, type Testpmd } from '../../test/lib/peers.js';
import { commandLine, progress, spawnOwned, stopChild } from '../lib/proc.js';
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
  const p: ChildProcess = spawnOwned(argv, { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, VHOSTKIT_LOG: 'warn' } });
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
    await stopChild(p);
    tmp.cleanup();
  }
}

async function testpmdRss(ctx: BenchContext, ports: number, commands: Set<string>): Promise<number> {
  const tmp = makeTempDir('vhostkit-bench-mem-');
  const extra: string[] = [];
  for (let i = 1; i < ports; i++) extra.push('--vdev', `net_vhost${i},iface=${tmp.join(`t${i}.sock`)},queues=1`);
  let t: Testpmd | null = null;
  try {
    t = await startTestpmd({
      role: 'vhost',
      socket: tmp.join('t0.sock'),
      forwardMode: 'io',
      cpu: Number(ctx.backendCpus.split(',')[0]),
      extraEalArgs: extra,
      memMb: 128,
      totalNumMbufs: 2048,
      readyTimeoutMs: 60_000,
    });
    commands.add(
      `reference (${ports} ports): ${commandLine([...t.process.argv])
        .replaceAll(tmp.path, 'DIR')
        .replace(/--file-prefix \S+/, '--file-prefix PREFIX')}`,
    );
    await settle(3000);
    return rssKiB(t.pid);
  } finally {
    await t?.stop();
    tmp.cleanup();
  }
}

export async function memoryCase(ctx: BenchContext): Promise<CaseReport> {
  const commands = new Set<string>();
  const vk: Record<number, number[]> = { 16: [], 32: [], 64: [] };
  const tp: Record<number, number[]> = { 16: [], 32: [] };
  const total = ctx.rounds * 5;
  let step = 0;
  for (let round = 0; round < ctx.rounds; round++) {
    for (const who of round % 2 === 0 ? (['vhostkit', 'testpmd'] as const) : (['testpmd', 'vhostkit'] as const)) {
      for (const ports of who === 'vhostkit' ? [16, 32, 64] : [16, 32]) {
        const kib = who === 'vhostkit' ? await vhostkitRss(ctx, ports, commands) : await testpmdRss(ctx, ports, commands);
        (who === 'vhostkit' ? vk : tp)[ports].push(kib / 1024);
        progress(`memory ${++step}/${total} ${who}, ${ports} ports${who === 'vhostkit' ? ` + ${DISKS} disks` : ''}, round ${round + 1}: ${(kib / 1024).toFixed(1)} MiB`);
      }
    }
  }
  const perPort = (s: Record<number, number[]>) => s[32].map((v, i) => ((v - s[16][i]) / 16) * 1024);
  const row = (config: string, unit: string, a: number[], b: number[]): Row => ({ config, unit, samples: { vhostkit: a, testpmd: b }, subject: 'vhostkit', reference: 'testpmd' });
  const rows: Row[] = [
    row(`vhostkit 64 ports + ${DISKS} RAM disks; testpmd 32 ports (its maximum here)`, 'MiB RSS', vk[64], tp[32]),
    row(`32 ports (vhostkit: + ${DISKS} RAM disks)`, 'MiB RSS', vk[32], tp[32]),
    row(`16 ports (vhostkit: + ${DISKS} RAM disks)`, 'MiB RSS', vk[16], tp[16]),
    row('one more port (from 16 to 32 ports, per port)', 'KiB RSS', perPort(vk), perPort(tp)),
  ];
  return {
    id: 'memory',
    title: 'Case 6: memory — resident memory of one process serving idle ports (and disks), vs dpdk-testpmd with vhost-user ports',
    notes: [
      `vhostkit: one process (bench/lib/host-many.ts) with a switch of N vhost-user ports (its data plane on a worker thread, event mode) and ${DISKS} RAM disks of 64 MiB (1 I/O thread each), every socket listening, nothing connected. testpmd: N net_vhost ports with io forwarding and the least memory that serves 32 ports here, \`--no-huge -m 128 --total-num-mbufs=2048\` (Debian's DPDK takes at most 32 ports: RTE_MAX_ETHPORTS). VmRSS from /proc/<pid>/status 3 s after the last socket listens. Lower is better: a ratio below 1 means vhostkit uses less. testpmd's per-port figure is near 0 because its memory is reserved up front (-m); a negative or tiny figure is noise.`,
    ],
    rows,
    commands: [...commands],
    target: { what: 'resident memory below testpmd with the same ports (64 + 8 disks against its 32)', rows: (r) => r.config.startsWith('vhostkit 64'), maxRatio: 1 },
  };
}
