// The forwarding database: which port a MAC address was last seen on, per VLAN, with
// aging. Keys are numbers (a 48-bit MAC fits a double exactly); no string per packet.

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

interface Slot {
  port: number;
  seen: number;
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

/** Reads a MAC at `off` of a byte array as a number. */
export function macAt(b: Uint8Array, off: number): number {
  return (b[off] * 0x10000 + b[off + 1] * 0x100 + b[off + 2]) * 0x1000000 + (b[off + 3] * 0x10000 + b[off + 4] * 0x100 + b[off + 5]);
}

/** Group bit: broadcast and multicast destinations. */
export function isMulticast(b: Uint8Array, off: number): boolean {
  return (b[off] & 1) === 1;
}

export class Fdb {
  private readonly vlans = new Map<number, Map<number, Slot>>();
  private count = 0;
  readonly stats: FdbStats = { learned: 0, moved: 0, aged: 0, full: 0 };

  constructor(
    public agingMs = 300_000,
    readonly maxEntries = 65536,
  ) {}

  get size(): number {
    return this.count;
  }

  // The entries the last learn and the last lookup found, for the frames after them with
  // the same address (a burst is mostly one flow or a few): a Map lookup keyed by a 48-bit
  // number hashes a double each time. An entry stays valid until one is deleted (`gen`).
  private gen = 0;
  private learnMac = -1;
  private learnVlan = -1;
  private learnGen = -1;
  private learnSlot: Slot | null = null;
  private lookMac = -1;
  private lookVlan = -1;
  private lookGen = -1;
  private lookSlot: Slot | null = null;

  /** Records that `mac` was seen on `port`; returns true if this is new or a move. */
  learn(mac: number, vlan: number, port: number, now: number): boolean {
    let e: Slot | undefined;
    if (mac === this.learnMac && vlan === this.learnVlan && this.gen === this.learnGen) {
      e = this.learnSlot!;
    } else {
      let t = this.vlans.get(vlan);
      if (t === undefined) {
        t = new Map();
        this.vlans.set(vlan, t);
      }
      e = t.get(mac);
      if (e !== undefined) this.remember(true, mac, vlan, e);
    }
    if (e !== undefined) {
      e.seen = now;
      if (e.port !== port) {
        e.port = port;
        this.stats.moved++;
        return true;
      }
      return false;
    }
    if (this.count >= this.maxEntries) {
      this.stats.full++;
      return false;
    }
    const slot = { port, seen: now };
    this.vlans.get(vlan)!.set(mac, slot);
    this.remember(true, mac, vlan, slot);
    this.count++;
    this.stats.learned++;
    return true;
  }

  /** The port of `mac` in `vlan`, or -1 if unknown or aged out. */
  lookup(mac: number, vlan: number, now: number): number {
    let e: Slot | undefined;
    if (mac === this.lookMac && vlan === this.lookVlan && this.gen === this.lookGen) {
      e = this.lookSlot!;
    } else {
      e = this.vlans.get(vlan)?.get(mac);
      if (e === undefined) return -1;
      this.remember(false, mac, vlan, e);
    }
    if (now - e.seen > this.agingMs) return -1;
    return e.port;
  }

  private remember(learn: boolean, mac: number, vlan: number, e: Slot): void {
    if (learn) {
      this.learnMac = mac;
      this.learnVlan = vlan;
      this.learnGen = this.gen;
      this.learnSlot = e;
    } else {
      this.lookMac = mac;
      this.lookVlan = vlan;
      this.lookGen = this.gen;
      this.lookSlot = e;
    }
  }

  /** Drops entries older than the aging time; returns how many. */
  age(now: number): number {
    let n = 0;
    for (const t of this.vlans.values()) {
      for (const [mac, e] of t) {
        if (now - e.seen > this.agingMs) {
          t.delete(mac);
          this.gen++;
          n++;
        }
      }
    }
    this.count -= n;
    this.stats.aged += n;
    return n;
  }

  /** Forgets everything learned on a port (removed or reset). */
  flushPort(port: number): number {
    let n = 0;
    for (const t of this.vlans.values()) {
      for (const [mac, e] of t) {
        if (e.port === port) {
          t.delete(mac);
          this.gen++;
          n++;
        }
      }
    }
    this.count -= n;
    return n;
  }

  dump(now: number): FdbEntry[] {
    const out: FdbEntry[] = [];
    for (const [vlan, t] of this.vlans) {
      for (const [mac, e] of t) {
        if (now - e.seen <= this.agingMs) out.push({ mac: macToString(mac), vlan, port: e.port, age: now - e.seen });
      }
    }
    return out.sort((a, b) => a.vlan - b.vlan || a.mac.localeCompare(b.mac));
  }
}
