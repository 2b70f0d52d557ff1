// A vhost-user frontend (the driver side, like QEMU or DPDK virtio-user) in TypeScript:
// connects to any backend socket, negotiates, shares guest memory from a memfd, lays out
// split or packed rings with the spec-exact driver of src/virtio/driver.ts, kicks and
// waits for used buffers. Tests, benchmarks and `vhostkit probe` use it.
import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { GuestMemory, createMemfd } from '../native/guest-memory.js';
import { EventFd } from '../native/eventfd.js';
import { FdWatcher, connectUnix } from '../native/unix-socket.js';
import { BumpAllocator, PackedDriver, SplitDriver } from '../virtio/driver.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, bit, has } from '../virtio/features.js';
import type { RingLayout } from '../native/virtqueue.js';
import { MessageChannel, closeFds } from './channel.js';
import { FLAG_NEED_REPLY, FLAG_REPLY, ProtocolFeature, Req, configSpace, memTable, reqName, singleRegion, u64, vringAddr, vringFile, vringState, type MemRegion, type Message } from './protocol.js';

/** Frontend-virtual address at which our memory "lives" (any value works; backends translate). */
export const FRONTEND_UVA_BASE = 0x7f0000000000n;

export interface FrontendOptions {
  /** ms to wait for each reply (default 5000) */
  timeoutMs?: number;
}

interface Pending {
  request: number;
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface StartQueueOptions {
  size: number;
  /** default: packed if RING_PACKED was negotiated */
  layout?: RingLayout;
  /** no kick eventfd: ask the backend to poll (SET_VRING_KICK with the no-fd flag) */
  noKickFd?: boolean;
  /** send SET_VRING_ENABLE 1 when PROTOCOL_FEATURES was negotiated (default true) */
  enable?: boolean;
  /** SET_VRING_BASE value (default: 0 / packed wrap counters set) */
  base?: number;
  /**
   * Rings already laid out in this frontend's memory (e.g. by the queue of a frontend whose
   * memory was taken over with takeMemory): started where they are instead of new ones.
   */
  driver?: SplitDriver | PackedDriver;
}

/** A started queue from the driver's side. */
export class FrontendQueue {
  private watcher: FdWatcher | null = null;
  private waiters: Array<() => void> = [];

  constructor(
    readonly index: number,
    readonly layout: RingLayout,
    readonly driver: SplitDriver | PackedDriver,
    readonly kickFd: EventFd | null,
    readonly callFd: EventFd,
  ) {}

  /** Notifies the backend (writes the kick eventfd). */
  kick(): void {
    this.kickFd?.write(1n);
  }

  /** Publishes added chains and kicks. */
  publishAndKick(): void {
    this.driver.publish();
    this.kick();
  }

  /**
   * Waits until the device has returned at least `count` chains in total since this call
   * (woken by the call eventfd, with a poll as a safety net), and returns them.
   */
  async waitUsed(count = 1, timeoutMs = 5000): Promise<Array<{ id: number; len: number }>> {
    const got: Array<{ id: number; len: number }> = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const u of this.driver.used()) got.push({ id: u.id, len: u.len });
      if (got.length >= count) return got;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`queue ${this.index}: ${got.length} of ${count} used buffers after ${timeoutMs} ms`);
      await this.waitCall(Math.min(left, 50));
    }
  }

  /**
   * Asks for a call on the next used buffer (with EVENT_IDX: used_event = what the driver
   * has consumed, as Linux's virtqueue_enable_cb does) and waits for it, at most `ms`.
   * Consumes nothing: read the ring with driver.used() after.
   */
  async waitCall(ms: number): Promise<void> {
    if (this.driver instanceof SplitDriver && this.driver.eventIdx) {
      this.driver.setUsedEvent(this.driver.lastUsedIdx);
      if (this.driver.usedIdx !== this.driver.lastUsedIdx) return; // already there
    }
    await this.wake(ms);
  }

  private wake(ms: number): Promise<void> {
    if (this.watcher === null) {
      this.watcher = new FdWatcher(this.callFd.fd, () => {
        this.callFd.read();
        const w = this.waiters.splice(0);
        for (const f of w) f();
      });
    }
    this.watcher.start(true, false);
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this; // eslint-disable-line @typescript-eslint/no-this-alias
      function done(): void {
        clearTimeout(t);
        self.waiters = self.waiters.filter((f) => f !== done);
        if (self.waiters.length === 0) self.watcher?.stop();
        resolve();
      }
      this.waiters.push(done);
    });
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    this.kickFd?.close();
    this.callFd.close();
  }
}

export class VhostUserFrontend {
  private readonly ch: MessageChannel;
  private readonly pending: Pending[] = [];
  private closedReason: string | null = null;
  private readonly timeoutMs: number;
  features = 0n;
  protocolFeatures = 0n;
  /** what GET_FEATURES / GET_PROTOCOL_FEATURES said */
  offered = { features: 0n, protocolFeatures: 0n };
  memory: GuestMemory | null = null;
  alloc: BumpAllocator | null = null;
  private memFd = -1;
  /** the fd of the guest memory setupMemory made (-1 before; owned by the frontend) */
  get memoryFd(): number {
    return this.memFd;
  }
  readonly queues = new Map<number, FrontendQueue>();

  private constructor(fd: number, opts: FrontendOptions) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.ch = new MessageChannel(fd, {
      message: (m) => this.onMessage(m),
      closed: (reason, err) => {
        this.closedReason = err ? `${reason}: ${err.message}` : reason;
        for (const p of this.pending.splice(0)) {
          clearTimeout(p.timer);
          p.reject(new Error(`connection closed (${this.closedReason}) while waiting for the reply to ${reqName(p.request)}`));
        }
      },
    });
  }

  /** Connects to a backend listening on `path`. */
  static async connect(path: string, opts: FrontendOptions = {}): Promise<VhostUserFrontend> {
    return new VhostUserFrontend(connectUnix(path), opts);
  }

  /** Wraps an already connected socket fd (e.g. one a backend connected to, in client mode). */
  static fromFd(fd: number, opts: FrontendOptions = {}): VhostUserFrontend {
    return new VhostUserFrontend(fd, opts);
  }

  get closed(): boolean {
    return this.ch.closed;
  }

  get closeReason(): string | null {
    return this.closedReason;
  }

  private onMessage(m: Message): void {
    closeFds(m.fds.slice(1)); // a reply carries at most one fd (GET_INFLIGHT_FD)
    const p = this.pending[0];
    if (!(m.flags & FLAG_REPLY) || p === undefined || p.request !== m.request) {
      closeFds(m.fds);
      this.ch.close(`unexpected ${reqName(m.request)} from the backend`);
      return;
    }
    this.pending.shift();
    clearTimeout(p.timer);
    p.resolve(m);
  }

  /**
   * Sends one request. `reply: true` waits for the reply payload (requests that have
   * one); `ack: true` sets NEED_REPLY and waits for the REPLY_ACK u64 (throws if non-zero).
   */
  async request(req: Req, payload: Uint8Array = new Uint8Array(0), o: { fds?: number[]; reply?: boolean; ack?: boolean } = {}): Promise<Message | null> {
    if (this.ch.closed) throw new Error(`connection closed (${this.closedReason}) before ${reqName(req)}`);
    const ack = o.ack === true && !o.reply && (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
    const wait = o.reply === true || ack;
    const p = wait
      ? new Promise<Message>((resolve, reject) => {
          const timer = setTimeout(() => {
            const i = this.pending.findIndex((x) => x.timer === timer);
            if (i >= 0) this.pending.splice(i, 1);
            reject(new Error(`no reply to ${reqName(req)} within ${this.timeoutMs} ms: is this a vhost-user backend?`));
            this.ch.close('reply timeout');
          }, this.timeoutMs);
          this.pending.push({ request: req, resolve, reject, timer });
        })
      : null;
    this.ch.send(req, ack ? FLAG_NEED_REPLY : 0, payload, o.fds ?? []);
    if (p === null) return null;
    const m = await p;
    if (ack) {
      const r = u64.decode(m.payload, `${reqName(req)} reply`);
      if (r !== 0n) throw new Error(`${reqName(req)} failed: the backend answered ${r}`);
    }
    return m;
  }

  private async u64Reply(req: Req): Promise<bigint> {
    const m = await this.request(req, undefined, { reply: true });
    return u64.decode(m!.payload, `${reqName(req)} reply`);
  }

  getFeatures(): Promise<bigint> {
    return this.u64Reply(Req.GET_FEATURES);
  }
  getProtocolFeatures(): Promise<bigint> {
    return this.u64Reply(Req.GET_PROTOCOL_FEATURES);
  }
  getQueueNum(): Promise<bigint> {
    return this.u64Reply(Req.GET_QUEUE_NUM);
  }
  getMaxMemSlots(): Promise<bigint> {
    return this.u64Reply(Req.GET_MAX_MEM_SLOTS);
  }
  getStatus(): Promise<bigint> {
    return this.u64Reply(Req.GET_STATUS);
  }
  async setFeatures(f: bigint): Promise<void> {
    await this.request(Req.SET_FEATURES, u64.encode(f), { ack: true });
    this.features = f;
  }
  async setProtocolFeatures(f: bigint): Promise<void> {
    await this.request(Req.SET_PROTOCOL_FEATURES, u64.encode(f));
    this.protocolFeatures = f;
  }
  async setOwner(): Promise<void> {
    await this.request(Req.SET_OWNER, undefined, { ack: true });
  }
  async setStatus(status: number): Promise<void> {
    await this.request(Req.SET_STATUS, u64.encode(BigInt(status)), { ack: true });
  }

  /** GET_CONFIG; resolves with the bytes, or null when the backend answers with an empty payload (error). */
  async getConfig(offset: number, size: number): Promise<Uint8Array | null> {
    const m = await this.request(Req.GET_CONFIG, configSpace.encode({ offset, size, flags: 0, data: new Uint8Array(size) }), { reply: true });
    if (m!.payload.length === 0) return null;
    return configSpace.decode(m!.payload).data.slice();
  }

  async setConfig(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    await this.request(Req.SET_CONFIG, configSpace.encode({ offset, size: data.length, flags, data }), { ack: true });
  }

  /**
   * The usual opening: GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, then
   * SET_FEATURES with what both sides support (`want` masks each side's offer).
   */
  async negotiate(want: { features?: bigint; protocolFeatures?: bigint } = {}): Promise<void> {
    this.offered.features = await this.getFeatures();
    if (has(this.offered.features, VHOST_USER_F_PROTOCOL_FEATURES)) {
      this.offered.protocolFeatures = await this.getProtocolFeatures();
      await this.setProtocolFeatures(this.offered.protocolFeatures & (want.protocolFeatures ?? ~0n));
    }
    await this.setOwner();
    await this.setFeatures(this.offered.features & (want.features ?? ~0n));
  }

  /**
   * Creates `bytes` of shared guest memory (one memfd region at gpa 0) and sends
   * SET_MEM_TABLE. `o.file`: a plain file at that path instead (created or cut to `bytes`,
   * as QEMU's memory-backend-file); `o.sealing` false: a memfd that cannot be sealed. Either
   * can be truncated under the backend (tests of the SIGBUS guard).
   */
  async setupMemory(bytes: number, o: { file?: string; sealing?: boolean } = {}): Promise<GuestMemory> {
    let fd: number;
    if (o.file !== undefined) {
      fd = openSync(o.file, 'w+', 0o600);
      try {
        ftruncateSync(fd, bytes);
      } catch (e) {
        closeSync(fd);
        throw e;
      }
    } else {
      fd = createMemfd('vhostkit-frontend', bytes, o.sealing ?? true);
    }
    const region: MemRegion = { gpa: 0n, size: BigInt(bytes), uva: FRONTEND_UVA_BASE, mmapOffset: 0n };
    this.memory = GuestMemory.map([{ fd, ...region }]);
    this.memFd = fd;
    this.alloc = new BumpAllocator(0, bytes);
    await this.request(Req.SET_MEM_TABLE, memTable.encode([region]), { fds: [fd], ack: true });
    return this.memory;
  }

  /**
   * Takes over `prev`'s guest memory (its memfd and mapping; prev no longer owns them) and
   * sends SET_MEM_TABLE: a frontend reconnecting to a restarted backend, as QEMU does, with
   * the guest and its rings where they were.
   */
  async takeMemory(prev: VhostUserFrontend): Promise<GuestMemory> {
    if (prev.memory === null || prev.alloc === null || prev.memFd < 0) throw new Error('takeMemory: the other frontend has no memory');
    this.memory = prev.memory;
    this.alloc = prev.alloc;
    this.memFd = prev.memFd;
    prev.memory = null;
    prev.alloc = null;
    prev.memFd = -1;
    const r = this.memory.regions[0];
    const region: MemRegion = { gpa: 0n, size: r.size, uva: FRONTEND_UVA_BASE, mmapOffset: 0n };
    await this.request(Req.SET_MEM_TABLE, memTable.encode([region]), { fds: [this.memFd], ack: true });
    return this.memory;
  }

  /** Adds a region (ADD_MEM_REG) backed by a new memfd at `gpa`; returns its fd (kept open). */
  async addRegion(gpa: bigint, bytes: number): Promise<{ fd: number; region: MemRegion }> {
    const fd = createMemfd('vhostkit-frontend-extra', bytes);
    const region: MemRegion = { gpa, size: BigInt(bytes), uva: FRONTEND_UVA_BASE + gpa, mmapOffset: 0n };
    await this.request(Req.ADD_MEM_REG, singleRegion.encode(region), { fds: [fd], ack: true });
    return { fd, region };
  }

  async removeRegion(region: MemRegion): Promise<void> {
    await this.request(Req.REM_MEM_REG, singleRegion.encode(region), { ack: true });
  }

  /** SET_VRING_NUM/BASE/ADDR/CALL/KICK (and ENABLE): the queue starts. */
  async startQueue(index: number, o: StartQueueOptions): Promise<FrontendQueue> {
    if (this.memory === null || this.alloc === null) throw new Error('startQueue before setupMemory');
    const layout = o.layout ?? (has(this.features, VIRTIO_F_RING_PACKED) ? 'packed' : 'split');
    const common = { mem: this.memory.view(0), base: 0, size: o.size, alloc: this.alloc, eventIdx: has(this.features, VIRTIO_RING_F_EVENT_IDX), inOrder: has(this.features, VIRTIO_F_IN_ORDER) };
    const driver = o.driver ?? (layout === 'split' ? new SplitDriver(common) : new PackedDriver(common));
    const uva = (gpa: number) => FRONTEND_UVA_BASE + BigInt(gpa);
    const [desc, avail, used] = driver instanceof SplitDriver ? [driver.descAddr, driver.availAddr, driver.usedAddr] : [driver.descAddr, driver.driverEventAddr, driver.deviceEventAddr];
    await this.request(Req.SET_VRING_NUM, vringState.encode({ index, num: o.size }), { ack: true });
    await this.request(Req.SET_VRING_BASE, vringState.encode({ index, num: o.base ?? (layout === 'packed' ? 0x80008000 : 0) }), { ack: true });
    await this.request(Req.SET_VRING_ADDR, vringAddr.encode({ index, flags: 0, desc: uva(desc), used: uva(used), avail: uva(avail), log: BigInt(used) }), { ack: true });
    const call = new EventFd();
    await this.request(Req.SET_VRING_CALL, vringFile.encode(index, false), { fds: [call.fd], ack: true });
    const kick = o.noKickFd ? null : new EventFd();
    await this.request(Req.SET_VRING_KICK, vringFile.encode(index, kick === null), { fds: kick ? [kick.fd] : [], ack: true });
    if ((o.enable ?? true) && has(this.features, VHOST_USER_F_PROTOCOL_FEATURES)) {
      await this.request(Req.SET_VRING_ENABLE, vringState.encode({ index, num: 1 }), { ack: true });
    }
    const q = new FrontendQueue(index, layout, driver, kick, call);
    this.queues.set(index, q);
    return q;
  }

  /** GET_VRING_BASE: the backend stops the ring and returns its state. */
  async stopQueue(index: number): Promise<number> {
    const m = await this.request(Req.GET_VRING_BASE, vringState.encode({ index, num: 0 }), { reply: true });
    const st = vringState.decode(m!.payload);
    if (st.index !== index) throw new Error(`GET_VRING_BASE reply for queue ${st.index}, asked ${index}`);
    this.queues.get(index)?.close();
    this.queues.delete(index);
    return st.num;
  }

  /**
   * Drops the connection (the queues' eventfds with it) and keeps the guest memory, for
   * another frontend to take over (takeMemory): what a backend sees when QEMU's side of
   * the socket goes, and what QEMU keeps when its backend dies.
   */
  disconnect(): void {
    for (const q of this.queues.values()) q.close();
    this.queues.clear();
    this.ch.close('frontend disconnected');
  }

  close(): void {
    for (const q of this.queues.values()) q.close();
    this.queues.clear();
    this.ch.close('frontend closed');
    this.memory?.close();
    this.memory = null;
    if (this.memFd >= 0) closeSync(this.memFd);
    this.memFd = -1;
  }
}
