// Cases 1 and 2: virtio-net rings against dpdk-testpmd.
//   net-rx: testpmd virtio-user txonly -> a vhostkit port that reads each frame into memory
//           of its own (net-load, --poll busy), vs -> testpmd's vhost PMD in rxonly (which
//           copies each frame into an mbuf); a vhostkit port that returns the frames unread
//           (--sink drop) is measured beside them, and labelled so.
//   net-tx: a vhostkit port generating frames (net-load --gen) -> testpmd virtio-user rxonly,
//           vs testpmd's vhost PMD in txonly.
// Both sides of every run are measured at the same point: the virtio-user testpmd's own
// counters (packets it managed to send, or received), over whole statistics periods. The
// two sides of a row are both up and take turns (lib/interleave.ts).
import type { ChildProcess } from 'node:child_process';
import { makeTempDir, startTestpmd, vhostkitCli, type Testpmd } from '../../test/lib/peers.js';
import { measureInTurns, rate, testpmdWindow, turnsNote, type Contender } from '../lib/interleave.js';
import { commandLine, progress, spawnOwned, stopChild } from '../lib/proc.js';
import { rowsChart, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';

export type Dir = 'rx' | 'tx';
const SIZES = [64, 512, 1500];

export async function waitSocket(path: string, proc: ChildProcess, ms: number): Promise<void> {
  const { existsSync } = await import('node:fs');
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (proc.exitCode !== null) throw new Error(`vhostkit net-load exited (${proc.exitCode}) before creating ${path}`);
    if (Date.now() > end) throw new Error(`vhostkit net-load did not create ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** net-load's command line; `sink`: what the rx side does with each frame (net-load --sink). */
export function vkArgv(dir: Dir, sock: string, size: number, cpus: string, packed: boolean, poll = 'busy', cli = vhostkitCli, sink: 'copy' | 'drop' = 'copy'): string[] {
  const a = ['taskset', '-c', cpus, process.execPath, cli, 'net-load', '--socket', sock, '--poll', poll];
  if (dir === 'tx') a.push('--gen', '--size', String(size));
  else a.push('--sink', sink);
  if (!packed) a.push('--split-only');
  return a;
}

/** A command line with the run's own socket, file prefix and size replaced by placeholders. */
export function generic(argv: readonly string[], sock: string): string {
  return commandLine([...argv])
    .replaceAll(sock, 'SOCK')
    .replace(/--file-prefix \S+/, '--file-prefix PREFIX')
    .replace(/--txpkts=\d+/, '--txpkts=SIZE')
    .replace(/--size \d+/, '--size SIZE');
}

/** 'vhostkit, no-touch sink': net-rx's sink returning frames unread (--sink drop). */
type Who = 'vhostkit' | 'vhostkit, no-touch sink' | 'testpmd vhost PMD';
const NO_TOUCH = 'vhostkit, no-touch sink';

/**
 * One side of a net case, up and forwarding: its backend and the virtio-user testpmd.
 * `cli`: the vhostkit CLI to run (another build's, to compare two builds: bench/ab.ts).
 */
export async function startNetSide(ctx: BenchContext, dir: Dir, who: Who, size: number, packed: boolean, commands: Set<string>, cli = vhostkitCli): Promise<Contender> {
  const tmp = makeTempDir('vhostkit-bench-net-');
  const sock = tmp.join('port.sock');
  let vk: ChildProcess | null = null;
  let ref: Testpmd | null = null;
  let virtio: Testpmd | null = null;
  const cpuB = Number(ctx.backendCpus.split(',')[0]);
  const cpuF = Number(ctx.frontendCpus.split(',')[0]);
  const stop = async (): Promise<void> => {
    await virtio?.stop();
    await ref?.stop();
    await stopChild(vk);
    tmp.cleanup();
  };
  try {
    if (who !== 'testpmd vhost PMD') {
      const argv = vkArgv(dir, sock, size, ctx.backendCpus, packed, 'busy', cli, who === NO_TOUCH ? 'drop' : 'copy');
      commands.add(`${who} (${packed ? 'packed' : 'split'}): ${generic(argv, sock)}`);
      vk = spawnOwned(argv);
      await waitSocket(sock, vk, 10_000);
    } else {
      ref = await startTestpmd({ role: 'vhost', socket: sock, forwardMode: dir === 'rx' ? 'rxonly' : 'txonly', txpkts: dir === 'tx' ? size : undefined, cpu: cpuB });
      commands.add(`reference: ${generic(ref.process.argv, sock)}`);
    }
    virtio = await startTestpmd({
      role: 'virtio-user',
      socket: sock,
      forwardMode: dir === 'rx' ? 'txonly' : 'rxonly',
      txpkts: dir === 'rx' ? size : undefined,
      cpu: cpuF,
      packed,
    });
    commands.add(`frontend (${packed ? 'packed' : 'split'}): ${generic(virtio.process.argv, sock)}`);
  } catch (e) {
    await stop();
    throw e;
  }
  const fe = virtio;
  const backendPid = vk ? vk.pid! : ref!.pid;
  // Both sides are measured at the same point: the virtio-user testpmd's own counters
  // (packets it managed to send, or received).
  return {
    pids: () => [backendPid, fe.pid],
    measure: (periods, settleMs) => testpmdWindow(fe, periods, settleMs, [0], (s) => (dir === 'rx' ? s.ports[0].txPackets : s.ports[0].rxPackets)),
    stop,
  };
}

export function netCase(dir: Dir): (ctx: BenchContext) => Promise<CaseReport> {
  return async (ctx) => {
    const rows: Row[] = [];
    const commands = new Set<string>();
    const names: Who[] = dir === 'rx' ? ['vhostkit', NO_TOUCH, 'testpmd vhost PMD'] : ['vhostkit', 'testpmd vhost PMD'];
    const total = 2 * SIZES.length * ctx.rounds * ctx.turns * names.length;
    let step = 0;
    for (const packed of [false, true]) {
      for (const size of SIZES) {
        const samples = await measureInTurns<Who>(names, (who) => startNetSide(ctx, dir, who, size, packed, commands), {
          rounds: ctx.rounds,
          turns: ctx.turns,
          periods: 1,
          onTurn: (who, round, turn, w) =>
            progress(`net-${dir} ${++step}/${total} ${packed ? 'packed' : 'split'} ${size} B, ${who}, round ${round + 1} turn ${turn + 1}: ${(rate(w) / 1e6).toFixed(2)} Mpps`),
        });
        for (const k of Object.keys(samples) as Who[]) samples[k] = samples[k].map((pps) => pps / 1e6);
        rows.push({ config: `${packed ? 'packed' : 'split'}, ${size} B`, unit: 'Mpps', samples, subject: 'vhostkit', reference: 'testpmd vhost PMD' });
      }
    }
    return {
      id: `net-${dir}`,
      title:
        dir === 'rx'
          ? 'Case 1: net rx — testpmd virtio-user txonly into a vhostkit sink port vs into testpmd vhost PMD rxonly (Mpps)'
          : 'Case 2: net tx — a vhostkit generator port vs testpmd vhost PMD txonly, into testpmd virtio-user rxonly (Mpps)',
      notes: [
        dir === 'rx'
          ? `The vhostkit sink copies each frame into a buffer of its own (net-load --sink copy), as the vhost PMD copies each frame into an mbuf that rxonly then frees; the ratio is of these two. The column "${NO_TOUCH}" is net-load --sink drop, which returns each buffer without reading the frame: the ring's cost alone, not a receiver's.`
          : 'The vhostkit generator copies a prepared frame into each receive buffer; the vhost PMD copies its txonly mbufs.',
        `vhostkit: \`vhostkit net-load --poll busy${dir === 'tx' ? ' --gen' : ' --sink copy|drop'}\` pinned to CPU ${ctx.backendCpus}; the testpmd virtio-user frontend (queue size 1024) pinned to CPU ${ctx.frontendCpus}; the reference backend pinned like vhostkit. Rates are the virtio-user testpmd's own counters (packets sent, or received).`,
        turnsNote(ctx.rounds, ctx.turns),
      ],
      rows,
      commands: [...commands],
      // Issue 24: a receiver that reads every frame at least as fast as the vhost PMD; the generator's target is the first wave's.
      target:
        dir === 'rx'
          ? { ratio: 1.0, rows: (r) => r.config.endsWith(' 64 B'), what: "net rx at 64 B, copying sink: at least 1.0 x DPDK's vhost PMD, split and packed" }
          : { ratio: 0.7, rows: (r) => r.config.endsWith(' 64 B'), what: "net tx at 64 B: at least 0.7 x DPDK's vhost PMD, split and packed" },
      charts: [rowsChart(rows, { file: `net-${dir}`, title: `net ${dir}: Mpps by ring layout and frame size`, yLabel: 'Mpps' })],
    };
  };
}
