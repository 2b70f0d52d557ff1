// A virtio-blk load generator: our vhost-user frontend drives any vhost-user-blk backend
// (vhostkit, qemu-storage-daemon, ...) with random reads or writes at a fixed queue depth,
// as fio's randread/randwrite would from a guest, and reports IOPS and latency.
//
// It is a lean driver of its own over split rings: every request slot owns three
// descriptors (header, data, status) and its buffers for the whole run, so a request costs
// a header write, one avail ring entry and, when the backend asks for it (EVENT_IDX), a
// kick: avail idx is stored, then a full memory barrier, then avail_event is read, as Linux
// virtqueue_kick_prepare_split does, so no kick the backend waits for is skipped and no
// timer re-kicks. It polls the used rings and never asks for interrupts, so the backend's cost is
// what is measured. Run it pinned to a CPU of its own.
import { performance } from 'node:perf_hooks';
import { VhostUserFrontend, type FrontendQueue } from '../vhost-user/frontend.js';
import { SplitDriver } from '../virtio/driver.js';
import { BlkFeature } from '../virtio/blk.js';
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VHOST_USER_F_PROTOCOL_FEATURES, bit, has } from '../virtio/features.js';
import { ProtocolFeature } from '../vhost-user/protocol.js';
import { fullFence } from '../native/virtqueue.js';

export type BlkPattern = 'randread' | 'randwrite';

export interface BlkLoadOptions {
  socket: string;
  pattern: BlkPattern;
  /** requests in flight per queue */
  depth: number;
  queues: number;
  /** bytes per request (a multiple of 512) */
  blockSize: number;
  seconds: number;
  /** warm-up before measuring */
  warmupSeconds?: number;
  ringSize?: number;
  /** seed of the sector sequence */
  seed?: number;
}

export interface BlkLoadResult {
  pattern: BlkPattern;
  depth: number;
  queues: number;
  blockSize: number;
  requests: number;
  seconds: number;
  iops: number;
  /** latency percentiles, microseconds */
  p50us: number;
  p99us: number;
  errors: number;
}

const SECTOR = 512;
const F_NEXT = 1;
const F_WRITE = 2;
const T_IN = 0;
const T_OUT = 1;
const MAX_SAMPLES = 1 << 22;

/** Where a split ring's fields are, as a byte offset into the DataView of guest memory. */
export interface SplitRingAt {
  availAddr: number;
  usedAddr: number;
  size: number;
}

/**
 * Publishes a split ring's avail idx (`newIdx`, moved from `oldIdx`) and used_event, then
 * says whether the device asked for a kick (vring_need_event on avail_event, §2.7.10).
 * Between the stores and the avail_event load: a full barrier (`fence`), as Linux
 * virtio_mb() in virtqueue_kick_prepare_split. Without it the load may be satisfied before
 * the avail idx store leaves this CPU's store buffer: the backend, which writes avail_event,
 * fences and re-reads avail idx before it sleeps, sees the old idx while we see the old
 * avail_event, and neither side acts (a lost kick).
 */
export function publishSplitAvail(dv: DataView, ring: SplitRingAt, oldIdx: number, newIdx: number, usedEvent: number, fence: () => void = fullFence): boolean {
  dv.setUint16(ring.availAddr + 2, newIdx, true);
  dv.setUint16(ring.availAddr + 4 + 2 * ring.size, usedEvent, true);
  fence();
  const availEvent = dv.getUint16(ring.usedAddr + 4 + 8 * ring.size, true);
  return ((newIdx - availEvent - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

class LoadQueue {
  private readonly mask: number;
  private availIdx = 0;
  private lastUsed = 0;
  private readonly hdr: number[] = [];
  private readonly status: number[] = [];
  private readonly t0: Float64Array;

  constructor(
    private readonly q: FrontendQueue,
    private readonly mem: Uint8Array,
    private readonly dv: DataView,
    private readonly depth: number,
    private readonly write: boolean,
    private readonly blockSize: number,
    private readonly blocks: number,
    private rnd: number,
    alloc: (len: number, align: number) => number,
  ) {
    const d = q.driver as SplitDriver;
    this.mask = d.size - 1;
    this.t0 = new Float64Array(depth);
    for (let k = 0; k < depth; k++) {
      const hdr = alloc(16, 16);
      const data = alloc(blockSize, 4096);
      const st = alloc(1, 1);
      this.hdr.push(hdr);
      this.status.push(st);
      dv.setUint32(hdr, write ? T_OUT : T_IN, true);
      if (write) mem.fill((k * 37) & 0xff, data, data + blockSize);
      this.desc(3 * k, hdr, 16, F_NEXT, 3 * k + 1);
      this.desc(3 * k + 1, data, blockSize, F_NEXT | (write ? 0 : F_WRITE), 3 * k + 2);
      this.desc(3 * k + 2, st, 1, F_WRITE, 0);
    }
  }

  private get driver(): SplitDriver {
    return this.q.driver as SplitDriver;
  }

  private desc(i: number, addr: number, len: number, flags: number, next: number): void {
    const at = this.driver.descAddr + 16 * i;
    this.dv.setBigUint64(at, BigInt(addr), true);
    this.dv.setUint32(at + 8, len, true);
    this.dv.setUint16(at + 12, flags, true);
    this.dv.setUint16(at + 14, next, true);
  }

  /** xorshift32: the next block number. */
  private nextBlock(): number {
    let x = this.rnd;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rnd = x >>> 0;
    return this.rnd % this.blocks;
  }

  submit(k: number, now: number): void {
    const hdr = this.hdr[k];
    // The sector as two 32-bit halves: no BigInt allocated per request.
    const sector = (this.nextBlock() * this.blockSize) / SECTOR;
    this.dv.setUint32(hdr + 8, sector >>> 0, true);
    this.dv.setUint32(hdr + 12, Math.floor(sector / 0x100000000), true);
    this.mem[this.status[k]] = 0xff;
    const avail = this.driver.availAddr;
    this.dv.setUint16(avail + 4 + 2 * (this.availIdx & this.mask), 3 * k, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.t0[k] = now;
  }

  /** Publishes the avail idx and kicks if the backend asked for it. */
  publish(oldIdx: number): void {
    // Never interrupt us: used_event half the index space away.
    if (publishSplitAvail(this.dv, this.driver, oldIdx, this.availIdx, (this.lastUsed + 0x8000) & 0xffff)) this.q.kick();
  }

  get nextAvail(): number {
    return this.availIdx;
  }

  /** Completes what the backend returned; resubmits each slot at once. Returns completions. */
  reap(now: number, lat: Float64Array, counters: { samples: number; errors: number }): number {
    const used = this.driver.usedAddr;
    const usedIdx = this.dv.getUint16(used + 2, true);
    if (usedIdx === this.lastUsed) return 0;
    const old = this.availIdx;
    let n = 0;
    while (this.lastUsed !== usedIdx) {
      const id = this.dv.getUint32(used + 4 + 8 * (this.lastUsed & this.mask), true);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      const k = (id / 3) | 0;
      if (this.mem[this.status[k]] !== 0) counters.errors++;
      if (counters.samples < MAX_SAMPLES) lat[counters.samples++] = now - this.t0[k];
      this.submit(k, now);
      n++;
    }
    this.publish(old);
    return n;
  }
}

/** Connects, sets up `queues` split rings, runs the load, and reports. */
export async function runBlkLoad(o: BlkLoadOptions): Promise<BlkLoadResult> {
  if (o.blockSize % SECTOR !== 0 || o.blockSize <= 0) throw new RangeError(`block size ${o.blockSize}: a positive multiple of 512`);
  const ringSize = o.ringSize ?? 256;
  if (3 * o.depth > ringSize) throw new RangeError(`queue depth ${o.depth}: at most ${Math.floor(ringSize / 3)} with rings of ${ringSize}`);
  const fe = await VhostUserFrontend.connect(o.socket, { timeoutMs: 15000 });
  try {
    const want = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(BlkFeature.MQ) | bit(BlkFeature.BLK_SIZE);
    await fe.negotiate({ features: want, protocolFeatures: bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG) });
    if (!has(fe.features, VIRTIO_RING_F_EVENT_IDX)) throw new Error('the backend does not offer EVENT_IDX');
    if (o.queues > 1) {
      const n = Number(await fe.getQueueNum());
      if (n < o.queues) throw new Error(`the backend has ${n} queues, ${o.queues} asked`);
    }
    const cfg = await fe.getConfig(0, 8);
    if (cfg === null) throw new Error('the backend does not answer GET_CONFIG');
    const capacity = Number(new DataView(cfg.buffer, cfg.byteOffset, 8).getBigUint64(0, true));
    const blocks = Math.floor((capacity * SECTOR) / o.blockSize);
    if (blocks < 1) throw new Error(`the disk (${capacity} sectors) is smaller than one block`);
    const perQueue = o.depth * (o.blockSize + 4096 + 64) + 64 * 1024;
    const mem = await fe.setupMemory(Math.max(4 << 20, Math.ceil((o.queues * perQueue + (1 << 20)) / 4096) * 4096));
    const view = mem.view(0);
    const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
    const alloc = (len: number, align: number) => fe.alloc!.alloc(len, align);
    const lqs: LoadQueue[] = [];
    for (let i = 0; i < o.queues; i++) {
      const q = await fe.startQueue(i, { size: ringSize, layout: 'split' });
      lqs.push(new LoadQueue(q, view, dv, o.depth, o.pattern === 'randwrite', o.blockSize, blocks, ((o.seed ?? 1) * 2654435761 + i * 40503 + 1) >>> 0, alloc));
    }
    const lat = new Float64Array(MAX_SAMPLES);
    const counters = { samples: 0, errors: 0 };
    let now = performance.now();
    for (const lq of lqs) {
      const old = lq.nextAvail;
      for (let k = 0; k < o.depth; k++) lq.submit(k, now);
      lq.publish(old);
    }
    const warmEnd = now + 1000 * (o.warmupSeconds ?? 0.5);
    const end = warmEnd + 1000 * o.seconds;
    let measuring = false;
    let start = 0;
    let requests = 0;
    for (;;) {
      now = performance.now();
      if (!measuring && now >= warmEnd) {
        measuring = true;
        start = now;
        requests = 0;
        counters.samples = 0;
        counters.errors = 0;
      }
      if (now >= end) break;
      for (const lq of lqs) {
        requests += lq.reap(now, lat, counters);
      }
    }
    const elapsed = (now - start) / 1000;
    const samples = lat.subarray(0, counters.samples).sort();
    const pct = (p: number) => (samples.length ? samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] * 1000 : 0);
    return {
      pattern: o.pattern,
      depth: o.depth,
      queues: o.queues,
      blockSize: o.blockSize,
      requests,
      seconds: elapsed,
      iops: requests / elapsed,
      p50us: pct(0.5),
      p99us: pct(0.99),
      errors: counters.errors,
    };
  } finally {
    fe.close();
  }
}
