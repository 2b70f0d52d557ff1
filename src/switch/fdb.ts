// The forwarding database: which port a MAC address was last seen on, per VLAN, with
// aging. The table and the per-burst classification are native (native/switch/switch_fdb.cc);
// MACs cross as numbers (a 48-bit MAC fits a double exactly).
import { CLASSIFY_DROP, CLASSIFY_FLOOD, ClassifyCount, nativeSwitchFdb, type FdbStats, type NativeSwitchFdb } from '../native/switch.js';

export interface FdbEntry {
  mac: string;
  vlan: number;
  port: number;
  /** ms since the entry was last refreshed (0 for an installed entry, which never ages) */
  age: number;
  /**
   * Installed by a control plane (EVPN: a MAC behind a remote VTEP of a VXLAN port): that
   * VTEP's number on the port (the switch knows its address); absent for a learned entry.
   */
  remote?: number;
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

/** Words of classify()'s out array after dest, vid and tagged (ClassifyCount order). */
export const CLASSIFY_COUNTS = ClassifyCount.WORDS;
export { ClassifyCount, CLASSIFY_DROP, CLASSIFY_FLOOD, type FdbStats };

/**
 * The forwarding table (native: switch_fdb.cc), one per switch (its data-plane threads share it). classify()
 * decides a burst: ingress VLAN, learning, lookup (the Forwarder does it for every burst it
 * switches).
 */
export class Fdb {
  /** the native table (the Forwarder of the same thread works on it) */
  readonly t: NativeSwitchFdb;

  constructor(
    public agingMs = 300_000,
    readonly maxEntries = 65536,
    /** the table a switch's data-plane threads share (a switchShared token) instead of one of its own */
    shared?: number,
  ) {
    this.t = nativeSwitchFdb(maxEntries, shared);
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
   * Classifies frames 0..n-1 received on `port` (portWords: its PortWord configuration, of
   * which classify reads the VLAN rule): frame i's first bytes are at
   * heads[offsets[i]] (or heads[i * stride] when offsets is null), min(lens[i], cap) of
   * them. Writes out[i] = destination port, CLASSIFY_FLOOD or CLASSIFY_DROP, out[B + i] =
   * VLAN, out[2B + i] = 1 if it came tagged (B = (out.length - CLASSIFY_COUNTS) / 3), and
   * the burst's ClassifyCount counters after them (set, not added to). verdict: a hook's
   * verdicts (Verdict.DROP, or a port that overrides the lookup). Returns the n frames' bytes.
   */
  classify(
    port: number,
    portWords: Int32Array,
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
    return this.t.classify(port, portWords, heads, offsets, stride, cap, lens, n, now, this.agingMs, verdict, out);
  }

  /** The live entries: learned ones not older than the aging time, and every installed one. */
  dump(now: number): FdbEntry[] {
    const d = this.t.dump();
    const out: FdbEntry[] = [];
    for (let i = 0; i + 4 < d.length; i += 5) {
      const [mac, vlan, port, seen, remote] = [d[i], d[i + 1], d[i + 2], d[i + 3], d[i + 4]];
      if (remote !== 0) out.push({ mac: macToString(mac), vlan, port, age: 0, remote });
      else if (now - seen <= this.agingMs) out.push({ mac: macToString(mac), vlan, port, age: now - seen });
    }
    return out.sort((a, b) => a.vlan - b.vlan || a.mac.localeCompare(b.mac));
  }
}
