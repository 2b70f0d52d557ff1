// virtio-net over vhost-user (virtio 1.2 §5.1) for a switch port: features, config space,
// queue pairs. The queues themselves are served by a data plane (the switch's), which this
// device hands them to (on its thread) and takes them back from (port-dataplane.ts).
import { bit, has, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VirtioDeviceId } from '../../virtio/features.js';
import { NetFeature } from '../../virtio/net.js';
import { ProtocolFeature } from '../../vhost-user/protocol.js';
import type { QueueContext, VhostUserDevice } from '../../vhost-user/device.js';
import type { GuestMemory } from '../../native/guest-memory.js';
import type { NetPortDataplane } from './port-dataplane.js';
import { log as rootLog, type Logger } from '../../log.js';
import { RxOffload } from '../../native/net.js';
import { handOver } from '../../native/parked.js';
import { macBytes } from '../../virtio/net-frames.js';

export interface NetDeviceOptions {
  /** MAC address in the config space (QEMU uses its own -device mac=) */
  mac: string;
  /** MTU offered with VIRTIO_NET_F_MTU (default 1500) */
  mtu?: number;
  /** queue pairs (VIRTIO_NET_F_MQ above 1; default 1) */
  queuePairs?: number;
  /** offer the packed ring (default true) */
  packed?: boolean;
  /** offer checksum and TSO offloads both ways (default true) */
  offloads?: boolean;
  maxQueueSize?: number;
  /** where the device logs what its data plane refused (default: the root logger, component net) */
  log?: Logger;
}

const VIRTIO_NET_S_LINK_UP = 1;
const VIRTIO_NET_S_ANNOUNCE = 2;

export class NetDevice implements VhostUserDevice {
  readonly kind = 'net';
  readonly deviceId = VirtioDeviceId.NET;
  readonly handlesKicks = true;
  readonly completesInOrder = true;
  readonly features: bigint;
  readonly protocolFeatures = bit(ProtocolFeature.MTU) | bit(ProtocolFeature.RARP);
  readonly numQueues: number;
  readonly maxQueueSize: number;
  private negotiated = 0n;
  private memory: GuestMemory | null = null;
  private started = 0;
  mtu: number;
  /** The MTU the port was made with: what a new frontend starts from (NET_SET_MTU changes `mtu`). */
  private readonly configuredMtu: number;
  readonly mac: Uint8Array;
  private readonly log: Logger;

  constructor(
    private readonly dataplane: NetPortDataplane,
    opts: NetDeviceOptions,
  ) {
    const pairs = opts.queuePairs ?? 1;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > 128) throw new RangeError(`queue pairs ${pairs}: expected 1..128`);
    this.mac = macBytes(opts.mac);
    this.log = opts.log ?? rootLog.child({ component: 'net' });
    this.mtu = opts.mtu ?? 1500;
    this.configuredMtu = this.mtu;
    this.numQueues = 2 * pairs;
    this.maxQueueSize = opts.maxQueueSize ?? 32768;
    this.features =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_RING_F_EVENT_IDX) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      (opts.packed === false ? 0n : bit(VIRTIO_F_RING_PACKED)) |
      bit(NetFeature.MRG_RXBUF) |
      bit(NetFeature.MAC) |
      bit(NetFeature.STATUS) |
      bit(NetFeature.MTU) |
      (pairs > 1 ? bit(NetFeature.MQ) : 0n) |
      (opts.offloads === false
        ? 0n
        : bit(NetFeature.CSUM) |
          bit(NetFeature.GUEST_CSUM) |
          bit(NetFeature.HOST_TSO4) |
          bit(NetFeature.HOST_TSO6) |
          bit(NetFeature.HOST_ECN) |
          bit(NetFeature.GUEST_TSO4) |
          bit(NetFeature.GUEST_TSO6) |
          bit(NetFeature.GUEST_ECN));
  }

  /** What the guest takes as is (RxOffload bits from its GUEST_* features). */
  get rxOffloads(): number {
    const f = this.negotiated;
    return (
      (has(f, NetFeature.GUEST_CSUM) ? RxOffload.CSUM : 0) |
      (has(f, NetFeature.GUEST_TSO4) ? RxOffload.TSO4 : 0) |
      (has(f, NetFeature.GUEST_TSO6) ? RxOffload.TSO6 : 0) |
      (has(f, NetFeature.GUEST_ECN) ? RxOffload.ECN : 0) |
      (has(f, NetFeature.GUEST_UFO) ? RxOffload.UFO : 0)
    );
  }

  /** Whether the guest's TX headers may ask for offloads (it negotiated CSUM). */
  get txOffloads(): boolean {
    return has(this.negotiated, NetFeature.CSUM);
  }

  /** struct virtio_net_config: mac, status, max_virtqueue_pairs, mtu. */
  configSpace(): Uint8Array {
    const b = new Uint8Array(12);
    const v = new DataView(b.buffer);
    b.set(this.mac, 0);
    v.setUint16(6, VIRTIO_NET_S_LINK_UP, true);
    v.setUint16(8, this.numQueues / 2, true);
    v.setUint16(10, this.mtu, true);
    return b;
  }

  setConfig(): boolean {
    return false; // virtio-net's config space is read-only for the driver
  }

  featuresNegotiated(f: bigint): void {
    this.negotiated = f;
  }

  /** virtio_net_hdr length: 12 with VERSION_1 or MRG_RXBUF, else 10. */
  get hdrLen(): number {
    return has(this.negotiated, VIRTIO_F_VERSION_1) || has(this.negotiated, NetFeature.MRG_RXBUF) ? 12 : 10;
  }

  queueStart(q: QueueContext): void {
    if (this.memory !== q.memory) {
      this.memory = q.memory;
      void handOver(q.memory.park(), (token) => this.dataplane.setMemory(token)).catch((e) => q.fail(e as Error));
    }
    this.started++;
    void handOver(q.vq.park(), (token) =>
      this.dataplane.startQueue({
        index: q.index,
        layout: q.layout,
        size: q.size,
        token,
        kickFd: q.kickFd,
        hdrLen: this.hdrLen,
        mergeable: has(this.negotiated, NetFeature.MRG_RXBUF),
        rxOffloads: this.rxOffloads,
        txOffloads: this.txOffloads,
        mtu: this.dataplaneMtu,
      }),
    ).catch((e) => q.fail(e as Error));
  }

  queueKick(): void {
    // kicks are watched by the data plane (handlesKicks)
  }

  async queueStop(q: QueueContext): Promise<void> {
    this.started = Math.max(0, this.started - 1);
    await this.dataplane.stopQueue(q.index);
    if (this.started === 0) this.memory = null;
  }

  pauseQueues(): Promise<void> {
    return this.dataplane.pause();
  }

  resumeQueues(): void {
    void this.dataplane.resume();
  }

  memoryChanged(memory: GuestMemory): void {
    this.memory = memory;
    void handOver(memory.park(), (token) => this.dataplane.setMemory(token)).catch((e) => this.log.error('data plane refused the new memory table', { error: (e as Error).message }));
  }

  reset(): void {
    this.negotiated = 0n;
    this.mtu = this.configuredMtu;
    // The data plane holds its own mapping of the guest's memory: release it now, or a
    // departed guest's RAM stays mapped (and allocated) until the next guest connects.
    void this.dataplane.releaseMemory().catch((e) => this.log.warn('data plane did not release the guest memory', { error: (e as Error).message }));
    this.memory = null;
    this.started = 0;
  }

  /** The limit the data plane applies: the MTU if the guest negotiated VIRTIO_NET_F_MTU, else none. */
  private get dataplaneMtu(): number {
    return has(this.negotiated, NetFeature.MTU) ? this.mtu : 0;
  }

  /**
   * NET_SET_MTU. Before the rings start it is taken at queueStart; with rings running the
   * data plane is told now (worker thread included), and the REPLY_ACK waits for it, so a
   * frame the frontend sends after the ack is already judged by the new MTU.
   */
  setMtu(mtu: number): boolean | Promise<boolean> {
    if (mtu < 68 || mtu > 65535) return false;
    this.mtu = mtu;
    if (this.started === 0) return true;
    return this.dataplane.setMtu(this.dataplaneMtu).then(
      () => true,
      () => false,
    );
  }

  sendRarp(mac: Uint8Array): void {
    void this.dataplane.inject(rarpFrame(mac)).catch((e) => this.log.warn('RARP announcement not sent', { error: (e as Error).message }));
  }
}

/** A RARP "request reverse" broadcast from `mac` (what QEMU sends after migration), 60 bytes. */
export function rarpFrame(mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(60);
  f.fill(0xff, 0, 6);
  f.set(mac.subarray(0, 6), 6);
  f[12] = 0x80;
  f[13] = 0x35; // ETH_P_RARP
  const v = new DataView(f.buffer);
  v.setUint16(14, 1); // htype Ethernet
  v.setUint16(16, 0x0800); // ptype IPv4
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, 3); // reverse request
  f.set(mac.subarray(0, 6), 22); // sha
  f.set(mac.subarray(0, 6), 32); // tha
  return f;
}

export { VIRTIO_NET_S_ANNOUNCE };
