// A switch with several data-plane threads, driven by our frontend: ports assigned to the
// thread with the fewest (and a port added after one left takes its place), frames that
// cross threads arrive all and in order per flow (through rings that wrap many times), flows
// apply on every thread and expire when idle on all, and what needs one thread says so.
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import { ethFrame } from '../../src/virtio/net-frames.js';
import { SwitchRig, until } from './rig.js';
import type { PollMode } from '../../src/dataplane/poller.js';

const MAC = (i: number) => `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`;
const BCAST = 'ff:ff:ff:ff:ff:ff';

/** Which thread serves which port's queues. */
async function owners(sw: Switch): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of await sw.dataplane.threads()) for (const q of t.queues) out[q.port] = t.thread;
  return out;
}

for (const poll of ['event', 'busy'] as PollMode[]) {
  describe(`switch with two data-plane threads (poll ${poll})`, function () {
    this.timeout(60_000);
    const rig = new SwitchRig('vk-sw-threads-', poll, { threads: 2 });
    beforeEach(() => rig.setUp());
    afterEach(() => rig.tearDown());

    /**
     * a, b, c attached (a and c on thread 0, b on thread 1), `before` run, then b's and c's
     * guests leave (thread 0 serves a, thread 1 nothing) and c's next guest connects.
     */
    async function twoLeaveOneReturns(before: () => Promise<void> = () => Promise.resolve()) {
      const [a, b, c] = [await rig.attach('a', false), await rig.attach('b', false), await rig.attach('c', false)];
      expect(await owners(rig.sw)).to.deep.equal({ a: 0, b: 1, c: 0 });
      await before();
      for (const [g, n] of [
        [b, 'b'],
        [c, 'c'],
      ] as const) {
        const old = rig.sw.backend(n).session;
        rig.close(g);
        await until(() => rig.sw.backend(n).session !== old, `${n}'s session gone`);
      }
      const c2 = await rig.reconnect('c', true);
      await rig.sw.backend('c').nextSession();
      await rig.served('c');
      return { a, c2 };
    }

    it('assigns each port to the thread with the fewest, and a new port to the one a port left', async () => {
      for (const n of ['a', 'b', 'c']) await rig.attach(n, false);
      expect(await owners(rig.sw)).to.deep.equal({ a: 0, b: 1, c: 0 });
      const threads = await rig.sw.dataplane.threads();
      expect(threads.map((t) => t.thread)).to.deep.equal([0, 1]);
      // ctl queues shows the same, per queue
      expect((await rig.sw.dataplane.queueStats()).map((q) => `${q.port}${q.index}@${q.thread}`)).to.deep.equal(['a0@0', 'a1@0', 'b0@1', 'b1@1', 'c0@0', 'c1@0']);
      await rig.sw.removePort('a');
      await rig.attach('d', true);
      expect(await owners(rig.sw), 'd took the place a left on thread 0').to.deep.equal({ b: 1, c: 0, d: 0 });
      await rig.attach('e', false);
      expect((await owners(rig.sw)).e, 'thread 1 has fewer now').to.equal(1);
    });

    it("moves a port to the thread with the fewest ports in use when its guest's next session starts", async () => {
      const { a, c2 } = await twoLeaveOneReturns();
      expect(await owners(rig.sw), 'c went to the idle thread').to.deep.equal({ a: 0, c: 1 });
      c2.send([ethFrame(BCAST, MAC(3), 60, 1)]);
      expect((await a.receive(1)).length).to.equal(1);
      a.send([ethFrame(MAC(3), MAC(1), 60, 2)]);
      expect((await c2.receive(1)).length, 'a reaches c on its new thread').to.equal(1);
    });

    it("keeps a captured port on its thread across its guest's next session, and captures there", async () => {
      let packets = 0;
      let done = false;
      // Thread 1 goes idle, but c is captured: it stays, even while its release is under way.
      const { a, c2 } = await twoLeaveOneReturns(() =>
        rig.sw.startCapture('c', {}, (_records, n, last) => {
          packets += n;
          if (last) done = true;
        }),
      );
      expect(await owners(rig.sw), 'c stayed on thread 0').to.deep.equal({ a: 0, c: 0 });
      a.send([ethFrame(BCAST, MAC(1), 60, 1)]);
      expect((await c2.receive(1)).length).to.equal(1);
      await until(() => packets >= 1, 'the frame captured on c');
      await rig.sw.stopCapture('c');
      await until(() => done, 'capture done');
    });

    it('delivers every frame across threads, in order per flow, through rings that wrap', async () => {
      // a, c on thread 0; b, d on thread 1. a and b each send to c and d in turn: a->d and
      // b->c cross threads, a->c and b->d do not.
      const [a, b, c, d] = [await rig.attach('a', false), await rig.attach('b', true), await rig.attach('c', true), await rig.attach('d', false)];
      expect(await owners(rig.sw)).to.deep.equal({ a: 0, b: 1, c: 0, d: 1 });
      const senders = [
        { g: a, mac: MAC(1) },
        { g: b, mac: MAC(2) },
      ];
      const receivers = [
        { g: c, mac: MAC(3), got: new Map<string, number[]>() },
        { g: d, mac: MAC(4), got: new Map<string, number[]>() },
      ];
      // The receivers make themselves known (learned on their ports), then everything is unicast.
      for (const r of receivers) {
        r.g.send([ethFrame(BCAST, r.mac, 60, 0)]);
        for (const o of [a, b, ...receivers.map((x) => x.g).filter((g) => g !== r.g)]) expect((await o.receive(1)).length).to.equal(1);
      }
      const perSender = 2500;
      const window = 8; // frames each sender has out to each receiver at a time
      let bytes = 0;
      for (let at = 0; at < perSender; at += 2 * window) {
        let want = 0;
        for (const s of senders) {
          const frames: Uint8Array[] = [];
          for (let i = at; i < Math.min(perSender, at + 2 * window); i++) {
            const len = 60 + ((i * 997) % 7900);
            bytes += len;
            frames.push(ethFrame(receivers[i % 2].mac, s.mac, len, i));
          }
          expect(s.g.send(frames), 'the sender had room').to.equal(frames.length);
          want += frames.length;
        }
        let got = 0;
        const end = Date.now() + 5000;
        while (got < want) {
          for (const r of receivers) {
            for (const x of await r.g.receive(0, 0)) {
              const src = Buffer.from(x.frame.subarray(6, 12)).toString('hex');
              const seq = new DataView(x.frame.buffer, x.frame.byteOffset).getUint32(14);
              expect(x.frame.length, `frame ${seq} from ${src} arrived whole`).to.equal(60 + ((seq * 997) % 7900));
              r.got.set(src, [...(r.got.get(src) ?? []), seq]);
              got++;
            }
          }
          if (Date.now() > end) throw new Error(`got ${got} of ${want} frames of round ${at}; counters: ${JSON.stringify(rig.sw.list().map((p) => [p.name, p.counters]))}`);
          await new Promise((r) => setImmediate(r));
        }
      }
      for (const [k, r] of receivers.entries()) {
        for (const s of senders) {
          const seqs = r.got.get(s.mac.replaceAll(':', '')) ?? [];
          const expected = Array.from({ length: perSender }, (_, i) => i).filter((i) => i % 2 === k);
          expect(seqs, `${s.mac} to ${r.mac}: all, in order`).to.deep.equal(expected);
        }
      }
      // Four streams of about the same bytes, two of them crossing: each more than a ring.
      expect(bytes / 4, 'more than a ring of bytes crossed each way').to.be.greaterThan(4 << 20);
      for (const p of rig.sw.list()) {
        expect(p.counters.drop_no_buffers, `${p.name} dropped nothing`).to.equal(0);
        expect(p.counters.queue_errors).to.equal(0);
      }
      expect(rig.sw.counters('c').tx_packets).to.equal(perSender + 1);
      expect(rig.sw.counters('a').rx_packets).to.equal(perSender);
    });

    it('applies flows on every thread, counts them as one, and expires them when idle on all', async () => {
      const [a, b, c] = [await rig.attach('a', false), await rig.attach('b', false), await rig.attach('c', false)];
      expect(await owners(rig.sw)).to.deep.equal({ a: 0, b: 1, c: 0 });
      // b (thread 1) to c only, a (thread 0) to b only: both flows are on both threads.
      await rig.sw.addFlow('priority=10,in_port=b,actions=output:c');
      await rig.sw.addFlow('priority=10,idle_timeout=1,in_port=a,actions=output:b');
      b.send([ethFrame(BCAST, MAC(2), 60, 1), ethFrame(BCAST, MAC(2), 60, 2)]);
      expect((await c.receive(2)).length).to.equal(2);
      expect(await a.receive(1, 200), 'the flow sent b only to c').to.deep.equal([]);
      a.send([ethFrame(BCAST, MAC(1), 60, 3)]);
      expect((await b.receive(1)).length).to.equal(1);
      expect(await c.receive(1, 200)).to.deep.equal([]);
      const flows = await rig.sw.dumpFlows();
      expect(flows.map((f) => [f.match, f.packets])).to.deep.equal([
        ['in_port=b', 2],
        ['in_port=a', 1],
      ]);
      // Idle for a second on both threads: gone from both (a's frames flood again).
      const end = Date.now() + 5000;
      while ((await rig.sw.dumpFlows()).length > 1) {
        if (Date.now() > end) throw new Error('the idle flow was not expired');
        await new Promise((r) => setTimeout(r, 100));
      }
      a.send([ethFrame(BCAST, MAC(1), 60, 4)]);
      expect((await b.receive(1)).length).to.equal(1);
      expect((await c.receive(1)).length, 'flooded: the flow is gone on thread 0 too').to.equal(1);
    });

    it('refuses packet handlers, which need one thread, with a clear error', async () => {
      let err: unknown;
      try {
        await rig.sw.addHandler('h', { module: '/nonexistent/handler.js' });
      } catch (e) {
        err = e;
      }
      expect(String(err)).to.match(/one data-plane thread/);
    });
  });
}

describe('switch with several data-plane threads: options', () => {
  it('refuses a hook, and threads on the inline data plane', async () => {
    let err: unknown;
    try {
      await Switch.create({ dataplane: 'inline', threads: 2 });
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/worker data plane/);
    err = undefined;
    try {
      await Switch.create({ threads: 2, hook: { module: '/nonexistent.js' } });
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/one data-plane thread/);
  });

  it('runs one thread per CPU of cpus', async function () {
    this.timeout(20_000);
    const sw = await Switch.create({ cpus: [0, 1] });
    try {
      const t = await sw.dataplane.threads();
      expect(t.map((x) => [x.thread, x.cpus])).to.deep.equal([
        [0, [0]],
        [1, [1]],
      ]);
    } finally {
      await sw.close();
    }
  });
});
