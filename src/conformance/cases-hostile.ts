// Hostile input: malformed headers and sizes, wrong fd counts, bad memory tables, indices
// out of range, bad descriptors and loops, avail index jumps, a memory file cut under the
// backend, disconnects at every step, immediate reconnects and rapid cycles. The spec lets
// a backend refuse such input (close the connection, or ack a failure) or ignore it; it
// must never crash, hang, or keep what it was given. Either "passed" or "rejected" is fine.
import { ftruncateSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '../native/guest-memory.js';
import { FRONTEND_UVA_BASE, VhostUserFrontend } from '../vhost-user/frontend.js';
import { HEADER_SIZE, MAX_PAYLOAD, Req, VERSION, encodeHeader, memTable, u64, vringAddr, vringFile, vringState, type MemRegion } from '../vhost-user/protocol.js';
import { VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../virtio/features.js';
import { PackedDriver, SplitDriver } from '../virtio/driver.js';
import { isEof, type RawFrontend } from './raw-frontend.js';
import { failed, passed, rejected, type CaseContext, type ConformanceCase, type Group } from './case.js';
import { PartialGuest, SETUP_PROTOCOL_FEATURES, setupSteps } from './setup-steps.js';
import { NoAnswer, afterHostile, offers, runningQueue, sleep } from './helpers.js';
import { moveData } from './traffic.js';
import { retryEagain } from './connect.js';

const MiB = 1 << 20;
const UVA = FRONTEND_UVA_BASE;
const region = (gpa: bigint, size: number | bigint, uva = UVA + gpa, mmapOffset = 0n): MemRegion => ({ gpa, size: BigInt(size), uva, mmapOffset });
const VRING_F_INDIRECT = 4;
const VRING_F_NEXT = 1;
/** Packed descriptor flags (virtio 1.2 §2.8.1): AVAIL = the driver's wrap counter (1 on the first lap), USED its inverse. */
const PACKED_F_AVAIL = 1 << 7;

/** GET_FEATURES, SET_OWNER, SET_FEATURES with the offered VERSION_1 on a raw connection (no replies awaited but GET_FEATURES'). */
async function rawOpening(ctx: CaseContext, raw: RawFrontend): Promise<void> {
  await raw.send(Req.SET_OWNER, VERSION);
  await raw.send(Req.SET_FEATURES, VERSION, u64.encode(ctx.offer.features & bit(VIRTIO_F_VERSION_1)));
}

/** A case that sends `attack` on a raw connection after the opening, then asks afterHostile. */
function rawCase(name: string, group: Group, spec: string, attack: (raw: RawFrontend, ctx: CaseContext) => Promise<unknown>, o: { opening?: boolean } = {}): ConformanceCase {
  return {
    name,
    group,
    spec,
    async run(ctx) {
      const raw = await ctx.raw();
      if (o.opening ?? true) await rawOpening(ctx, raw);
      await attack(raw, ctx);
      return afterHostile(raw, name, ctx.replyMs);
    },
  };
}

/**
 * A running queue, then `bad` writes descriptors and avail entries by hand and kicks.
 * Closed connection: rejected; anything else the backend did (returned the chain, ignored
 * it, stopped the queue) with the connection open: passed, with what it did.
 */
function descriptorCase(name: string, spec: string, bad: (d: SplitDriver, ctx: CaseContext) => void, o: { indirect?: boolean } = {}): ConformanceCase {
  return ringCase(name, spec, (d, ctx) => bad(d as SplitDriver, ctx), o);
}

/** The same on a packed ring (when the backend offers RING_PACKED). */
function packedCase(name: string, spec: string, bad: (d: PackedDriver, ctx: CaseContext) => void, o: { indirect?: boolean } = {}): ConformanceCase {
  return ringCase(name, spec, (d, ctx) => bad(d as PackedDriver, ctx), { ...o, packed: true });
}

function ringCase(name: string, spec: string, bad: (d: SplitDriver | PackedDriver, ctx: CaseContext) => void, o: { indirect?: boolean; packed?: boolean }): ConformanceCase {
  return {
    name,
    group: 'hostile-descriptors',
    spec,
    async run(ctx) {
      if (o.indirect && !offers(ctx, VIRTIO_RING_F_INDIRECT_DESC)) return passed('not offered: INDIRECT_DESC');
      if (o.packed && !offers(ctx, VIRTIO_F_RING_PACKED)) return passed('not offered: RING_PACKED');
      const { fe, q } = await runningQueue(ctx, { features: o.indirect ? bit(VIRTIO_RING_F_INDIRECT_DESC) : 0n, packed: o.packed });
      const d = q.driver;
      bad(d, ctx);
      q.kick();
      await sleep(300);
      if (fe.closed) return rejected(`the backend closed the connection (${fe.closeReason})`);
      const used = d instanceof SplitDriver ? d.usedIdx : null;
      if (used !== null && used > d.size) return failed(`used idx ${used}: the device returned more entries than the ring of ${d.size} holds (it wrapped over its own used ring)`);
      try {
        await fe.getFeatures();
      } catch (e) {
        if (fe.closed) return rejected(`the backend closed the connection (${(e as Error).message})`);
        throw new NoAnswer(`no answer to GET_FEATURES after the bad chain: ${(e as Error).message}`);
      }
      if (used === null) return passed('the connection still answers');
      return passed(
        used === 0 ? 'the chain was not served; the connection still answers' : `used idx ${used}: the device returned ${used} entr${used === 1 ? 'y' : 'ies'}; the connection still answers`,
      );
    },
  };
}

/** One chain of one descriptor at desc[head], published as avail entry 0. */
function oneDesc(d: SplitDriver, head: number, desc: { addr: number | bigint; len: number; flags: number; next: number }): void {
  d.writeDesc(head, desc);
  d.setAvailRing(0, head);
  d.setAvailIdx(1);
}

export const HOSTILE_CASES: ConformanceCase[] = [
  // ---- headers and sizes
  rawCase(
    'header-bad-version',
    'hostile-headers',
    'The header version (flags bits 0-1) must be 1; a message with another is invalid (vhost-user.rst "Header")',
    async (raw) => {
      await raw.sendBytes(encodeHeader(Req.GET_FEATURES, 2, 0));
    },
    { opening: false },
  ),
  {
    name: 'header-size-4gib',
    group: 'hostile-headers',
    spec: 'A header whose size field (0xffffffff) exceeds any payload the protocol defines must be refused, not waited for or allocated',
    async run(ctx) {
      const raw = await ctx.raw();
      await raw.sendBytes(encodeHeader(Req.GET_FEATURES, VERSION, 0xffffffff));
      const m = await raw.next(ctx.replyMs).catch(() => null);
      if (m === null) throw new NoAnswer('the connection was neither closed nor answered: the backend waits for 4 GiB of payload');
      return isEof(m) ? rejected('the backend closed the connection') : failed(`the backend answered a message of 4 GiB (request ${m.request})`);
    },
  },
  {
    name: 'header-size-over-max',
    group: 'hostile-headers',
    spec: 'A payload larger than any request takes (here 4097 bytes, sent in full) must be refused or skipped, never overflow a buffer',
    async run(ctx) {
      const raw = await ctx.raw();
      const m = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD + 1);
      m.set(encodeHeader(Req.SET_FEATURES, VERSION, MAX_PAYLOAD + 1));
      await raw.sendBytes(m);
      return afterHostile(raw, 'SET_FEATURES with 4097 bytes', ctx.replyMs);
    },
  },
  {
    name: 'truncated-payload',
    group: 'hostile-headers',
    spec: 'A frontend that hangs up in the middle of a message (header says 40 bytes, 10 arrive, with an fd) ends the session; the fd is closed',
    async run(ctx) {
      const raw = await ctx.raw();
      await raw.send(Req.SET_OWNER, VERSION);
      const m = new Uint8Array(HEADER_SIZE + 10);
      m.set(encodeHeader(Req.SET_VRING_ADDR, VERSION, 40));
      await raw.sendBytes(m, [ctx.eventfd().fd]);
      await sleep(100);
      return passed('hung up mid-message');
    },
  },
  rawCase(
    'payload-size-wrong',
    'hostile-headers',
    'A known request with the wrong payload size (SET_FEATURES with 4 bytes) is invalid',
    async (raw) => {
      await raw.send(Req.SET_OWNER, VERSION);
      await raw.send(Req.SET_FEATURES, VERSION, new Uint8Array(4));
    },
    { opening: false },
  ),
  rawCase('vring-num-payload-12', 'hostile-headers', 'SET_VRING_NUM takes a vring state of 8 bytes; 12 is invalid', async (raw) => {
    await raw.send(Req.SET_VRING_NUM, VERSION, new Uint8Array(12));
  }),
  rawCase('unknown-request', 'hostile-headers', 'An unknown request (999, carrying an fd) is refused and its fd closed', async (raw, ctx) => {
    await raw.send(999, VERSION, new Uint8Array(8), [ctx.eventfd().fd]);
  }),
  rawCase(
    'before-set-owner',
    'hostile-headers',
    'SET_OWNER comes first: a memory table before it has no session to belong to (vhost-user.rst "SET_OWNER")',
    async (raw, ctx) => {
      await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0n, MiB)]), [ctx.memfd(MiB)]);
    },
    { opening: false },
  ),
  // ---- fd counts
  rawCase('mem-table-fewer-fds', 'hostile-memory', 'SET_MEM_TABLE carries one fd per region: 2 regions with 1 fd is invalid', async (raw, ctx) => {
    await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0n, MiB), region(BigInt(MiB), MiB)]), [ctx.memfd(2 * MiB)]);
  }),
  rawCase('vring-kick-no-fd', 'hostile-rings', 'SET_VRING_KICK without the no-fd flag must carry an fd; none is invalid', async (raw) => {
    await raw.send(Req.SET_VRING_KICK, VERSION, vringFile.encode(0, false));
  }),
  rawCase('vring-call-three-fds', 'hostile-rings', 'SET_VRING_CALL carries one fd; three are invalid (each must be closed)', async (raw, ctx) => {
    await raw.send(Req.SET_VRING_CALL, VERSION, vringFile.encode(0, false), [ctx.eventfd().fd, ctx.eventfd().fd, ctx.eventfd().fd]);
  }),
  // ---- memory tables
  rawCase('mem-table-overlap', 'hostile-memory', 'Memory regions must not overlap in guest-physical space', async (raw, ctx) => {
    await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0n, MiB), region(BigInt(MiB / 2), MiB, UVA + 0x10000000n)]), [ctx.memfd(MiB), ctx.memfd(MiB)]);
  }),
  rawCase('mem-table-past-eof', 'hostile-memory', 'A region larger than its file (2 MiB of a 1 MiB memfd) is refused, or never touched past the end', async (raw, ctx) => {
    await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0n, 2 * MiB)]), [ctx.memfd(MiB)]);
  }),
  rawCase('mem-table-offset-past-eof', 'hostile-memory', 'A region whose mmap offset is past the end of its file is refused', async (raw, ctx) => {
    await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0n, 4096, UVA, BigInt(4 * MiB))]), [ctx.memfd(MiB)]);
  }),
  rawCase('mem-table-wraps', 'hostile-memory', 'A region whose guest address + size wraps 2^64 is refused', async (raw, ctx) => {
    await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0xfffffffffffff000n, MiB, UVA)]), [ctx.memfd(MiB)]);
  }),
  rawCase('mem-table-huge', 'hostile-memory', 'A region of 2^60 bytes over a 4 KiB memfd is refused before anything is mapped', async (raw, ctx) => {
    await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0n, 1n << 60n)]), [ctx.memfd(4096)]);
  }),
  rawCase('mem-table-count-9', 'hostile-memory', 'SET_MEM_TABLE holds at most 8 regions (VHOST_MEMORY_BASELINE_NREGIONS); a count of 9 is invalid', async (raw, ctx) => {
    const p = memTable.encode(Array.from({ length: 8 }, (_, i) => region(BigInt(i * MiB), 4096)));
    new DataView(p.buffer, p.byteOffset).setUint32(0, 9, true);
    await raw.send(
      Req.SET_MEM_TABLE,
      VERSION,
      p,
      Array.from({ length: 8 }, () => ctx.memfd(4096)),
    );
  }),
  {
    name: 'memory-file-truncated',
    group: 'hostile-memory',
    spec: "Guest memory is the frontend's file: cut to 0 bytes under a running ring, the backend's next access faults (SIGBUS). A backend must survive it (the session may end); the process must not die",
    timeoutMs: 8000,
    async run(ctx) {
      const path = join(tmpdir(), `vk-conformance-${process.pid}-${Date.now()}.mem`);
      const fd = openSync(path, 'w+', 0o600);
      ctx.file(path, fd);
      ftruncateSync(fd, MiB);
      const fe = await ctx.frontend();
      await fe.negotiate({ features: ~(bit(VIRTIO_RING_F_INDIRECT_DESC) | (1n << 34n) | (1n << 29n) | (1n << 15n)) });
      const mem = GuestMemory.map([{ fd, ...region(0n, MiB, UVA) }]);
      ctx.onDispose(() => mem.close());
      await fe.request(Req.SET_MEM_TABLE, memTable.encode([region(0n, MiB, UVA)]), { fds: [fd], ack: true });
      const g = new PartialGuest('split', ctx.type === 'net' ? 2 : 1); // rings laid out in its own memfd: used only for addresses
      ctx.onDispose(() => g.close());
      const queues = ctx.type === 'net' ? [0, 1] : [0];
      const d = new SplitDriver({ mem: mem.view(0), base: 0, size: 64, alloc: g.alloc });
      const kick = ctx.eventfd();
      const call = ctx.eventfd();
      for (const qi of queues) {
        await fe.request(Req.SET_VRING_NUM, vringState.encode({ index: qi, num: 64 }), { ack: true });
        await fe.request(Req.SET_VRING_BASE, vringState.encode({ index: qi, num: 0 }), { ack: true });
        const dq = qi === queues.at(-1) ? d : new SplitDriver({ mem: mem.view(0), base: 0, size: 64, alloc: g.alloc });
        await fe.request(Req.SET_VRING_ADDR, vringAddr.encode({ index: qi, flags: 0, desc: UVA + BigInt(dq.descAddr), avail: UVA + BigInt(dq.availAddr), used: UVA + BigInt(dq.usedAddr), log: 0n }), {
          ack: true,
        });
        await fe.request(Req.SET_VRING_CALL, vringFile.encode(qi, false), { fds: [call.fd], ack: true });
        await fe.request(Req.SET_VRING_KICK, vringFile.encode(qi, false), { fds: [kick.fd], ack: true });
        if (fe.features & (1n << 30n)) await fe.request(Req.SET_VRING_ENABLE, vringState.encode({ index: qi, num: 1 }), { ack: true });
      }
      // A chain published, then the file cut, then the kick: the backend reads cut pages.
      d.add([
        { len: 64, writable: false, data: new Uint8Array(64) },
        { len: 64, writable: true },
      ]);
      d.publish();
      ftruncateSync(fd, 0);
      kick.write(1n);
      await sleep(500);
      return fe.closed ? rejected(`the session ended (${fe.closeReason})`) : passed('the backend kept the session');
    },
  },
  // ---- rings
  rawCase('vring-num-queue-255', 'hostile-rings', 'SET_VRING_NUM for a queue the device does not have (255) is refused', async (raw) => {
    await raw.send(Req.SET_VRING_NUM, VERSION, vringState.encode({ index: 255, num: 64 }));
  }),
  rawCase('vring-addr-queue-huge', 'hostile-rings', 'SET_VRING_ADDR for queue 0xffffffff is refused', async (raw) => {
    await raw.send(Req.SET_VRING_ADDR, VERSION, vringAddr.encode({ index: 0xffffffff, flags: 0, desc: UVA, avail: UVA, used: UVA, log: 0n }));
  }),
  rawCase('vring-kick-queue-255', 'hostile-rings', 'SET_VRING_KICK for queue 255 (the index is the low 8 bits) with an fd is refused and the fd closed', async (raw, ctx) => {
    await raw.send(Req.SET_VRING_KICK, VERSION, vringFile.encode(255, false), [ctx.eventfd().fd]);
  }),
  rawCase('vring-num-not-power-of-2', 'hostile-rings', 'A split queue size must be a power of 2 (virtio 1.2 §2.7); 3 is invalid', async (raw) => {
    await raw.send(Req.SET_VRING_NUM, VERSION, vringState.encode({ index: 0, num: 3 }));
  }),
  rawCase('vring-num-zero', 'hostile-rings', 'A queue size of 0 is invalid', async (raw) => {
    await raw.send(Req.SET_VRING_NUM, VERSION, vringState.encode({ index: 0, num: 0 }));
  }),
  rawCase('vring-num-65536', 'hostile-rings', 'A queue size above 32768 (virtio 1.2 §2.7: at most 32768) is invalid', async (raw) => {
    await raw.send(Req.SET_VRING_NUM, VERSION, vringState.encode({ index: 0, num: 65536 }));
  }),
  rawCase('ring-outside-memory', 'hostile-rings', 'Ring addresses must lie in a memory region; a descriptor table past the region is refused when the ring starts, never read', async (raw, ctx) => {
    await raw.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([region(0n, MiB)]), [ctx.memfd(MiB)]);
    await raw.send(Req.SET_VRING_NUM, VERSION, vringState.encode({ index: 0, num: 64 }));
    await raw.send(Req.SET_VRING_BASE, VERSION, vringState.encode({ index: 0, num: 0 }));
    await raw.send(Req.SET_VRING_ADDR, VERSION, vringAddr.encode({ index: 0, flags: 0, desc: UVA + BigInt(4 * MiB), avail: UVA + 0x2000n, used: UVA + 0x3000n, log: 0n }));
    await raw.send(Req.SET_VRING_CALL, VERSION, vringFile.encode(0, false), [ctx.eventfd().fd]);
    const kick = ctx.eventfd();
    await raw.send(Req.SET_VRING_KICK, VERSION, vringFile.encode(0, false), [kick.fd]);
    kick.write(1n);
  }),
  // ---- descriptors
  descriptorCase(
    'desc-addr-outside-memory',
    'A descriptor whose buffer lies outside every region must not be accessed (virtio 1.2 §2.7.5; the device may stop the queue or set DEVICE_NEEDS_RESET)',
    (d) => {
      oneDesc(d, 0, { addr: 0x40000000000n, len: 64, flags: 0, next: 0 });
    },
  ),
  descriptorCase('desc-len-4gib', 'A descriptor of length 0xffffffff past the memory end must not be accessed', (d) => {
    oneDesc(d, 0, { addr: 0x1000, len: 0xffffffff, flags: 0, next: 0 });
  }),
  descriptorCase('desc-loop', 'A chain whose next points back to itself is a loop: the device must not follow it forever (virtio 1.2 §2.7.5.2)', (d) => {
    oneDesc(d, 0, { addr: 0x8000, len: 64, flags: VRING_F_NEXT, next: 0 });
  }),
  descriptorCase('desc-next-out-of-range', 'A next index past the queue size is invalid (virtio 1.2 §2.7.5)', (d) => {
    oneDesc(d, 0, { addr: 0x8000, len: 64, flags: VRING_F_NEXT, next: 60000 });
  }),
  descriptorCase('avail-head-out-of-range', 'An avail ring entry naming descriptor 5000 of a 64-entry table is invalid', (d) => {
    d.setAvailRing(0, 5000);
    d.setAvailIdx(1);
  }),
  descriptorCase('avail-idx-jump', 'An avail idx more than the queue size ahead of the last one seen (1000 in a ring of 64) is invalid', (d) => {
    d.writeDesc(0, { addr: 0x8000, len: 64, flags: 0, next: 0 });
    for (let i = 0; i < 64; i++) d.setAvailRing(i, 0);
    d.setAvailIdx(1000);
  }),
  descriptorCase(
    'indirect-bad-length',
    'An indirect table whose length is not a multiple of 16 is invalid (virtio 1.2 §2.7.5.3.1)',
    (d) => {
      oneDesc(d, 0, { addr: 0x8000, len: 17, flags: VRING_F_INDIRECT, next: 0 });
    },
    { indirect: true },
  ),
  descriptorCase(
    'indirect-loop',
    'An indirect table whose descriptor points back to itself is a loop (virtio 1.2 §2.7.5.3)',
    (d) => {
      d.write(0x8000, Uint8Array.of(0, 0x90, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, VRING_F_NEXT, 0, 0, 0));
      oneDesc(d, 0, { addr: 0x8000, len: 16, flags: VRING_F_INDIRECT, next: 0 });
    },
    { indirect: true },
  ),
  descriptorCase(
    'indirect-nested',
    'An indirect descriptor inside an indirect table is invalid (virtio 1.2 §2.7.5.3.1: the driver MUST NOT set INDIRECT there)',
    (d) => {
      d.write(0x8000, Uint8Array.of(0, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, VRING_F_INDIRECT, 0, 0, 0));
      oneDesc(d, 0, { addr: 0x8000, len: 16, flags: VRING_F_INDIRECT, next: 0 });
    },
    { indirect: true },
  ),
  packedCase('packed-desc-outside-memory', 'Packed ring: a descriptor whose buffer lies outside every region must not be accessed (virtio 1.2 §2.8)', (d) => {
    d.writeDesc(0, { addr: 0x40000000000n, len: 64, id: 0, flags: PACKED_F_AVAIL });
  }),
  packedCase('packed-chain-endless', 'Packed ring: a chain whose every descriptor has NEXT set never ends within the ring; the device must stop at the queue size (virtio 1.2 §2.8.6)', (d) => {
    for (let i = 0; i < d.size; i++) d.writeDesc(i, { addr: 0x8000, len: 64, id: 0, flags: PACKED_F_AVAIL | VRING_F_NEXT });
  }),
  packedCase(
    'packed-indirect-bad-length',
    'Packed ring: an indirect table whose length is not a multiple of 16 is invalid (virtio 1.2 §2.8.8)',
    (d) => {
      d.writeDesc(0, { addr: 0x8000, len: 17, id: 0, flags: PACKED_F_AVAIL | VRING_F_INDIRECT });
    },
    { indirect: true },
  ),
  // ---- connections
  {
    name: 'disconnect-at-every-step',
    group: 'connections',
    spec: 'A frontend may go away after any message (QEMU crashing, a VM killed); each time the backend ends that session and serves the next frontend',
    timeoutMs: 120000,
    async run(ctx) {
      const queues = ctx.type === 'net' ? 2 : 1;
      const proto = ctx.offer.protocolFeatures & SETUP_PROTOCOL_FEATURES;
      const steps = setupSteps(ctx.offer.features & (bit(VIRTIO_F_VERSION_1) | (1n << 30n)), queues, 'split', proto);
      steps.push([
        'chains kicked (in flight)',
        async (_fe, g) => {
          const d = g.drivers[queues - 1];
          for (let i = 0; i < 4; i++)
            d.add([
              { len: 64, writable: false, data: new Uint8Array(64) },
              { len: 512, writable: true },
              { len: 1, writable: true },
            ]);
          d.publish();
          g.kicks[queues - 1].write(1n);
          await sleep(20);
        },
      ]);
      for (let k = 1; k <= steps.length; k++) {
        ctx.check();
        const g = new PartialGuest('split', queues);
        try {
          const fe = await retryEagain(() => VhostUserFrontend.connect(ctx.socket, { timeoutMs: ctx.replyMs }));
          try {
            for (const [, step] of steps.slice(0, k)) await step(fe, g);
          } finally {
            fe.close();
          }
        } finally {
          g.close();
        }
        try {
          await moveData(ctx.socket, ctx.type, { timeoutMs: 3000 });
        } catch (e) {
          return failed(`after a disconnect after ${steps[k - 1][0]}: ${(e as Error).message}`);
        }
      }
      return passed(`${steps.length} disconnects, data moved after each`);
    },
  },
  {
    name: 'immediate-reconnect',
    group: 'connections',
    spec: 'A frontend that closes and connects again at once (a restarted QEMU) is served as soon as the old session is gone',
    timeoutMs: 30000,
    async run(ctx) {
      for (let i = 0; i < 10; i++) {
        ctx.check();
        const fe = await retryEagain(() => VhostUserFrontend.connect(ctx.socket, { timeoutMs: ctx.replyMs }));
        await fe.negotiate().finally(() => fe.close());
        await moveData(ctx.socket, ctx.type, { timeoutMs: 3000 });
      }
      return passed('10 times: a full session right after the previous close');
    },
  },
  {
    name: 'rapid-cycles',
    group: 'connections',
    spec: 'Many connect / negotiate / memory / rings / disconnect cycles leave the backend as it was (no fd or memory kept per session)',
    timeoutMs: 60000,
    async run(ctx) {
      const n = 100;
      const t0 = Date.now();
      for (let i = 0; i < n; i++) {
        ctx.check();
        const fe = await retryEagain(() => VhostUserFrontend.connect(ctx.socket, { timeoutMs: ctx.replyMs }));
        try {
          await fe.negotiate({ features: ~(1n << 34n) });
          await fe.setupMemory(256 * 1024);
          if (ctx.type === 'net') await fe.startQueue(0, { size: 64 });
          await fe.startQueue(ctx.type === 'net' ? 1 : 0, { size: 64 });
        } finally {
          fe.close();
        }
      }
      return passed(`${n} cycles in ${Date.now() - t0} ms`);
    },
  },
  {
    name: 'connect-and-close',
    group: 'connections',
    spec: 'A connection closed before any message (a port scanner, a health check) costs the backend nothing',
    async run(ctx) {
      for (let n = 0; n < 50; n++) (await ctx.raw()).close();
      await sleep(100);
      return passed('50 connections opened and closed at once');
    },
  },
];
