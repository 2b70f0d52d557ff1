// Typed wrappers over the addon's Unix-socket functions (native/io/uds.cc) and fd watcher
// (native/io/fd_watch.cc). Node's net module cannot pass arbitrary fds; these can.
//
// Every fd made here is non-blocking and close-on-exec. Failures throw Node-style errors
// (NodeJS.ErrnoException: `code` such as 'ENOENT', negative `errno` as Node uses, `syscall`,
// and `path` where one was given). "Would block" (EAGAIN) is never thrown: the functions on
// the hot path return null instead.
import { addon } from './binding.js';

interface RawReceived {
  bytes: number;
  fds: number[];
  fdsTruncated: boolean;
  payloadTruncated: boolean;
}

interface RawFdWatcher {
  start(readable: boolean, writable: boolean): void;
  stop(): void;
  close(): void;
  readonly active: boolean;
}

interface UnixSocketAddon {
  unixSocketPair(): [number, number];
  unixListen(path: string, backlog: number): number;
  unixAccept(fd: number): number | null;
  unixConnect(path: string): number;
  unixSendMsg(fd: number, data: Uint8Array, fds?: number[]): number | null;
  unixRecvMsg(fd: number, buf: Uint8Array, maxFds: number): RawReceived | null;
  unixPeerCred(fd: number): PeerCredentials;
  unixPeerClosed(fd: number): boolean;
  closeFd(fd: number): void;
  maxFdsPerMessage: number;
  FdWatcher: new (fd: number, callback: FdWatchCallback) => RawFdWatcher;
}

const native = addon as UnixSocketAddon;

/** Most fds one message can carry (sendMessage) or accept (recvMessage's maxFds): 32. */
export const MAX_FDS_PER_MESSAGE: number = native.maxFdsPerMessage;

/** Credentials of the process at the other end of a connected Unix socket (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** What one {@link recvMessage} call received. */
export interface ReceivedMessage {
  /** Bytes written at the start of the buffer; 0 means the peer closed the connection. */
  bytes: number;
  /** The fds that came with these bytes; the caller now owns them and must close them. */
  fds: number[];
  /**
   * True when the sender attached more fds than maxFds (or the kernel could not install them
   * all): the extra fds were closed (by the kernel or by us) and are lost. The message that
   * carried them should be treated as malformed.
   */
  fdsTruncated: boolean;
}

/** A connected pair of Unix stream sockets (socketpair(2)). Returns both fds. */
export function socketPair(): [number, number] {
  return native.unixSocketPair();
}

/**
 * Creates a Unix stream socket listening on `path` (bind + listen). Does not remove an existing
 * file at `path`: that fails with EADDRINUSE. Paths longer than 107 bytes fail with ENAMETOOLONG.
 * Returns the listening fd; watch it for readability and call {@link acceptUnix}.
 */
export function listenUnix(path: string, backlog = 16): number {
  return native.unixListen(path, backlog);
}

/** Accepts one pending connection on a listening fd. Returns its fd, or null if none is pending. */
export function acceptUnix(fd: number): number | null {
  return native.unixAccept(fd);
}

/**
 * Connects to the Unix stream socket at `path` and returns the connected fd. A Unix connect
 * completes at once or throws: ENOENT (no such path), ECONNREFUSED (nobody listening),
 * EAGAIN (the listener's backlog is full; retry later).
 */
export function connectUnix(path: string): number {
  return native.unixConnect(path);
}

/**
 * Sends `data` with `fds` (at most {@link MAX_FDS_PER_MESSAGE}) attached as SCM_RIGHTS.
 * Returns the number of bytes sent, or null if the socket buffer is full (nothing was sent).
 * A stream socket may send fewer bytes than given: the fds went with the first byte, so send
 * the rest without them. The caller keeps its own fds (the receiver gets duplicates).
 * Sending fds with empty data throws (the kernel would drop them silently). Never raises
 * SIGPIPE: a closed peer gives EPIPE.
 */
export function sendMessage(fd: number, data: Uint8Array, fds: number[] = []): number | null {
  return native.unixSendMsg(fd, data, fds);
}

/**
 * Receives bytes into `buf` (not empty) and up to `maxFds` (0 to {@link MAX_FDS_PER_MESSAGE})
 * fds. Returns null if nothing is pending. On a stream socket the fds of one sendmsg arrive
 * with the first byte of its data and are never merged with a later message's fds, but bytes
 * of an earlier fd-less send can arrive in the same call; read a protocol's fixed-size header
 * exactly to keep its fds aligned with its messages.
 */
export function recvMessage(fd: number, buf: Uint8Array, maxFds: number): ReceivedMessage | null {
  const r = native.unixRecvMsg(fd, buf, maxFds);
  return r === null ? null : { bytes: r.bytes, fds: r.fds, fdsTruncated: r.fdsTruncated };
}

/** The pid, uid and gid of the peer of a connected Unix socket (as of connect time). */
export function peerCredentials(fd: number): PeerCredentials {
  return native.unixPeerCred(fd);
}

/** Whether the peer of a connected socket has closed its end, even with data still unread. */
export function peerClosed(fd: number): boolean {
  return native.unixPeerClosed(fd);
}

/** Closes an fd. Throws EBADF if it was not open. */
export function closeFd(fd: number): void {
  native.closeFd(fd);
}

/**
 * Called by {@link FdWatcher} when its fd is ready. `error` is 0, or a positive errno when
 * polling failed (libuv reports EBADF for any EPOLLERR, e.g. a peer that reset the
 * connection); the watcher has then stopped itself, and `readable` / `writable` repeat what
 * it waited for, so that the read or write that follows surfaces the real error.
 */
export type FdWatchCallback = (readable: boolean, writable: boolean, error: number) => void;

/**
 * Watches an fd for readability / writability on Node's event loop (libuv uv_poll_t) and
 * calls back, level-triggered, for as long as the condition holds. It neither owns nor closes
 * the fd, but it does make it non-blocking. Stop or close the watcher before closing the fd,
 * and watch an fd with at most one active watcher at a time. While started, the watcher stays
 * alive (and keeps the process alive) even if unreferenced; close() it when done. Exceptions
 * thrown by the callback become process 'uncaughtException's.
 */
export class FdWatcher {
  #raw: RawFdWatcher;
  #closed = false;

  /** Creates a stopped watcher of `fd`. */
  constructor(fd: number, callback: FdWatchCallback) {
    this.#raw = new native.FdWatcher(fd, callback);
  }

  /** Starts (or changes) what to wait for; start(false, false) is stop(). Throws once closed. */
  start(readable: boolean, writable: boolean): void {
    if (this.#closed) throw new Error('FdWatcher: start() after close()');
    this.#raw.start(readable, writable);
  }

  /** Stops waiting; start() may be called again. */
  stop(): void {
    if (!this.#closed) this.#raw.stop();
  }

  /** Stops for good and releases the libuv handle. Idempotent; safe inside the callback. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#raw.close();
  }

  /** True while started (between start() and stop(), close() or a poll error). */
  get active(): boolean {
    return !this.#closed && this.#raw.active;
  }
}

/**
 * Takes an advisory lock (flock) on an open file, without waiting: exclusive, or shared with
 * other shared holders. Returns false if another open file description holds a conflicting
 * lock (another disk or process serves the same image). The lock lasts until every fd of this
 * open file description is closed.
 */
export function lockImage(fd: number, shared = false): boolean {
  return (native as unknown as { lockImage(fd: number, shared: boolean): boolean }).lockImage(fd, shared);
}
