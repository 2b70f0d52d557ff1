// The forwarding engine: runs on a data-plane thread (src/switch/dataplane-worker.ts), or
// in-process for tests. A TX burst without a hook or a capture on its port is one native
// call (fdb.forward: pop, classify, group, deliver guest to guest, push); frames it leaves
// for ports it does not serve (TAP, VXLAN, captured ports) are delivered here before the
// push. With a hook or a capture: pop, read the frame heads (one native call), the hook,
// classify (one native call: VLAN, learning, lookup), group by destination queue and VLAN
// operation here, deliver per destination queue (one native call each, one copy guest to
// guest), push the TX chains back. No object per packet.
import { FdWatcher } from '../native/unix-socket.js';
import { Poller, type PollMode, type PollTarget } from '../dataplane/poller.js';
import { CaptureTap, IOTA, type CaptureSink, type CaptureSpec } from './capture.js';
import { GuestMemory } from '../native/guest-memory.js';
import { Virtqueue } from '../native/virtqueue.js';
import { DELIVER_STATS, DeliverStat, VLAN_KEEP, VLAN_STRIP, netDeliver, netDeliverFlat, netPeek, netToFlat } from '../native/net.js';
import {
  READ_STATS,
  RECV_STATS,
  RecvStat,
  TX_STATS,
  TxStat,
  createTapReadBatch,
  createUdpRecvBatch,
  finishFrame,
  FINISH_BAD,
  flatToUdp,
  readTap,
  recvUdp,
  txToTap,
  txToUdp,
  vxlanHeader,
  type TapReadBatch,
  type UdpRecvBatch,
} from '../native/host-io.js';
import { CLASSIFY_COUNTS, CLASSIFY_FLOOD, ClassifyCount, FORWARD_MAX_RX, FORWARD_NOT_PUSHED, Fdb, ForwardRec, ForwardRes, INGRESS_WORDS, PORT_WORDS, PortWord, type FdbEntry } from './fdb.js';
import { PortCounter } from './counters.js';
import { writeSync } from 'node:fs';
import type { NetQueueSpec } from '../backends/net/port-dataplane.js';

export type VlanConfig = { mode: 'access'; vid: number } | { mode: 'trunk'; allowed?: number[]; native?: number };

/** Where a packet goes, as the hook sets it: keep switching, drop, or a port id. */
export const Verdict = { SWITCH: -1, DROP: -2 } as const;

const HEAD = 64; // bytes of each frame head read for classification
const FLOOD = CLASSIFY_FLOOD;
const FLAT_MAX = 1024; // frames switchFlat takes per call

/** A port's VLAN configuration as the native classification reads it (fdb.ts). */
function ingressWords(v: VlanConfig): Int32Array {
  const w = new Int32Array(INGRESS_WORDS);
  if (v.mode === 'access') {
    w[0] = 1;
    w[1] = v.vid;
    w[2] = -1;
    w[3] = 1;
  } else {
    w[2] = v.native ?? -1;
    w[3] = v.allowed ? 0 : 1;
    for (const id of v.allowed ?? []) w[4 + ((id & 0xfff) >> 5)] |= 1 << (id & 31);
  }
  return w;
}

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

/** Per-queue counters (QueueStat order): packets, bytes, notifications sent, suppressed. */
const Q_PACKETS = 0;
const Q_BYTES = 1;
const Q_NOTIFY = 2;
const Q_SUPPRESSED = 3;

interface RxQueue {
  vq: Virtqueue;
  index: number;
  stats: Float64Array;
}

interface TxQueue {
  vq: Virtqueue;
  /** vq's native slot (what fdb.forward names it by) */
  slot: number;
  index: number;
  stats: Float64Array;
  port: EnginePort;
  kickFd: number;
  /** what the Poller serves: one burst of this queue per call */
  target: PollTarget;
}

/** The host side of a TAP or VXLAN port (fds opened by the control plane). */
export type HostPortSpec = { kind: 'tap'; fd: number; offloads: boolean } | { kind: 'vxlan'; fd: number; vni: number; dest: Uint8Array };

interface HostPort {
  spec: HostPortSpec;
  watcher: FdWatcher;
  tapBatch: TapReadBatch | null;
  udpBatch: UdpRecvBatch | null;
  vxlanHdr: Uint8Array | null;
  /** staging for frames sent to a VXLAN port that must be finished (offloads) first */
  flat: { data: Uint8Array; offsets: Uint32Array; lens: Uint32Array } | null;
  scheduled: boolean;
}

export interface EnginePort {
  id: number;
  name: string;
  host: HostPort | null;
  vlan: VlanConfig;
  /** vlan, as the native classification reads it */
  ingress: Int32Array;
  counters: Float64Array;
  hdrLen: number;
  mergeable: boolean;
  /** RxOffload bits the port's guest takes as is (its GUEST_* features) */
  rxOffloads: number;
  /** the guest's TX headers may carry offloads (it negotiated CSUM / HOST_TSO*) */
  txOffloads: boolean;
  /** largest non-GSO frame delivered to the guest (MTU + 18), 0: no limit */
  maxFrame: number;
  memory: GuestMemory | null;
  rx: RxQueue[];
  tx: Map<number, TxQueue>;
  /** per RX queue, per VLAN op kind (0 keep, 1 strip, 2 insert): packet indices of this burst */
  lists: Uint16Array[][];
  counts: Int32Array[];
  /** the TCI inserted by kind 2 in this burst (one ingress port: one VLAN for untagged frames) */
  insertTci: number;
  touched: boolean;
  /** packet capture on this port (both directions), or null */
  capture: CaptureTap | null;
  /** fdb.forward delivers frames for this port itself (a guest port, no capture, 1-8 RX queues) */
  direct: boolean;
  /** the port as fdb.forward sees it (PortWord layout) */
  rec: Int32Array;
}

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
}

export interface EngineEvents {
  queueError(port: number, index: number, reason: string): void;
}

export class SwitchEngine {
  readonly fdb: Fdb;
  private readonly ports = new Map<number, EnginePort>();
  /** the same ports as an array, for the per-packet flood loop (no iterator per packet) */
  private portList: EnginePort[] = [];
  private readonly byName = new Map<string, number>();
  private paused = false;
  /** how the guests' TX queues are waited for (busy, event, adaptive) */
  readonly poller: Poller;
  private readonly pausedHosts = new Set<EnginePort>();
  private readonly heads: Uint8Array;
  private readonly lens: Uint32Array;
  private readonly verdict: Int32Array;
  /** what classify writes for a burst: dest, vid and tagged per frame, then its counters */
  private readonly cls: Int32Array;
  private readonly dest: Int32Array;
  private readonly vid: Int32Array;
  private readonly tagged: Int32Array;
  private readonly stats = new Uint32Array(DELIVER_STATS);
  /** what fdb.forward writes besides cls (ForwardRes layout); grows with the ports */
  private res: Int32Array;
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
    poll: PollMode = 'event',
  ) {
    this.poller = new Poller(poll);
    this.fdb = new Fdb(agingMs);
    this.heads = new Uint8Array(burst * HEAD);
    this.lens = new Uint32Array(burst);
    this.verdict = new Int32Array(burst);
    this.cls = new Int32Array(3 * burst + CLASSIFY_COUNTS);
    this.dest = this.cls.subarray(0, burst);
    this.vid = this.cls.subarray(burst, 2 * burst);
    this.tagged = this.cls.subarray(2 * burst, 3 * burst);
    this.res = new Int32Array(ForwardRes.HEAD + burst);
    this.fdb.bindBurst(this.heads, this.lens, this.cls, this.res);
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
      ingress: ingressWords(vlan),
      counters,
      hdrLen: 12,
      mergeable: true,
      rxOffloads: 0,
      txOffloads: false,
      maxFrame: 0,
      memory: null,
      host: null,
      rx: [],
      tx: new Map(),
      lists: [],
      counts: [],
      insertTci: 0,
      touched: false,
      capture: null,
      direct: false,
      rec: new Int32Array(PORT_WORDS),
    });
    this.byName.set(name, id);
    this.portList = [...this.ports.values()];
    const need = ForwardRes.HEAD + this.burst + ForwardRec.WORDS * FORWARD_MAX_RX * this.ports.size;
    if (this.res.length < need) {
      this.res = new Int32Array(need);
      this.fdb.bindBurst(this.heads, this.lens, this.cls, this.res);
    }
    this.syncPort(this.port(id));
  }

  /** Tells fdb.forward what it needs of port p (after any change to its queues, VLAN, memory, host side or capture). */
  private syncPort(p: EnginePort): void {
    p.direct = !p.host && !p.capture && p.memory !== null && p.rx.length >= 1 && p.rx.length <= FORWARD_MAX_RX;
    const w = p.rec;
    w[PortWord.DELIVER] = p.direct ? 1 : 0;
    w[PortWord.HDR_LEN] = p.hdrLen;
    w[PortWord.MERGEABLE] = p.mergeable ? 1 : 0;
    w[PortWord.RX_OFFLOADS] = p.rxOffloads;
    w[PortWord.MAX_FRAME] = p.maxFrame;
    w[PortWord.TX_OFFLOADS] = p.txOffloads ? 1 : 0;
    w[PortWord.NRX] = p.direct ? p.rx.length : 0;
    for (let k = 0; k < FORWARD_MAX_RX; k++) w[PortWord.SLOTS + k] = p.direct ? (p.rx[k]?.vq.slot ?? 0) : 0;
    w.set(p.ingress, PortWord.INGRESS);
    this.fdb.setPort(p.id, w);
  }

  /** Captures port `id`'s frames, both directions, into pcap records handed to `sink`. */
  startCapture(id: number, spec: CaptureSpec, sink: CaptureSink): void {
    const p = this.port(id);
    if (p.capture && !p.capture.done) throw new Error(`port ${p.name} is already being captured`);
    p.capture = new CaptureTap(spec, sink);
    this.syncPort(p);
  }

  /** Stops a capture (its last records go to the sink, marked done). */
  stopCapture(id: number): void {
    const p = this.ports.get(id);
    if (!p?.capture) return;
    p.capture.stop();
    p.capture = null;
    this.syncPort(p);
  }

  /** Makes port `id` a TAP or VXLAN port: frames read from its fd are switched, frames for it written there. */
  attachHost(id: number, spec: HostPortSpec): void {
    const p = this.port(id);
    const h: HostPort = {
      spec,
      watcher: new FdWatcher(spec.fd, () => this.scheduleHost(p)),
      tapBatch: spec.kind === 'tap' ? createTapReadBatch(this.burst) : null,
      udpBatch: spec.kind === 'vxlan' ? createUdpRecvBatch(this.burst) : null,
      vxlanHdr: spec.kind === 'vxlan' ? vxlanHeader(spec.vni) : null,
      flat: spec.kind === 'vxlan' ? { data: new Uint8Array(this.burst * 2048 + 65536 * 2), offsets: new Uint32Array(2048), lens: new Uint32Array(2048) } : null,
      scheduled: false,
    };
    p.host = h;
    p.hdrLen = 12;
    p.mergeable = true;
    p.rxOffloads = 0;
    p.txOffloads = spec.kind === 'tap' && spec.offloads;
    p.lists = [[new Uint16Array(this.burst), new Uint16Array(this.burst), new Uint16Array(this.burst)]];
    p.counts = [new Int32Array(3)];
    this.syncPort(p);
    h.watcher.start(true, false);
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
    this.portList = [...this.ports.values()];
    this.byName.delete(p.name);
    this.fdb.setPort(id, null);
    this.fdb.flushPort(id);
  }

  setVlan(id: number, vlan: VlanConfig): void {
    const p = this.port(id);
    p.vlan = vlan;
    p.ingress = ingressWords(vlan);
    this.syncPort(p);
    this.fdb.flushPort(id);
  }

  /** Unmaps a port's guest memory (its guest went away), after stopping any queue left on it. */
  releaseMemory(id: number): void {
    const p = this.ports.get(id);
    if (!p || !p.memory) return;
    for (const q of [...p.tx.keys()]) this.stopQueue(id, q);
    for (const r of [...p.rx]) this.stopQueue(id, r.index);
    p.memory.close();
    p.memory = null;
    this.syncPort(p);
  }

  setMemory(id: number, token: number): void {
    const p = this.port(id);
    p.memory?.close();
    p.memory = GuestMemory.claim(token);
    for (const r of p.rx) r.vq.setMemoryView(p.memory);
    for (const t of p.tx.values()) t.vq.setMemoryView(p.memory);
    this.syncPort(p);
  }

  startQueue(s: QueueStartSpec): void {
    const p = this.port(s.port);
    const vq = new Virtqueue({ layout: s.layout, size: s.size, token: s.token, burst: this.burst });
    if (p.memory) vq.setMemoryView(p.memory);
    p.hdrLen = s.hdrLen;
    p.mergeable = s.mergeable;
    p.rxOffloads = s.rxOffloads;
    p.txOffloads = s.txOffloads;
    p.maxFrame = s.mtu > 0 ? s.mtu + 18 : 0;
    if (s.index % 2 === 0) {
      // Guest RX: we fill it when frames arrive; its kicks (new buffers) are not needed.
      vq.setNotify(false);
      p.rx.push({ vq, index: s.index, stats: new Float64Array(4) });
      p.rx.sort((a, b) => a.index - b.index);
      this.resizeLists(p);
    } else {
      const t = { vq, slot: vq.slot, index: s.index, port: p, kickFd: s.kickFd, stats: new Float64Array(4) } as TxQueue;
      t.target = { vq, kickFd: s.kickFd, service: () => this.serviceOnce(t) };
      p.tx.set(s.index, t);
      this.poller.add(t.target); // serves chains already waiting too
    }
    this.syncPort(p);
  }

  /**
   * The MTU port `id`'s guest was given changed (NET_SET_MTU while its rings run; 0: no
   * limit): frames for it are checked against the new size from the next burst on, on
   * every delivery path (native forward, JavaScript, flat).
   */
  setMtu(id: number, mtu: number): void {
    const p = this.port(id);
    p.maxFrame = mtu > 0 ? mtu + 18 : 0;
    this.syncPort(p);
  }

  /** Stops using a queue; the caller gets it back through its own handle on the same native queue. */
  stopQueue(port: number, index: number): void {
    const p = this.ports.get(port);
    if (!p) return;
    if (index % 2 === 0) {
      p.rx = p.rx.filter((r) => r.index !== index);
      this.resizeLists(p);
      this.syncPort(p);
    } else {
      const t = p.tx.get(index);
      if (!t) return;
      this.poller.remove(t.target);
      p.tx.delete(index);
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
  }

  dumpFdb(): FdbEntry[] {
    return this.fdb.dump(Date.now());
  }

  /**
   * Frames made by the switch for port `id` (RARP announcements), or any frames from its
   * host side: switched exactly like frames received on that port.
   */
  inject(id: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number): void {
    this.switchFlat(this.port(id), data, offsets, lens, null, n);
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

  /** One burst of a guest's TX queue (the Poller calls it). Returns the frames taken. */
  private serviceOnce(t: TxQueue): number {
    if (this.paused || !t.port.tx.has(t.index)) return 0;
    const direct = this.hook === null && t.port.capture === null;
    const n = direct ? this.fdb.forward(t.slot, t.port.id, Date.now()) : t.vq.pop();
    if (n < 0) {
      const e = t.vq.error;
      t.port.counters[PortCounter.QUEUE_ERRORS]++;
      this.stopQueue(t.port.id, t.index);
      this.events.queueError(t.port.id, t.index, e ? `${e.code}: ${e.detail}` : `error ${-n}`);
      return 0;
    }
    if (n > 0) {
      if (direct) this.forwarded(t, n);
      else this.forward(t, n);
    }
    return n;
  }

  /** The rest of a burst fdb.forward took: frames it left for ports served here, the push if it did not, the counters. */
  private forwarded(t: TxQueue, n: number): void {
    const p = t.port;
    const res = this.res;
    const bytes = res[ForwardRes.BYTES];
    this.countIngress(p, this.cls, 3 * this.burst, n, bytes);
    // Frames for ports fdb.forward does not serve (TAP, VXLAN, captured, no RX queue): only those.
    const left = res[ForwardRes.LEFT];
    if (left > 0) this.groupAndDeliver(t, res, ForwardRes.HEAD, left, true);
    // Its deliveries, last first: a queue that broke is stopped, which renumbers those after it.
    const s = this.stats;
    for (let j = res[ForwardRes.RECORDS] - 1; j >= 0; j--) {
      const o = ForwardRes.HEAD + this.burst + j * ForwardRec.WORDS;
      const q = this.ports.get(res[o + ForwardRec.PORT]);
      const rx = q?.rx[res[o + ForwardRec.QUEUE]];
      if (!q || !rx) continue;
      s.fill(0);
      s[DeliverStat.DELIVERED] = res[o + ForwardRec.DELIVERED];
      s[DeliverStat.BYTES] = res[o + ForwardRec.BYTES];
      s[DeliverStat.NO_BUFFERS] = res[o + ForwardRec.NO_BUFFERS];
      s[DeliverStat.TOO_BIG] = res[o + ForwardRec.TOO_BIG];
      s[DeliverStat.BAD] = res[o + ForwardRec.BAD];
      this.account(q, rx, res[o + ForwardRec.RESULT]);
    }
    const pushed = res[ForwardRes.PUSH];
    if (pushed === -1) throw new RangeError('push: an id is not in flight (or pushed twice), or the rings are not set');
    this.countTx(t, n, bytes, pushed === FORWARD_NOT_PUSHED ? t.vq.pushPopped(n) : pushed === 1);
  }

  /**
   * Stages frames frames[at, at + m) of t's burst (frame indices; null: 0..m-1) for their
   * destinations (every other port for a flood; with indirectOnly, only ports fdb.forward
   * does not serve), then delivers per destination queue and VLAN operation.
   */
  private groupAndDeliver(t: TxQueue, frames: Int32Array | null, at: number, m: number, indirectOnly: boolean): void {
    const p = t.port;
    const all = this.portList;
    let lastD = -1; // the port of the frame before, looked up once for a run of frames
    let lastQ: EnginePort | undefined;
    for (let j = 0; j < m; j++) {
      const i = frames ? frames[at + j] : j;
      const d = this.dest[i];
      if (d === -1) continue;
      if (d === FLOOD) {
        for (let k = 0; k < all.length; k++) if (all[k] !== p && !(indirectOnly && all[k].direct)) this.stage(all[k], i);
      } else {
        if (d !== lastD) {
          lastQ = this.ports.get(d);
          lastD = d;
        }
        const q = lastQ;
        if (q && q !== p && !(indirectOnly && q.direct)) this.stage(q, i);
      }
    }
    for (const q of this.touched) this.flushPort(q, t);
    this.touched.length = 0;
  }

  /** A TX burst's queue counters, after its push. */
  private countTx(t: TxQueue, n: number, bytes: number, notified: boolean): void {
    const qs = t.stats;
    qs[Q_PACKETS] += n;
    qs[Q_BYTES] += bytes;
    qs[notified ? Q_NOTIFY : Q_SUPPRESSED]++;
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
    if (p.capture) this.captureIn(p, t.vq, n);
    const bytes = this.fdb.classify(p.id, p.ingress, this.heads, null, HEAD, HEAD, this.lens, n, now, this.hook ? this.verdict : null, this.cls);
    this.countIngress(p, this.cls, 3 * this.burst, n, bytes);
    // Group by destination port, RX queue (flow hash) and VLAN operation.
    this.groupAndDeliver(t, null, 0, n, false);
    this.countTx(t, n, bytes, t.vq.pushPopped(n));
  }

  /** Adds what classify counted for a burst of n frames (its counters at cls[at...]). */
  private countIngress(p: EnginePort, cls: Int32Array, at: number, n: number, bytes: number): void {
    const c = p.counters;
    c[PortCounter.RX_PACKETS] += n;
    c[PortCounter.RX_BYTES] += bytes;
    c[PortCounter.DROP_BAD] += cls[at + ClassifyCount.BAD];
    c[PortCounter.DROP_HOOK] += cls[at + ClassifyCount.HOOK];
    c[PortCounter.DROP_VLAN] += cls[at + ClassifyCount.VLAN];
    c[PortCounter.FLOODED] += cls[at + ClassifyCount.FLOODED];
  }

  private stage(q: EnginePort, i: number): void {
    const op = this.egressOp(q, this.vid[i], this.tagged[i] === 1);
    if (op === null) return; // q is not a member of the frame's VLAN (not a drop: not its traffic)
    const nq = q.host ? 1 : q.rx.length;
    if (nq === 0) {
      q.counters[PortCounter.DROP_NO_QUEUE]++;
      return;
    }
    const k = nq === 1 ? 0 : this.flowHash(i) % nq;
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
    if (q.host) {
      const cnt = q.counts[0];
      for (let kind = 0; kind < 3; kind++) {
        const m = cnt[kind];
        if (m === 0) continue;
        cnt[kind] = 0;
        const op = kind === 0 ? VLAN_KEEP : kind === 1 ? VLAN_STRIP : q.insertTci;
        if (q.capture) this.captureOut(q, t, q.lists[0][kind], m, op);
        this.hostEgress(q, q.host, t, q.lists[0][kind], m, op);
      }
      return;
    }
    // A receiver that breaks its ring is removed from q.rx during the loop (account): walk
    // the arrays as they were (stopQueue replaces them, it does not edit them in place).
    const rx = q.rx;
    const lists = q.lists;
    const counts = q.counts;
    for (let k = 0; k < rx.length; k++) {
      const cnt = counts[k];
      for (let kind = 0; kind < 3; kind++) {
        const m = cnt[kind];
        if (m === 0) continue;
        cnt[kind] = 0;
        if (!q.rx.includes(rx[k])) continue; // stopped by the delivery before
        if (q.capture) this.captureOut(q, t, lists[k][kind], m, kind === 0 ? VLAN_KEEP : kind === 1 ? VLAN_STRIP : q.insertTci);
        this.stats.fill(0);
        const r = netDeliver(
          { q: rx[k].vq, hdrLen: q.hdrLen, mergeable: q.mergeable, offloads: q.rxOffloads, maxFrame: q.maxFrame },
          t.vq,
          t.port.hdrLen,
          t.port.txOffloads,
          lists[k][kind],
          m,
          this.stats,
          kind === 0 ? VLAN_KEEP : kind === 1 ? VLAN_STRIP : q.insertTci,
        );
        this.account(q, rx[k], r);
      }
    }
  }

  private readonly hostStats = new Uint32Array(TX_STATS);

  /** Guest frames (chains of t's burst) out of a TAP or VXLAN port. */
  private hostEgress(q: EnginePort, h: HostPort, t: TxQueue, chains: Uint16Array, m: number, vlan: number): void {
    const st = this.hostStats;
    st.fill(0);
    const src = t.port;
    if (h.spec.kind === 'tap') {
      txToTap(h.spec.fd, t.vq, chains, m, st, { hdrLen: src.hdrLen, vlan, passHdr: h.spec.offloads && src.txOffloads });
    } else if (!src.txOffloads) {
      txToUdp(h.spec.fd, t.vq, chains, m, h.vxlanHdr!, h.spec.dest, st, { hdrLen: src.hdrLen, vlan });
    } else {
      // The guest may send TSO / partial-checksum frames: finish them first (a tunnel takes no offloads).
      const f = h.flat!;
      this.stats.fill(0);
      const k = netToFlat(t.vq, src.hdrLen, true, chains, m, f.data, f.offsets, f.lens, this.stats, vlan);
      q.counters[PortCounter.DROP_BAD] += this.stats[DeliverStat.BAD];
      flatToUdp(h.spec.fd, f.data, f.offsets, f.lens, k, h.vxlanHdr!, h.spec.dest, st);
    }
    this.accountHost(q, st);
  }

  private accountHost(q: EnginePort, st: Uint32Array): void {
    const c = q.counters;
    c[PortCounter.TX_PACKETS] += st[TxStat.SENT];
    c[PortCounter.TX_BYTES] += st[TxStat.BYTES];
    c[PortCounter.DROP_HOST_BUSY] += st[TxStat.DROPPED] + st[TxStat.ERRORS];
    c[PortCounter.DROP_BAD] += st[TxStat.BAD];
    c[PortCounter.DROP_TOO_BIG] += st[TxStat.TOO_BIG] + st[TxStat.NEEDS_SEGMENTATION];
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
      this.serviceHost(p, h);
      h.watcher.start(true, false);
    });
  }

  private readonly readStats = new Uint32Array(Math.max(READ_STATS, RECV_STATS));

  /** Reads what the host side of a port has for us (up to 16 batches) and switches it. */
  private serviceHost(p: EnginePort, h: HostPort): void {
    for (let round = 0; round < 16; round++) {
      let n: number;
      let hdr10: Uint8Array | null = null;
      let batch: { data: Uint8Array; offsets: Uint32Array; lens: Uint32Array };
      this.readStats.fill(0);
      try {
        if (h.tapBatch) {
          n = readTap(h.spec.fd, h.tapBatch, this.readStats);
          batch = h.tapBatch;
          hdr10 = h.tapBatch.hdr10;
        } else {
          n = recvUdp(h.spec.fd, h.udpBatch!, this.readStats);
          p.counters[PortCounter.RX_CSUM_COMPLETED] += this.readStats[RecvStat.CSUM_COMPLETED] + this.readStats[RecvStat.GSO_MARKED];
          batch = h.udpBatch!;
          // Oversized partial TCP frames come with a TSO header: pass the headers then only.
          const marked = this.readStats[RecvStat.GSO_MARKED] > 0;
          if (marked) hdr10 = h.udpBatch!.hdr10;
          // Only our VNI: the socket may be shared by the kernel's view of the port.
          const vni = (h.spec as { vni: number }).vni;
          let w = 0;
          for (let i = 0; i < n; i++) {
            if (h.udpBatch!.vni[i] !== vni) {
              p.counters[PortCounter.DROP_VLAN]++;
              continue;
            }
            batch.offsets[w] = batch.offsets[i];
            batch.lens[w] = batch.lens[i];
            if (marked && w !== i) h.udpBatch!.hdr10.copyWithin(10 * w, 10 * i, 10 * i + 10);
            w++;
          }
          n = w;
        }
      } catch (e) {
        p.counters[PortCounter.QUEUE_ERRORS]++;
        this.events.queueError(p.id, -1, `host port read failed: ${(e as Error).message}`);
        return;
      }
      if (n <= 0) return;
      this.switchFlat(p, batch.data, batch.offsets, batch.lens, hdr10, n);
    }
  }

  private readonly flatOff = new Uint32Array(FLAT_MAX);
  private readonly flatLen = new Uint32Array(FLAT_MAX);
  private readonly flatHdr = new Uint8Array(10 * FLAT_MAX);
  private readonly flatCls = new Int32Array(3 * FLAT_MAX + CLASSIFY_COUNTS);
  private readonly flatDest = this.flatCls.subarray(0, FLAT_MAX);
  private readonly flatVid = this.flatCls.subarray(FLAT_MAX, 2 * FLAT_MAX);
  private readonly flatTagged = this.flatCls.subarray(2 * FLAT_MAX, 3 * FLAT_MAX);

  /**
   * Switches frames held in a host buffer, as if port `p` had received them: from a TAP or
   * VXLAN port, or made by the switch (RARP). `hdr10`: 10 virtio_net_hdr bytes per frame.
   */
  switchFlat(p: EnginePort, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null, n: number): void {
    n = Math.min(n, FLAT_MAX);
    if (p.capture) this.captureFlat(p, data, offsets, lens, n, VLAN_KEEP);
    const bytes = this.fdb.classify(p.id, p.ingress, data, offsets, 0, 0xffffffff, lens, n, Date.now(), null, this.flatCls);
    this.countIngress(p, this.flatCls, 3 * FLAT_MAX, n, bytes);
    for (const q of this.portList) {
      if (q === p) continue;
      // frames for q, grouped by VLAN operation
      for (let kind = 0; kind < 3; kind++) {
        let m = 0;
        let op = VLAN_KEEP;
        for (let i = 0; i < n; i++) {
          const d = this.flatDest[i];
          if (d !== FLOOD && d !== q.id) continue;
          const o = this.egressOp(q, this.flatVid[i], this.flatTagged[i] === 1);
          if (o === null) continue;
          const k = o === VLAN_KEEP ? 0 : o === VLAN_STRIP ? 1 : 2;
          if (k !== kind) continue;
          op = o;
          this.flatOff[m] = offsets[i];
          this.flatLen[m] = lens[i];
          if (hdr10) this.flatHdr.set(hdr10.subarray(10 * i, 10 * i + 10), 10 * m);
          m++;
        }
        if (m > 0) this.deliverFlatTo(q, data, m, hdr10 ? this.flatHdr : null, op);
      }
    }
  }

  private deliverFlatTo(q: EnginePort, data: Uint8Array, m: number, hdr10: Uint8Array | null, op: number): void {
    if (q.capture) this.captureFlat(q, data, this.flatOff, this.flatLen, m, op);
    if (q.host) {
      const st = this.hostStats;
      st.fill(0);
      if (q.host.spec.kind === 'vxlan') {
        if (op !== VLAN_KEEP || hdr10) {
          // Rare: host to host with a VLAN change or offloads: build each frame here.
          for (let i = 0; i < m; i++) this.hostFrameOut(q, data.subarray(this.flatOff[i], this.flatOff[i] + this.flatLen[i]), hdr10 ? hdr10.subarray(10 * i, 10 * i + 10) : null, op, st);
        } else {
          flatToUdp(q.host.spec.fd, data, this.flatOff, this.flatLen, m, q.host.vxlanHdr!, q.host.spec.dest, st);
        }
      } else {
        for (let i = 0; i < m; i++) this.hostFrameOut(q, data.subarray(this.flatOff[i], this.flatOff[i] + this.flatLen[i]), hdr10 ? hdr10.subarray(10 * i, 10 * i + 10) : null, op, st);
      }
      this.accountHost(q, st);
      return;
    }
    const rx = q.rx[0];
    if (!rx) {
      q.counters[PortCounter.DROP_NO_QUEUE] += m;
      return;
    }
    this.stats.fill(0);
    const r = netDeliverFlat({ q: rx.vq, hdrLen: q.hdrLen, mergeable: q.mergeable, offloads: q.rxOffloads, maxFrame: q.maxFrame }, data, this.flatOff, this.flatLen, m, hdr10, this.stats, op);
    this.account(q, rx, r);
  }

  /** Staging for host-to-host frames whose offloads (a TAP's partial checksum, TSO) are finished here. */
  private readonly finished = { data: new Uint8Array(256 * 1024), offsets: new Uint32Array(2048), lens: new Uint32Array(2048) };

  /** One frame from a host buffer out of a host port (JavaScript path for the rare cases). */
  private hostFrameOut(q: EnginePort, frame: Uint8Array, hdr10: Uint8Array | null, op: number, st: Uint32Array): void {
    let f = frame;
    if (op === VLAN_STRIP && f.length >= 18 && f[12] === 0x81 && f[13] === 0x00) {
      f = new Uint8Array(Buffer.concat([f.subarray(0, 12), f.subarray(16)]));
    } else if (op >= 0) {
      f = new Uint8Array(Buffer.concat([f.subarray(0, 12), Uint8Array.of(0x81, 0x00, op >> 8, op & 0xff), f.subarray(12)]));
    }
    const adj = f.length - frame.length;
    const spec = q.host!.spec;
    // A TAP with offloads gives frames with partial checksums and TSO frames (NEEDS_CSUM,
    // GSO in its header): only a TAP with offloads takes them as they are; for a VXLAN
    // port or a TAP without offloads they are finished here (checksum completed, segmented).
    const offloaded = hdr10 !== null && ((hdr10[0] & 1) !== 0 || (hdr10[1] & 0x7f) !== 0);
    let frames: Uint8Array[] = [f];
    if (offloaded && !(spec.kind === 'tap' && spec.offloads)) {
      const s = this.finished;
      const k = finishFrame(f, hdr10, adj, s.data, s.offsets, s.lens);
      if (k < 0) {
        st[k === FINISH_BAD ? TxStat.BAD : TxStat.TOO_BIG]++;
        return;
      }
      if (spec.kind === 'vxlan') {
        flatToUdp(spec.fd, s.data, s.offsets, s.lens, k, q.host!.vxlanHdr!, spec.dest, st);
        return;
      }
      frames = Array.from({ length: k }, (_, i) => s.data.subarray(s.offsets[i], s.offsets[i] + s.lens[i]));
    }
    if (spec.kind === 'tap') {
      const hdr = new Uint8Array(12);
      if (offloaded && spec.offloads) {
        hdr.set(hdr10!);
        // csum_start and hdr_len move with a tag inserted or removed
        if (adj !== 0 && hdr[0] & 1) new DataView(hdr.buffer).setUint16(6, new DataView(hdr.buffer).getUint16(6, true) + adj, true);
        if (adj !== 0 && hdr[1] & 0x7f) new DataView(hdr.buffer).setUint16(2, new DataView(hdr.buffer).getUint16(2, true) + adj, true);
      }
      for (const x of frames) {
        try {
          writeSync(spec.fd, Buffer.concat([hdr, x]));
          st[TxStat.SENT]++;
          st[TxStat.BYTES] += x.length;
        } catch {
          st[TxStat.DROPPED]++;
        }
      }
    } else {
      flatToUdp(spec.fd, f, Uint32Array.of(0), Uint32Array.of(f.length), 1, q.host!.vxlanHdr!, spec.dest, st);
    }
  }

  // Capture: a tap that reached its count is dropped here (its sink was told).
  private captureIn(p: EnginePort, vq: Virtqueue, n: number): void {
    p.capture!.addChains(vq, p.hdrLen, IOTA, n);
    if (p.capture!.done) this.captureDone(p);
  }

  private captureOut(q: EnginePort, t: TxQueue, chains: Uint16Array, m: number, op: number): void {
    q.capture!.addChains(t.vq, t.port.hdrLen, chains, m, op);
    if (q.capture!.done) this.captureDone(q);
  }

  private captureFlat(p: EnginePort, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number, op: number): void {
    p.capture!.addFlat(data, offsets, lens, n, op);
    if (p.capture!.done) this.captureDone(p);
  }

  private captureDone(p: EnginePort): void {
    p.capture = null;
    this.syncPort(p);
  }

  private account(q: EnginePort, rx: RxQueue, r: number): void {
    const c = q.counters;
    const s = this.stats;
    const qs = rx.stats;
    qs[Q_PACKETS] += s[DeliverStat.DELIVERED];
    qs[Q_BYTES] += s[DeliverStat.BYTES];
    if (s[DeliverStat.DELIVERED] > 0 && r >= 0) qs[r === 1 ? Q_NOTIFY : Q_SUPPRESSED]++;
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
        packets: q.stats[Q_PACKETS],
        bytes: q.stats[Q_BYTES],
        notifySent: q.stats[Q_NOTIFY],
        notifySuppressed: q.stats[Q_SUPPRESSED],
        ringFill: q.vq.availCount(),
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
    for (const id of [...this.ports.keys()]) this.removePort(id);
    this.poller.close();
  }
}
