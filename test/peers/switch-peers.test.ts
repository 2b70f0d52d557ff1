// dpdk-testpmd virtio-user frontends on two switch ports: frames sent on one arrive on
// the other, with one data-plane thread or two (a on thread 0, b on thread 1: every frame
// crosses).
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { makeTempDir, startTestpmd } from '../lib/peers.js';
import { Switch } from '../../src/switch/switch.js';
import { setLogSink } from '../../src/log.js';
import type { PollMode } from '../../src/dataplane/poller.js';

describe('real peers: dpdk-testpmd virtio-user on two switch ports', function () {
  this.timeout(60000);

  const cases: Array<{ packed: boolean; poll: PollMode; threads: number }> = [
    { packed: false, poll: 'event', threads: 1 },
    { packed: true, poll: 'event', threads: 1 },
    { packed: false, poll: 'busy', threads: 1 },
    { packed: true, poll: 'adaptive', threads: 1 },
    { packed: false, poll: 'event', threads: 2 },
    { packed: true, poll: 'adaptive', threads: 2 },
  ];
  for (const { packed, poll, threads } of cases) {
    it(`txonly on one port reaches rxonly on the other (${packed ? 'packed' : 'split'} rings, poll ${poll}, ${threads} data-plane thread${threads > 1 ? 's' : ''})`, async () => {
      const old = setLogSink(() => undefined);
      const tmp = makeTempDir('vk-swpmd-');
      const sw = await Switch.create({ dataplane: 'worker', poll, threads });
      await sw.addVhostPort({ name: 'a', socket: tmp.join('a.sock') });
      await sw.addVhostPort({ name: 'b', socket: tmp.join('b.sock') });
      const rx = await startTestpmd({ role: 'virtio-user', socket: tmp.join('b.sock'), forwardMode: 'rxonly', cpu: 1, packed });
      const tx = await startTestpmd({ role: 'virtio-user', socket: tmp.join('a.sock'), forwardMode: 'txonly', txpkts: 64, cpu: 0, packed });
      try {
        const s = await rx.waitForStats((st) => (st.ports[0]?.rxPackets ?? 0) > 10000, 20000);
        expect(s.ports[0].rxPackets).to.be.greaterThan(10000);
        expect(sw.counters('a').rx_packets).to.be.greaterThan(10000);
        expect(sw.counters('b').tx_packets).to.be.greaterThan(10000);
        const layouts = sw
          .backend('a')
          .session!.queues()
          .map((q) => q.layout);
        expect(layouts[0]).to.equal(packed ? 'packed' : 'split');
        const served = await sw.dataplane.threads();
        expect(served.map((t) => [t.thread, t.queues.map((q) => `${q.port}${q.index}`)])).to.deep.equal(
          threads === 1
            ? [[0, ['a0', 'a1', 'b0', 'b1']]]
            : [
                [0, ['a0', 'a1']],
                [1, ['b0', 'b1']],
              ],
        );
        expect(sw.counters('a').queue_errors + sw.counters('b').queue_errors).to.equal(0);
      } finally {
        await tx.stop();
        await rx.stop();
        await sw.close();
        tmp.cleanup();
        setLogSink(old);
      }
    });
  }
});

// A multiqueue port on a switch with two threads: its queue pairs are spread over them, each
// thread delivers straight into the receiver's RX queues it serves, or hands frames to the
// receiver's owner when it serves none. dpdk-testpmd virtio-user with two queue pairs sends
// on both TX queues (txonly, one stream per queue).
describe('real peers: dpdk-testpmd virtio-user with two queue pairs on a switch with two threads', function () {
  this.timeout(90000);

  /** Which thread serves each queue, as `ctl queues` shows it: port + index @ thread. */
  async function placement(sw: Switch): Promise<string[]> {
    return (await sw.dataplane.queueStats()).map((q) => `${q.port}${q.index}@${q.thread}`);
  }

  for (const pairsB of [2, 1]) {
    it(`spreads the pairs over the threads; every queue carries, ${pairsB === 2 ? 'each thread delivering to the RX queue it serves' : "half of it handed to the receiver's owner"}`, async () => {
      const old = setLogSink(() => undefined);
      const tmp = makeTempDir('vk-swmq-');
      const sw = await Switch.create({ dataplane: 'worker', poll: 'event', threads: 2 });
      await sw.addVhostPort({ name: 'a', socket: tmp.join('a.sock'), queuePairs: 2 });
      await sw.addVhostPort({ name: 'b', socket: tmp.join('b.sock'), queuePairs: pairsB });
      const mq = (n: number) => ({ queues: n, extraArgs: [`--rxq=${n}`, `--txq=${n}`] });
      const rx = await startTestpmd({ role: 'virtio-user', socket: tmp.join('b.sock'), forwardMode: 'rxonly', cpu: 1, ...mq(pairsB) });
      let tx = await startTestpmd({ role: 'virtio-user', socket: tmp.join('a.sock'), forwardMode: 'txonly', txpkts: 64, cpu: 0, ...mq(2) });
      try {
        // b came first: its owner is thread 1 (a, idle, was on 0), its second pair went to
        // thread 0; then a's first pair stayed on 0 and its second went to thread 1.
        expect(await placement(sw)).to.deep.equal(pairsB === 2 ? ['a0@0', 'a1@0', 'a2@1', 'a3@1', 'b0@1', 'b1@1', 'b2@0', 'b3@0'] : ['a0@0', 'a1@0', 'a2@1', 'a3@1', 'b0@1', 'b1@1']);
        const s = await rx.waitForStats((st) => (st.ports[0]?.rxPackets ?? 0) > 20000, 30000);
        expect(s.ports[0].rxPackets).to.be.greaterThan(20000);
        const q = new Map((await sw.dataplane.queueStats()).map((x) => [`${x.port}${x.index}`, x]));
        for (const k of ['a1', 'a3']) expect(q.get(k)!.packets, `${k}: testpmd sent on this TX queue`).to.be.greaterThan(1000);
        for (const k of pairsB === 2 ? ['b0', 'b2'] : ['b0']) expect(q.get(k)!.packets, `${k}: frames delivered into this RX queue`).to.be.greaterThan(1000);
        expect(sw.counters('a').queue_errors + sw.counters('b').queue_errors).to.equal(0);

        // A capture of b gathers both threads' frames into one stream, cut at its count; the
        // next one starts as the first is done (a rotating capture), while the first's other
        // thread is still stopping: each gets its own records, exactly its count.
        const got = [0, 1].map(() => ({ packets: 0, bytes: 0, done: false }));
        const capture = (i: number) =>
          sw.startCapture('b', { count: 5000, snaplen: 128 }, (records, n, last) => {
            got[i].packets += n;
            got[i].bytes += records.length;
            if (last) {
              got[i].done = true;
              if (i === 0) void capture(1);
            }
          });
        await capture(0);
        const end = Date.now() + 20000;
        while (!got[1].done && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
        for (const g of got) {
          expect(g.done, 'the capture reached its count').to.equal(true);
          expect(g.packets).to.equal(5000);
          expect(g.bytes, '5000 records of 64-byte frames').to.equal(5000 * (16 + 64));
        }
        await new Promise((r) => setTimeout(r, 300));
        expect(got[1].packets, 'nothing came after done').to.equal(5000);
        // Both threads let both captures go: a third starts on both, and stops.
        let third = false;
        await sw.startCapture('b', { snaplen: 64 }, (_r, _n, last) => (third ||= last));
        await sw.stopCapture('b');
        const stopEnd = Date.now() + 5000;
        while (!third && Date.now() < stopEnd) await new Promise((r) => setTimeout(r, 20));
        expect(third, 'the third capture ended when stopped').to.equal(true);

        // a's guest leaves and comes back: its memory and queues are released on both
        // threads, and its pairs are given out again.
        await tx.stop();
        const until = Date.now() + 10000;
        while ((await placement(sw)).some((p) => p.startsWith('a')) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        expect(
          (await placement(sw)).filter((p) => p.startsWith('a')),
          "a's queues released on both threads",
        ).to.deep.equal([]);
        // Both threads took a's memory, and let it go: only b's testpmd's stays mapped.
        const mapped = () =>
          readFileSync('/proc/self/maps', 'utf8')
            .split('\n')
            .filter((l) => l.includes('/memfd:nohuge')).length;
        while (mapped() > 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        expect(mapped(), "a's guest memory unmapped").to.equal(1);
        // Every frame taken from a's queues on either thread reached b, or is counted where
        // it was lost (b's ring full; with one pair, also the ring to b's owner full).
        const accounted = () => {
          const b = sw.counters('b');
          return b.tx_packets + b.drop_no_buffers + b.drop_bad + b.drop_too_big + b.drop_no_queue;
        };
        const settle = Date.now() + 5000;
        while (accounted() !== sw.counters('a').rx_packets && Date.now() < settle) await new Promise((r) => setTimeout(r, 50));
        expect(accounted(), "a's frames, each delivered to b or counted dropped").to.equal(sw.counters('a').rx_packets);
        tx = await startTestpmd({ role: 'virtio-user', socket: tmp.join('a.sock'), forwardMode: 'txonly', txpkts: 64, cpu: 0, ...mq(2) });
        const before = rx.latestStats()!.ports[0].rxPackets;
        await rx.waitForStats((st) => (st.ports[0]?.rxPackets ?? 0) > before + 20000, 30000);
        expect((await placement(sw)).filter((p) => p.startsWith('a'))).to.deep.equal(['a0@0', 'a1@0', 'a2@1', 'a3@1']);
      } finally {
        await tx.stop();
        await rx.stop();
        await sw.close();
        tmp.cleanup();
        setLogSink(old);
      }
    });
  }
});
