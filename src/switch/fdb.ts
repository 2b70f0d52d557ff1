// The forwarding database: which port a MAC address was last seen on, per VLAN, with
// aging. The table and the per-burst classification are native (native/vring/switch_fdb.cc);
// MACs cross as numbers (a 48-bit MAC fits a double exactly).
import { addon } from '../native/binding.js';

export interface FdbEntry {
  mac: string;
  vlan: number;
  port: number;
  /** ms since the entry was last refreshed */
  age: number;
}

export interface FdbStats {
  learned: number;
  moved: number;
  aged: number;
  /** learning refused because the table is full */
  full: number;
}

export function macToString(m: number): string {
  const hex = m.toString(16).padStart(12, '0');
  return hex.match(/../g)!.join(':');
}

export function macFromString(s: string): number {
  const parts = s.split(':');
  if (parts.length !== 6) throw new RangeError(`bad MAC address ${s}`);
  let m = 0;
  for (const p of parts) {
    const b = parseInt(p, 16);
    if (!(b >= 0 && b <= 255) || !/^[0-9a-fA-F]{1,2}$/.test(p)) throw new RangeError(`bad MAC address ${s}`);
    m = m * 256 + b;
  }
  return m;
}

interface RawSwitchFdb {
  learn(mac: number, vlan: number, port: number, now: number): boolean;
  lookup(mac: number, vlan: number, now: number, agingMs: number): number;
  age(now: number, agingMs: number): number;
  flushPort(port: number): number;
  dump(): Float64Array;
  stats(): FdbStats;
  classify(
    port: number,
    ingress: Int32Array,
    heads: Uint8Array,
    offsets: Uint32Array | null,
    stride: number,
    cap: number,
    lens: Uint32Array,
    n: number,
    now: number,
    agingMs: number,
    verdict: Int32Array | null,
    out: Int32Array,
  ): number;
  bindBurst(heads: Uint8Array, lens: Uint32Array, cls: Int32Array, res: Int32Array): void;
  setPort(port: number, rec: Int32Array | null): void;
  forward(txSlot: number, port: number, now: number, agingMs: number): number;
  readonly size: number;
}
const raw = addon as { SwitchFdb: new (maxEntries: number) => RawSwitchFdb };

/** Words of an ingress VLAN configuration given to classify (see ingressWords). */
export const INGRESS_WORDS = 4 + 4096 / 32;
/** Counters classify adds after dest, vid and tagged in its out array (ClassifyCount order). */
export const CLASSIFY_COUNTS = 4;
export const ClassifyCount = { BAD: 0, HOOK: 1, VLAN: 2, FLOODED: 3 } as const;

/** RX queues of a port that forward() delivers to itself (more: the port is left to JavaScript). */
export const FORWARD_MAX_RX = 8;
/** A port as setPort() takes it (see PortWord), its ingress words last. */
export const PortWord = { DELIVER: 0, HDR_LEN: 1, MERGEABLE: 2, RX_OFFLOADS: 3, MAX_FRAME: 4, TX_OFFLOADS: 5, NRX: 6, SLOTS: 7, INGRESS: 7 + FORWARD_MAX_RX } as const;
export const PORT_WORDS = PortWord.INGRESS + 4 + 4096 / 32;
/** forward()'s result: header words, then the frames left (a burst of them), then records. */
export const ForwardRes = { BYTES: 0, PUSH: 1, LEFT: 2, RECORDS: 3, HEAD: 4 } as const;
/** One record of forward(): what delivering to one RX queue of one port gave. */
export const ForwardRec = { PORT: 0, QUEUE: 1, RESULT: 2, DELIVERED: 3, BYTES: 4, NO_BUFFERS: 5, TOO_BIG: 6, BAD: 7, WORDS: 8 } as const;
/** forward()'s push result when frames were left to JavaScript (the burst is not pushed yet). */
export const FORWARD_NOT_PUSHED = -2;

/**
 * The forwarding table (native: switch_fdb.cc), one per data-plane thread. classify()
 * decides a whole burst: ingress VLAN, learning, lookup.
 */
export class Fdb {
  private readonly t: RawSwitchFdb;

  constructor(
    public agingMs = 300_000,
    readonly maxEntries = 65536,
  ) {
    this.t = new raw.SwitchFdb(maxEntries);
  }

  get size(): number {
    return this.t.size;
  }

  get stats(): FdbStats {
    return this.t.stats();
  }

  /** Records that `mac` was seen on `port`; returns true if this is new or a move. */
  learn(mac: number, vlan: number, port: number, now: number): boolean {
    return this.t.learn(mac, vlan, port, now);
  }

  /** The port of `mac` in `vlan`, or -1 if unknown or aged out. */
  lookup(mac: number, vlan: number, now: number): number {
    return this.t.lookup(mac, vlan, now, this.agingMs);
  }

  /** Drops entries older than the aging time; returns how many. */
  age(now: number): number {
    return this.t.age(now, this.agingMs);
  }

  /** Forgets everything learned on a port (removed or reset). */
  flushPort(port: number): number {
    return this.t.flushPort(port);
  }

  /**
   * Classifies frames 0..n-1 received on `port`: frame i's first bytes are at
   * heads[offsets[i]] (or heads[i * stride] when offsets is null), min(lens[i], cap) of
   * them. Writes out[i] = destination port, CLASSIFY_FLOOD or CLASSIFY_DROP, out[B + i] =
   * VLAN, out[2B + i] = 1 if it came tagged (B = (out.length - CLASSIFY_COUNTS) / 3), and
   * the burst's ClassifyCount counters after them (set, not added to). verdict: a hook's
   * verdicts (Verdict.DROP, or a port that overrides the lookup). Returns the n frames' bytes.
   */
  classify(
    port: number,
    ingress: Int32Array,
    heads: Uint8Array,
    offsets: Uint32Array | null,
    stride: number,
    cap: number,
    lens: Uint32Array,
    n: number,
    now: number,
    verdict: Int32Array | null,
    out: Int32Array,
  ): number {
    return this.t.classify(port, ingress, heads, offsets, stride, cap, lens, n, now, this.agingMs, verdict, out);
  }

  /**
   * The arrays forward() writes: heads (burst x 64 bytes), lens, cls (as classify's out),
   * res (ForwardRes; room for FORWARD_MAX_RX records per port set with DELIVER). The burst
   * is lens.length and cannot change; bind again with a longer res before adding ports.
   */
  bindBurst(heads: Uint8Array, lens: Uint32Array, cls: Int32Array, res: Int32Array): void {
    this.t.bindBurst(heads, lens, cls, res);
  }

  /** A port as forward() sees it (PortWord layout), or null: gone. */
  setPort(port: number, rec: Int32Array | null): void {
    this.t.setPort(port, rec);
  }

  /**
   * One whole burst of `port`'s TX queue in one native call: pop, classify, deliver to the
   * ports set with DELIVER, and push the chains back unless frames are left (res says which)
   * for ports JavaScript serves. Returns the frames taken, or a negative VringErrorCode.
   */
  forward(txSlot: number, port: number, now: number): number {
    return this.t.forward(txSlot, port, now, this.agingMs);
  }

  dump(now: number): FdbEntry[] {
    const d = this.t.dump();
    const out: FdbEntry[] = [];
    for (let i = 0; i < d.length; i += 4) {
      const age = now - d[i + 3];
      if (age <= this.agingMs) out.push({ mac: macToString(d[i]), vlan: d[i + 1], port: d[i + 2], age });
    }
    return out.sort((a, b) => a.vlan - b.vlan || a.mac.localeCompare(b.mac));
  }
}

export const CLASSIFY_DROP = -1;
export const CLASSIFY_FLOOD = -3;
