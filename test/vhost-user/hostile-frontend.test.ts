// A hostile or broken frontend may only ever hurt its own session. Every malformed, unknown
// or out-of-order message must close THAT session with a log line naming the problem,
// while the process, and another backend on another socket, keep serving traffic, and no
// file descriptor the backend received or created outlives the session.
//
// Each case talks raw bytes to a backend (RawFrontend: exact headers, flags and fds, so
// nothing in our own frontend can "fix" the message), waits for the connection to be closed
// from the backend side and for the backend's 'session-closed', then checks the log, the fd
// table (/proc/self/fd: the backend lives in this process, so its fds count too) and runs an
// echo round trip through a bystander backend on another socket.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend, type FrontendQueue } from '../../src/vhost-user/frontend.js';
import type { Session } from '../../src/vhost-user/session.js';
import { EchoDevice } from '../lib/echo-device.js';
import { BumpAllocator, SplitDriver } from '../../src/virtio/driver.js';
import { setLogLevel, setLogSink, type Level, type LogRecord, type LogSink } from '../../src/log.js';
import { closeFd, connectUnix, recvMessage, sendMessage, MAX_FDS_PER_MESSAGE } from '../../src/native/unix-socket.js';
import { GuestMemory, createMemfd } from '../../src/native/guest-memory.js';
import { EventFd } from '../../src/native/eventfd.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, bit } from '../../src/virtio/features.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  MAX_PAYLOAD,
  ProtocolFeature,
  Req,
  VERSION,
  decodeHeader,
  encodeHeader,
  memTable,
  u64,
  vringAddr,
  vringFile,
  vringState,
  type MemRegion,
} from '../../src/vhost-user/protocol.js';

const MiB = 1 << 20;
const UVA = 0x7f0000000000n;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const openFds = (): string[] => readdirSync('/proc/self/fd');
const json = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)))]).finally(() => clearTimeout(t));
}

/** A frontend that sends exactly the bytes and fds it is told to. */
class RawFrontend {
  readonly fd: number;
  private open = true;
  constructor(path: string) {
    this.fd = connectUnix(path);
  }

  sendBytes(bytes: Uint8Array, fds: number[] = []): void {
    let off = 0;
    let f = fds;
    while (off < bytes.length) {
      const n = sendMessage(this.fd, bytes.subarray(off), f);
      if (n === null) throw new Error('socket buffer full'); // our messages are far smaller
      off += n;
      f = [];
    }
  }

  send(req: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags = VERSION): void {
    const b = new Uint8Array(HEADER_SIZE + payload.length);
    b.set(encodeHeader(req, flags, payload.length), 0);
    b.set(payload, HEADER_SIZE);
    this.sendBytes(b, fds);
  }

  /** Reads exactly n bytes; throws on EOF. Any fds that come along are closed. */
  private async readExact(n: number, timeoutMs = 2000): Promise<Uint8Array> {
    const buf = new Uint8Array(n);
    let got = 0;
    const deadline = Date.now() + timeoutMs;
    while (got < n) {
      const r = recvMessage(this.fd, buf.subarray(got), 8);
      if (r === null) {
        if (Date.now() > deadline) throw new Error(`no reply within ${timeoutMs} ms`);
        await sleep(1);
        continue;
      }
      r.fds.forEach((fd) => closeFd(fd));
      if (r.bytes === 0) throw new Error('EOF while waiting for a reply');
      got += r.bytes;
    }
    return buf;
  }

  /** Reads one reply to `req` and returns its payload. */
  async reply(req: number): Promise<Uint8Array> {
    const h = decodeHeader(await this.readExact(HEADER_SIZE));
    expect(h.request, 'reply request').to.equal(req);
    expect(h.flags & FLAG_REPLY, 'reply flag').to.equal(FLAG_REPLY);
    return this.readExact(h.size);
  }

  /**
   * Waits until the backend closes the connection. Returns how ('eof', or 'reset' when it
   * closed with our bytes unread) and whatever it sent before.
   */
  async closedByPeer(timeoutMs = 3000): Promise<{ how: 'eof' | 'reset'; sent: Uint8Array }> {
    const chunks: number[] = [];
    const buf = new Uint8Array(512);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let r;
      try {
        r = recvMessage(this.fd, buf, 8);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ECONNRESET') return { how: 'reset', sent: Uint8Array.from(chunks) };
        throw e;
      }
      if (r === null) {
        if (Date.now() > deadline) throw new Error(`the backend did not close the connection within ${timeoutMs} ms`);
        await sleep(1);
        continue;
      }
      r.fds.forEach((fd) => closeFd(fd));
      if (r.bytes === 0) return { how: 'eof', sent: Uint8Array.from(chunks) };
      chunks.push(...buf.subarray(0, r.bytes));
    }
  }

  close(): void {
    if (this.open) closeFd(this.fd);
    this.open = false;
  }
}

/** Fds a case creates; all closed after the case (the backend got kernel dups of them). */
class Fds {
  readonly list: number[] = [];
  memfd(size: number | bigint): number {
    const fd = createMemfd('hostile-test', size);
    this.list.push(fd);
    return fd;
  }
  eventfd(): number {
    const fd = new EventFd().fd; // owned by this list from now on
    this.list.push(fd);
    return fd;
  }
  many(n: number): number[] {
    return Array.from({ length: n }, () => this.eventfd());
  }
  closeAll(): void {
    for (const fd of this.list.splice(0)) closeFd(fd);
  }
}

const region = (gpa: bigint, size: number | bigint, uva = UVA + gpa, mmapOffset = 0n): MemRegion => ({ gpa, size: BigInt(size), uva, mmapOffset });
const vs = (index: number, num: number): Uint8Array => vringState.encode({ index, num });
const addrOf = (index: number, desc: bigint, avail: bigint, used: bigint): Uint8Array => vringAddr.encode({ index, flags: 0, desc, avail, used, log: 0n });

describe('vhost-user: hostile frontend', function () {
  this.timeout(10000);

  const logs: LogRecord[] = [];
  let oldSink: LogSink;
  let dir: string;
  let hostileSock: string;
  let hostileDev: EchoDevice;
  let hostile: VhostUserBackend;
  let bystanderSock: string;
  let bystander: VhostUserBackend;
  let byFe: VhostUserFrontend;
  let byQ: FrontendQueue;
  let bySession: Session;

  /** A real echo round trip through the other backend: it kept serving traffic. */
  async function bystanderEcho(label: string): Promise<void> {
    const data = Uint8Array.from(randomBytes(16));
    const id = byQ.driver.add([
      { len: 16, writable: false, data },
      { len: 16, writable: true },
    ]);
    byQ.publishAndKick();
    const used = await byQ.waitUsed(1, 2000);
    expect(used, `${label}: bystander used ring`).to.deep.equal([{ id, len: 16 }]);
    expect(Array.from(byQ.driver.readWritten(id, 16)), `${label}: bystander echo`).to.deep.equal(Array.from(data).reverse());
    expect(bystander.session, `${label}: bystander session replaced`).to.equal(bySession);
    expect(bySession.closed, `${label}: bystander session closed`).to.equal(false);
  }

  function waitClosed(be: VhostUserBackend, label: string): { done: Promise<[Session, string]>; cancel: () => void } {
    let on!: (s: Session, reason: string) => void;
    const p = new Promise<[Session, string]>((resolve) => {
      on = (s, reason) => resolve([s, reason]);
      be.once('session-closed', on);
    });
    return { done: withTimeout(p, 3000, `${label}: the backend never reported the session closed`), cancel: () => be.off('session-closed', on) };
  }

  interface CaseOptions {
    /** the frontend hangs up itself (no EOF to observe from our side) */
    frontendCloses?: boolean;
    /** checks on what the backend sent before closing */
    sent?: (bytes: Uint8Array) => void;
  }

  /**
   * One hostile connection: `attack` sends whatever it likes; then the backend must close
   * the connection, report the session closed with a reason matching `problem`, have logged
   * a warn/error line for that session naming it, leave the fd table as it was, and the
   * bystander backend must still echo.
   */
  async function hostileCase(label: string, problem: RegExp, attack: (fe: RawFrontend, fds: Fds) => Promise<void> | void, o: CaseOptions = {}): Promise<void> {
    const before = openFds();
    const mark = logs.length;
    const resets = hostileDev.events.filter((e) => e.what === 'reset').length;
    const closed = waitClosed(hostile, label);
    const fds = new Fds();
    let fe: RawFrontend | null = null;
    let session: Session;
    let reason: string;
    try {
      fe = new RawFrontend(hostileSock);
      await attack(fe, fds);
      if (o.frontendCloses) {
        fe.close();
      } else {
        const seen = await fe.closedByPeer();
        expect(seen.how, `${label}: frontend side`).to.be.oneOf(['eof', 'reset']);
        o.sent?.(seen.sent);
      }
      [session, reason] = await closed.done;
    } finally {
      closed.cancel();
      fe?.close();
      fds.closeAll();
    }
    expect(session.closed, `${label}: session.closed`).to.equal(true);
    expect(reason, `${label}: close reason`).to.match(problem);
    const mine = logs.slice(mark).filter((r) => r.session === session.id);
    const named = mine.find((r) => (r.level === 'warn' || r.level === 'error') && (problem.test(String(r.reason ?? '')) || problem.test(r.msg)));
    expect(named, `${label}: no warn/error record matching ${problem} among ${json(mine)}`).to.not.equal(undefined);
    expect(hostileDev.events.filter((e) => e.what === 'reset').length, `${label}: device reset on teardown`).to.equal(resets + 1);
    const byNoise = logs.slice(mark).filter((r) => r.socket === bystanderSock && (r.level === 'warn' || r.level === 'error'));
    expect(byNoise, `${label}: bystander logged problems`).to.deep.equal([]);
    await bystanderEcho(label);
    const after = openFds();
    const leaked = after.filter((f) => !before.includes(f));
    expect(after.length, `${label}: open fds ${before.length} -> ${after.length} (new: ${leaked.join(',')})`).to.equal(before.length);
  }

  before(async () => {
    oldSink = setLogSink((r) => logs.push(r));
    setLogLevel('info');
    randomBytes(16); // any lazily opened process-wide fd is opened before the first count
    dir = mkdtempSync(join(tmpdir(), 'vk-hostile-'));
    hostileSock = join(dir, 'hostile.sock');
    bystanderSock = join(dir, 'bystander.sock');
    hostileDev = new EchoDevice();
    hostile = new VhostUserBackend(hostileDev, { socket: hostileSock });
    bystander = new VhostUserBackend(new EchoDevice(), { socket: bystanderSock });
    await hostile.start();
    await bystander.start();
    byFe = await VhostUserFrontend.connect(bystanderSock);
    await byFe.negotiate();
    await byFe.setupMemory(MiB);
    byQ = await byFe.startQueue(0, { size: 64 });
    bySession = await bystander.nextSession();
    await bystanderEcho('warm-up');
  });

  after(async () => {
    byFe?.close();
    await bystander?.stop();
    await hostile?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    setLogSink(oldSink);
    setLogLevel((process.env.VHOSTKIT_LOG as Level | undefined) ?? 'info');
  });

  it('1. a garbage header with a wrong version field', async () => {
    for (const version of [0, 2, 3]) {
      const h = Uint8Array.from(randomBytes(HEADER_SIZE));
      h[4] = (h[4] & ~3) | version; // flags: little-endian u32 at offset 4, version in bits 0-1
      await hostileCase(`garbage header, version ${version}`, new RegExp(`header version ${version}, expected 1`), (fe) => fe.sendBytes(h));
    }
  });

  it('2. a header whose size field is 4 GiB - 1, or MAX_PAYLOAD + 1', async () => {
    await hostileCase('size 0xffffffff', /payload size 4294967295, at most 4096/, (fe) => {
      const h = encodeHeader(Req.GET_FEATURES, VERSION, 0xffffffff);
      fe.sendBytes(h);
    });
    await hostileCase('size MAX_PAYLOAD + 1', /payload size 4097, at most 4096/, (fe) => {
      const m = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD + 1);
      m.set(encodeHeader(Req.GET_FEATURES, VERSION, MAX_PAYLOAD + 1));
      fe.sendBytes(m); // the payload too: the backend must close with it unread
    });
  });

  it('3. a truncated payload (header says 40 bytes, 10 arrive), then the frontend hangs up', async () => {
    await hostileCase(
      'truncated SET_VRING_ADDR',
      /eof in the middle of a message/,
      async (fe, fds) => {
        fe.send(Req.SET_OWNER);
        const m = new Uint8Array(HEADER_SIZE + 10);
        m.set(encodeHeader(Req.SET_VRING_ADDR, VERSION, 40));
        fe.sendBytes(m, [fds.eventfd()]); // an fd with the partial message: must be closed too
        await hostile.nextSession();
        await sleep(20); // let the backend read the partial message
        expect(hostile.session?.closed, 'the session waits for the rest').to.equal(false);
      },
      { frontendCloses: true },
    );
  });

  it('4. a wrong payload size for a known message', async () => {
    await hostileCase('SET_FEATURES with 4 bytes', /SET_FEATURES: payload of 4 bytes, expected 8/, (fe) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_FEATURES, new Uint8Array(4));
    });
    await hostileCase('SET_VRING_NUM with 12 bytes', /SET_VRING_NUM: payload of 12 bytes, expected 8/, (fe) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_VRING_NUM, new Uint8Array(12));
    });
    // With REPLY_ACK negotiated and NEED_REPLY set, the frontend gets a failure ack first.
    await hostileCase(
      'SET_VRING_NUM with 12 bytes, NEED_REPLY',
      /SET_VRING_NUM: payload of 12 bytes, expected 8/,
      (fe) => {
        fe.send(Req.SET_PROTOCOL_FEATURES, u64.encode(bit(ProtocolFeature.REPLY_ACK)));
        fe.send(Req.SET_OWNER);
        fe.send(Req.SET_VRING_NUM, new Uint8Array(12), [], VERSION | FLAG_NEED_REPLY);
      },
      {
        sent: (b) => {
          expect(b.length, 'a nack before closing').to.equal(HEADER_SIZE + 8);
          expect(decodeHeader(b)).to.deep.equal({ request: Req.SET_VRING_NUM, flags: VERSION | FLAG_REPLY, size: 8 });
          expect(u64.decode(b.subarray(HEADER_SIZE))).to.equal(1n);
        },
      },
    );
  });

  it('5. wrong fd counts; every fd received is closed', async () => {
    await hostileCase('SET_MEM_TABLE, 2 regions, 1 fd', /SET_MEM_TABLE: 2 regions but 1 file descriptors/, (fe, fds) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB), region(BigInt(MiB), MiB)]), [fds.memfd(2 * MiB)]);
    });
    await hostileCase('SET_VRING_KICK, no-fd bit and an fd', /SET_VRING_KICK: no-fd flag true with 1 fds/, (fe, fds) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_VRING_KICK, vringFile.encode(0, true), [fds.eventfd()]);
    });
    await hostileCase('SET_VRING_CALL, no fd and no no-fd bit', /SET_VRING_CALL: no-fd flag false with 0 fds/, (fe) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_VRING_CALL, vringFile.encode(1, false));
    });
    await hostileCase('SET_FEATURES with 3 fds', /SET_FEATURES: 3 file descriptors, expected 0/, (fe, fds) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_FEATURES, u64.encode(bit(VIRTIO_F_VERSION_1)), fds.many(3));
    });
    for (const n of [9, MAX_FDS_PER_MESSAGE]) {
      await hostileCase(`GET_FEATURES with ${n} fds`, /more than 8 file descriptors in one message/, (fe, fds) => {
        fe.send(Req.GET_FEATURES, new Uint8Array(0), fds.many(n));
      });
    }
    // A payload that arrives with fds of its own (a second sendmsg) is no message at all.
    await hostileCase('fds in the payload', /file descriptors arrived in the payload of VHOST_USER_SET_FEATURES/, (fe, fds) => {
      fe.send(Req.SET_OWNER);
      fe.sendBytes(encodeHeader(Req.SET_FEATURES, VERSION, 8));
      fe.sendBytes(new Uint8Array(8), [fds.eventfd()]);
    });
  });

  it('6. bad memory tables', async () => {
    const owner = (fe: RawFrontend): void => fe.send(Req.SET_OWNER);
    await hostileCase('overlapping regions (guest-physical)', /regions overlap in guest-physical space/, (fe, fds) => {
      owner(fe);
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB), region(BigInt(MiB / 2), MiB, UVA + 0x10000000n)]), [fds.memfd(MiB), fds.memfd(MiB)]);
    });
    await hostileCase('overlapping regions (frontend-virtual)', /regions overlap in frontend-virtual space/, (fe, fds) => {
      owner(fe);
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB, UVA), region(BigInt(4 * MiB), MiB, UVA + BigInt(MiB / 2))]), [fds.memfd(MiB), fds.memfd(MiB)]);
    });
    await hostileCase('region larger than its memfd', /needs 2097152 bytes of its fd, the file has 1048576/, (fe, fds) => {
      owner(fe);
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, 2 * MiB)]), [fds.memfd(MiB)]);
    });
    await hostileCase('mmap offset past the file end', /needs \d+ bytes of its fd, the file has 1048576/, (fe, fds) => {
      owner(fe);
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, 4096, UVA, BigInt(4 * MiB))]), [fds.memfd(MiB)]);
    });
    await hostileCase('gpa + size wraps 2^64', /wraps the address space/, (fe, fds) => {
      owner(fe);
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0xfffffffffffff000n, MiB, UVA)]), [fds.memfd(MiB)]);
    });
    await hostileCase('uva + size wraps 2^64', /wraps the address space/, (fe, fds) => {
      owner(fe);
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB, 0xffffffffffff0000n)]), [fds.memfd(MiB)]);
    });
    const nine = (): MemRegion[] => Array.from({ length: 9 }, (_, i) => region(BigInt(i * MiB), 4096));
    await hostileCase('9 regions with 9 fds', /more than 8 file descriptors in one message/, (fe, fds) => {
      owner(fe);
      fe.send(
        Req.SET_MEM_TABLE,
        memTable.encode(nine()),
        nine().map(() => fds.memfd(4096)),
      );
    });
    await hostileCase('9 regions with 8 fds', /SET_MEM_TABLE: payload of 296 bytes, expected 8\.\.264/, (fe, fds) => {
      owner(fe);
      fe.send(
        Req.SET_MEM_TABLE,
        memTable.encode(nine()),
        Array.from({ length: 8 }, () => fds.memfd(4096)),
      );
    });
    await hostileCase('a count of 9 in an 8-region payload', /memory table: 9 regions, at most 8/, (fe, fds) => {
      owner(fe);
      const p = memTable.encode(nine().slice(0, 8));
      new DataView(p.buffer).setUint32(0, 9, true);
      fe.send(
        Req.SET_MEM_TABLE,
        p,
        Array.from({ length: 8 }, () => fds.memfd(4096)),
      );
    });
  });

  it('7. messages before SET_OWNER', async () => {
    await hostileCase('SET_MEM_TABLE first', /VHOST_USER_SET_MEM_TABLE before VHOST_USER_SET_OWNER/, (fe, fds) => {
      fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB)]), [fds.memfd(MiB)]);
    });
    await hostileCase('SET_VRING_NUM first', /VHOST_USER_SET_VRING_NUM before VHOST_USER_SET_OWNER/, (fe) => {
      fe.send(Req.SET_VRING_NUM, vs(0, 64));
    });
    await hostileCase('SET_FEATURES first', /VHOST_USER_SET_FEATURES before VHOST_USER_SET_OWNER/, (fe) => {
      fe.send(Req.SET_FEATURES, u64.encode(bit(VIRTIO_F_VERSION_1)));
    });
    await hostileCase('SET_VRING_KICK after GET_FEATURES, before SET_OWNER', /VHOST_USER_SET_VRING_KICK before VHOST_USER_SET_OWNER/, async (fe, fds) => {
      fe.send(Req.GET_FEATURES);
      expect(u64.decode(await fe.reply(Req.GET_FEATURES)) & bit(VHOST_USER_F_PROTOCOL_FEATURES)).to.not.equal(0n);
      fe.send(Req.SET_VRING_KICK, vringFile.encode(0, false), [fds.eventfd()]);
    });
  });

  it('8. unknown and unsupported requests', async () => {
    await hostileCase('request 999 (with an fd)', /unknown or unsupported request 999/, (fe, fds) => {
      fe.send(Req.SET_OWNER);
      fe.send(999, new Uint8Array(8), [fds.eventfd()]);
    });
    await hostileCase('request 0', /unknown or unsupported request 0/, (fe) => fe.send(0));
    await hostileCase('IOTLB_MSG', /unknown or unsupported VHOST_USER_IOTLB_MSG/, (fe) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.IOTLB_MSG, new Uint8Array(64));
    });
    await hostileCase('POSTCOPY_ADVISE', /unknown or unsupported VHOST_USER_POSTCOPY_ADVISE/, (fe) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.POSTCOPY_ADVISE);
    });
    // Known, but behind a protocol feature the frontend did not negotiate.
    await hostileCase('GET_QUEUE_NUM without MQ', /VHOST_USER_GET_QUEUE_NUM without protocol feature MQ/, (fe) => {
      fe.send(Req.GET_QUEUE_NUM);
    });
  });

  it('9. a message with the reply flag set from the frontend', async () => {
    await hostileCase('GET_FEATURES flagged as a reply', /VHOST_USER_GET_FEATURES carries the reply flag/, (fe) => {
      fe.send(Req.GET_FEATURES, new Uint8Array(0), [], VERSION | FLAG_REPLY);
    });
    await hostileCase('SET_FEATURES flagged as a reply', /VHOST_USER_SET_FEATURES carries the reply flag/, (fe) => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_FEATURES, u64.encode(bit(VIRTIO_F_VERSION_1)), [], VERSION | FLAG_REPLY);
    });
  });

  it('10. out-of-order and invalid ring setup', async () => {
    // Split rings (RING_PACKED not acked), one 1 MiB region at gpa 0 / UVA.
    const prelude = (fe: RawFrontend): void => {
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_FEATURES, u64.encode(bit(VIRTIO_F_VERSION_1)));
    };
    const memory = (fe: RawFrontend, fds: Fds): void => fe.send(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB)]), [fds.memfd(MiB)]);
    const goodAddr = addrOf(0, UVA + 0x1000n, UVA + 0x2000n, UVA + 0x3000n);
    await hostileCase('SET_VRING_KICK before SET_MEM_TABLE', /queue 0: started before SET_MEM_TABLE/, (fe, fds) => {
      prelude(fe);
      fe.send(Req.SET_VRING_NUM, vs(0, 64));
      fe.send(Req.SET_VRING_ADDR, goodAddr);
      fe.send(Req.SET_VRING_KICK, vringFile.encode(0, false), [fds.eventfd()]);
    });
    await hostileCase('SET_VRING_KICK before SET_VRING_ADDR', /queue 0: started before SET_VRING_ADDR/, (fe, fds) => {
      prelude(fe);
      memory(fe, fds);
      fe.send(Req.SET_VRING_NUM, vs(0, 64));
      fe.send(Req.SET_VRING_CALL, vringFile.encode(0, false), [fds.eventfd()]);
      fe.send(Req.SET_VRING_KICK, vringFile.encode(0, false), [fds.eventfd()]);
    });
    await hostileCase('SET_VRING_KICK (polling) before SET_VRING_NUM', /queue 1: started before SET_VRING_NUM/, (fe, fds) => {
      prelude(fe);
      memory(fe, fds);
      fe.send(Req.SET_VRING_ADDR, addrOf(1, UVA + 0x1000n, UVA + 0x2000n, UVA + 0x3000n));
      fe.send(Req.SET_VRING_KICK, vringFile.encode(1, true));
    });
    for (const num of [0, 3, 65536]) {
      await hostileCase(`SET_VRING_NUM ${num}`, new RegExp(`SET_VRING_NUM: queue size ${num} \\(at most 1024, a power of 2\\)`), (fe) => {
        prelude(fe);
        fe.send(Req.SET_VRING_NUM, vs(0, num));
      });
    }
    await hostileCase('SET_VRING_NUM on queue 2 of 2', /SET_VRING_NUM: queue 2, the device has 2/, (fe) => {
      prelude(fe);
      fe.send(Req.SET_VRING_NUM, vs(2, 64));
    });
    await hostileCase('SET_VRING_ADDR on queue 0xffffffff', /SET_VRING_ADDR: queue 4294967295, the device has 2/, (fe) => {
      prelude(fe);
      fe.send(Req.SET_VRING_ADDR, addrOf(0xffffffff, UVA, UVA, UVA));
    });
    await hostileCase('SET_VRING_KICK on queue 255 (with an fd)', /SET_VRING_KICK: queue 255, the device has 2/, (fe, fds) => {
      prelude(fe);
      fe.send(Req.SET_VRING_KICK, vringFile.encode(255, false), [fds.eventfd()]);
    });
    // Rings outside the memory table: rejected when the ring starts, never touched.
    const outside: Array<[string, string, Uint8Array]> = [
      ['descriptor table past the region', 'descriptor table', addrOf(0, UVA + BigInt(MiB), UVA + 0x2000n, UVA + 0x3000n)],
      ['used ring straddling the region end', 'used ring', addrOf(0, UVA + 0x1000n, UVA + 0x2000n, UVA + BigInt(MiB) - 16n)],
      ['avail ring below the region', 'avail ring', addrOf(0, UVA + 0x1000n, UVA - 0x1000n, UVA + 0x3000n)],
      ['descriptor table at 2^64 - 16', 'descriptor table', addrOf(0, 0xfffffffffffffff0n, UVA + 0x2000n, UVA + 0x3000n)],
    ];
    for (const [what, area, addr] of outside) {
      await hostileCase(`SET_VRING_ADDR: ${what}, then KICK`, new RegExp(`queue 0: RING_ADDR: ${area} is not inside one memory region`), (fe, fds) => {
        prelude(fe);
        memory(fe, fds);
        fe.send(Req.SET_VRING_NUM, vs(0, 64));
        fe.send(Req.SET_VRING_ADDR, addr);
        fe.send(Req.SET_VRING_KICK, vringFile.encode(0, false), [fds.eventfd()]);
      });
    }
  });

  it('11. SET_FEATURES / SET_PROTOCOL_FEATURES acking bits never offered', async () => {
    for (const [b, hex] of [
      [0, '0x1'],
      [63, '0x8000000000000000'],
    ] as const) {
      await hostileCase(`SET_FEATURES with bit ${b}`, new RegExp(`SET_FEATURES acks features never offered: ${hex}\\b`), (fe) => {
        fe.send(Req.SET_OWNER);
        fe.send(Req.SET_FEATURES, u64.encode(bit(VIRTIO_F_VERSION_1) | bit(b)));
      });
    }
    await hostileCase('SET_PROTOCOL_FEATURES with PAGEFAULT', /SET_PROTOCOL_FEATURES acks features never offered: 0x100\b/, (fe) => {
      fe.send(Req.SET_PROTOCOL_FEATURES, u64.encode(bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.PAGEFAULT)));
    });
  });

  it('12. a frontend that disconnects after each step of a normal setup', async () => {
    const features = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
    const protocolFeatures = bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.MQ);
    const QSIZE = 64;
    const steps: Array<[string, (fe: VhostUserFrontend, st: SetupState) => Promise<unknown>]> = [
      ['GET_FEATURES', (fe) => fe.getFeatures()],
      ['GET_PROTOCOL_FEATURES', (fe) => fe.getProtocolFeatures()],
      ['SET_PROTOCOL_FEATURES', (fe) => fe.setProtocolFeatures(protocolFeatures)],
      ['SET_OWNER', (fe) => fe.setOwner()],
      ['SET_FEATURES', (fe) => fe.setFeatures(features)],
      ['SET_MEM_TABLE', (fe, st) => fe.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB)]), { fds: [st.memfd], ack: true })],
      ['SET_VRING_NUM', (fe) => fe.request(Req.SET_VRING_NUM, vs(0, QSIZE), { ack: true })],
      ['SET_VRING_BASE', (fe) => fe.request(Req.SET_VRING_BASE, vs(0, 0), { ack: true })],
      ['SET_VRING_ADDR', (fe, st) => fe.request(Req.SET_VRING_ADDR, addrOf(0, UVA + BigInt(st.driver.descAddr), UVA + BigInt(st.driver.availAddr), UVA + BigInt(st.driver.usedAddr)), { ack: true })],
      ['SET_VRING_CALL', (fe, st) => fe.request(Req.SET_VRING_CALL, vringFile.encode(0, false), { fds: [st.call.fd], ack: true })],
      ['SET_VRING_KICK', (fe, st) => fe.request(Req.SET_VRING_KICK, vringFile.encode(0, false), { fds: [st.kick.fd], ack: true })],
      ['SET_VRING_ENABLE', (fe) => fe.request(Req.SET_VRING_ENABLE, vs(0, 1), { ack: true })],
      [
        'traffic in flight',
        async (_fe, st) => {
          hostileDev.hold = true; // the device keeps the chains: they are in flight when we leave
          const served = hostileDev.served;
          for (let i = 0; i < 3; i++)
            st.driver.add([
              { len: 8, writable: false, data: Uint8Array.of(i, 1, 2, 3, 4, 5, 6, 7) },
              { len: 8, writable: true },
            ]);
          st.driver.publish();
          st.kick.write(1n);
          const deadline = Date.now() + 2000;
          while (hostileDev.served < served + 3) {
            if (Date.now() > deadline) throw new Error(`the device served ${hostileDev.served - served} of 3 chains`);
            await sleep(1);
          }
        },
      ],
    ];
    interface SetupState {
      memfd: number;
      mem: GuestMemory;
      driver: SplitDriver;
      kick: EventFd;
      call: EventFd;
    }
    try {
      for (let k = 1; k <= steps.length; k++) {
        const label = `disconnect after ${steps[k - 1][0]}`;
        const before = openFds();
        const mark = logs.length;
        const ev0 = hostileDev.events.length;
        const closed = waitClosed(hostile, label);
        const memfd = createMemfd('hostile-setup', MiB);
        const mem = GuestMemory.map([{ fd: memfd, ...region(0n, MiB) }]);
        const st: SetupState = { memfd, mem, driver: new SplitDriver({ mem: mem.view(0), base: 0, size: QSIZE, alloc: new BumpAllocator(0, MiB) }), kick: new EventFd(), call: new EventFd() };
        let session: Session;
        let reason: string;
        try {
          const fe = await VhostUserFrontend.connect(hostileSock);
          try {
            for (const [, step] of steps.slice(0, k)) await step(fe, st);
          } finally {
            fe.close();
          }
          [session, reason] = await closed.done;
        } finally {
          closed.cancel();
          hostileDev.hold = false;
          st.mem.close();
          closeFd(st.memfd);
          st.kick.close();
          st.call.close();
        }
        expect(reason, label).to.equal('eof');
        expect(session.closed, label).to.equal(true);
        const events = hostileDev.events.slice(ev0).map((e) => e.what);
        expect(events, `${label}: device events`).to.include('reset');
        expect(events.at(-1), `${label}: reset is the last thing the device hears`).to.equal('reset');
        if (k >= 12) expect(events, `${label}: the ring ran and was stopped`).to.include.members(['start', 'stop']);
        const mine = logs.slice(mark).filter((r) => r.session === session.id);
        expect(
          mine.some((r) => r.msg === 'frontend disconnected' && r.reason === 'eof'),
          `${label}: ${json(mine)}`,
        ).to.equal(true);
        expect(
          mine.filter((r) => r.level === 'error'),
          `${label}: errors`,
        ).to.deep.equal([]);
        const after = openFds();
        expect(after.length, `${label}: open fds ${before.length} -> ${after.length} (new: ${after.filter((f) => !before.includes(f)).join(',')})`).to.equal(before.length);
        await bystanderEcho(label);
      }
    } finally {
      hostileDev.hold = false;
    }
    // After all that, the same socket still serves a full session with traffic.
    const before = openFds();
    const closed = waitClosed(hostile, 'final session');
    const fe = await VhostUserFrontend.connect(hostileSock);
    try {
      await fe.negotiate();
      await fe.setupMemory(MiB);
      const q = await fe.startQueue(0, { size: 64 });
      const id = q.driver.add([
        { len: 4, writable: false, data: Uint8Array.of(9, 8, 7, 6) },
        { len: 4, writable: true },
      ]);
      q.publishAndKick();
      expect(await q.waitUsed(1, 2000)).to.deep.equal([{ id, len: 4 }]);
      expect(Array.from(q.driver.readWritten(id, 4))).to.deep.equal([6, 7, 8, 9]);
    } finally {
      fe.close();
    }
    await closed.done.finally(closed.cancel);
    expect(openFds().length, 'final session: fds').to.equal(before.length);
  });
});
