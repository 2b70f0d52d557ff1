// A virtio-net port for benchmarks: a sink that takes every frame the driver sends and
// drops it, and optionally a generator that fills every receive buffer the driver gives
// with a fixed frame. The reference it is measured against is dpdk-testpmd's vhost PMD in
// rxonly / txonly mode. Queues are served by a Poller (busy, event or adaptive).
//
// Per burst: sink = one pop and one push (used length 0); generator = one native call that
// copies the burst's frames into receive buffers and pushes them.
import type { QueueContext, VhostUserDevice } from '../vhost-user/device.js';
import { bit, has, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VirtioDeviceId } from '../virtio/features.js';
import { NetFeature } from '../virtio/net.js';
import { DELIVER_STATS, DeliverStat, netDeliverFlat, type RxSide } from '../native/net.js';
import { Poller, type PollMode, type PollTarget } from '../dataplane/poller.js';
import { ethFrame, macBytes } from '../testing/net-frames.js';
import type { Virtqueue } from '../native/virtqueue.js';

export interface NetLoadOptions {
  /** fill the driver's receive buffers with frames (a traffic generator) */
  generate?: boolean;
  /** generated frame length in bytes (Ethernet header included, no FCS); default 64 */
  frameBytes?: number;
  poll?: PollMode;
  /** offer the packed ring (default true) */
  packed?: boolean;
  mac?: string;
  burst?: number;
}

export interface NetLoadCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  noBuffers: number;
}

export class NetLoadDevice implements VhostUserDevice {
  readonly kind = 'net';
  readonly deviceId = VirtioDeviceId.NET;
  readonly handlesKicks = true;
  readonly protocolFeatures = 0n;
  readonly numQueues = 2;
  readonly maxQueueSize = 32768;
  readonly features: bigint;
  /** rx: frames the driver sent us (its TX); tx: frames we put in its receive buffers */
  readonly counters: NetLoadCounters = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, noBuffers: 0 };
  readonly poller: Poller;
  private negotiated = 0n;
  private readonly mac: Uint8Array;
  private readonly targets = new Map<number, PollTarget>();
  private readonly frames: { data: Uint8Array; offsets: Uint32Array; lens: Uint32Array; n: number };
  private readonly stats = new Uint32Array(DELIVER_STATS);

  constructor(readonly opts: NetLoadOptions = {}) {
    this.poller = new Poller(opts.poll ?? 'event');
    this.mac = macBytes(opts.mac ?? '02:00:00:00:00:01');
    this.features =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_RING_F_EVENT_IDX) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      (opts.packed === false ? 0n : bit(VIRTIO_F_RING_PACKED)) |
      bit(NetFeature.MRG_RXBUF) |
      bit(NetFeature.MAC) |
      bit(NetFeature.STATUS);
    const len = opts.frameBytes ?? 64;
    if (!Number.isInteger(len) || len < 60 || len > 9000) throw new RangeError(`frame length ${len}: expected 60..9000`);
    const n = opts.burst ?? 32;
    const data = new Uint8Array(len * n);
    const offsets = new Uint32Array(n);
    const lens = new Uint32Array(n).fill(len);
    for (let i = 0; i < n; i++) {
      data.set(ethFrame('02:00:00:00:00:02', '02:00:00:00:00:01', len, i), i * len);
      offsets[i] = i * len;
    }
    this.frames = { data, offsets, lens, n };
  }

  configSpace(): Uint8Array {
    const b = new Uint8Array(10);
    b.set(this.mac, 0);
    b[6] = 1; // VIRTIO_NET_S_LINK_UP
    b[8] = 1; // max_virtqueue_pairs
    return b;
  }

  featuresNegotiated(f: bigint): void {
    this.negotiated = f;
  }

  private get hdrLen(): number {
    return has(this.negotiated, VIRTIO_F_VERSION_1) || has(this.negotiated, NetFeature.MRG_RXBUF) ? 12 : 10;
  }

  queueStart(q: QueueContext): void {
    const hdr = this.hdrLen;
    let t: PollTarget;
    if (q.index % 2 === 1) {
      t = { vq: q.vq, kickFd: q.kickFd, service: () => this.sink(q, hdr) };
    } else if (this.opts.generate) {
      const rx: RxSide = { q: q.vq, hdrLen: hdr, mergeable: has(this.negotiated, NetFeature.MRG_RXBUF) };
      t = { vq: q.vq, kickFd: q.kickFd, service: () => this.generate(q, rx) };
    } else {
      q.vq.setNotify(false); // a sink never fills receive buffers
      return;
    }
    this.targets.set(q.index, t);
    this.poller.add(t);
  }

  queueKick(): void {
    // the poller watches kick fds (handlesKicks)
  }

  queueStop(q: QueueContext): void {
    const t = this.targets.get(q.index);
    if (t) this.poller.remove(t);
    this.targets.delete(q.index);
  }

  reset(): void {
    for (const t of this.targets.values()) this.poller.remove(t);
    this.targets.clear();
    this.negotiated = 0n;
  }

  close(): void {
    this.poller.close();
  }

  private broken(q: QueueContext, vq: Virtqueue): void {
    const t = this.targets.get(q.index);
    if (t) this.poller.remove(t);
    this.targets.delete(q.index);
    q.fail(vq.error ?? 'queue broken');
  }

  private sink(q: QueueContext, hdr: number): number {
    const vq = q.vq;
    const n = vq.pop();
    if (n <= 0) {
      if (n < 0) this.broken(q, vq);
      return 0;
    }
    const b = vq.b;
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += b.readLen[i];
    b.usedId.set(b.head.subarray(0, n));
    b.usedLen.fill(0, 0, n);
    vq.push(n);
    this.counters.rxPackets += n;
    this.counters.rxBytes += bytes - n * hdr;
    return n;
  }

  private generate(q: QueueContext, rx: RxSide): number {
    const st = this.stats;
    const before = st[DeliverStat.DELIVERED];
    const noBuf = st[DeliverStat.NO_BUFFERS];
    const r = netDeliverFlat(rx, this.frames.data, this.frames.offsets, this.frames.lens, this.frames.n, null, st);
    if (r < 0) {
      this.broken(q, q.vq);
      return 0;
    }
    const sent = st[DeliverStat.DELIVERED] - before;
    this.counters.txPackets += sent;
    this.counters.txBytes += sent * this.frames.lens[0];
    this.counters.noBuffers += st[DeliverStat.NO_BUFFERS] - noBuf;
    // Counters are u32: reset them before they wrap.
    if (st[DeliverStat.DELIVERED] > 0x7fffffff) st.fill(0);
    return sent;
  }
}
