// Packet handlers (src/switch/handlers.ts) on a running switch: frames flows send to them,
// what they send, the flows they add, errors, removal; inline and on the worker.
import { expect } from 'chai';
import { fileURLToPath } from 'node:url';
import { Switch } from '../../src/switch/switch.js';
import type { NetGuest } from '../../src/loadgen/net-guest.js';
import { A, B, C, ThreeGuests } from './three-guests.js';
import { setLogSink } from '../../src/log.js';
import type { HandlerFrame } from '../../src/switch/handlers.js';
import { checkTcp, tcpFrame } from '../lib/packets.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/handlers.js', import.meta.url));

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  let err: unknown = null;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `rejects with ${re}`).to.be.instanceOf(Error);
  expect((err as Error).message).to.match(re);
}

// Event mode: a call per queue and burst; busy mode: the forwarder's own loop, which returns
// to JavaScript when frames wait for handlers.
for (const [dataplane, poll] of [
  ['inline', 'event'],
  ['worker', 'event'],
  ['inline', 'busy'],
] as const) {
  describe(`packet handlers (${dataplane} data plane, poll ${poll})`, function () {
    this.timeout(20_000);
    let sw: Switch;
    let rig: ThreeGuests;
    let guests: Record<string, NetGuest>;
    let oldSink: ReturnType<typeof setLogSink>;
    const logged: string[] = [];

    beforeEach(async () => {
      logged.length = 0;
      oldSink = setLogSink((rec) => logged.push(`${rec.msg} ${String(rec.handler ?? '')}`));
      sw = await Switch.create({ dataplane, poll });
      rig = await ThreeGuests.attach(sw);
      guests = rig.guests;
    });
    afterEach(async () => {
      rig.close();
      await sw.close();
      setLogSink(oldSink);
    });

    const got = (ms = 300) => rig.got(ms);

    it('a handler adds a connection flow on its first frame; the rest stays native', async () => {
      await sw.addHandler('first', { module: FIXTURES, export: 'firstPacket' });
      await sw.addFlow('priority=100,tcp,actions=handler:first');
      const conn = (seq: number) => tcpFrame(new Uint8Array(100), { src: A, dst: C, sport: 33000, dport: 443, seq }).frame;
      guests.a.send([conn(1)]);
      let r = await got();
      expect([r.b.length, r.c.length], 'the handler sent it to b').to.deep.equal([1, 0]);
      expect(Buffer.from(r.b[0]).equals(Buffer.from(conn(1)))).to.equal(true);
      guests.a.send([conn(2), conn(3), conn(4)]);
      r = await got();
      expect(r.b.length, 'the flow it added takes the rest to b').to.equal(3);
      const [h] = await sw.handlers();
      expect([h.name, h.frames, h.runs, h.sent, h.errors]).to.deep.equal(['first', 1, 1, 1, 0]);
      const flows = await sw.dumpFlows();
      expect(flows.map((f) => [f.priority, f.actions, f.packets])).to.deep.equal([
        [200, 'output:b', 3],
        [100, 'handler:first', 1],
      ]);
      expect(flows[0].match).to.equal('tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=33000,tp_dst=443');
      // Removing the handler removes the flows that send to it (not the ones it added).
      expect(await sw.removeHandler('first')).to.equal(1);
      expect((await sw.dumpFlows()).map((f) => f.priority)).to.deep.equal([200]);
      await rejects(sw.addFlow('tcp,actions=handler:first'), /no handler first/);
    });

    it('a handler that throws loses its frames, is counted and logged; the switch goes on', async () => {
      await sw.addHandler('broken', { module: FIXTURES, export: 'broken' });
      await sw.addFlow(`priority=100,dl_dst=${B},actions=handler:broken`);
      guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame]);
      guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: C }).frame]);
      const r = await got();
      expect([r.b.length, r.c.length]).to.deep.equal([0, 1]);
      const [h] = await sw.handlers();
      expect([h.errors, h.lastError]).to.deep.equal([1, 'this handler is broken']);
      expect(logged.some((l) => l.includes('packet handler threw') && l.includes('broken'))).to.equal(true);
    });

    if (dataplane === 'inline') {
      it('gets frames without their header, offloads decoded, from any port; sends with offloads', async () => {
        const seen: Array<{ port: string; len: number; offload: HandlerFrame['offload']; first: number }> = [];
        await sw.addHandler('tap', (frames, ctx) => {
          for (const f of frames) {
            seen.push({ port: f.inPort, len: f.data.length, offload: f.offload, first: f.data[0] });
            // A copy with a partial checksum, for c (no GUEST_CSUM): completed on the way.
            const copy = tcpFrame(new Uint8Array(40), { src: A, dst: C, partialCsum: true }).frame;
            ctx.send('c', copy, { needsCsum: true, dataValid: false, gsoType: 0, gsoSize: 0, hdrLen: 0, csumStart: 34, csumOffset: 16 });
          }
        });
        await sw.addFlow('priority=100,tcp,tp_dst=7,actions=handler:tap,NORMAL');
        const f1 = tcpFrame(new Uint8Array(33), { src: A, dst: B, dport: 7 }).frame;
        const f2 = tcpFrame(new Uint8Array(44), { src: B, dst: A, dport: 7 }).frame;
        guests.a.send([f1]);
        guests.b.send([f2]);
        const r = await got();
        expect([r.a.length, r.b.length], 'NORMAL too: switched as well').to.deep.equal([1, 1]);
        expect(seen).to.deep.equal([
          { port: 'a', len: f1.length, offload: null, first: 2 },
          { port: 'b', len: f2.length, offload: null, first: 2 },
        ]);
        expect(r.c.length).to.equal(2);
        for (const x of r.c) expect(checkTcp(x)).to.include({ ok: true });
        await rejects(
          sw.addHandler('tap', () => undefined),
          /exists/,
        );
      });
    } else {
      it('refuses a handler function on the worker: it cannot cross threads', async () => {
        await rejects(
          sw.addHandler('f', () => undefined),
          /cannot cross to the worker/,
        );
        await rejects(sw.addHandler('bad name!', { module: FIXTURES, export: 'broken' }), /handler name/);
        await rejects(sw.addHandler('x', { module: FIXTURES, export: 'nothing' }), /no function export nothing/);
      });
    }
  });
}
