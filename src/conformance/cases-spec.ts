// The spec's rules, checked with a frontend that does everything right: negotiation,
// REPLY_ACK, GET_VRING_BASE, memory slots, config space, inflight area, STATUS, both ring
// layouts, EVENT_IDX in both directions, indirect descriptors. A rule whose feature the
// backend does not offer passes with "not offered".
import { fstatSync } from 'node:fs';
import { closeFd } from '../native/unix-socket.js';
import { FRONTEND_UVA_BASE } from '../vhost-user/frontend.js';
import { FLAG_REPLY, ProtocolFeature, Req, VERSION, configSpace, inflightArea, memTable, singleRegion, u64, vringState, type MemRegion } from '../vhost-user/protocol.js';
import {
  DeviceStatus,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../virtio/features.js';
import { PackedDriver, SplitDriver } from '../virtio/driver.js';
import { isEof } from './raw-frontend.js';
import { failed, passed, rejected, type ConformanceCase, type Outcome } from './case.js';
import { PartialGuest, SETUP_PROTOCOL_FEATURES, setupSteps } from './setup-steps.js';
import { NoAnswer, addWork, hasProto, hex, offers, refusedOr, runningQueue, sleep, usedWithin } from './helpers.js';
import { moveData } from './traffic.js';

const notOffered = (what: string): Outcome => passed(`not offered: ${what}`);

/** Bytes of one queue's inflight area (vhost-user.rst "Inflight I/O tracking"): split 16 + 16 per descriptor. */
const inflightSplitBytes = (queueSize: number): number => 16 + 16 * queueSize;

export const SPEC_CASES: ConformanceCase[] = [
  {
    name: 'get-features',
    group: 'negotiation',
    spec: 'GET_FEATURES is answered with the reply flag and a u64; a virtio 1.x device offers VIRTIO_F_VERSION_1 (vhost-user.rst; virtio 1.2 §6)',
    async run(ctx) {
      const raw = await ctx.raw();
      await raw.send(Req.GET_FEATURES, VERSION);
      const m = await raw.next(ctx.replyMs).catch(() => {
        throw new NoAnswer('no reply to GET_FEATURES');
      });
      if (isEof(m)) return failed('the backend closed the connection instead of answering GET_FEATURES');
      if (m.request !== Req.GET_FEATURES || (m.flags & 3) !== VERSION || !(m.flags & FLAG_REPLY)) return failed(`reply header: request ${m.request}, flags ${hex(m.flags)}`);
      if (m.payload.length !== 8) return failed(`reply payload of ${m.payload.length} bytes, expected 8`);
      const f = u64.decode(m.payload);
      if (!(f & bit(VIRTIO_F_VERSION_1))) return failed(`features ${hex(f)} lack VIRTIO_F_VERSION_1`);
      return passed(`features ${hex(f)}`);
    },
  },
  {
    name: 'qemu-order-setup',
    group: 'negotiation',
    spec: "The front-end's usual order (GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES, SET_MEM_TABLE, per queue SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE, SET_STATUS) is accepted, each message answered as asked",
    async run(ctx) {
      const fe = await ctx.frontend();
      const queues = ctx.type === 'net' ? 2 : 1;
      const g = new PartialGuest('split', queues);
      ctx.onDispose(() => g.close());
      const proto = ctx.offer.protocolFeatures & SETUP_PROTOCOL_FEATURES;
      const features = ctx.offer.features & (bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES));
      const steps = setupSteps(features, queues, 'split', proto);
      return refusedOr(async () => {
        for (const [name, step] of steps) {
          try {
            await step(fe, g);
          } catch (e) {
            return failed(`${name}: ${(e as Error).message}`);
          }
        }
        return passed(`${steps.length} messages accepted`);
      });
    },
  },
  {
    name: 'reply-ack-every-message',
    group: 'messages',
    spec: 'With REPLY_ACK negotiated, every request with NEED_REPLY set gets a reply: 0 on success, non-zero on failure (vhost-user.rst "REPLY_ACK")',
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.REPLY_ACK)) return notOffered('REPLY_ACK');
      const fe = await ctx.frontend();
      const queues = ctx.type === 'net' ? 2 : 1;
      const g = new PartialGuest('split', queues);
      ctx.onDispose(() => g.close());
      const proto = ctx.offer.protocolFeatures & SETUP_PROTOCOL_FEATURES;
      const steps = setupSteps(ctx.offer.features & (bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES)), queues, 'split', proto);
      let acked = 0;
      for (const [name, step] of steps) {
        try {
          await step(fe, g);
        } catch (e) {
          return failed(`${name}: ${(e as Error).message}`);
        }
        if (!name.startsWith('GET_') && name !== 'SET_PROTOCOL_FEATURES') acked++;
      }
      return passed(`${acked} requests with NEED_REPLY, each acked with 0`);
    },
  },
  {
    name: 'get-vring-base',
    group: 'rings',
    spec: 'GET_VRING_BASE stops the ring and replies with the next avail index the device would read: the number of chains it consumed (vhost-user.rst "GET_VRING_BASE"; virtio 1.2 §2.7)',
    async run(ctx) {
      const { fe, q } = await runningQueue(ctx);
      const n = 5;
      for (let i = 0; i < n; i++) addWork(ctx, q);
      q.publishAndKick();
      const got = await usedWithin(q, n, 3000);
      if (got < n) return failed(`only ${got} of ${n} chains came back before GET_VRING_BASE`);
      // Asked directly (not fe.stopQueue), so the kick eventfd stays ours to write.
      const m = await fe.request(Req.GET_VRING_BASE, vringState.encode({ index: q.index, num: 0 }), { reply: true });
      const base = vringState.decode(m!.payload).num;
      if (base !== n) return failed(`GET_VRING_BASE answered ${base} after ${n} chains were consumed`);
      // Stopped: a chain added now must stay in the ring.
      const d = q.driver as SplitDriver;
      addWork(ctx, q);
      d.publish();
      q.kickFd?.write(1n);
      await sleep(200);
      if (d.usedIdx !== n) return failed(`the ring went on after GET_VRING_BASE: used idx ${d.usedIdx}`);
      return passed(`answered ${base}, and the ring stopped`);
    },
  },
  {
    name: 'get-vring-base-packed',
    group: 'rings',
    spec: 'On a packed ring GET_VRING_BASE replies with the next avail index (in descriptors) in bits 0-14 and the avail wrap counter in bit 15 (vhost-user.rst "GET_VRING_BASE"; virtio 1.2 §2.8)',
    async run(ctx) {
      if (!offers(ctx, VIRTIO_F_RING_PACKED)) return notOffered('RING_PACKED');
      const { fe, q } = await runningQueue(ctx, { packed: true });
      const n = 5;
      for (let i = 0; i < n; i++) addWork(ctx, q);
      q.publishAndKick();
      // Some devices (DPDK's packed dequeue) write used descriptors late, in batches: the
      // chains are consumed all the same, and the index counts what was consumed.
      const got = await usedWithin(q, n, 1000);
      const held = got < n ? `; only ${got} of ${n} chains were marked used (the rest held back)` : '';
      const m = await fe.request(Req.GET_VRING_BASE, vringState.encode({ index: q.index, num: 0 }), { reply: true });
      const num = vringState.decode(m!.payload).num;
      // A packed ring's index counts descriptors (ring slots), not chains.
      const d = q.driver as PackedDriver;
      const want = d.availIdx | (d.availWrap << 15);
      return (num & 0xffff) === want
        ? passed(`answered ${hex(num)}: avail index ${d.availIdx}, wrap counter ${d.availWrap}${held}`)
        : failed(`answered ${hex(num)}; bits 0-15 should be ${hex(want)} (index ${d.availIdx} after ${n} chains, wrap counter ${d.availWrap})${held}`);
    },
  },
  {
    name: 'split-ring',
    group: 'data',
    spec: 'Data moves on split rings (virtio 1.2 §2.7)',
    async run(ctx) {
      return passed(await moveData(ctx.socket, ctx.type, { timeoutMs: 3000 }));
    },
  },
  {
    name: 'packed-ring',
    group: 'data',
    spec: 'Data moves on packed rings when VIRTIO_F_RING_PACKED is offered (virtio 1.2 §2.8)',
    async run(ctx) {
      if (!offers(ctx, VIRTIO_F_RING_PACKED)) return notOffered('RING_PACKED');
      return passed(await moveData(ctx.socket, ctx.type, { timeoutMs: 3000, packed: true }));
    },
  },
  ...(['split', 'packed'] as const).map((layout): ConformanceCase => ({
    name: layout === 'split' ? 'in-order' : 'in-order-packed',
    group: 'data',
    spec: `With VIRTIO_F_IN_ORDER the device uses buffers in the order they were made available, and may mark a batch used with one ${layout === 'split' ? 'used ring entry' : 'used descriptor'} naming its last buffer (virtio 1.2 ${layout === 'split' ? '§2.7.9' : '§2.8.20'})`,
    async run(ctx) {
      if (!offers(ctx, VIRTIO_F_IN_ORDER)) return notOffered('IN_ORDER');
      if (layout === 'packed' && !offers(ctx, VIRTIO_F_RING_PACKED)) return notOffered('RING_PACKED');
      const { q } = await runningQueue(ctx, { features: bit(VIRTIO_F_IN_ORDER), packed: layout === 'packed' });
      // 6 rounds of 16 chains on a ring of 64: slots are reused, so the driver must have
      // walked every batch right to go on.
      const made: number[] = [];
      const got: number[] = [];
      for (let round = 0; round < 6; round++) {
        for (let i = 0; i < 16; i++) made.push(addWork(ctx, q));
        q.publishAndKick();
        const want = made.length;
        const deadline = Date.now() + 3000;
        while (got.length < want && Date.now() < deadline) {
          got.push(...q.driver.used().map((u) => u.id));
          await sleep(5);
        }
        if (got.length < want) return failed(`${got.length} of ${want} chains came back`);
      }
      const at = got.findIndex((id, i) => id !== made[i]);
      return at < 0 ? passed(`${got.length} chains used in the order made available`) : failed(`chain ${at} made available was ${made[at]}, used in its place: ${got[at]}`);
    },
  })),
  {
    name: 'indirect-descriptors',
    group: 'data',
    spec: 'With VIRTIO_RING_F_INDIRECT_DESC, a chain in an indirect table is served like a direct one (virtio 1.2 §2.7.5.3)',
    async run(ctx) {
      if (!offers(ctx, VIRTIO_RING_F_INDIRECT_DESC)) return notOffered('INDIRECT_DESC');
      const { q } = await runningQueue(ctx, { features: bit(VIRTIO_RING_F_INDIRECT_DESC) });
      for (let i = 0; i < 3; i++) addWork(ctx, q, { indirect: true });
      q.publishAndKick();
      const got = await usedWithin(q, 3, 3000);
      return got === 3 ? passed('3 indirect chains served') : failed(`${got} of 3 indirect chains came back`);
    },
  },
  {
    name: 'event-idx-used-event',
    group: 'rings',
    spec: 'With VIRTIO_RING_F_EVENT_IDX the device interrupts only when used idx passes used_event (virtio 1.2 §2.7.10)',
    async run(ctx) {
      if (!offers(ctx, VIRTIO_RING_F_EVENT_IDX)) return notOffered('EVENT_IDX');
      const { q } = await runningQueue(ctx, { features: bit(VIRTIO_RING_F_EVENT_IDX) });
      const d = q.driver as SplitDriver;
      // First: used_event = 0 asks for a call on the first used buffer.
      d.setUsedEvent(0);
      addWork(ctx, q);
      q.publishAndKick();
      if ((await usedWithin(q, 1, 3000)) < 1) return failed('the chain did not come back');
      await sleep(50);
      const first = q.callFd.read();
      if (first === null) return failed('no call when used idx passed used_event');
      // Then: used_event far ahead; 3 chains must come back without a call.
      d.setUsedEvent((d.lastUsedIdx + 100) & 0xffff);
      for (let i = 0; i < 3; i++) addWork(ctx, q);
      q.publishAndKick();
      if ((await usedWithin(q, 3, 3000)) < 3) return failed('the chains did not come back');
      await sleep(50);
      const more = q.callFd.read();
      return more === null ? passed('a call when asked, none before used_event') : failed(`${more} call(s) with used_event still ahead of used idx (the device SHOULD NOT notify)`);
    },
  },
  {
    name: 'event-idx-avail-event',
    group: 'rings',
    spec: 'With VIRTIO_RING_F_EVENT_IDX the driver kicks only when avail idx passes avail_event, which the device writes; a driver that follows it must never stall (virtio 1.2 §2.7.10)',
    async run(ctx) {
      if (!offers(ctx, VIRTIO_RING_F_EVENT_IDX)) return notOffered('EVENT_IDX');
      const { q } = await runningQueue(ctx, { features: bit(VIRTIO_RING_F_EVENT_IDX) });
      const d = q.driver as SplitDriver;
      let kicks = 0;
      for (let i = 0; i < 8; i++) {
        const old = d.availIdx;
        addWork(ctx, q);
        const now = d.publish();
        if (d.kickNeeded(old, now)) {
          q.kick();
          kicks++;
        }
        if ((await usedWithin(q, 1, 1000)) < 1) return failed(`chain ${i + 1} stalled: avail_event ${d.availEvent()} said no kick was needed, and the device did not serve it`);
      }
      return passed(`8 chains served with ${kicks} kick(s), as avail_event asked (now ${d.availEvent()})`);
    },
  },
  {
    name: 'max-mem-slots',
    group: 'memory',
    spec: 'With CONFIGURE_MEM_SLOTS, GET_MAX_MEM_SLOTS gives the most regions; that many are accepted (SET_MEM_TABLE + ADD_MEM_REG), one more is refused (vhost-user.rst "GET_MAX_MEM_SLOTS", "ADD_MEM_REG")',
    timeoutMs: 30000,
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.CONFIGURE_MEM_SLOTS)) return notOffered('CONFIGURE_MEM_SLOTS');
      const fe = await ctx.frontend();
      await fe.negotiate();
      const max = Number(await fe.getMaxMemSlots());
      if (max < 1 || max > 4096) return failed(`GET_MAX_MEM_SLOTS answered ${max}`);
      const region = (i: number): MemRegion => ({ gpa: BigInt(i) << 20n, size: 4096n, uva: FRONTEND_UVA_BASE + (BigInt(i) << 20n), mmapOffset: 0n });
      try {
        await fe.request(Req.SET_MEM_TABLE, memTable.encode([region(0)]), { fds: [ctx.memfd(4096)], ack: true });
        for (let i = 1; i < max && !ctx.over; i++) await fe.request(Req.ADD_MEM_REG, singleRegion.encode(region(i)), { fds: [ctx.memfd(4096)], ack: true });
      } catch (e) {
        return failed(`refused a region within its own limit of ${max}: ${(e as Error).message}`);
      }
      return refusedOr(async () => {
        await fe.request(Req.ADD_MEM_REG, singleRegion.encode(region(max)), { fds: [ctx.memfd(4096)], ack: true });
        if (!(fe.protocolFeatures & bit(ProtocolFeature.REPLY_ACK))) await fe.getFeatures();
        return failed(`accepted region ${max + 1} beyond its limit of ${max}`);
      }).then((o) => (o.status === 'rejected' ? passed(`${max} regions accepted, region ${max + 1} refused (${o.detail})`) : o));
    },
  },
  {
    name: 'get-config',
    group: 'config',
    spec: 'With CONFIG, GET_CONFIG replies with the same offset and size and the config space bytes (vhost-user.rst "GET_CONFIG"; virtio-blk capacity §5.2.4, virtio-net mac §5.1.4)',
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.CONFIG)) return notOffered('CONFIG');
      const fe = await ctx.frontend();
      await fe.negotiate();
      const size = ctx.type === 'blk' ? 8 : 6;
      const m = await fe.request(Req.GET_CONFIG, configSpace.encode({ offset: 0, size, flags: 0, data: new Uint8Array(size) }), { reply: true });
      if (m!.payload.length === 0) return failed('an empty reply (an error) to a read of the first bytes');
      const c = configSpace.decode(m!.payload);
      if (c.offset !== 0 || c.size !== size) return failed(`reply for offset ${c.offset} size ${c.size}, asked 0 and ${size}`);
      if (ctx.type === 'blk') {
        const cap = new DataView(c.data.buffer, c.data.byteOffset).getBigUint64(0, true);
        return cap > 0n ? passed(`capacity ${cap} sectors`) : failed('capacity 0');
      }
      return passed(`mac ${Array.from(c.data.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':')}`);
    },
  },
  {
    name: 'get-config-offset',
    group: 'config',
    spec: 'GET_CONFIG reads from the offset it is given: 4 bytes at offset 8 (blk; net: 4) are the same bytes of a read at offset 0 (vhost-user.rst "GET_CONFIG": offset into the device config space)',
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.CONFIG)) return notOffered('CONFIG');
      const fe = await ctx.frontend();
      await fe.negotiate();
      // blk: 12 bytes (capacity, size_max); net: 8 (mac, status), the fields every device has.
      const size = ctx.type === 'blk' ? 12 : 8;
      const at = size - 4;
      const whole = await fe.getConfig(0, size);
      const part = await fe.getConfig(at, 4);
      if (whole === null || part === null) return failed(`an empty (error) reply: offset 0 -> ${whole === null ? 'error' : 'ok'}, offset ${at} -> ${part === null ? 'error' : 'ok'}`);
      const h = (b: Uint8Array): string => Buffer.from(b).toString('hex');
      const want = h(whole.subarray(at, size));
      return h(part) === want
        ? passed(`bytes ${at}-${size - 1} are ${want} both ways`)
        : failed(`offset ${at} gave ${h(part)}, bytes ${at}-${size - 1} of offset 0 are ${want}: the offset is not honoured`);
    },
  },
  {
    name: 'get-config-out-of-range',
    group: 'config',
    spec: "GET_CONFIG past the end of the device's config space (offset 4096) must be refused (an empty reply) and never answered with bytes from elsewhere",
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.CONFIG)) return notOffered('CONFIG');
      const fe = await ctx.frontend();
      await fe.negotiate();
      return refusedOr(async () => {
        const m = await fe.request(Req.GET_CONFIG, configSpace.encode({ offset: 4096, size: 8, flags: 0, data: new Uint8Array(8) }), { reply: true });
        if (m!.payload.length === 0) return rejected('an empty reply (an error), as the spec says');
        // Read by hand: our codec refuses an access past 256 bytes, and what came is the point.
        const data = m!.payload.subarray(12);
        const bytes = Buffer.from(data).toString('hex');
        return data.every((x) => x === 0) ? passed(`answered ${data.length} zero bytes`) : failed(`answered ${bytes} for offset 4096 (bytes from elsewhere)`);
      });
    },
  },
  {
    name: 'inflight-area-size',
    group: 'memory',
    spec: 'With INFLIGHT_SHMFD, GET_INFLIGHT_FD returns an fd and mmap_size of at least num_queues x (16 + 16 x queue_size) bytes for split rings, and the fd is that big (vhost-user.rst "Inflight I/O tracking")',
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.INFLIGHT_SHMFD)) return notOffered('INFLIGHT_SHMFD');
      const fe = await ctx.frontend();
      await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
      const numQueues = ctx.type === 'net' ? 2 : 1;
      const queueSize = 64;
      return refusedOr(async () => {
        const m = await fe.request(Req.GET_INFLIGHT_FD, inflightArea.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize }), { reply: true });
        const fd = m!.fds[0];
        if (fd === undefined) return failed('no fd with the reply');
        try {
          const a = inflightArea.decode(m!.payload);
          const need = numQueues * inflightSplitBytes(queueSize);
          if (a.mmapSize < BigInt(need)) return failed(`mmap_size ${a.mmapSize}, at least ${need} needed for ${numQueues} queue(s) of ${queueSize}`);
          const size = fstatSync(fd).size;
          if (BigInt(size) < a.mmapOffset + a.mmapSize) return failed(`the fd has ${size} bytes, the area ends at ${a.mmapOffset + a.mmapSize}`);
          return passed(`mmap_size ${a.mmapSize} for ${numQueues} queue(s) of ${queueSize} (at least ${need})`);
        } finally {
          closeFd(fd);
        }
      });
    },
  },
  {
    name: 'status',
    group: 'negotiation',
    spec: 'With STATUS, GET_STATUS returns what SET_STATUS set (FEATURES_OK may be cleared to refuse the features); SET_STATUS 0 resets the device and GET_STATUS then reads 0 (vhost-user.rst "SET_STATUS"; virtio 1.2 §2.1)',
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.STATUS)) return notOffered('STATUS');
      const fe = await ctx.frontend();
      await fe.negotiate();
      const s = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK;
      await fe.setStatus(s);
      const got = Number(await fe.getStatus());
      if (got !== s) return failed(`GET_STATUS ${hex(got)} after SET_STATUS ${hex(s)}`);
      await fe.setStatus(0);
      const zero = Number(await fe.getStatus());
      return zero === 0 ? passed(`${hex(s)} read back, then 0 after the reset`) : failed(`GET_STATUS ${hex(zero)} after SET_STATUS 0`);
    },
  },
  {
    name: 'vring-state-after-stop',
    group: 'rings',
    spec: 'A ring stopped with GET_VRING_BASE and started again with SET_VRING_BASE at that index goes on from there (vhost-user.rst "Starting and stopping rings")',
    async run(ctx) {
      const { fe, q } = await runningQueue(ctx);
      for (let i = 0; i < 3; i++) addWork(ctx, q);
      q.publishAndKick();
      if ((await usedWithin(q, 3, 3000)) < 3) return failed('the chains did not come back');
      const driver = q.driver;
      const base = await fe.stopQueue(q.index);
      const q2 = await fe.startQueue(q.index, { size: 64, base, driver });
      addWork(ctx, q2);
      q2.publishAndKick();
      const got = await usedWithin(q2, 1, 3000);
      return got === 1 ? passed(`restarted at ${base}, the next chain was served`) : failed(`restarted at ${base}: the next chain did not come back`);
    },
  },
  {
    name: 'set-features-reply-ack',
    group: 'messages',
    spec: 'SET_FEATURES with NEED_REPLY is acked; the features it sets are what GET_FEATURES offered (vhost-user.rst "SET_FEATURES")',
    async run(ctx) {
      if (!hasProto(ctx, ProtocolFeature.REPLY_ACK)) return notOffered('REPLY_ACK');
      const fe = await ctx.frontend();
      return refusedOr(async () => {
        await fe.negotiate();
        await fe.request(Req.SET_VRING_NUM, vringState.encode({ index: 0, num: 64 }), { ack: true });
        return passed(`features ${hex(fe.features)} acked`);
      });
    },
  },
];
