// A vhost-user-blk backend with rules broken on purpose, for the conformance tests: each
// broken rule must be caught by a case of `vhostkit conformance`. It is vhostkit's own RAM
// disk (openDisk + VhostUserBackend on an inner socket) behind a proxy on the public socket
// that passes every message and its fds through, except where a rule says otherwise:
//
//   vring-base-plus-one   GET_VRING_BASE answers one more than the ring's real index
//   crash-on-bad-version  a header whose version is not 1 kills the process with SIGSEGV
//   leak-unknown-fds      the fds of an unknown request are kept open, never closed
//   hang-on-big-size      a header whose size is above 4096 stops the proxy reading that
//                         connection (it stays open, nothing is answered)
//   status-zero           GET_STATUS always answers 0
//   config-wrong-size     GET_CONFIG answers with a size one less than asked
//   mem-slots-plus-one    GET_MAX_MEM_SLOTS answers one more than the backend takes
//   inflight-too-small    GET_INFLIGHT_FD answers mmap_size 64
//
//   node dist/test/conformance/broken-backend.js SOCKET RULE[,RULE...]
import { FdWatcher, acceptUnix, closeFd, connectUnix, listenUnix, peerClosed, recvMessage, sendMessage } from '../../src/native/unix-socket.js';
import { openDisk } from '../../src/backends/blk/disk.js';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { HEADER_SIZE, MAX_PAYLOAD, Req } from '../../src/vhost-user/protocol.js';
import { setLogLevel } from '../../src/log.js';

export const RULES = ['vring-base-plus-one', 'crash-on-bad-version', 'leak-unknown-fds', 'hang-on-big-size', 'status-zero', 'config-wrong-size', 'mem-slots-plus-one', 'inflight-too-small'] as const;
export type Rule = (typeof RULES)[number];

/** One direction of a connection: bytes cut into messages (header, payload) with their fds. */
class Framer {
  private buf = new Uint8Array(0);
  private fds: number[] = [];
  push(bytes: Uint8Array, fds: number[]): void {
    const b = new Uint8Array(this.buf.length + bytes.length);
    b.set(this.buf);
    b.set(bytes, this.buf.length);
    this.buf = b;
    this.fds.push(...fds);
  }
  header(): { request: number; flags: number; size: number } | null {
    if (this.buf.length < HEADER_SIZE) return null;
    const v = new DataView(this.buf.buffer, this.buf.byteOffset);
    return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
  }
  /** Bytes to read next so that a read never runs into the next message (whose fds come with its first byte). */
  need(): number {
    const h = this.header();
    return h === null ? HEADER_SIZE - this.buf.length : Math.max(1, Math.min(65536, HEADER_SIZE + h.size - this.buf.length));
  }
  take(): { bytes: Uint8Array; fds: number[] } | null {
    const h = this.header();
    if (!h || this.buf.length < HEADER_SIZE + h.size) return null;
    const bytes = this.buf.slice(0, HEADER_SIZE + h.size);
    this.buf = this.buf.slice(HEADER_SIZE + h.size);
    const fds = this.fds;
    this.fds = [];
    return { bytes, fds };
  }
  closeFds(): void {
    for (const fd of this.fds.splice(0)) closeFd(fd);
  }
}

function sendAll(fd: number, bytes: Uint8Array, fds: number[]): void {
  let off = 0;
  let f = fds;
  while (off < bytes.length) {
    const n = sendMessage(fd, bytes.subarray(off), f);
    if (n === null) continue; // our messages are small; the peer reads
    off += n;
    f = [];
  }
}

class ProxyConnection {
  private readonly inner: number;
  private readonly fromClient = new Framer();
  private readonly fromInner = new Framer();
  private readonly wClient: FdWatcher;
  private readonly wInner: FdWatcher;
  closed = false;
  private readonly rx = new Uint8Array(65536);

  constructor(
    readonly client: number,
    innerSocket: string,
    private readonly rules: Set<Rule>,
  ) {
    this.inner = connectUnix(innerSocket);
    this.wClient = new FdWatcher(client, () => this.read(this.client, this.fromClient, true));
    this.wInner = new FdWatcher(this.inner, () => this.read(this.inner, this.fromInner, false));
    this.wClient.start(true, false);
    this.wInner.start(true, false);
  }

  private read(fd: number, framer: Framer, fromClient: boolean): void {
    while (!this.closed) {
      let r;
      try {
        r = recvMessage(fd, this.rx.subarray(0, framer.need()), 8);
      } catch {
        return this.close();
      }
      if (r === null) return;
      if (r.bytes === 0) return this.close();
      framer.push(this.rx.slice(0, r.bytes), r.fds);
      for (;;) {
        const h = framer.header();
        if (!h) break;
        if (fromClient && (h.flags & 3) !== 1 && this.rules.has('crash-on-bad-version')) process.kill(process.pid, 'SIGSEGV');
        if (fromClient && h.size > MAX_PAYLOAD && this.rules.has('hang-on-big-size')) {
          this.wClient.stop(); // never read this connection again, never answer, never close
          return;
        }
        if (fromClient && h.size > MAX_PAYLOAD) return this.close(); // as vhostkit itself does, without waiting for the payload
        const m = framer.take();
        if (!m) break;
        if (fromClient) this.toInner(h.request, m.bytes, m.fds);
        else this.toClient(h.request, m.bytes, m.fds);
      }
    }
  }

  private toInner(request: number, bytes: Uint8Array, fds: number[]): void {
    try {
      sendAll(this.inner, bytes, fds);
    } catch {
      this.close();
    }
    const unknown = Req[request] === undefined;
    if (!(unknown && this.rules.has('leak-unknown-fds'))) for (const fd of fds) closeFd(fd);
  }

  private toClient(request: number, bytes: Uint8Array, fds: number[]): void {
    const v = new DataView(bytes.buffer, bytes.byteOffset);
    const body = HEADER_SIZE;
    if (request === Req.GET_VRING_BASE && this.rules.has('vring-base-plus-one')) v.setUint32(body + 4, v.getUint32(body + 4, true) + 1, true);
    if (request === Req.GET_STATUS && this.rules.has('status-zero')) v.setBigUint64(body, 0n, true);
    if (request === Req.GET_CONFIG && this.rules.has('config-wrong-size') && bytes.length > body + 8) v.setUint32(body + 4, v.getUint32(body + 4, true) - 1, true);
    if (request === Req.GET_MAX_MEM_SLOTS && this.rules.has('mem-slots-plus-one')) v.setBigUint64(body, v.getBigUint64(body, true) + 1n, true);
    if (request === Req.GET_INFLIGHT_FD && this.rules.has('inflight-too-small')) v.setBigUint64(body, 64n, true);
    try {
      sendAll(this.client, bytes, fds);
    } catch {
      this.close();
    }
    for (const fd of fds) closeFd(fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wClient.close();
    this.wInner.close();
    this.fromClient.closeFds();
    this.fromInner.closeFds();
    closeFd(this.client);
    closeFd(this.inner);
  }
}

async function main(): Promise<void> {
  const [socket, list] = process.argv.slice(2);
  const rules = new Set((list ?? '').split(',').filter((r) => r !== '' && r !== 'none') as Rule[]);
  for (const r of rules) if (!RULES.includes(r)) throw new Error(`unknown rule ${r} (rules: ${RULES.join(', ')})`);
  setLogLevel('error');
  const disk = openDisk({ ramBytes: 16 << 20 });
  const innerSocket = `${socket}.inner`;
  const be = new VhostUserBackend(disk.device, { socket: innerSocket });
  await be.start();
  const lfd = listenUnix(socket);
  let conns: ProxyConnection[] = [];
  const w = new FdWatcher(lfd, () => {
    for (;;) {
      const c = acceptUnix(lfd);
      if (c === null) return;
      // A client that hung up just before this one: its inner session goes first, or the
      // inner backend (one session at a time) would refuse the new one.
      for (const p of conns) if (!p.closed && peerClosed(p.client)) p.close();
      conns = conns.filter((p) => !p.closed);
      conns.push(new ProxyConnection(c, innerSocket, rules));
    }
  });
  w.start(true, false);
  const stop = async (): Promise<void> => {
    w.close();
    closeFd(lfd);
    await be.stop();
    disk.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

if (process.argv[1]?.endsWith('broken-backend.js')) await main();
