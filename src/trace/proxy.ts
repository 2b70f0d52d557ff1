// The trace proxy: listens where the frontend (QEMU) expects its backend, and for each
// frontend that connects, connects to the real backend and passes every message both ways
// as it came (header, payload and fds), decoding each on its way (decode.ts) into a record.
// SET_BACKEND_REQ_FD's socket is swapped for one end of a socket pair of ours, so the
// backend's own requests (CONFIG_CHANGE_MSG, ...) are traced too. With ring snapshots on,
// the guest memory the frontend shares is mapped here as well and each started ring's
// indices are read periodically (rings.ts).
//
// One connection ending ends its partner: a backend that goes away (restart, crash) closes
// the frontend's connection, which QEMU (`reconnect=1`) opens again, and the next session
// connects to the backend anew; a frontend that goes closes the backend's connection. A
// frontend that connects while the backend is down is turned away (QEMU retries). What does
// not decode is forwarded all the same with a log line; a stream that cannot be framed (a
// bad header version, a size beyond what vhost-user allows, too many fds) ends the session
// with a log line naming it. Nothing a peer sends ends the proxy.
import { closeSync } from 'node:fs';
import { log as rootLog, type Logger } from '../log.js';
import { bindSocketFile, removeSocketFile } from '../native/socket-files.js';
import { FdWatcher, acceptUnix, closeFd, connectUnix, listenUnix, peerClosed, peerCredentials, socketPair } from '../native/unix-socket.js';
import { prepareSocketPath } from '../vhost-user/backend.js';
import { MessageChannel, closeFds } from '../vhost-user/channel.js';
import type { ProbeType } from '../vhost-user/probe.js';
import { Req, memTable, singleRegion, type Message } from '../vhost-user/protocol.js';
import { SessionState, decodeMessage, nowMs, requestName, type Channel, type MessageRecord, type Side, type TraceRecord } from './decode.js';
import { describeFd } from './fd-info.js';
import { RingReader } from './rings.js';

/**
 * Largest payload passed through. vhost-user messages are far smaller (a memory table of
 * 8 regions is 264 bytes, a config space access at most 268); a header that announces more
 * is not a vhost-user stream.
 */
export const PROXY_MAX_PAYLOAD = 65536;

export interface TraceProxyOptions {
  /** socket the frontend connects to (we listen; a stale socket file is replaced) */
  listen: string;
  /** the backend's socket (we connect, once per frontend connection) */
  connect: string;
  /** every record, in order */
  onRecord: (r: TraceRecord) => void;
  /** snapshot started rings every `intervalMs` (only when an index changed) */
  rings?: { intervalMs: number };
  /** device type for feature names (default: guessed from GET_FEATURES) */
  deviceType?: ProbeType;
  /** permission bits of the listening socket (default 0o600) */
  socketMode?: number;
  log?: Logger;
}

/** One frontend connection and its backend connection. */
export class ProxySession {
  readonly state: SessionState;
  private front: MessageChannel | null = null;
  private back: MessageChannel | null = null;
  private backendChannel: { front: MessageChannel; back: MessageChannel } | null = null;
  private readonly rings: RingReader | null;
  private ringTimer: NodeJS.Timeout | null = null;
  private lastRings = '';
  private ended = false;
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  /**
   * Takes both connected fds (closed here if the session cannot start). `onEnd` is told who
   * ended the session.
   */
  constructor(
    readonly id: number,
    frontFd: number,
    backFd: number,
    private readonly opts: TraceProxyOptions,
    private readonly log: Logger,
    private readonly onEnd: (side: Side | 'proxy') => void = () => undefined,
  ) {
    this.state = new SessionState(opts.deviceType);
    this.done = new Promise((r) => (this.resolveDone = r));
    this.rings = opts.rings ? new RingReader() : null;
    let pid: number | undefined;
    try {
      pid = peerCredentials(frontFd).pid;
    } catch {
      pid = undefined; // not a Unix socket peer we can ask: the record goes without it
    }
    try {
      this.front = new MessageChannel(frontFd, { message: (m) => this.guard(() => this.fromFrontend(m), m), closed: (r) => this.end('frontend', r) }, PROXY_MAX_PAYLOAD);
    } catch (e) {
      closeSync(backFd); // the frontend's fd was closed by the channel that could not watch it
      this.ended = true;
      this.log.warn('session refused', { session: id, reason: `cannot watch the frontend's connection: ${(e as Error).message}` });
      this.resolveDone();
      return;
    }
    this.emit({ type: 'session', t: nowMs(), session: id, event: 'open', frontend: opts.listen, backend: opts.connect, ...(pid ? { frontendPid: pid } : {}) });
    this.log.info('session opened', { session: id, frontendPid: pid });
    try {
      this.back = new MessageChannel(backFd, { message: (m) => this.guard(() => this.fromBackend(m), m), closed: (r) => this.end('backend', r) }, PROXY_MAX_PAYLOAD);
    } catch (e) {
      this.end('proxy', `cannot watch the backend's connection: ${(e as Error).message}`);
      return;
    }
    if (this.rings && opts.rings) this.ringTimer = setInterval(() => this.snapshotRings(), opts.rings.intervalMs);
  }

  get closed(): boolean {
    return this.ended;
  }

  private emit(r: TraceRecord): void {
    try {
      this.opts.onRecord(r);
    } catch (e) {
      this.log.error('writing a trace record failed', { session: this.id, error: (e as Error).message });
    }
  }

  /** Runs a message handler; a failure of ours ends the session, never the process. */
  private guard(fn: () => void, m: Message): void {
    try {
      fn();
    } catch (e) {
      closeFds(m.fds);
      this.end('proxy', `internal error while passing ${requestName('main', m.request)} on: ${(e as Error).message}`);
    }
  }

  private record(channel: Channel, from: Side, m: Message): MessageRecord {
    const rec = decodeMessage(this.state, this.id, channel, from, m, m.fds.map(describeFd));
    this.emit(rec);
    if (rec.error !== undefined) this.log.warn('malformed message forwarded as it came', { session: this.id, from, channel, request: rec.name, error: rec.error });
    return rec;
  }

  private fromFrontend(m: Message): void {
    const rec = this.record('main', 'frontend', m);
    let fds = m.fds;
    let extra: number | null = null;
    if (rec.error === undefined) {
      if (m.request === Req.SET_BACKEND_REQ_FD && m.fds.length === 1) {
        // Interpose on the backend request channel: the backend gets our socket pair's end.
        const [ours, theirs] = socketPair();
        this.interposeBackendChannel(m.fds[0], ours);
        m.fds[0] = -1;
        fds = [theirs];
        extra = theirs;
      }
      if (this.rings) this.trackMemory(m);
    }
    this.forward(this.back, m, fds);
    if (extra !== null) closeFd(extra);
    closeFds(m.fds);
  }

  private fromBackend(m: Message): void {
    this.record('main', 'backend', m);
    this.forward(this.front, m, m.fds);
    closeFds(m.fds);
  }

  private forward(to: MessageChannel | null, m: Message, fds: number[]): void {
    if (to === null || to.closed) return;
    try {
      to.send(
        m.request,
        m.flags,
        m.payload,
        fds.filter((f) => f >= 0),
      );
    } catch (e) {
      this.end('proxy', `passing ${requestName('main', m.request)} on failed: ${(e as Error).message}`);
    }
  }

  private interposeBackendChannel(frontendFd: number, ours: number): void {
    this.closeBackendChannel();
    let front: MessageChannel | null = null;
    const pair = { front: null as unknown as MessageChannel, back: null as unknown as MessageChannel };
    const closed = (side: Side, reason: string) => {
      if (this.backendChannel !== pair) return;
      this.backendChannel = null;
      this.log.info('backend request channel closed', { session: this.id, side, reason });
      pair.front?.close();
      pair.back?.close();
    };
    try {
      front = new MessageChannel(frontendFd, { message: (m) => this.guard(() => this.onBackendChannel('frontend', m), m), closed: (r) => closed('frontend', r) }, PROXY_MAX_PAYLOAD);
      pair.front = front;
      pair.back = new MessageChannel(ours, { message: (m) => this.guard(() => this.onBackendChannel('backend', m), m), closed: (r) => closed('backend', r) }, PROXY_MAX_PAYLOAD);
    } catch (e) {
      front?.close();
      this.log.warn('cannot trace the backend request channel', { session: this.id, error: (e as Error).message });
      return;
    }
    this.backendChannel = pair;
  }

  private onBackendChannel(from: Side, m: Message): void {
    this.record('backend', from, m);
    const pair = this.backendChannel;
    if (pair !== null) this.forward(from === 'backend' ? pair.front : pair.back, m, m.fds);
    closeFds(m.fds);
  }

  private closeBackendChannel(): void {
    const pair = this.backendChannel;
    this.backendChannel = null;
    pair?.front.close();
    pair?.back.close();
  }

  private trackMemory(m: Message): void {
    try {
      if (m.request === Req.SET_MEM_TABLE) this.rings!.setTable(memTable.decode(m.payload), m.fds);
      else if (m.request === Req.ADD_MEM_REG) this.rings!.addRegion(singleRegion.decode(m.payload), m.fds[0]);
      else if (m.request === Req.REM_MEM_REG) this.rings!.removeRegion(singleRegion.decode(m.payload));
    } catch (e) {
      this.log.warn('ring snapshots: cannot map the guest memory', { session: this.id, error: (e as Error).message });
    }
  }

  private snapshotRings(): void {
    if (this.ended || this.rings === null || !this.rings.mapped) return;
    let rings;
    try {
      rings = this.rings.snapshot(this.state);
    } catch (e) {
      this.log.warn('ring snapshot failed', { session: this.id, error: (e as Error).message });
      return;
    }
    if (rings.length === 0) return;
    const key = JSON.stringify(rings);
    if (key === this.lastRings) return;
    this.lastRings = key;
    this.emit({ type: 'rings', t: nowMs(), session: this.id, rings });
  }

  /** Ends the session: both connections and the backend channel close. */
  end(side: Side | 'proxy', reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.ringTimer) clearInterval(this.ringTimer);
    this.emit({ type: 'session', t: nowMs(), session: this.id, event: 'close', side, reason });
    this.log.info('session closed', { session: this.id, side, reason });
    this.front?.close(`the ${side} ended the session`);
    this.back?.close(`the ${side} ended the session`);
    this.closeBackendChannel();
    this.rings?.close();
    this.resolveDone();
    this.onEnd(side);
  }
}

function peerClosedSafe(fd: number): boolean {
  try {
    return peerClosed(fd);
  } catch {
    return true;
  }
}

export class TraceProxy {
  readonly log: Logger;
  private listenFd = -1;
  private ino = -1;
  private watcher: FdWatcher | null = null;
  /** a backend connection made while waiting for the backend to come back, for the next frontend */
  private held = -1;
  private pollTimer: NodeJS.Timeout | null = null;
  private pollDelay = 100;
  private stopped = false;
  private nextId = 1;
  private readonly live = new Set<ProxySession>();
  private readonly waiters: Array<(s: ProxySession) => void> = [];

  constructor(readonly opts: TraceProxyOptions) {
    this.log = (opts.log ?? rootLog).child({ component: 'trace' });
  }

  /** Listening when this resolves. */
  async start(): Promise<void> {
    this.listen();
    this.log.info('tracing', { listen: this.opts.listen, backend: this.opts.connect });
  }

  /** Whether frontends can connect now (not while the backend is known to be down). */
  get listening(): boolean {
    return this.listenFd >= 0;
  }

  private listen(): void {
    prepareSocketPath(this.opts.listen);
    const b = bindSocketFile(
      this.opts.listen,
      () => listenUnix(this.opts.listen),
      this.opts.socketMode,
      undefined,
      (fd) => closeSync(fd),
    );
    this.listenFd = b.result;
    this.ino = b.ino;
    this.watcher = new FdWatcher(this.listenFd, () => this.onAccept());
    this.watcher.start(true, false);
  }

  /**
   * Stops listening (the socket file stays: a frontend's connect is refused, as it would be
   * by the backend's own socket with nobody behind it) until the backend accepts a connection
   * again. Without this, QEMU's reconnect would find a proxy that takes its connection and
   * drops it in the middle of its vhost-user setup, which QEMU 7.2's vhost-user-blk does not
   * recover from ("vhost_backend_init failed: Protocol error", then no more attempts).
   */
  private backendDown(why: string): void {
    if (this.stopped || this.pollTimer !== null) return;
    if (this.listenFd >= 0) {
      this.watcher?.close();
      this.watcher = null;
      closeSync(this.listenFd);
      this.listenFd = -1;
      this.log.info('the backend is gone: frontends are refused until it is back', { backend: this.opts.connect, why });
    }
    this.pollDelay = 100;
    this.pollTimer = setTimeout(() => this.pollBackend(), 0);
  }

  /** Tries the backend (100 ms, then up to 1 s apart); once it answers, listens again. */
  private pollBackend(): void {
    this.pollTimer = null;
    if (this.stopped) return;
    try {
      this.held = connectUnix(this.opts.connect);
    } catch {
      this.pollTimer = setTimeout(() => this.pollBackend(), this.pollDelay);
      this.pollDelay = Math.min(this.pollDelay * 2, 1000);
      return;
    }
    try {
      this.listen();
      this.log.info('the backend is back: listening', { listen: this.opts.listen });
    } catch (e) {
      this.log.error('cannot listen again', { listen: this.opts.listen, error: (e as Error).message });
      closeSync(this.held);
      this.held = -1;
      this.pollTimer = setTimeout(() => this.pollBackend(), 1000);
    }
  }

  /** A connection to the backend: the one held since it came back, or a new one; or why not. */
  private backendFd(): { fd: number } | { error: string } {
    if (this.held >= 0) {
      const fd = this.held;
      this.held = -1;
      if (!peerClosedSafe(fd)) return { fd };
      closeSync(fd);
    }
    try {
      return { fd: connectUnix(this.opts.connect) };
    } catch (e) {
      return { error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
    }
  }

  /** Sessions not ended yet. */
  get sessions(): ProxySession[] {
    return [...this.live];
  }

  /** The next session that opens (refused ones included). */
  nextSession(timeoutMs = 10000): Promise<ProxySession> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(on);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no frontend connected to ${this.opts.listen} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (s: ProxySession) => {
        clearTimeout(t);
        resolve(s);
      };
      this.waiters.push(on);
    });
  }

  private onAccept(): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = acceptUnix(this.listenFd);
      } catch (e) {
        this.log.error('accept failed', { error: (e as Error).message });
        return;
      }
      if (fd === null) return;
      const id = this.nextId++;
      const back = this.backendFd();
      if ('error' in back) {
        closeSync(fd);
        const reason = `the backend ${this.opts.connect} is not reachable (${back.error}): the frontend's connection is closed, and the next ones are refused until it is back (QEMU with reconnect=1 retries)`;
        try {
          this.opts.onRecord({ type: 'session', t: nowMs(), session: id, event: 'refused', reason, frontend: this.opts.listen, backend: this.opts.connect });
        } catch (e) {
          this.log.error('writing a trace record failed', { session: id, error: (e as Error).message });
        }
        this.log.warn('session refused', { session: id, reason });
        this.backendDown(back.error);
        return;
      }
      const s = new ProxySession(id, fd, back.fd, this.opts, this.log, (side) => {
        if (side === 'backend') this.backendDown('the backend ended a session');
      });
      if (!s.closed) {
        this.live.add(s);
        void s.done.then(() => this.live.delete(s));
      }
      for (const w of this.waiters.splice(0)) w(s);
    }
  }

  /** Stops listening, ends every session, removes the socket file. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    if (this.held >= 0) closeSync(this.held);
    this.held = -1;
    this.watcher?.close();
    this.watcher = null;
    if (this.listenFd >= 0) {
      closeSync(this.listenFd);
      this.listenFd = -1;
      removeSocketFile(this.opts.listen, this.ino);
    }
    for (const s of [...this.live]) s.end('proxy', 'the proxy stopped');
    await Promise.all([...this.live].map((s) => s.done));
  }
}
