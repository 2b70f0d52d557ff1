// vhostkit net-load (sink and generator) against dpdk-testpmd's virtio-user frontend, in
// every poll mode: frames sent by testpmd are all taken, frames generated reach testpmd
// intact in length, and the device's counters agree with testpmd's.
import { expect } from 'chai';
import { makeTempDir, startTestpmd } from '../../src/testing/peers.js';
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
      const dev = new NetLoadDevice({ generate: c.gen, frameBytes: 128, poll: c.poll });
      const be = new VhostUserBackend(dev, { socket: tmp.join('p.sock') });
      await be.start();
      const pmd = await startTestpmd({ role: 'virtio-user', socket: tmp.join('p.sock'), forwardMode: c.gen ? 'rxonly' : 'txonly', txpkts: 128, cpu: 1, packed: c.packed });
      try {
        if (c.gen) {
          const s = await pmd.waitForStats((st) => (st.ports[0]?.rxPackets ?? 0) > 100000, 20000);
          expect(s.ports[0].rxBytes / s.ports[0].rxPackets, 'frames of 128 bytes').to.equal(128);
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
        dev.close();
        tmp.cleanup();
        setLogSink(old);
      }
    });
  }
});
