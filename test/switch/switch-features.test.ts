// VLANs, aging, the dataplane hook, RARP announcements, ports added and removed at
// runtime, multiqueue steering, and a guest that breaks its own port.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Switch, type SwitchOptions, type VhostPortOptions } from '../../src/switch/switch.js';
import { NetGuest, type NetGuestOptions } from '../../src/loadgen/net-guest.js';
import { ethFrame } from '../../src/virtio/net-frames.js';
import { setLogSink, type LogRecord } from '../../src/log.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { Req, u64 } from '../../src/vhost-user/protocol.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const C = '02:00:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const hooks = fileURLToPath(new URL('./fixtures/hooks.js', import.meta.url));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function tagged(dst: string, src: string, vid: number, len: number, seq: number): Uint8Array {
  const inner = ethFrame(dst, src, len, seq);
  const f = new Uint8Array(len + 4);
  f.set(inner.subarray(0, 12), 0);
  f.set([0x81, 0x00, vid >> 8, vid & 0xff], 12);
  f.set(inner.subarray(12), 16);
  return f;
}

// With two data-plane threads too: the ports alternate between them, so each feature is
// also seen across threads (the inline data plane becomes the worker one; a hook needs one
// thread, so its test runs with one only).
for (const threads of [1, 2]) {
  describe(`switch features (${threads} data-plane thread${threads > 1 ? 's' : ''})`, function () {
    this.timeout(20000);
    let dir: string;
    let sw: Switch;
    let guests: NetGuest[] = [];
    const logs: LogRecord[] = [];
    let oldSink: ReturnType<typeof setLogSink>;

    async function start(o: SwitchOptions = {}): Promise<void> {
      sw = await Switch.create(threads > 1 ? { ...o, dataplane: 'worker', threads } : o);
    }
    async function attach(name: string, po: Partial<VhostPortOptions> = {}, go: NetGuestOptions = {}): Promise<NetGuest> {
      await sw.addVhostPort({ socket: join(dir, `${name}.sock`), ...po });
      const g = await NetGuest.connect(join(dir, `${name}.sock`), go);
      guests.push(g);
      await sw.backend(name).nextSession();
      return g;
    }

    beforeEach(() => {
      oldSink = setLogSink((r) => logs.push(r));
      logs.length = 0;
      dir = mkdtempSync(join(tmpdir(), 'vk-swf-'));
    });
    afterEach(async () => {
      for (const g of guests) g.close();
      guests = [];
      await sw?.close();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(oldSink);
    });

    it('VLANs: access ports only meet their VLAN; a trunk carries tags; tags are added and removed at the edges', async () => {
      await start({ dataplane: 'worker' });
      const a = await attach('a', { vlan: { mode: 'access', vid: 10 } });
      const b = await attach('b', { vlan: { mode: 'access', vid: 20 } });
      const c = await attach('c', { vlan: { mode: 'access', vid: 10 } });
      const t = await attach('t', { vlan: { mode: 'trunk', allowed: [10, 20] } });
      const f = ethFrame(BCAST, A, 80, 1);
      a.send([f]);
      expect(
        (await c.receive(1)).map((x) => hex(x.frame)),
        'same VLAN, untagged',
      ).to.deep.equal([hex(f)]);
      const onTrunk = await t.receive(1);
      expect(
        onTrunk.map((x) => hex(x.frame)),
        'tagged 10 on the trunk',
      ).to.deep.equal([hex(tagged(BCAST, A, 10, 80, 1))]);
      expect(await b.receive(1, 200), 'other VLAN sees nothing').to.deep.equal([]);
      // From the trunk, tagged 20, to b: untagged on arrival; tagged 30 is not allowed.
      const g = tagged(BCAST, C, 20, 90, 2);
      t.send([g, tagged(BCAST, C, 30, 90, 3)]);
      expect((await b.receive(1)).map((x) => hex(x.frame))).to.deep.equal([hex(ethFrame(BCAST, C, 90, 2))]);
      expect(await a.receive(1, 200)).to.deep.equal([]);
      expect(sw.counters('t').drop_vlan).to.equal(1);
      // A tagged frame on an access port is dropped.
      a.send([tagged(BCAST, A, 10, 60, 4)]);
      await new Promise((r) => setTimeout(r, 100));
      expect(sw.counters('a').drop_vlan).to.equal(1);
      const fdb = await sw.fdb();
      expect(fdb.map((e) => [e.mac, e.vlan, e.portName])).to.deep.equal([
        [A, 10, 'a'],
        [C, 20, 't'],
      ]);
      // Moving port b to VLAN 10 at runtime.
      await sw.setVlan('b', { mode: 'access', vid: 10 });
      a.send([ethFrame(BCAST, A, 70, 5)]);
      expect((await b.receive(1)).length).to.equal(1);
    });

    it('ages MAC entries out (then floods again)', async () => {
      await start({ dataplane: 'inline', agingSeconds: 0.3 });
      const a = await attach('a');
      const b = await attach('b');
      const c = await attach('c');
      a.send([ethFrame(BCAST, A, 60, 1)]);
      await b.receive(1);
      await c.receive(1);
      expect((await sw.fdb()).length).to.equal(1);
      await new Promise((r) => setTimeout(r, 500));
      expect((await sw.fdb()).length, 'aged out').to.equal(0);
      b.send([ethFrame(A, B, 60, 2)]);
      expect((await c.receive(1)).length, 'unknown again: flooded').to.equal(1);
    });

    if (threads === 1)
      it('runs a dataplane hook in the data-plane thread: drop, modify in place, redirect', async () => {
        await start({ dataplane: 'worker', hook: { module: hooks, export: 'filterAndMark' } });
        const a = await attach('a');
        const b = await attach('b');
        const keep = ethFrame(BCAST, A, 100, 1, 0x88b5);
        const drop = ethFrame(BCAST, A, 100, 2, 0x88b6);
        const mark = ethFrame(BCAST, A, 100, 3, 0x88b7);
        a.send([keep, drop, mark]);
        const got = await b.receive(2);
        expect(got.map((x) => x.frame[13])).to.deep.equal([0xb5, 0xb7]);
        expect(got[1].frame[99]).to.equal(0xee);
        expect(sw.counters('a').drop_hook).to.equal(1);
        await sw.close();
        guests.forEach((g) => g.close());
        guests = [];
        await start({ dataplane: 'worker', hook: { module: hooks, export: 'redirectToC' } });
        const a2 = await attach('a');
        const b2 = await attach('b');
        const c2 = await attach('c');
        a2.send([ethFrame(B, A, 64, 9)]);
        expect((await c2.receive(1)).length).to.equal(1);
        expect(await b2.receive(1, 200)).to.deep.equal([]);
      });

    it('SEND_RARP makes the switch announce the migrated MAC on every other port', async () => {
      await start({ dataplane: 'worker' });
      await attach('a');
      const b = await attach('b');
      const fe = await VhostUserFrontend.connect(join(dir, 'mig.sock')).catch(() => null);
      expect(fe).to.equal(null); // not a port yet
      await sw.addVhostPort({ socket: join(dir, 'mig.sock') });
      const m = await VhostUserFrontend.connect(join(dir, 'mig.sock'));
      await m.negotiate();
      await m.request(Req.SEND_RARP, u64.encode(0x00000c0000005452n)); // 52:54:00:00:00:0c (LE bytes)
      const got = await b.receive(1);
      expect(got[0].frame.length).to.equal(60);
      expect(hex(got[0].frame.subarray(0, 14))).to.equal('ffffffffffff' + '52540000000c' + '8035');
      const fdb = await sw.fdb();
      expect(fdb.some((e) => e.mac === '52:54:00:00:00:0c' && e.portName === 'mig')).to.equal(true);
      m.close();
    });

    it('adds and removes ports at runtime; a removed port gets nothing and frees its socket', async () => {
      await start({ dataplane: 'worker' });
      const a = await attach('a');
      const b = await attach('b');
      a.send([ethFrame(BCAST, A, 60, 1)]);
      await b.receive(1);
      const c = await attach('c');
      a.send([ethFrame(BCAST, A, 60, 2)]);
      expect((await c.receive(1)).length).to.equal(1);
      await sw.removePort('b');
      expect(sw.list().map((p) => p.name)).to.deep.equal(['a', 'c']);
      a.send([ethFrame(B, A, 60, 3)]);
      expect((await c.receive(1)).length, 'B unknown now: flooded to c').to.equal(1);
      await sw.addVhostPort({ socket: join(dir, 'b.sock') }); // the socket path is free again
    });

    it('multiqueue: each flow stays on one RX queue; queues are served independently', async () => {
      await start({ dataplane: 'inline' });
      await sw.addVhostPort({ socket: join(dir, 'mq.sock'), queuePairs: 4 });
      const a = await attach('a');
      // The MQ guest: 4 pairs, RX queues 0,2,4,6 posted with buffers.
      const fe = await VhostUserFrontend.connect(join(dir, 'mq.sock'));
      await fe.negotiate();
      await fe.setupMemory(16 << 20);
      const rxq = [];
      for (let p = 0; p < 4; p++) {
        rxq.push(await fe.startQueue(2 * p, { size: 128 }));
        await fe.startQueue(2 * p + 1, { size: 128 });
      }
      for (const q of rxq) {
        for (let i = 0; i < 32; i++) q.driver.add([{ len: 2048, writable: true }]);
        q.publishAndKick();
      }
      // Its queues start on the data plane (with two threads, spread over them) after the acks.
      const end = Date.now() + 5000;
      while ((await sw.dataplane.queueStats()).filter((x) => x.port === 'mq').length < 8 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
      const ipFrame = (sport: number, seq: number) => {
        const f = ethFrame(BCAST, A, 80, seq, 0x0800);
        f[14] = 0x45;
        f[23] = 17; // UDP
        f.set([10, 0, 0, 1, 10, 0, 0, 2], 26);
        f[34] = sport >> 8;
        f[35] = sport & 0xff;
        f[36] = 0x12;
        f[37] = 0x34;
        return f;
      };
      const flows = [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000];
      for (let round = 0; round < 3; round++) a.send(flows.map((s, i) => ipFrame(s, round * 10 + i)));
      await new Promise((r) => setTimeout(r, 300));
      const queueOfFlow = new Map<number, Set<number>>();
      rxq.forEach((q, qi) => {
        for (const u of q.driver.used()) {
          const b = q.driver.readWritten(u.id, u.len);
          const sport = (b[12 + 34] << 8) | b[12 + 35];
          if (!queueOfFlow.has(sport)) queueOfFlow.set(sport, new Set());
          queueOfFlow.get(sport)!.add(qi);
        }
      });
      expect([...queueOfFlow.keys()].sort((x, y) => x - y)).to.deep.equal(flows);
      for (const [, qs] of queueOfFlow) expect(qs.size, 'a flow on one queue').to.equal(1);
      const used = new Set([...queueOfFlow.values()].map((s) => [...s][0]));
      expect(used.size, '8 flows spread over several queues').to.be.greaterThan(1);
      fe.close();
    });

    it('offloads: a TSO frame reaches a TSO-capable guest as is and a plain guest as valid segments', async () => {
      const { NetFeature } = await import('../../src/virtio/net.js');
      const { bit } = await import('../../src/virtio/features.js');
      const { checkTcp, offloadHdr, tcpFrame } = await import('../lib/packets.js');
      await start({ dataplane: 'worker' });
      const a = await attach('a', {}, { extraFeatures: bit(NetFeature.CSUM) | bit(NetFeature.HOST_TSO4), maxFrame: 66000 });
      const b = await attach('b', {}, { extraFeatures: bit(NetFeature.GUEST_CSUM) | bit(NetFeature.GUEST_TSO4), rxBuffers: 200 });
      const c = await attach('c', {}, { rxBuffers: 200 });
      const payload = Uint8Array.from({ length: 30000 }, (_, i) => (i * 7) & 0xff);
      const { frame, l4 } = tcpFrame(payload, { partialCsum: true, dst: BCAST, src: A });
      a.send([frame], offloadHdr({ gso: 'tcpv4', gsoSize: 1448, csumStart: l4, csumOffset: 16, hdrLen: l4 + 20 }));
      const atB = await b.receive(1);
      expect(atB.length).to.equal(1);
      expect(Buffer.from(atB[0].frame).equals(Buffer.from(frame)), 'B takes the 30 KB TSO frame as is').to.equal(true);
      expect(atB[0].hdr[1], 'gso_type TCPV4 passed through').to.equal(1);
      const atC = await c.receive(Math.ceil(30000 / 1448));
      expect(atC.length).to.equal(Math.ceil(30000 / 1448));
      const rebuilt = Buffer.concat(
        atC.map((x) => {
          const k = checkTcp(x.frame);
          expect(k.ok, k.why).to.equal(true);
          return k.payload;
        }),
      );
      expect(rebuilt.equals(Buffer.from(payload))).to.equal(true);
    });

    it('respects the MTU a guest was given (VIRTIO_NET_F_MTU / NET_SET_MTU): larger frames are dropped and counted', async () => {
      const { NetFeature } = await import('../../src/virtio/net.js');
      const { bit } = await import('../../src/virtio/features.js');
      await start({ dataplane: 'inline' });
      const a = await attach('a');
      const b = await attach('b', { mtu: 1000 }, { extraFeatures: bit(NetFeature.MTU) });
      a.send([ethFrame(B, A, 1018, 1), ethFrame(B, A, 1019, 2), ethFrame(B, A, 9000, 3)]);
      const got = await b.receive(1);
      await b.receive(1, 200);
      expect(got.map((x) => x.frame.length)).to.deep.equal([1018]);
      expect(sw.counters('b').drop_too_big).to.equal(2);
    });

    for (const dataplane of ['inline', 'worker'] as const) {
      it(`NET_SET_MTU after the rings started applies to the running data plane (${dataplane}): larger and smaller`, async () => {
        const { NetFeature } = await import('../../src/virtio/net.js');
        const { bit } = await import('../../src/virtio/features.js');
        await start({ dataplane });
        const a = await attach('a');
        const b = await attach('b', { mtu: 1000 }, { extraFeatures: bit(NetFeature.MTU) });
        const sizes = async (lens: number[]): Promise<number[]> => {
          a.send(lens.map((n, i) => ethFrame(B, A, n, i)));
          const got = await b.receive(1);
          got.push(...(await b.receive(lens.length, 200)));
          return got.map((x) => x.frame.length);
        };
        expect(await sizes([1018, 1019]), 'MTU 1000 from the start').to.deep.equal([1018]);
        // Raised while the rings run: a frame over the old limit, under the new one, arrives.
        await b.fe.request(Req.NET_SET_MTU, u64.encode(1500n), { ack: true });
        expect(await sizes([1019, 1518, 1519]), 'MTU raised to 1500').to.deep.equal([1019, 1518]);
        // Lowered: a frame the old limit let through is now dropped.
        await b.fe.request(Req.NET_SET_MTU, u64.encode(800n), { ack: true });
        expect(await sizes([818, 819, 1018]), 'MTU lowered to 800').to.deep.equal([818]);
        expect(sw.counters('b').drop_too_big).to.equal(1 + 1 + 2);
      });
    }

    it('a guest that breaks its RX ring loses only its own port; a broadcast still reaches the others', async () => {
      await start({ dataplane: 'worker' });
      const a = await attach('a');
      const b = await attach('b');
      const h = await attach('h', {}, { rxBuffers: 8 });
      const d = h.rx.driver as import('../../src/virtio/driver.js').SplitDriver;
      // An avail entry naming a descriptor outside the ring, after the posted buffers.
      d.setAvailRing(d.availIdx, 60000);
      d.setAvailIdx(d.availIdx + 1);
      for (let i = 0; i < 12; i++) a.send([ethFrame(BCAST, A, 100, i)]);
      const got = await b.receive(12, 3000);
      expect(got.length, 'b got every broadcast').to.equal(12);
      const deadline = Date.now() + 3000;
      while (sw.counters('h').queue_errors === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(sw.counters('h').queue_errors).to.equal(1);
      // The data plane counts at once; its message to the control plane (which logs) follows.
      const logged = () => logs.some((l) => l.level === 'error' && /HEAD_OUT_OF_RANGE/.test(String(l.reason)));
      while (!logged() && Date.now() < deadline + 2000) await new Promise((r) => setTimeout(r, 10));
      expect(logged()).to.equal(true);
    });

    it('a guest that breaks its TX ring stops only its own port (logged, NEEDS_RESET); others keep switching', async () => {
      await start({ dataplane: 'worker' });
      const a = await attach('a');
      const b = await attach('b');
      const h = await attach('h');
      a.send([ethFrame(BCAST, A, 60, 1)]);
      await b.receive(1);
      await h.receive(1);
      // h writes a looping descriptor chain in its TX ring
      const d = h.tx.driver as import('../../src/virtio/driver.js').SplitDriver;
      d.writeDesc(0, { addr: 0x1000, len: 64, flags: 1, next: 0 });
      d.setAvailRing(d.availIdx, 0);
      d.setAvailIdx(d.availIdx + 1);
      h.tx.kick();
      const deadline = Date.now() + 3000;
      while (sw.counters('h').queue_errors === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(sw.counters('h').queue_errors).to.equal(1);
      const logged = () => logs.some((l) => l.level === 'error' && /DESC_LOOP/.test(String(l.reason))) && sw.backend('h').session!.queues()[1].broken;
      while (!logged() && Date.now() < deadline + 2000) await new Promise((r) => setTimeout(r, 10));
      expect(logs.some((l) => l.level === 'error' && /DESC_LOOP/.test(String(l.reason)))).to.equal(true);
      expect(sw.backend('h').session!.queues()[1].broken).to.equal(true);
      for (let i = 0; i < 5; i++) {
        a.send([ethFrame(B, A, 100, i)]);
        expect((await b.receive(1)).length).to.equal(1);
      }
    });
  });
}
