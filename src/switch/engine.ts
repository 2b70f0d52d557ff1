// The switch's data plane on one thread (src/switch/dataplane-worker.ts, or in-process for
// tests). Every frame is switched by the native Forwarder (native/switch/switch_forward.cc),
// one call per burst: a guest's TX burst (pop, classify, deliver to guests, TAP and VXLAN
// ports, capture, push), or a batch read from a host port's fd, or frames the switch makes.
// JavaScript here keeps the ports and queues (ports.ts), waits for work (the Poller for
// guests' TX queues, fd watchers for host ports), runs a hook between the pop and the
// native call when one is set (hook.ts), and handles what a call reports: a receiver that
// broke its ring, a capture that reached its count, frames flows sent to handlers
// (handlers.ts). No object per packet on the native path.
import { constants } from 'node:os';
import { FdWatcher } from '../native/unix-socket.js';
import { Poller, type PollMode } from '../dataplane/poller.js';
import { CaptureTap, type CaptureSink, type CaptureSpec } from './capture.js';
import { GuestMemory } from '../native/guest-memory.js';
import { Virtqueue } from '../native/virtqueue.js';
import { PortKind, PortWord, QueueStat, nativeForwarder, type NativeForwarder } from '../native/switch.js';
import { Fdb, type FdbEntry } from './fdb.js';
import { PortCounter } from './counters.js';
import { HookRunner, type BurstHook } from './hook.js';
import { FlowTable, type FlowEntry } from './flow-table.js';
import type { FlowSpec } from './flows.js';
import { HandlerSet, type HandlerStats, type PacketHandler } from './handlers.js';
import { portWords, syncPort, writeHost, writeVlan, type EnginePort, type HostPortSpec, type RxQueue, type TxQueue, type VlanConfig } from './ports.js';
import type { NetQueueSpec } from '../backends/net/port-dataplane.js';

export { Verdict, type BurstHook, type PacketBurst } from './hook.js';
export type { VlanConfig, HostPortSpec } from './ports.js';

/** A guest queue handed to the engine: the device's spec, for one port. */
export interface QueueStartSpec extends NetQueueSpec {
  port: number;
}

/** One guest queue as the metrics see it. */
export interface QueueStat {
  port: string;
  index: number;
  size: number;
  /** rx (even index): frames delivered to the guest; tx (odd): frames taken from it */
  packets: number;
  bytes: number;
  /** bursts after which the guest was notified, and after which it asked not to be */
  notifySent: number;
  notifySuppressed: number;
  /** available entries / descriptors not taken yet */
  ringFill: number;
  /** the data-plane thread that serves it (threads() numbering) */
  thread: number;
}

export interface EngineEvents {
  queueError(port: number, index: number, reason: string): void;
}

/** One of several data-plane threads of a switch: the state they share (switchShared) and which thread this is. */
export interface SharedThread {
  token: number;
  thread: number;
}

/** Room for what one forwarder call reports: 2 words, then 3 per RX queue and port. */
const EVENT_WORDS = 2 + 3 * 4096;
/** Passes over the TX queues one forwardAll call makes at most (fewer when a pass finds no work). */
const SPIN_PASSES = 16;
/** Frames handed over by the switch's other threads that one drain sends on at most before yielding. */
const DRAIN_FRAMES = 1024;

const errnoName = new Map(Object.entries(constants.errno).map(([k, v]) => [v, k]));

export class SwitchEngine {
  readonly fdb: Fdb;
  private readonly fwd: NativeForwarder;
  /** [queues broken B, captures done C, B (port, slot) pairs, C ports], after every call */
  private readonly events = new Int32Array(EVENT_WORDS);
  private readonly ports = new Map<number, EnginePort>();
  private readonly byName = new Map<string, number>();
  private readonly captured = new Set<EnginePort>();
  private paused = false;
  /** how the guests' TX queues are waited for (busy, event, adaptive) */
  readonly poller: Poller;
  private readonly pausedHosts = new Set<EnginePort>();
  private hook: HookRunner | null = null;
  private ager: NodeJS.Timeout | null = null;
  private readonly flowAger: NodeJS.Timeout;
  private readonly flows: FlowTable;
  private handlers: HandlerSet | null = null;
  private readonly handlerIds = new Map<string, number>();
  /** The TX queues forwardAll serves, in its order (syncTx), and where it reports a failed pop. */
  private txList: TxQueue[] = [];
  private readonly failed = new Int32Array(2);
  /** this thread's number among the switch's data-plane threads (-1: the only one) */
  private readonly thread: number;
  /** readable when another thread hands this one frames (several threads only) */
  private wake: FdWatcher | null = null;
  private drainScheduled = false;

  constructor(
    readonly burst = 32,
    agingMs = 300_000,
    private readonly notify: EngineEvents = { queueError: () => undefined },
    poll: PollMode = 'event',
    shared: SharedThread | null = null,
    /** this thread's number as threads() shows it */
    private readonly threadNumber = shared?.thread ?? 0,
  ) {
    this.poller = new Poller(poll);
    this.fdb = new Fdb(agingMs, 65536, shared?.token);
    this.thread = shared?.thread ?? -1;
    this.fwd = nativeForwarder(this.fdb.t, burst, this.events, shared?.thread);
    this.flows = new FlowTable(this.fwd);
    this.ager = setInterval(() => this.fdb.age(Date.now()), Math.max(1000, Math.min(agingMs / 4, 30_000)));
    this.ager.unref();
    // Flows' idle and hard timeouts, in whole seconds as ovs-vswitchd keeps them. With
    // several threads a flow is idle when it is idle on all: the group expires flows.
    this.flowAger = setInterval(() => shared === null && this.flows.expire(Date.now()), 1000);
    this.flowAger.unref();
    if (shared !== null) {
      this.wake = new FdWatcher(this.fwd.wakeFd(), () => this.scheduleDrain());
      this.wake.start(true, false);
    }
  }

  setHook(h: BurstHook | null): void {
    this.hook = h ? new HookRunner(h, this.burst, (name) => this.byName.get(name) ?? -1) : null;
    this.syncTx();
  }

  setAging(ms: number): void {
    this.fdb.agingMs = ms;
  }

  /** owner: the thread that serves the port, of a switch with several (frames for it are handed there). */
  addPort(id: number, name: string, vlan: VlanConfig, counters: Float64Array, owner = this.thread): void {
    if (this.ports.has(id)) throw new Error(`port ${id} exists`);
    if (owner !== this.thread && this.thread < 0) throw new Error('a port of another thread, but this switch has one data-plane thread');
    const p: EnginePort = { id, name, vlan, words: portWords(vlan, owner), counters, host: null, memory: null, rx: [], tx: new Map(), capture: null };
    this.ports.set(id, p);
    this.byName.set(name, id);
    syncPort(this.fwd, p);
  }

  /** Captures port `id`'s frames, both directions, into pcap records handed to `sink`. */
  startCapture(id: number, spec: CaptureSpec, sink: CaptureSink): void {
    const p = this.servable(id);
    if (p.capture && !p.capture.done) throw new Error(`port ${p.name} is already being captured`);
    p.capture = new CaptureTap(spec, this.burst, sink);
    this.captured.add(p);
    syncPort(this.fwd, p);
  }

  /** Stops a capture (its last records go to the sink, marked done). */
  stopCapture(id: number): void {
    const p = this.ports.get(id);
    if (!p?.capture) return;
    p.capture.stop();
    p.capture = null;
    this.captured.delete(p);
    syncPort(this.fwd, p);
  }

  /** Makes port `id` a TAP or VXLAN port: frames read from its fd are switched, frames for it written there. */
  attachHost(id: number, spec: HostPortSpec): void {
    const p = this.owned(id);
    p.host = { spec, watcher: new FdWatcher(spec.fd, () => this.scheduleHost(p)), scheduled: false };
    writeHost(p.words, spec);
    syncPort(this.fwd, p);
    p.host.watcher.start(true, false);
  }

  /**
   * Port `id` is served by thread `owner` from now on (a switch with several threads moves a
   * port between its guest's sessions, never while this thread holds its memory, queues,
   * host side or capture).
   */
  setOwner(id: number, owner: number): void {
    const p = this.port(id);
    if (this.thread < 0) throw new Error('this switch has one data-plane thread');
    if (p.words[PortWord.OWNER] === owner) return;
    if (p.memory || p.host || p.capture || p.rx.length > 0 || p.tx.size > 0) throw new Error(`port ${p.name} is in use on data-plane thread ${this.thread}: it cannot move`);
    p.words[PortWord.OWNER] = owner;
    syncPort(this.fwd, p);
  }

  removePort(id: number): void {
    const p = this.ports.get(id);
    if (!p) return;
    this.stopCapture(id);
    for (const q of [...p.tx.keys()]) this.stopQueue(id, q);
    for (const r of [...p.rx]) this.stopQueue(id, r.index);
    p.host?.watcher.close();
    p.memory?.close();
    this.ports.delete(id);
    this.byName.delete(p.name);
    this.fwd.removePort(id);
    this.fdb.flushPort(id);
  }

  setVlan(id: number, vlan: VlanConfig): void {
    const p = this.port(id);
    p.vlan = vlan;
    writeVlan(p.words, vlan);
    syncPort(this.fwd, p);
    this.fdb.flushPort(id);
  }

  /** Unmaps a port's guest memory (its guest went away), after stopping any queue left on it. */
  releaseMemory(id: number): void {
    const p = this.ports.get(id);
    if (!p || (!p.memory && p.rx.length === 0 && p.tx.size === 0)) return;
    for (const q of [...p.tx.keys()]) this.stopQueue(id, q);
    for (const r of [...p.rx]) this.stopQueue(id, r.index);
    p.memory?.close();
    p.memory = null;
    syncPort(this.fwd, p);
  }

  setMemory(id: number, token: number): void {
    const p = this.servable(id);
    p.memory?.close();
    p.memory = GuestMemory.claim(token);
    for (const r of p.rx) r.vq.setMemoryView(p.memory);
    for (const t of p.tx.values()) t.vq.setMemoryView(p.memory);
    syncPort(this.fwd, p);
  }

  startQueue(s: QueueStartSpec): void {
    const p = this.servable(s.port);
    const vq = new Virtqueue({ layout: s.layout, size: s.size, token: s.token, burst: this.burst });
    if (p.memory) vq.setMemoryView(p.memory);
    const w = p.words;
    w[PortWord.HDR_LEN] = s.hdrLen;
    w[PortWord.MERGEABLE] = s.mergeable ? 1 : 0;
    w[PortWord.RX_OFFLOADS] = s.rxOffloads;
    w[PortWord.TX_OFFLOADS] = s.txOffloads ? 1 : 0;
    w[PortWord.MAX_FRAME] = s.mtu > 0 ? s.mtu + 18 : 0;
    if (s.index % 2 === 0) {
      // Guest RX: we fill it when frames arrive; its kicks (new buffers) are not needed.
      vq.setNotify(false);
      p.rx.push({ vq, index: s.index, stats: new Float64Array(QueueStat.WORDS) });
      p.rx.sort((a, b) => a.index - b.index);
      syncPort(this.fwd, p);
    } else {
      syncPort(this.fwd, p);
      const t = { vq, slot: vq.slot, index: s.index, port: p, kickFd: s.kickFd, stats: new Float64Array(QueueStat.WORDS) } as TxQueue;
      t.target = { vq, kickFd: s.kickFd, service: () => this.serviceOnce(t) };
      p.tx.set(s.index, t);
      this.syncTx();
      this.poller.add(t.target); // serves chains already waiting too
    }
  }

  /**
   * The MTU port `id`'s guest was given changed (NET_SET_MTU while its rings run; 0: no
   * limit): frames for it are checked against the new size from the next burst on.
   */
  setMtu(id: number, mtu: number): void {
    const p = this.port(id);
    p.words[PortWord.MAX_FRAME] = mtu > 0 ? mtu + 18 : 0;
    syncPort(this.fwd, p);
  }

  /** Stops using a queue; the caller gets it back through its own handle on the same native queue. */
  stopQueue(port: number, index: number): void {
    const p = this.ports.get(port);
    if (!p) return;
    if (index % 2 === 0) {
      p.rx = p.rx.filter((r) => r.index !== index);
      syncPort(this.fwd, p);
    } else {
      const t = p.tx.get(index);
      if (!t) return;
      this.poller.remove(t.target);
      p.tx.delete(index);
      this.syncTx();
    }
  }

  pause(): void {
    this.paused = true;
    this.poller.pause();
  }

  resume(): void {
    this.paused = false;
    this.poller.resume();
    for (const p of this.pausedHosts) p.host?.watcher.start(true, false);
    this.pausedHosts.clear();
    if (this.wake) this.scheduleDrain();
  }

  dumpFdb(): FdbEntry[] {
    return this.fdb.dump(Date.now());
  }

  /** Remote VTEP `remote` of VXLAN port `id` (dest: its sockaddr, null: none); flood: it takes BUM copies. */
  setVtep(id: number, remote: number, dest: Uint8Array | null, flood: boolean): void {
    this.fwd.setVtep(id, remote, dest, flood);
  }

  /** Installs mac in vlan behind remote VTEP `remote` of VXLAN port `id` (false: the table is full). */
  setRemoteMac(mac: number, vlan: number, id: number, remote: number): boolean {
    return this.fdb.t.setRemote(mac, vlan, id, remote);
  }

  removeRemoteMac(mac: number, vlan: number, id: number, remote: number): boolean {
    return this.fdb.t.removeRemote(mac, vlan, id, remote);
  }

  /** The installed entries: [mac, vlan, port, remote] each. */
  dumpRemoteMacs(): Array<{ mac: number; vlan: number; port: number; remote: number }> {
    const a = this.fdb.t.dumpRemote();
    const out = [];
    for (let i = 0; i + 3 < a.length; i += 4) out.push({ mac: a[i], vlan: a[i + 1], port: a[i + 2], remote: a[i + 3] });
    return out;
  }

  /** Adds a flow (flows.ts parsed it), or replaces the one of the same priority and match. */
  addFlow(spec: FlowSpec): void {
    this.flows.add(spec);
  }

  /** Removes the flows a match (FlowWord layout) names; strict: only the one of its priority. */
  removeFlows(words: Int32Array, strict: boolean, spec?: { priority: number; match: string }): number {
    return this.flows.remove(words, strict, spec);
  }

  /** Removes the flow of this priority and match; true if it was there. */
  removeFlow(priority: number, match: string): boolean {
    return this.flows.removeByKey(priority, match);
  }

  /** The flow table with each flow's counters, in the order flows are tried. */
  dumpFlows(): FlowEntry[] {
    return this.flows.dump();
  }

  /** Adds packet handler `id` (flows name it handler:NAME). */
  addHandler(id: number, name: string, fn: PacketHandler, onError: (name: string, e: unknown) => void): void {
    if (this.handlerIds.has(name)) throw new Error(`handler ${name} exists`);
    this.handlers ??= new HandlerSet(
      this.fwd,
      () => this.fdb.agingMs,
      this.flows,
      (pid) => this.ports.get(pid)?.name,
      (n) => this.byName.get(n) ?? -1,
      (n) => this.handlerIds.get(n) ?? -1,
      (n, e) => onError(n, e),
    );
    this.handlers.add(id, name, fn);
    this.handlerIds.set(name, id);
  }

  /** Removes handler `id` and every flow that sends to it; returns how many flows. */
  removeHandler(id: number): number {
    const n = this.flows.removeSendingTo(id);
    this.handlers?.remove(id);
    for (const [name, h] of this.handlerIds) if (h === id) this.handlerIds.delete(name);
    return n;
  }

  handlerStats(): HandlerStats[] {
    return this.handlers?.stats() ?? [];
  }

  /**
   * Frames made by the switch for port `id` (RARP announcements), or any frames from its
   * host side: switched exactly like frames received on that port.
   */
  inject(id: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number): void {
    this.owned(id);
    this.fwd.forwardFlat(id, data, offsets, lens, null, n, Date.now(), this.fdb.agingMs);
    this.afterCall();
  }

  // ---- data path -------------------------------------------------------------

  private port(id: number): EnginePort {
    const p = this.ports.get(id);
    if (!p) throw new Error(`no port ${id}`);
    return p;
  }

  /** A port this thread serves (its host side is here, and the queues no other thread was given). */
  private owned(id: number): EnginePort {
    const p = this.port(id);
    const owner = p.words[PortWord.OWNER];
    if (owner !== this.thread) throw new Error(`port ${p.name} is served by data-plane thread ${owner}, not ${this.thread}`);
    return p;
  }

  /**
   * A port some of whose queues this thread may serve: its owner's, or a guest port's on any
   * thread of several (a guest with several queue pairs has them spread over the threads).
   */
  private servable(id: number): EnginePort {
    const p = this.port(id);
    if (this.thread >= 0 && p.host === null && p.words[PortWord.KIND] === PortKind.GUEST) return p;
    return this.owned(id);
  }

  /**
   * The TX queues to the forwarder's own loop (forwardAll), which busy and adaptive spins
   * use instead of a call per queue and burst; a hook (JavaScript over each burst) needs the
   * call per burst.
   */
  private syncTx(): void {
    const list = [...this.ports.values()].flatMap((p) => [...p.tx.values()]);
    this.fwd.setTxQueues(
      Uint32Array.from(list, (t) => t.slot),
      Int32Array.from(list, (t) => t.port.id),
      list.map((t) => t.stats),
    );
    this.txList = list;
    this.poller.setSpinAll(this.hook === null && list.length > 0 ? this.spinAll : null);
  }

  /** Every TX queue, several passes, in one native call (the Poller's busy and adaptive spins). */
  private readonly spinAll = (): number => {
    if (this.paused) return 0;
    // With a capture running, back to JavaScript after every burst: it drains the capture buffer.
    let n = this.fwd.forwardAll(Date.now(), this.fdb.agingMs, SPIN_PASSES, this.captured.size > 0, this.failed);
    // Frames handed over as the spin ended, before this thread asked to be woken again.
    if (this.wake) n += this.fwd.drainHandoff(DRAIN_FRAMES, false);
    if (this.failed[0] >= 0) {
      const t = this.txList[this.failed[0]];
      this.queueFailed(t, this.failed[1]);
    }
    if (n > 0) this.afterCall();
    return n;
  };

  /** A guest's TX ring is broken (a pop failed with -VqError `code`): the queue stops, the control plane hears why. */
  private queueFailed(t: TxQueue, code: number): void {
    const p = t.port;
    const e = t.vq.error;
    p.counters[PortCounter.QUEUE_ERRORS]++;
    this.stopQueue(p.id, t.index);
    this.notify.queueError(p.id, t.index, e ? `${e.code}: ${e.detail}` : `error ${-code}`);
  }

  /** One burst of a guest's TX queue (the Poller calls it). Returns the frames taken. */
  private serviceOnce(t: TxQueue): number {
    const p = t.port;
    if (this.paused || !p.tx.has(t.index)) return 0;
    const now = Date.now();
    let n: number;
    if (this.hook === null) {
      n = this.fwd.forward(t.slot, p.id, now, this.fdb.agingMs, t.stats);
    } else {
      n = t.vq.pop();
      if (n > 0) {
        this.hook.run(t.vq, p.words[PortWord.HDR_LEN], p.id, p.name, n);
        this.fwd.forwardPopped(t.slot, p.id, n, now, this.fdb.agingMs, this.hook.verdict, t.stats);
      }
    }
    if (n < 0) {
      this.queueFailed(t, n);
      return 0;
    }
    if (n > 0) this.afterCall();
    return n;
  }

  /** What the last forwarder call reported; frames for handlers, which they see now. */
  private afterCall(): void {
    this.callEvents();
    // Frames handlers inject may reach handlers again: a few rounds, then they wait for
    // the next call (they stay staged).
    for (let round = 0; round < 4 && this.handlers?.pending(); round++) {
      this.handlers.run();
      this.callEvents(); // of the handlers' sends
    }
  }

  /** Receivers that broke their rings, captures done. */
  private callEvents(): void {
    const ev = this.events;
    const broken = ev[0];
    const done = ev[1];
    ev[0] = 0;
    ev[1] = 0;
    for (let j = 0; j < broken; j++) {
      const q = this.ports.get(ev[2 + 2 * j]);
      const rx = q?.rx.find((r: RxQueue) => r.vq.slot === ev[3 + 2 * j]);
      if (!q || !rx) continue;
      // The receiver broke its RX ring (counted): stop delivering to it and tell the control plane.
      const e = rx.vq.error;
      this.stopQueue(q.id, rx.index);
      this.notify.queueError(q.id, rx.index, e ? `${e.code}: ${e.detail}` : 'its RX ring is broken');
    }
    for (let j = 0; j < done; j++) {
      const p = this.ports.get(ev[2 + 2 * broken + j]);
      if (p?.capture) this.stopCapture(p.id);
    }
    for (const p of this.captured) p.capture?.afterCall();
  }

  private scheduleHost(p: EnginePort): void {
    const h = p.host;
    if (!h || h.scheduled) return;
    if (this.paused) {
      h.watcher.stop(); // resume() starts it again
      this.pausedHosts.add(p);
      return;
    }
    h.scheduled = true;
    h.watcher.stop();
    setImmediate(() => {
      h.scheduled = false;
      if (p.host !== h) return;
      this.serviceHost(p);
      h.watcher.start(true, false);
    });
  }

  /** Reads what the host side of a port has for us (up to 16 batches) and switches it. */
  private serviceHost(p: EnginePort): void {
    const r = this.fwd.serviceHost(p.id, Date.now(), this.fdb.agingMs);
    this.afterCall();
    if (r < 0) {
      p.counters[PortCounter.QUEUE_ERRORS]++;
      this.notify.queueError(p.id, -1, `host port read failed: ${errnoName.get(-r) ?? `errno ${-r}`}`);
    }
  }

  /**
   * Frames the switch's other threads handed to this one (its wake fd fired): sent on to
   * their ports, a bounded batch per turn of the event loop until the rings are empty (a
   * producer wakes this thread only when it finds a ring empty).
   */
  private scheduleDrain(): void {
    if (this.drainScheduled || !this.wake) return;
    this.drainScheduled = true;
    this.wake.stop();
    setImmediate(() => {
      this.drainScheduled = false;
      if (!this.wake) return;
      if (this.paused) return; // resume() drains and watches again
      const n = this.fwd.drainHandoff(DRAIN_FRAMES, true);
      this.afterCall();
      this.wake.start(true, false);
      if (n >= DRAIN_FRAMES) this.scheduleDrain();
    });
  }

  /** The guest queues this engine serves: port name and queue index (TX: polled; RX: filled). */
  queues(): Array<{ port: string; index: number }> {
    const out: Array<{ port: string; index: number }> = [];
    for (const p of this.ports.values()) {
      const idx = [...p.rx.map((r) => r.index), ...p.tx.keys()].sort((a, b) => a - b);
      for (const index of idx) out.push({ port: p.name, index });
    }
    return out;
  }

  /** Counters and ring fill of every guest queue this engine serves. */
  queueStats(): QueueStat[] {
    const out: QueueStat[] = [];
    const one = (p: EnginePort, q: RxQueue | TxQueue) =>
      out.push({
        port: p.name,
        index: q.index,
        size: q.vq.size,
        packets: q.stats[QueueStat.PACKETS],
        bytes: q.stats[QueueStat.BYTES],
        notifySent: q.stats[QueueStat.NOTIFY],
        notifySuppressed: q.stats[QueueStat.SUPPRESSED],
        ringFill: q.vq.availCount(),
        thread: this.threadNumber,
      });
    for (const p of this.ports.values()) {
      for (const r of p.rx) one(p, r);
      for (const t of p.tx.values()) one(p, t);
    }
    return out.sort((a, b) => (a.port === b.port ? a.index - b.index : a.port < b.port ? -1 : 1));
  }

  /** Busy and idle time of the thread's poller (seconds). */
  threadTimes(): { busySeconds: number; idleSeconds: number } {
    const busy = this.poller.stats.busyMs;
    return { busySeconds: busy / 1000, idleSeconds: Math.max(0, this.poller.wallMs() - busy) / 1000 };
  }

  close(): void {
    if (this.ager) clearInterval(this.ager);
    clearInterval(this.flowAger);
    this.wake?.close();
    this.wake = null;
    for (const id of [...this.ports.keys()]) this.removePort(id);
    this.poller.close();
  }
}
