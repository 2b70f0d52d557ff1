// The virtio-blk device through vhost-user, driven by our frontend: every request type,
// file and RAM disks, many requests in flight, split and packed rings.
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { VhostUserBackend } from '../../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../../src/vhost-user/frontend.js';
import { openDisk, type Disk } from '../../../src/backends/blk/disk.js';
import { BlkClient, BlkReqType, BlkStatus } from '../../lib/blk-client.js';
import { VIRTIO_F_RING_PACKED, bit } from '../../../src/virtio/features.js';
import { decodeBlkConfig } from '../../../src/virtio/blk.js';
import { setLogSink } from '../../../src/log.js';
import { closeFd, recvMessage, sendMessage, socketPair } from '../../../src/native/unix-socket.js';
import { BackendReq, FLAG_NEED_REPLY, FLAG_REPLY, HEADER_SIZE, ProtocolFeature, Req, decodeHeader, encodeMessage, u64 } from '../../../src/vhost-user/protocol.js';

/** Polls `fd` (non-blocking) for one whole header-only message, for up to `ms`. */
async function recvHeader(fd: number, ms = 2000): Promise<{ request: number; flags: number; size: number } | null> {
  const buf = new Uint8Array(HEADER_SIZE);
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const r = recvMessage(fd, buf, 0);
    if (r !== null && r.bytes === HEADER_SIZE) return decodeHeader(buf);
    await new Promise((res) => setTimeout(res, 10));
  }
  return null;
}

const MiB = 1 << 20;

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 13 + seed * 7 + (i >> 9)) & 0xff);
}

for (const layout of ['split', 'packed'] as const) {
  for (const kind of ['file', 'ram'] as const) {
    describe(`virtio-blk device (${kind}, ${layout} ring) through our frontend`, function () {
      this.timeout(20000);
      let dir: string;
      let disk: Disk;
      let be: VhostUserBackend;
      let fe: VhostUserFrontend;
      let old: ReturnType<typeof setLogSink>;
      const img = () => join(dir, 'disk.img');

      beforeEach(async () => {
        old = setLogSink(() => undefined);
        dir = mkdtempSync(join('/dev/shm', 'vk-blk-'));
        writeFileSync(img(), new Uint8Array(0));
        truncateSync(img(), 16 * MiB);
        disk = openDisk(kind === 'file' ? { file: img(), serial: 'vhostkit-test-01' } : { ramBytes: 16 * MiB, serial: 'vhostkit-test-01' });
        be = new VhostUserBackend(disk.device, { socket: join(dir, 'blk.sock') });
        await be.start();
        fe = await VhostUserFrontend.connect(join(dir, 'blk.sock'));
        await fe.negotiate({ features: layout === 'packed' ? ~0n : ~bit(VIRTIO_F_RING_PACKED) });
        await fe.setupMemory(32 * MiB);
      });
      afterEach(async () => {
        fe.close();
        await be.stop();
        disk.close();
        rmSync(dir, { recursive: true, force: true });
        setLogSink(old);
      });

      if (kind === 'file') {
        it('locks the image: a second server of the same file is refused', () => {
          expect(() => openDisk({ file: img() })).to.throw(/in use: another disk or process serves this image/);
        });
      }

      it('announces its geometry in the config space', async () => {
        const c = decodeBlkConfig((await fe.getConfig(0, 60))!);
        expect(c.capacity).to.equal(BigInt((16 * MiB) / 512));
        expect(c.blkSize).to.equal(512);
        expect(c.segMax).to.equal(126);
        expect(c.numQueues).to.equal(1);
        expect(c.writeback).to.equal(1);
      });

      it('serves IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES; unknown types get UNSUPP', async () => {
        const q = await fe.startQueue(0, { size: 128 });
        expect(q.layout).to.equal(layout);
        const blk = new BlkClient(q);
        const data = pattern(65536, 1);
        expect((await blk.write(8n, data)).status).to.equal(BlkStatus.OK);
        const r = await blk.read(8n, 65536);
        expect(r.status).to.equal(BlkStatus.OK);
        expect(Buffer.from(r.data!).equals(Buffer.from(data))).to.equal(true);
        expect((await blk.flush()).status).to.equal(BlkStatus.OK);
        const id = await blk.request(BlkReqType.GET_ID, 0n, { readLen: 20 });
        expect(Buffer.from(id.data!).toString('utf8').replace(/\0+$/, '')).to.equal('vhostkit-test-01');
        const seg = (sector: bigint, n: number, unmap = 0) => {
          const s = new Uint8Array(16);
          const v = new DataView(s.buffer);
          v.setBigUint64(0, sector, true);
          v.setUint32(8, n, true);
          v.setUint32(12, unmap, true);
          return s;
        };
        expect((await blk.request(BlkReqType.WRITE_ZEROES, 0n, { data: seg(8n, 16) })).status).to.equal(BlkStatus.OK);
        const z = await blk.read(8n, 16 * 512);
        expect(z.data!.every((b) => b === 0)).to.equal(true);
        const after = await blk.read(24n, 512);
        expect(Buffer.from(after.data!).equals(Buffer.from(data.subarray(16 * 512, 17 * 512)))).to.equal(true);
        expect((await blk.request(BlkReqType.DISCARD, 0n, { data: seg(40n, 8) })).status).to.equal(BlkStatus.OK);
        expect((await blk.request(99, 0n, { readLen: 512 })).status).to.equal(BlkStatus.UNSUPP);
        if (kind === 'file') {
          const f = readFileSync(img());
          expect(
            f.subarray(8 * 512, 24 * 512).every((b) => b === 0),
            'zeros in the file',
          ).to.equal(true);
          expect(Buffer.from(f.subarray(24 * 512, 40 * 512)).equals(Buffer.from(data.subarray(16 * 512, 32 * 512)))).to.equal(true);
        }
      });

      it('answers IOERR for bad requests and keeps serving', async () => {
        const q = await fe.startQueue(0, { size: 128 });
        const blk = new BlkClient(q);
        const cap = BigInt((16 * MiB) / 512);
        expect((await blk.read(cap, 512)).status, 'beyond the capacity').to.equal(BlkStatus.IOERR);
        expect((await blk.read(cap - 1n, 1024)).status, 'crossing the end').to.equal(BlkStatus.IOERR);
        expect((await blk.write(0n, new Uint8Array(100))).status, 'not a multiple of 512').to.equal(BlkStatus.IOERR);
        expect((await blk.read(0xffffffffffffffffn, 512)).status, 'sector wraps').to.equal(BlkStatus.IOERR);
        expect((await blk.write(0n, pattern(512, 3))).status, 'still serving').to.equal(BlkStatus.OK);
      });

      it('resize: grows with CONFIG_CHANGE_MSG to the frontend, GET_CONFIG answers the new capacity, I/O past the old end works, beyond the new end IOERR; shrinking refused', async () => {
        const q = await fe.startQueue(0, { size: 128 });
        const blk = new BlkClient(q);
        const [mine, theirs] = socketPair();
        await fe.request(Req.SET_BACKEND_REQ_FD, undefined, { fds: [theirs], ack: true });
        closeFd(theirs);
        const session = be.session!;
        const oldCap = BigInt((16 * MiB) / 512);
        const tail = pattern(4096, 9);
        expect((await blk.write(oldCap - 8n, tail)).status).to.equal(BlkStatus.OK);
        expect((await blk.write(oldCap, pattern(512, 1))).status, 'past the old end').to.equal(BlkStatus.IOERR);
        // file: grown with truncate and re-read (no size); RAM: a size.
        if (kind === 'file') truncateSync(img(), 32 * MiB);
        const r = kind === 'file' ? disk.resize() : disk.resize(BigInt(32 * MiB));
        expect(r).to.deep.equal({ oldBytes: BigInt(16 * MiB), newBytes: BigInt(32 * MiB) });
        expect(disk.size).to.equal(BigInt(32 * MiB));
        const h = await recvHeader(mine);
        expect(h?.request, 'CONFIG_CHANGE_MSG on the backend channel').to.equal(BackendReq.CONFIG_CHANGE_MSG);
        expect(h!.flags & FLAG_NEED_REPLY, 'REPLY_ACK negotiated: NEED_REPLY').to.equal(FLAG_NEED_REPLY);
        sendMessage(mine, encodeMessage(BackendReq.CONFIG_CHANGE_MSG, FLAG_REPLY, u64.encode(0n)));
        const newCap = BigInt((32 * MiB) / 512);
        expect(decodeBlkConfig((await fe.getConfig(0, 60))!).capacity, 'GET_CONFIG').to.equal(newCap);
        expect(session.configChangesSent).to.equal(1);
        expect(session.configChangeReplies).to.deep.equal({ ok: 1, failed: 0 });
        const past = pattern(65536, 4);
        expect((await blk.write(oldCap, past)).status, 'past the old end').to.equal(BlkStatus.OK);
        const back = await blk.read(oldCap, 65536);
        expect(Buffer.from(back.data!).equals(Buffer.from(past))).to.equal(true);
        expect(Buffer.from((await blk.read(oldCap - 8n, 4096)).data!).equals(Buffer.from(tail)), 'contents kept').to.equal(true);
        expect((await blk.write(newCap - 1n, pattern(512, 2))).status, 'the last sector').to.equal(BlkStatus.OK);
        expect((await blk.write(newCap, pattern(512, 2))).status, 'past the new end').to.equal(BlkStatus.IOERR);
        expect((await blk.read(newCap - 1n, 1024)).status, 'crossing the new end').to.equal(BlkStatus.IOERR);
        // Shrinking is refused, nothing changes, nobody is told.
        expect(() => disk.resize(BigInt(8 * MiB))).to.throw(RangeError, /shrinking is refused/);
        if (kind === 'file') {
          truncateSync(img(), 8 * MiB);
          expect(() => disk.resize()).to.throw(RangeError, /smaller than the disk: shrinking .* is refused/);
          truncateSync(img(), 32 * MiB);
        } else {
          expect(() => disk.resize()).to.throw(RangeError, /RAM disk needs a size/);
        }
        expect(() => disk.resize(BigInt(32 * MiB + 100))).to.throw(RangeError, /multiple of the block size/);
        expect(disk.size).to.equal(BigInt(32 * MiB));
        expect(await recvHeader(mine, 200)).to.equal(null);
        // The same size again: nothing to tell.
        disk.resize(BigInt(32 * MiB));
        expect(await recvHeader(mine, 200)).to.equal(null);
        if (kind === 'file') expect(readFileSync(img()).length).to.equal(32 * MiB);
        closeFd(mine);
      });

      if (kind === 'ram') {
        it('resize: a RAM disk grown many times (its mapping moves) keeps every byte written', async () => {
          const q = await fe.startQueue(0, { size: 128 });
          const blk = new BlkClient(q);
          let cap = BigInt((16 * MiB) / 512);
          for (let i = 0; i < 12; i++) {
            expect((await blk.write(cap - 8n, pattern(4096, i))).status).to.equal(BlkStatus.OK);
            cap *= 2n;
            disk.resize(cap * 512n); // up to 64 GiB, NORESERVE: only written pages are allocated
          }
          cap = BigInt((16 * MiB) / 512);
          for (let i = 0; i < 12; i++) {
            const r = await blk.read(cap - 8n, 4096);
            expect(Buffer.from(r.data!).equals(Buffer.from(pattern(4096, i))), `block ${i}`).to.equal(true);
            cap *= 2n;
          }
          expect(disk.engine.capacitySectors).to.equal(cap);
          // Grown again with 64 writes in flight: the move waits for them; all land.
          for (let i = 0; i < 64; i++) blk.submit(BlkReqType.OUT, BigInt(i * 16), { data: pattern(8192, 100 + i), indirect: true });
          q.publishAndKick();
          await new Promise((res) => setTimeout(res, 1)); // the kick is served on the event loop
          disk.resize(cap * 2n * 512n);
          const used = await q.waitUsed(64, 5000);
          expect(used.length).to.equal(64);
          for (let i = 0; i < 64; i++) {
            const r = await blk.read(BigInt(i * 16), 8192);
            expect(Buffer.from(r.data!).equals(Buffer.from(pattern(8192, 100 + i))), `write ${i}`).to.equal(true);
          }
        });
      } else {
        it('resize: a file disk given a size grows the file (sparse); a frontend without BACKEND_REQ is not told, the size still changes', async () => {
          fe.close();
          await be.nextSession().then((s) => s.done);
          fe = await VhostUserFrontend.connect(join(dir, 'blk.sock'));
          await fe.negotiate({ protocolFeatures: ~bit(ProtocolFeature.BACKEND_REQ) });
          await fe.setupMemory(32 * MiB);
          const s = await be.nextSession();
          disk.resize(BigInt(64 * MiB));
          expect(readFileSync(img()).length).to.equal(64 * MiB);
          expect(s.configChangesSent).to.equal(0);
          expect(decodeBlkConfig((await fe.getConfig(0, 60))!).capacity).to.equal(BigInt((64 * MiB) / 512));
        });
      }

      it('keeps 96 requests in flight and completes them all correctly', async () => {
        const q = await fe.startQueue(0, { size: 512 });
        const blk = new BlkClient(q);
        const ids = new Map<number, number>();
        for (let i = 0; i < 96; i++) ids.set(blk.submit(BlkReqType.OUT, BigInt(i * 16), { data: pattern(8192, i), indirect: i % 2 === 0 }), i);
        q.publishAndKick();
        const used = await q.waitUsed(96, 10000);
        expect(used.length).to.equal(96);
        for (const u of used) expect(blk.result(u.id, u.len).status).to.equal(BlkStatus.OK);
        for (let i = 0; i < 96; i += 17) {
          const r = await blk.read(BigInt(i * 16), 8192);
          expect(Buffer.from(r.data!).equals(Buffer.from(pattern(8192, i)))).to.equal(true);
        }
        expect(disk.engine.inFlight).to.equal(0);
      });

      it('GET_VRING_BASE waits for in-flight requests, then the queue restarts from its base', async () => {
        const q = await fe.startQueue(0, { size: 64 });
        const blk = new BlkClient(q);
        for (let i = 0; i < 20; i++) blk.submit(BlkReqType.OUT, BigInt(i * 8), { data: pattern(4096, i) });
        q.publishAndKick();
        const base = await fe.stopQueue(0);
        // split: last avail idx; packed: 60 descriptors consumed, wrap counters in bits 15/31
        expect(base & 0x7fff).to.equal(layout === 'split' ? 20 : 60);
        expect(disk.engine.inFlight).to.equal(0);
        expect(q.driver.used().length, 'all completed before the reply').to.equal(20);
      });
    });
  }
}
