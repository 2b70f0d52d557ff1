// How a data-plane thread waits for work on its queues (issue: polling modes):
//
// - event: sleep on each queue's kick eventfd (zero CPU when idle). On a kick the queue's
//   notifications are turned off and it is served until empty, then turned on again and
//   checked once more (a chain that raced in is served, not missed).
// - busy: never sleep; every queue is served in turn, notifications stay off (the driver
//   never kicks: no syscalls on either side). One CPU per thread, the lowest latency.
// - adaptive: busy while traffic flows; after `idleUs` without work, notifications are
//   turned back on, the queues checked once more, and the thread sleeps on the kick fds
//   until one fires, then polls again.
//
// The thread keeps serving its event loop (control messages, timers) between spins: a
// busy spin yields to it every `sliceUs`.
import { readSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { FdWatcher } from '../native/unix-socket.js';
import type { Virtqueue } from '../native/virtqueue.js';

export type PollMode = 'busy' | 'event' | 'adaptive';
export const POLL_MODES: readonly PollMode[] = ['busy', 'event', 'adaptive'];

export interface PollTarget {
  /** whose notifications (driver kicks) are switched on and off */
  readonly vq: Virtqueue;
  /** the kick eventfd; -1 if the frontend gave none (then it is polled every millisecond in event mode) */
  readonly kickFd: number;
  /** Does one burst of work; returns how many items it handled (0: nothing to do). */
  service(): number;
}

export interface PollerOptions {
  /** adaptive: idle time before sleeping (default 200 us) */
  idleUs?: number;
  /** busy / adaptive: longest spin before yielding to the event loop (default 1000 us) */
  sliceUs?: number;
  /** event mode: most bursts per queue before yielding (default 64) */
  maxBurstsPerWake?: number;
}

interface Entry {
  t: PollTarget;
  watcher: FdWatcher | null;
  timer: NodeJS.Timeout | null;
  scheduled: boolean;
}

const kickBuf = Buffer.alloc(8);
function drainKick(fd: number): void {
  try {
    readSync(fd, kickBuf, 0, 8, null);
  } catch {
    // EAGAIN: nothing pending
  }
}

export class Poller {
  private readonly entries = new Map<PollTarget, Entry>();
  private list: Entry[] = [];
  private spinning = false;
  private sleeping = false;
  private paused = false;
  private closed = false;
  private lastWork = 0;
  private readonly idleMs: number;
  private readonly sliceMs: number;
  private readonly maxBursts: number;
  private spinAll: (() => number) | null = null;
  /**
   * Counters: slices (busy/adaptive spins run), sleeps (adaptive fell asleep), wakes (kicks
   * that woke a queue or thread), polls (service calls), work (items served), busyMs (time
   * spent serving queues that had work; the rest of wallMs() was idle: empty polls or asleep).
   */
  readonly stats = { slices: 0, sleeps: 0, wakes: 0, polls: 0, work: 0, busyMs: 0 };
  private readonly created = performance.now();

  /** Milliseconds since the poller was made (busy + idle). */
  wallMs(): number {
    return performance.now() - this.created;
  }

  constructor(
    readonly mode: PollMode,
    opts: PollerOptions = {},
  ) {
    if (!POLL_MODES.includes(mode)) throw new RangeError(`poll mode ${mode}: expected ${POLL_MODES.join(', ')}`);
    this.idleMs = (opts.idleUs ?? 200) / 1000;
    this.sliceMs = (opts.sliceUs ?? 1000) / 1000;
    this.maxBursts = opts.maxBurstsPerWake ?? 64;
  }

  get size(): number {
    return this.entries.size;
  }

  add(t: PollTarget): void {
    if (this.closed) throw new Error('Poller: add() after close()');
    if (this.entries.has(t)) return;
    const e: Entry = { t, watcher: null, timer: null, scheduled: false };
    this.entries.set(t, e);
    this.list = [...this.entries.values()];
    if (t.kickFd >= 0) e.watcher = new FdWatcher(t.kickFd, () => this.onKick(e));
    if (this.mode === 'event') {
      if (e.watcher) e.watcher.start(true, false);
      else e.timer = setInterval(() => this.schedule(e), 1);
      t.vq.setNotify(true);
      this.schedule(e); // chains may already be waiting
    } else {
      t.vq.setNotify(false);
      this.lastWork = performance.now();
      if (this.sleeping) this.wakeAll();
      else this.spin();
    }
  }

  remove(t: PollTarget): void {
    const e = this.entries.get(t);
    if (!e) return;
    e.watcher?.close();
    if (e.timer) clearInterval(e.timer);
    this.entries.delete(t);
    this.list = [...this.entries.values()];
  }

  /**
   * Busy and adaptive spins: `fn` serves every target in one call (a native loop over the
   * queues, several passes, no return to JavaScript between bursts) and returns the items
   * handled, 0 when a pass found nothing; the targets' own service() is then used only in
   * event mode. null: each target's service() in turn.
   */
  setSpinAll(fn: (() => number) | null): void {
    this.spinAll = fn;
  }

  /** Stops serving (e.g. while the memory table changes); resume() goes on. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    if (this.mode === 'event') {
      for (const e of this.list) this.schedule(e);
    } else if (!this.sleeping) {
      this.spin();
    }
  }

  close(): void {
    this.closed = true;
    for (const e of this.list) {
      e.watcher?.close();
      if (e.timer) clearInterval(e.timer);
    }
    this.entries.clear();
    this.list = [];
  }

  // ---- event mode ----

  private schedule(e: Entry): void {
    if (e.scheduled || this.closed) return;
    e.scheduled = true;
    setImmediate(() => {
      e.scheduled = false;
      this.serveEvent(e);
    });
  }

  private serveEvent(e: Entry): void {
    if (this.paused || this.closed || !this.entries.has(e.t)) return;
    const t = e.t;
    const start = performance.now();
    try {
      t.vq.setNotify(false);
      for (let i = 0; i < this.maxBursts; i++) {
        this.stats.polls++;
        const n = t.service();
        this.stats.work += n;
        if (n > 0) continue;
        if (!this.entries.has(t)) return; // removed by its own service (queue broken)
        if (!t.vq.setNotify(true)) return; // empty and re-armed
        t.vq.setNotify(false); // chains raced in: keep serving
      }
      this.schedule(e); // more work: let the event loop run first
    } finally {
      this.stats.busyMs += performance.now() - start;
    }
  }

  private onKick(e: Entry): void {
    drainKick(e.t.kickFd);
    this.stats.wakes++;
    if (this.mode === 'event') this.schedule(e);
    else this.wakeAll();
  }

  // ---- busy and adaptive ----

  private spin(): void {
    if (this.spinning || this.closed) return;
    this.spinning = true;
    setImmediate(() => this.slice());
  }

  private slice(): void {
    this.spinning = false;
    if (this.closed || this.paused || this.sleeping) return;
    this.stats.slices++;
    const start = performance.now();
    let now = start;
    let work = 0;
    let passes = 0;
    let mark = start; // busy time: clock intervals in which some queue had work
    let worked = 0;
    const list = this.list;
    do {
      let w = 0;
      const all = this.spinAll;
      if (all !== null) w = all();
      else for (let i = 0; i < list.length; i++) w += list[i].t.service();
      work += w;
      worked += w;
      passes++;
      // Reading the clock costs; every 16 passes is fine grained enough (every call of
      // spinAll, which makes several passes itself).
      if (all !== null || (passes & 15) === 0 || w === 0) {
        now = performance.now();
        if (worked > 0) this.stats.busyMs += now - mark;
        mark = now;
        worked = 0;
      }
      if (w > 0) this.lastWork = now;
      else if (this.mode === 'adaptive' && now - this.lastWork >= this.idleMs) {
        this.stats.polls += passes;
        this.stats.work += work;
        if (this.trySleep()) return;
        this.lastWork = now;
      }
    } while (now - start < this.sliceMs && list === this.list);
    this.stats.polls += passes;
    this.stats.work += work;
    this.spin();
  }

  /**
   * Adaptive: re-arm notifications; sleep on the kick fds unless chains raced in. Stale
   * kicks (from the polling spell) are drained BEFORE re-arming: a driver that sees the
   * re-armed notifications may add a chain and kick at once, and that kick must still be
   * in the eventfd when the watcher starts (drained after re-arming, it would be lost with
   * the chain left waiting: the driver kicks once per EVENT_IDX crossing).
   */
  private trySleep(): boolean {
    if (this.list.some((e) => e.watcher === null)) return false;
    for (const e of this.list) drainKick(e.t.kickFd);
    let raced = false;
    for (const e of this.list) if (e.t.vq.setNotify(true)) raced = true;
    if (raced) {
      for (const e of this.list) e.t.vq.setNotify(false);
      return false;
    }
    this.sleeping = true;
    this.stats.sleeps++;
    for (const e of this.list) e.watcher!.start(true, false);
    return true;
  }

  private wakeAll(): void {
    if (!this.sleeping) return;
    this.sleeping = false;
    for (const e of this.list) {
      e.watcher?.stop();
      e.t.vq.setNotify(false);
    }
    this.lastWork = performance.now();
    this.spin();
  }
}
