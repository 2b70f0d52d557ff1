// Serves one device on one vhost-user socket, in server mode (we listen; the frontend,
// e.g. QEMU with -chardev socket,path=...,reconnect=1, connects, and we listen again
// after it leaves) or client mode (the frontend listens, e.g. QEMU with server=on; we
// connect, and reconnect with backoff after a disconnect).
import { EventEmitter } from 'node:events';
import { closeSync, lstatSync, unlinkSync } from 'node:fs';
import { bindSocketFile, removeSocketFile } from '../native/socket-files.js';
import { FdWatcher, acceptUnix, connectUnix, listenUnix, peerClosed } from '../native/unix-socket.js';
import { log as rootLog, type Logger } from '../log.js';
import type { VhostUserDevice } from './device.js';
import { Session, checkDevice, resolveLimits, type SessionLimits } from './session.js';

export interface BackendOptions {
  /** Unix socket path */
  socket: string;
  /** 'server' (default): listen on the path; 'client': connect to a listening frontend. */
  mode?: 'server' | 'client';
  log?: Logger;
  /** Ring burst size (default 32). */
  burst?: number;
  /** Permission bits of the socket file in server mode (default 0o600). */
  socketMode?: number;
  /** Group (gid) of the socket file in server mode (default: the process's). */
  socketGroup?: number;
  /** Client mode: first and longest delay between connection attempts (ms). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** What one frontend may make a session hold (memory regions, mapped bytes); see SessionLimits. */
  limits?: SessionLimits;
  /**
   * Ring position record file for a device that completes chains in order (see
   * SessionOptions.ringRecord and ring-record.ts): with it, packed rings survive a backend
   * restart (kill -9 included). Default: none.
   */
  ringRecord?: string;
}

/** Removes a stale socket file; refuses to touch anything else or a socket in use. */
export function prepareSocketPath(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  try {
    const fd = connectUnix(path);
    closeSync(fd);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ECONNREFUSED') {
      unlinkSync(path); // stale: nobody listens
      return;
    }
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  throw new Error(`${path} is in use by another process`);
}

function peerClosedSafe(fd: number): boolean {
  try {
    return peerClosed(fd);
  } catch {
    return true;
  }
}

export class VhostUserBackend extends EventEmitter {
  readonly log: Logger;
  private listenFd = -1;
  private socketIno = -1;
  private listenWatcher: FdWatcher | null = null;
  private current: Session | null = null;
  /** A frontend that connected while the previous session was still closing: served next. */
  private waiting: number | null = null;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelay: number;
  private readonly mode: 'server' | 'client';

  constructor(
    readonly device: VhostUserDevice,
    readonly opts: BackendOptions,
  ) {
    super();
    checkDevice(device); // a device vhost-user cannot address fails here, not at the first connection
    resolveLimits(opts.limits);
    this.mode = opts.mode ?? 'server';
    this.log = (opts.log ?? rootLog).child({ socket: opts.socket, mode: this.mode });
    this.retryDelay = opts.reconnectMinMs ?? 100;
  }

  /** The connected frontend's session, if any. */
  get session(): Session | null {
    return this.current;
  }

  /** Server: listening when this resolves. Client: the first connection attempt was made. */
  async start(): Promise<void> {
    if (this.mode === 'server') {
      prepareSocketPath(this.opts.socket);
      const b = bindSocketFile(
        this.opts.socket,
        () => listenUnix(this.opts.socket),
        this.opts.socketMode,
        this.opts.socketGroup,
        (fd) => closeSync(fd),
      );
      this.listenFd = b.result;
      this.socketIno = b.ino;
      this.listenWatcher = new FdWatcher(this.listenFd, () => this.onAccept());
      this.listenWatcher.start(true, false);
      this.log.info('listening');
    } else {
      this.tryConnect();
    }
  }

  /** Waits for the next session to start (resolves at once if one is active). */
  nextSession(timeoutMs = 10000): Promise<Session> {
    if (this.current && !this.current.closed) return Promise.resolve(this.current);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('session', on);
        reject(new Error(`no frontend connected to ${this.opts.socket} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (s: Session) => {
        clearTimeout(t);
        resolve(s);
      };
      this.once('session', on);
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
      if (this.current) {
        // A frontend that reconnects at once (a restarted QEMU, a driver reload, DPDK's
        // virtio-user) connects before its previous session has read its EOF. If that
        // frontend has closed its end, its session is over: end it now and serve the new one
        // when it is gone. Only a frontend whose predecessor is still connected is refused.
        if (this.current.frontendGone) {
          if (this.waiting !== null) {
            // Several fast reconnects in a row: the newest live one waits, the others are gone.
            if (!peerClosedSafe(this.waiting)) {
              this.log.warn('a frontend connected while another waits for the previous session to end; refusing it');
              closeSync(fd);
              continue;
            }
            closeSync(this.waiting);
          }
          this.log.info('a frontend connected and the previous one has closed its connection: serving it once that session ends');
          this.waiting = fd;
          void this.current.close('the frontend closed its connection and a new one connected');
          continue;
        }
        this.log.warn('a second frontend connected while one is active; refusing it');
        closeSync(fd);
        continue;
      }
      this.attach(fd);
    }
  }

  private tryConnect(): void {
    this.retryTimer = null;
    if (this.stopped || this.current) return;
    let fd: number;
    try {
      fd = connectUnix(this.opts.socket);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      this.log.debug('frontend not reachable yet', { code, retryMs: this.retryDelay });
      this.retryTimer = setTimeout(() => this.tryConnect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, this.opts.reconnectMaxMs ?? 5000);
      return;
    }
    this.retryDelay = this.opts.reconnectMinMs ?? 100;
    this.attach(fd);
  }

  private attach(fd: number): void {
    const s = new Session(fd, this.device, { log: this.log, burst: this.opts.burst, limits: this.opts.limits, ringRecord: this.opts.ringRecord });
    this.current = s;
    s.once('closed', (reason: string) => {
      if (this.current === s) this.current = null;
      this.emit('session-closed', s, reason);
      if (this.waiting !== null && this.current === null) {
        const next = this.waiting;
        this.waiting = null;
        if (this.stopped) closeSync(next);
        else this.attach(next);
      }
      if (this.mode === 'client' && !this.stopped) {
        this.retryTimer = setTimeout(() => this.tryConnect(), this.retryDelay);
      }
    });
    this.emit('session', s);
  }

  /** Stops listening or reconnecting, closes the session, removes the socket we created. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.listenWatcher?.close();
    this.listenWatcher = null;
    if (this.listenFd >= 0) {
      closeSync(this.listenFd);
      this.listenFd = -1;
      removeSocketFile(this.opts.socket, this.socketIno);
    }
    if (this.current) await this.current.close('backend stopping');
    if (this.waiting !== null && this.current === null) {
      closeSync(this.waiting);
      this.waiting = null;
    }
  }
}
