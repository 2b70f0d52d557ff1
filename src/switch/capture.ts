// Packet capture on the data-plane thread: the forwarder appends a captured port's frames,
// both directions, as pcap records (the file format's own per-packet header, then the
// frame cut at the snaplen, VLAN edits applied) to this tap's staging buffer
// (native/switch/switch_capture.cc). The tap hands the records to the control plane once a
// megabyte is staged, every 100 ms, and when it stops. Ports that are not captured pay
// one flag check per delivery.
import { CaptureWord } from '../native/switch.js';

export interface CaptureSpec {
  /** bytes kept of each frame (default 65535) */
  snaplen?: number;
  /** stop after this many frames (default: no limit) */
  count?: number;
}

/** Where the records go: `done` is set on the last buffer (count reached or stopped). */
export type CaptureSink = (records: Uint8Array, packets: number, done: boolean) => void;

/** Staged bytes that make a hand-over at the end of a call. */
const FLUSH_AT = 1 << 20;
/** The most one record takes: its header and a frame of 64 KiB + 256, plus an inserted tag. */
const RECORD_MAX = 16 + 65536 + 256 + 4;

export class CaptureTap {
  readonly snaplen: number;
  readonly limit: number;
  /** where the forwarder stages records: room for a whole burst past the hand-over mark */
  readonly buf: Uint8Array;
  /** CaptureWord layout, shared with the forwarder */
  readonly state = new Float64Array(CaptureWord.WORDS);
  private stopped = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    spec: CaptureSpec,
    burst: number,
    private readonly sink: CaptureSink,
  ) {
    this.snaplen = Math.max(64, Math.min(spec.snaplen ?? 65535, 65535));
    this.limit = spec.count ?? 0;
    this.buf = new Uint8Array(FLUSH_AT + burst * (16 + Math.min(this.snaplen, RECORD_MAX - 16)) + RECORD_MAX);
    this.state[CaptureWord.SNAPLEN] = this.snaplen;
    this.state[CaptureWord.LIMIT] = this.limit;
    this.timer = setInterval(() => this.flush(false), 100);
    this.timer.unref?.();
  }

  get packets(): number {
    return this.state[CaptureWord.PACKETS];
  }

  /** Frames that did not fit the staging (counted in the port's CAPTURE_LOST too). */
  get lost(): number {
    return this.state[CaptureWord.LOST];
  }

  /** The count is reached or the capture was stopped. */
  get done(): boolean {
    return this.stopped || this.state[CaptureWord.DONE] !== 0;
  }

  /** After a forwarder call: hands the records over once a megabyte is staged. */
  afterCall(): void {
    if (this.state[CaptureWord.AT] >= FLUSH_AT) this.flush(false);
  }

  /** Hands over what is staged; the last call (done) stops the timer. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.state[CaptureWord.DONE] = 1;
    clearInterval(this.timer);
    this.flush(true);
  }

  private flush(done: boolean): void {
    const at = this.state[CaptureWord.AT];
    if (at === 0 && !done) return;
    const out = this.buf.slice(0, at);
    const packets = this.state[CaptureWord.PENDING];
    this.state[CaptureWord.AT] = 0;
    this.state[CaptureWord.PENDING] = 0;
    this.sink(out, packets, done);
  }
}
