// A switch's data plane on several threads, seen as one Dataplane. Every thread knows every
// port (its VLAN rule, for the egress edit) and has the same flows; the forwarding table is
// one, shared (native/switch/switch_handoff.h). Each port has an owner thread: its host side,
// frames the switch makes for it, and its guest's first queue pair. A guest's further queue
// pairs (a multiqueue virtio-net device) are spread over the threads, as OVS spreads a
// port's rx queues over its PMD threads: each pair's RX and TX queue on one thread. A frame a
// thread switches to a port goes into that port's RX queues this thread serves (by the
// flow's hash among them), else through the ring from this thread to the port's owner, so
// an RX queue has one writer and no lock, and a flow, which enters through one TX queue,
// keeps its order. Packet handlers and hooks need a single thread.
//
// Owners are chosen where a port has nothing running: when it is added, and each time its
// guest's memory arrives (a new session), the port goes to the thread that serves the
// fewest queue pairs in use (a host port counts as one); each further pair as it starts goes
// to the thread serving the fewest then. So when a port's guest leaves, the next session of
// any port fills the place it left. The guest's memory is claimed here once per session and
// handed to each thread that serves its queues. Calls for one port are made one after
// another, in the order they came.
import { releaseSwitchShared, switchShared } from '../native/switch.js';
import { PortCounter } from '../native/switch.js';
import { GuestMemory } from '../native/guest-memory.js';
import { handOver } from '../native/parked.js';
import type { CaptureSink, CaptureSpec } from './capture.js';
import type { Dataplane } from './dataplane.js';
import type { SharedThread } from './engine.js';
import type { FlowEntry } from './flow-table.js';
import { formatFlow } from './flows.js';

/** Bytes of each ring between two threads: room for a few bursts of the largest frames. */
const RING_BYTES = 4 << 20;
/** Entries of the shared forwarding table. */
const FDB_ENTRIES = 65536;

/** n threads, thread k opened by open(k, ...); onError hears of what fails in the background (flow expiry). */
export async function createGroup(n: number, open: (k: number, shared: SharedThread) => Promise<Dataplane>, onError: (message: string) => void): Promise<Dataplane> {
  const token = switchShared(n, FDB_ENTRIES, RING_BYTES);
  const opened: Dataplane[] = [];
  try {
    for (let k = 0; k < n; k++) opened.push(await open(k, { token, thread: k }));
  } catch (e) {
    await Promise.allSettled(opened.map((d) => d.close()));
    releaseSwitchShared(token);
    throw e;
  }
  return new DataplaneGroup(opened, token, onError).api();
}

class DataplaneGroup {
  /** the thread that owns each port: its host side, its first queue pair, the ring frames for it take */
  private readonly owner = new Map<number, number>();
  /** ports in use: with a guest's memory, or a host side, or captured */
  private readonly busy = new Set<number>();
  /** this session's queue pairs of each guest port and the thread that serves each */
  private readonly pairs = new Map<number, Map<number, number>>();
  /** each guest port's queues running now: a pair counts as served while one of its queues runs */
  private readonly running = new Map<number, Set<number>>();
  /** each guest port's memory as claimed here, and the threads it was handed to */
  private readonly memory = new Map<number, { table: GuestMemory; holders: Set<number> }>();
  /** TAP and VXLAN ports (in use for as long as they are there) */
  private readonly hosts = new Set<number>();
  /** each captured port's capture, on every thread that serves its queues */
  private readonly captures = new Map<number, CaptureFan>();
  /** the last call made for each port: the next waits until it has posted its work */
  private readonly chains = new Map<number, Promise<unknown>>();
  private readonly expirer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly t: Dataplane[],
    private readonly token: number,
    private readonly onError: (message: string) => void,
  ) {
    this.expirer = setInterval(() => {
      this.expireFlows().catch((e: unknown) => {
        if (!this.closed) onError(`flow expiry failed: ${e instanceof Error ? e.message : String(e)}`);
      });
    }, 1000);
    this.expirer.unref();
  }

  /**
   * Runs f once every call made for port `id` before it has decided where its work goes and
   * posted it (whether that succeeded or not); resolves when f's work is done. A thread
   * takes its calls in the order they were posted, so the calls for a port need not wait
   * for each other's round trips.
   */
  private serial<T>(id: number, f: () => Promise<Posted<T>> | Posted<T>): Promise<T> {
    const head = (this.chains.get(id) ?? Promise.resolve()).then(f, f);
    const settled = head.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(id, settled);
    void settled.then(() => {
      if (this.chains.get(id) === settled) this.chains.delete(id);
    });
    return head.then((p) => p.done);
  }

  /**
   * What each thread serves: 1024 for each queue pair running (a port in use without one,
   * or a host port, counts as one on its owner), 1 for each idle port it owns. `except` is
   * left out. (A pair the guest turned off, ethtool -L, keeps its thread but counts nothing.)
   */
  private load(except = -1): number[] {
    const load = this.t.map(() => 0);
    for (const [p, k] of this.owner) {
      if (p === except) continue;
      if (!this.inUse(p)) {
        load[k] += 1;
        continue;
      }
      const served = this.servedBy(p);
      if (!served.includes(k)) load[k] += 1024;
      for (const j of served) load[j] += 1024;
    }
    return load;
  }

  /** The thread of each of port p's queue pairs that has a queue running. */
  private servedBy(p: number): number[] {
    const pairs = this.pairs.get(p);
    const live = new Set([...(this.running.get(p) ?? [])].map((i) => i >> 1));
    return [...live].map((pair) => pairs?.get(pair)).filter((j): j is number => j !== undefined);
  }

  /**
   * The thread that serves the least, counting half a pair more for each pair of port
   * `spread` it serves already (so a port's pairs go to different threads before they
   * double up), then the first.
   */
  private pick(except = -1, spread = -1): number {
    const load = this.load(except);
    for (const k of this.servedBy(spread)) load[k] += 512;
    return load.indexOf(Math.min(...load));
  }

  private inUse(p: number): boolean {
    return this.busy.has(p);
  }

  /**
   * Port `id` is about to be used (its guest's memory arrived, or a host side): if it is not
   * in use yet, it moves to the thread serving the least (every thread told before the
   * port's next calls are posted). Returns its owner.
   */
  private async claim(id: number): Promise<number> {
    const cur = this.ownerOf(id);
    if (this.inUse(id)) return cur;
    this.busy.add(id);
    const k = this.pick(id);
    if (k === cur) return cur;
    try {
      await this.all((d) => d.setOwner(id, k));
    } catch (e) {
      // Not moved (a thread refused): the port stays where it was; the caller hears why.
      await Promise.allSettled(this.t.map((d) => d.setOwner(id, cur)));
      this.busy.delete(id);
      throw e;
    }
    this.owner.set(id, k);
    return k;
  }

  private ownerOf(port: number): number {
    const k = this.owner.get(port);
    if (k === undefined) throw new Error(`no port ${port}`);
    return k;
  }

  /** The thread that serves queue `index` of port `id`: its pair's, given out now if new (pair 0: the owner). */
  private queueThread(id: number, index: number, assign: boolean): number {
    const pair = index >> 1;
    let pairs = this.pairs.get(id);
    const k = pairs?.get(pair);
    if (k !== undefined || !assign) return k ?? this.ownerOf(id);
    if (!pairs) this.pairs.set(id, (pairs = new Map()));
    const j = pair === 0 ? this.ownerOf(id) : this.pick(-1, id);
    pairs.set(pair, j);
    return j;
  }

  /** The threads that serve port `id`'s queues (its owner first). */
  private serving(id: number): number[] {
    const own = this.ownerOf(id);
    return [own, ...new Set([...(this.pairs.get(id)?.values() ?? [])].filter((k) => k !== own))];
  }

  /** Thread k gets port `id`'s memory, and joins its capture, if it has not yet (posted; resolves when done). */
  private join(id: number, k: number): Promise<unknown> {
    const m = this.memory.get(id);
    const work: Array<Promise<unknown>> = [];
    if (m && !m.holders.has(k)) {
      m.holders.add(k);
      work.push(handOver(m.table.park(), (token) => this.t[k].setMemory(id, token)));
    }
    const c = this.captures.get(id);
    if (c) work.push(c.join(k));
    return Promise.all(work);
  }

  /**
   * Port `id`'s guest left: every thread that has its memory releases it (stopping any
   * queue left there). The port is idle from now on, unless captured; its pairs are given
   * out again in its next session.
   */
  private release(id: number): Posted<void> {
    const m = this.memory.get(id);
    // (a pair started without memory, after a refused setMemory, has queues but no memory)
    const threads = new Set([this.ownerOf(id), ...(m?.holders ?? []), ...(this.pairs.get(id)?.values() ?? [])]);
    const done = this.all((d, k) => (threads.has(k) ? d.releaseMemory(id) : Promise.resolve())).then(() => undefined);
    this.pairs.delete(id);
    this.running.delete(id);
    this.memory.delete(id);
    // (each thread holds its own handle on the mappings until it has released them)
    m?.table.close();
    if (!this.captures.has(id) && !this.hosts.has(id)) this.busy.delete(id);
    return { done };
  }

  private all<R>(f: (d: Dataplane, k: number) => Promise<R>): Promise<R[]> {
    return Promise.all(this.t.map(f));
  }

  /**
   * Flows' idle and hard timeouts over all threads: a flow is idle while no thread has
   * matched it (OVS's revalidators judge a datapath flow the same way).
   */
  private async expireFlows(): Promise<void> {
    const dumps = await this.all((d) => d.dumpFlows());
    const due: FlowEntry[] = [];
    for (const f of mergeFlows(dumps)) {
      const idle = f.idleTimeout > 0 && f.idleMs >= f.idleTimeout * 1000;
      const hard = f.hardTimeout > 0 && f.ageMs >= f.hardTimeout * 1000;
      if (idle || hard) due.push(f);
    }
    for (const f of due) await this.all((d) => d.removeFlow(f.priority, f.match));
  }

  api(): Dataplane {
    const t = this.t;
    const owned = (id: number) => t[this.ownerOf(id)];
    return {
      threadCount: t.length,
      addPort: async (id, name, vlan, counters) => {
        const W = PortCounter.WORDS;
        if (counters.length < W * t.length) throw new RangeError(`a port's counters need ${t.length} blocks of ${W} words (one per thread)`);
        const k = this.pick();
        this.owner.set(id, k);
        try {
          await Promise.all(t.map((d, j) => d.addPort(id, name, vlan, counters.subarray(j * W, (j + 1) * W), k)));
        } catch (e) {
          this.owner.delete(id);
          await Promise.allSettled(t.map((d) => d.removePort(id)));
          throw e;
        }
      },
      removePort: (id) =>
        this.serial(id, () => {
          const done = this.all((d) => d.removePort(id)).then(() => undefined);
          this.owner.delete(id);
          this.busy.delete(id);
          this.hosts.delete(id);
          this.pairs.delete(id);
          this.running.delete(id);
          this.memory.get(id)?.table.close();
          this.memory.delete(id);
          this.captures.get(id)?.end();
          return { done };
        }),
      setOwner: () => Promise.reject(new Error("owners are the group's to choose")),
      attachHost: (id, spec) =>
        this.serial(id, async () => {
          const k = await this.claim(id);
          this.hosts.add(id);
          const done = t[k].attachHost(id, spec).catch((e: unknown) => {
            this.hosts.delete(id);
            throw e;
          });
          return { done };
        }),
      setVlan: async (id, vlan) => void (await this.all((d) => d.setVlan(id, vlan))),
      setMemory: (port, token) =>
        this.serial(port, async () => {
          // Claimed here first, so that a thread's refusal leaves nothing mapped.
          const table = GuestMemory.claim(token);
          const old = this.memory.get(port);
          let holders: Set<number>;
          try {
            holders = new Set([await this.claim(port), ...(old?.holders ?? [])]);
          } catch (e) {
            table.close();
            throw e;
          }
          this.memory.set(port, { table, holders });
          old?.table.close();
          return { done: Promise.all([...holders].map((k) => handOver(table.park(), (tok) => t[k].setMemory(port, tok)))).then(() => undefined) };
        }),
      releaseMemory: (port) => this.serial(port, () => this.release(port)),
      startQueue: (spec) =>
        this.serial(spec.port, () => {
          const k = this.queueThread(spec.port, spec.index, true);
          let running = this.running.get(spec.port);
          if (!running) this.running.set(spec.port, (running = new Set()));
          running.add(spec.index);
          const joined = this.join(spec.port, k);
          const started = t[k].startQueue(spec);
          return { done: Promise.all([joined, started]).then(() => undefined) };
        }),
      stopQueue: (port, index) =>
        this.serial(port, () => {
          this.running.get(port)?.delete(index);
          return { done: t[this.queueThread(port, index, false)].stopQueue(port, index) };
        }),
      setMtu: async (port, mtu) => void (await this.all((d) => d.setMtu(port, mtu))),
      pause: async () => void (await this.all((d) => d.pause())),
      resume: async () => void (await this.all((d) => d.resume())),
      inject: (port, frame) => this.serial(port, () => ({ done: owned(port).inject(port, frame) })),
      // The table is shared: any thread sees all of it.
      dumpFdb: () => t[0].dumpFdb(),
      setRemoteMac: (mac, vlan, id, remote) => t[0].setRemoteMac(mac, vlan, id, remote),
      removeRemoteMac: (mac, vlan, id, remote) => t[0].removeRemoteMac(mac, vlan, id, remote),
      dumpRemoteMacs: () => t[0].dumpRemoteMacs(),
      // The VTEP table is used where the VXLAN port's frames leave: on its owner.
      setVtep: (id, remote, dest, flood) => this.serial(id, () => ({ done: owned(id).setVtep(id, remote, dest, flood) })),
      addFlow: async (spec) => void (await this.all((d) => d.addFlow(spec))),
      removeFlows: async (words, strict) => (await this.all((d) => d.removeFlows(words, strict)))[0],
      removeFlow: async (priority, match) => (await this.all((d) => d.removeFlow(priority, match))).some((r) => r),
      dumpFlows: async () => mergeFlows(await this.all((d) => d.dumpFlows())),
      addHandler: () => Promise.reject(new Error(`packet handlers need a switch with one data-plane thread (this one has ${t.length})`)),
      removeHandler: () => Promise.resolve(0),
      handlerStats: () => Promise.resolve([]),
      threads: async () => (await this.all((d) => d.threads())).flat(),
      queueStats: async () => (await this.all((d) => d.queueStats())).flat().sort((a, b) => (a.port === b.port ? a.index - b.index : a.port < b.port ? -1 : 1)),
      // A captured port stays where it is until the capture ends; each thread that serves
      // its queues captures what passes there, into one sink.
      startCapture: (port, spec, sink) =>
        this.serial(port, () => {
          if (this.captures.has(port)) throw new Error(`port ${port} is already being captured`);
          const fan = new CaptureFan(
            spec,
            sink,
            (k, s) => t[k].startCapture(port, spec, s),
            (k) => t[k].stopCapture(port),
            (k, e) => this.onError(`capture of port ${port}: stopping it on data-plane thread ${k} failed: ${e instanceof Error ? e.message : String(e)}`),
            () => {
              if (this.captures.get(port) === fan) this.captures.delete(port);
              if (!this.memory.has(port) && !this.hosts.has(port)) this.busy.delete(port);
            },
          );
          this.captures.set(port, fan);
          this.busy.add(port);
          const done = Promise.all(this.serving(port).map((k) => fan.join(k))).then(
            () => undefined,
            (e: unknown) => {
              fan.end(false);
              throw e;
            },
          );
          return { done };
        }),
      stopCapture: (port) => this.serial(port, () => ({ done: this.captures.get(port)?.stop() ?? Promise.resolve() })),
      setAging: async (ms) => void (await this.all((d) => d.setAging(ms))),
      close: async () => {
        this.closed = true;
        clearInterval(this.expirer);
        await Promise.allSettled(t.map((d) => d.close()));
        for (const m of this.memory.values()) m.table.close();
        this.memory.clear();
        releaseSwitchShared(this.token);
      },
    };
  }
}

/** A call's work, posted to the threads: `done` resolves when they have done it. */
interface Posted<T> {
  done: Promise<T>;
}

/**
 * One capture of a port over the threads that serve its queues: each thread stages the
 * frames that pass there, and the records come together into one sink. The count, if any,
 * is kept over all of them (records past it are cut off); done once every thread is done.
 */
class CaptureFan {
  private readonly threads = new Set<number>();
  private readonly live = new Set<number>();
  private packets = 0;
  private finished = false;
  /** stopped: no thread joins any more */
  private stopping = false;

  constructor(
    private readonly spec: CaptureSpec,
    private readonly sink: CaptureSink,
    private readonly start: (k: number, sink: CaptureSink) => Promise<void>,
    private readonly halt: (k: number) => Promise<void>,
    /** a stop not waited for failed (the thread keeps capturing until its own count) */
    private readonly failed: (k: number, e: unknown) => void,
    private readonly ended: () => void,
  ) {}

  /** Stops the capture on the threads still at it, without waiting. */
  private haltLive(): void {
    for (const k of this.live) void this.halt(k).catch((e: unknown) => this.failed(k, e));
  }

  /** Thread k captures too (a queue pair of the port started there). */
  async join(k: number): Promise<void> {
    if (this.finished || this.stopping || this.threads.has(k)) return;
    this.threads.add(k);
    this.live.add(k);
    try {
      await this.start(k, (records, packets, done) => this.records(k, records, packets, done));
    } catch (e) {
      this.live.delete(k);
      throw e;
    }
  }

  /** Stops the capture on every thread; their last records follow. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.live].map((k) => this.halt(k)));
  }

  /** Ends it now, without waiting for the threads: the port is gone (the sink hears it is done), or the start failed (it does not). */
  end(notify = true): void {
    if (this.finished) return;
    this.finished = true;
    this.haltLive();
    if (notify) this.sink(new Uint8Array(0), 0, true);
    this.ended();
  }

  private records(k: number, records: Uint8Array, packets: number, done: boolean): void {
    if (this.finished) return;
    if (done) this.live.delete(k);
    const limit = this.spec.count ?? 0;
    let out = records;
    if (limit > 0 && this.packets + packets >= limit) {
      out = firstRecords(records, limit - this.packets);
      packets = limit - this.packets;
    }
    this.packets += packets;
    const last = (limit > 0 && this.packets >= limit) || this.live.size === 0;
    if (!last) {
      if (out.length > 0 || done) this.sink(out, packets, false);
      return;
    }
    this.finished = true;
    this.haltLive();
    this.sink(out, packets, true);
    this.ended();
  }
}

/** The first n pcap records of a run of them (each a 16-byte header whose incl_len, at 8, gives the bytes that follow). */
function firstRecords(records: Uint8Array, n: number): Uint8Array {
  const v = new DataView(records.buffer, records.byteOffset, records.byteLength);
  let at = 0;
  for (let i = 0; i < n && at + 16 <= records.length; i++) at += 16 + v.getUint32(at + 8, true);
  return records.subarray(0, Math.min(at, records.length));
}

/** The same flow on every thread, one entry: packets and bytes summed, idle since the last match on any. */
export function mergeFlows(dumps: FlowEntry[][]): FlowEntry[] {
  const by = new Map<string, FlowEntry>();
  for (const dump of dumps) {
    for (const f of dump) {
      const key = `${f.priority} ${f.match}`;
      const m = by.get(key);
      if (!m) {
        by.set(key, { ...f });
        continue;
      }
      m.packets += f.packets;
      m.bytes += f.bytes;
      m.idleMs = Math.min(m.idleMs, f.idleMs);
      m.ageMs = Math.max(m.ageMs, f.ageMs);
    }
  }
  const out = [...by.values()];
  for (const f of out) f.line = formatFlow(f, f.packets, f.bytes, f.idleMs);
  return out;
}
