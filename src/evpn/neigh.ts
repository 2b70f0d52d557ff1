// The neighbor frames EVPN reads and writes (RFC 7432 §10): ARP (RFC 826) and IPv6 neighbor
// discovery (RFC 4861) in Ethernet, untagged or with one 802.1Q tag. Reading: who a frame
// says has which address (snooping, for MAC+IP routes), and which address a request asks
// for. Writing: the answer a host with that address would give (ARP suppression and ND
// proxy, answered from the fabric's MAC+IP routes). Pure functions, no I/O.
import { isIPv4, isIPv6 } from 'node:net';
import { ipv6Text } from '../switch/ipv6-text.js';

function macAt(b: Uint8Array, at: number): string {
  return Array.from(b.subarray(at, at + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

function macBytes(mac: string): number[] {
  return mac.split(':').map((x) => parseInt(x, 16));
}

/** The offset of the EtherType (12, or 16 after an 802.1Q tag). */
function typeAt(f: Uint8Array): number {
  return f.length >= 18 && f[12] === 0x81 && f[13] === 0x00 ? 16 : 12;
}

/** An IPv6 address in RFC 5952's form, from 16 bytes. */
export function ipv6At(b: Uint8Array, at: number): string {
  const g: number[] = [];
  for (let k = 0; k < 8; k++) g.push((b[at + 2 * k] << 8) | b[at + 2 * k + 1]);
  return ipv6Text(g);
}

/** The 16 bytes of an IPv6 address. */
export function ipv6Bytes(a: string): Uint8Array {
  if (!isIPv6(a)) throw new RangeError(`expected an IPv6 address, got ${JSON.stringify(a)}`);
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const part = (x: string | undefined) => (x ? x.split(':') : []);
  const h = part(head);
  const t = part(tail);
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((x, k) => {
    const v = parseInt(x, 16);
    out[2 * k] = v >> 8;
    out[2 * k + 1] = v & 0xff;
  });
  return out;
}

/** The solicited-node multicast address of an IPv6 address (ff02::1:ffXX:XXXX, RFC 4291 §2.7.1). */
export function solicitedNode(ip: string): string {
  const b = ipv6Bytes(ip);
  const h = (x: number) => x.toString(16).padStart(2, '0');
  return `ff02::1:ff${h(b[13])}:${((b[14] << 8) | b[15]).toString(16)}`;
}

/** The sender of an Ethernet/IPv4 ARP frame (request or reply), or null. */
export function arpSender(f: Uint8Array): { mac: string; ip: string } | null {
  const at = typeAt(f);
  if (f.length < at + 2 + 28 || f[at] !== 0x08 || f[at + 1] !== 0x06) return null;
  const a = at + 2;
  // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
  if (f[a] !== 0 || f[a + 1] !== 1 || f[a + 2] !== 0x08 || f[a + 3] !== 0 || f[a + 4] !== 6 || f[a + 5] !== 4) return null;
  const ip = `${f[a + 14]}.${f[a + 15]}.${f[a + 16]}.${f[a + 17]}`;
  if (ip === '0.0.0.0' || (f[a + 8] & 1) !== 0) return null; // a probe, or a multicast sender
  return { mac: macAt(f, a + 8), ip };
}

/** An ARP request's sender and the IPv4 address it asks for, or null (not a request). */
export function arpRequest(f: Uint8Array): { mac: string; ip: string; target: string } | null {
  const s = arpSender(f);
  const a = typeAt(f) + 2;
  if (!s || f[a + 6] !== 0 || f[a + 7] !== 1) return null;
  return { ...s, target: `${f[a + 24]}.${f[a + 25]}.${f[a + 26]}.${f[a + 27]}` };
}

/** The 802.1Q tag of f (4 bytes), or none. */
function tagOf(f: Uint8Array): Uint8Array {
  return typeAt(f) === 16 ? f.slice(12, 16) : new Uint8Array(0);
}

/** The reply to ARP request `req` that a host with (mac, ip) sends: to the requester, tagged as the request. */
export function arpReply(req: Uint8Array, mac: string, ip: string): Uint8Array {
  const r = arpRequest(req);
  if (!r || !isIPv4(ip)) throw new RangeError('arpReply: not an ARP request, or not an IPv4 address');
  const tag = tagOf(req);
  const f = new Uint8Array(Math.max(60, 14 + tag.length + 28));
  f.set(macBytes(r.mac), 0);
  f.set(macBytes(mac), 6);
  f.set(tag, 12);
  const a = 12 + tag.length;
  f.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2], a);
  f.set(macBytes(mac), a + 10);
  f.set(ip.split('.').map(Number), a + 16);
  f.set(macBytes(r.mac), a + 20);
  f.set(r.ip.split('.').map(Number), a + 26);
  return f;
}

/** Where an ICMPv6 message of f starts (no extension headers), its type, or null. */
function icmp6(f: Uint8Array): { l3: number; l4: number; type: number } | null {
  const at = typeAt(f);
  const l3 = at + 2;
  if (f.length < l3 + 40 + 24 || f[at] !== 0x86 || f[at + 1] !== 0xdd || f[l3] >> 4 !== 6 || f[l3 + 6] !== 58) return null;
  // RFC 4861 §7.1.1: neighbor discovery comes with hop limit 255 (from the link itself).
  if (f[l3 + 7] !== 255) return null;
  return { l3, l4: l3 + 40, type: f[l3 + 40] };
}

/** The link-layer address option of type `opt` (1 source, 2 target) of an NS/NA, or null. */
function lladdrOption(f: Uint8Array, from: number, end: number, opt: number): string | null {
  for (let o = from; o + 8 <= end;) {
    const len = f[o + 1] * 8;
    if (len === 0) return null; // malformed: RFC 4861 §4.6 says drop
    if (f[o] === opt && len >= 8) return macAt(f, o + 2);
    o += len;
  }
  return null;
}

/** The end of the IPv6 payload (its payload length, within the frame). */
function payloadEnd(f: Uint8Array, l3: number): number {
  return Math.min(f.length, l3 + 40 + ((f[l3 + 4] << 8) | f[l3 + 5]));
}

/** A unicast, global-scope address: snooped ones (link-local ones stay on the link, as FRR keeps them). */
function advertisable6(ip: string, b: Uint8Array, at: number): boolean {
  return ip !== '::' && b[at] !== 0xff && !(b[at] === 0xfe && (b[at + 1] & 0xc0) === 0x80);
}

/**
 * Who an IPv6 neighbor solicitation or advertisement says has which address, or null: an NA's
 * target with its target link-layer address (or its Ethernet source); an NS's source address
 * (not ::, a duplicate address detection) with its source link-layer address (or its
 * Ethernet source). Link-local and multicast addresses give null.
 */
export function ndSender(f: Uint8Array): { mac: string; ip: string } | null {
  const m = icmp6(f);
  if (!m || (m.type !== 135 && m.type !== 136) || f[m.l4 + 1] !== 0) return null;
  const end = payloadEnd(f, m.l3);
  if (end < m.l4 + 24) return null;
  let mac: string;
  let ipAt: number;
  if (m.type === 136) {
    ipAt = m.l4 + 8;
    mac = lladdrOption(f, m.l4 + 24, end, 2) ?? macAt(f, 6);
  } else {
    ipAt = m.l3 + 8;
    mac = lladdrOption(f, m.l4 + 24, end, 1) ?? macAt(f, 6);
  }
  const ip = ipv6At(f, ipAt);
  if (!advertisable6(ip, f, ipAt) || (parseInt(mac.slice(0, 2), 16) & 1) !== 0) return null;
  return { mac, ip };
}

/** A neighbor solicitation's target, its sender's addresses (ip '::': duplicate address detection), or null. */
export function ndSolicitation(f: Uint8Array): { mac: string; ip: string; target: string } | null {
  const m = icmp6(f);
  if (!m || m.type !== 135 || f[m.l4 + 1] !== 0 || payloadEnd(f, m.l3) < m.l4 + 24) return null;
  return { mac: macAt(f, 6), ip: ipv6At(f, m.l3 + 8), target: ipv6At(f, m.l4 + 8) };
}

/** The ICMPv6 checksum of the message at l4..end of an IPv6 packet at l3 (RFC 4443 §2.3). */
function icmp6Checksum(f: Uint8Array, l3: number, l4: number, end: number): number {
  let sum = 0;
  for (let i = l3 + 8; i < l3 + 40; i += 2) sum += (f[i] << 8) | f[i + 1];
  const len = end - l4;
  sum += len + 58;
  for (let i = l4; i < end; i += 2) sum += (f[i] << 8) | (i + 1 < end ? f[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * The neighbor advertisement a host with (mac, ip) sends for solicitation `ns` (RFC 4861
 * §7.2.4): to the solicitor, solicited and override set, with its link-layer address; for a
 * duplicate address detection (source ::), to all nodes (ff02::1), not solicited.
 */
export function ndAdvertisement(ns: Uint8Array, mac: string, ip: string): Uint8Array {
  const s = ndSolicitation(ns);
  if (!s || !isIPv6(ip)) throw new RangeError('ndAdvertisement: not a neighbor solicitation, or not an IPv6 address');
  const dad = s.ip === '::';
  const tag = tagOf(ns);
  const l3 = 14 + tag.length;
  const l4 = l3 + 40;
  const f = new Uint8Array(l4 + 32);
  f.set(dad ? [0x33, 0x33, 0, 0, 0, 1] : macBytes(s.mac), 0);
  f.set(macBytes(mac), 6);
  f.set(tag, 12);
  f.set([0x86, 0xdd], 12 + tag.length);
  f[l3] = 0x60;
  f[l3 + 5] = 32; // payload length
  f[l3 + 6] = 58;
  f[l3 + 7] = 255;
  f.set(ipv6Bytes(ip), l3 + 8);
  f.set(ipv6Bytes(dad ? 'ff02::1' : s.ip), l3 + 24);
  f[l4] = 136;
  f[l4 + 4] = dad ? 0x20 : 0x60; // S (solicited) unless DAD, O (override)
  f.set(ipv6Bytes(ip), l4 + 8);
  f.set([2, 1, ...macBytes(mac)], l4 + 24); // target link-layer address
  const c = icmp6Checksum(f, l3, l4, f.length);
  f[l4 + 2] = c >> 8;
  f[l4 + 3] = c & 0xff;
  return f;
}

/** Whether the ICMPv6 checksum of an IPv6 frame's message is right (for tests and checks). */
export function icmp6ChecksumOk(f: Uint8Array): boolean {
  const m = icmp6(f);
  if (!m) return false;
  return icmp6Checksum(f, m.l3, m.l4, payloadEnd(f, m.l3)) === 0;
}
