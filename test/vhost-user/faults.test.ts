// Crashes, restarts and resource limits of the vhost-user backend, with real devices:
//
// 1. A frontend that disconnects after each step of the setup (after the 1st, 2nd, ...
//    message: the opening, SET_MEM_TABLE, every SET_VRING_* of every queue, SET_STATUS, kicks
//    with traffic in flight, traffic done) for a virtio-net switch port and a virtio-blk
//    disk, split and packed rings. After each, the same server accepts a new frontend that
//    negotiates fully and moves data, and no fd is left. (hostile-frontend.test.ts case 12
//    does this for the echo device on split rings.)
// 2. 10,000 connect / negotiate / disconnect cycles against one backend, in a child process
//    (node --expose-gc, cycles-child.ts): fds, mappings and RSS back where they started.
// 3. Resource limits: memory regions, mapped bytes, queues, queue size, blk requests in
//    flight; each refused with an error naming the limit, never unbounded growth.
import { scaled } from '../lib/fuzz-runs.js';
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { DEFAULT_MAX_MAPPED_BYTES, inflightQueueBytes, type Session, type SessionLimits } from '../../src/vhost-user/session.js';
import type { VhostUserDevice } from '../../src/vhost-user/device.js';
import { Switch } from '../../src/switch/switch.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame, withNetHdr } from '../../src/virtio/net-frames.js';
import { BlkClient, BlkReqType, BlkStatus } from '../lib/blk-client.js';
import { EchoDevice } from '../lib/echo-device.js';
import { PackedDriver, SplitDriver } from '../../src/virtio/driver.js';
import { openDisk, type Disk } from '../../src/backends/blk/disk.js';
import { DEFAULT_MAX_IN_FLIGHT } from '../../src/backends/blk/device.js';
import { MAX_REGIONS, createMemfd } from '../../src/native/guest-memory.js';
import type { BlkEngineKind } from '../../src/native/blk.js';
import { closeFd } from '../../src/native/unix-socket.js';
import type { LogRecord } from '../../src/log.js';
import { captureLogs } from './harness.js';
import { PartialGuest, setupSteps, type Layout, type Step } from '../../src/conformance/setup-steps.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, bit } from '../../src/virtio/features.js';
import { Req, inflightArea, logArea, memTable, singleRegion, vringState, type MemRegion } from '../../src/vhost-user/protocol.js';

const MiB = 1 << 20;
const UVA = 0x7f0000000000n;
const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
/** What both the net port and the disk under test are driven with: VERSION_1, protocol features, and the ring layout. */
const versionOneFeatures = (layout: 'split' | 'packed'): bigint => bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | (layout === 'packed' ? bit(VIRTIO_F_RING_PACKED) : 0n);
const json = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));
const fdCount = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(f: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)))]).finally(() => clearTimeout(t));
}

/** Resolves with the reason of the next session of `be` to close. */
function nextClose(be: VhostUserBackend): { done: Promise<[Session, string]>; cancel(): void } {
  let on!: (s: Session, reason: string) => void;
  const done = new Promise<[Session, string]>((resolve) => {
    on = (s, reason) => resolve([s, reason]);
    be.once('session-closed', on);
  });
  return { done: withTimeout(done, 12000, 'the session to close'), cancel: () => be.off('session-closed', on) };
}

// ---- 1. disconnect after each step --------------------------------------------------

/** Waits until the driver's ring has `n` used entries (polling the ring; the call eventfd is not watched). */
async function usedCount(d: SplitDriver | PackedDriver, n: number, what: string): Promise<void> {
  let got = 0;
  await until(() => (got += d.used().length) >= n, `${what}: ${n} used entries`);
}

interface DeviceUnderTest {
  name: string;
  queues: number;
  features(layout: Layout): bigint;
  /** steps after the setup: kicks with traffic in flight, then traffic done */
  traffic: Step[];
  start(): Promise<VhostUserBackend>;
  /** a new frontend that negotiates fully and moves data */
  wellBehaved(layout: Layout, seq: number): Promise<void>;
  stop(): Promise<void>;
}

function netUnderTest(dir: string): DeviceUnderTest {
  let sw: Switch;
  let peer: NetGuest;
  let layoutOfPeer: Layout | null = null;
  const sock = join(dir, 'x.sock');
  const seqOf = (f: Uint8Array): number => new DataView(f.buffer, f.byteOffset).getUint32(14);
  /** Waits until `g` received the unicast frame from `src` with sequence `seq` (earlier ones are skipped). */
  async function receiveSeq(g: NetGuest, src: string, seq: number): Promise<void> {
    const deadline = Date.now() + 5000;
    for (;;) {
      for (const f of await g.receive(1, 200)) {
        if (Buffer.from(f.frame.subarray(6, 12)).equals(Buffer.from(ethFrame(src, src, 14).subarray(6, 12))) && seqOf(f.frame) === seq) return;
      }
      if (Date.now() > deadline) throw new Error(`frame ${seq} from ${src} not received`);
    }
  }
  return {
    name: 'virtio-net switch port',
    queues: 2,
    features: versionOneFeatures,
    traffic: [
      [
        'RX buffers and TX frames kicked (in flight)',
        async (_fe, g) => {
          const [rx, tx] = g.drivers;
          for (let i = 0; i < 8; i++) rx.add([{ len: 2048, writable: true }]);
          rx.publish();
          g.kicks[0].write(1n);
          for (let i = 0; i < 4; i++) tx.add([{ len: 12 + 128, writable: false, data: withNetHdr(ethFrame(B, A, 128, 1000 + i)) }]);
          tx.publish();
          g.kicks[1].write(1n);
        },
      ],
      ['TX frames sent', async (_fe, g) => usedCount(g.drivers[1], 4, 'TX')],
    ],
    async start() {
      sw = await Switch.create({ agingSeconds: 300 });
      await sw.addVhostPort({ name: 'x', socket: sock });
      await sw.addVhostPort({ name: 'peer', socket: join(dir, 'peer.sock') });
      return sw.backend('x');
    },
    async wellBehaved(layout, seq) {
      if (layoutOfPeer !== layout) {
        peer?.close();
        if (layoutOfPeer !== null) await until(() => sw.backend('peer').session === null, 'the old peer session to end');
        peer = await NetGuest.connect(join(dir, 'peer.sock'), { packed: layout === 'packed' });
        layoutOfPeer = layout;
      }
      const g = await NetGuest.connect(sock, { packed: layout === 'packed' });
      try {
        expect(g.send([ethFrame(B, A, 200, seq)]), 'frame queued').to.equal(1);
        await receiveSeq(peer, A, seq);
        expect(peer.send([ethFrame(A, B, 200, seq)]), 'frame queued').to.equal(1);
        await receiveSeq(g, B, seq);
      } finally {
        g.close();
      }
    },
    async stop() {
      peer?.close();
      await sw?.close();
    },
  };
}

function blkUnderTest(dir: string): DeviceUnderTest {
  let disk: Disk;
  let be: VhostUserBackend;
  const sock = join(dir, 'blk.sock');
  const header = (type: number, sector: bigint): Uint8Array => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setUint32(0, type, true);
    new DataView(b.buffer).setBigUint64(8, sector, true);
    return b;
  };
  return {
    name: 'virtio-blk disk',
    queues: 1,
    features: versionOneFeatures,
    traffic: [
      [
        '8 writes of 64 KiB kicked (in flight)',
        async (_fe, g) => {
          const d = g.drivers[0];
          for (let i = 0; i < 8; i++) {
            d.add([
              { len: 16, writable: false, data: header(BlkReqType.OUT, BigInt(i * 128)) },
              { len: 65536, writable: false, data: new Uint8Array(65536).fill(i) },
              { len: 1, writable: true },
            ]);
          }
          d.publish();
          g.kicks[0].write(1n);
        },
      ],
      ['writes completed', async (_fe, g) => usedCount(g.drivers[0], 8, 'writes')],
    ],
    async start() {
      disk = openDisk({ ramBytes: 16 * MiB });
      be = new VhostUserBackend(disk.device, { socket: sock });
      await be.start();
      return be;
    },
    async wellBehaved(layout, seq) {
      const fe = await VhostUserFrontend.connect(sock);
      try {
        await fe.negotiate({ features: layout === 'packed' ? ~0n : ~bit(VIRTIO_F_RING_PACKED) });
        await fe.setupMemory(4 * MiB);
        const q = await fe.startQueue(0, { size: 64 });
        expect(q.layout).to.equal(layout);
        const blk = new BlkClient(q);
        const data = Uint8Array.from({ length: 4096 }, (_, i) => (i + seq) & 0xff);
        expect((await blk.write(BigInt(seq % 1000) * 8n, data)).status).to.equal(BlkStatus.OK);
        const r = await blk.read(BigInt(seq % 1000) * 8n, 4096);
        expect(r.status).to.equal(BlkStatus.OK);
        expect(Buffer.from(r.data!).equals(Buffer.from(data)), 'read back what was written').to.equal(true);
      } finally {
        fe.close();
      }
    },
    async stop() {
      await be?.stop();
      disk?.close();
    },
  };
}

describe('vhost-user faults: a frontend that disconnects after each step of the setup', function () {
  this.timeout(120000);
  const logs: LogRecord[] = [];
  let dir: string;
  captureLogs(logs);
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-faults-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  for (const make of [netUnderTest, blkUnderTest]) {
    for (const layout of ['split', 'packed'] as const) {
      it(`${make === netUnderTest ? 'virtio-net' : 'virtio-blk'}, ${layout} rings: after each disconnect the server serves a full session with data`, async () => {
        const dut = make(dir);
        const be = await dut.start();
        let seq = 1;
        try {
          await dut.wellBehaved(layout, seq++); // opens whatever is opened lazily before the fds are counted
          await until(() => be.session === null, 'the warm-up session to end');
          const steps = [...setupSteps(dut.features(layout), dut.queues, layout), ...dut.traffic];
          const lastEnable = steps.findIndex(([name]) => name === `SET_VRING_ENABLE ${dut.queues - 1}`) + 1;
          expect(lastEnable).to.be.above(0);
          for (let k = 1; k <= steps.length; k++) {
            const label = `${dut.name} ${layout}: disconnect after ${steps[k - 1][0]} (step ${k} of ${steps.length})`;
            const fds0 = fdCount();
            const mark = logs.length;
            const closed = nextClose(be);
            const g = new PartialGuest(layout, dut.queues);
            let session: Session;
            let reason: string;
            try {
              const fe = await VhostUserFrontend.connect(be.opts.socket);
              try {
                for (const [, step] of steps.slice(0, k)) await step(fe, g);
                if (k > lastEnable)
                  expect(
                    be.session?.queues().map((q) => q.running),
                    `${label}: rings running`,
                  ).to.deep.equal(Array(dut.queues).fill(true));
              } finally {
                fe.close();
              }
              [session, reason] = await closed.done;
            } finally {
              closed.cancel();
              g.close();
            }
            expect(reason, label).to.equal('eof');
            const mine = logs.slice(mark).filter((r) => r.session === session.id);
            expect(
              mine.filter((r) => r.level === 'error'),
              `${label}: errors logged: ${json(mine)}`,
            ).to.deep.equal([]);
            expect(
              mine.some((r) => r.msg === 'frontend disconnected'),
              label,
            ).to.equal(true);
            await until(() => be.session === null, 'the backend to drop the session');
            expect(fdCount(), `${label}: open fds`).to.equal(fds0);
            await dut.wellBehaved(layout, seq++);
            await until(() => be.session === null, 'the good session to end');
            expect(fdCount(), `${label}: open fds after the good session`).to.equal(fds0);
          }
        } finally {
          await dut.stop();
        }
      });
    }
  }
});

// ---- 1b. reconnect at once ---------------------------------------------------------
//
// A restarted QEMU, DPDK's virtio-user or a test harness closes its connection and connects
// again within a millisecond, before the backend has read the EOF of the first. The new
// frontend must be served as soon as the old session is gone, not refused as a second one.

describe('vhost-user faults: a frontend that closes and connects again at once', function () {
  this.timeout(180000);
  const logs: LogRecord[] = [];
  let dir: string;
  captureLogs(logs);
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-recon-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  for (const make of [netUnderTest, blkUnderTest]) {
    for (const layout of ['split', 'packed'] as const) {
      it(`${make === netUnderTest ? 'virtio-net' : 'virtio-blk'}, ${layout} rings: after each setup step, close and connect at once; the new frontend moves data`, async () => {
        const dut = make(dir);
        const be = await dut.start();
        let seq = 1;
        try {
          await dut.wellBehaved(layout, seq++);
          await until(() => be.session === null, 'the warm-up session to end');
          const fds0 = fdCount();
          const steps = [...setupSteps(dut.features(layout), dut.queues, layout), ...dut.traffic];
          for (let k = 0; k <= steps.length; k++) {
            const label = `${dut.name} ${layout}: close after ${k === 0 ? 'connecting' : steps[k - 1][0]} (step ${k} of ${steps.length}), connect at once`;
            const mark = logs.length;
            const g = new PartialGuest(layout, dut.queues);
            try {
              const fe = await VhostUserFrontend.connect(be.opts.socket);
              try {
                for (const [, step] of steps.slice(0, k)) await step(fe, g);
              } finally {
                fe.close();
              }
              // No await between the close and the next connect: it arrives before the EOF is read.
              await withTimeout(dut.wellBehaved(layout, seq++), 10000, label);
            } finally {
              g.close();
            }
            const refused = logs.slice(mark).filter((r) => /refusing/.test(r.msg));
            expect(
              refused.map((r) => r.msg),
              `${label}: refused`,
            ).to.deep.equal([]);
            expect(
              logs
                .slice(mark)
                .filter((r) => r.level === 'error')
                .map((r) => json(r)),
              `${label}: errors`,
            ).to.deep.equal([]);
            await until(() => be.session === null, 'the session to end');
          }
          // 1000 cycles of connect, full negotiation, data, close, each next connect at once.
          const t0 = Date.now();
          for (let i = 0; i < 1000; i++) await withTimeout(dut.wellBehaved(layout, seq++), 10000, `fast cycle ${i}`);
          await until(() => be.session === null, 'the last session to end');
          process.stdout.write(`      1000 fast reconnect cycles in ${Date.now() - t0} ms\n`);
          expect(logs.filter((r) => /refusing/.test(r.msg)).length, 'frontends refused').to.equal(0);
          expect(fdCount(), 'open fds after every cycle').to.equal(fds0);
        } finally {
          await dut.stop();
        }
      });
    }
  }

  it('a frontend whose predecessor is still connected is refused; the predecessor keeps working', async () => {
    const dut = blkUnderTest(dir);
    const be = await dut.start();
    try {
      const first = await VhostUserFrontend.connect(be.opts.socket);
      await first.negotiate();
      const other = await VhostUserFrontend.connect(be.opts.socket, { timeoutMs: 500 });
      let err: Error | null = null;
      await other.getFeatures().catch((e: Error) => (err = e));
      expect(err, 'the second frontend got no answer').to.not.equal(null);
      other.close();
      expect(await first.getFeatures()).to.be.a('bigint');
      expect(logs.some((r) => /second frontend connected while one is active/.test(r.msg))).to.equal(true);
      first.close();
    } finally {
      await dut.stop();
    }
  });
});

// ---- 2. many connections ----------------------------------------------------------

describe(`vhost-user faults: ${scaled(10000, 1000)} connect / negotiate / disconnect cycles against one backend`, function () {
  // No timing is asserted; the rate is printed. Here: about 1 ms a cycle.
  this.timeout(240000);
  const CYCLES = scaled(10000, 1000);
  /** Cycles before the first measurement: V8 grows its heap reservation over the first ~3000 here. */
  const WARMUP = 3000;
  /** RSS may differ this much after the cycles (a gc before each reading; the plateau swings by ~8 MiB here). */
  const RSS_TOLERANCE = 16 * MiB;

  it(`leaves fds, memfd mappings, JS heap and RSS where they were (RSS within ${RSS_TOLERANCE / MiB} MiB)`, async () => {
    const child = join(dirname(fileURLToPath(import.meta.url)), 'cycles-child.js');
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, ['--expose-gc', child, String(CYCLES), String(WARMUP)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      p.on('close', (code, signal) => (code === 0 ? resolve(stdout) : reject(new Error(`cycles child exited with ${signal ?? code}: ${stderr}`))));
    });
    const r = JSON.parse(out) as {
      cycles: number;
      ms: number;
      before: { fds: number; maps: number; rss: number; heap: number; external: number };
      after: { fds: number; maps: number; rss: number; heap: number; external: number };
      samples: number[];
      served: number;
      errors: number;
    };
    const mib = (x: number): string => `${(x / MiB).toFixed(1)} MiB`;
    process.stdout.write(
      `      ${r.cycles} cycles in ${r.ms} ms (${Math.round((r.cycles * 1000) / r.ms)}/s); fds ${r.before.fds} -> ${r.after.fds}; memfd mappings ${r.before.maps} -> ${r.after.maps}; ` +
        `RSS ${mib(r.before.rss)} -> ${mib(r.after.rss)} (every ${r.cycles / 10}: ${r.samples.map(mib).join(', ')}); JS heap ${mib(r.before.heap)} -> ${mib(r.after.heap)}\n`,
    );
    expect(r.served, 'one chain echoed per cycle').to.equal(CYCLES + WARMUP);
    expect(r.errors, 'warn/error log lines').to.equal(0);
    expect(r.after.fds, 'open fds').to.equal(r.before.fds);
    expect(r.after.maps, 'memfd mappings').to.equal(r.before.maps);
    expect(r.after.heap - r.before.heap, 'JS heap growth').to.be.below(2 * MiB);
    expect(r.after.external - r.before.external, 'external memory growth').to.be.below(2 * MiB);
    expect(r.after.rss - r.before.rss, 'RSS growth').to.be.below(RSS_TOLERANCE);
  });
});

// ---- 3. resource limits -------------------------------------------------------------

describe('vhost-user faults: resource limits', function () {
  this.timeout(30000);
  const logs: LogRecord[] = [];
  let dir: string;
  let be: VhostUserBackend | null = null;
  let fe: VhostUserFrontend | null = null;
  const own: number[] = [];
  const memfd = (name: string, size: number): number => {
    const fd = createMemfd(name, size);
    own.push(fd);
    return fd;
  };
  const mapped = (name: string): number =>
    readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .filter((l) => l.includes(`/memfd:${name}`)).length;

  captureLogs(logs);
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-limits-'));
  });
  afterEach(async () => {
    fe?.close();
    fe = null;
    await be?.stop();
    be = null;
    for (const fd of own.splice(0)) closeFd(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(device: VhostUserDevice, limits?: SessionLimits): Promise<VhostUserFrontend> {
    be = new VhostUserBackend(device, { socket: join(dir, 'vhost.sock'), limits });
    await be.start();
    fe = await VhostUserFrontend.connect(join(dir, 'vhost.sock'));
    await fe.negotiate();
    return fe;
  }

  /**
   * `attempt` must be refused: the request fails (a REPLY_ACK of 1), the session ends with
   * `problem` as its reason, and an error line for the session says so.
   */
  async function refused(attempt: () => Promise<unknown>, problem: RegExp): Promise<void> {
    const closed = nextClose(be!);
    try {
      const err = await attempt().then(
        () => null,
        (e: Error) => e,
      );
      expect(err?.message, 'the request is refused').to.match(/failed: the backend answered 1|connection closed/);
      const [s, reason] = await closed.done;
      expect(reason).to.match(problem);
      expect(
        logs.some((r) => r.session === s.id && r.level === 'error' && r.reason === reason),
        `an error line for session ${s.id} with ${reason}`,
      ).to.equal(true);
    } finally {
      closed.cancel();
    }
  }

  const region = (gpa: bigint, size: number | bigint, mmapOffset = 0n): MemRegion => ({ gpa, size: BigInt(size), uva: UVA + gpa, mmapOffset });

  describe('memory regions (limits.maxMemSlots)', () => {
    it('default: GET_MAX_MEM_SLOTS answers 64; a 65th region (SET_MEM_TABLE + 63 ADD_MEM_REG + 1) is refused', async () => {
      const f = await serve(new EchoDevice(1));
      expect(await f.getMaxMemSlots()).to.equal(BigInt(MAX_REGIONS));
      await f.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, 4096)]), { fds: [memfd('vk-slots', 4096)], ack: true });
      for (let i = 1; i < MAX_REGIONS; i++) await f.request(Req.ADD_MEM_REG, singleRegion.encode(region(BigInt(i) * 65536n, 4096)), { fds: [memfd('vk-slots', 4096)], ack: true });
      expect(mapped('vk-slots')).to.equal(MAX_REGIONS);
      await refused(
        () => f.request(Req.ADD_MEM_REG, singleRegion.encode(region(BigInt(MAX_REGIONS) * 65536n, 4096)), { fds: [memfd('vk-slots', 4096)], ack: true }),
        /^ADD_MEM_REG: 65 memory regions, at most 64 \(limit maxMemSlots\)$/,
      );
      expect(mapped('vk-slots'), 'all unmapped with the session').to.equal(0);
    });

    it('configured to 4: GET_MAX_MEM_SLOTS answers 4; a 5th region is refused by ADD_MEM_REG and by SET_MEM_TABLE', async () => {
      let f = await serve(new EchoDevice(1), { maxMemSlots: 4 });
      expect(await f.getMaxMemSlots()).to.equal(4n);
      await f.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, 4096), region(65536n, 4096)]), { fds: [memfd('vk-slots4', 4096), memfd('vk-slots4', 4096)], ack: true });
      for (let i = 2; i < 4; i++) await f.request(Req.ADD_MEM_REG, singleRegion.encode(region(BigInt(i) * 65536n, 4096)), { fds: [memfd('vk-slots4', 4096)], ack: true });
      await refused(
        () => f.request(Req.ADD_MEM_REG, singleRegion.encode(region(4n * 65536n, 4096)), { fds: [memfd('vk-slots4', 4096)], ack: true }),
        /^ADD_MEM_REG: 5 memory regions, at most 4 \(limit maxMemSlots\)$/,
      );
      f.close();
      f = fe = await VhostUserFrontend.connect(join(dir, 'vhost.sock'));
      await f.negotiate();
      const five = [0, 1, 2, 3, 4].map((i) => region(BigInt(i) * 65536n, 4096));
      await refused(
        () => f.request(Req.SET_MEM_TABLE, memTable.encode(five), { fds: five.map(() => memfd('vk-slots4', 4096)), ack: true }),
        /^SET_MEM_TABLE: 5 memory regions, at most 4 \(limit maxMemSlots\)$/,
      );
      expect(mapped('vk-slots4')).to.equal(0);
    });

    it('a limit outside 1..64 is refused when the backend is made', () => {
      for (const maxMemSlots of [0, 65, 1.5]) {
        expect(() => new VhostUserBackend(new EchoDevice(1), { socket: join(dir, 'x.sock'), limits: { maxMemSlots } })).to.throw(RangeError, /maxMemSlots .*expected 1\.\.64/);
      }
    });
  });

  describe('mapped bytes (limits.maxMappedBytes)', () => {
    it(`default ${DEFAULT_MAX_MAPPED_BYTES / (1n << 40n)} TiB: a 2 TiB region is refused before anything is mapped`, async () => {
      const f = await serve(new EchoDevice(1));
      await refused(
        () => f.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, 2n << 40n)]), { fds: [memfd('vk-huge', 4096)], ack: true }),
        new RegExp(`^SET_MEM_TABLE: ${2n << 40n} bytes mapped, at most ${DEFAULT_MAX_MAPPED_BYTES} \\(limit maxMappedBytes\\)$`),
      );
    });

    it('configured to 8 MiB: memory table, added regions (with their mmap offsets), the dirty log and the inflight area all count', async () => {
      const limits = { maxMappedBytes: 8 * MiB };
      let f = await serve(new EchoDevice(1), limits);
      const reconnect = async (): Promise<VhostUserFrontend> => {
        f.close();
        f = fe = await VhostUserFrontend.connect(join(dir, 'vhost.sock'));
        await f.negotiate();
        return f;
      };
      // 4 MiB + 4 MiB: at the limit, accepted; 4 KiB more is refused.
      await f.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, 4 * MiB)]), { fds: [memfd('vk-bytes', 4 * MiB)], ack: true });
      await f.request(Req.ADD_MEM_REG, singleRegion.encode(region(BigInt(16 * MiB), 4 * MiB)), { fds: [memfd('vk-bytes', 4 * MiB)], ack: true });
      await refused(
        () => f.request(Req.ADD_MEM_REG, singleRegion.encode(region(BigInt(32 * MiB), 4096)), { fds: [memfd('vk-bytes', 4096)], ack: true }),
        new RegExp(`^ADD_MEM_REG: ${8 * MiB + 4096} bytes mapped, at most ${8 * MiB} \\(limit maxMappedBytes\\)$`),
      );
      // The mmap offset is mapped too: 1 MiB at offset 8 MiB is 9 MiB.
      await reconnect();
      await refused(
        () => f.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB, BigInt(8 * MiB))]), { fds: [memfd('vk-bytes', 9 * MiB)], ack: true }),
        new RegExp(`^SET_MEM_TABLE: ${9 * MiB} bytes mapped, at most ${8 * MiB} \\(limit maxMappedBytes\\)$`),
      );
      // The dirty log: 6 MiB of memory and a 4 MiB log.
      await reconnect();
      await f.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, 6 * MiB)]), { fds: [memfd('vk-bytes', 6 * MiB)], ack: true });
      await refused(
        () => f.request(Req.SET_LOG_BASE, logArea.encode({ size: BigInt(4 * MiB), offset: 0n }), { fds: [memfd('vk-bytes', 4 * MiB)], reply: true }),
        new RegExp(`^SET_LOG_BASE: ${10 * MiB} bytes mapped, at most ${8 * MiB} \\(limit maxMappedBytes\\)$`),
      );
      // The inflight area a frontend hands back (SET_INFLIGHT_FD) with a huge size.
      await reconnect();
      await refused(
        () =>
          f.request(Req.SET_INFLIGHT_FD, inflightArea.encode({ mmapSize: 1n << 40n, mmapOffset: 0n, numQueues: 1, queueSize: 64 }), {
            fds: [memfd('vk-bytes', inflightQueueBytes(64, false))],
            ack: true,
          }),
        new RegExp(`^SET_INFLIGHT_FD: ${1n << 40n} bytes mapped, at most ${8 * MiB} \\(limit maxMappedBytes\\)$`),
      );
      expect(mapped('vk-bytes'), 'nothing left mapped').to.equal(0);
    });
  });

  describe("queues and queue size (the device's numQueues and maxQueueSize)", () => {
    const device = (numQueues: number, maxQueueSize: number): VhostUserDevice => Object.assign(new EchoDevice(1), { numQueues, maxQueueSize });

    it('a device with more queues than vhost-user can address (256), or queues above 32768, is refused when the backend is made', () => {
      const sock = join(dir, 'x.sock');
      expect(() => new VhostUserBackend(device(257, 256), { socket: sock })).to.throw(RangeError, /257 queues, expected 1\.\.256/);
      expect(() => new VhostUserBackend(device(0, 256), { socket: sock })).to.throw(RangeError, /0 queues, expected 1\.\.256/);
      expect(() => new VhostUserBackend(device(2, 65536), { socket: sock })).to.throw(RangeError, /largest queue size 65536, expected 1\.\.32768/);
      expect(() => new VhostUserBackend(device(256, 32768), { socket: sock })).to.not.throw();
    });

    it('virtio-blk with 2 queues of at most 256: queue 2 and a queue of 512 are refused, 256 is accepted', async () => {
      const disk = openDisk({ ramBytes: MiB, numQueues: 2, maxQueueSize: 256 });
      try {
        let f = await serve(disk.device);
        await f.request(Req.SET_VRING_NUM, vringState.encode({ index: 1, num: 256 }), { ack: true });
        await refused(() => f.request(Req.SET_VRING_NUM, vringState.encode({ index: 2, num: 64 }), { ack: true }), /^SET_VRING_NUM: queue 2, the device has 2$/);
        f = fe = await VhostUserFrontend.connect(join(dir, 'vhost.sock'));
        await f.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
        await refused(() => f.request(Req.SET_VRING_NUM, vringState.encode({ index: 0, num: 512 }), { ack: true }), /^SET_VRING_NUM: queue size 512 \(at most 256, a power of 2\)$/);
      } finally {
        fe?.close();
        fe = null;
        await be?.stop();
        be = null;
        disk.close();
      }
    });
  });

  describe('virtio-blk requests in flight (BlkDeviceOptions.maxInFlight)', () => {
    /** 40 writes on each of 2 queues in one kick each; the most requests the engine held at once. */
    async function load(maxInFlight?: number, kind: BlkEngineKind | 'auto' = 'auto'): Promise<{ most: number; heldBack: number; statuses: number[] }> {
      const disk = openDisk({ ramBytes: 8 * MiB, numQueues: 2, maxInFlight, engine: kind });
      const engine = disk.engine;
      let most = 0;
      // The device submits through submit() (engine threads) or submitReap() (io_uring).
      const submit = engine.submit.bind(engine);
      engine.submit = (q, n) => {
        most = Math.max(most, engine.inFlight + n);
        submit(q, n);
      };
      const submitReap = engine.submitReap.bind(engine);
      engine.submitReap = (q, n) => {
        most = Math.max(most, engine.inFlight + n);
        return submitReap(q, n);
      };
      try {
        const f = await serve(disk.device);
        await f.setupMemory(8 * MiB);
        const clients = [new BlkClient(await f.startQueue(0, { size: 256 })), new BlkClient(await f.startQueue(1, { size: 256 }))];
        const ids = clients.map((c, qi) => Array.from({ length: 40 }, (_, i) => c.submit(BlkReqType.OUT, BigInt((qi * 40 + i) * 8), { data: new Uint8Array(4096).fill(i) })));
        for (const c of clients) c.q.publishAndKick();
        const statuses: number[] = [];
        for (const [qi, c] of clients.entries()) {
          const used = await c.q.waitUsed(40, 10000);
          expect(
            used.map((u) => u.id).sort((a, b) => a - b),
            `queue ${qi}: every request completed`,
          ).to.deep.equal([...ids[qi]].sort((a, b) => a - b));
          for (const u of used) statuses.push(c.result(u.id, u.len).status);
        }
        return { most, heldBack: disk.device.heldBack, statuses };
      } finally {
        fe?.close();
        fe = null;
        await be?.stop();
        be = null;
        disk.close();
      }
    }

    it(`default ${DEFAULT_MAX_IN_FLIGHT}; capped at 4, 80 requests on 2 queues all complete while never more than 4 are in flight`, async () => {
      const mark = logs.length;
      // The thread pool's completions are reaped on a later turn of the event loop, so the
      // 40 requests of a kick always meet the cap. (io_uring's submitReap may reap the pool's
      // completions within the same serve, when the workers are quick: the cap still holds,
      // but whether it ever had to hold a queue back is the workers' timing.)
      const capped = await load(4, 'threads');
      expect(capped.statuses).to.deep.equal(Array(80).fill(BlkStatus.OK));
      expect(capped.most, 'most requests in flight at once').to.be.at.most(4);
      expect(capped.heldBack, 'times the cap held a queue back').to.be.above(0);
      expect(logs.slice(mark).some((r) => r.msg === 'requests in flight at the cap: further chains wait in the ring' && r.maxInFlight === 4)).to.equal(true);
      const ring = await load(4, 'io_uring');
      expect(ring.statuses).to.deep.equal(Array(80).fill(BlkStatus.OK));
      expect(ring.most, 'most requests in flight at once (io_uring)').to.be.at.most(4);
      // The same load under the default cap: the engine takes a whole burst at once.
      const free = await load();
      expect(free.statuses).to.deep.equal(Array(80).fill(BlkStatus.OK));
      expect(free.most, 'most in flight without a low cap').to.be.above(4);
      expect(free.heldBack).to.equal(0);
    });

    it('a cap that is not a positive integer is refused', () => {
      for (const maxInFlight of [0, -1, 2.5]) expect(() => openDisk({ ramBytes: MiB, maxInFlight })).to.throw(RangeError, /maxInFlight .*expected a positive integer/);
    });
  });
});
