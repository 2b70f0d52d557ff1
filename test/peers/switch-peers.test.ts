// dpdk-testpmd virtio-user frontends on two switch ports: frames sent on one arrive on
// the other, with one data-plane thread or two (a on thread 0, b on thread 1: every frame
// crosses).
import { expect } from 'chai';
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
