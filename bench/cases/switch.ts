// Case 3: the switch. testpmd virtio-user A (txonly, unicast to B's MAC) -> vhostkit switch
// (--poll busy) -> testpmd virtio-user B (rxonly; it sends one burst first with --tx-first,
// so the switch has learnt its MAC and forwards unicast, not flooding), vs testpmd io
// forwarding between two vhost ports (which does no MAC lookup). Both frontends share one
// CPU, the switch (or the reference) has the other. Measured: what B receives.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { makeTempDir, startTestpmd, vhostkitCli, type Testpmd } from '../../src/testing/peers.js';
import { commandLine, progress, stopChild } from '../lib/proc.js';
import { median, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';

const MAC_A = '02:00:00:00:00:0a';
const MAC_B = '02:00:00:00:00:0b';

export function generic(argv: readonly string[], a: string, b: string): string {
  return commandLine([...argv]).replaceAll(a, 'SOCK_A').replaceAll(b, 'SOCK_B').replace(/--file-prefix \S+/, '--file-prefix PREFIX');
}

/** Frontend B (rxonly, sends one burst first so its MAC is learnt), then A (txonly to B's MAC). */
export async function startFrontends(ctx: BenchContext, sa: string, sb: string, packed: boolean, commands: Set<string>): Promise<{ a: Testpmd; b: Testpmd }> {
  const cpuF = Number(ctx.frontendCpus.split(',')[0]);
  const b = await startTestpmd({ role: 'virtio-user', socket: sb, forwardMode: 'rxonly', cpu: cpuF, packed, mac: MAC_B, extraArgs: ['--tx-first'] });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const a = await startTestpmd({ role: 'virtio-user', socket: sa, forwardMode: 'txonly', txpkts: 64, cpu: cpuF, packed, mac: MAC_A, extraArgs: [`--eth-peer=0,${MAC_B}`] });
    commands.add(`frontend B (${packed ? 'packed' : 'split'}): ${generic(b.process.argv, sa, sb)}`);
    commands.add(`frontend A (${packed ? 'packed' : 'split'}): ${generic(a.process.argv, sa, sb)}`);
    return { a, b };
  } catch (e) {
    await b.stop();
    throw e;
  }
}

/** Packets per second B received over `seconds` statistics periods, after 2 warm-up periods. */
export async function measureAtB(b: Testpmd, seconds: number): Promise<number> {
  const s0 = b.latestStats()?.seq ?? 0;
  const first = await b.waitForStats((s) => s.seq >= s0 + 2 && s.ports[0] !== undefined, 30_000);
  const last = await b.waitForStats((s) => s.seq >= first.seq + seconds, (seconds + 10) * 1000);
  return (last.ports[0].rxPackets - first.ports[0].rxPackets) / ((last.at - first.at) / 1000);
}

async function runOnce(ctx: BenchContext, who: 'vhostkit switch' | 'testpmd io', packed: boolean, commands: Set<string>): Promise<number> {
  const tmp = makeTempDir('vhostkit-bench-sw-');
  const sa = tmp.join('a.sock');
  const sb = tmp.join('b.sock');
  const cpuB = Number(ctx.backendCpus.split(',')[0]);
  let sw: ChildProcess | null = null;
  let ref: Testpmd | null = null;
  let pa: Testpmd | null = null;
  let pb: Testpmd | null = null;
  try {
    if (who === 'vhostkit switch') {
      const argv = ['taskset', '-c', ctx.backendCpus, process.execPath, vhostkitCli, 'switch', '--port', `a=${sa}`, '--port', `b=${sb}`, '--poll', 'busy'];
      commands.add(`vhostkit: ${generic(argv, sa, sb)}`);
      sw = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'ignore'] });
      const end = Date.now() + 10_000;
      while (!existsSync(sa) || !existsSync(sb)) {
        if (sw.exitCode !== null || Date.now() > end) throw new Error('vhostkit switch did not create its sockets');
        await new Promise((r) => setTimeout(r, 20));
      }
    } else {
      ref = await startTestpmd({ role: 'vhost', socket: sa, forwardMode: 'io', cpu: cpuB, extraEalArgs: ['--vdev', `net_vhost1,iface=${sb},queues=1`] });
      commands.add(`reference: ${generic(ref.process.argv, sa, sb)}`);
    }
    const fe = await startFrontends(ctx, sa, sb, packed, commands);
    pa = fe.a;
    pb = fe.b;
    return await measureAtB(pb, ctx.seconds);
  } finally {
    await pa?.stop();
    await pb?.stop();
    await ref?.stop();
    await stopChild(sw);
    tmp.cleanup();
  }
}

export async function switchCase(ctx: BenchContext): Promise<CaseReport> {
  const rows: Row[] = [];
  const commands = new Set<string>();
  let step = 0;
  const total = 2 * ctx.rounds * 2;
  for (const packed of [false, true]) {
    const samples: Record<string, number[]> = { 'vhostkit switch': [], 'testpmd io': [] };
    for (let round = 0; round < ctx.rounds; round++) {
      const order = round % 2 === 0 ? (['vhostkit switch', 'testpmd io'] as const) : (['testpmd io', 'vhostkit switch'] as const);
      for (const who of order) {
        const pps = await runOnce(ctx, who, packed, commands);
        samples[who].push(pps / 1e6);
        progress(`switch ${++step}/${total} ${packed ? 'packed' : 'split'}, ${who}, round ${round + 1}: ${(pps / 1e6).toFixed(2)} Mpps`);
      }
    }
    rows.push({ config: `${packed ? 'packed' : 'split'}, 64 B, A -> B unicast`, unit: 'Mpps', samples, subject: 'vhostkit switch', reference: 'testpmd io' });
  }
  return {
    id: 'switch',
    title: 'Case 3: switch — testpmd virtio-user A (txonly) -> switch -> testpmd virtio-user B (rxonly), vs testpmd io forwarding between two vhost ports (Mpps at B)',
    notes: [
      `The switch (\`vhostkit switch --poll busy\`, forwarding on its data-plane thread) or the reference pinned to CPU ${ctx.backendCpus}; both testpmd frontends share CPU ${ctx.frontendCpus}. B sends one burst first (--tx-first) so its MAC is learnt; A sends to it (--eth-peer). ${ctx.seconds} statistics periods after 2 warm-up periods; ${ctx.rounds} rounds alternating.`,
      'Caveat: with 2 CPUs the two busy-polling frontends share one, so B runs about half the time and its receive ring overflows while it is descheduled: both forwarders are measured under that same handicap, and the absolute figures say more about the scheduler than about forwarding. A machine with 3+ CPUs (one per process) gives the meaningful figure.',
    ],
    rows,
    commands: [...commands],
    target: { ratio: 0.6, rows: () => true, what: 'switch at 64 B: at least 0.6 x testpmd io forwarding' },
  };
}
