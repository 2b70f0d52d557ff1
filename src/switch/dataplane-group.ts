// A switch's data plane on several threads, seen as one Dataplane. Every thread knows every
// port (its VLAN rule, for the egress edit) and has the same flows; the forwarding table is
// one, shared (native/switch/switch_handoff.h). Each port is served by one thread, its owner:
// its guest's queues, its host fd, its capture. A frame another thread switches to it goes
// through the ring from that thread to the owner, so RX queues have one writer and no lock,
// and a flow, which enters through one port, keeps its order. Packet handlers and hooks need
// a single thread.
//
// Owners are chosen where a port has nothing running: when it is added, and each time its
// guest's memory arrives (a new session), the port goes to the thread that serves the
// fewest ports in use (a guest's, or a TAP or VXLAN port). So when a port's guest leaves,
// the next session of any port fills the place it left.
import { releaseSwitchShared, switchShared } from '../native/switch.js';
import { PortCounter } from '../native/switch.js';
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
  /** the thread that serves each port */
  private readonly owner = new Map<number, number>();
  /** ports in use: with a guest's memory, or a host side, or captured */
  private readonly busy = new Set<number>();
  private readonly capturing = new Set<number>();
  /** ports whose guest's memory is being released: leaving, so no longer counted in use */
  private readonly releasing = new Set<number>();
  /** each port's claims so far: a release counts only if no claim came after it began */
  private readonly claims = new Map<number, number>();
  /** ports whose move to another thread is under way */
  private readonly moving = new Map<number, Promise<void>>();
  private readonly expirer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly t: Dataplane[],
    private readonly token: number,
    onError: (message: string) => void,
  ) {
    this.expirer = setInterval(() => {
      this.expireFlows().catch((e: unknown) => {
        if (!this.closed) onError(`flow expiry failed: ${e instanceof Error ? e.message : String(e)}`);
      });
    }, 1000);
    this.expirer.unref();
  }

  /** The thread that serves the fewest ports in use (ties: the fewest ports, then the first). */
  private pick(except = -1): number {
    const load = this.t.map(() => 0);
    for (const [p, k] of this.owner) if (p !== except) load[k] += this.inUse(p) ? 1024 : 1;
    return load.indexOf(Math.min(...load));
  }

  /** In use and staying: a port whose guest's memory is being released is leaving, unless captured. */
  private inUse(p: number): boolean {
    return this.busy.has(p) && (!this.releasing.has(p) || this.capturing.has(p));
  }

  /**
   * Port `id` is about to be used (its guest's memory arrived, or a host side): if it is
   * not in use yet (or its last guest's memory is still being released, and it is not
   * captured), it moves to the thread serving the fewest ports in use. A release under way
   * was posted to the old thread before the move, so that thread releases first.
   */
  private claim(id: number): Promise<Dataplane> {
    const cur = this.owner.get(id);
    if (cur === undefined) return Promise.reject(new Error(`no port ${id}`));
    this.claims.set(id, (this.claims.get(id) ?? 0) + 1);
    if (!this.inUse(id)) {
      this.busy.add(id);
      const k = this.pick(id);
      if (k !== cur) {
        // Calls for the port made meanwhile (its queues' starts) wait for the move (route()).
        this.owner.set(id, k);
        const moved: Promise<void> = this.all((d) => d.setOwner(id, k)).then(
          () => {
            if (this.moving.get(id) === moved) this.moving.delete(id);
          },
          (e: unknown) => {
            // Not moved (a thread refused): the port stays where it was; the caller hears why.
            this.owner.set(id, cur);
            this.busy.delete(id);
            this.moving.delete(id);
            throw e;
          },
        );
        this.moving.set(id, moved);
      }
    }
    return this.route(id);
  }

  /** The thread serving port `id`, once a move under way is done. */
  private async route(id: number): Promise<Dataplane> {
    await this.moving.get(id);
    return this.of(id);
  }

  private of(port: number): Dataplane {
    const k = this.owner.get(port);
    if (k === undefined) throw new Error(`no port ${port}`);
    return this.t[k];
  }

  private all<R>(f: (d: Dataplane) => Promise<R>): Promise<R[]> {
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
      removePort: async (id) => {
        await this.all((d) => d.removePort(id));
        this.owner.delete(id);
        this.busy.delete(id);
        this.claims.delete(id);
      },
      setOwner: () => Promise.reject(new Error("owners are the group's to choose")),
      attachHost: async (id, spec) => (await this.claim(id)).attachHost(id, spec),
      setVlan: async (id, vlan) => void (await this.all((d) => d.setVlan(id, vlan))),
      setMemory: async (port, token) => (await this.claim(port)).setMemory(port, token),
      releaseMemory: async (port) => {
        const claims = this.claims.get(port);
        this.releasing.add(port);
        try {
          await (await this.route(port)).releaseMemory(port);
        } finally {
          this.releasing.delete(port);
        }
        // (a session that began meanwhile keeps the port in use)
        if (!this.capturing.has(port) && this.claims.get(port) === claims) this.busy.delete(port);
      },
      startQueue: async (spec) => (await this.route(spec.port)).startQueue(spec),
      stopQueue: async (port, index) => (await this.route(port)).stopQueue(port, index),
      setMtu: async (port, mtu) => void (await this.all((d) => d.setMtu(port, mtu))),
      pause: async () => void (await this.all((d) => d.pause())),
      resume: async () => void (await this.all((d) => d.resume())),
      inject: async (port, frame) => (await this.route(port)).inject(port, frame),
      // The table is shared: any thread sees all of it.
      dumpFdb: () => t[0].dumpFdb(),
      setRemoteMac: (mac, vlan, id, remote) => t[0].setRemoteMac(mac, vlan, id, remote),
      removeRemoteMac: (mac, vlan, id, remote) => t[0].removeRemoteMac(mac, vlan, id, remote),
      dumpRemoteMacs: () => t[0].dumpRemoteMacs(),
      // The VTEP table is used where the VXLAN port's frames leave: on its owner.
      setVtep: async (id, remote, dest, flood) => (await this.route(id)).setVtep(id, remote, dest, flood),
      addFlow: async (spec) => void (await this.all((d) => d.addFlow(spec))),
      removeFlows: async (words, strict) => (await this.all((d) => d.removeFlows(words, strict)))[0],
      removeFlow: async (priority, match) => (await this.all((d) => d.removeFlow(priority, match))).some((r) => r),
      dumpFlows: async () => mergeFlows(await this.all((d) => d.dumpFlows())),
      addHandler: () => Promise.reject(new Error(`packet handlers need a switch with one data-plane thread (this one has ${t.length})`)),
      removeHandler: () => Promise.resolve(0),
      handlerStats: () => Promise.resolve([]),
      threads: async () => (await this.all((d) => d.threads())).flat(),
      queueStats: async () => (await this.all((d) => d.queueStats())).flat().sort((a, b) => (a.port === b.port ? a.index - b.index : a.port < b.port ? -1 : 1)),
      // A captured port stays where it is until the capture ends.
      startCapture: async (port, spec, sink) => {
        const d = await this.route(port);
        this.capturing.add(port);
        this.busy.add(port);
        try {
          await d.startCapture(port, spec, (records, packets, done) => {
            if (done) this.capturing.delete(port);
            sink(records, packets, done);
          });
        } catch (e) {
          this.capturing.delete(port);
          throw e;
        }
      },
      stopCapture: async (port) => (await this.route(port)).stopCapture(port),
      setAging: async (ms) => void (await this.all((d) => d.setAging(ms))),
      close: async () => {
        this.closed = true;
        clearInterval(this.expirer);
        await Promise.allSettled(t.map((d) => d.close()));
        releaseSwitchShared(this.token);
      },
    };
  }
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
