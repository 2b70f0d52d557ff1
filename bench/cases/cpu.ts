// Case 5: CPU cost. testpmd virtio-user txonly sends as fast as it can into a vhostkit sink
// port (net-load) in each poll mode, and into testpmd's vhost PMD in rxonly (which always
// busy-polls): CPU seconds the backend process spent per million packets received. Then the
// same ports connected but idle (the frontend sends nothing): the backend's CPU use, which
// should be ~0 in event and adaptive mode.
//
// CPU time is the backend process's utime + stime (all its threads) from /proc/<pid>/stat,
// read when the frontend's statistics periods that bound the window are seen.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { makeTempDir, startTestpmd, type Testpmd } from '../../test/lib/peers.js';
import { progress, spawnOwned, stopChild } from '../lib/proc.js';
import { type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';
import { generic, vkArgv, waitSocket } from './net.js';

const MODES = ['busy', 'event', 'adaptive'] as const;
type Who = (typeof MODES)[number] | 'testpmd';
const TICK = 100; // USER_HZ: /proc times are in 1/100 s on Linux

/** CPU seconds used so far by process `pid` (every thread). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK; // fields 14 and 15: utime, stime
}

async function runOnce(ctx: BenchContext, who: Who, idle: boolean, packed: boolean, commands: Set<string>): Promise<number> {
  const tmp = makeTempDir('vhostkit-bench-cpu-');
  const sock = tmp.join('port.sock');
  let vk: ChildProcess | null = null;
  let ref: Testpmd | null = null;
  let virtio: Testpmd | null = null;
  try {
    let pid: number;
    if (who === 'testpmd') {
      ref = await startTestpmd({ role: 'vhost', socket: sock, forwardMode: 'rxonly', cpu: Number(ctx.backendCpus.split(',')[0]) });
      commands.add(`reference: ${generic(ref.process.argv, sock)}`);
      pid = ref.pid;
    } else {
      const argv = vkArgv('rx', sock, 64, ctx.backendCpus, packed, who);
      commands.add(`vhostkit --poll ${who}: ${generic(argv, sock)}`);
      vk = spawnOwned(argv);
      await waitSocket(sock, vk, 10_000);
      pid = vk.pid!;
    }
    virtio = await startTestpmd({
      role: 'virtio-user',
      socket: sock,
      forwardMode: idle ? 'rxonly' : 'txonly',
      txpkts: 64,
      cpu: Number(ctx.frontendCpus.split(',')[0]),
      packed,
    });
    commands.add(`frontend (${idle ? 'idle: rxonly, sends nothing' : 'txonly 64 B'}): ${generic(virtio.process.argv, sock)}`);
    const first = await virtio.waitForStats((s) => s.seq >= 3 && s.ports[0] !== undefined, 30_000);
    const cpu0 = cpuSeconds(pid);
    const last = await virtio.waitForStats((s) => s.seq >= first.seq + ctx.seconds, (ctx.seconds + 10) * 1000);
    const cpu = cpuSeconds(pid) - cpu0;
    const secs = (last.at - first.at) / 1000;
    if (idle) return (100 * cpu) / secs; // % of one CPU
    const mpkts = (last.ports[0].txPackets - first.ports[0].txPackets) / 1e6;
    return mpkts > 0 ? cpu / mpkts : NaN;
  } finally {
    await virtio?.stop();
    await ref?.stop();
    await stopChild(vk);
    tmp.cleanup();
  }
}

export async function cpuCase(ctx: BenchContext): Promise<CaseReport> {
  const rows: Row[] = [];
  const commands = new Set<string>();
  const total = 2 * ctx.rounds * (MODES.length + 1);
  let step = 0;
  for (const idle of [false, true]) {
    const samples: Record<string, number[]> = {};
    for (const w of [...MODES, 'testpmd'] as Who[]) samples[w === 'testpmd' ? 'testpmd vhost PMD' : `vhostkit ${w}`] = [];
    for (let round = 0; round < ctx.rounds; round++) {
      const order: Who[] = round % 2 === 0 ? [...MODES, 'testpmd'] : ['testpmd', ...[...MODES].reverse()];
      for (const who of order) {
        const v = await runOnce(ctx, who, idle, true, commands);
        samples[who === 'testpmd' ? 'testpmd vhost PMD' : `vhostkit ${who}`].push(v);
        progress(`cpu ${++step}/${total} ${idle ? 'idle' : 'full rate'}, ${who}, round ${round + 1}: ${v.toFixed(3)} ${idle ? '% CPU' : 'CPU s/Mpkt'}`);
      }
    }
    // One row per mode, each against the reference (the table's ratio column).
    for (const m of MODES) {
      rows.push({
        config: `${idle ? 'idle (connected, no traffic)' : 'full rate, 64 B'}: vhostkit --poll ${m}`,
        unit: idle ? '% CPU' : 'CPU s/Mpkt',
        samples: { vhostkit: samples[`vhostkit ${m}`], 'testpmd vhost PMD': samples['testpmd vhost PMD'] },
        subject: 'vhostkit',
        reference: 'testpmd vhost PMD',
      });
    }
  }
  return {
    id: 'cpu',
    title: 'Case 5: CPU cost — backend CPU seconds per million packets received (testpmd virtio-user txonly at full rate, packed ring), and backend CPU use while connected and idle',
    notes: [
      `The backend (vhostkit net-load, a sink that copies each frame into its own memory, in each --poll mode; or testpmd's vhost PMD in rxonly, which busy-polls) is pinned to CPU ${ctx.backendCpus}, the frontend to CPU ${ctx.frontendCpus}. CPU time is the backend process's utime + stime from /proc/<pid>/stat (every thread, 10 ms resolution) over ${ctx.seconds} statistics periods. Lower is better in both tables: a ratio below 1 means vhostkit spends less.`,
      'At full rate every mode spends a whole CPU in this setup (the frontend never lets the ring go empty): the figure then says how many packets each CPU second buys. Idle, busy mode spins by design; event and adaptive mode sleep on the kick eventfd.',
    ],
    rows,
    commands: [...commands],
    target: { what: 'idle CPU in event and adaptive mode: ~0 (at most 1% of a CPU)', rows: (r) => r.unit === '% CPU' && !r.config.endsWith('busy'), maxSubject: 1 },
  };
}
