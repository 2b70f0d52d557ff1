// The switch with vhost-user ports, driven by our frontend playing three guests.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Switch } from '../../src/switch/switch.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame } from '../../src/virtio/net-frames.js';
import { setLogSink, type LogRecord } from '../../src/log.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const BCAST = 'ff:ff:ff:ff:ff:ff';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Event mode: a call per queue and burst; busy mode: the forwarder's own loop over the queues
// (forwardAll). Two threads: ports a and c on thread 0, b on thread 1, so that every test
// crosses threads through the handoff rings.
for (const [dataplane, poll, threads] of [
  ['inline', 'event', 1],
  ['worker', 'event', 1],
  ['worker', 'busy', 1],
  ['worker', 'event', 2],
  ['worker', 'adaptive', 2],
] as const) {
  describe(`switch (${dataplane} data plane, poll ${poll}, ${threads} thread${threads > 1 ? 's' : ''}) with vhost-user ports`, function () {
    this.timeout(20000);
    let dir: string;
    let sw: Switch;
    let guests: NetGuest[] = [];
    const logs: LogRecord[] = [];
    let oldSink: ReturnType<typeof setLogSink>;

    beforeEach(async () => {
      oldSink = setLogSink((r) => logs.push(r));
      dir = mkdtempSync(join(tmpdir(), 'vk-sw-'));
      sw = await Switch.create({ dataplane, poll, threads, agingSeconds: 300 });
    });
    afterEach(async () => {
      for (const g of guests) g.close();
      guests = [];
      await sw.close();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(oldSink);
    });

    async function attach(names: string[], opts: Parameters<typeof NetGuest.connect>[1] = {}): Promise<NetGuest[]> {
      const out: NetGuest[] = [];
      for (const n of names) {
        await sw.addVhostPort({ socket: join(dir, `${n}.sock`) });
        const g = await NetGuest.connect(join(dir, `${n}.sock`), opts);
        guests.push(g);
        out.push(g);
      }
      // every port's session is up, and its two queues have reached the data plane (a
      // session is up before its queues start on the data-plane thread)
      for (const n of names) await sw.backend(n).nextSession();
      const end = Date.now() + 5000;
      for (;;) {
        const served = (await sw.dataplane.threads()).flatMap((t) => t.queues);
        if (names.every((n) => served.filter((q) => q.port === n).length === 2)) break;
        if (Date.now() > end) throw new Error(`the data plane serves ${JSON.stringify(served)}, not both queues of ${names.join(', ')}`);
        await new Promise((r) => setTimeout(r, 5));
      }
      return out;
    }

    it('floods unknown destinations, learns, then forwards unicast only to the right port', async () => {
      const [a, b, c] = await attach(['a', 'b', 'c']);
      const f1 = ethFrame(B, A, 100, 1);
      expect(a.send([f1])).to.equal(1);
      const gotB = await b.receive(1);
      const gotC = await c.receive(1);
      expect(gotB.map((x) => hex(x.frame))).to.deep.equal([hex(f1)]);
      expect(
        gotC.map((x) => hex(x.frame)),
        'unknown unicast is flooded',
      ).to.deep.equal([hex(f1)]);
      // B answers A: A's MAC was learned on port a, so only a receives it.
      const f2 = ethFrame(A, B, 200, 2);
      b.send([f2]);
      expect((await a.receive(1)).map((x) => hex(x.frame))).to.deep.equal([hex(f2)]);
      // A to B again: now unicast.
      const f3 = ethFrame(B, A, 300, 3);
      a.send([f3]);
      expect((await b.receive(1)).map((x) => hex(x.frame))).to.deep.equal([hex(f3)]);
      expect(await c.receive(1, 200), 'c sees nothing more').to.deep.equal([]);
      const fdb = await sw.fdb();
      expect(fdb.map((e) => [e.mac, e.portName, e.vlan])).to.deep.equal([
        [A, 'a', 1],
        [B, 'b', 1],
      ]);
      const ca = sw.counters('a');
      expect(ca.rx_packets).to.equal(2);
      expect(ca.tx_packets).to.equal(1);
      expect(ca.flooded).to.equal(1);
      expect(sw.counters('c').tx_packets).to.equal(1);
    });

    it('never sends a frame back out of its ingress port; broadcasts reach every other port', async () => {
      const [a, b, c] = await attach(['a', 'b', 'c']);
      const f = ethFrame(BCAST, A, 60, 9);
      a.send([f]);
      expect((await b.receive(1)).length).to.equal(1);
      expect((await c.receive(1)).length).to.equal(1);
      expect(await a.receive(1, 200)).to.deep.equal([]);
    });

    it('moves a MAC between ports when it shows up elsewhere', async () => {
      const [a, b, c] = await attach(['a', 'b', 'c']);
      a.send([ethFrame(BCAST, A, 60, 1)]);
      await b.receive(1);
      await c.receive(1);
      // A's MAC now appears on port c (a VM moved)
      c.send([ethFrame(BCAST, A, 60, 2)]);
      await a.receive(1);
      await b.receive(1);
      b.send([ethFrame(A, B, 60, 3)]);
      expect((await c.receive(1)).length, 'delivered to the new port').to.equal(1);
      expect(await a.receive(1, 200)).to.deep.equal([]);
    });

    it('carries bursts in both directions, large frames over mergeable buffers, packed and split guests together', async () => {
      const [a] = await attach(['a'], { packed: true, rxBufferSize: 1536 });
      const [b] = await attach(['b'], { packed: false, rxBufferSize: 1536 });
      a.send([ethFrame(BCAST, A, 60, 0)]);
      await b.receive(1);
      b.send([ethFrame(A, B, 60, 0)]);
      await a.receive(1);
      const frames = Array.from({ length: 100 }, (_, i) => ethFrame(B, A, 60 + ((i * 97) % 9000), i));
      let sent = 0;
      const got: Uint8Array[] = [];
      while (got.length < frames.length) {
        // The next 16 once b has the last ones: a receiver out of buffers loses frames (counted).
        if (sent < frames.length && got.length === sent) sent += a.send(frames.slice(sent, sent + 16));
        const more = await b.receive(1, 2000);
        if (more.length === 0) throw new Error(`b got ${got.length} of ${frames.length} frames; counters of b: ${JSON.stringify(sw.counters('b'))}`);
        for (const x of more) got.push(x.frame);
      }
      expect(got.map(hex)).to.deep.equal(frames.map(hex));
    });

    it('drops and counts when the receiver has no RX buffers, without stalling the sender', async () => {
      const [a] = await attach(['a']);
      const [b] = await attach(['b'], { rxBuffers: 4 });
      a.send([ethFrame(BCAST, A, 60, 0)]);
      await b.receive(1);
      // a's buffer for that frame comes back just after b has it (the switch pushes a's used
      // element after delivering): take it back, so that only the 20 below are counted
      let back = 0;
      const end = Date.now() + 2000;
      while (back < 1 && Date.now() < end) {
        back += a.reapTx();
        await new Promise((r) => setTimeout(r, 5));
      }
      // b stops reading: only its 4 posted buffers (refilled to 4 after the first receive) take frames
      const frames = Array.from({ length: 20 }, (_, i) => ethFrame(B, A, 100, i));
      a.send(frames);
      const deadline = Date.now() + 3000;
      while (sw.counters('b').drop_no_buffers + sw.counters('b').tx_packets < 21 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(sw.counters('b').drop_no_buffers).to.equal(16);
      // With two threads b's owner counts as it delivers, which may be before a's thread
      // has pushed a's used elements: wait for them.
      let reaped = a.reapTx();
      const reapEnd = Date.now() + 2000;
      while (reaped < 20 && Date.now() < reapEnd) {
        await new Promise((r) => setTimeout(r, 5));
        reaped += a.reapTx();
      }
      expect(reaped, 'the sender got all its TX buffers back').to.equal(20);
      expect((await b.receive(4)).length).to.equal(4);
    });
  });
}
