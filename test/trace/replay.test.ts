// `trace replay` against a real vhostkit backend: a session of our frontend is recorded
// through the proxy (JSON lines in a file, as `vhostkit trace --out` writes them), then
// replayed against a new backend with no frontend at all: the backend reaches the same state
// (features negotiated, ring 0 started, the inflight area the backend handed out passed back
// to it), and every reply is compared with the recorded one. The CLI says what it did.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { Req, inflightArea } from '../../src/vhost-user/protocol.js';
import { TraceProxy } from '../../src/trace/proxy.js';
import { toJsonLine } from '../../src/trace/render.js';
import { Replay, readTrace, replaySteps, tracedSessions } from '../../src/trace/replay.js';
import { setLogSink, type LogSink } from '../../src/log.js';
import { EchoDevice } from '../lib/echo-device.js';
import { vhostkitCli } from '../lib/peers.js';
import { until } from '../vhost-user/harness.js';

describe('trace replay', function () {
  this.timeout(20000);
  let dir: string;
  let oldSink: LogSink;
  before(() => (oldSink = setLogSink(() => undefined)));
  after(() => setLogSink(oldSink));
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'vk-replay-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Records one session of our frontend (negotiate, memory, inflight area, ring 0) into `out`. */
  async function record(out: string): Promise<bigint> {
    const dev = new EchoDevice(2);
    const be = new VhostUserBackend(dev, { socket: join(dir, 'rec.sock') });
    await be.start();
    writeFileSync(out, '');
    const proxy = new TraceProxy({ listen: join(dir, 'front.sock'), connect: join(dir, 'rec.sock'), onRecord: (r) => appendFileSync(out, toJsonLine(r) + '\n') });
    await proxy.start();
    const fe = await VhostUserFrontend.connect(join(dir, 'front.sock'));
    let features: bigint;
    try {
      await fe.negotiate({ features: ~(1n << 34n) });
      features = fe.features;
      await fe.setupMemory(4 << 20);
      const m = await fe.request(Req.GET_INFLIGHT_FD, inflightArea.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: 64 }), { reply: true });
      await fe.request(Req.SET_INFLIGHT_FD, m!.payload, { fds: [m!.fds[0]], ack: true });
      await fe.startQueue(0, { size: 64 });
    } finally {
      fe.close();
      await until(() => proxy.sessions.length === 0, 3000, 'the traced session to end');
      await proxy.stop();
      await be.stop();
    }
    return features;
  }

  it('brings a new vhostkit backend to the recorded state with no frontend', async () => {
    const out = join(dir, 'trace.jsonl');
    const features = await record(out);
    const records = readTrace(out);
    expect(tracedSessions(records)).to.deep.equal([1]);
    const steps = replaySteps(records, 1);
    expect(steps.map((s) => s.request.name)).to.include.members(['GET_INFLIGHT_FD', 'SET_INFLIGHT_FD', 'SET_VRING_KICK']);
    expect(steps.find((s) => s.request.name === 'GET_FEATURES')!.reply!.name).to.equal('GET_FEATURES');

    const dev = new EchoDevice(2);
    const be = new VhostUserBackend(dev, { socket: join(dir, 'new.sock') });
    await be.start();
    const replay = new Replay(join(dir, 'new.sock'));
    try {
      const res = await replay.run(steps);
      expect(res.error).to.equal(undefined);
      expect(res.sent).to.equal(steps.length);
      expect(res.replies).to.equal(steps.filter((s) => s.reply !== null).length);
      // Every reply as recorded: features, acks, and the inflight area's description.
      expect(res.steps.filter((s) => s.differs).map((s) => s.name)).to.deep.equal([]);
      const session = await be.nextSession();
      await until(() => session.queues()[0]?.started === true, 3000, 'ring 0 to start');
      expect(session.negotiatedFeatures).to.equal(features);
      expect(dev.events.filter((e) => e.what === 'start').map((e) => e.queue)).to.deep.equal([0]);
      expect(session.queues()[0]).to.include({ started: true, size: 64, layout: 'split' });
    } finally {
      replay.close();
      await be.stop();
    }
  });

  it('vhostkit trace replay (the CLI): the steps, a summary, exit 0; exit 1 when the backend is not there', async () => {
    const out = join(dir, 'trace.jsonl');
    await record(out);
    const be = new VhostUserBackend(new EchoDevice(2), { socket: join(dir, 'new.sock') });
    await be.start();
    const run = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [vhostkitCli, 'trace', 'replay', ...args], { timeout: 15000 }, (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
        ),
      );
    try {
      const r = await run([out, '--connect', join(dir, 'new.sock')]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^ {3}1 GET_FEATURES reply as recorded$/m);
      expect(r.stdout).to.match(/ SET_VRING_KICK reply as recorded$/m);
      expect(r.stdout).to.match(/^session 1: (\d+) of \1 requests replayed, \d+ replies, 0 differ from the recording\n$/m);
    } finally {
      await be.stop();
    }
    const gone = await run([out, '--connect', join(dir, 'new.sock')]);
    expect(gone.code).to.equal(1);
    expect(gone.stderr).to.match(/new\.sock: .*(ENOENT|no such file)/i);
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"type":"message"}\nnot json\n');
    const r2 = await run([bad, '--connect', join(dir, 'new.sock')]);
    expect(r2.code).to.equal(2);
    expect(r2.stderr).to.match(/bad\.jsonl:2: /);
  });
});
