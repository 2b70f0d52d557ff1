// The virtio-net per-packet loops, native (native/net/net.cc), one call per burst.
import { markAsUntransferable } from 'node:worker_threads';
import { addon } from './binding.js';
import { ioLayout } from './layouts.js';
import type { Virtqueue } from './virtqueue.js';

interface RawNet {
  netPeek(q: unknown, n: number, hdrLen: number, out: Uint8Array, stride: number, lens: Uint32Array): void;
  netDeliverFlat(rx: unknown, rxHdr: number, mergeable: boolean, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number, hdr10: Uint8Array | null, stats: Uint32Array, vlan: number, rxOffloads: number, rxMaxFrame: number): number;
  netToFlat(tx: unknown, txHdr: number, txOffloads: boolean, chains: Uint16Array, n: number, vlan: number, out: Uint8Array, offsets: Uint32Array, lens: Uint32Array, maxFrames: number, stats: Uint32Array): number;
  netDeliver(rx: unknown, rxHdr: number, mergeable: boolean, tx: unknown, txHdr: number, txOffloads: boolean, chains: Uint16Array, n: number, stats: Uint32Array, vlan: number, rxOffloads: number, rxMaxFrame: number): number;
  netMaxFrame: number;
  FlatFrames: new (data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null, stats: Uint32Array) => RawFlatFrames;
  FlatSink: new (out: Uint8Array, offsets: Uint32Array, lens: Uint32Array, stats: Uint32Array) => { take(tx: number, hdrLen: number, offloads: boolean): number };
}
interface RawFlatFrames {
  deliver(rx: number, n: number, rxHdr: number, mergeable: boolean, vlan: number, rxOffloads: number, rxMaxFrame: number, withHdr10: boolean): number;
}
const raw = addon as RawNet;

/** The largest frame the native loops take, Ethernet header included (kMaxFrame: 64 KiB TSO frames plus headers). */
export const MAX_FRAME: number = raw.netMaxFrame;

/**
 * Copies the first `stride` bytes of each frame (after its `hdrLen`-byte virtio_net_hdr)
 * of the last popped burst of `q` into out[i*stride...], zero-padded, and each frame's
 * length into lens[i]. Classification reads these instead of guest memory.
 */
export function netPeek(q: Virtqueue, n: number, hdrLen: number, out: Uint8Array, stride: number, lens: Uint32Array): void {
  raw.netPeek(q.slot, n, hdrLen, out, stride, lens);
}

/** Indices of DeliverStats (net.h) in the stats array given to netDeliver (counters are added to), from the addon. */
export const DeliverStat = ioLayout('DeliverStat', ['DELIVERED', 'NO_BUFFERS', 'TOO_BIG', 'BAD', 'BYTES', 'SEGMENTED', 'CSUM_DONE'] as const);
/** Length of the stats array netDeliver / netDeliverFlat add to. */
export const DELIVER_STATS = DeliverStat.WORDS;

/** What a receiver takes as is (its GUEST_* features); anything else is done in software. */
export const RxOffload = { CSUM: 1, TSO4: 2, TSO6: 4, ECN: 8, UFO: 16 } as const;

export interface RxSide {
  q: Virtqueue;
  /** 10 (legacy header) or 12 (VERSION_1 / MRG_RXBUF) */
  hdrLen: number;
  mergeable: boolean;
  /** RxOffload bits the receiver negotiated (default 0: checksums completed, TSO segmented here) */
  offloads?: number;
  /** largest non-GSO frame the receiver takes (MTU + 14, + 4 if tagged); 0 or absent: no limit */
  maxFrame?: number;
}

/** VLAN operation of netDeliver: leave the frame, strip its 802.1Q tag, or insert one (a TCI). */
export const VLAN_KEEP = -1;
export const VLAN_STRIP = -2;

/**
 * Copies frames `chains[0..n)` of the TX queue's last popped burst into RX buffers of `rx`.
 * With `txOffloads`, each frame's virtio_net_hdr may ask for checksum or TSO offload: it
 * is passed through if the receiver negotiated taking it (rx.offloads), else the checksum
 * is completed or the frame cut into TCP segments here.
 * (popping them as needed, several per frame when mergeable, num_buffers set), pushes
 * them used, and signals the receiver if it asked. A frame that does not fit is dropped
 * and counted; the TX side is never blocked. Returns 1 if the receiver was signalled, 0
 * if not, or a negative VringErrorCode if the RX queue is broken.
 */
export function netDeliver(rx: RxSide, tx: Virtqueue, txHdrLen: number, txOffloads: boolean, chains: Uint16Array, n: number, stats: Uint32Array, vlan = VLAN_KEEP): number {
  return raw.netDeliver(rx.q.slot, rx.hdrLen, rx.mergeable, tx.slot, txHdrLen, txOffloads, chains, n, stats, vlan, rx.offloads ?? 0, rx.maxFrame ?? 0);
}

/**
 * Delivers frames held in one host buffer (frame k: lens[k] bytes at data[offsets[k]],
 * no virtio_net_hdr) into RX buffers of `rx`, as netDeliver does. `hdr10` may hold 10
 * virtio_net_hdr bytes per frame (offload flags), else the receiver gets a zeroed header.
 */
export function netDeliverFlat(rx: RxSide, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number, hdr10: Uint8Array | null, stats: Uint32Array, vlan = VLAN_KEEP): number {
  return raw.netDeliverFlat(rx.q.slot, rx.hdrLen, rx.mergeable, data, offsets, lens, n, hdr10, stats, vlan, rx.offloads ?? 0, rx.maxFrame ?? 0);
}

/**
 * netDeliverFlat for a caller that sends from the same arrays every burst (a traffic
 * generator): the arrays are given once, each deliver() passes numbers only. The object
 * keeps the arrays alive; their contents may change between calls (offsets and lengths
 * are checked on every call). Frames: as many as offsets, lens (and hdr10, 10 bytes a
 * frame) hold. The native side keeps pointers into the arrays' buffers, so those buffers
 * are marked untransferable: a postMessage or structuredClone that tries to move one
 * (detaching it under the native side) throws instead; resizable buffers are refused.
 */
export class FlatFrames {
  private readonly h: RawFlatFrames;
  constructor(
    readonly data: Uint8Array,
    readonly offsets: Uint32Array,
    readonly lens: Uint32Array,
    readonly hdr10: Uint8Array | null,
    /** DELIVER_STATS counters every deliver() adds to */
    readonly stats: Uint32Array,
  ) {
    holdFixed('FlatFrames', [data, offsets, lens, hdr10, stats]);
    this.h = new raw.FlatFrames(data, offsets, lens, hdr10, stats);
  }

  /** Delivers frames 0..n into RX buffers of `rx`; returns as netDeliverFlat. */
  deliver(rx: RxSide, n: number, vlan = VLAN_KEEP, withHdr10 = false): number {
    return this.h.deliver(rx.q.slot, n, rx.hdrLen, rx.mergeable, vlan, rx.offloads ?? 0, rx.maxFrame ?? 0, withHdr10);
  }
}

/**
 * Arrays the native side keeps pointers into: never detached (transferred) and never
 * shrunk under it.
 */
function holdFixed(what: string, arrays: Array<Uint8Array | Uint32Array | null>): void {
  for (const a of arrays) {
    if (a === null) continue;
    const b = a.buffer as ArrayBuffer & { resizable?: boolean };
    if (b instanceof SharedArrayBuffer) continue; // never detached, never shrunk
    if (b.resizable) throw new TypeError(`${what}: a resizable ArrayBuffer can shrink under the native side`);
    markAsUntransferable(b);
  }
}

/**
 * A receiver of a guest's TX queue that reads every frame into memory of its own (`out`;
 * frame k of the last burst: lens[k] bytes at offsets[k]), as a real receiver must: one
 * native call per burst pops, copies the frames out and gives the buffers back.
 */
export class FlatSink {
  private readonly h: { take(tx: number, hdrLen: number, offloads: boolean): number };
  constructor(
    readonly out: Uint8Array,
    readonly offsets: Uint32Array,
    readonly lens: Uint32Array,
    /** DELIVER_STATS counters every take() adds to: DELIVERED and BYTES of the frames copied, BAD of those that could not be */
    readonly stats: Uint32Array,
  ) {
    holdFixed('FlatSink', [out, offsets, lens, stats]);
    this.h = new raw.FlatSink(out, offsets, lens, stats);
  }

  /** Takes a burst of `tx` (at most offsets.length chains); returns the chains taken, or < 0 (-VqError) if the queue is broken. */
  take(tx: Virtqueue, hdrLen: number, offloads = false): number {
    return this.h.take(tx.slot, hdrLen, offloads);
  }
}

/**
 * Copies frames `chains[0..n)` of the TX queue's last burst into `out` as finished frames
 * (VLAN operation applied, partial checksums completed, TSO frames cut into segments) for
 * a host port that takes no offloads. Frame k: lens[k] bytes at out[offsets[k]]. Returns
 * the frames written (stops when `out` or `maxFrames` is full).
 */
export function netToFlat(tx: Virtqueue, txHdrLen: number, txOffloads: boolean, chains: Uint16Array, n: number, out: Uint8Array, offsets: Uint32Array, lens: Uint32Array, stats: Uint32Array, vlan = VLAN_KEEP): number {
  return raw.netToFlat(tx.slot, txHdrLen, txOffloads, chains, n, vlan, out, offsets, lens, offsets.length, stats);
}
