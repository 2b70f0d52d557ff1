// Property tests of the backend session state machine over a real socket: a frontend sends
// random sequences of messages (valid setup messages in random order, random requests and
// payloads, valid messages with random payloads or fds, memfds, eventfds and sockets as
// fds), moves traffic, kicks, and hangs up at random points, possibly in the middle of a
// message. After every message a GET_FEATURES barrier shows that the backend handled it.
//
// Invariants:
//   - the process never crashes (no uncaught exception or unhandled rejection);
//   - every message is answered as the spec says (its explicit reply, or REPLY_ACK's u64
//     when NEED_REPLY is set and REPLY_ACK negotiated, nothing otherwise), or the session
//     closes with a warn/error log line for that session giving the reason it closed;
//   - once the session has ended every fd it received is closed (/proc/self/fd counts) and
//     every mapping of the frontend's memfds and of its own inflight memfd is gone
//     (/proc/self/maps);
//   - a well-behaved frontend then connects to the same server, negotiates and moves data.
// Run for the echo device (2 queues), a virtio-blk RAM disk (2 queues, 4 requests in
// flight at most) and a virtio-net port of a switch (worker data plane).
// Runs per device: VHOSTKIT_FUZZ_RUNS, else each case's `runs` (fuzz-runs.ts).
import { expect } from 'chai';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { inflightQueueBytes, type Session } from '../../src/vhost-user/session.js';
import type { VhostUserDevice } from '../../src/vhost-user/device.js';
import { EchoDevice } from '../lib/echo-device.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame, macBytes } from '../../src/virtio/net-frames.js';
import { Switch } from '../../src/switch/switch.js';
import { BlkClient, BlkStatus } from '../lib/blk-client.js';
import { BumpAllocator, SplitDriver } from '../../src/virtio/driver.js';
import { openDisk, type Disk } from '../../src/backends/blk/disk.js';
import { setLogLevel, setLogSink, type Level, type LogRecord, type LogSink } from '../../src/log.js';
import { closeFd, socketPair } from '../../src/native/unix-socket.js';
import { createMemfd } from '../../src/native/guest-memory.js';
import { EventFd } from '../../src/native/eventfd.js';
import { VIRTIO_F_RING_PACKED, bit } from '../../src/virtio/features.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  ProtocolFeature,
  REQUESTS,
  Req,
  VERSION,
  codedRequests,
  configSpace,
  decodeReply,
  encodeMessage,
  inflightArea,
  logArea,
  memTable,
  reqName,
  singleRegion,
  u64,
  vringAddr,
  vringFile,
  vringState,
  type CodedRequest,
  type Message,
} from '../../src/vhost-user/protocol.js';
import { RawFrontend, isEof, type Received } from './raw-frontend.js';
import { fcParams, timeoutFor } from '../lib/fuzz-runs.js';

const MiB = 1 << 20;
const UVA = 0x7f0000000000n;
const QSIZE = 64;
const MEMFD_PREFIX = 'vkprop-';
const json = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));

const fdCount = (): number => readdirSync('/proc/self/fd').length;
/** Mappings of the memfds run `id` created, and of the inflight areas the backend creates. */
const mappingsOf = (id: number): string[] =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${MEMFD_PREFIX}${id}-`) || l.includes('/memfd:vhostkit-inflight'));

// ---- what a run does ------------------------------------------------------------

const VALID = [
  'GET_FEATURES',
  'GET_PROTOCOL_FEATURES',
  'SET_PROTOCOL_FEATURES',
  'SET_OWNER',
  'SET_FEATURES',
  'SET_MEM_TABLE',
  'ADD_MEM_REG',
  'REM_MEM_REG',
  'SET_VRING_NUM',
  'SET_VRING_BASE',
  'SET_VRING_ADDR',
  'SET_VRING_CALL',
  'SET_VRING_KICK',
  'SET_VRING_ERR',
  'SET_VRING_ENABLE',
  'GET_VRING_BASE',
  'GET_QUEUE_NUM',
  'GET_MAX_MEM_SLOTS',
  'GET_CONFIG',
  'SET_CONFIG',
  'SET_STATUS',
  'GET_STATUS',
  'RESET_DEVICE',
  'RESET_OWNER',
  'SET_LOG_BASE',
  'SET_LOG_FD',
  'GET_INFLIGHT_FD',
  'SET_INFLIGHT_FD',
  'SET_BACKEND_REQ_FD',
  'NET_SET_MTU',
  'SEND_RARP',
] as const satisfies ReadonlyArray<keyof typeof Req>;
type ValidKind = (typeof VALID)[number];
/**
 * Messages a session that went through the usual opening mostly accepts in any order
 * (drawn more often, so that runs get deep); the others are refused out of order.
 */
const MOSTLY_ACCEPTED: ValidKind[] = [
  'GET_FEATURES',
  'GET_PROTOCOL_FEATURES',
  'GET_QUEUE_NUM',
  'GET_MAX_MEM_SLOTS',
  'GET_STATUS',
  'GET_CONFIG',
  'SET_CONFIG',
  'SET_STATUS',
  'SET_MEM_TABLE',
  'ADD_MEM_REG',
  'REM_MEM_REG',
  'SET_VRING_CALL',
  'SET_VRING_ERR',
  'SET_VRING_ENABLE',
  'GET_VRING_BASE',
  'SET_LOG_BASE',
  'SET_LOG_FD',
  'GET_INFLIGHT_FD',
  'SET_INFLIGHT_FD',
  'SET_BACKEND_REQ_FD',
  'RESET_DEVICE',
];

type FdKind = 'memfd0' | 'memfd4k' | 'memfd1m' | 'eventfd' | 'socket';
const fdKind = fc.constantFrom<FdKind>('memfd0', 'memfd4k', 'memfd1m', 'eventfd', 'socket');

type Action =
  | { k: 'valid'; which: ValidKind; q: number; needReply: boolean; variant: number }
  | { k: 'setup'; q: number; needReply: boolean; packedBase: boolean }
  | { k: 'random'; request: number; flags: number; payload: Uint8Array; fds: FdKind[] }
  | { k: 'mutated'; which: ValidKind; q: number; needReply: boolean; variant: number; payload: Uint8Array | null; fds: FdKind[] | null }
  | { k: 'traffic'; q: number; n: number }
  | { k: 'kick'; q: number }
  | { k: 'hold'; on: boolean };

const queueArb = fc.integer({ min: 0, max: 2 }); // queue 2 does not exist: refused
const validArb = fc.record({
  k: fc.constant('valid' as const),
  which: fc.oneof({ weight: 1, arbitrary: fc.constantFrom(...VALID) }, { weight: 4, arbitrary: fc.constantFrom(...MOSTLY_ACCEPTED) }),
  q: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 0, max: 1 }) }, { weight: 1, arbitrary: queueArb }),
  needReply: fc.boolean(),
  variant: fc.nat(),
});
const randomArb = fc.record({
  k: fc.constant('random' as const),
  request: fc.oneof(fc.constantFrom(...codedRequests), fc.integer({ min: 0, max: 64 }), fc.nat()),
  flags: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(VERSION, VERSION | FLAG_NEED_REPLY) }, { weight: 1, arbitrary: fc.nat() }),
  payload: fc.uint8Array({ maxLength: 300 }),
  fds: fc.array(fdKind, { maxLength: 3 }),
});
const mutatedArb = fc.record({
  k: fc.constant('mutated' as const),
  which: fc.constantFrom(...VALID),
  q: queueArb,
  needReply: fc.boolean(),
  variant: fc.nat(),
  payload: fc.option(fc.uint8Array({ maxLength: 80 })),
  fds: fc.option(fc.array(fdKind, { maxLength: 3 })),
});
/** A whole ring setup in the usual order: NUM, BASE, ADDR, CALL, KICK, ENABLE. */
const setupArb = fc.record({ k: fc.constant('setup' as const), q: fc.integer({ min: 0, max: 1 }), needReply: fc.boolean(), packedBase: fc.boolean() });

/** `chaos` 0: only well-formed messages (in random order); 1, 2: more and more random and mutated ones. */
function actionsArb(chaos: number): fc.Arbitrary<Action[]> {
  const arbs: Array<fc.WeightedArbitrary<Action>> = [
    { weight: 4, arbitrary: setupArb },
    { weight: 8, arbitrary: validArb },
    { weight: 3, arbitrary: fc.record({ k: fc.constant('traffic' as const), q: fc.integer({ min: 0, max: 1 }), n: fc.integer({ min: 1, max: 8 }) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('kick' as const), q: fc.integer({ min: 0, max: 1 }) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('hold' as const), on: fc.boolean() }) },
  ];
  if (chaos > 0) arbs.push({ weight: chaos, arbitrary: randomArb }, { weight: 2 * chaos, arbitrary: mutatedArb });
  return fc.array(fc.oneof(...arbs), { minLength: 1, maxLength: 40, size: 'medium' });
}

const runArb = fc
  .record({
    /** 'full': SET_PROTOCOL_FEATURES (all offered), SET_OWNER, SET_FEATURES and SET_MEM_TABLE first, as most frontends do */
    prelude: fc.oneof({ weight: 1, arbitrary: fc.constantFrom('none' as const, 'owner' as const) }, { weight: 4, arbitrary: fc.constant('full' as const) }),
    packed: fc.boolean(),
    chaos: fc.oneof({ weight: 2, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 2 }) }),
    /**
     * how the frontend leaves: hang up; hang up in the middle of one more message; or send
     * one more (e.g. GET_VRING_BASE while the device holds chains) and hang up at once
     */
    end: fc.oneof(
      fc.constant(null),
      fc.record({ which: fc.constantFrom(...VALID), q: fc.integer({ min: 0, max: 1 }), cut: fc.nat() }),
      fc.record({ which: fc.constantFrom(...VALID), q: fc.integer({ min: 0, max: 1 }), cut: fc.constant(-1) }),
    ),
  })
  .chain((r) => actionsArb(r.chaos).map((actions) => ({ ...r, actions })));
/** end.cut: bytes of the last message sent before hanging up (-1: all of it) */
type Run = { prelude: 'none' | 'owner' | 'full'; packed: boolean; chaos: number; actions: Action[]; end: { which: ValidKind; q: number; cut: number } | null };

/** Requests answered with a payload of their own (NEED_REPLY changes nothing for them). */
const explicitReply = (r: number): boolean => REQUESTS[r as CodedRequest]?.reply !== undefined;

// ---- one run's resources ----------------------------------------------------------

let runNo = 0;

/**
 * A run's fds and its guest memory. The test does not map the memory itself (its own
 * mapping would show in /proc/self/maps): the drivers write a shadow copy, and sync()
 * writes it to the memfd, all but the used rings, which belong to the device.
 */
class RunState {
  readonly id = ++runNo;
  readonly fds: number[] = [];
  readonly memfd: number;
  readonly shadow = new Uint8Array(MiB);
  readonly alloc = new BumpAllocator(0, MiB);
  readonly drivers: SplitDriver[];
  readonly kicks: EventFd[] = [new EventFd(), new EventFd()];
  readonly calls: EventFd[] = [new EventFd(), new EventFd()];
  /** gpas of the regions ADD_MEM_REG sent */
  readonly added: bigint[] = [];

  constructor() {
    this.memfd = this.own(createMemfd(`${MEMFD_PREFIX}${this.id}-main`, MiB));
    this.drivers = [0, 1].map(() => new SplitDriver({ mem: this.shadow, base: 0, size: QSIZE, alloc: this.alloc }));
  }

  /** Writes the driver's side of guest memory to the memfd. */
  sync(): void {
    const used = this.drivers.map((d) => [d.usedAddr, d.usedAddr + 6 + 8 * QSIZE] as const).sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [lo, hi] of [...used, [MiB, MiB] as const]) {
      if (lo > at) writeSync(this.memfd, this.shadow, at, lo - at, at);
      at = Math.max(at, hi);
    }
  }

  own(fd: number): number {
    this.fds.push(fd);
    return fd;
  }

  fd(kind: FdKind): number {
    switch (kind) {
      case 'memfd0':
        return this.own(createMemfd(`${MEMFD_PREFIX}${this.id}-0`, 0));
      case 'memfd4k':
        return this.own(createMemfd(`${MEMFD_PREFIX}${this.id}-4k`, 4096));
      case 'memfd1m':
        return this.own(createMemfd(`${MEMFD_PREFIX}${this.id}-1m`, MiB));
      case 'eventfd':
        return this.own(new EventFd().fd);
      case 'socket': {
        const [a, b] = socketPair();
        this.own(a);
        return this.own(b);
      }
    }
  }

  close(): void {
    for (const e of [...this.kicks, ...this.calls]) e.close();
    for (const fd of this.fds.splice(0)) closeFd(fd);
  }
}

/** A well-formed message of kind `which` (on queue q) for this run's memory and rings. */
function validMessage(st: RunState, s: Session, which: ValidKind, q: number, variant: number): { request: Req; payload: Uint8Array; fds: number[] } {
  const request = Req[which];
  const empty = new Uint8Array(0);
  const d = st.drivers[q] ?? st.drivers[0];
  const mask = variant % 4 === 0 ? ~0n : BigInt(variant) * 0x9e3779b97f4a7c15n;
  const extraGpa = BigInt(16 + (variant % 4)) * BigInt(MiB);
  switch (which) {
    case 'GET_FEATURES':
    case 'GET_PROTOCOL_FEATURES':
    case 'GET_QUEUE_NUM':
    case 'GET_MAX_MEM_SLOTS':
    case 'GET_STATUS':
    case 'SET_OWNER':
    case 'RESET_DEVICE':
    case 'RESET_OWNER':
      return { request, payload: empty, fds: [] };
    case 'SET_PROTOCOL_FEATURES':
      return { request, payload: u64.encode(s.offeredProtocolFeatures & mask), fds: [] };
    case 'SET_FEATURES':
      return { request, payload: u64.encode(s.offeredFeatures & mask & (variant % 3 === 0 ? ~0n : ~bit(VIRTIO_F_RING_PACKED))), fds: [] };
    case 'SET_MEM_TABLE': {
      st.added.length = 0;
      const regions = [{ gpa: 0n, size: BigInt(MiB), uva: UVA, mmapOffset: 0n }];
      const fds = [st.memfd];
      if (variant % 3 === 1) {
        regions.push({ gpa: extraGpa, size: 4096n, uva: UVA + extraGpa, mmapOffset: 0n });
        fds.push(st.fd('memfd4k'));
      }
      return { request, payload: memTable.encode(regions), fds };
    }
    case 'ADD_MEM_REG':
      st.added.push(extraGpa);
      return { request, payload: singleRegion.encode({ gpa: extraGpa, size: 4096n, uva: UVA + extraGpa, mmapOffset: 0n }), fds: [st.fd('memfd4k')] };
    case 'REM_MEM_REG': {
      // a region added before if any (it may be gone already: SET_MEM_TABLE replaces all)
      const gpa = st.added.length > 0 ? st.added.splice(variant % st.added.length, 1)[0] : extraGpa;
      return { request, payload: singleRegion.encode({ gpa, size: 4096n, uva: UVA + gpa, mmapOffset: 0n }), fds: [] };
    }
    case 'SET_VRING_NUM':
      return { request, payload: vringState.encode({ index: q, num: variant % 5 === 0 ? 1 << (variant % 12) : QSIZE }), fds: [] };
    case 'SET_VRING_BASE':
      return { request, payload: vringState.encode({ index: q, num: variant % 5 === 0 ? variant & 0xffff : 0 }), fds: [] };
    case 'SET_VRING_ADDR':
      return { request, payload: vringAddr.encode({ index: q, flags: 0, desc: UVA + BigInt(d.descAddr), used: UVA + BigInt(d.usedAddr), avail: UVA + BigInt(d.availAddr), log: 0n }), fds: [] };
    case 'SET_VRING_CALL':
      return { request, payload: vringFile.encode(q, variant % 5 === 0), fds: variant % 5 === 0 ? [] : [(st.calls[q] ?? st.calls[0]).fd] };
    case 'SET_VRING_KICK':
      return { request, payload: vringFile.encode(q, variant % 5 === 0), fds: variant % 5 === 0 ? [] : [(st.kicks[q] ?? st.kicks[0]).fd] };
    case 'SET_VRING_ERR':
      return { request, payload: vringFile.encode(q, false), fds: [st.fd('eventfd')] };
    case 'SET_VRING_ENABLE':
      return { request, payload: vringState.encode({ index: q, num: variant % 4 === 0 ? 0 : 1 }), fds: [] };
    case 'GET_VRING_BASE':
      return { request, payload: vringState.encode({ index: q, num: 0 }), fds: [] };
    case 'GET_CONFIG':
      return { request, payload: configSpace.encode({ offset: 0, size: 8 + (variant % 9), flags: 0, data: new Uint8Array(8 + (variant % 9)) }), fds: [] };
    case 'SET_CONFIG':
      return { request, payload: configSpace.encode({ offset: 8 + (variant % 24), size: 1, flags: 0, data: Uint8Array.of(variant & 1) }), fds: [] };
    case 'SET_STATUS':
      return { request, payload: u64.encode(BigInt(variant % 7 === 0 ? 0 : variant & 0xff)), fds: [] };
    case 'SET_LOG_BASE':
      return { request, payload: logArea.encode({ size: 4096n, offset: 0n }), fds: [st.fd('memfd4k')] };
    case 'SET_LOG_FD':
      return { request, payload: empty, fds: [st.fd('eventfd')] };
    case 'GET_INFLIGHT_FD':
      return { request, payload: inflightArea.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: QSIZE }), fds: [] };
    case 'SET_INFLIGHT_FD': {
      const bytes = 2 * inflightQueueBytes(QSIZE, variant % 4 !== 0); // the packed size fits either layout
      const fd = st.own(createMemfd(`${MEMFD_PREFIX}${st.id}-inflight`, bytes));
      return { request, payload: inflightArea.encode({ mmapSize: BigInt(bytes), mmapOffset: 0n, numQueues: 2, queueSize: QSIZE }), fds: [fd] };
    }
    case 'SET_BACKEND_REQ_FD':
      return { request, payload: empty, fds: [st.fd('socket')] };
    case 'NET_SET_MTU':
      return { request, payload: u64.encode(BigInt(variant % 3 === 0 ? variant % 70000 : 1500)), fds: [] };
    case 'SEND_RARP':
      // not the MAC of a well-behaved guest: the switch would rightly learn it on this port
      return { request, payload: Uint8Array.of(2, 0, 0, 0, 1, variant & 0xff, 0, 0), fds: [] };
  }
}

// ---- the property ----------------------------------------------------------------

// A mapping that handed a view to JavaScript (GuestMemory.view, Virtqueue.views: what the
// echo device uses) is unmapped when the detached ArrayBuffer is collected, not at close().
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** Collects garbage until external buffers' finalizers have run (they run after a gc, from the event loop). */
async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

interface Served {
  backend: VhostUserBackend;
  setHold(on: boolean): void;
  /** a well-behaved session that moves data; throws if it does not */
  wellBehaved(): Promise<void>;
  close(): Promise<void>;
}

interface DeviceCase {
  name: string;
  runs: number;
  /** the device's code touches chains through views: collect garbage before looking at the maps */
  views: boolean;
  /**
   * The device keeps the last guest memory until the next guest's replaces it (see the
   * virtio-net port below): the run's mappings are checked after the well-behaved session.
   */
  keepsLastMemory: boolean;
  serve(dir: string): Promise<Served>;
}

async function backendFor(device: VhostUserDevice, socket: string): Promise<VhostUserBackend> {
  const be = new VhostUserBackend(device, { socket });
  await be.start();
  return be;
}

async function echoSession(socket: string): Promise<void> {
  const fe = await VhostUserFrontend.connect(socket);
  try {
    await fe.negotiate();
    await fe.setupMemory(MiB);
    const q = await fe.startQueue(0, { size: QSIZE });
    const id = q.driver.add([
      { len: 4, writable: false, data: Uint8Array.of(1, 2, 3, 4) },
      { len: 4, writable: true },
    ]);
    q.publishAndKick();
    expect(await q.waitUsed(1, 3000)).to.deep.equal([{ id, len: 4 }]);
    expect(Array.from(q.driver.readWritten(id, 4))).to.deep.equal([4, 3, 2, 1]);
  } finally {
    fe.close();
  }
}

async function blkSession(socket: string): Promise<void> {
  const fe = await VhostUserFrontend.connect(socket);
  try {
    await fe.negotiate();
    await fe.setupMemory(MiB);
    const blk = new BlkClient(await fe.startQueue(0, { size: QSIZE }));
    const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff);
    expect((await blk.write(8n, data)).status).to.equal(BlkStatus.OK);
    const r = await blk.read(8n, 4096);
    expect(r.status).to.equal(BlkStatus.OK);
    expect(Buffer.from(r.data!).equals(Buffer.from(data))).to.equal(true);
  } finally {
    fe.close();
  }
}

/** Waits until `g` got the frame from `src` numbered `seq` (others are skipped). */
async function receiveSeq(g: NetGuest, src: Uint8Array, seq: number, context: () => unknown): Promise<void> {
  const deadline = Date.now() + 5000;
  const others: string[] = [];
  for (;;) {
    for (const f of await g.receive(1, 100)) {
      const n = f.frame.length >= 18 ? new DataView(f.frame.buffer, f.frame.byteOffset).getUint32(14) : -1;
      if (Buffer.from(f.frame.subarray(6, 12)).equals(src) && n === seq) return;
      others.push(`${Buffer.from(f.frame.subarray(6, 12)).toString('hex')}#${n}`);
    }
    if (Date.now() > deadline) throw new Error(`frame ${seq} not received (got ${others.slice(-8).join(' ')}); ${json(context())}`);
  }
}

/** warn/error lines of every session (diagnostics of a failure) */
const diagLogs: LogRecord[] = [];

const cases: DeviceCase[] = [
  {
    name: 'echo device',
    runs: 250,
    views: true,
    keepsLastMemory: false,
    async serve(dir) {
      const device = new EchoDevice(2);
      const socket = join(dir, 'echo.sock');
      const backend = await backendFor(device, socket);
      return { backend, setHold: (on) => (device.hold = on), wellBehaved: () => echoSession(socket), close: () => backend.stop() };
    },
  },
  {
    name: 'virtio-blk RAM disk',
    runs: 300,
    views: false,
    keepsLastMemory: false,
    async serve(dir) {
      // A low in-flight cap, so that random sequences also stop and reset queues the cap holds back.
      const disk: Disk = openDisk({ ramBytes: 4 * MiB, numQueues: 2, maxQueueSize: 256, maxInFlight: 4 });
      const socket = join(dir, 'blk.sock');
      const backend = await backendFor(disk.device, socket);
      return {
        backend,
        setHold: () => undefined,
        wellBehaved: () => blkSession(socket),
        close: async () => {
          await backend.stop();
          disk.close();
        },
      };
    },
  },
  {
    // A port of a switch with its data plane on a worker thread: kicks are watched there,
    // memory changes pause it. When the guest goes, the port tells the data plane to unmap
    // its memory (Dataplane.releaseMemory), a message to the worker: checkMaps waits for it.
    name: 'virtio-net switch port',
    runs: 300,
    views: false,
    keepsLastMemory: false,
    async serve(dir) {
      const sw = await Switch.create({ agingSeconds: 300 });
      const socket = join(dir, 'x.sock');
      await sw.addVhostPort({ name: 'x', socket, mac: '02:00:00:00:00:aa' });
      await sw.addVhostPort({ name: 'peer', socket: join(dir, 'peer.sock') });
      const peer = await NetGuest.connect(join(dir, 'peer.sock'));
      const [a, b] = ['02:00:00:00:00:0a', '02:00:00:00:00:0b'];
      let seq = 0;
      let fdbNow: string[] = [];
      return {
        backend: sw.backend('x'),
        setHold: () => undefined,
        async wellBehaved() {
          const g = await NetGuest.connect(socket);
          try {
            seq++;
            fdbNow = (await sw.fdb()).map((e) => `${e.mac}@${e.portName}`);
            expect(g.send([ethFrame(b, a, 100, seq)])).to.equal(1);
            await receiveSeq(peer, macBytes(a), seq, () => ({ x: sw.counters('x'), peer: sw.counters('peer'), fdb: [] }));
            expect(peer.send([ethFrame(a, b, 100, seq)])).to.equal(1);
            await receiveSeq(g, macBytes(b), seq, () => ({
              x: sw.counters('x'),
              peer: sw.counters('peer'),
              peerQueues: sw.backend('peer').session?.queues(),
              peerTx: { outstanding: peer.tx.driver.outstanding },
              fdb: fdbNow,
              diag: diagLogs.slice(-12),
            }));
          } finally {
            g.close();
          }
        },
        close: async () => {
          peer.close();
          await sw.close();
        },
      };
    },
  },
];

for (const dc of cases) {
  describe(`vhost-user session properties: random message sequences over a socket (${dc.name})`, function () {
    this.timeout(timeoutFor(dc.runs, 400));
    const logs: LogRecord[] = [];
    const problems: unknown[] = [];
    const onProblem = (e: unknown): void => void problems.push(e);
    let oldSink: LogSink;
    let dir: string;
    let socket: string;
    let be: VhostUserBackend;
    let dev: Served;

    before(async () => {
      oldSink = setLogSink((r) => {
        logs.push(r);
        if (r.level === 'warn' || r.level === 'error') diagLogs.push(r);
        if (diagLogs.length > 100) diagLogs.splice(0, 50);
      });
      setLogLevel('info');
      process.on('unhandledRejection', onProblem);
      process.on('uncaughtException', onProblem);
      dir = mkdtempSync(join(tmpdir(), 'vk-sprop-'));
      dev = await dc.serve(dir);
      be = dev.backend;
      socket = be.opts.socket;
      await dev.wellBehaved(); // opens whatever the process opens lazily, before any count
      await until(() => be.session === null, 'the warm-up session to end');
    });

    after(async () => {
      await dev?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
      process.off('unhandledRejection', onProblem);
      process.off('uncaughtException', onProblem);
      setLogSink(oldSink);
      setLogLevel((process.env.VHOSTKIT_LOG as Level | undefined) ?? 'info');
    });

    async function until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
      const end = Date.now() + ms;
      while (!pred()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    }

    /** Closes the fds that came with replies; returns the replies. */
    function closeReplyFds(rs: Message[]): Message[] {
      for (const m of rs) for (const fd of m.fds) closeFd(fd);
      return rs;
    }

    /**
     * Sends one message and a barrier (GET_FEATURES, or GET_PROTOCOL_FEATURES after a
     * GET_FEATURES): replies come in order and the channel reads nothing while a message
     * is handled, so everything before the barrier's reply answers the message. Returns
     * those replies and whether the connection ended.
     */
    async function exchange(fe: RawFrontend, request: number, flags: number, payload: Uint8Array, fds: number[]): Promise<{ replies: Message[]; ended: boolean }> {
      const replies: Message[] = [];
      if (!(await fe.send(request, flags, payload, fds))) return { replies, ended: true };
      const barrier = request === Req.GET_FEATURES ? Req.GET_PROTOCOL_FEATURES : Req.GET_FEATURES;
      await fe.send(barrier, VERSION);
      for (;;) {
        const r: Received = await fe.next(8000);
        if (isEof(r)) return { replies: closeReplyFds(replies), ended: true };
        if (r.request === barrier && r.flags & FLAG_REPLY) {
          closeReplyFds([r]);
          return { replies: closeReplyFds(replies), ended: false };
        }
        replies.push(r);
      }
    }

    /** The replies to one handled message are what the spec asks for. */
    function checkAnswered(label: string, request: number, flags: number, replies: Message[], s: Session): void {
      const ackOn = (s.negotiatedProtocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
      if (explicitReply(request)) {
        expect(replies.length, `${label}: one reply`).to.equal(1);
        const m = replies[0];
        if (request === Req.GET_CONFIG && m.payload.length === 0) return; // "failed": an empty reply
        decodeReply(request as CodedRequest, m); // the reply's layout, flags and fds
      } else if (flags & FLAG_NEED_REPLY && ackOn) {
        expect(replies.length, `${label}: one REPLY_ACK`).to.equal(1);
        expect([0n, 1n], `${label}: REPLY_ACK value`).to.include(decodeReply(request as CodedRequest, replies[0]) as bigint);
      } else {
        expect(replies, `${label}: no reply expected`).to.deep.equal([]);
      }
    }

    /**
     * A message the session closed on (or before handling) got at most one answer: its
     * explicit reply, or a REPLY_ACK (a failure, 1) when NEED_REPLY was set and REPLY_ACK
     * negotiated; never a REPLY_ACK in place of an explicit reply.
     */
    function checkAnsweredBeforeClose(label: string, request: number, flags: number, replies: Message[], s: Session): void {
      expect(replies.length, `${label}: answers before the close`).to.be.at.most(1);
      if (replies.length === 0) return;
      const m = replies[0];
      expect(m.request, `${label}: reply to`).to.equal(request);
      if (explicitReply(request)) {
        if (request === Req.GET_CONFIG && m.payload.length === 0) return;
        decodeReply(request as CodedRequest, m);
      } else {
        expect(flags & FLAG_NEED_REPLY, `${label}: a REPLY_ACK without NEED_REPLY`).to.not.equal(0);
        expect(s.negotiatedProtocolFeatures & bit(ProtocolFeature.REPLY_ACK), `${label}: a REPLY_ACK without REPLY_ACK negotiated`).to.not.equal(0n);
        expect(m.flags & FLAG_REPLY, `${label}: reply flag`).to.not.equal(0);
        expect(m.payload.length, `${label}: REPLY_ACK payload`).to.equal(8);
        expect([0n, 1n], `${label}: REPLY_ACK value`).to.include(u64.decode(m.payload));
      }
    }

    async function oneRun(run: Run): Promise<void> {
      // A run that failed may have left its session closing: start from a server with none.
      await until(() => be.session === null, 'the previous session to end', 12000);
      const fds0 = fdCount();
      const mark = logs.length;
      const st = new RunState();
      const maps0 = mappingsOf(st.id);
      const fe = new RawFrontend(socket);
      let s: Session | null = null;
      let reason: string | null = null;
      let ended = false;
      let step = 0;
      const trace: string[] = [];
      try {
        s = await be.nextSession(3000);
        const closed = new Promise<string>((resolve) => s!.once('closed', (why: string) => resolve(why)));
        const send = async (label: string, request: number, flags: number, payload: Uint8Array, fds: number[]): Promise<void> => {
          trace.push(label);
          const r = await exchange(fe, request, flags, payload, fds);
          if (r.ended) {
            ended = true;
            checkAnsweredBeforeClose(`step ${step} ${label}`, request, flags, r.replies, s!);
            return;
          }
          checkAnswered(`step ${step} ${label}`, request, flags, r.replies, s!);
        };
        const v = (which: ValidKind, variant = 0): Action => ({ k: 'valid', which, q: 0, needReply: true, variant });
        const prelude: Action[] =
          run.prelude === 'none' ? [] : run.prelude === 'owner' ? [v('SET_OWNER')] : [v('SET_PROTOCOL_FEATURES'), v('SET_OWNER'), v('SET_FEATURES', run.packed ? 0 : 1), v('SET_MEM_TABLE')];
        for (const a of [...prelude, ...run.actions]) {
          if (ended) break;
          step++;
          switch (a.k) {
            case 'valid': {
              const m = validMessage(st, s, a.which, a.q, a.variant);
              await send(`${a.which}(q${a.q}, v${a.variant}${a.needReply ? ', need reply' : ''})`, m.request, VERSION | (a.needReply ? FLAG_NEED_REPLY : 0), m.payload, m.fds);
              break;
            }
            case 'setup': {
              const flags = VERSION | (a.needReply ? FLAG_NEED_REPLY : 0);
              const d = st.drivers[a.q];
              const steps: Array<[string, Req, Uint8Array, number[]]> = [
                // A running ring is stopped first, as a frontend reconfiguring it does.
                ...(s.queues()[a.q].started ? [['GET_VRING_BASE', Req.GET_VRING_BASE, vringState.encode({ index: a.q, num: 0 }), []] as [string, Req, Uint8Array, number[]]] : []),
                ['SET_VRING_NUM', Req.SET_VRING_NUM, vringState.encode({ index: a.q, num: QSIZE }), []],
                ['SET_VRING_BASE', Req.SET_VRING_BASE, vringState.encode({ index: a.q, num: a.packedBase ? 0x80008000 : 0 }), []],
                [
                  'SET_VRING_ADDR',
                  Req.SET_VRING_ADDR,
                  vringAddr.encode({ index: a.q, flags: 0, desc: UVA + BigInt(d.descAddr), used: UVA + BigInt(d.usedAddr), avail: UVA + BigInt(d.availAddr), log: 0n }),
                  [],
                ],
                ['SET_VRING_CALL', Req.SET_VRING_CALL, vringFile.encode(a.q, false), [st.calls[a.q].fd]],
                ['SET_VRING_KICK', Req.SET_VRING_KICK, vringFile.encode(a.q, false), [st.kicks[a.q].fd]],
                ['SET_VRING_ENABLE', Req.SET_VRING_ENABLE, vringState.encode({ index: a.q, num: 1 }), []],
              ];
              for (const [name, req, payload, fds] of steps) {
                if (ended) break;
                await send(`${name}(q${a.q}, setup)`, req, flags, payload, fds);
              }
              break;
            }
            case 'mutated': {
              const m = validMessage(st, s, a.which, a.q, a.variant);
              const fds = a.fds === null ? m.fds : a.fds.map((k) => st.fd(k));
              await send(
                `${a.which}(mutated: ${a.payload ? `${a.payload.length} random bytes` : 'payload kept'}, ${fds.length} fds)`,
                m.request,
                VERSION | (a.needReply ? FLAG_NEED_REPLY : 0),
                a.payload ?? m.payload,
                fds,
              );
              break;
            }
            case 'random':
              await send(
                `${reqName(a.request)} (random, flags 0x${a.flags.toString(16)}, ${a.payload.length} bytes, ${a.fds.length} fds)`,
                a.request >>> 0,
                a.flags >>> 0,
                a.payload,
                a.fds.map((k) => st.fd(k)),
              );
              break;
            case 'traffic': {
              const d = st.drivers[a.q];
              trace.push(`traffic q${a.q} x${a.n}`);
              try {
                for (let i = 0; i < a.n; i++)
                  d.add([
                    { len: 16, writable: false, data: new Uint8Array(16).fill(i) },
                    { len: 16, writable: true },
                  ]);
              } catch {
                // ring full or the run's memory used up: publish what fits
              }
              d.publish();
              st.sync();
              st.kicks[a.q].write(1n);
              break;
            }
            case 'kick':
              trace.push(`kick q${a.q}`);
              st.kicks[a.q].write(1n);
              break;
            case 'hold':
              trace.push(`hold ${a.on}`);
              dev.setHold(a.on);
              break;
          }
        }
        if (!ended && run.end !== null) {
          // Hang up in the middle of one more message (its fds went with its first byte),
          // or right after a whole one, without waiting for it to be handled.
          const m = validMessage(st, s, run.end.which, run.end.q, 0);
          const bytes = encodeMessage(m.request, VERSION, m.payload);
          const cut = run.end.cut < 0 ? bytes.length : 1 + (run.end.cut % (bytes.length - 1));
          trace.push(`${run.end.which}: ${cut} of ${bytes.length} bytes, then hang up`);
          await fe.sendBytes(bytes.subarray(0, cut), m.fds);
        }
        if (process.env.VHOSTKIT_FUZZ_STATS) stats.push({ answered: ended ? step - 1 : step, ended, running: s.queues().filter((q) => q.running).length, reason: ended ? null : 'frontend' });
        fe.close();
        reason = await withTimeout(closed, 12000, 'the session to end');
      } catch (e) {
        (e as Error).message += `\n  trace: ${trace.join(' | ')}`;
        fe.close();
        dev.setHold(false);
        await until(() => be.session === null, "the failed run's session to end", 12000).catch(() => undefined);
        st.close();
        throw e;
      }
      dev.setHold(false);
      const label = `run ${st.id} (${trace.length} steps, last ${trace.at(-1)})`;
      if (process.env.VHOSTKIT_FUZZ_STATS && ended) stats[stats.length - 1].reason = (reason ?? '').replace(/\d+/g, 'N').slice(0, 70);
      expect(reason, label).to.be.a('string').and.not.equal('');
      const mine = logs.slice(mark).filter((r) => r.session === s!.id);
      const hungUp = reason === 'eof' || reason === 'eof in the middle of a message';
      if (ended || !hungUp) {
        // The backend closed the session (also possible for the last message of an abrupt
        // end, which nobody waited for): a warn/error line for it says why.
        expect(ended || run.end?.cut === -1, `${label}: the session closed (${reason}) while the frontend still talked`).to.equal(true);
        const why = mine.find((r) => (r.level === 'warn' || r.level === 'error') && r.reason === reason);
        expect(why, `${label}: no warn/error log line with reason ${json(reason)} among ${json(mine)}`).to.not.equal(undefined);
      } else {
        expect(
          mine.some((r) => r.msg === 'frontend disconnected' && r.reason === reason),
          `${label}: ${json(mine)}`,
        ).to.equal(true);
      }
      await until(() => be.session === null, 'the backend to drop the session');
      st.close();
      expect(problems, `${label}: uncaught errors`).to.deep.equal([]);
      const checkMaps = async (when: string): Promise<void> => {
        // Releases that go through a message to a data-plane thread land a moment later.
        for (let i = 0; i < 100 && mappingsOf(st.id).length !== maps0.length; i++) await new Promise((r) => setTimeout(r, 10));
        if (dc.views && mappingsOf(st.id).length !== maps0.length) await collect();
        const maps1 = mappingsOf(st.id);
        let afterGc = '';
        if (maps1.length !== maps0.length && !dc.views) {
          await collect();
          afterGc = ` (after a gc: ${mappingsOf(st.id).length})`;
        }
        expect(maps1, `${label}: mappings left ${when}${dc.views ? ' (and a gc)' : afterGc}: ${maps1.join('; ')}`).to.deep.equal(maps0);
      };
      if (!dc.keepsLastMemory) await checkMaps('after the session');
      const fds1 = fdCount();
      expect(fds1, `${label}: open fds before ${fds0}, after ${fds1}`).to.equal(fds0);
      // The same server serves a well-behaved frontend next.
      await dev.wellBehaved();
      await until(() => be.session === null, 'the well-behaved session to end');
      if (dc.keepsLastMemory) await checkMaps("after the next guest's session");
      expect(fdCount(), `${label}: fds after the well-behaved session`).to.equal(fds0);
    }

    const stats: Array<{ answered: number; ended: boolean; running: number; reason: string | null }> = [];
    after(() => {
      if (!process.env.VHOSTKIT_FUZZ_STATS) return;
      const n = stats.length;
      const q = (f: (x: (typeof stats)[0]) => boolean) => `${Math.round((100 * stats.filter(f).length) / n)}%`;
      const reasons = new Map<string, number>();
      for (const x of stats) if (x.reason) reasons.set(x.reason, (reasons.get(x.reason) ?? 0) + 1);
      process.stderr.write(
        [...reasons]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 12)
          .map(([r, k]) => `  ${k} ${r}`)
          .join('\n') + '\n',
      );
      process.stderr.write(
        `${dc.name}: ${n} runs; closed by the backend ${q((x) => x.ended)}; >=5 steps answered ${q((x) => x.answered >= 5)}; >=15 ${q((x) => x.answered >= 15)}; a ring running at the end ${q((x) => x.running > 0)}\n`,
      );
    });

    it('every message is answered or the session closes saying why; then no fd or mapping is left, and a good frontend is served', async () => {
      await fc.assert(
        fc.asyncProperty(runArb, async (run) => oneRun(run)),
        fcParams(dc.runs),
      );
    });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)))]).finally(() => clearTimeout(t));
}
