// The switch's per-frame cost of the flow table and of packet handlers, on the data-plane
// code alone (no guest rings): 64-byte TCP frames switched from a host buffer
// (SwitchEngine.inject, the path of TAP and VXLAN reads), in rounds of 32-frame bursts,
// against the plain learning switch measured in the same run:
//
//   node dist/bench/flow-micro.js [--rounds 8] [--bursts 50000] [--churn 2000]
//
// Cases: 1,000 5-tuple flows none of which matches the frames (a full probe: the worst
// lookup), the same with one that matches all of them (actions=NORMAL), 1,000 flows each
// frame hits a different one of (the frames cycle through 1,024 connections: each lookup
// touches a flow not in the L1 cache, as with many connections), a flow sending every frame
// to a handler that only counts them, and that with NORMAL as well. Prints the best round of
// each in ns per frame and as a ratio of the plain switch's rate.
//
// Then the cost of changing the table as a handler that tracks connections does (the
// firewall example): per connection, its 6 flows added, a burst switched, the 6 removed
// (strict), with 10,002 other flows (1,667 connections) in the table; microseconds per connection.
import { parseArgs } from 'node:util';
import { SwitchEngine } from '../src/switch/engine.js';
import { parseFlow } from '../src/switch/flows.js';
import { PortCounter } from '../src/native/switch.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '8' }, bursts: { type: 'string', default: '50000' }, churn: { type: 'string', default: '2000' } } });
const ROUNDS = Number(values.rounds);
const BURSTS = Number(values.bursts);

// 1,024 frames of TCP connections 10.9.9.9:P -> 10.1.0.1:80, P = 1000 + i. A case sends
// bursts of 32 of them: of one connection (P = 12345), or cycling through all 1,024.
const CONNS = 1024;
const data = new Uint8Array(CONNS * 64);
const lens = new Uint32Array(32).fill(64);
for (let i = 0; i < CONNS; i++) {
  const p = 1000 + i;
  data.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0, 0x45, 0, 0, 50, 0, 0, 0, 0, 64, 6, 0, 0, 10, 9, 9, 9, 10, 1, 0, 1, p >> 8, p & 255, 0, 80], i * 64);
}
const one = new Uint8Array(32 * 64);
for (let i = 0; i < 32; i++) {
  one.set(data.subarray(0, 64), i * 64);
  one.set([0x30, 0x39], i * 64 + 34);
}
const sameOffsets = [Uint32Array.from({ length: 32 }, (_, i) => i * 64)];
const cycleOffsets = Array.from({ length: CONNS / 32 }, (_, b) => Uint32Array.from({ length: 32 }, (_, i) => (b * 32 + i) * 64));

interface Case {
  name: string;
  setup(e: SwitchEngine): void;
  /** Frames cycle through the 1,024 connections (else: all of one). */
  cycle?: boolean;
}
const ports = () => 1;
const thousand = (e: SwitchEngine) => {
  for (let i = 0; i < 1000; i++) e.addFlow(parseFlow(`priority=${100 + (i % 7)},tcp,nw_src=10.0.${i >> 8}.${i & 255},nw_dst=10.1.0.1,tp_src=${1000 + i},tp_dst=80,actions=drop`, ports));
};
let counted = 0;
const counter = (e: SwitchEngine) =>
  e.addHandler(
    1,
    'count',
    (frames) => void (counted += frames.length),
    () => undefined,
  );
const CASES: Case[] = [
  { name: 'plain learning switch (reference)', setup: () => undefined },
  { name: '1,000 5-tuple flows, none matching', setup: thousand },
  {
    name: '1,000 5-tuple flows, a different one hit per frame',
    cycle: true,
    setup: (e) => {
      for (let i = 0; i < 1000; i++) e.addFlow(parseFlow(`priority=100,tcp,nw_src=10.9.9.9,nw_dst=10.1.0.1,tp_src=${1000 + i},tp_dst=80,actions=NORMAL`, ports));
    },
  },
  { name: '1,000 5-tuple flows + one matching (NORMAL)', setup: (e) => (thousand(e), e.addFlow(parseFlow('priority=50,tcp,nw_src=10.9.9.9,tp_src=12345,actions=NORMAL', ports))) },
  { name: 'a handler that counts frames', setup: (e) => (counter(e), e.addFlow(parseFlow('actions=handler:count', ports, false, () => 1))) },
  { name: 'a handler that counts frames, and NORMAL', setup: (e) => (counter(e), e.addFlow(parseFlow('actions=handler:count,NORMAL', ports, false, () => 1))) },
];

const engines = CASES.map((c) => {
  const e = new SwitchEngine(32, 1e9);
  e.addPort(1, 'a', { mode: 'access', vid: 1 }, new Float64Array(PortCounter.WORDS));
  e.addPort(2, 'b', { mode: 'access', vid: 1 }, new Float64Array(PortCounter.WORDS));
  c.setup(e);
  return e;
});
const best = CASES.map(() => Infinity);
// Rounds alternate the cases, so that a shift in the machine's speed reaches them all.
for (let r = 0; r < ROUNDS; r++) {
  engines.forEach((e, k) => {
    const [frames, offs] = CASES[k].cycle ? [data, cycleOffsets] : [one, sameOffsets];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < BURSTS; i++) e.inject(1, frames, offs[i % offs.length], lens, 32);
    best[k] = Math.min(best[k], Number(process.hrtime.bigint() - t0) / BURSTS / 32);
  });
}
// Every flow of the cycling case must have matched frames: the figure is of hits.
CASES.forEach((c, k) => {
  if (!c.cycle) return;
  const idle = engines[k].dumpFlows().filter((f) => f.packets === 0).length;
  if (idle > 0) throw new Error(`${c.name}: ${idle} flows matched no frame`);
});
for (const e of engines) e.close();
if (counted !== 2 * ROUNDS * BURSTS * 32) throw new Error(`the handlers counted ${counted} frames, not ${2 * ROUNDS * BURSTS * 32}`);
console.log(`${'case'.padEnd(52)} ns/frame  x plain`);
CASES.forEach((c, k) => console.log(`${c.name.padEnd(52)} ${best[k].toFixed(1).padStart(8)}  ${(best[0] / best[k]).toFixed(2).padStart(7)}`));

// Connection churn: 6 flows per connection (each direction: its data, +fin, +rst).
const churn = new SwitchEngine(32, 1e9);
churn.addPort(1, 'a', { mode: 'access', vid: 1 }, new Float64Array(PortCounter.WORDS));
churn.addPort(2, 'b', { mode: 'access', vid: 1 }, new Float64Array(PortCounter.WORDS));
const connFlows = (c: number) => {
  const [x, y] = [`10.3.${c >> 8}.${c & 255}`, '10.1.0.1'];
  const flows: string[] = [];
  for (const [src, sp, dst, dp] of [
    [x, 40000, y, 80],
    [y, 80, x, 40000],
  ] as const) {
    const m = `tcp,nw_src=${src},tp_src=${sp},nw_dst=${dst},tp_dst=${dp}`;
    flows.push(`priority=300,${m}`, `priority=310,${m},tcp_flags=+fin`, `priority=310,${m},tcp_flags=+rst`);
  }
  return flows;
};
const BACKGROUND = 1667; // connections: 10,002 flows
for (let c = 0; c < BACKGROUND; c++) for (const f of connFlows(60_000 + c)) churn.addFlow(parseFlow(`${f},actions=NORMAL`, ports));
const CHURN = Number(values.churn);
const specs = Array.from({ length: CHURN }, (_, c) => connFlows(c).map((f) => ({ add: parseFlow(`${f},actions=NORMAL`, ports), del: parseFlow(f, ports, true) })));
let bestChurn = Infinity;
for (let r = 0; r < 3; r++) {
  const t0 = process.hrtime.bigint();
  for (const conn of specs) {
    for (const s of conn) churn.addFlow(s.add);
    churn.inject(1, one, sameOffsets[0], lens, 1);
    for (const s of conn) if (churn.removeFlows(s.del.words, true, s.del) !== 1) throw new Error(`${s.del.match}: not removed`);
  }
  bestChurn = Math.min(bestChurn, Number(process.hrtime.bigint() - t0) / 1000 / CHURN);
}
if (churn.dumpFlows().length !== 6 * BACKGROUND) throw new Error(`churn: ${churn.dumpFlows().length} flows left`);
churn.close();
console.log(`connection churn (6 flows added, a burst, 6 removed; ${6 * BACKGROUND} other flows): ${bestChurn.toFixed(1)} µs a connection`);
