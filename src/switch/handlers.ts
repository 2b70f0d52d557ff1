// Packet handlers: TypeScript on the data-plane thread for what flows cannot express (a
// router's ARP and ICMP errors, a firewall's connection tracking, a NAT's port allocation).
// A flow's handler:NAME action stages the frames it matches (native/switch/switch_handler.h);
// after each forwarder call the engine runs every handler that has frames, once, with all of
// them: views of the staging (zero-copy, valid during the call only; no virtio-net header,
// its offload fields decoded beside the frame). A handler may send frames out of any port
// (as they are: no flow, no VLAN rule) and change the flow table, so that the rest of a
// connection stays in native code. Frames no flow sends to a handler never reach JavaScript.
import { HandlerRecord, HandlerWord, type NativeForwarder } from '../native/switch.js';
import { MAX_FRAME } from '../native/net.js';
import { parseFlow } from './flows.js';
import type { FlowTable } from './flow-table.js';

/** A frame's virtio-net offload metadata (virtio 1.2 §5.1.6): what is left to the receiver. */
export interface FrameOffload {
  /** the L4 checksum is partial: summed from csumStart, written at csumStart + csumOffset */
  needsCsum: boolean;
  dataValid: boolean;
  /** 0 none, 1 TCPv4, 3 UDP, 4 TCPv6 (0x80: ECN) */
  gsoType: number;
  gsoSize: number;
  hdrLen: number;
  csumStart: number;
  csumOffset: number;
}

export interface HandlerFrame {
  /** the frame from its Ethernet header (a view: copy what you keep past the call) */
  readonly data: Uint8Array;
  readonly inPort: string;
  readonly inPortId: number;
  /** the VLAN the switch assigned the frame on its way in */
  readonly vlan: number;
  /** its offload metadata, null if it has none (complete checksums, no GSO) */
  readonly offload: FrameOffload | null;
}

export interface HandlerContext {
  /** Sends a frame out of a port as it is (copied here; sent when the handler returns). */
  send(port: string, frame: Uint8Array, offload?: FrameOffload): void;
  /**
   * Switches a frame as if it had come in on `port` (flows, then the learning switch), when
   * the handler returns: a first frame, once the handler added its connection's flows.
   */
  inject(port: string, frame: Uint8Array, offload?: FrameOffload): void;
  /** Adds a flow (ovs-ofctl syntax, as Switch.addFlow), effective for the next frames. */
  addFlow(text: string): void;
  /** Removes flows (as Switch.delFlows); returns how many. */
  delFlows(match?: string, strict?: boolean): number;
  /** ms since the epoch, read once per run */
  readonly now: number;
}

export type PacketHandler = (frames: readonly HandlerFrame[], ctx: HandlerContext) => void;

/**
 * A handler a module exports, loaded on the data-plane thread: `export` (default "default")
 * is the handler, or with `options` (structured-cloneable) a function of them that makes it.
 */
export interface HandlerModule {
  /** module path (absolute, or a file: URL) */
  module: string;
  export?: string;
  options?: unknown;
}

/** What a handler has done, for `vhostkit ctl` and metrics. */
export interface HandlerStats {
  name: string;
  /** frames it was given, and runs */
  frames: number;
  runs: number;
  /** frames it sent */
  sent: number;
  /** runs that threw (the frames of such a run are dropped) */
  errors: number;
  lastError: string;
  /** frames for any handler that did not fit the staging (counted on every handler) */
  lost: number;
}

/** Bytes of staging: room for 64 frames of 64 KiB, or thousands of small ones. */
const STAGE_BYTES = 4 << 20;
const HEAD = HandlerWord.WORDS * 4;
const RECORD = HandlerRecord.WORDS * 4;

interface Handler {
  fn: PacketHandler;
  stats: HandlerStats;
  frames: HandlerFrame[];
}

/** Frames handlers sent, until they are flushed out of their ports. */
class Outbox {
  private data = new Uint8Array(1 << 16);
  private at = 0;
  readonly ports: number[] = [];
  private offsets: number[] = [];
  private lens: number[] = [];
  private hdrs: Array<Uint8Array | null> = [];

  add(port: number, frame: Uint8Array, offload: FrameOffload | undefined): void {
    if (this.at + frame.length > this.data.length) {
      const bigger = new Uint8Array(Math.max(this.data.length * 2, this.at + frame.length));
      bigger.set(this.data.subarray(0, this.at));
      this.data = bigger;
    }
    this.data.set(frame, this.at);
    this.ports.push(port);
    this.offsets.push(this.at);
    this.lens.push(frame.length);
    this.hdrs.push(offload ? encodeOffload(offload) : null);
    this.at += frame.length;
  }

  /** Hands every frame to `out`, one call per port (in the order sent). */
  flush(out: (port: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null, n: number) => void): void {
    const n = this.ports.length;
    if (n === 0) return;
    for (const port of new Set(this.ports)) {
      const idx = [];
      for (let i = 0; i < n; i++) if (this.ports[i] === port) idx.push(i);
      const withHdr = idx.some((i) => this.hdrs[i] !== null);
      const hdr10 = withHdr ? new Uint8Array(idx.length * 10) : null;
      if (hdr10) idx.forEach((i, k) => hdr10.set(this.hdrs[i] ?? new Uint8Array(10), k * 10));
      out(
        port,
        this.data,
        Uint32Array.from(idx, (i) => this.offsets[i]),
        Uint32Array.from(idx, (i) => this.lens[i]),
        hdr10,
        idx.length,
      );
    }
    this.ports.length = 0;
    this.offsets = [];
    this.lens = [];
    this.hdrs = [];
    this.at = 0;
  }
}

function encodeOffload(o: FrameOffload): Uint8Array {
  const h = new Uint8Array(10);
  const dv = new DataView(h.buffer);
  h[0] = (o.needsCsum ? 1 : 0) | (o.dataValid ? 2 : 0);
  h[1] = o.gsoType;
  dv.setUint16(2, o.hdrLen, true);
  dv.setUint16(4, o.gsoSize, true);
  dv.setUint16(6, o.csumStart, true);
  dv.setUint16(8, o.csumOffset, true);
  return h;
}

export class HandlerSet {
  /** the staging the forwarder writes (HandlerWord words, then HandlerRecord records) */
  readonly stage = new Uint8Array(STAGE_BYTES);
  private readonly words = new Int32Array(this.stage.buffer, 0, HandlerWord.WORDS);
  private readonly view = new DataView(this.stage.buffer);
  private readonly byId = new Map<number, Handler>();
  private readonly outbox = new Outbox();
  private readonly inbox = new Outbox();

  constructor(
    private readonly fwd: NativeForwarder,
    /** the learning switch's aging, for injected frames */
    private readonly agingMs: () => number,
    private readonly flows: FlowTable,
    /** a port's name by id, and id by name (-1 if none) */
    private readonly portName: (id: number) => string | undefined,
    private readonly portId: (name: string) => number,
    private readonly handlerId: (name: string) => number,
    private readonly onError: (name: string, e: unknown) => void,
  ) {
    this.words[HandlerWord.AT] = HEAD;
    fwd.setHandlerStage(this.stage);
  }

  add(id: number, name: string, fn: PacketHandler): void {
    if (this.byId.has(id)) throw new Error(`handler ${id} exists`);
    this.byId.set(id, { fn, frames: [], stats: { name, frames: 0, runs: 0, sent: 0, errors: 0, lastError: '', lost: 0 } });
  }

  remove(id: number): void {
    this.byId.delete(id);
  }

  stats(): HandlerStats[] {
    return [...this.byId.values()].map((h) => ({ ...h.stats }));
  }

  /** Whether the last forwarder call staged frames for handlers (or lost some). */
  pending(): boolean {
    return this.words[HandlerWord.FRAMES] > 0 || this.words[HandlerWord.LOST] > 0;
  }

  /** Runs each handler over its staged frames, then sends what they sent. */
  run(): void {
    const lost = this.words[HandlerWord.LOST];
    const end = this.words[HandlerWord.AT];
    for (let at = HEAD; at + RECORD <= end;) {
      const w = (k: number) => this.view.getInt32(at + 4 * k, true);
      const len = w(HandlerRecord.LEN);
      const h = this.byId.get(w(HandlerRecord.HANDLER));
      if (h) {
        const flags = w(HandlerRecord.FLAGS);
        const gsoType = w(HandlerRecord.GSO_TYPE);
        const inPortId = w(HandlerRecord.IN_PORT);
        h.frames.push({
          data: this.stage.subarray(at + RECORD, at + RECORD + len),
          inPortId,
          inPort: this.portName(inPortId) ?? '',
          vlan: w(HandlerRecord.VLAN),
          offload:
            flags === 0 && gsoType === 0
              ? null
              : {
                  needsCsum: (flags & 1) !== 0,
                  dataValid: (flags & 2) !== 0,
                  gsoType,
                  gsoSize: w(HandlerRecord.GSO_SIZE),
                  hdrLen: w(HandlerRecord.HDR_LEN),
                  csumStart: w(HandlerRecord.CSUM_START),
                  csumOffset: w(HandlerRecord.CSUM_OFFSET),
                },
        });
      }
      at += (RECORD + len + 7) & ~7;
    }
    const ctx = this.context();
    try {
      for (const h of this.byId.values()) {
        if (lost > 0) h.stats.lost += lost;
        if (h.frames.length === 0) continue;
        h.stats.frames += h.frames.length;
        h.stats.runs++;
        const before = this.outbox.ports.length + this.inbox.ports.length;
        try {
          h.fn(h.frames, ctx);
        } catch (e) {
          h.stats.errors++;
          h.stats.lastError = e instanceof Error ? e.message : String(e);
          this.onError(h.stats.name, e);
        }
        h.stats.sent += this.outbox.ports.length + this.inbox.ports.length - before;
        h.frames = [];
      }
    } finally {
      // The views die here: the next call stages over them.
      this.words[HandlerWord.AT] = HEAD;
      this.words[HandlerWord.FRAMES] = 0;
      this.words[HandlerWord.LOST] = 0;
    }
    this.outbox.flush((port, data, offsets, lens, hdr10, n) => this.fwd.output(port, data, offsets, lens, hdr10, n));
    // Injected frames go through the flow table: they may stage frames for handlers again
    // (the engine runs them, a bounded number of rounds).
    this.inbox.flush((port, data, offsets, lens, hdr10, n) => this.fwd.forwardFlat(port, data, offsets, lens, hdr10, n, Date.now(), this.agingMs()));
  }

  private context(): HandlerContext {
    const names = { port: (n: string) => this.checkedPort(n) };
    return {
      now: Date.now(),
      send: (port, frame, offload) => {
        if (frame.length < 14 || frame.length > MAX_FRAME) throw new RangeError(`send: a frame of ${frame.length} bytes (14..${MAX_FRAME})`);
        this.outbox.add(names.port(port), frame, offload);
      },
      inject: (port, frame, offload) => {
        if (frame.length < 14 || frame.length > MAX_FRAME) throw new RangeError(`inject: a frame of ${frame.length} bytes (14..${MAX_FRAME})`);
        this.inbox.add(names.port(port), frame, offload);
      },
      addFlow: (text) => this.flows.add(parseFlow(text, names.port, false, (n) => this.checkedHandler(n))),
      delFlows: (match = '', strict = false) => {
        const spec = parseFlow(match, names.port, true);
        return this.flows.remove(spec.words, strict, spec);
      },
    };
  }

  private checkedPort(name: string): number {
    const id = this.portId(name);
    if (id < 0) throw new RangeError(`no port ${name} on this switch`);
    return id;
  }

  private checkedHandler(name: string): number {
    const id = this.handlerId(name);
    if (id < 0) throw new RangeError(`no handler ${name} on this switch`);
    return id;
  }
}
