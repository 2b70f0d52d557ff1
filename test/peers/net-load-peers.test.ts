// vhostkit net-load (sink and generator) against dpdk-testpmd's virtio-user frontend, in
// every poll mode: frames sent by testpmd are all taken, frames generated reach testpmd
// intact in length, and the device's counters agree with testpmd's.
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { expect } from 'chai';
import { makeTempDir, startTestpmd } from '../lib/peers.js';
import { NetLoadDevice } from '../../src/loadgen/net.js';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import type { PollMode } from '../../src/dataplane/poller.js';
import { setLogSink } from '../../src/log.js';

describe('real peers: vhostkit net-load with dpdk-testpmd virtio-user', function () {
  this.timeout(60000);

  const cases: Array<{ poll: PollMode; packed: boolean; gen: boolean }> = [
    { poll: 'busy', packed: false, gen: false },
    { poll: 'event', packed: false, gen: false },
    { poll: 'adaptive', packed: true, gen: false },
    { poll: 'busy', packed: true, gen: true },
    { poll: 'adaptive', packed: false, gen: true },
  ];
  for (const c of cases) {
    const what = c.gen ? 'generator -> testpmd rxonly' : 'testpmd txonly -> sink';
    it(`${what}, ${c.packed ? 'packed' : 'split'} ring, poll ${c.poll}`, async () => {
      const old = setLogSink(() => undefined);
      const tmp = makeTempDir('vk-netload-');
      const dev = await NetLoadDevice.create({ generate: c.gen, frameBytes: 128, poll: c.poll });
      const be = new VhostUserBackend(dev, { socket: tmp.join('p.sock') });
      await be.start();
      const pmd = await startTestpmd({ role: 'virtio-user', socket: tmp.join('p.sock'), forwardMode: c.gen ? 'rxonly' : 'txonly', txpkts: 128, cpu: 1, packed: c.packed });
      try {
        if (c.gen) {
          const s = await pmd.waitForStats((st) => (st.ports[0]?.rxPackets ?? 0) > 100000, 20000);
          // testpmd reads its packet and byte counters while the forwarding lcore adds to
          // them, so at 10+ Mpps a snapshot's bytes may count a few more frames than its
          // packets (seen: 5 to 23 frames of skew in 30 M). Every frame is 128 bytes, so
          // the difference must be a whole number of frames, and small; a frame of any other
          // length (a 12-byte header too many, two buffers merged) would break the first.
          const extra = s.ports[0].rxBytes - 128 * s.ports[0].rxPackets;
          expect(extra % 128, `bytes beyond ${s.ports[0].rxPackets} frames of 128: ${extra}`).to.equal(0);
          expect(Math.abs(extra / 128), 'counter skew in frames').to.be.at.most(1024);
          expect(dev.counters.txPackets).to.be.at.least(s.ports[0].rxPackets);
        } else {
          const s = await pmd.waitForStats((st) => (st.ports[0]?.txPackets ?? 0) > 100000, 20000);
          // Every frame testpmd managed to send was taken (allow the ring's worth in flight).
          expect(dev.counters.rxPackets).to.be.at.least(s.ports[0].txPackets - 1024);
          expect(dev.counters.rxBytes / dev.counters.rxPackets, 'bytes per frame').to.equal(128);
        }
        const layouts = be.session!.queues().map((q) => q.layout);
        expect(layouts[0]).to.equal(c.packed ? 'packed' : 'split');
      } finally {
        await pmd.stop();
        await be.stop();
        await dev.close();
        tmp.cleanup();
        setLogSink(old);
      }
    });
  }

  it('2 queue pairs on 2 pinned data-plane threads: each thread serves its pair, both carry traffic (generator and sink)', async () => {
    const old = setLogSink(() => undefined);
    const tmp = makeTempDir('vk-netload-mq-');
    const cpu = cpus().length - 1;
    const dev = await NetLoadDevice.create({ generate: true, frameBytes: 128, poll: 'adaptive', queuePairs: 2, threads: 2, cpus: [cpu] });
    const be = new VhostUserBackend(dev, { socket: tmp.join('p.sock') });
    await be.start();
    const pmd = await startTestpmd({
      role: 'virtio-user',
      socket: tmp.join('p.sock'),
      forwardMode: 'io',
      portTopology: 'loop',
      cpu: 0,
      queues: 2,
      extraArgs: ['--rxq=2', '--txq=2'],
    });
    try {
      // testpmd io-forwards what we generate on each queue back out of the same queue to our sink.
      await pmd.waitForStats((st) => (st.ports[0]?.txPackets ?? 0) > 200000 && (st.ports[0]?.rxPackets ?? 0) > 200000, 30000);
      const threads = dev.threadStats();
      expect(threads.map((t) => t.queues)).to.deep.equal([
        [0, 1],
        [2, 3],
      ]);
      expect(threads.map((t) => t.cpus)).to.deep.equal([[cpu], [cpu]]);
      for (const t of threads) {
        expect(t.rxPackets, `thread ${t.thread} sank frames`).to.be.greaterThan(0);
        expect(t.txPackets, `thread ${t.thread} generated frames`).to.be.greaterThan(0);
      }
      // The kernel agrees: two threads of this process may run on that CPU only.
      const pinned = readdirSync('/proc/self/task').filter((tid) => /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1] === String(cpu));
      expect(pinned.length).to.be.at.least(cpus().length > 1 ? 2 : 0);
    } finally {
      await pmd.stop();
      await be.stop();
      await dev.close();
      tmp.cleanup();
      setLogSink(old);
    }
  });
});
