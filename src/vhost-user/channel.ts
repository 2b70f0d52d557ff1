// One vhost-user connection's message stream: reads whole messages (header, then exactly
// `size` payload bytes, so the fds of each message stay with it) from a non-blocking Unix
// socket on the event loop, and sends messages with fds. Used by both the backend session
// and our frontend.
import { FdWatcher, closeFd, peerClosed, recvMessage, sendMessage } from '../native/unix-socket.js';
import { MAX_FDS, MAX_PAYLOAD, MessageReader, ProtocolError, encodeMessage, reqName, type Message } from './protocol.js';

export interface ChannelHandlers {
  /** A whole message. The handler owns msg.fds (see takeFd / closeFds). */
  message(msg: Message): void;
  /** The connection ended: peer closed (reason 'eof'), a protocol or I/O error, or close(). */
  closed(reason: string, error?: Error): void;
}

export function closeFds(fds: number[]): void {
  for (let i = 0; i < fds.length; i++) {
    if (fds[i] >= 0) {
      try {
        closeFd(fds[i]);
      } catch {
        // already closed: nothing to release
      }
      fds[i] = -1;
    }
  }
}

/** Takes ownership of fd i of a message (the rest are closed by the dispatcher). */
export function takeFd(msg: Message, i = 0): number {
  const fd = msg.fds[i];
  if (fd === undefined || fd < 0) throw new ProtocolError(`${reqName(msg.request)}: expected a file descriptor`);
  msg.fds[i] = -1;
  return fd;
}

export class MessageChannel {
  readonly fd: number;
  private readonly watcher: FdWatcher;
  private readonly reader: MessageReader;
  private paused = false;
  private isClosed = false;
  private readonly outQueue: Array<{ data: Uint8Array; fds: number[] }> = [];

  /**
   * Takes ownership of `fd`: it is closed by close(), at the end of the stream, and also
   * here if watching it fails (not a socket epoll accepts), before the error is thrown.
   */
  constructor(
    fd: number,
    private readonly handlers: ChannelHandlers,
    maxPayload = MAX_PAYLOAD,
  ) {
    this.fd = fd;
    this.reader = new MessageReader(maxPayload);
    try {
      this.watcher = new FdWatcher(fd, (r, w) => this.onReady(r, w));
      this.watcher.start(true, false);
    } catch (e) {
      this.isClosed = true;
      try {
        closeFd(fd);
      } catch {
        // already closed
      }
      throw e;
    }
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Closed here, or the peer closed its end (what it sent before may still be unread). */
  get peerGone(): boolean {
    return this.isClosed || peerClosed(this.fd);
  }

  /** Stop delivering messages (while an async handler runs); resume() continues. */
  pause(): void {
    this.paused = true;
    this.updateWatch();
  }

  resume(): void {
    if (this.isClosed) return;
    this.paused = false;
    this.updateWatch();
    // Messages may already be buffered in the socket: the level-triggered watcher fires.
  }

  /** Sends one message. Fds are duplicated by the kernel; the caller keeps its own. */
  send(request: number, flags: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): void {
    if (this.isClosed) throw new Error('vhost-user channel is closed');
    if (fds.length > MAX_FDS) throw new RangeError(`${fds.length} fds in one message, at most ${MAX_FDS}`);
    const data = encodeMessage(request, flags, payload);
    if (this.outQueue.length > 0) {
      this.outQueue.push({ data, fds: [...fds] });
      return;
    }
    this.write(data, fds);
  }

  close(reason = 'closed'): void {
    this.finish(reason);
  }

  /** Writes as much as the socket takes; queues the rest. Returns true if all was sent. */
  private write(data: Uint8Array, fds: number[]): boolean {
    let off = 0;
    let f = fds;
    while (off < data.length) {
      let n: number | null;
      try {
        n = sendMessage(this.fd, data.subarray(off), f);
      } catch (e) {
        this.finish('send failed', e as Error);
        return false;
      }
      if (n === null) {
        // Socket buffer full: keep the rest (without the fds, if they already went) for later.
        this.outQueue.unshift({ data: data.subarray(off), fds: f });
        this.updateWatch();
        return false;
      }
      off += n;
      f = []; // the fds went with the first byte
    }
    return true;
  }

  private updateWatch(): void {
    if (this.isClosed) return;
    // Backpressure: no reading while replies wait to be sent, so a peer that never reads
    // cannot make us queue replies without end.
    const blocked = this.outQueue.length > 0;
    this.watcher.start(!this.paused && !blocked, blocked);
  }

  private onReady(readable: boolean, writable: boolean): void {
    if (this.isClosed) return;
    if (writable) {
      while (this.outQueue.length > 0 && !this.isClosed) {
        const m = this.outQueue.shift()!;
        if (!this.write(m.data, m.fds)) break;
      }
      this.updateWatch();
    }
    if (readable && !this.paused && this.outQueue.length === 0) this.readSome();
  }

  private readSome(): void {
    try {
      while (!this.paused && !this.isClosed && this.outQueue.length === 0) {
        const r = recvMessage(this.fd, this.reader.target(), MAX_FDS);
        if (r === null) return;
        if (r.bytes === 0) {
          this.finish(this.reader.idle ? 'eof' : 'eof in the middle of a message');
          return;
        }
        if (r.fdsTruncated) {
          closeFds(r.fds);
          throw ProtocolError.mismatch('', `more than ${MAX_FDS} file descriptors in one message`, `at most ${MAX_FDS}`);
        }
        const msg = this.reader.received(r.bytes, r.fds);
        if (msg !== null) this.handlers.message(msg);
      }
    } catch (e) {
      this.finish(e instanceof ProtocolError ? e.message : 'read failed', e as Error);
    }
  }

  private finish(reason: string, error?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.watcher.close();
    closeFds(this.reader.takeFds());
    this.outQueue.length = 0;
    try {
      closeFd(this.fd);
    } catch {
      // already closed
    }
    this.handlers.closed(reason, error);
  }
}
