// IPv6 neighbor solicitations and advertisements for tests, with their ICMPv6 checksum
// computed here (test/lib/packets.ts's sums), apart from src/evpn/neigh.ts's own.
import { ipv6Bytes } from '../../src/evpn/neigh.js';
import { fold, inetSum } from './packets.js';

/** The sender MAC of nd()'s frames. */
export const ND_MAC = [0x52, 0x54, 0, 0x26, 0, 0x11];

/** An NS (135) or NA (136) in IPv6 in Ethernet, with a link-layer address option; the checksum computed here on its own. */
export function nd(type: 135 | 136, o: { src: string; dst: string; target: string; lladdr?: number[]; hop?: number; tag?: boolean; from?: number[] }): Uint8Array {
  const opt = o.lladdr ? [type === 135 ? 1 : 2, 1, ...o.lladdr] : [];
  const icmp = Uint8Array.from([type, 0, 0, 0, type === 136 ? 0x60 : 0, 0, 0, 0, ...ipv6Bytes(o.target), ...opt]);
  const ip6 = new Uint8Array(40 + icmp.length);
  ip6[0] = 0x60;
  ip6[4] = icmp.length >> 8;
  ip6[5] = icmp.length & 0xff;
  ip6[6] = 58;
  ip6[7] = o.hop ?? 255;
  ip6.set(ipv6Bytes(o.src), 8);
  ip6.set(ipv6Bytes(o.dst), 24);
  ip6.set(icmp, 40);
  // Pseudo-header (addresses, length, next header 58) and the message.
  const sum = fold(inetSum(ip6, 40, ip6.length, inetSum(ip6, 8, 40, icmp.length + 58)));
  ip6[42] = sum >> 8;
  ip6[43] = sum & 0xff;
  const head = [0x33, 0x33, 0xff, 0, 0, 3, ...(o.from ?? ND_MAC), ...(o.tag ? [0x81, 0, 0, 10] : []), 0x86, 0xdd];
  return Uint8Array.from([...head, ...ip6]);
}
