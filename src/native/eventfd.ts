// Typed wrapper over the addon's eventfd functions (native/io/eventfd.cc).
import { addon } from './binding.js';

interface EventFdAddon {
  eventfdCreate(initval: number, semaphore: boolean): number;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value: bigint): boolean;
  closeFd(fd: number): void;
}

const native = addon as EventFdAddon;

/** Options for {@link EventFd.create}. */
export interface EventFdOptions {
  /** Initial counter value, 0 to 2^32-1. Default 0. */
  initval?: number;
  /** EFD_SEMAPHORE: each read returns 1 and decrements the counter by 1. Default false. */
  semaphore?: boolean;
}

/**
 * An eventfd(2): a 64-bit counter in the kernel that one side adds to (kick / call) and the
 * other reads and resets. Always non-blocking and close-on-exec when created here.
 * Failures throw Node-style errors (`code`, `errno`, `syscall`).
 */
export class EventFd {
  /** Set by {@link adopt} for the one constructor call it makes. */
  static #adopting: number | undefined;
  #fd: number;

  /** Creates a new eventfd; see {@link EventFdOptions}. */
  constructor(options: EventFdOptions = {}) {
    const adopted = EventFd.#adopting;
    EventFd.#adopting = undefined;
    this.#fd = adopted ?? native.eventfdCreate(options.initval ?? 0, options.semaphore ?? false);
  }

  /** Creates a new eventfd; same as `new EventFd(options)`. */
  static create(options: EventFdOptions = {}): EventFd {
    return new EventFd(options);
  }

  /**
   * Wraps an eventfd received from elsewhere (e.g. a vring kick or call fd) and takes
   * ownership of it: {@link close} closes it. The fd should be non-blocking, or {@link read}
   * blocks when the counter is 0 (a FdWatcher on it makes it non-blocking).
   */
  static adopt(fd: number): EventFd {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`EventFd.adopt: bad fd ${fd}`);
    EventFd.#adopting = fd;
    return new EventFd();
  }

  /** The file descriptor. Throws once closed. */
  get fd(): number {
    return this.#open();
  }

  /** True until {@link close} is called. */
  get isOpen(): boolean {
    return this.#fd >= 0;
  }

  /**
   * Reads and resets the counter (in semaphore mode: returns 1n and decrements it).
   * Returns null when the counter is 0 (EAGAIN); that is not an error.
   */
  read(): bigint | null {
    return native.eventfdRead(this.#open());
  }

  /**
   * Adds `value` (default 1n) to the counter. Returns false, without adding, if the counter
   * would pass 2^64-2 (EAGAIN): the reader has not drained it, so it is signalled anyway.
   */
  write(value: bigint = 1n): boolean {
    return native.eventfdWrite(this.#open(), value);
  }

  /** Closes the fd. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    native.closeFd(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error('EventFd: already closed');
    return this.#fd;
  }
}
