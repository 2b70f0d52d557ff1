// The forwarding database on its own (native: switch_fdb.cc): learning, moves, aging,
// flushing, the table's growth and deletions, and the per-burst classification.
import { expect } from 'chai';
import fc from 'fast-check';
import { CLASSIFY_COUNTS, CLASSIFY_DROP, CLASSIFY_FLOOD, ClassifyCount, Fdb, macFromString, macToString } from '../../src/switch/fdb.js';
import { portWords } from '../../src/switch/ports.js';
import { CaptureWord, PortCounter, PortKind, PortWord, QueueStat, nativeForwarder } from '../../src/native/switch.js';
import { fcParams } from '../lib/fuzz-runs.js';

const A = macFromString('02:00:00:00:00:0a');
const B = macFromString('02:00:00:00:00:0b');

// Addresses as offsets from a base drawn once per run (so that operations meet on them).
const macs = fc.integer({ min: 0, max: 700 });

describe('Fdb', () => {
  it('learns, moves and refreshes an address; a repeated learn of the same address is not news', () => {
    const f = new Fdb(1000);
    expect(f.learn(A, 1, 3, 0)).to.equal(true);
    expect(f.learn(A, 1, 3, 10)).to.equal(false);
    expect(f.lookup(A, 1, 10)).to.equal(3);
    expect(f.lookup(A, 2, 10), 'another VLAN').to.equal(-1);
    expect(f.learn(A, 1, 4, 20), 'a move').to.equal(true);
    expect(f.lookup(A, 1, 20)).to.equal(4);
    expect(f.stats).to.deep.include({ learned: 1, moved: 1 });
    expect(f.lookup(A, 1, 1020), 'refreshed at 20').to.equal(4);
    expect(f.lookup(A, 1, 1021), 'older than the aging time').to.equal(-1);
  });

  it('forgets what flushPort and age remove, even right after a lookup found it', () => {
    const f = new Fdb(1000);
    f.learn(A, 1, 3, 0);
    f.learn(B, 1, 5, 0);
    expect(f.lookup(A, 1, 0)).to.equal(3);
    expect(f.flushPort(3)).to.equal(1);
    expect(f.lookup(A, 1, 0)).to.equal(-1);
    expect(f.learn(A, 1, 3, 0), 'learnt again after the flush').to.equal(true);
    expect(f.size).to.equal(2);
    f.learn(B, 1, 5, 500);
    expect(f.lookup(A, 1, 600)).to.equal(3);
    expect(f.age(1200)).to.equal(1);
    expect(f.lookup(A, 1, 600), 'aged out').to.equal(-1);
    expect(f.learn(A, 1, 3, 1200)).to.equal(true);
    expect(
      f
        .dump(1200)
        .map((e) => e.mac)
        .sort(),
    ).to.deep.equal([macToString(A), macToString(B)]);
  });

  it('refuses to learn past maxEntries, and counts it', () => {
    const f = new Fdb(1000, 3);
    for (let m = 0; m < 3; m++) expect(f.learn(m, 1, 1, 0)).to.equal(true);
    expect(f.learn(9, 1, 1, 0)).to.equal(false);
    expect(f.lookup(9, 1, 0)).to.equal(-1);
    expect(f.learn(0, 1, 2, 0), 'a move is not a new entry').to.equal(true);
    expect(f.size).to.equal(3);
    expect(f.stats.full).to.equal(1);
    expect(f.flushPort(1)).to.equal(2);
    expect(f.learn(9, 1, 1, 0)).to.equal(true);
  });

  it('refuses MACs, VLANs and ports out of range with a clear error', () => {
    const f = new Fdb(1000);
    expect(() => f.learn(2 ** 48, 1, 1, 0)).to.throw(RangeError, /mac/);
    expect(() => f.learn(1.5, 1, 1, 0)).to.throw(RangeError, /mac/);
    expect(() => f.learn(1, 70000, 1, 0)).to.throw(RangeError, /vlan/);
    expect(() => f.learn(1, 1, -1, 0)).to.throw(RangeError, /port/);
    expect(f.size).to.equal(0);
  });

  it('property: answers as a plain map of (VLAN, MAC) to (port, last seen) does, whatever the order of operations', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('learn' as const), mac: macs, vlan: fc.integer({ min: 1, max: 2 }), port: fc.integer({ min: 0, max: 2 }), dt: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ k: fc.constant('learn-many' as const), first: macs, count: fc.integer({ min: 1, max: 600 }), port: fc.integer({ min: 0, max: 2 }), dt: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ k: fc.constant('lookup' as const), mac: macs, vlan: fc.integer({ min: 1, max: 2 }), dt: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ k: fc.constant('flush' as const), port: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ k: fc.constant('age' as const), dt: fc.integer({ min: 0, max: 400 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 2000 }), fc.array(op, { maxLength: 60 }), (base, ops) => {
        const f = new Fdb(1000);
        const model = new Map<string, { port: number; seen: number }>();
        let now = 0;
        for (const o of ops) {
          if (o.k === 'learn-many') {
            // Enough addresses to make the table grow, and probe runs long enough that
            // deletions must shift entries back.
            now += o.dt;
            for (let m = o.first; m < o.first + o.count; m++) {
              const key = `1/${m}`;
              const e = model.get(key);
              model.set(key, { port: o.port, seen: now });
              expect(f.learn(base + m, 1, o.port, now)).to.equal(e === undefined || e.port !== o.port);
            }
          } else if (o.k === 'learn') {
            now += o.dt;
            const key = `${o.vlan}/${o.mac}`;
            const e = model.get(key);
            const news = e === undefined || e.port !== o.port;
            model.set(key, { port: o.port, seen: now });
            expect(f.learn(base + o.mac, o.vlan, o.port, now)).to.equal(news);
          } else if (o.k === 'lookup') {
            now += o.dt;
            const e = model.get(`${o.vlan}/${o.mac}`);
            expect(f.lookup(base + o.mac, o.vlan, now)).to.equal(e === undefined || now - e.seen > 1000 ? -1 : e.port);
          } else if (o.k === 'flush') {
            let n = 0;
            for (const [k, e] of model) {
              if (e.port !== o.port) continue;
              model.delete(k);
              n++;
            }
            expect(f.flushPort(o.port)).to.equal(n);
          } else {
            now += o.dt;
            let n = 0;
            for (const [k, e] of model) {
              if (now - e.seen <= 1000) continue;
              model.delete(k);
              n++;
            }
            expect(f.age(now)).to.equal(n);
          }
          expect(f.size).to.equal(model.size);
        }
        const live = [...model]
          .filter(([, e]) => now - e.seen <= 1000)
          .map(([k, e]) => `${k}@${e.port}`)
          .sort();
        const dumped = f
          .dump(now)
          .map((e) => `${e.vlan}/${macFromString(e.mac) - base}@${e.port}`)
          .sort();
        expect(dumped).to.deep.equal(live);
      }),
      fcParams(300),
    );
  });
});

// Frames for classify: destination, source, an optional 802.1Q tag, an EtherType.
function eth(dst: number, src: number, tci?: number, len = 64): Uint8Array {
  const f = new Uint8Array(len);
  const put = (at: number, m: number) => {
    for (let k = 5; k >= 0; k--) {
      f[at + k] = m % 256;
      m = Math.floor(m / 256);
    }
  };
  if (len >= 6) put(0, dst);
  if (len >= 12) put(6, src);
  if (tci !== undefined) f.set([0x81, 0x00, tci >> 8, tci & 0xff].slice(0, len - 12), 12);
  return f;
}

function access(vid: number): Int32Array {
  return portWords({ mode: 'access', vid });
}

function trunk(allowed: number[] | null, native: number): Int32Array {
  return portWords({ mode: 'trunk', ...(allowed ? { allowed } : {}), native });
}

const BURST = 8;
const HEAD = 64;

/** Classifies frames as the engine does (heads at a stride of 64, zero-padded). */
function classify(f: Fdb, port: number, ingress: Int32Array, frames: Uint8Array[], now = 0, verdict: Int32Array | null = null) {
  const heads = new Uint8Array(BURST * HEAD);
  const lens = new Uint32Array(BURST);
  frames.forEach((fr, i) => {
    heads.set(fr.subarray(0, HEAD), i * HEAD);
    lens[i] = fr.length;
  });
  const out = new Int32Array(3 * BURST + CLASSIFY_COUNTS);
  const bytes = f.classify(port, ingress, heads, null, HEAD, HEAD, lens, frames.length, now, verdict, out);
  const c = out.subarray(3 * BURST);
  return {
    bytes,
    dest: [...out.subarray(0, frames.length)],
    vid: [...out.subarray(BURST, BURST + frames.length)],
    tagged: [...out.subarray(2 * BURST, 2 * BURST + frames.length)],
    bad: c[ClassifyCount.BAD],
    hook: c[ClassifyCount.HOOK],
    vlan: c[ClassifyCount.VLAN],
    flooded: c[ClassifyCount.FLOODED],
  };
}

describe('Fdb.classify (a burst in one call)', () => {
  const BCAST = 2 ** 48 - 1;

  it('access port: learns sources, floods unknown and group destinations, forwards known ones, drops tagged and short frames', () => {
    const f = new Fdb(1000);
    const r1 = classify(f, 1, access(7), [eth(B, A), eth(BCAST, A), eth(A, B, 7), eth(A, B, undefined, 13)]);
    expect(r1.dest).to.deep.equal([CLASSIFY_FLOOD, CLASSIFY_FLOOD, CLASSIFY_DROP, CLASSIFY_DROP]);
    expect(r1.vid.slice(0, 2)).to.deep.equal([7, 7]);
    expect(r1.tagged.slice(0, 2)).to.deep.equal([0, 0]);
    expect([r1.bad, r1.vlan, r1.flooded, r1.hook]).to.deep.equal([1, 1, 2, 0]);
    expect(r1.bytes).to.equal(64 * 3 + 13);
    expect(f.lookup(A, 7, 0), 'source learned on port 1 in VLAN 7').to.equal(1);
    expect(f.lookup(B, 7, 0), 'nothing learned from dropped frames').to.equal(-1);
    const r2 = classify(f, 2, access(7), [eth(A, B), eth(A, B), eth(macFromString('01:00:5e:00:00:01'), B)], 10);
    expect(r2.dest).to.deep.equal([1, 1, CLASSIFY_FLOOD]);
    expect(f.lookup(B, 7, 10)).to.equal(2);
    const r3 = classify(f, 3, access(8), [eth(A, B)], 20);
    expect(r3.dest, 'A is not known in VLAN 8').to.deep.equal([CLASSIFY_FLOOD]);
    expect(classify(f, 2, access(7), [eth(A, B)], 2000).dest, 'aged out').to.deep.equal([CLASSIFY_FLOOD]);
  });

  it('trunk port: tagged frames of allowed VLANs, untagged ones on the native VLAN, the rest dropped', () => {
    const f = new Fdb(1000);
    const r = classify(f, 4, trunk([10, 20], 5), [eth(B, A, 10), eth(B, A, 0x2000 | 20), eth(B, A, 30), eth(B, A), eth(B, A, 10, 15)]);
    expect(r.dest).to.deep.equal([CLASSIFY_FLOOD, CLASSIFY_FLOOD, CLASSIFY_DROP, CLASSIFY_FLOOD, CLASSIFY_DROP]);
    expect(r.vid.slice(0, 2)).to.deep.equal([10, 20]);
    expect(r.vid[3]).to.equal(5);
    expect(r.tagged.slice(0, 4)).to.deep.equal([1, 1, 0, 0]);
    expect([r.vlan, r.bad, r.flooded]).to.deep.equal([1, 1, 3]);
    expect(f.lookup(A, 10, 0)).to.equal(4);
    expect(f.lookup(A, 5, 0)).to.equal(4);
    expect(f.lookup(A, 30, 0)).to.equal(-1);
    const none = classify(f, 4, trunk(null, -1), [eth(B, A), eth(B, A, 4000)]);
    expect(none.dest[0], 'untagged, no native VLAN').to.equal(CLASSIFY_DROP);
    expect(none.vid[1], 'every VLAN allowed').to.equal(4000);
    expect(none.vlan).to.equal(1);
  });

  it("follows the hook's verdicts: a drop is counted, a port overrides the lookup, and sources are still learned", () => {
    const f = new Fdb(1000);
    f.learn(B, 7, 2, 0);
    const verdict = Int32Array.from([-2, 9, -1, 0, 0, 0, 0, 0]);
    const r = classify(f, 1, access(7), [eth(B, A), eth(B, A), eth(B, A)], 0, verdict);
    expect(r.dest).to.deep.equal([CLASSIFY_DROP, 9, 2]);
    expect([r.hook, r.flooded]).to.deep.equal([1, 0]);
    expect(f.lookup(A, 7, 0)).to.equal(1);
  });

  it('sees a move within one burst: a destination learned on another port by an earlier frame', () => {
    const f = new Fdb(1000);
    f.learn(B, 7, 2, 0);
    const C = macFromString('02:00:00:00:00:0c');
    // The first frame looks B up (port 2); the second comes from B on port 3 (a move) and
    // goes to B: the lookup remembered from the first frame must not answer.
    const r = classify(f, 3, access(7), [eth(B, C), eth(B, B)]);
    expect(r.dest).to.deep.equal([2, 3]);
  });

  it('reads frames at offsets in a host buffer, and refuses heads that would be read out of bounds', () => {
    const f = new Fdb(1000);
    const data = new Uint8Array(200);
    data.set(eth(B, A, undefined, 60), 10);
    data.set(eth(A, B, undefined, 60), 120);
    const out = new Int32Array(3 * BURST + CLASSIFY_COUNTS);
    const lens = Uint32Array.of(60, 60);
    expect(f.classify(1, access(1), data, Uint32Array.of(10, 120), 0, 0xffffffff, lens, 2, 0, null, out)).to.equal(120);
    expect([...out.subarray(0, 2)]).to.deep.equal([CLASSIFY_FLOOD, 1]);
    expect(() => f.classify(1, access(1), data, Uint32Array.of(10, 190), 0, 0xffffffff, lens, 2, 0, null, out)).to.throw(RangeError, /outside heads/);
    expect(() => f.classify(1, access(1), data, null, 64, 64, new Uint32Array(4), 4, 0, null, out)).to.throw(RangeError, /heads too short/);
    expect(() => f.classify(1, access(1), data, null, 64, 65, lens, 2, 0, null, out)).to.throw(RangeError, /cap/);
    expect(() => f.classify(1, access(1), new Uint8Array(BURST * 64 * 2), null, 64, 64, new Uint32Array(16), 9, 0, null, out)).to.throw(RangeError, /out holds/);
    expect(() => f.classify(1, new Int32Array(4), data, null, 64, 64, lens, 2, 0, null, out)).to.throw(RangeError, /port words/);
  });
});

describe('Forwarder (the data path over the table): its arguments', () => {
  const counters = () => new Float64Array(PortCounter.WORDS);
  const none = new Uint32Array(0);
  const noStats = new Float64Array(0);

  it('refuses bad port words, arrays too short, a host port without its fd or with queues, and calls on unknown ports', () => {
    const f = new Fdb(1000);
    const events = new Int32Array(2 + 3 * 4);
    expect(() => nativeForwarder({} as never, 4, events)).to.throw(TypeError, /SwitchFdb/);
    const fwd = nativeForwarder(f.t, 4, events);
    const w = portWords({ mode: 'access', vid: 1 });
    expect(() => fwd.setPort(1, new Int32Array(4), counters(), none, noStats, null, null, null)).to.throw(RangeError, /port words/);
    expect(() => fwd.setPort(1, Int32Array.from(w).fill(11, PortWord.HDR_LEN, PortWord.HDR_LEN + 1), counters(), none, noStats, null, null, null)).to.throw(/header length/);
    expect(() => fwd.setPort(1, Int32Array.from(w).fill(7, PortWord.KIND, PortWord.KIND + 1), counters(), none, noStats, null, null, null)).to.throw(/kind/);
    expect(() => fwd.setPort(1, w, new Float64Array(2), none, noStats, null, null, null)).to.throw(RangeError, /counters/);
    expect(() => fwd.setPort(1, w, counters(), Uint32Array.of(1, 2), new Float64Array(QueueStat.WORDS), null, null, null)).to.throw(RangeError, /rxStats/);
    const tap = Int32Array.from(w);
    tap[PortWord.KIND] = PortKind.TAP;
    expect(() => fwd.setPort(1, tap, counters(), none, noStats, null, null, null), 'no fd').to.throw(/needs its fd/);
    tap[PortWord.HOST_FD] = 0;
    expect(() => fwd.setPort(1, tap, counters(), Uint32Array.of(1), new Float64Array(QueueStat.WORDS), null, null, null)).to.throw(/no RX queues/);
    const vx = Int32Array.from(tap);
    vx[PortWord.KIND] = PortKind.VXLAN;
    expect(() => fwd.setPort(1, vx, counters(), none, noStats, new Uint8Array(3), null, null)).to.throw(/sockaddr/);
    expect(() => fwd.setPort(1, w, counters(), none, noStats, null, new Uint8Array(64), new Float64Array(1))).to.throw(RangeError, /captureState/);
    expect(() => fwd.setPort(1, w, counters(), Uint32Array.of(1, 2, 3, 4), new Float64Array(4 * QueueStat.WORDS), null, null, null), 'no room in events').to.throw(/events/);
    fwd.setPort(1, w, counters(), none, noStats, null, new Uint8Array(64), new Float64Array(CaptureWord.WORDS));
    expect(() => fwd.forward(0, 2, 0, 1000, new Float64Array(QueueStat.WORDS))).to.throw(/no such port/);
    expect(() => fwd.forward(1e9, 1, 0, 1000, new Float64Array(QueueStat.WORDS))).to.throw(/no live queue/);
    expect(() => fwd.serviceHost(1, 0, 1000)).to.throw(/not a host port/);
    const data = new Uint8Array(100);
    expect(() => fwd.forwardFlat(1, data, Uint32Array.of(50), Uint32Array.of(60), null, 1, 0, 1000)).to.throw(/outside data/);
    fwd.removePort(1);
    expect(() => fwd.forwardFlat(1, data, Uint32Array.of(0), Uint32Array.of(60), null, 1, 0, 1000)).to.throw(/no such port/);
  });

  it('switches frames held in a buffer: learns, floods to the other ports, counts; a port with no queue counts a drop', () => {
    const f = new Fdb(1000);
    const fwd = nativeForwarder(f.t, 8, new Int32Array(64));
    const c1 = counters();
    const c2 = counters();
    const cap = new Uint8Array(4096);
    const state = new Float64Array(CaptureWord.WORDS);
    state[CaptureWord.SNAPLEN] = 20;
    state[CaptureWord.LIMIT] = 0;
    fwd.setPort(1, portWords({ mode: 'access', vid: 1 }), c1, none, noStats, null, cap, state);
    fwd.setPort(2, portWords({ mode: 'access', vid: 1 }), c2, none, noStats, null, null, null);
    fwd.setPort(3, portWords({ mode: 'access', vid: 9 }), counters(), none, noStats, null, null, null);
    const frame = eth(B, A, undefined, 60);
    fwd.forwardFlat(1, frame, Uint32Array.of(0), Uint32Array.of(60), null, 1, 0, 1000);
    expect(f.lookup(A, 1, 0), 'source learned').to.equal(1);
    expect([c1[PortCounter.RX_PACKETS], c1[PortCounter.RX_BYTES], c1[PortCounter.FLOODED]]).to.deep.equal([1, 60, 1]);
    expect(c2[PortCounter.DROP_NO_QUEUE], 'port 2 (same VLAN) has no queue').to.equal(1);
    // The capture of port 1 staged one record cut at the snaplen.
    expect([state[CaptureWord.AT], state[CaptureWord.PENDING], state[CaptureWord.PACKETS]]).to.deep.equal([16 + 20, 1, 1]);
    const rec = new DataView(cap.buffer);
    expect([rec.getUint32(8, true), rec.getUint32(12, true)]).to.deep.equal([20, 60]);
    expect([...cap.subarray(16, 36)]).to.deep.equal([...frame.subarray(0, 20)]);
  });
});
