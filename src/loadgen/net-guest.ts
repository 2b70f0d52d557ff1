// A virtio-net "guest" made of our frontend: one queue pair, RX buffers kept posted,
// frames sent with a virtio_net_hdr and received whole (mergeable buffers joined).
// For switch tests and benchmarks without a VM.
import { FRONTEND_UVA_BASE, VhostUserFrontend, type FrontendQueue } from '../vhost-user/frontend.js';
import { NetFeature } from '../virtio/net.js';
import { DeviceStatus, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../virtio/features.js';
import { ProtocolFeature, Req, memTable } from '../vhost-user/protocol.js';
import { NET_HDR_SIZE } from '../virtio/net-frames.js';

export interface NetGuestOptions {
  packed?: boolean;
  mergeable?: boolean;
  queueSize?: number;
  /** RX buffer size (default 2048; small with mergeable to exercise num_buffers) */
  rxBufferSize?: number;
  rxBuffers?: number;
  memoryBytes?: number;
  /** largest frame send() takes (default 9216) */
  maxFrame?: number;
  /** extra virtio-net feature bits to negotiate (offloads: CSUM, GUEST_TSO4, ...) */
  extraFeatures?: bigint;
  /** guest memory in a plain file at this path, or in a memfd that cannot be sealed ('unsealed') */
  memoryFile?: string;
}

export class NetGuest {
  readonly fe: VhostUserFrontend;
  rx!: FrontendQueue;
  tx!: FrontendQueue;
  private readonly o: Required<NetGuestOptions>;
  /** RX buffer slots (gpa) reused for the whole run */
  private rxSlots: number[] = [];
  private freeRx: number[] = [];
  private txSlots: number[] = [];
  private freeTx: number[] = [];
  private readonly txSlotOf = new Map<number, number>();
  private readonly rxSlotOf = new Map<number, number>();

  private constructor(fe: VhostUserFrontend, o: NetGuestOptions) {
    this.fe = fe;
    this.o = {
      packed: o.packed ?? false,
      mergeable: o.mergeable ?? true,
      queueSize: o.queueSize ?? 256,
      rxBufferSize: o.rxBufferSize ?? 2048,
      rxBuffers: o.rxBuffers ?? 128,
      memoryBytes: o.memoryBytes ?? 16 << 20,
      maxFrame: o.maxFrame ?? 9216,
      extraFeatures: o.extraFeatures ?? 0n,
      memoryFile: o.memoryFile ?? '',
    };
  }

  static async connect(socket: string, o: NetGuestOptions = {}): Promise<NetGuest> {
    const g = new NetGuest(await VhostUserFrontend.connect(socket), o);
    await g.setup();
    return g;
  }

  private async setup(): Promise<void> {
    const o = this.o;
    const want =
      bit(VIRTIO_F_VERSION_1) |
      bit(VHOST_USER_F_PROTOCOL_FEATURES) |
      bit(VIRTIO_RING_F_EVENT_IDX) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      (o.packed ? bit(VIRTIO_F_RING_PACKED) : 0n) |
      (o.mergeable ? bit(NetFeature.MRG_RXBUF) : 0n) |
      o.extraFeatures;
    await this.fe.negotiate({ features: want });
    const file = o.memoryFile;
    await this.fe.setupMemory(o.memoryBytes, file === 'unsealed' ? { sealing: false } : file ? { file } : {});
    const alloc = this.fe.alloc!;
    for (let i = 0; i < o.rxBuffers; i++) this.rxSlots.push(alloc.alloc(o.rxBufferSize, 64));
    for (let i = 0; i < Math.min(o.queueSize, 128); i++) this.txSlots.push(alloc.alloc(NET_HDR_SIZE + o.maxFrame, 64));
    await this.startQueues();
  }

  /** Starts both queues on fresh rings (the buffer slots are kept) and posts the RX buffers. */
  private async startQueues(): Promise<void> {
    const o = this.o;
    this.rx = await this.fe.startQueue(0, { size: o.queueSize });
    this.tx = await this.fe.startQueue(1, { size: o.queueSize });
    if (this.fe.protocolFeatures & bit(ProtocolFeature.STATUS)) {
      await this.fe.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
    }
    this.freeRx = [...this.rxSlots];
    this.freeTx = [...this.txSlots];
    this.rxSlotOf.clear();
    this.txSlotOf.clear();
    this.refillRx();
  }

  /**
   * Resets the device on the same connection, as a rebooting guest's QEMU does: both rings
   * stopped (GET_VRING_BASE), SET_STATUS 0 (or RESET_DEVICE), features, the memory table
   * again, fresh rings. Frames in flight are dropped, as on real hardware.
   */
  async reset(): Promise<void> {
    await this.fe.stopQueue(0);
    await this.fe.stopQueue(1);
    if (this.fe.protocolFeatures & bit(ProtocolFeature.STATUS)) await this.fe.setStatus(0);
    else await this.fe.request(Req.RESET_DEVICE, undefined, { ack: true });
    await this.fe.setFeatures(this.fe.features);
    await this.resendMemTable();
    // Rings go to new memory each time (the slots stay): a reset loop needs a few KiB a round.
    await this.startQueues();
  }

  /** Sends SET_MEM_TABLE again with the same region, as QEMU does when guest memory changes. */
  async resendMemTable(): Promise<void> {
    const fd = (this.fe as unknown as { memFd: number }).memFd;
    await this.fe.request(Req.SET_MEM_TABLE, memTable.encode([{ gpa: 0n, size: BigInt(this.o.memoryBytes), uva: FRONTEND_UVA_BASE, mmapOffset: 0n }]), { fds: [fd], ack: true });
  }

  /** Posts every free RX buffer. */
  refillRx(): void {
    let added = 0;
    while (this.freeRx.length > 0 && this.rx.driver.outstanding < this.o.queueSize) {
      const addr = this.freeRx.pop()!;
      try {
        const id = this.rx.driver.add([{ len: this.o.rxBufferSize, writable: true, addr }]);
        this.rxSlotOf.set(id, addr);
        added++;
      } catch {
        this.freeRx.push(addr);
        break;
      }
    }
    if (added) {
      this.rx.driver.publish();
      this.rx.kick();
    }
  }

  /** Sends frames (a zeroed virtio_net_hdr is prepended); returns how many were queued. */
  send(frames: Uint8Array[], hdr?: Uint8Array): number {
    this.reapTx();
    let n = 0;
    for (const f of frames) {
      if (f.length > this.o.maxFrame) throw new RangeError(`frame of ${f.length} bytes, maxFrame is ${this.o.maxFrame}`);
      const addr = this.freeTx.pop();
      if (addr === undefined) break;
      const data = new Uint8Array(NET_HDR_SIZE + f.length);
      if (hdr) data.set(hdr.subarray(0, NET_HDR_SIZE));
      data.set(f, NET_HDR_SIZE);
      this.fe.memory!.write(BigInt(addr), data);
      try {
        const id = this.tx.driver.add([{ len: data.length, writable: false, addr }]);
        this.txSlotOf.set(id, addr);
        n++;
      } catch {
        this.freeTx.push(addr);
        break;
      }
    }
    if (n) this.tx.publishAndKick();
    return n;
  }

  /** Takes back TX buffers the device has consumed. */
  reapTx(): number {
    const used = this.tx.driver.used();
    for (const u of used) {
      const a = this.txSlotOf.get(u.id);
      if (a !== undefined) {
        this.txSlotOf.delete(u.id);
        this.freeTx.push(a);
      }
    }
    return used.length;
  }

  /** Frames received so far (waits up to timeoutMs for at least `min`). */
  async receive(min = 1, timeoutMs = 3000): Promise<Array<{ hdr: Uint8Array; frame: Uint8Array }>> {
    const out: Array<{ hdr: Uint8Array; frame: Uint8Array }> = [];
    const parts: Uint8Array[] = [];
    let want = 0;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const used = this.rx.driver.used();
      for (const u of used) {
        const addr = this.rxSlotOf.get(u.id)!;
        this.rxSlotOf.delete(u.id);
        const bytes = this.fe.memory!.read(BigInt(addr), u.len);
        this.freeRx.push(addr);
        if (want === 0) want = bytes[10] | (bytes[11] << 8) || 1;
        parts.push(bytes);
        if (parts.length === want) {
          const all = Buffer.concat(parts);
          out.push({ hdr: new Uint8Array(all.subarray(0, NET_HDR_SIZE)), frame: new Uint8Array(all.subarray(NET_HDR_SIZE)) });
          parts.length = 0;
          want = 0;
        }
      }
      if (used.length) this.refillRx();
      if (out.length >= min || Date.now() > deadline) return out;
      await this.rx.waitCall(Math.max(1, Math.min(50, deadline - Date.now())));
    }
  }

  close(): void {
    this.fe.close();
  }
}
