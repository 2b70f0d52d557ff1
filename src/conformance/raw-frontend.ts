// A frontend that sends exactly the bytes and fds it is given (nothing in our own frontend
// can "fix" a message) and reads whatever the backend answers, event-driven: replies are
// cut into messages by the codec's MessageReader as they arrive. `vhostkit conformance`
// sends its hostile input with it; the property and fault tests use it too.
import { FdWatcher, closeFd, connectUnix, recvMessage, sendMessage } from '../native/unix-socket.js';
import { MAX_FDS, MessageReader, encodeMessage, type Message } from '../vhost-user/protocol.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type Received = Message | { eof: 'eof' | 'reset' | 'garbage'; detail?: string };

export function isEof(r: Received): r is { eof: 'eof' | 'reset' | 'garbage'; detail?: string } {
  return 'eof' in r;
}

export class RawFrontend {
  readonly fd: number;
  private readonly reader = new MessageReader();
  private readonly watcher: FdWatcher;
  private readonly inbox: Received[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;
  private open = true;

  constructor(path: string) {
    this.fd = connectUnix(path);
    this.watcher = new FdWatcher(this.fd, () => this.onReadable());
    this.watcher.start(true, false);
  }

  /** The backend closed the connection (or sent something that is not vhost-user). */
  get closedByPeer(): boolean {
    return this.ended;
  }

  /**
   * Sends raw bytes, the fds with the first byte. Returns false if the backend has gone
   * (EPIPE / ECONNRESET): what it did not read is lost, which is what a test wants to see.
   */
  async sendBytes(bytes: Uint8Array, fds: number[] = []): Promise<boolean> {
    let off = 0;
    let f = fds;
    while (off < bytes.length) {
      let n: number | null;
      try {
        n = sendMessage(this.fd, bytes.subarray(off), f);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EPIPE' || code === 'ECONNRESET') return false;
        throw e;
      }
      if (n === null) {
        // The backend stops reading while its replies wait: keep reading ours meanwhile.
        await sleep(1);
        continue;
      }
      off += n;
      f = [];
    }
    return true;
  }

  send(request: number, flags: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): Promise<boolean> {
    return this.sendBytes(encodeMessage(request, flags, payload), fds);
  }

  /** The next message from the backend, or how the connection ended. Fds that come along are the caller's. */
  async next(timeoutMs = 5000): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`nothing from the backend within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.waiter = null;
          resolve();
        }, left);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = null;
          resolve();
        };
      });
    }
    const r = this.inbox[0];
    if (!isEof(r)) this.inbox.shift(); // the end stays: every later next() sees it too
    return r;
  }

  private push(r: Received): void {
    this.inbox.push(r);
    this.waiter?.();
  }

  private end(how: 'eof' | 'reset' | 'garbage', detail?: string): void {
    if (this.ended) return;
    this.ended = true;
    this.watcher.stop();
    for (const fd of this.reader.takeFds()) closeFd(fd);
    this.push({ eof: how, detail });
  }

  private onReadable(): void {
    while (!this.ended) {
      let r;
      try {
        r = recvMessage(this.fd, this.reader.target(), MAX_FDS);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ECONNRESET') return this.end('reset');
        throw e;
      }
      if (r === null) return;
      if (r.bytes === 0) return this.end('eof');
      try {
        const m = this.reader.received(r.bytes, r.fds);
        if (m) this.push(m);
      } catch (e) {
        return this.end('garbage', (e as Error).message);
      }
    }
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.watcher.close();
    for (const fd of this.reader.takeFds()) closeFd(fd);
    for (const r of this.inbox.splice(0)) if (!isEof(r)) for (const fd of r.fds) closeFd(fd);
    closeFd(this.fd);
  }
}
