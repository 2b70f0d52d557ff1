// The host side of switch ports, native (native/io/tap.cc, host_io.cc): a TAP device
// and a VXLAN tunnel over UDP (RFC 7348), one call per burst. Guest frames go out straight
// from guest memory (writev / sendmmsg over the chain's segments); frames coming in land in
// one flat buffer per burst that netDeliverFlat (net.ts) copies into guest RX buffers.
// Nothing here blocks: a full queue is a counter (DROPPED), never an exception.
import { addon } from './binding.js';
import { ioLayout } from './layouts.js';
import type { Virtqueue } from './virtqueue.js';

interface RawHostIo {
  tapOpen(name: string, offloads: boolean, multiQueue: boolean, sndbuf: number): { fd: number; name: string };
  tapSetOffloads(fd: number, offloads: boolean): void;
  tapInfo(fd: number): TapInfo;
  txToTap(fd: number, q: unknown, chains: Uint16Array, n: number, hdrLen: number, passHdr: boolean, vlan: number, stats: Uint32Array): number;
  readTap(fd: number, buf: Uint8Array, slot: number, offsets: Uint32Array, lens: Uint32Array, hdrs10: Uint8Array | null, maxFrames: number, stats: Uint32Array): number;
  flatToUdp(fd: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number, vxlanHdr: Uint8Array, dest: Uint8Array, stats: Uint32Array): number;
  finishFrame(frame: Uint8Array, hdr10: Uint8Array, adj: number, out: Uint8Array, offsets: Uint32Array, lens: Uint32Array): number;
  txToUdp(fd: number, q: unknown, chains: Uint16Array, n: number, hdrLen: number, vlan: number, vxlanHdr: Uint8Array, dest: Uint8Array, stats: Uint32Array): number;
  recvUdp(fd: number, buf: Uint8Array, slot: number, maxFrames: number, offsets: Uint32Array, lens: Uint32Array, vni: Uint32Array, srcAddr: Uint8Array, srcPort: Uint16Array, srcFamily: Uint8Array, stats: Uint32Array, hdr10: Uint8Array | null): number;
  udpSockaddr(address: string, port: number): Uint8Array;
  udpOpen(address: string, port: number, reuseAddr: boolean, v6Only: number, rcvbuf: number, sndbuf: number): { fd: number; port: number };
  closeFd(fd: number): void;
}
const raw = addon as RawHostIo;

/** Bytes of the virtio_net_hdr in front of every frame read from or written to our TAPs. */
export const TAP_VNET_HDR_LEN = 12;
/** Read room that takes any frame of a TAP with offloads (a 64 KiB GSO frame), header included. */
export const TAP_SLOT_ANY = TAP_VNET_HDR_LEN + 65536 + 256;
/** Read room for a TAP without offloads and an MTU of 1500 (802.1Q-tagged frames included). */
export const TAP_SLOT_1500 = TAP_VNET_HDR_LEN + 1518 + 4 + 1;

/** TUNGETIFF flags (linux/if_tun.h). */
export const IFF = { TUN: 0x0001, TAP: 0x0002, MULTI_QUEUE: 0x0100, NO_PI: 0x1000, VNET_HDR: 0x4000 } as const;

export interface TapOptions {
  /**
   * TUNSETOFFLOAD TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6: the kernel may give us frames with
   * partial checksums (NEEDS_CSUM in their header) and TCP segments up to 64 KiB. Ask only
   * when every receiver can take them (guests that negotiated GUEST_CSUM / GUEST_TSO4/6).
   * Default false. Frames written to the TAP may carry offloads either way.
   */
  offloads?: boolean;
  /** IFF_MULTI_QUEUE: the same name may be opened again for another queue. Default false. */
  multiQueue?: boolean;
  /**
   * TUNSETSNDBUF: bytes of written frames the kernel may hold at once (in qdiscs, backlogs)
   * before a write fails with EAGAIN (counted as DROPPED). Default: the kernel's, INT_MAX,
   * with which a TAP write never says EAGAIN and nothing bounds what the kernel queues.
   */
  sndBuf?: number;
}

/** An open TAP: the fd (non-blocking, close-on-exec) and the interface's actual name. */
export interface Tap {
  fd: number;
  name: string;
}

/**
 * Opens TAP interface `name` (created if missing; '' lets the kernel pick "tap%d") with
 * IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte virtio_net_hdr. The interface lives
 * while the fd is open, and the fd keeps working after `ip link set NAME netns NS`.
 * Throws a system error (`code`, `errno`, `syscall` naming the step) on failure, e.g.
 * EPERM without CAP_NET_ADMIN or ENAMETOOLONG for a name of 16 bytes or more.
 */
export function openTap(name = '', options: TapOptions = {}): Tap {
  return raw.tapOpen(name, options.offloads ?? false, options.multiQueue ?? false, options.sndBuf ?? 0);
}

/** Turns the offloads of an open TAP on or off (see {@link TapOptions.offloads}). */
export function setTapOffloads(fd: number, offloads: boolean): void {
  raw.tapSetOffloads(fd, offloads);
}

/** What the kernel reports about a TAP fd (TUNGETIFF, TUNGETVNETHDRSZ). */
export interface TapInfo {
  name: string;
  /** {@link IFF} bits */
  flags: number;
  vnetHdrLen: number;
}
export function tapInfo(fd: number): TapInfo {
  return raw.tapInfo(fd);
}

/**
 * Indices of the stats array txToTap / txToUdp add to ({@link TX_STATS} long), from the
 * addon (native/io/io_layout.h; host_io.h TxStats says what each counts): frames the
 * kernel took and their bytes, DROPPED (the queue was full: that frame and the rest of its
 * burst), ERRORS (other send errors), BAD, TOO_BIG (over 65536 + 256 bytes),
 * NEEDS_SEGMENTATION (a GSO frame where it cannot go out as is), LAST_ERRNO (the errno of
 * the last error counted in ERRORS: set, not added).
 */
export const TxStat = ioLayout('TxStat', ['SENT', 'BYTES', 'DROPPED', 'ERRORS', 'BAD', 'TOO_BIG', 'NEEDS_SEGMENTATION', 'LAST_ERRNO'] as const);
export const TX_STATS = TxStat.WORDS;

export interface HostTxOptions {
  /** virtio_net_hdr bytes at the start of each TX chain: 10 (legacy) or 12. Default 12. */
  hdrLen?: number;
  /**
   * 802.1Q, as netDeliver's (net.ts): VLAN_KEEP (-1, default), VLAN_STRIP (-2: remove the tag
   * after the MACs if the frame has one, TPID 0x8100; an untagged frame goes out unchanged),
   * or a TCI 0..65535 to insert after the MACs. csum_start / hdr_len of a passed header move
   * with the tag.
   */
  vlan?: number;
}

export interface TapTxOptions extends HostTxOptions {
  /**
   * Pass the guest's header (offload requests: partial checksum, GSO) to the kernel, which
   * completes them. Default true. When false the TAP gets a zeroed header: partial
   * checksums are completed here and GSO frames are counted NEEDS_SEGMENTATION, not sent.
   */
  passHdr?: boolean;
}

/**
 * Writes frames `chains[0..n)` of the last burst popped from `q` (a guest's TX queue) to a
 * TAP fd, each with one writev of the 12-byte virtio_net_hdr and the frame's bytes from
 * guest memory. Counters are added to `stats` ({@link TxStat}). Returns the frames sent.
 * The chains are done with when this returns (push them used).
 */
export function txToTap(fd: number, q: Virtqueue, chains: Uint16Array, n: number, stats: Uint32Array, options: TapTxOptions = {}): number {
  return raw.txToTap(fd, q.slot, chains, n, options.hdrLen ?? 12, options.passHdr ?? true, options.vlan ?? -1, stats);
}

/**
 * Indices of the stats array readTap adds to ({@link READ_STATS} long), from the addon:
 * frames recorded and their Ethernet bytes, BAD (reads shorter than the header + an
 * Ethernet header), TRUNCATED (reads that filled all the room left: the kernel cuts a frame
 * that does not fit without an error, so such a read is taken as cut short and dropped;
 * make `slot` larger than the largest frame + 12).
 */
export const ReadStat = ioLayout('ReadStat', ['FRAMES', 'BYTES', 'BAD', 'TRUNCATED'] as const);
export const READ_STATS = ReadStat.WORDS;

/**
 * Frames of one burst in one flat buffer: frame k is lens[k] bytes at data[offsets[k]],
 * and (TAP) its first 10 virtio_net_hdr bytes are at hdr10[10k]. The fields are what
 * netDeliverFlat takes. Allocate once, reuse for every burst.
 */
export interface FrameBatch {
  readonly data: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lens: Uint32Array;
  readonly maxFrames: number;
  /** room one frame needs (TAP: header included; UDP: the size of a datagram slot) */
  readonly slot: number;
}
export interface TapReadBatch extends FrameBatch {
  readonly hdr10: Uint8Array;
}

/**
 * A batch for {@link readTap}: `maxFrames` frames, `slot` bytes of room each (default
 * {@link TAP_SLOT_ANY}; {@link TAP_SLOT_1500} for a TAP without offloads at MTU 1500),
 * `bytes` of buffer (default maxFrames * slot; smaller is fine, reading stops when less
 * than one slot is left).
 */
export function createTapReadBatch(maxFrames = 32, slot = TAP_SLOT_ANY, bytes = maxFrames * slot): TapReadBatch {
  if (bytes < slot) throw new RangeError(`createTapReadBatch: ${bytes} bytes cannot hold one slot of ${slot}`);
  return {
    data: new Uint8Array(bytes),
    offsets: new Uint32Array(maxFrames),
    lens: new Uint32Array(maxFrames),
    hdr10: new Uint8Array(10 * maxFrames),
    maxFrames,
    slot,
  };
}

/**
 * Reads frames from a TAP fd into `batch` until the TAP has none left (EAGAIN), the batch
 * is full, or less than one slot of buffer is left. Returns the count; frame k is
 * batch.data[offsets[k], +lens[k]) with its header's first 10 bytes at hdr10[10k].
 * Throws a system error only for a read error other than EAGAIN with no frame read.
 */
export function readTap(fd: number, batch: TapReadBatch, stats: Uint32Array): number {
  return raw.readTap(fd, batch.data, batch.slot, batch.offsets, batch.lens, batch.hdr10, batch.maxFrames, stats);
}

/** The IANA VXLAN port (RFC 7348 §5). */
export const VXLAN_PORT = 4789;
export const VXLAN_HDR_LEN = 8;

/** The 8-byte VXLAN header: flags 0x08 (I: VNI valid), the 24-bit VNI, reserved bits zero. */
export function vxlanHeader(vni: number): Uint8Array {
  if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new RangeError(`VXLAN VNI must be 0..16777215, got ${vni}`);
  return Uint8Array.of(0x08, 0, 0, 0, (vni >>> 16) & 0xff, (vni >>> 8) & 0xff, vni & 0xff, 0);
}

/**
 * The VNI of a VXLAN header at bytes[offset...], or null if it is not one recvUdp accepts
 * (shorter than 8 bytes, I flag clear, or other flag / reserved bits set: Linux drops those too).
 */
export function readVxlanHeader(bytes: Uint8Array, offset = 0): number | null {
  if (bytes.length < offset + VXLAN_HDR_LEN) return null;
  const b = bytes.subarray(offset, offset + VXLAN_HDR_LEN);
  if (b[0] !== 0x08 || b[1] !== 0 || b[2] !== 0 || b[3] !== 0 || b[7] !== 0) return null;
  return (b[4] << 16) | (b[5] << 8) | b[6];
}

export interface UdpSocketOptions {
  /** numeric IPv4 or IPv6 address to bind ('0.0.0.0', '::', 'fe80::1%eth0', ...) */
  address: string;
  /** port to bind, 0 for any (the bound port is returned) */
  port: number;
  /** SO_REUSEADDR, default true */
  reuseAddr?: boolean;
  /** IPV6_V6ONLY for an IPv6 address; default: the system's */
  v6Only?: boolean;
  /** SO_RCVBUF / SO_SNDBUF in bytes (the kernel doubles them); default: the system's */
  rcvBuf?: number;
  sndBuf?: number;
}

/** A bound UDP socket: fd (non-blocking, close-on-exec) and the port it is bound to. */
export interface UdpSocket {
  fd: number;
  port: number;
}

/** Creates and binds a UDP socket for a VXLAN endpoint. Throws a system error naming the failing step. */
export function udpSocket(options: UdpSocketOptions): UdpSocket {
  const v6 = options.v6Only === undefined ? -1 : options.v6Only ? 1 : 0;
  return raw.udpOpen(options.address, options.port, options.reuseAddr ?? true, v6, options.rcvBuf ?? 0, options.sndBuf ?? 0);
}

/**
 * A destination for {@link txToUdp}: the sockaddr_in / sockaddr_in6 bytes of a numeric
 * address and port (no name lookups). Resolve once, reuse. The socket must be of the same
 * family (an IPv4 destination from an IPv6 socket: use '::ffff:a.b.c.d').
 */
export function sockaddr(address: string, port: number): Uint8Array {
  return raw.udpSockaddr(address, port);
}

/**
 * Sends frames `chains[0..n)` of the last burst popped from `q` as VXLAN datagrams to
 * `dest` with sendmmsg: each datagram is `vxlanHdr` ({@link vxlanHeader}) then the frame
 * from guest memory. Partial checksums (NEEDS_CSUM) are completed on the way; GSO frames
 * cannot go out as they are and are counted NEEDS_SEGMENTATION (segment them in software
 * first). Counters are added to `stats` ({@link TxStat}). Returns the datagrams sent.
 */
export function txToUdp(fd: number, q: Virtqueue, chains: Uint16Array, n: number, vxlanHdr: Uint8Array, dest: Uint8Array, stats: Uint32Array, options: HostTxOptions = {}): number {
  return raw.txToUdp(fd, q.slot, chains, n, options.hdrLen ?? 12, options.vlan ?? -1, vxlanHdr, dest, stats);
}

/**
 * Sends frames held in one host buffer (frame k: lens[k] bytes at data[offsets[k]]) as
 * VXLAN datagrams (`vxlanHdr` + frame) to `dest`. Returns the datagrams sent.
 */
export function flatToUdp(fd: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number, vxlanHdr: Uint8Array, dest: Uint8Array, stats: Uint32Array): number {
  return raw.flatToUdp(fd, data, offsets, lens, n, vxlanHdr, dest, stats);
}

/** finishFrame's answer for a header that does not fit its frame (or a GSO type other than TCP). */
export const FINISH_BAD = -1;
/** finishFrame's answer when `out` or its offsets / lens arrays are too small. */
export const FINISH_NO_ROOM = -2;

/**
 * Finishes in software a frame from a host buffer whose virtio_net_hdr (`hdr10`, its first
 * 10 bytes, as readTap gives them) asks for offloads, for a port that takes none (a VXLAN
 * port, a TAP without offloads): a NEEDS_CSUM frame is copied to `out` with its checksum
 * completed, a TSO frame cut into TCP segments there, any other copied as it is. `adj`: how
 * much the frame's length changed since the header was written (+4: an 802.1Q tag
 * inserted, -4: one removed), added to csum_start. Frame k of the result is lens[k] bytes at
 * out[offsets[k]]. Returns the frame count, {@link FINISH_BAD} or {@link FINISH_NO_ROOM}.
 */
export function finishFrame(frame: Uint8Array, hdr10: Uint8Array, adj: number, out: Uint8Array, offsets: Uint32Array, lens: Uint32Array): number {
  return raw.finishFrame(frame, hdr10, adj, out, offsets, lens);
}

/**
 * Indices of the stats array recvUdp adds to ({@link RECV_STATS} long), from the addon
 * (host_io.h RecvStats): datagrams taken (accepted or not), ACCEPTED and their BYTES,
 * TOO_SHORT, BAD_FLAGS (I flag clear), RESERVED (other flag bits or reserved bytes set),
 * TRUNCATED (larger than a slot), CSUM_COMPLETED (accepted frames whose inner TCP/UDP
 * checksum was partial, as a Linux VTEP on the same host leaves it, completed here),
 * GSO_MARKED (accepted partial TCP frames larger than an MTU of 1500 left partial and given
 * a TSO header in hdr10, so that a receiver without TSO gets them segmented).
 */
export const RecvStat = ioLayout('RecvStat', ['DATAGRAMS', 'ACCEPTED', 'BYTES', 'TOO_SHORT', 'BAD_FLAGS', 'RESERVED', 'TRUNCATED', 'CSUM_COMPLETED', 'GSO_MARKED'] as const);
export const RECV_STATS = RecvStat.WORDS;

export interface UdpRecvBatch extends FrameBatch {
  /** 24-bit VNI of frame k */
  readonly vni: Uint32Array;
  /** source address of frame k at [16k, 16k+16): IPv4 in the first 4 bytes */
  readonly srcAddr: Uint8Array;
  readonly srcPort: Uint16Array;
  /** 4 or 6 */
  readonly srcFamily: Uint8Array;
  /** the first 10 virtio_net_hdr bytes of frame k at [10k, 10k+10): zero unless GSO_MARKED */
  readonly hdr10: Uint8Array;
}

/** A batch for {@link recvUdp}: `maxFrames` (<= 1024) datagrams of at most `slot` bytes each (default 65536). */
export function createUdpRecvBatch(maxFrames = 32, slot = 65536): UdpRecvBatch {
  return {
    data: new Uint8Array(maxFrames * slot),
    offsets: new Uint32Array(maxFrames),
    lens: new Uint32Array(maxFrames),
    vni: new Uint32Array(maxFrames),
    srcAddr: new Uint8Array(16 * maxFrames),
    srcPort: new Uint16Array(maxFrames),
    srcFamily: new Uint8Array(maxFrames),
    hdr10: new Uint8Array(10 * maxFrames),
    maxFrames,
    slot,
  };
}

/**
 * One recvmmsg of up to batch.maxFrames datagrams. Malformed ones (see {@link RecvStat}) are
 * counted and skipped; returns the count of accepted ones: frame k (after its VXLAN header)
 * is batch.data[offsets[k], +lens[k]), with vni[k] and its source in srcAddr/srcPort/srcFamily.
 * Returns 0 when nothing is pending; `stats[DATAGRAMS]` tells whether anything was consumed.
 *
 * A UDP socket gives no offload metadata, and a Linux VTEP on the same host (a netns, a
 * container, OVS on a veth) sends inner TCP/UDP with the checksum left partial: the field
 * holds the folded pseudo-header sum. An accepted frame with exactly that value there
 * (IPv4 unfragmented or IPv6 without extension headers, up to two VLAN tags; not IPv4 UDP
 * with checksum 0) has its checksum completed in place (counted CSUM_COMPLETED); every other
 * checksum, right or wrong, is left as it came, so corruption still shows. Such a TCP frame
 * larger than an MTU of 1500 (a GSO packet the VTEP's kernel never cut: a veth takes them
 * whole) is instead left partial with a TSO header in batch.hdr10 (GSO_MARKED), which
 * netDeliverFlat honours per receiver (as is with GUEST_TSO, segmented without).
 */
export function recvUdp(fd: number, batch: UdpRecvBatch, stats: Uint32Array): number {
  return raw.recvUdp(fd, batch.data, batch.slot, batch.maxFrames, batch.offsets, batch.lens, batch.vni, batch.srcAddr, batch.srcPort, batch.srcFamily, stats, batch.hdr10);
}

/** The source of accepted datagram k of a batch, as text ('10.0.0.1' / 'fd00::1') and port. */
export function datagramSource(batch: UdpRecvBatch, k: number): { family: 4 | 6; address: string; port: number } {
  const a = batch.srcAddr.subarray(16 * k, 16 * k + 16);
  if (batch.srcFamily[k] === 4) return { family: 4, address: Array.from(a.subarray(0, 4)).join('.'), port: batch.srcPort[k] };
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((a[i] << 8) | a[i + 1]).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const text = best < 0 ? groups.join(':') : `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
  return { family: 6, address: text, port: batch.srcPort[k] };
}

/** Closes a TAP or UDP fd opened here. Throws EBADF if it was not open. */
export function close(fd: number): void {
  raw.closeFd(fd);
}
