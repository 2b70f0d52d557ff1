// The switch's per-frame cost of the flow table and of packet handlers, on the data-plane
// code alone (no guest rings): 64-byte TCP frames switched from a host buffer
// (SwitchEngine.inject, the path of TAP and VXLAN reads), in rounds of 32-frame bursts,
// against the plain learning switch measured in the same run:
//
//   node dist/bench/flow-micro.js [--rounds 8] [--bursts 50000]
//
// Cases: 1,000 5-tuple flows none of which matches the frames (a full probe: the worst
// lookup), the same with one that matches all of them (actions=NORMAL), a flow sending
// every frame to a handler that only counts them, and that with NORMAL as well. Prints the
// best round of each in ns per frame and as a ratio of the plain switch's rate.
import { parseArgs } from 'node:util';
import { SwitchEngine } from '../src/switch/engine.js';
import { parseFlow } from '../src/switch/flows.js';
import { PortCounter } from '../src/native/switch.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '8' }, bursts: { type: 'string', default: '50000' } } });
const ROUNDS = Number(values.rounds);
const BURSTS = Number(values.bursts);

// 32 frames of one TCP connection, 10.9.9.9:12345 -> 10.1.0.1:80.
const data = new Uint8Array(32 * 64);
const offsets = Uint32Array.from({ length: 32 }, (_, i) => i * 64);
const lens = new Uint32Array(32).fill(64);
for (const o of offsets) data.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0, 0x45, 0, 0, 50, 0, 0, 0, 0, 64, 6, 0, 0, 10, 9, 9, 9, 10, 1, 0, 1, 0x30, 0x39, 0, 80], o);

interface Case {
  name: string;
  setup(e: SwitchEngine): void;
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
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < BURSTS; i++) e.inject(1, data, offsets, lens, 32);
    best[k] = Math.min(best[k], Number(process.hrtime.bigint() - t0) / BURSTS / 32);
  });
}
for (const e of engines) e.close();
if (counted !== 2 * ROUNDS * BURSTS * 32) throw new Error(`the handlers counted ${counted} frames, not ${2 * ROUNDS * BURSTS * 32}`);
console.log(`${'case'.padEnd(46)} ns/frame  x plain`);
CASES.forEach((c, k) => console.log(`${c.name.padEnd(46)} ${best[k].toFixed(1).padStart(8)}  ${(best[0] / best[k]).toFixed(2).padStart(7)}`));
