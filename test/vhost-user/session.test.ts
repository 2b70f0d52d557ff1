import { expect } from 'chai';
import { closeSync, readFileSync, readSync } from 'node:fs';
import { createMemfd, GuestMemory } from '../../src/native/guest-memory.js';
import { EventFd } from '../../src/native/eventfd.js';
import { socketPair, recvMessage, closeFd } from '../../src/native/unix-socket.js';
import { RawFrontend, isEof } from './raw-frontend.js';
import { ProtocolFeature, Req, VRING_F_LOG, decodeHeader, inflightArea, logArea, memTable, u64, vringAddr, vringState, BackendReq, HEADER_SIZE, FLAG_REPLY } from '../../src/vhost-user/protocol.js';
import { FLAG_NEED_REPLY, VERSION, decodeReply, reqName, singleRegion, type Message } from '../../src/vhost-user/protocol.js';
import { FRONTEND_UVA_BASE, type FrontendQueue } from '../../src/vhost-user/frontend.js';
import { EchoDevice } from '../lib/echo-device.js';
import type { QueueContext } from '../../src/vhost-user/device.js';
import { SESSION_PROTOCOL_FEATURES, inflightQueueBytes, supportedRequests } from '../../src/vhost-user/session.js';
import { DeviceStatus, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, bit } from '../../src/virtio/features.js';
import { SplitDriver } from '../../src/virtio/driver.js';
import { Harness, fdCount, until } from './harness.js';

const MiB = 1 << 20;

async function echo(q: Pick<FrontendQueue, 'driver' | 'publishAndKick' | 'waitUsed'>, bytes: number[]) {
  const id = q.driver.add([
    { len: bytes.length, writable: false, data: Uint8Array.from(bytes) },
    { len: 64, writable: true },
  ]);
  q.publishAndKick();
  const used = await q.waitUsed(1);
  expect(used[0]).to.deep.equal({ id, len: bytes.length });
  expect(Array.from(q.driver.readWritten(id, bytes.length))).to.deep.equal([...bytes].reverse());
}

describe('vhost-user session (our frontend against our backend)', () => {
  let h: Harness;
  afterEach(async () => h?.close());

  it('offers features and protocol features, and answers the queries', async () => {
    h = await new Harness(3).start();
    const { fe } = await h.connect();
    const f = await fe.getFeatures();
    expect(f & bit(VHOST_USER_F_PROTOCOL_FEATURES)).to.not.equal(0n);
    expect(f & bit(VIRTIO_F_VERSION_1)).to.not.equal(0n);
    expect(f & bit(VHOST_F_LOG_ALL)).to.not.equal(0n);
    const pf = await fe.getProtocolFeatures();
    expect(pf & SESSION_PROTOCOL_FEATURES).to.equal(SESSION_PROTOCOL_FEATURES);
    for (const b of [ProtocolFeature.CONFIG, ProtocolFeature.MTU, ProtocolFeature.RARP, ProtocolFeature.INFLIGHT_SHMFD]) expect(pf & bit(b)).to.not.equal(0n);
    await fe.setProtocolFeatures(pf);
    expect(await fe.getQueueNum()).to.equal(3n);
    expect(await fe.getMaxMemSlots()).to.equal(64n);
    await fe.setOwner();
    await fe.setFeatures(f);
    expect(h.dev.events.find((e) => e.what === 'features')?.value).to.equal(f);
    expect(supportedRequests).to.include.members([Req.GET_INFLIGHT_FD, Req.SET_LOG_BASE, Req.ADD_MEM_REG, Req.SET_STATUS]);
  });

  for (const layout of ['split', 'packed'] as const) {
    it(`serves traffic on two queues with ${layout} rings, kicks and calls through eventfds`, async () => {
      h = await new Harness(2).start();
      const { fe, session } = await h.connect();
      const want = layout === 'packed' ? ~0n : ~bit(VIRTIO_F_RING_PACKED);
      await fe.negotiate({ features: want });
      await fe.setupMemory(8 * MiB);
      const q0 = await fe.startQueue(0, { size: 256 });
      const q1 = await fe.startQueue(1, { size: 128 });
      expect(q0.layout).to.equal(layout);
      for (let i = 0; i < 300; i++) await echo(i % 2 ? q1 : q0, [i & 0xff, 1, 2, 3, 4, 5]);
      expect(session.queues().map((q) => [q.running, q.layout])).to.deep.equal([
        [true, layout],
        [true, layout],
      ]);
      expect(h.dev.served).to.equal(300);
    });
  }

  it('GET_CONFIG / SET_CONFIG: reads, writes writable bytes, refuses read-only ones', async () => {
    h = await new Harness().start();
    const { fe } = await h.connect();
    await fe.negotiate();
    expect(Array.from((await fe.getConfig(0, 16))!)).to.deep.equal([...Array(16).keys()]);
    expect(Array.from((await fe.getConfig(4, 4))!)).to.deep.equal([4, 5, 6, 7]);
    expect(await fe.getConfig(8, 16), 'past the end: empty reply').to.equal(null);
    await fe.setConfig(10, Uint8Array.of(0xaa, 0xbb));
    expect(Array.from((await fe.getConfig(8, 4))!)).to.deep.equal([8, 9, 0xaa, 0xbb]);
    let err: Error | null = null;
    try {
      await fe.setConfig(0, Uint8Array.of(1));
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.match(/SET_CONFIG failed/);
    expect(fe.closed, 'a refused SET_CONFIG does not end the session').to.equal(false);
  });

  it('GET_VRING_BASE stops the ring after the device drained it; the ring restarts from that base', async () => {
    h = await new Harness(1).start();
    const { fe, session } = await h.connect();
    await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
    await fe.setupMemory(4 * MiB);
    const q = await fe.startQueue(0, { size: 64 });
    for (let i = 0; i < 10; i++) await echo(q, [i, 9]);
    h.dev.hold = true; // the device keeps the next chains in flight
    const driver = q.driver as SplitDriver;
    for (let i = 0; i < 3; i++)
      driver.add([
        { len: 2, writable: false, data: Uint8Array.of(i, 7) },
        { len: 8, writable: true },
      ]);
    q.publishAndKick();
    await until(() => h.dev.served === 13, 2000, 'device popped 3 chains');
    const base = await fe.stopQueue(0);
    expect(base, 'last avail idx').to.equal(13);
    expect(driver.used().length, 'the held chains were completed before the reply').to.equal(3);
    expect(session.queues()[0].started).to.equal(false);
    h.dev.hold = false;
    // A kick now is not served: the ring is stopped.
    driver.add([
      { len: 2, writable: false, data: Uint8Array.of(1, 2) },
      { len: 8, writable: true },
    ]);
    driver.publish();
    await new Promise((r) => setTimeout(r, 50));
    expect(h.dev.served).to.equal(13);
    // Restart from the base with the same ring memory (as QEMU does after migration).
    await fe.request(Req.SET_VRING_BASE, vringState.encode({ index: 0, num: base }), { ack: true });
    const kick = new EventFd();
    await fe.request(Req.SET_VRING_KICK, u64.encode(0n), { fds: [kick.fd], ack: true });
    await fe.request(Req.SET_VRING_ENABLE, vringState.encode({ index: 0, num: 1 }), { ack: true });
    await until(() => h.dev.served === 14, 2000, 'the waiting chain served after restart');
    kick.close();
    expect(h.dev.events.filter((e) => e.what === 'start')).to.have.length(2);
  });

  it('SET_VRING_ENABLE 0 stops serving, 1 resumes; a ring without PROTOCOL_FEATURES starts enabled', async () => {
    h = await new Harness(1).start();
    const { fe, session } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(4 * MiB);
    const q = await fe.startQueue(0, { size: 64, enable: false });
    expect(session.queues()[0]).to.include({ started: true, enabled: false, running: false });
    await fe.request(Req.SET_VRING_ENABLE, vringState.encode({ index: 0, num: 1 }), { ack: true });
    await echo(q, [1, 2]);
    await fe.request(Req.SET_VRING_ENABLE, vringState.encode({ index: 0, num: 0 }), { ack: true });
    expect(session.queues()[0].running).to.equal(false);
    await h.close();

    h = await new Harness(1).start();
    const c = await h.connect();
    await c.fe.negotiate({ features: ~bit(VHOST_USER_F_PROTOCOL_FEATURES) });
    await c.fe.setupMemory(4 * MiB);
    const q2 = await c.fe.startQueue(0, { size: 64 });
    expect(c.session.queues()[0].running).to.equal(true);
    await echo(q2, [5, 6, 7]);
  });

  it('polls a queue that has no kick fd (SET_VRING_KICK with the no-fd flag)', async () => {
    h = await new Harness(1).start();
    const { fe } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(4 * MiB);
    const q = await fe.startQueue(0, { size: 64, noKickFd: true });
    const id = q.driver.add([
      { len: 3, writable: false, data: Uint8Array.of(1, 2, 3) },
      { len: 8, writable: true },
    ]);
    q.driver.publish(); // no kick at all
    expect((await q.waitUsed(1))[0].id).to.equal(id);
  });

  it('replaces the memory table while queues run (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG)', async () => {
    h = await new Harness(1).start();
    const { fe, session } = await h.connect();
    await fe.negotiate();
    const mem = await fe.setupMemory(4 * MiB);
    const q = await fe.startQueue(0, { size: 64 });
    await echo(q, [1]);
    // The same memfd again in a new table (plus a second region): rings keep working.
    const extraFd = createMemfd('extra', MiB);
    const regions = [
      { gpa: 0n, size: BigInt(4 * MiB), uva: FRONTEND_UVA_BASE, mmapOffset: 0n },
      { gpa: 1n << 32n, size: BigInt(MiB), uva: FRONTEND_UVA_BASE + (1n << 32n), mmapOffset: 0n },
    ];
    const memFd = (fe as unknown as { memFd: number }).memFd;
    await fe.request(Req.SET_MEM_TABLE, memTable.encode(regions), { fds: [memFd, extraFd], ack: true });
    await echo(q, [2, 3]);
    // A buffer in the second region.
    const extra = GuestMemory.map([{ fd: extraFd, gpa: 1n << 32n, size: BigInt(MiB), uva: 0n, mmapOffset: 0n }]);
    extra.write((1n << 32n) + 64n, Uint8Array.of(9, 8));
    const id = q.driver.add([
      { len: 2, writable: false, addr: 2 ** 32 + 64 },
      { len: 8, writable: true },
    ]);
    q.publishAndKick();
    expect((await q.waitUsed(1))[0]).to.deep.equal({ id, len: 2 });
    expect(Array.from(q.driver.readWritten(id, 2))).to.deep.equal([8, 9]);
    // Remove the extra region; add a third with ADD_MEM_REG.
    await fe.removeRegion(regions[1]);
    const added = await fe.addRegion(8n << 32n, MiB);
    await echo(q, [4, 5, 6]);
    expect(h.dev.events.filter((e) => e.what === 'memory').length).to.equal(3);
    expect(session.queues()[0].running).to.equal(true);
    // A buffer in the removed region now breaks the queue (DESC_ADDR) and sets NEEDS_RESET.
    q.driver.add([
      { len: 2, writable: false, addr: 2 ** 32 + 64 },
      { len: 8, writable: true },
    ]);
    q.publishAndKick();
    await until(() => session.queues()[0].broken, 2000, 'queue broken');
    expect(Number(await fe.getStatus()) & DeviceStatus.DEVICE_NEEDS_RESET).to.equal(DeviceStatus.DEVICE_NEEDS_RESET);
    expect(h.logs.some((l) => l.msg === 'queue broken by the driver, stopping it' && /DESC_ADDR/.test(String(l.reason)))).to.equal(true);
    extra.close();
    closeSync(extraFd);
    closeSync(added.fd);
    void mem;
  });

  it("counts a region added again (QEMU 7.2's multiqueue ADD_MEM_REG per queue pair) and unmaps it at its last REM_MEM_REG", async () => {
    h = await new Harness(1).start();
    const { fe, session } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(4 * MiB);
    const q = await fe.startQueue(0, { size: 64 });
    const mapped = () =>
      readFileSync('/proc/self/maps', 'utf8')
        .split('\n')
        .filter((l) => l.includes('/memfd:vk-repeat ')).length;
    const fd = createMemfd('vk-repeat', MiB);
    const region = { gpa: 1n << 32n, size: BigInt(MiB), uva: FRONTEND_UVA_BASE + (1n << 32n), mmapOffset: 0n };
    // Each of two queue pairs' vhost devices adds it: the same file, sent twice.
    await fe.request(Req.ADD_MEM_REG, singleRegion.encode(region), { fds: [fd], ack: true });
    await fe.request(Req.ADD_MEM_REG, singleRegion.encode(region), { fds: [fd], ack: true });
    expect(mapped(), 'mapped once').to.equal(1);
    expect(h.dev.events.filter((e) => e.what === 'memory').length, 'one table change').to.equal(1);
    await echo(q, [1, 2]);
    // Each device removes it: the first removal leaves it mapped, the second unmaps it.
    await fe.removeRegion(region);
    expect(mapped(), 'still mapped: one add is left').to.equal(1);
    await echo(q, [3]);
    await fe.removeRegion(region);
    expect(mapped(), 'unmapped at the last removal').to.equal(0);
    expect(h.dev.events.filter((e) => e.what === 'memory').length).to.equal(2);
    await echo(q, [4]);
    // A region replaced (QEMU's order per device: remove the old, add the new): the old one,
    // removed by the first device, gives way to the overlapping new one from another file;
    // the second device's removal of the old one is taken, its add of the new one counted.
    const fd2 = createMemfd('vk-repeat2', 2 * MiB);
    const grown = { ...region, size: BigInt(2 * MiB) };
    const mapped2 = () =>
      readFileSync('/proc/self/maps', 'utf8')
        .split('\n')
        .filter((l) => l.includes('/memfd:vk-repeat2 ')).length;
    for (let dev = 0; dev < 2; dev++) await fe.request(Req.ADD_MEM_REG, singleRegion.encode(region), { fds: [fd], ack: true });
    for (let dev = 0; dev < 2; dev++) {
      await fe.removeRegion(region);
      await fe.request(Req.ADD_MEM_REG, singleRegion.encode(grown), { fds: [fd2], ack: true });
    }
    expect([mapped(), mapped2()], 'the old region unmapped, the new one mapped once').to.deep.equal([0, 1]);
    await echo(q, [5]);
    for (let dev = 0; dev < 2; dev++) await fe.removeRegion(grown);
    expect(mapped2(), 'unmapped at its last removal').to.equal(0);
    closeSync(fd2);
    // The same range from another file is not the same region: refused, as an overlap is.
    await fe.request(Req.ADD_MEM_REG, singleRegion.encode(region), { fds: [fd], ack: true });
    const other = createMemfd('vk-repeat-other', MiB);
    const err = await fe.request(Req.ADD_MEM_REG, singleRegion.encode(region), { fds: [other], ack: true }).catch((e: Error) => e);
    expect(String(err)).to.match(/ADD_MEM_REG failed/);
    expect(
      h.logs.some((l) => /regions overlap/.test(String(l.reason))),
      'the log says why',
    ).to.equal(true);
    await until(() => session.closed, 2000, 'session closed');
    closeSync(other);
    closeSync(fd);
  });

  it('sets DEVICE_NEEDS_RESET and writes the error fd when the driver breaks a queue; other queues keep running', async () => {
    h = await new Harness(2).start();
    const { fe, session } = await h.connect();
    await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
    await fe.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK);
    await fe.setupMemory(4 * MiB);
    const err = new EventFd();
    await fe.request(Req.SET_VRING_ERR, u64.encode(0n), { fds: [err.fd], ack: true });
    const q0 = await fe.startQueue(0, { size: 64 });
    const q1 = await fe.startQueue(1, { size: 64 });
    await fe.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
    const d = q0.driver as SplitDriver;
    d.writeDesc(0, { addr: 0, len: 8, flags: 1 /* NEXT */, next: 0 }); // a loop
    d.setAvailRing(0, 0);
    d.setAvailIdx(1);
    q0.kick();
    await until(() => session.queues()[0].broken, 2000, 'queue 0 broken');
    expect(err.read()).to.equal(1n);
    expect(Number(await fe.getStatus()) & DeviceStatus.DEVICE_NEEDS_RESET).to.equal(DeviceStatus.DEVICE_NEEDS_RESET);
    await echo(q1, [1, 2, 3]);
    expect(h.logs.some((l) => l.level === 'error' && /DESC_LOOP/.test(String(l.reason)))).to.equal(true);
    err.close();
  });

  it('resets and renegotiates on the same connection (RESET_DEVICE, SET_STATUS 0), as a rebooting guest does', async () => {
    h = await new Harness(1).start();
    const { fe, session } = await h.connect();
    for (let round = 0; round < 3; round++) {
      await fe.negotiate({ features: round === 1 ? ~0n : ~bit(VIRTIO_F_RING_PACKED) });
      if (round === 0) await fe.setupMemory(8 * MiB);
      else
        await fe.request(Req.SET_MEM_TABLE, memTable.encode([{ gpa: 0n, size: BigInt(8 * MiB), uva: FRONTEND_UVA_BASE, mmapOffset: 0n }]), {
          fds: [(fe as unknown as { memFd: number }).memFd],
          ack: true,
        });
      const q = await fe.startQueue(0, { size: 64 });
      await echo(q, [round, 1]);
      fe.queues.get(0)!.close();
      fe.queues.delete(0);
      if (round === 0) await fe.request(Req.RESET_DEVICE, undefined, { ack: true });
      else await fe.setStatus(0);
      expect(session.queues()[0].started).to.equal(false);
      expect(session.negotiatedFeatures).to.equal(0n);
    }
    expect(h.dev.events.filter((e) => e.what === 'reset').length).to.equal(3);
  });

  for (const layout of ['split', 'packed'] as const) {
    it(`GET_VRING_BASE after SET_STATUS 0 answers where the ring stopped, as QEMU 7.2 stops a device (${layout})`, async () => {
      h = await new Harness(2).start();
      const { fe, session } = await h.connect();
      await fe.negotiate({ features: layout === 'packed' ? ~0n : ~bit(VIRTIO_F_RING_PACKED) });
      await fe.setupMemory(8 * MiB);
      const q0 = await fe.startQueue(0, { size: 64 });
      const q1 = await fe.startQueue(1, { size: 64 });
      // 100 chains: past the ring size once, so a packed ring's wrap counters have flipped.
      for (let i = 0; i < 100; i++) await echo(q0, [i & 0xff, 7]);
      for (let i = 0; i < 3; i++) await echo(q1, [i, 8]);
      await fe.setStatus(0); // QEMU before 8.1: SET_STATUS 0, then GET_VRING_BASE per ring
      expect(session.queues()[0].started).to.equal(false);
      const b0 = await fe.stopQueue(0);
      const b1 = await fe.stopQueue(1);
      if (layout === 'split') {
        expect([b0, b1]).to.deep.equal([100, 3]);
      } else {
        // Descriptor index in bits 0-14 and its wrap counter in bit 15 (the used side in
        // 16-31). Two descriptors a chain: 200 = 3 * 64 + 8, the wrap counter flipped 3 times.
        expect(b0 & 0xffff).to.equal(8);
        expect(b0 >>> 16).to.equal(8);
        expect(b1).to.equal(0x8006_8006);
      }
    });
  }

  it('NET_SET_MTU and SEND_RARP reach the device; an invalid MTU is refused with REPLY_ACK', async () => {
    h = await new Harness().start();
    const { fe } = await h.connect();
    await fe.negotiate();
    await fe.request(Req.NET_SET_MTU, u64.encode(9000n), { ack: true });
    let failed = false;
    await fe.request(Req.NET_SET_MTU, u64.encode(20n), { ack: true }).catch(() => (failed = true));
    expect(failed).to.equal(true);
    await fe.request(Req.SEND_RARP, u64.encode(0x0000_5a44_3322_1152n));
    await until(() => h.dev.events.some((e) => e.what === 'rarp'));
    expect(h.dev.events.find((e) => e.what === 'rarp')?.value).to.deep.equal([0x52, 0x11, 0x22, 0x33, 0x44, 0x5a]);
    expect(h.dev.mtu).to.equal(9000);
  });

  it('logs dirty pages of every buffer and used ring write when LOG_ALL is on (live migration)', async () => {
    h = await new Harness(1).start();
    const { fe } = await h.connect();
    await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
    const memBytes = 16 * MiB;
    await fe.setupMemory(memBytes);
    const q = await fe.startQueue(0, { size: 64 });
    const d = q.driver as SplitDriver;
    // A log covering all of memory: one bit per 4 KiB page.
    const logBytes = memBytes / 4096 / 8;
    const logFd = createMemfd('log', logBytes);
    const logMem = GuestMemory.map([{ fd: logFd, gpa: 0n, size: BigInt(logBytes), uva: 0n, mmapOffset: 0n }]);
    const reply = await fe.request(Req.SET_LOG_BASE, logArea.encode({ size: BigInt(logBytes), offset: 0n }), { fds: [logFd], reply: true });
    expect(u64.decode(reply!.payload)).to.equal(0n);
    await fe.setFeatures(fe.features | bit(VHOST_F_LOG_ALL));
    await fe.request(
      Req.SET_VRING_ADDR,
      vringAddr.encode({
        index: 0,
        flags: VRING_F_LOG,
        desc: FRONTEND_UVA_BASE + BigInt(d.descAddr),
        used: FRONTEND_UVA_BASE + BigInt(d.usedAddr),
        avail: FRONTEND_UVA_BASE + BigInt(d.availAddr),
        log: BigInt(d.usedAddr),
      }),
      { ack: true },
    );
    const bits = logMem.view(0);
    bits.fill(0);
    // A writable buffer spanning 3 pages, written for 2 pages' worth (+1 byte) only.
    const wAddr = 10 * MiB - 16;
    const id = d.add([
      { len: 5000, writable: false, data: new Uint8Array(5000).fill(1) },
      { len: 3 * 4096, writable: true, addr: wAddr },
    ]);
    q.publishAndKick();
    await q.waitUsed(1);
    void id;
    const page = (a: number) => (bits[a >> 15] >> ((a >> 12) & 7)) & 1;
    expect(page(wAddr), 'first written page').to.equal(1);
    expect(page(wAddr + 4096), 'second written page').to.equal(1);
    expect(page(wAddr + 4999), 'page of the last written byte').to.equal(1);
    expect(page(wAddr + 3 * 4096 - 1), 'page not written (len 5000)').to.equal(0);
    expect(page(d.usedAddr), 'used ring').to.equal(1);
    expect(page(d.availAddr === d.usedAddr ? 0 : 8 * MiB), 'an untouched page').to.equal(0);
    // Logging off: nothing more is marked.
    await fe.setFeatures(fe.features & ~bit(VHOST_F_LOG_ALL));
    bits.fill(0);
    await echo(q, [1, 2]);
    expect(bits.every((b) => b === 0)).to.equal(true);
    logMem.close();
    closeSync(logFd);
  });

  it('RESET_OWNER stops every ring (deprecated message, handled as the spec recommends); SET_LOG_FD takes its eventfd', async () => {
    h = await new Harness(2).start();
    const { fe, session } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(4 * MiB);
    const q0 = await fe.startQueue(0, { size: 64 });
    await fe.startQueue(1, { size: 64 });
    await echo(q0, [1, 2]);
    const logEvt = new EventFd();
    const before = fdCount();
    await fe.request(Req.SET_LOG_FD, undefined, { fds: [logEvt.fd], ack: true });
    expect(fdCount(), 'the backend keeps one fd for the log eventfd').to.equal(before + 1);
    await fe.request(Req.RESET_OWNER, undefined, { ack: true });
    expect(session.queues().map((q) => q.started)).to.deep.equal([false, false]);
    expect(h.dev.events.filter((e) => e.what === 'stop').length).to.equal(2);
    logEvt.close();
  });

  it('GET_INFLIGHT_FD hands out a zeroed shared area of the right size; SET_INFLIGHT_FD takes it back', async () => {
    h = await new Harness(2).start();
    const { fe } = await h.connect();
    await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
    const m = await fe.request(Req.GET_INFLIGHT_FD, inflightArea.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: 128 }), { reply: true });
    const a = inflightArea.decode(m!.payload);
    expect(a.mmapSize).to.equal(BigInt(2 * inflightQueueBytes(128, false)));
    expect(m!.fds).to.have.length(1);
    const area = GuestMemory.map([{ fd: m!.fds[0], gpa: 0n, size: a.mmapSize, uva: 0n, mmapOffset: 0n }]);
    expect(area.view(0).every((b) => b === 0)).to.equal(true);
    await fe.request(Req.SET_INFLIGHT_FD, inflightArea.encode(a), { fds: [m!.fds[0]], ack: true });
    area.close();
    closeSync(m!.fds[0]);
  });

  it('sends CONFIG_CHANGE_MSG on the backend channel (SET_BACKEND_REQ_FD)', async () => {
    h = await new Harness().start();
    const { fe, session } = await h.connect();
    await fe.negotiate();
    const [mine, theirs] = socketPair();
    await fe.request(Req.SET_BACKEND_REQ_FD, undefined, { fds: [theirs], ack: true });
    closeFd(theirs);
    expect(session.notifyConfigChange()).to.equal(true);
    const buf = new Uint8Array(HEADER_SIZE);
    await until(() => {
      const r = recvMessage(mine, buf, 0);
      return r !== null && r.bytes === HEADER_SIZE;
    });
    const hdr = decodeHeader(buf);
    expect(hdr.request).to.equal(BackendReq.CONFIG_CHANGE_MSG);
    expect(hdr.flags & FLAG_REPLY).to.equal(0);
    closeFd(mine);
  });

  it('server mode: listens again after a frontend leaves; tears the session down with no fd left', async () => {
    h = await new Harness(1).start();
    const before = fdCount();
    for (let i = 0; i < 5; i++) {
      const { fe } = await h.connect();
      await fe.negotiate();
      await fe.setupMemory(2 * MiB);
      const q = await fe.startQueue(0, { size: 32 });
      await echo(q, [i, 0, i]);
      const closed = h.sessionClosed();
      fe.close();
      h.fe = null;
      expect(await closed).to.equal('eof');
    }
    expect(fdCount()).to.equal(before);
    expect(h.dev.events.filter((e) => e.what === 'reset').length).to.equal(5);
  });

  it('refuses a second frontend while one is connected', async () => {
    h = await new Harness(1).start();
    const { fe } = await h.connect();
    await fe.negotiate();
    const { VhostUserFrontend } = await import('../../src/vhost-user/frontend.js');
    const other = await VhostUserFrontend.connect(h.socket, { timeoutMs: 500 });
    let err: Error | null = null;
    await other.getFeatures().catch((e) => (err = e));
    expect(err!.message).to.match(/closed|no reply/);
    other.close();
    expect(await fe.getFeatures()).to.be.a('bigint');
  });

  it('a frontend that connects while the previous session still stops its rings waits for it and is served, not refused', async () => {
    // A device whose rings take 300 ms to stop holds the closing session open that long.
    class SlowStop extends EchoDevice {
      override async queueStop(q: QueueContext): Promise<void> {
        await new Promise((r) => setTimeout(r, 300));
        await super.queueStop(q);
      }
    }
    h = await new Harness(1, new SlowStop(1)).start();
    const { fe, session } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(2 * MiB);
    await fe.startQueue(0, { size: 32 });
    fe.close();
    await until(() => session.closed, 2000, 'the first session sees the hang-up');
    const { VhostUserFrontend } = await import('../../src/vhost-user/frontend.js');
    const next = await VhostUserFrontend.connect(h.socket, { timeoutMs: 3000 });
    expect(h.be.session, 'still the first session, stopping').to.equal(session);
    await next.negotiate();
    await next.setupMemory(2 * MiB);
    const q = await next.startQueue(0, { size: 32 });
    await echo(q, [7, 8, 9]);
    expect(h.be.session).to.not.equal(session);
    expect(h.logs.some((l) => /previous one has closed its connection/.test(l.msg))).to.equal(true);
    next.close();
  });

  it('client mode: connects to a listening frontend, and reconnects after it drops the connection', async () => {
    const { listenUnix, acceptUnix } = await import('../../src/native/unix-socket.js');
    const { VhostUserFrontend } = await import('../../src/vhost-user/frontend.js');
    h = new Harness(1);
    const lfd = listenUnix(h.socket);
    await h.start({ mode: 'client', reconnectMinMs: 20 });
    for (let i = 0; i < 3; i++) {
      let cfd: number | null = null;
      await until(() => (cfd = acceptUnix(lfd)) !== null, 3000, 'backend connecting');
      const fe = VhostUserFrontend.fromFd(cfd!);
      await fe.negotiate();
      await fe.setupMemory(2 * MiB);
      const q = await fe.startQueue(0, { size: 32 });
      await echo(q, [7, i]);
      fe.close();
    }
    closeSync(lfd);
  });

  it('frontend requests fail clearly when the socket is not a vhost-user backend', async () => {
    const { listenUnix, acceptUnix, sendMessage } = await import('../../src/native/unix-socket.js');
    const { VhostUserFrontend } = await import('../../src/vhost-user/frontend.js');
    h = new Harness(1);
    const lfd = listenUnix(h.socket);
    const fe = await VhostUserFrontend.connect(h.socket, { timeoutMs: 300 });
    let peer: number | null = null;
    await until(() => (peer = acceptUnix(lfd)) !== null);
    let err: Error | null = null;
    await fe.getFeatures().catch((e) => (err = e));
    expect(err!.message).to.match(/no reply to VHOST_USER_GET_FEATURES within 300 ms/);
    // A peer that answers garbage
    const fe2 = await VhostUserFrontend.connect(h.socket, { timeoutMs: 1000 });
    let peer2: number | null = null;
    await until(() => (peer2 = acceptUnix(lfd)) !== null);
    const p = fe2.getFeatures().catch((e) => e as Error);
    sendMessage(peer2!, new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\n\r\n'));
    expect(((await p) as Error).message).to.match(/closed|version/);
    fe2.close();
    for (const fd of [peer!, peer2!, lfd]) closeSync(fd);
    void readSync;
  });

  describe('regressions found by the hostile-frontend review', () => {
    let rejections: unknown[] = [];
    const onRejection = (e: unknown) => rejections.push(e);
    beforeEach(() => {
      rejections = [];
      process.on('unhandledRejection', onRejection);
    });
    afterEach(() => {
      process.off('unhandledRejection', onRejection);
    });

    it('a second SET_VRING_KICK on a running ring drains it and restarts from its state (no double pop)', async () => {
      h = await new Harness(1).start();
      const { fe } = await h.connect();
      await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
      await fe.setupMemory(4 * MiB);
      const q = await fe.startQueue(0, { size: 64 });
      h.dev.hold = true;
      for (let i = 0; i < 2; i++)
        q.driver.add([
          { len: 1, writable: false, data: Uint8Array.of(i) },
          { len: 4, writable: true },
        ]);
      q.publishAndKick();
      await until(() => h.dev.served === 2);
      const kick = new EventFd();
      await fe.request(Req.SET_VRING_KICK, u64.encode(0n), { fds: [kick.fd], ack: true });
      h.dev.hold = false;
      expect((q.driver as SplitDriver).used().length, 'held chains completed by the drain').to.equal(2);
      kick.write(1n);
      await new Promise((r) => setTimeout(r, 50));
      expect(h.dev.served, 'nothing popped twice').to.equal(2);
      q.driver.add([
        { len: 1, writable: false, data: Uint8Array.of(9) },
        { len: 4, writable: true },
      ]);
      q.driver.publish();
      kick.write(1n);
      await until(() => h.dev.served === 3);
      kick.close();
      expect(rejections).to.deep.equal([]);
    });

    it('SET_VRING_ENABLE 0 then GET_VRING_BASE answers only after the device drained the ring', async () => {
      h = await new Harness(1).start();
      const { fe } = await h.connect();
      await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
      await fe.setupMemory(4 * MiB);
      const q = await fe.startQueue(0, { size: 64 });
      h.dev.hold = true;
      for (let i = 0; i < 3; i++)
        q.driver.add([
          { len: 1, writable: false, data: Uint8Array.of(i) },
          { len: 4, writable: true },
        ]);
      q.publishAndKick();
      await until(() => h.dev.served === 3);
      await fe.request(Req.SET_VRING_ENABLE, vringState.encode({ index: 0, num: 0 }), { ack: true });
      const base = await fe.stopQueue(0);
      expect(base).to.equal(3);
      expect((q.driver as SplitDriver).used().length, 'completed before the reply').to.equal(3);
      expect(rejections).to.deep.equal([]);
    });

    it('a frontend that never reads its replies does not make the backend queue them without end', async () => {
      const { connectUnix, sendMessage } = await import('../../src/native/unix-socket.js');
      const { encodeHeader } = await import('../../src/vhost-user/protocol.js');
      h = await new Harness(1).start();
      const fd = connectUnix(h.socket);
      const msg = encodeHeader(Req.GET_FEATURES, 1, 0);
      const flood = new Uint8Array(msg.length * 1024);
      for (let i = 0; i < 1024; i++) flood.set(msg, i * msg.length);
      const rss0 = process.memoryUsage().rss;
      let sent = 0;
      const end = Date.now() + 1500;
      while (Date.now() < end) {
        const n = sendMessage(fd, flood);
        if (n === null) await new Promise((r) => setTimeout(r, 1));
        else sent += n / msg.length;
      }
      const grown = process.memoryUsage().rss - rss0;
      expect(sent, 'the backend stopped reading once its replies backed up').to.be.below(200000);
      expect(grown).to.be.below(64 * MiB);
      closeSync(fd);
    });
  });
});

describe('vhost-user session: regressions found by the property and fault tests', function () {
  this.timeout(10000);
  let h: Harness;
  afterEach(async () => h?.close());
  const UVA = 0x7f0000000000n;
  const mapsOf = (name: string): string[] =>
    readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .filter((l) => l.includes(`/memfd:${name}`));

  /** A raw frontend and the session it got; `closed` resolves with the session's close reason. */
  async function raw(): Promise<{ fe: RawFrontend; closed: Promise<string>; id: number }> {
    const fe = new RawFrontend(h.socket);
    const s = await h.be.nextSession();
    return { fe, closed: new Promise((resolve) => s.once('closed', resolve)), id: s.id };
  }

  async function reply(fe: RawFrontend): Promise<Message> {
    const r = await fe.next(3000);
    if (isEof(r)) throw new Error(`the backend closed the connection (${r.eof})`);
    return r;
  }

  it('GET_INFLIGHT_FD with NEED_REPLY and REPLY_ACK gets its reply only, not a REPLY_ACK on top', async () => {
    h = await new Harness(2).start();
    const { fe } = await raw();
    try {
      await fe.send(Req.SET_PROTOCOL_FEATURES, VERSION, u64.encode(bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.INFLIGHT_SHMFD)));
      await fe.send(Req.SET_OWNER, VERSION);
      await fe.send(Req.GET_INFLIGHT_FD, VERSION | FLAG_NEED_REPLY, inflightArea.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: 64 }));
      await fe.send(Req.GET_FEATURES, VERSION);
      const first = await reply(fe);
      expect(first.request).to.equal(Req.GET_INFLIGHT_FD);
      const area = decodeReply(Req.GET_INFLIGHT_FD, first);
      expect(area.mmapSize).to.equal(BigInt(2 * inflightQueueBytes(64, false)));
      first.fds.forEach((fd) => closeFd(fd));
      const second = await reply(fe);
      expect(reqName(second.request), 'the next reply answers GET_FEATURES').to.equal(reqName(Req.GET_FEATURES));
    } finally {
      fe.close();
    }
  });

  it('a refused request that has a reply of its own (GET_VRING_BASE of queue 9) gets no REPLY_ACK u64 in its place before the close', async () => {
    h = await new Harness(2).start();
    const { fe, closed } = await raw();
    try {
      await fe.send(Req.SET_PROTOCOL_FEATURES, VERSION, u64.encode(bit(ProtocolFeature.REPLY_ACK)));
      await fe.send(Req.SET_OWNER, VERSION);
      await fe.send(Req.GET_VRING_BASE, VERSION | FLAG_NEED_REPLY, vringState.encode({ index: 9, num: 0 }));
      expect(await closed).to.match(/GET_VRING_BASE: queue 9, the device has 2/);
      const r = await fe.next(3000);
      expect(isEof(r) ? r.eof : `a ${reqName((r as Message).request)} reply of ${(r as Message).payload.length} bytes`, 'what the frontend gets').to.be.oneOf(['eof', 'reset']);
    } finally {
      fe.close();
    }
  });

  it('a session closed while the device pauses its queues for a new memory table releases that table and its fds', async () => {
    // A device that pauses its queues (as the switch's data plane does) until told to go on.
    let release!: () => void;
    let pausing = false;
    class PausingDevice extends EchoDevice {
      pauseQueues(): Promise<void> {
        pausing = true;
        return new Promise((resolve) => (release = resolve));
      }
      resumeQueues(): void {}
    }
    h = await new Harness(1, new PausingDevice(1)).start();
    const fds0 = fdCount();
    const { fe, session } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(MiB);
    await fe.startQueue(0, { size: 64 });
    const memfd = createMemfd('vk-regress-pause', MiB);
    const pending = fe.request(Req.SET_MEM_TABLE, memTable.encode([{ gpa: 0n, size: BigInt(MiB), uva: FRONTEND_UVA_BASE, mmapOffset: 0n }]), { fds: [memfd], ack: true }).catch((e: Error) => e);
    closeFd(memfd);
    await until(() => pausing, 3000, 'the device to be asked to pause');
    expect(mapsOf('vk-regress-pause'), 'the new table is mapped, waiting for the pause').to.have.length(1);
    await session.close('backend stopping');
    release();
    expect(await pending).to.be.instanceOf(Error);
    await new Promise((r) => setTimeout(r, 20));
    expect(mapsOf('vk-regress-pause'), 'mapped after the session').to.deep.equal([]);
    fe.close();
    await until(() => h.be.session === null);
    expect(fdCount(), 'fds').to.equal(fds0);
  });

  it('ADD_MEM_REG / REM_MEM_REG: a removed region is unmapped at once, and nothing stays mapped after the session (no gc needed)', async () => {
    h = await new Harness(1).start();
    const fds0 = fdCount();
    const { fe } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(MiB);
    const extra = [0, 1, 2].map((i) => ({ fd: createMemfd(`vk-regress-add-${i}`, 64 * 1024), gpa: BigInt(16 + i) * BigInt(MiB) }));
    try {
      for (const x of extra) await fe.request(Req.ADD_MEM_REG, singleRegion.encode({ gpa: x.gpa, size: 65536n, uva: UVA + x.gpa, mmapOffset: 0n }), { fds: [x.fd], ack: true });
      expect(
        extra.map((_, i) => mapsOf(`vk-regress-add-${i}`).length),
        'each added region mapped once',
      ).to.deep.equal([1, 1, 1]);
      await fe.request(Req.REM_MEM_REG, singleRegion.encode({ gpa: extra[1].gpa, size: 65536n, uva: UVA + extra[1].gpa, mmapOffset: 0n }), { ack: true });
      expect(
        extra.map((_, i) => mapsOf(`vk-regress-add-${i}`).length),
        'the removed region is unmapped',
      ).to.deep.equal([1, 0, 1]);
      const closed = h.sessionClosed();
      fe.close();
      await closed;
      expect(
        extra.map((_, i) => mapsOf(`vk-regress-add-${i}`).length),
        'nothing mapped after the session',
      ).to.deep.equal([0, 0, 0]);
    } finally {
      for (const x of extra) closeFd(x.fd);
    }
    expect(fdCount(), 'fds').to.equal(fds0);
  });

  it('a ring that fails to start (misaligned packed descriptor ring) leaves no mapping behind once the session ends', async () => {
    h = await new Harness(1).start();
    const memfd = createMemfd('vk-regress-ring', MiB);
    const kick = new EventFd();
    const { fe, closed } = await raw();
    try {
      await fe.send(Req.SET_OWNER, VERSION);
      await fe.send(Req.SET_FEATURES, VERSION, u64.encode(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED)));
      await fe.send(Req.SET_MEM_TABLE, VERSION, memTable.encode([{ gpa: 0n, size: BigInt(MiB), uva: UVA, mmapOffset: 0n }]), [memfd]);
      await fe.send(Req.SET_VRING_NUM, VERSION, vringState.encode({ index: 0, num: 64 }));
      await fe.send(Req.SET_VRING_ADDR, VERSION, vringAddr.encode({ index: 0, flags: 0, desc: UVA + 0x1001n, used: UVA + 0x3000n, avail: UVA + 0x2000n, log: 0n }));
      await fe.send(Req.SET_VRING_KICK, VERSION, u64.encode(0n), [kick.fd]);
      expect(await closed).to.match(/queue 0: /);
      expect(mapsOf('vk-regress-ring'), 'mapped after the session').to.deep.equal([]);
    } finally {
      fe.close();
      kick.close();
      closeFd(memfd);
    }
  });

  it('SET_BACKEND_REQ_FD with an fd that cannot be watched (a memfd): the session closes saying why, the fd is closed', async () => {
    h = await new Harness(1).start();
    const fds0 = fdCount();
    const memfd = createMemfd('vk-regress-backend-fd', 4096);
    const { fe, closed, id } = await raw();
    try {
      await fe.send(Req.SET_PROTOCOL_FEATURES, VERSION, u64.encode(bit(ProtocolFeature.BACKEND_REQ)));
      await fe.send(Req.SET_BACKEND_REQ_FD, VERSION, new Uint8Array(0), [memfd]);
      const reason = await closed;
      expect(reason).to.match(/EPERM/);
      expect(h.logs.some((r) => r.session === id && r.level === 'error' && r.reason === reason)).to.equal(true);
    } finally {
      fe.close();
      closeFd(memfd);
    }
    await until(() => h.be.session === null);
    expect(fdCount(), 'fds').to.equal(fds0);
  });
});
