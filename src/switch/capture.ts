// Packet capture on the data-plane thread: a captured port's frames, both directions,
// copied into pcap records (the file format's own per-packet header) in a buffer that is
// handed to the control plane when full or every 100 ms. Ports that are not captured pay
// one null check per burst.
import { netToFlat, DELIVER_STATS } from '../native/net.js';
import type { Virtqueue } from '../native/virtqueue.js';

export interface CaptureSpec {
  /** bytes kept of each frame (default 65535) */
  snaplen?: number;
  /** stop after this many frames (default: no limit) */
  count?: number;
}

/** Where the records go: `done` is set on the last buffer (count reached or stopped). */
export type CaptureSink = (records: Uint8Array, packets: number, done: boolean) => void;

const BUF = 1 << 20;
/** chains copied per netToFlat call: the staging holds that many of the largest frames */
const CHUNK = 4;
const REC = 16; // ts_sec, ts_usec, incl_len, orig_len (u32 each, little endian)
export const IOTA = Uint16Array.from({ length: 1024 }, (_, i) => i);
const VLAN_KEEP = -1;
const VLAN_STRIP = -2;

export class CaptureTap {
  readonly snaplen: number;
  readonly limit: number;
  packets = 0;
  done = false;
  private buf = new Uint8Array(BUF);
  private view = new DataView(this.buf.buffer);
  private at = 0;
  private pending = 0;
  private readonly timer: NodeJS.Timeout;
  // netToFlat staging for frames taken from guest chains
  private readonly flat = new Uint8Array(CHUNK * (65536 + 1024));
  private readonly offsets = new Uint32Array(1024);
  private readonly lens = new Uint32Array(1024);
  private readonly st = new Uint32Array(DELIVER_STATS);

  constructor(
    spec: CaptureSpec,
    private readonly sink: CaptureSink,
  ) {
    this.snaplen = Math.max(64, Math.min(spec.snaplen ?? 65535, 65535));
    this.limit = spec.count ?? 0;
    this.timer = setInterval(() => this.flush(false), 100);
    this.timer.unref?.();
  }

  /** Frames of a guest's burst: chains[0..n) of vq (their virtio-net header of hdrLen bytes skipped), with a VLAN operation. */
  addChains(vq: Virtqueue, hdrLen: number, chains: Uint16Array, n: number, vlan = VLAN_KEEP): void {
    // A few chains per call, so the staging never fills: netToFlat's count is then short
    // only of frames it skipped (malformed), and each chain is taken once.
    for (let from = 0; from < n && !this.done; from += CHUNK) {
      const m = Math.min(n - from, CHUNK);
      const k = netToFlat(vq, hdrLen, false, chains.subarray(from, from + m), m, this.flat, this.offsets, this.lens, this.st, vlan);
      this.addFlat(this.flat, this.offsets, this.lens, k);
    }
  }

  /** Frames held in a host buffer: frame i is lens[i] bytes at data[offsets[i]]. */
  addFlat(data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n: number, vlan = VLAN_KEEP): void {
    if (this.done) return;
    const now = performance.timeOrigin + performance.now();
    const sec = Math.floor(now / 1000);
    const usec = Math.floor((now - sec * 1000) * 1000);
    for (let i = 0; i < n; i++) {
      let frame = data.subarray(offsets[i], offsets[i] + lens[i]);
      if (vlan !== VLAN_KEEP) frame = vlanOp(frame, vlan);
      const incl = Math.min(frame.length, this.snaplen);
      if (this.at + REC + incl > this.buf.length) this.flush(false);
      const v = this.view;
      v.setUint32(this.at, sec, true);
      v.setUint32(this.at + 4, usec, true);
      v.setUint32(this.at + 8, incl, true);
      v.setUint32(this.at + 12, frame.length, true);
      this.buf.set(frame.subarray(0, incl), this.at + REC);
      this.at += REC + incl;
      this.pending++;
      this.packets++;
      if (this.limit > 0 && this.packets >= this.limit) {
        this.stop();
        return;
      }
    }
  }

  /** Hands over what is buffered; the last call (done) stops the timer. */
  stop(): void {
    if (this.done) return;
    this.done = true;
    clearInterval(this.timer);
    this.flush(true);
  }

  private flush(done: boolean): void {
    if (this.at === 0 && !done) return;
    const out = this.buf.slice(0, this.at);
    const packets = this.pending;
    this.at = 0;
    this.pending = 0;
    this.sink(out, packets, done);
  }
}

/** The frame with a VLAN operation applied (-2 strip the 802.1Q tag, >= 0 insert one with this TCI). */
function vlanOp(f: Uint8Array, op: number): Uint8Array {
  if (op === VLAN_STRIP) {
    if (f.length < 18 || f[12] !== 0x81 || f[13] !== 0x00) return f;
    const o = new Uint8Array(f.length - 4);
    o.set(f.subarray(0, 12));
    o.set(f.subarray(16), 12);
    return o;
  }
  const o = new Uint8Array(f.length + 4);
  o.set(f.subarray(0, 12));
  o.set([0x81, 0x00, op >> 8, op & 0xff], 12);
  o.set(f.subarray(12), 16);
  return o;
}
