// The forwarding engine: runs on a data-plane thread (src/switch/dataplane-worker.ts), or
// in-process for tests. Per TX burst: pop, read the frame heads (one native call), decide
// in JavaScript (VLAN, learning, lookup, hook), deliver per destination queue (one native
// call each, one copy guest to guest), push the TX chains back. No object per packet.
import { FdWatcher } from '../native/unix-socket.js';
import { GuestMemory } from '../native/guest-memory.js';
import { Virtqueue, type RingLayout } from '../native/virtqueue.js';
import { DELIVER_STATS, DeliverStat, VLAN_KEEP, VLAN_STRIP, netDeliver, netDeliverFlat, netPeek } from '../native/net.js';
import { Fdb, isMulticast, macAt, type FdbEntry } from './fdb.js';
import { PortCounter } from './counters.js';
import { readSync } from 'node:fs';

export type VlanConfig = { mode: 'access'; vid: number } | { mode: 'trunk'; allowed?: number[]; native?: number };

/** Where a packet goes, as the hook sets it: keep switching, drop, or a port id. */
export const Verdict = { SWITCH: -1, DROP: -2 } as const;

const HEAD = 64; // bytes of each frame head read for classification
const FLOOD = -3;
const ETH_P_8021Q = 0x8100;

/** A burst as a dataplane hook sees it: arrays indexed by packet, reused for every burst. */
export interface PacketBurst {
  /** packets in this burst */
  readonly n: number;
  /** ingress port id and name */
  readonly port: number;
  readonly portName: string;
  /** first 64 bytes of each frame: packet i at heads[i*64 ...] (a copy; see frame()) */
  readonly heads: Uint8Array;
  /** frame lengths */
  readonly lens: Uint32Array;
  /** per packet: Verdict.SWITCH (default), Verdict.DROP, or a port id to send it to */
  readonly verdict: Int32Array;
  /** Zero-copy views of packet i's frame in the sender's memory (for in-place edits). */
  frame(i: number): Uint8Array[];
  /** Call after editing frames in place so the switch re-reads the heads. */
  reread(): void;
  /** Looks up a port id by name (-1 if none). */
  portId(name: string): number;
}
export type BurstHook = (b: PacketBurst) => void;

interface RxQueue {
  vq: Virtqueue;
  index: number;
}

interface TxQueue {
  vq: Virtqueue;
  index: number;
  port: EnginePort;
  kickFd: number;
  watcher: FdWatcher | null;
  poll: NodeJS.Timeout | null;
  scheduled: boolean;
}

export interface EnginePort {
  id: number;
  name: string;
  vlan: VlanConfig;
  counters: Float64Array;
  hdrLen: number;
  mergeable: boolean;
  /** RxOffload bits the port's guest takes as is (its GUEST_* features) */
  rxOffloads: number;
  /** the guest's TX headers may carry offloads (it negotiated CSUM / HOST_TSO*) */
  txOffloads: boolean;
  memory: GuestMemory | null;
  rx: RxQueue[];
  tx: Map<number, TxQueue>;
  /** per RX queue, per VLAN op kind (0 keep, 1 strip, 2 insert): packet indices of this burst */
  lists: Uint16Array[][];
  counts: Int32Array[];
  /** the TCI inserted by kind 2 in this burst (one ingress port: one VLAN for untagged frames) */
  insertTci: number;
  touched: boolean;
}

export interface QueueStartSpec {
  port: number;
  index: number;
  layout: RingLayout;
  size: number;
  token: number;
  kickFd: number;
  hdrLen: number;
  mergeable: boolean;
  rxOffloads: number;
  txOffloads: boolean;
}

export interface EngineEvents {
  queueError(port: number, index: number, reason: string): void;
}

export class SwitchEngine {
  readonly fdb: Fdb;
  private readonly ports = new Map<number, EnginePort>();
  private readonly byName = new Map<string, number>();
  private paused = false;
  private readonly pendingService = new Set<TxQueue>();
  private readonly heads: Uint8Array;
  private readonly lens: Uint32Array;
  private readonly verdict: Int32Array;
  private readonly dest: Int32Array;
  private readonly vid: Int32Array;
  private readonly tagged: Uint8Array;
  private readonly stats = new Uint32Array(DELIVER_STATS);
  private readonly touched: EnginePort[] = [];
  private hook: BurstHook | null = null;
  private readonly burstView: {
    n: number;
    port: number;
    portName: string;
    heads: Uint8Array;
    lens: Uint32Array;
    verdict: Int32Array;
    frame(i: number): Uint8Array[];
    reread(): void;
    portId(name: string): number;
  };
  private current: TxQueue | null = null;
  private rereadWanted = false;
  private ager: NodeJS.Timeout | null = null;

  constructor(
    readonly burst = 32,
    agingMs = 300_000,
    private readonly events: EngineEvents = { queueError: () => undefined },
  ) {
    this.fdb = new Fdb(agingMs);
    this.heads = new Uint8Array(burst * HEAD);
    this.lens = new Uint32Array(burst);
    this.verdict = new Int32Array(burst);
    this.dest = new Int32Array(burst);
    this.vid = new Int32Array(burst);
    this.tagged = new Uint8Array(burst);
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias
    this.burstView = {
      n: 0,
      port: 0,
      portName: '',
      heads: this.heads,
      lens: this.lens,
      verdict: this.verdict,
      frame: (i) => (self.current ? self.current.vq.views(i) : []),
      reread: () => {
        self.rereadWanted = true;
      },
      portId: (name) => self.byName.get(name) ?? -1,
    };
    this.ager = setInterval(() => this.fdb.age(Date.now()), Math.max(1000, Math.min(agingMs / 4, 30_000)));
    this.ager.unref();
  }

  setHook(h: BurstHook | null): void {
    this.hook = h;
  }

  setAging(ms: number): void {
    this.fdb.agingMs = ms;
  }

  addPort(id: number, name: string, vlan: VlanConfig, counters: Float64Array): void {
    if (this.ports.has(id)) throw new Error(`port ${id} exists`);
    this.ports.set(id, {
      id,
      name,
      vlan,
      counters,
      hdrLen: 12,
      mergeable: true,
      rxOffloads: 0,
      txOffloads: false,
      memory: null,
      rx: [],
      tx: new Map(),
      lists: [],
      counts: [],
      insertTci: 0,
      touched: false,
    });
    this.byName.set(name, id);
  }

  removePort(id: number): void {
    const p = this.ports.get(id);
    if (!p) return;
    for (const q of [...p.tx.keys()]) this.stopQueue(id, q);
    for (const r of [...p.rx]) this.stopQueue(id, r.index);
    p.memory?.close();
    this.ports.delete(id);
    this.byName.delete(p.name);
    this.fdb.flushPort(id);
  }

  setVlan(id: number, vlan: VlanConfig): void {
    const p = this.port(id);
    p.vlan = vlan;
    this.fdb.flushPort(id);
  }

  setMemory(id: number, token: number): void {
    const p = this.port(id);
    p.memory?.close();
    p.memory = GuestMemory.claim(token);
    for (const r of p.rx) r.vq.setMemoryView(p.memory);
    for (const t of p.tx.values()) t.vq.setMemoryView(p.memory);
  }

  startQueue(s: QueueStartSpec): void {
    const p = this.port(s.port);
    const vq = new Virtqueue({ layout: s.layout, size: s.size, token: s.token, burst: this.burst });
    if (p.memory) vq.setMemoryView(p.memory);
    p.hdrLen = s.hdrLen;
    p.mergeable = s.mergeable;
    p.rxOffloads = s.rxOffloads;
    p.txOffloads = s.txOffloads;
    if (s.index % 2 === 0) {
      // Guest RX: we fill it when frames arrive; its kicks (new buffers) are not needed.
      vq.setNotify(false);
      p.rx.push({ vq, index: s.index });
      p.rx.sort((a, b) => a.index - b.index);
      this.resizeLists(p);
    } else {
      const t: TxQueue = { vq, index: s.index, port: p, kickFd: s.kickFd, watcher: null, poll: null, scheduled: false };
      p.tx.set(s.index, t);
      if (s.kickFd >= 0) {
        t.watcher = new FdWatcher(s.kickFd, () => this.onKick(t));
        t.watcher.start(true, false);
      } else {
        t.poll = setInterval(() => this.schedule(t), 1);
      }
      this.schedule(t); // chains may already be waiting
    }
  }

  /** Stops using a queue; the caller gets it back through its own handle on the same native queue. */
  stopQueue(port: number, index: number): void {
    const p = this.ports.get(port);
    if (!p) return;
    if (index % 2 === 0) {
      p.rx = p.rx.filter((r) => r.index !== index);
      this.resizeLists(p);
    } else {
      const t = p.tx.get(index);
      if (!t) return;
      t.watcher?.close();
      if (t.poll) clearInterval(t.poll);
      this.pendingService.delete(t);
      p.tx.delete(index);
    }
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    const pending = [...this.pendingService];
    this.pendingService.clear();
    for (const t of pending) this.schedule(t);
  }

  dumpFdb(): FdbEntry[] {
    return this.fdb.dump(Date.now());
  }

  /**
   * Frames from the host side of port `id` (TAP, VXLAN) or made by the switch (RARP
   * announcements): switched exactly like frames a guest sent on that port.
   */
  inject(id: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number): void {
    const p = this.port(id);
    const now = Date.now();
    for (let i = 0; i < n; i++) {
      const off = offsets[i];
      const len = lens[i];
      p.counters[PortCounter.RX_PACKETS]++;
      p.counters[PortCounter.RX_BYTES] += len;
      if (len < 14) {
        p.counters[PortCounter.DROP_BAD]++;
        continue;
      }
      const head = data.subarray(off, off + Math.min(len, HEAD));
      const cls = this.classify(p, head, 0, now);
      if (cls.vid < 0) continue;
      const targets = cls.dest === FLOOD ? [...this.ports.values()].filter((q) => q !== p) : cls.dest >= 0 ? [this.ports.get(cls.dest)!] : [];
      if (cls.dest === FLOOD) p.counters[PortCounter.FLOODED]++;
      for (const q of targets) {
        const op = this.egressOp(q, cls.vid, cls.tagged);
        if (op === null) continue;
        const rx = q.rx[0];
        if (!rx) {
          q.counters[PortCounter.DROP_NO_QUEUE]++;
          continue;
        }
        this.stats.fill(0);
        const r = netDeliverFlat({ q: rx.vq, hdrLen: q.hdrLen, mergeable: q.mergeable, offloads: q.rxOffloads }, data, Uint32Array.of(off), Uint32Array.of(len), 1, null, this.stats, op);
        this.account(q, rx, r);
      }
    }
  }

  // ---- data path -------------------------------------------------------------

  private port(id: number): EnginePort {
    const p = this.ports.get(id);
    if (!p) throw new Error(`no port ${id}`);
    return p;
  }

  private resizeLists(p: EnginePort): void {
    p.lists = p.rx.map(() => [new Uint16Array(this.burst), new Uint16Array(this.burst), new Uint16Array(this.burst)]);
    p.counts = p.rx.map(() => new Int32Array(3));
  }

  private onKick(t: TxQueue): void {
    try {
      readSync(t.kickFd, kickBuf, 0, 8, null);
    } catch {
      // EAGAIN: already drained
    }
    this.schedule(t);
  }

  private schedule(t: TxQueue): void {
    if (this.paused) {
      this.pendingService.add(t);
      return;
    }
    if (t.scheduled) return;
    t.scheduled = true;
    setImmediate(() => {
      t.scheduled = false;
      this.service(t);
    });
  }

  /** Serves a TX queue until it is empty (then re-arms kicks) or 16 bursts were done. */
  service(t: TxQueue): void {
    if (this.paused) {
      this.pendingService.add(t);
      return;
    }
    if (!t.port.tx.has(t.index)) return; // stopped meanwhile
    for (let round = 0; round < 16; round++) {
      const n = t.vq.pop();
      if (n < 0) {
        const e = t.vq.error;
        t.port.counters[PortCounter.QUEUE_ERRORS]++;
        this.stopQueue(t.port.id, t.index);
        this.events.queueError(t.port.id, t.index, e ? `${e.code}: ${e.detail}` : `error ${-n}`);
        return;
      }
      if (n === 0) {
        if (!t.vq.setNotify(true)) return; // empty, kicks re-armed
        continue; // chains arrived while re-arming
      }
      this.forward(t, n);
    }
    this.schedule(t); // more work: yield to the event loop first
  }

  private classify(p: EnginePort, h: Uint8Array, o: number, now: number): { vid: number; tagged: boolean; dest: number } {
    const ethertype = (h[o + 12] << 8) | h[o + 13];
    const tagged = ethertype === ETH_P_8021Q;
    let vid: number;
    if (p.vlan.mode === 'access') {
      if (tagged) {
        p.counters[PortCounter.DROP_VLAN]++;
        return { vid: -1, tagged, dest: -1 };
      }
      vid = p.vlan.vid;
    } else if (tagged) {
      vid = ((h[o + 14] << 8) | h[o + 15]) & 0xfff;
      if (p.vlan.allowed && !p.vlan.allowed.includes(vid)) {
        p.counters[PortCounter.DROP_VLAN]++;
        return { vid: -1, tagged, dest: -1 };
      }
    } else if (p.vlan.native !== undefined) {
      vid = p.vlan.native;
    } else {
      p.counters[PortCounter.DROP_VLAN]++;
      return { vid: -1, tagged, dest: -1 };
    }
    if (!isMulticast(h, o + 6)) this.fdb.learn(macAt(h, o + 6), vid, p.id, now);
    if (isMulticast(h, o)) return { vid, tagged, dest: FLOOD };
    const d = this.fdb.lookup(macAt(h, o), vid, now);
    return { vid, tagged, dest: d < 0 ? FLOOD : d };
  }

  /** The VLAN operation to deliver a frame of `vid` to q, or null if q does not carry vid. */
  private egressOp(q: EnginePort, vid: number, tagged: boolean): number | null {
    if (q.vlan.mode === 'access') {
      if (q.vlan.vid !== vid) return null;
      return tagged ? VLAN_STRIP : VLAN_KEEP;
    }
    if (q.vlan.allowed && !q.vlan.allowed.includes(vid) && q.vlan.native !== vid) return null;
    if (q.vlan.native === vid) return tagged ? VLAN_STRIP : VLAN_KEEP;
    return tagged ? VLAN_KEEP : vid;
  }

  private forward(t: TxQueue, n: number): void {
    const p = t.port;
    const now = Date.now();
    netPeek(t.vq, n, p.hdrLen, this.heads, HEAD, this.lens);
    if (this.hook) {
      this.verdict.fill(Verdict.SWITCH, 0, n);
      const b = this.burstView;
      b.n = n;
      b.port = p.id;
      b.portName = p.name;
      this.current = t;
      this.rereadWanted = false;
      try {
        this.hook(b);
      } finally {
        this.current = null;
      }
      if (this.rereadWanted) netPeek(t.vq, n, p.hdrLen, this.heads, HEAD, this.lens);
    }
    const c = p.counters;
    for (let i = 0; i < n; i++) {
      const len = this.lens[i];
      c[PortCounter.RX_PACKETS]++;
      c[PortCounter.RX_BYTES] += len;
      this.dest[i] = -1;
      if (len < 14) {
        c[PortCounter.DROP_BAD]++;
        continue;
      }
      const v = this.hook ? this.verdict[i] : Verdict.SWITCH;
      if (v === Verdict.DROP) {
        c[PortCounter.DROP_HOOK]++;
        continue;
      }
      const cls = this.classify(p, this.heads, i * HEAD, now);
      if (cls.vid < 0) continue;
      this.vid[i] = cls.vid;
      this.tagged[i] = cls.tagged ? 1 : 0;
      this.dest[i] = v >= 0 ? v : cls.dest;
      if (this.dest[i] === FLOOD) c[PortCounter.FLOODED]++;
    }
    // Group by destination port, RX queue (flow hash) and VLAN operation.
    for (let i = 0; i < n; i++) {
      const d = this.dest[i];
      if (d === -1) continue;
      if (d === FLOOD) {
        for (const q of this.ports.values()) if (q !== p) this.stage(q, i);
      } else {
        const q = this.ports.get(d);
        if (q && q !== p) this.stage(q, i);
      }
    }
    for (const q of this.touched) this.flushPort(q, t);
    this.touched.length = 0;
    const b = t.vq.b;
    b.usedId.set(b.head.subarray(0, n));
    b.usedLen.fill(0, 0, n);
    t.vq.push(n);
  }

  private stage(q: EnginePort, i: number): void {
    const op = this.egressOp(q, this.vid[i], this.tagged[i] === 1);
    if (op === null) return; // q is not a member of the frame's VLAN (not a drop: not its traffic)
    if (q.rx.length === 0) {
      q.counters[PortCounter.DROP_NO_QUEUE]++;
      return;
    }
    const k = q.rx.length === 1 ? 0 : this.flowHash(i) % q.rx.length;
    const kind = op === VLAN_KEEP ? 0 : op === VLAN_STRIP ? 1 : 2;
    if (kind === 2) q.insertTci = op;
    const cnt = q.counts[k];
    q.lists[k][kind][cnt[kind]++] = i;
    if (!q.touched) {
      q.touched = true;
      this.touched.push(q);
    }
  }

  /** A flow's RX queue: hash of the IPv4 addresses and ports, else of the MAC addresses. */
  private flowHash(i: number): number {
    const h = this.heads;
    const o = i * HEAD;
    let x = 0x811c9dc5;
    const ipv4 = h[o + 12] === 0x08 && h[o + 13] === 0x00;
    const from = ipv4 ? o + 26 : o;
    const to = ipv4 ? o + 38 : o + 12;
    for (let k = from; k < to; k++) x = Math.imul(x ^ h[k], 16777619);
    // Final avalanche (FNV-1a alone leaves the low bits, used for "% queues", weak).
    x ^= x >>> 16;
    x = Math.imul(x, 0x45d9f3b);
    x ^= x >>> 16;
    return x >>> 0;
  }

  private flushPort(q: EnginePort, t: TxQueue): void {
    q.touched = false;
    for (let k = 0; k < q.rx.length; k++) {
      const cnt = q.counts[k];
      for (let kind = 0; kind < 3; kind++) {
        const m = cnt[kind];
        if (m === 0) continue;
        cnt[kind] = 0;
        this.stats.fill(0);
        const r = netDeliver({ q: q.rx[k].vq, hdrLen: q.hdrLen, mergeable: q.mergeable, offloads: q.rxOffloads }, t.vq, t.port.hdrLen, t.port.txOffloads, q.lists[k][kind], m, this.stats, kind === 0 ? VLAN_KEEP : kind === 1 ? VLAN_STRIP : q.insertTci);
        this.account(q, q.rx[k], r);
      }
    }
  }

  private account(q: EnginePort, rx: RxQueue, r: number): void {
    const c = q.counters;
    const s = this.stats;
    c[PortCounter.TX_PACKETS] += s[DeliverStat.DELIVERED];
    c[PortCounter.TX_BYTES] += s[DeliverStat.BYTES];
    c[PortCounter.DROP_NO_BUFFERS] += s[DeliverStat.NO_BUFFERS];
    c[PortCounter.DROP_TOO_BIG] += s[DeliverStat.TOO_BIG];
    c[PortCounter.DROP_BAD] += s[DeliverStat.BAD];
    if (r < 0) {
      // The receiver broke its RX ring: stop delivering to it and tell the control plane.
      c[PortCounter.QUEUE_ERRORS]++;
      const e = rx.vq.error;
      this.stopQueue(q.id, rx.index);
      this.events.queueError(q.id, rx.index, e ? `${e.code}: ${e.detail}` : `error ${-r}`);
    }
  }

  close(): void {
    if (this.ager) clearInterval(this.ager);
    for (const id of [...this.ports.keys()]) this.removePort(id);
  }
}

const kickBuf = Buffer.alloc(8);
