// IPv4/IPv6 TCP and UDP packets with correct checksums, and checkers, for tests of the
// offload paths (checksum completion, TSO segmentation) and for benchmarks.
import { macBytes } from '../../src/virtio/net-frames.js';

export function inetSum(b: Uint8Array, from = 0, to = b.length, acc = 0): number {
  for (let i = from; i + 1 < to; i += 2) acc += (b[i] << 8) | b[i + 1];
  if ((to - from) & 1) acc += b[to - 1] << 8;
  return acc;
}
export function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return ~acc & 0xffff;
}

export interface TcpFrameOptions {
  v6?: boolean;
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  seq?: number;
  flags?: number;
  /** leave the TCP checksum as the pseudo-header sum only (what a guest does with NEEDS_CSUM) */
  partialCsum?: boolean;
}

/** An Ethernet + IPv4/IPv6 + TCP frame carrying `payload`. */
export function tcpFrame(payload: Uint8Array, o: TcpFrameOptions = {}): { frame: Uint8Array; l3: number; l4: number } {
  const v6 = o.v6 ?? false;
  const l3 = 14;
  const ipLen = v6 ? 40 : 20;
  const l4 = l3 + ipLen;
  const f = new Uint8Array(l4 + 20 + payload.length);
  f.set(macBytes(o.dst ?? '02:00:00:00:00:0b'), 0);
  f.set(macBytes(o.src ?? '02:00:00:00:00:0a'), 6);
  const dv = new DataView(f.buffer);
  dv.setUint16(12, v6 ? 0x86dd : 0x0800);
  if (v6) {
    f[l3] = 0x60;
    dv.setUint16(l3 + 4, 20 + payload.length);
    f[l3 + 6] = 6;
    f[l3 + 7] = 64;
    f.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], l3 + 8);
    f.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], l3 + 24);
  } else {
    f[l3] = 0x45;
    dv.setUint16(l3 + 2, ipLen + 20 + payload.length);
    dv.setUint16(l3 + 4, 0x1234);
    f[l3 + 8] = 64;
    f[l3 + 9] = 6;
    f.set([10, 0, 0, 1, 10, 0, 0, 2], l3 + 12);
    dv.setUint16(l3 + 10, fold(inetSum(f, l3, l4)));
  }
  dv.setUint16(l4, o.sport ?? 40000);
  dv.setUint16(l4 + 2, o.dport ?? 5201);
  dv.setUint32(l4 + 4, o.seq ?? 1000);
  dv.setUint32(l4 + 8, 1);
  f[l4 + 12] = 5 << 4;
  f[l4 + 13] = o.flags ?? 0x18; // PSH|ACK
  dv.setUint16(l4 + 14, 65535);
  f.set(payload, l4 + 20);
  const pseudo = pseudoSum(f, l3, l4, v6, f.length - l4);
  if (o.partialCsum) dv.setUint16(l4 + 16, ~fold(pseudo) & 0xffff);
  else dv.setUint16(l4 + 16, fold(inetSum(f, l4, f.length, pseudo)));
  return { frame: f, l3, l4 };
}

function pseudoSum(f: Uint8Array, l3: number, l4: number, v6: boolean, l4len: number): number {
  return (v6 ? inetSum(f, l3 + 8, l3 + 40) : inetSum(f, l3 + 12, l3 + 20)) + 6 + l4len;
}

/** Checks a received TCP frame: IP header checksum and TCP checksum; returns its parts. */
export function checkTcp(f: Uint8Array): { ok: boolean; seq: number; flags: number; payload: Uint8Array; ipId: number; why?: string } {
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  const tagged = dv.getUint16(12) === 0x8100;
  const l3 = tagged ? 18 : 14;
  const v6 = dv.getUint16(l3 - 2) === 0x86dd;
  const l4 = l3 + (v6 ? 40 : (f[l3] & 15) * 4);
  const thl = (f[l4 + 12] >> 4) * 4;
  const payload = f.subarray(l4 + thl);
  const res = { ok: true, seq: dv.getUint32(l4 + 4), flags: f[l4 + 13], payload, ipId: v6 ? 0 : dv.getUint16(l3 + 4) } as ReturnType<typeof checkTcp>;
  if (!v6) {
    if (fold(inetSum(f, l3, l4)) !== 0) return { ...res, ok: false, why: 'IPv4 header checksum' };
    if (dv.getUint16(l3 + 2) !== f.length - l3) return { ...res, ok: false, why: 'IPv4 total length' };
  } else if (dv.getUint16(l3 + 4) !== f.length - l4) {
    return { ...res, ok: false, why: 'IPv6 payload length' };
  }
  if (fold(inetSum(f, l4, f.length, pseudoSum(f, l3, l4, v6, f.length - l4))) !== 0) return { ...res, ok: false, why: 'TCP checksum' };
  return res;
}

/** A virtio_net_hdr (12 bytes) asking for checksum offload and, with gsoSize, TSO. */
export function offloadHdr(o: { gso?: 'tcpv4' | 'tcpv6'; gsoSize?: number; csumStart: number; csumOffset: number; hdrLen?: number }): Uint8Array {
  const h = new Uint8Array(12);
  const dv = new DataView(h.buffer);
  h[0] = 1; // NEEDS_CSUM
  h[1] = o.gso === 'tcpv4' ? 1 : o.gso === 'tcpv6' ? 4 : 0;
  dv.setUint16(2, o.hdrLen ?? 0, true);
  dv.setUint16(4, o.gsoSize ?? 0, true);
  dv.setUint16(6, o.csumStart, true);
  dv.setUint16(8, o.csumOffset, true);
  return h;
}

// ---- ARP and ICMP, for tests that talk to the kernel's own stack ----------------------

function ip4bytes(s: string): number[] {
  return s.split('.').map(Number);
}

/** An Ethernet frame. */
export function ethernet(dst: string, src: string, ethertype: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(Math.max(60, 14 + payload.length));
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = ethertype >> 8;
  f[13] = ethertype & 0xff;
  f.set(payload, 14);
  return f;
}

/** An ARP request "who has tpa, tell spa" from sha, broadcast. */
export function arpRequest(sha: string, spa: string, tpa: string): Uint8Array {
  const a = new Uint8Array(28);
  const v = new DataView(a.buffer);
  v.setUint16(0, 1);
  v.setUint16(2, 0x0800);
  a[4] = 6;
  a[5] = 4;
  v.setUint16(6, 1);
  a.set(macBytes(sha), 8);
  a.set(ip4bytes(spa), 14);
  a.set(ip4bytes(tpa), 24);
  return ethernet('ff:ff:ff:ff:ff:ff', sha, 0x0806, a);
}

/** If f is an ARP reply from `spa`, the sender's MAC; else null. */
export function arpReplyFrom(f: Uint8Array, spa: string): string | null {
  if (f.length < 42 || f[12] !== 0x08 || f[13] !== 0x06 || f[20] !== 0 || f[21] !== 2) return null;
  if (f.subarray(28, 32).join('.') !== spa) return null;
  return Array.from(f.subarray(22, 28), (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** An ICMP echo request in IPv4 in Ethernet. */
export function icmpEchoRequest(dst: string, src: string, srcIp: string, dstIp: string, id: number, seq: number, data = new Uint8Array(32)): Uint8Array {
  const icmp = new Uint8Array(8 + data.length);
  icmp[0] = 8;
  const iv = new DataView(icmp.buffer);
  iv.setUint16(4, id);
  iv.setUint16(6, seq);
  icmp.set(data, 8);
  iv.setUint16(2, fold(inetSum(icmp)));
  const ip = new Uint8Array(20 + icmp.length);
  const v = new DataView(ip.buffer);
  ip[0] = 0x45;
  v.setUint16(2, ip.length);
  v.setUint16(4, id);
  ip[8] = 64;
  ip[9] = 1;
  ip.set(ip4bytes(srcIp), 12);
  ip.set(ip4bytes(dstIp), 16);
  v.setUint16(10, fold(inetSum(ip, 0, 20)));
  ip.set(icmp, 20);
  return ethernet(dst, src, 0x0800, ip);
}

/** Whether f is an ICMP echo reply from srcIp with this id and seq (and a valid checksum). */
export function isEchoReply(f: Uint8Array, srcIp: string, id: number, seq: number): boolean {
  if (f.length < 42 || f[12] !== 0x08 || f[13] !== 0x00 || f[23] !== 1) return false;
  const ihl = (f[14] & 15) * 4;
  const icmp = 14 + ihl;
  const total = (f[16] << 8) | f[17];
  if (f.subarray(26, 30).join('.') !== srcIp || f[icmp] !== 0) return false;
  if (((f[icmp + 4] << 8) | f[icmp + 5]) !== id || ((f[icmp + 6] << 8) | f[icmp + 7]) !== seq) return false;
  return fold(inetSum(f, icmp, 14 + total)) === 0;
}
