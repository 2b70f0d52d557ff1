// Case 8: the switch with a flow table of 1,000 flows matched on 5-tuples, vs the plain
// learning switch, measured in the same run in turns (lib/interleave.ts), on case 3's
// traffic (bench/cases/switch.ts: testpmd flowgen, 64 B UDP/IPv4). Both sides are the same
// switch process (lib/switch-process.ts), with the table and without: the flows are
// 1,000 of the 1,024 5-tuples flowgen cycles through (lib/flow-table.ts), actions=normal,
// so delivery is unchanged and 1000 of every 1024 frames are looked up and found. After the
// turns, every flow must have counted frames (dump-flows), or the case fails.
import type { ChildProcess } from 'node:child_process';
import { join, dirname } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { makeTempDir } from '../../test/lib/peers.js';
import { checkFlowHits, flowHits, FLOWGEN, type DumpedFlow, type FlowHits } from '../lib/flow-table.js';
import { measureInTurns, rate, turnsNote, type Contender } from '../lib/interleave.js';
import { progress, spawnOwned, stopChild } from '../lib/proc.js';
import { rowsChart, type CaseReport, type Row } from '../lib/report.js';
import type { BenchContext } from '../run.js';
import { combined, generic, startSwitchTraffic, type SwitchTraffic } from './switch.js';

/** Flows in the subject's table. */
export const FLOWS = 1000;
const SUBJECT = 'switch, 1,000 flows';
const REFERENCE = 'switch, no flows';
type Who = typeof SUBJECT | typeof REFERENCE;

const switchProcess = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'switch-process.js');

/** Lines of a child's stdout, one at a time. */
class Lines {
  private readonly queue: string[] = [];
  private waiting: ((l: string | null) => void) | null = null;
  private ended = false;
  private readonly rl: Interface;

  constructor(p: ChildProcess) {
    this.rl = createInterface({ input: p.stdout! });
    this.rl.on('line', (l) => {
      const w = this.waiting;
      this.waiting = null;
      if (w) w(l);
      else this.queue.push(l);
    });
    this.rl.on('close', () => {
      this.ended = true;
      this.waiting?.(null);
      this.waiting = null;
    });
  }

  /** The next line, or null at the end of the output or after `ms`. */
  next(ms: number): Promise<string | null> {
    if (this.queue.length) return Promise.resolve(this.queue.shift()!);
    if (this.ended) return Promise.resolve(null);
    return new Promise((res) => {
      const t = setTimeout(() => {
        this.waiting = null;
        res(null);
      }, ms);
      this.waiting = (l) => {
        clearTimeout(t);
        res(l);
      };
    });
  }
}

async function nextJson<T>(lines: Lines, ms: number, what: string): Promise<T> {
  const l = await lines.next(ms);
  if (l === null) throw new Error(`switch process: no ${what} within ${ms} ms`);
  return JSON.parse(l) as T;
}

/** One side: the switch process with `flows` flows, and case 3's traffic through it. `hits`: where the side's dump-flows goes when it stops. */
async function startSide(ctx: BenchContext, flows: number, packed: boolean, commands: Set<string>, hits: Map<number, FlowHits | Error>): Promise<Contender> {
  const tmp = makeTempDir('vhostkit-bench-swf-');
  const sa = tmp.join('a.sock');
  const sb = tmp.join('b.sock');
  const argv = ['taskset', '-c', ctx.backendCpus, process.execPath, switchProcess, '--port', `a=${sa}`, '--port', `b=${sb}`, '--flows', String(flows), '--poll', 'busy'];
  commands.add(`switch, ${flows} flows: ${generic(argv, sa, sb)}`);
  const sw = spawnOwned(argv, { stdio: ['pipe', 'pipe', 'ignore'] });
  const lines = new Lines(sw);
  let traffic: SwitchTraffic | null = null;
  const dump = async (): Promise<FlowHits> => {
    sw.stdin!.write('dump\n');
    const r = await nextJson<{ flows?: DumpedFlow[]; error?: string }>(lines, 10_000, 'dump-flows');
    if (!r.flows) throw new Error(`switch process: dump-flows: ${r.error}`);
    return flowHits(r.flows);
  };
  const stop = async (): Promise<void> => {
    if (flows > 0 && sw.exitCode === null) hits.set(flows, await dump().catch((e: unknown) => (e instanceof Error ? e : new Error(String(e)))));
    await traffic?.stop();
    await stopChild(sw);
    tmp.cleanup();
  };
  try {
    const ready = await nextJson<{ ready: boolean; flows: number; addMs: number }>(lines, 30_000, 'ready line');
    if (!ready.ready || ready.flows !== flows) throw new Error(`switch process: ${JSON.stringify(ready)}`);
    if (flows > 0) progress(`switch-flows: ${flows} flows added in ${ready.addMs} ms`);
    traffic = await startSwitchTraffic(ctx, sa, sb, packed, commands);
  } catch (e) {
    await stop();
    throw e;
  }
  const t = traffic;
  return { pids: () => [sw.pid!, ...t.pids()], measure: (p, ms) => t.measure(p, ms), stop };
}

export async function switchFlowsCase(ctx: BenchContext): Promise<CaseReport> {
  const rows: Row[] = [];
  const commands = new Set<string>();
  const checks: string[] = [];
  let step = 0;
  const total = 2 * ctx.rounds * ctx.turns * 2;
  for (const packed of [false, true]) {
    const ring = packed ? 'packed' : 'split';
    const hits = new Map<number, FlowHits | Error>();
    const samples = await measureInTurns<Who>([SUBJECT, REFERENCE], (who) => startSide(ctx, who === SUBJECT ? FLOWS : 0, packed, commands, hits), {
      rounds: ctx.rounds,
      turns: ctx.turns,
      periods: 1,
      onTurn: (who, round, turn, w) => progress(`switch-flows ${++step}/${total} ${ring}, ${who}, round ${round + 1} turn ${turn + 1}: ${(rate(w) / 1e6).toFixed(2)} Mpps`),
    });
    const h = hits.get(FLOWS);
    if (h === undefined) throw new Error(`switch-flows (${ring}): no dump-flows from the switch with ${FLOWS} flows`);
    if (h instanceof Error) throw h;
    checkFlowHits(h, FLOWS, `switch-flows (${ring})`);
    progress(`switch-flows ${ring}: ${h.hit} of ${h.flows} flows counted frames, ${h.packets} frames in all`);
    checks.push(`${ring}: ${h.hit} of ${h.flows} flows with n_packets > 0, ${(h.packets / 1e6).toFixed(1)} M frames matched in all over the row, warm-ups included`);
    for (const k of Object.keys(samples) as Who[]) samples[k] = samples[k].map((pps) => pps / 1e6);
    rows.push({ config: `${ring}, 64 B, ${combined(ctx) ? 'A <-> B unicast' : 'A -> B unicast'}`, unit: 'Mpps', samples, subject: SUBJECT, reference: REFERENCE });
  }
  const dstFirst = '10.253.0.0';
  const notes = [
    `Both sides are the switch of case 3 (lib/switch-process.ts: what \`vhostkit switch --port a=SOCK_A --port b=SOCK_B --poll busy\` runs) pinned to CPU ${ctx.backendCpus}, on case 3's traffic (${combined(ctx) ? `one testpmd in flowgen mode on CPU ${ctx.frontendCpus} driving both ports, both ways` : 'frontend A txonly, frontend B rxonly'}; measured ${combined(ctx) ? 'at A and B' : 'at B'}). The subject's table holds ${FLOWS.toLocaleString('en')} flows, \`priority=100,udp,nw_src=${FLOWGEN.nwSrc},nw_dst=D,tp_src=${FLOWGEN.tpSrc},tp_dst=${FLOWGEN.tpDst},actions=normal\` for D = ${dstFirst} + 0 .. ${FLOWS - 1}: the 5-tuples of the 64 B UDP/IPv4 frames flowgen sends, whose destination cycles through ${dstFirst} + 0 .. ${FLOWGEN.flows - 1}. So ${FLOWS} of every ${FLOWGEN.flows} frames are looked up and found in the table (the other ${FLOWGEN.flows - FLOWS} are looked up and found in none), and delivery is the learning switch's as without the table. The reference's table is empty.`,
    `The table was used: after the turns, dump-flows of the subject — ${checks.join('; ')}. The case fails if any flow counted nothing.`,
    turnsNote(ctx.rounds, ctx.turns),
  ];
  return {
    id: 'switch-flows',
    title: `Case 8: switch with ${FLOWS.toLocaleString('en')} 5-tuple flows — case 3's traffic through the switch with a table of ${FLOWS.toLocaleString('en')} flows that the frames match, vs the same switch with no flows (Mpps ${combined(ctx) ? 'received by A and B' : 'at B'})`,
    notes,
    rows,
    commands: [...commands],
    target: { ratio: 0.8, rows: () => true, what: `switch with ${FLOWS.toLocaleString('en')} 5-tuple flows at 64 B: at least 0.8 x the plain learning switch` },
    charts: [rowsChart(rows, { file: 'switch-flows', title: `switch, 64 B: Mpps ${combined(ctx) ? 'received by A and B' : 'at B'}, ${FLOWS.toLocaleString('en')} flows vs none`, yLabel: 'Mpps' })],
  };
}
