// A dataplane hook: TypeScript that sees each burst a guest sends before it is switched,
// and may drop frames, send them to a port of its choosing, or edit them in place. It runs
// on the data-plane thread between the pop and the forwarder's native call; bursts of
// ports without a hook never reach JavaScript.
import { netPeek } from '../native/net.js';
import type { Virtqueue } from '../native/virtqueue.js';

/** Where a packet goes, as the hook sets it: keep switching, drop, or a port id. */
export const Verdict = { SWITCH: -1, DROP: -2 } as const;

/** A burst as a dataplane hook sees it: arrays indexed by packet, reused for every burst. */
export interface PacketBurst {
  /** packets in this burst */
  readonly n: number;
  /** ingress port id and name */
  readonly port: number;
  readonly portName: string;
  /** first 64 bytes of each frame: packet i at heads[i*64 ...] (a copy; see frame()) */
  readonly heads: Uint8Array;
  /** frame lengths */
  readonly lens: Uint32Array;
  /** per packet: Verdict.SWITCH (default), Verdict.DROP, or a port id to send it to */
  readonly verdict: Int32Array;
  /** Zero-copy views of packet i's frame in the sender's memory (for in-place edits). */
  frame(i: number): Uint8Array[];
  /** After editing frames in place: a no-op kept for hooks that call it (the switch reads every frame after the hook). */
  reread(): void;
  /** Looks up a port id by name (-1 if none). */
  portId(name: string): number;
}
export type BurstHook = (b: PacketBurst) => void;

const HEAD = 64;

/** Runs a hook over popped bursts: one reusable PacketBurst, verdicts for the forwarder. */
export class HookRunner {
  readonly verdict: Int32Array;
  private readonly view: { -readonly [K in keyof PacketBurst]: PacketBurst[K] };
  private vq: Virtqueue | null = null;

  constructor(
    private readonly hook: BurstHook,
    burst: number,
    portId: (name: string) => number,
  ) {
    this.verdict = new Int32Array(burst);
    this.view = {
      n: 0,
      port: 0,
      portName: '',
      heads: new Uint8Array(burst * HEAD),
      lens: new Uint32Array(burst),
      verdict: this.verdict,
      frame: (i) => (this.vq ? this.vq.views(i) : []),
      reread: () => undefined,
      portId,
    };
  }

  /** The hook over n chains just popped from vq (port's TX queue); its verdicts are in `verdict`. */
  run(vq: Virtqueue, hdrLen: number, port: number, portName: string, n: number): void {
    const b = this.view;
    netPeek(vq, n, hdrLen, b.heads, HEAD, b.lens);
    this.verdict.fill(Verdict.SWITCH, 0, n);
    b.n = n;
    b.port = port;
    b.portName = portName;
    this.vq = vq;
    try {
      this.hook(b);
    } finally {
      this.vq = null;
    }
  }
}
