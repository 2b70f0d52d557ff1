// Ethernet frames and the virtio_net_hdr (virtio 1.2 §5.1.6) for tests and benchmarks.

/** virtio_net_hdr with VERSION_1 or MRG_RXBUF: 12 bytes (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers). */
export const NET_HDR_SIZE = 12;

export function macBytes(mac: string): Uint8Array {
  const parts = mac.split(':').map((x) => parseInt(x, 16));
  if (parts.length !== 6 || parts.some((x) => !(x >= 0 && x <= 255))) throw new RangeError(`bad MAC ${mac}`);
  return Uint8Array.from(parts);
}

/** An Ethernet frame (no FCS) of `len` bytes: dst, src, ethertype, then a numbered payload. */
export function ethFrame(dst: string, src: string, len: number, seq = 0, ethertype = 0x88b5): Uint8Array {
  if (len < 14) throw new RangeError('frame shorter than an Ethernet header');
  const f = new Uint8Array(len);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = ethertype >> 8;
  f[13] = ethertype & 0xff;
  for (let i = 14; i < len; i++) f[i] = (seq + i) & 0xff;
  if (len >= 18) new DataView(f.buffer).setUint32(14, seq >>> 0);
  return f;
}

/** A zeroed virtio_net_hdr followed by the frame. */
export function withNetHdr(frame: Uint8Array): Uint8Array {
  const b = new Uint8Array(NET_HDR_SIZE + frame.length);
  b.set(frame, NET_HDR_SIZE);
  return b;
}
