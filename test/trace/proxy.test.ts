// The trace proxy between our own frontend and a real vhostkit backend (an echo device on
// a VhostUserBackend), over real sockets: a negotiation and a chain go through it, every
// message is recorded both ways with its fds described, malformed input is forwarded or
// refused with a log line and the proxy keeps serving, a backend restart is followed, the
// backend request channel is traced, ring snapshots follow the indices, and the text
// rendering says it all in words.
import { expect } from 'chai';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { Req, encodeMessage, encodeRequest, u64 } from '../../src/vhost-user/protocol.js';
import { connectUnix } from '../../src/native/unix-socket.js';
import { TraceProxy } from '../../src/trace/proxy.js';
import { toText } from '../../src/trace/render.js';
import type { MessageRecord, RingsRecord, SessionRecord, TraceRecord } from '../../src/trace/decode.js';
import { setLogSink, type LogRecord, type LogSink } from '../../src/log.js';
import { EchoDevice } from '../lib/echo-device.js';
import { RawFrontend } from '../vhost-user/raw-frontend.js';
import { until } from '../vhost-user/harness.js';
import { fcParams } from '../lib/fuzz-runs.js';

class Rig {
  readonly dir = mkdtempSync(join(tmpdir(), 'vk-trace-'));
  readonly back = join(this.dir, 'back.sock');
  readonly front = join(this.dir, 'front.sock');
  readonly records: TraceRecord[] = [];
  readonly logs: LogRecord[] = [];
  dev = new EchoDevice(2);
  be: VhostUserBackend | null = null;
  proxy!: TraceProxy;
  private oldSink!: LogSink;

  async start(o: { rings?: boolean; backend?: boolean } = {}): Promise<this> {
    this.oldSink = setLogSink((r) => this.logs.push(r));
    if (o.backend !== false) await this.startBackend();
    this.proxy = new TraceProxy({ listen: this.front, connect: this.back, onRecord: (r) => this.records.push(r), rings: o.rings ? { intervalMs: 20 } : undefined });
    await this.proxy.start();
    return this;
  }

  async startBackend(): Promise<void> {
    this.dev = new EchoDevice(2);
    this.be = new VhostUserBackend(this.dev, { socket: this.back });
    await this.be.start();
  }

  messages(): MessageRecord[] {
    return this.records.filter((r): r is MessageRecord => r.type === 'message');
  }

  sessions(): SessionRecord[] {
    return this.records.filter((r): r is SessionRecord => r.type === 'session');
  }

  async close(): Promise<void> {
    await this.proxy.stop();
    await this.be?.stop();
    setLogSink(this.oldSink);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('trace proxy', function () {
  this.timeout(20000);
  let rig: Rig;
  afterEach(async () => rig.close());

  it('passes a whole negotiation and a chain through, recording every message both ways', async () => {
    rig = await new Rig().start();
    const fe = await VhostUserFrontend.connect(rig.front);
    try {
      await fe.negotiate();
      await fe.setupMemory(4 << 20);
      const q = await fe.startQueue(0, { size: 64 });
      const id = q.driver.add([
        { len: 4, writable: false, data: Uint8Array.of(1, 2, 3, 4) },
        { len: 8, writable: true },
      ]);
      q.publishAndKick();
      expect(await q.waitUsed(1)).to.deep.equal([{ id, len: 4 }]);
      expect(Array.from(q.driver.readWritten(id, 4))).to.deep.equal([4, 3, 2, 1]);
    } finally {
      fe.close();
    }
    await until(() => rig.sessions().some((s) => s.event === 'close'), 3000, 'the session to close');
    const m = rig.messages();
    expect(m.filter((r) => r.error !== undefined)).to.deep.equal([]);
    const requests = m.filter((r) => r.from === 'frontend').map((r) => r.name);
    expect(requests).to.deep.equal([
      'GET_FEATURES',
      'GET_PROTOCOL_FEATURES',
      'SET_PROTOCOL_FEATURES',
      'SET_OWNER',
      'SET_FEATURES',
      'SET_MEM_TABLE',
      'SET_VRING_NUM',
      'SET_VRING_BASE',
      'SET_VRING_ADDR',
      'SET_VRING_CALL',
      'SET_VRING_KICK',
      'SET_VRING_ENABLE',
    ]);
    const gf = m.find((r) => r.name === 'GET_FEATURES' && r.reply)!;
    expect(gf.from).to.equal('backend');
    expect((gf.body as { names: string[] }).names).to.include.members(['VERSION_1', 'RING_PACKED', 'RING_EVENT_IDX', 'PROTOCOL_FEATURES']);
    expect(gf.latencyMs).to.be.a('number');
    const sf = m.find((r) => r.name === 'SET_FEATURES')!;
    expect((sf.body as { names: string[] }).names).to.include('VERSION_1');
    const mt = m.find((r) => r.name === 'SET_MEM_TABLE')!;
    expect(mt.fds).to.have.length(1);
    expect(mt.fds[0]).to.include({ kind: 'memfd', name: 'vhostkit-frontend', size: 4 << 20 });
    expect(m.find((r) => r.name === 'SET_VRING_KICK')!.fds[0].kind).to.equal('eventfd');
    expect(m.find((r) => r.name === 'SET_VRING_CALL')!.fds[0].kind).to.equal('eventfd');
    // REPLY_ACK answers go the other way, each after its request.
    const acks = m.filter((r) => r.from === 'backend' && r.name === 'SET_MEM_TABLE');
    expect(acks).to.have.length(1);
    expect(acks[0].body).to.deep.equal({ ack: '0x0', ok: true });
    // The backend served the ring the proxy's frontend started.
    expect(rig.dev.events.find((e) => e.what === 'start')).to.deep.include({ queue: 0 });
    const text = rig.records.map(toText).join('');
    expect(text).to.match(/#1 B->F GET_FEATURES reply features=0x[0-9a-f]+ .*\n {4}.*VERSION_1/);
    expect(text).to.match(/F->B SET_MEM_TABLE \[need-reply\] 1 region fds: memfd "vhostkit-frontend" 4 MiB\n {4}region 0: gpa 0x0 size 4 MiB uva 0x7f0000000000 offset 0x0/);
    expect(text).to.match(/F->B SET_VRING_KICK \[need-reply\] index=0 fds: eventfd/);
    expect(text).to.match(/session closed by the frontend: eof/);
  });

  it('forwards a message that does not decode, with a log line, and the backend decides', async () => {
    rig = await new Rig().start();
    const raw = new RawFrontend(rig.front);
    try {
      // SET_FEATURES with 4 payload bytes instead of 8: vhostkit's session refuses it.
      await raw.sendBytes(encodeMessage(Req.SET_FEATURES, 0, new Uint8Array(4)));
      await until(() => raw.closedByPeer, 3000, 'the backend to close');
    } finally {
      raw.close();
    }
    await until(() => rig.sessions().some((s) => s.event === 'close'), 3000, 'the session to close');
    const bad = rig.messages().find((r) => r.name === 'SET_FEATURES')!;
    expect(bad.error).to.equal('VHOST_USER_SET_FEATURES: payload of 4 bytes, expected 8');
    expect(bad.payload).to.equal('00000000');
    expect(rig.logs.some((l) => l.msg === 'malformed message forwarded as it came' && l.request === 'SET_FEATURES')).to.equal(true);
    expect(rig.sessions().find((s) => s.event === 'close')!.side).to.equal('backend');
    expect(toText(bad)).to.contain('MALFORMED (forwarded as it came): VHOST_USER_SET_FEATURES: payload of 4 bytes, expected 8; payload 00000000');
    // An unknown request id: forwarded too, named by number (once the proxy, which saw the
    // backend end the session, has found it there again).
    await until(() => rig.proxy.listening, 3000, 'the proxy to listen again');
    const raw2 = new RawFrontend(rig.front);
    try {
      await raw2.sendBytes(encodeMessage(99, 0, new Uint8Array(0)));
      await until(() => rig.messages().some((r) => r.request === 99), 3000, 'request 99');
    } finally {
      raw2.close();
    }
    expect(rig.messages().find((r) => r.request === 99)!.error).to.match(/^unknown request 99, expected a request id in 1\.\.40/);
  });

  it('refuses a stream it cannot frame with a log line, and keeps serving the next frontend', async () => {
    rig = await new Rig().start();
    const raw = new RawFrontend(rig.front);
    try {
      // Header version 2: where the next message starts cannot be trusted.
      const bytes = encodeRequest(Req.GET_FEATURES, null);
      bytes[4] = 2;
      await raw.sendBytes(bytes);
      await until(() => raw.closedByPeer, 3000, 'the proxy to close the frontend');
    } finally {
      raw.close();
    }
    const closed = rig.sessions().find((s) => s.event === 'close')!;
    expect(closed.side).to.equal('frontend');
    expect(closed.reason).to.equal('VHOST_USER_GET_FEATURES: header version 2, expected 1');
    expect(rig.logs.some((l) => l.msg === 'session closed' && l.reason === 'VHOST_USER_GET_FEATURES: header version 2, expected 1')).to.equal(true);
    // A payload size beyond what vhost-user carries.
    const raw2 = new RawFrontend(rig.front);
    try {
      const b = encodeMessage(Req.SET_FEATURES, 0, new Uint8Array(0));
      new DataView(b.buffer).setUint32(8, 1 << 30, true);
      await raw2.sendBytes(b);
      await until(() => raw2.closedByPeer, 3000, 'the proxy to close the frontend');
    } finally {
      raw2.close();
    }
    expect(rig.sessions().filter((s) => s.event === 'close')[1].reason).to.equal('VHOST_USER_SET_FEATURES: payload size 1073741824, at most 65536');
    const fe = await VhostUserFrontend.connect(rig.front);
    try {
      expect((await fe.getFeatures()) & rig.dev.features, 'the device features, through the proxy').to.equal(rig.dev.features);
    } finally {
      fe.close();
    }
  });

  it('random streams from a frontend never take the proxy down: it serves a well-behaved frontend after them', async () => {
    rig = await new Rig().start();
    const messages = fc.array(
      fc.oneof(
        // a message with a good header: any request id, flags, payload
        fc
          .record({ request: fc.integer({ min: 0, max: 45 }), flags: fc.integer({ min: 0, max: 15 }), payload: fc.uint8Array({ maxLength: 120 }) })
          .map((m) => encodeMessage(m.request, m.flags & ~3, m.payload)),
        // bytes
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
      ),
      { minLength: 1, maxLength: 6 },
    );
    await fc.assert(
      fc.asyncProperty(messages, async (list) => {
        // A backend that ended the last session (it refuses malformed requests) is tried
        // again before the proxy listens again.
        await until(() => rig.proxy.listening, 3000, 'the proxy to listen');
        const raw = new RawFrontend(rig.front);
        try {
          for (const b of list) if (!(await raw.sendBytes(b))) break;
          await new Promise((r) => setTimeout(r, 2));
        } finally {
          raw.close();
        }
      }),
      fcParams(40),
    );
    await until(() => rig.proxy.sessions.length === 0 && rig.proxy.listening, 5000, 'every session to end');
    expect(rig.sessions().filter((s) => s.event === 'open').length).to.be.greaterThan(0);
    const fe = await VhostUserFrontend.connect(rig.front);
    try {
      await fe.negotiate();
      expect(fe.features & rig.dev.features).to.equal(rig.dev.features);
    } finally {
      fe.close();
    }
  });

  it('turns a frontend away while the backend is down and refuses the next ones as the backend would, then follows it back; the same after a backend restart', async () => {
    rig = await new Rig().start({ backend: false });
    const raw = new RawFrontend(rig.front);
    await until(() => raw.closedByPeer, 3000, 'the proxy to turn the frontend away');
    raw.close();
    const refused = rig.sessions().find((s) => s.event === 'refused')!;
    expect(refused.reason).to.match(/^the backend .*back\.sock is not reachable \(ENOENT\)/);
    // Until the backend is back, connecting fails as it would on the backend's own socket.
    expect(rig.proxy.listening).to.equal(false);
    expect(() => connectUnix(rig.front))
      .to.throw()
      .with.property('code', 'ECONNREFUSED');
    await rig.startBackend();
    await until(() => rig.proxy.listening, 3000, 'the proxy to listen again');
    const fe = await VhostUserFrontend.connect(rig.front);
    await fe.negotiate();
    await rig.be!.stop(); // the backend goes away: the proxy closes the frontend's connection
    await until(() => fe.closed, 3000, 'the frontend to see the backend go');
    fe.close();
    const end = rig.sessions().filter((s) => s.event === 'close');
    expect(end.map((s) => s.side)).to.deep.equal(['backend']);
    await until(() => !rig.proxy.listening, 3000, 'the proxy to stop listening');
    expect(() => connectUnix(rig.front))
      .to.throw()
      .with.property('code', 'ECONNREFUSED');
    await rig.startBackend();
    await until(() => rig.proxy.listening, 3000, 'the proxy to listen again');
    const fe2 = await VhostUserFrontend.connect(rig.front);
    try {
      await fe2.negotiate();
      expect(fe2.features).to.not.equal(0n);
    } finally {
      fe2.close();
    }
    const opened = rig.sessions().filter((s) => s.event === 'open');
    expect(opened.map((s) => s.session)).to.deep.equal([2, 3]);
    expect(
      rig
        .messages()
        .filter((r) => r.name === 'SET_FEATURES' && r.from === 'frontend')
        .map((r) => r.session),
    ).to.deep.equal([2, 3]);
    expect(rig.logs.some((l) => l.msg === 'the backend is gone: frontends are refused until it is back')).to.equal(true);
  });

  it('traces the backend request channel both ways (CONFIG_CHANGE_MSG and its REPLY_ACK)', async () => {
    rig = await new Rig().start();
    rig.dev = new EchoDevice(2);
    const fe = await VhostUserFrontend.connect(rig.front);
    try {
      // Our frontend has no backend channel of its own: hand one over and answer on it.
      await fe.negotiate();
      const { socketPair } = await import('../../src/native/unix-socket.js');
      const [mine, theirs] = socketPair();
      const { MessageChannel } = await import('../../src/vhost-user/channel.js');
      const got: number[] = [];
      const ch: InstanceType<typeof MessageChannel> = new MessageChannel(mine, {
        message: (m) => {
          got.push(m.request);
          ch.send(m.request, 1 << 2, u64.encode(0n));
        },
        closed: () => undefined,
      });
      await fe.request(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), { fds: [theirs], ack: true });
      const { closeFd } = await import('../../src/native/unix-socket.js');
      closeFd(theirs);
      const session = await rig.be!.nextSession();
      expect(session.notifyConfigChange()).to.equal(true);
      await until(() => got.length === 1 && session.configChangeReplies.ok === 1, 3000, 'the config change and its answer');
      ch.close();
    } finally {
      fe.close();
    }
    const bc = rig.messages().filter((r) => r.channel === 'backend');
    expect(bc.map((r) => [r.from, r.name, r.reply])).to.deep.equal([
      ['backend', 'BACKEND_CONFIG_CHANGE_MSG', false],
      ['frontend', 'BACKEND_CONFIG_CHANGE_MSG', true],
    ]);
    expect(bc.every((r) => r.error === undefined)).to.equal(true);
    expect(rig.messages().find((r) => r.name === 'SET_BACKEND_REQ_FD')!.fds[0].kind).to.equal('socket');
    expect(toText(bc[0])).to.contain('B->F (backend channel) BACKEND_CONFIG_CHANGE_MSG [need-reply]');
  });

  it("snapshots a packed ring's event suppression areas (--rings)", async () => {
    rig = await new Rig().start({ rings: true });
    const fe = await VhostUserFrontend.connect(rig.front);
    try {
      await fe.negotiate(); // the echo device offers RING_PACKED: taken
      await fe.setupMemory(4 << 20);
      const q = await fe.startQueue(0, { size: 64 });
      expect(q.layout).to.equal('packed');
      q.driver.add([
        { len: 4, writable: false, data: Uint8Array.of(1, 2, 3, 4) },
        { len: 8, writable: true },
      ]);
      q.publishAndKick();
      await q.waitUsed(1);
      await until(() => rig.records.some((r) => r.type === 'rings'), 3000, 'a snapshot');
    } finally {
      fe.close();
    }
    const snap = rig.records.find((r): r is RingsRecord => r.type === 'rings')!;
    expect(snap.rings[0]).to.include({ index: 0, layout: 'packed', size: 64 });
    expect(snap.rings[0].driverEvent).to.have.keys(['offWrap', 'flags']);
    expect(snap.rings[0].deviceEvent).to.have.keys(['offWrap', 'flags']);
    expect(toText(snap)).to.match(/rings: q0 packed driver event \d+\/\d flags \d+ device event \d+\/\d flags \d+/);
  });

  it('snapshots the ring indices as they move (--rings)', async () => {
    rig = await new Rig().start({ rings: true });
    const fe = await VhostUserFrontend.connect(rig.front);
    try {
      await fe.negotiate({ features: ~(1n << 34n) }); // split rings
      await fe.setupMemory(4 << 20);
      const q = await fe.startQueue(0, { size: 64 });
      for (let i = 1; i <= 3; i++) {
        q.driver.add([
          { len: 4, writable: false, data: Uint8Array.of(1, 2, 3, 4) },
          { len: 8, writable: true },
        ]);
        q.publishAndKick();
        await q.waitUsed(1);
        await until(() => rig.records.some((r) => r.type === 'rings' && r.rings[0].avail === i && r.rings[0].used === i), 3000, `a snapshot with avail ${i}`);
      }
    } finally {
      fe.close();
    }
    const snaps = rig.records.filter((r): r is RingsRecord => r.type === 'rings');
    const avail = snaps.map((s) => s.rings[0].avail);
    expect(avail).to.include.members([1, 2, 3]);
    expect(snaps[0].rings[0]).to.include({ index: 0, layout: 'split', size: 64 });
    expect(toText(snaps[snaps.length - 1])).to.match(/rings: q0 avail 3 used 3 \(0 pending\) used_event \d+ avail_event \d+/);
  });
});
