// The addresses ARP/ND snooping saw, per (VLAN, MAC): what EvpnControl advertises with a
// local MAC (type-2 MAC+IP routes). Snooping sees every sender, the fabric's too (their
// requests and replies cross the switch), so what is kept of a MAC lives only as long as the
// MAC does somewhere in the switch: prune() drops the MACs no longer there (aged out, or
// their route withdrawn), and the addresses of VLANs that are no VNI's.
import { isIPv4 } from 'node:net';

/** IPv6 addresses kept per MAC (a host has a few: SLAAC, temporary, static). */
export const MAX_IPV6 = 4;

export class SnoopedAddresses {
  /** By "VLAN/MAC": at most one IPv4 and MAX_IPV6 IPv6 addresses, newest last. */
  readonly #ips = new Map<string, string[]>();

  /** Records that `mac` in `vlan` uses `ip`: the one IPv4 address of the MAC (the last seen), or one more IPv6 one (the oldest goes past MAX_IPV6). */
  add(vlan: number, mac: string, ip: string): void {
    const key = `${vlan}/${mac}`;
    const v4 = isIPv4(ip);
    const old = (this.#ips.get(key) ?? []).filter((a) => a !== ip && (v4 ? !isIPv4(a) : true));
    const v6 = old.filter((a) => !isIPv4(a));
    const next = v6.length >= MAX_IPV6 && !v4 ? old.filter((a) => a !== v6[0]) : old;
    this.#ips.set(key, [...next, ip]);
  }

  /** The addresses of `mac` in `vlan`, oldest first (none: []). */
  get(vlan: number, mac: string): string[] {
    return this.#ips.get(`${vlan}/${mac}`) ?? [];
  }

  delete(vlan: number, mac: string): void {
    this.#ips.delete(`${vlan}/${mac}`);
  }

  /**
   * Keeps the MACs `live` names (by VLAN: the MACs the switch has in it, on any port) and
   * forgets the rest, the whole of a VLAN `live` does not name; returns how many MACs went.
   */
  prune(live: ReadonlyMap<number, ReadonlySet<string>>): number {
    let n = 0;
    for (const key of [...this.#ips.keys()]) {
      const at = key.indexOf('/');
      if (live.get(Number(key.slice(0, at)))?.has(key.slice(at + 1))) continue;
      this.#ips.delete(key);
      n++;
    }
    return n;
  }

  /** How many MACs have addresses. */
  get size(): number {
    return this.#ips.size;
  }
}
