// The virtio-blk device with the io_uring engine, through vhost-user and our frontend: one
// request at a time (QD 1: completed inside the submit and pushed on the kick's own wakeup)
// and many at once, with and without polling after a kick; pollUs is checked.
import { expect } from 'chai';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../../src/vhost-user/frontend.js';
import { openDisk, type Disk } from '../../../src/backends/blk/disk.js';
import { BlkClient, BlkReqType, BlkStatus } from '../../lib/blk-client.js';
import { setLogSink } from '../../../src/log.js';

const MiB = 1 << 20;

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 11 + (i >> 9)) & 0xff);
}

for (const where of ['/dev/shm', tmpdir()]) {
  for (const pollUs of [0, 50]) {
    describe(`virtio-blk device, io_uring engine (file in ${where}, pollUs ${pollUs})`, function () {
      this.timeout(20000);
      let dir: string;
      let disk: Disk;
      let be: VhostUserBackend;
      let fe: VhostUserFrontend;
      let old: ReturnType<typeof setLogSink>;

      beforeEach(async () => {
        old = setLogSink(() => undefined);
        dir = mkdtempSync(join(where, 'vk-blk-uring-'));
        writeFileSync(join(dir, 'disk.img'), new Uint8Array(0));
        truncateSync(join(dir, 'disk.img'), 16 * MiB);
        disk = openDisk({ file: join(dir, 'disk.img'), engine: 'io_uring', pollUs });
        be = new VhostUserBackend(disk.device, { socket: join(dir, 'blk.sock') });
        await be.start();
        fe = await VhostUserFrontend.connect(join(dir, 'blk.sock'));
        await fe.negotiate();
        await fe.setupMemory(32 * MiB);
      });
      afterEach(async () => {
        fe.close();
        await be.stop();
        disk.close();
        rmSync(dir, { recursive: true, force: true });
        setLogSink(old);
      });

      it('serves requests one at a time and many at once; every byte comes back', async () => {
        const blk = new BlkClient(await fe.startQueue(0, { size: 128 }));
        for (let i = 0; i < 32; i++) {
          const d = pattern(4096, i);
          expect((await blk.write(BigInt(i * 8), d)).status).to.equal(BlkStatus.OK);
          const r = await blk.read(BigInt(i * 8), 4096);
          expect(r.status).to.equal(BlkStatus.OK);
          expect(Buffer.from(r.data!).equals(Buffer.from(d)), `request ${i}`).to.equal(true);
        }
        // Many at once: a large write (the ring on both file systems) and 16 small reads.
        const big = pattern(256 * 1024, 99);
        const ids = [blk.submit(BlkReqType.OUT, 1024n, { data: big }), ...Array.from({ length: 16 }, (_, i) => blk.submit(BlkReqType.IN, BigInt(i * 8), { readLen: 4096 }))];
        blk.q.publishAndKick();
        const used = await blk.q.waitUsed(ids.length, 5000);
        expect(used.map((u) => u.id).sort((x, y) => x - y)).to.deep.equal([...ids].sort((x, y) => x - y));
        for (const u of used) {
          const k = ids.indexOf(u.id);
          const r = blk.result(u.id, u.len, k === 0 ? 0 : 4096);
          expect(r.status, `request ${k}`).to.equal(BlkStatus.OK);
          if (k > 0) expect(Buffer.from(r.data!).equals(Buffer.from(pattern(4096, k - 1))), `read ${k}`).to.equal(true);
        }
        const back = await blk.read(1024n, big.length);
        expect(Buffer.from(back.data!).equals(Buffer.from(big))).to.equal(true);
        // Eight 128 KiB reads at once: all through the ring (tmpfs: each completes on io-wq and,
        // with deferred task work, is posted by the reap the eventfd wakes).
        const before = disk.engine.stats().uring.sqes;
        const half = 128 * 1024;
        const reads = Array.from({ length: 8 }, (_, i) => blk.submit(BlkReqType.IN, 1024n + BigInt((i % 2) * (half / 512)), { readLen: half }));
        blk.q.publishAndKick();
        const got = await blk.q.waitUsed(reads.length, 5000);
        expect(got).to.have.length(8);
        for (const u of got) {
          const k = reads.indexOf(u.id);
          const r = blk.result(u.id, u.len, half);
          expect(r.status, `large read ${k}`).to.equal(BlkStatus.OK);
          expect(Buffer.from(r.data!).equals(Buffer.from(big.subarray((k % 2) * half, (k % 2) * half + half))), `large read ${k}`).to.equal(true);
        }
        const st = disk.engine.stats();
        expect(st.ioerr + st.unsupp).to.equal(0);
        expect(st.uring.sqes + st.uring.copiedInline, 'requests the io_uring engine ran itself').to.be.at.least(64);
        // Small requests on tmpfs are copied inline or go to the pool; 128 KiB ones take the ring.
        expect(st.uring.sqes - before, 'the large reads went through the ring').to.equal(8);
        // SINGLE_ISSUER | DEFER_TASKRUN on a buffered tmpfs file only (Linux 6.1 or newer here).
        expect(st.uring.deferTaskrun, 'deferred task work').to.equal(where === '/dev/shm');
      });
    });
  }
}

describe('virtio-blk device: pollUs', () => {
  it('with two queues started, a poll watches both: a chain on the other queue is served without its kick', async () => {
    const old = setLogSink(() => undefined);
    const dir = mkdtempSync(join('/dev/shm', 'vk-blk-poll-'));
    writeFileSync(join(dir, 'disk.img'), new Uint8Array(0));
    truncateSync(join(dir, 'disk.img'), MiB);
    // A small request on tmpfs is copied inline: nothing is left in flight, so the poll runs.
    const disk = openDisk({ file: join(dir, 'disk.img'), engine: 'io_uring', pollUs: 1000, numQueues: 2 });
    const be = new VhostUserBackend(disk.device, { socket: join(dir, 'blk.sock') });
    await be.start();
    const fe = await VhostUserFrontend.connect(join(dir, 'blk.sock'));
    try {
      await fe.negotiate();
      await fe.setupMemory(8 * MiB);
      const q0 = new BlkClient(await fe.startQueue(0, { size: 64 }));
      const q1 = new BlkClient(await fe.startQueue(1, { size: 64 }));
      expect((await q0.write(0n, pattern(4096, 1))).status).to.equal(BlkStatus.OK);
      const before = { polls: disk.device.polls, hits: disk.device.pollHits };
      // Queue 1: a read made available and never kicked. Queue 0: a write, kicked; once it
      // is done the poll that follows finds queue 1's chain.
      const id = q1.submit(BlkReqType.IN, 0n, { readLen: 4096 });
      q1.q.driver.publish();
      expect((await q0.write(8n, pattern(4096, 2))).status).to.equal(BlkStatus.OK);
      const used = await q1.q.waitUsed(1, 5000);
      expect(used.map((u) => u.id)).to.deep.equal([id]);
      const r = q1.result(id, used[0].len, 4096);
      expect(r.status).to.equal(BlkStatus.OK);
      expect(Buffer.from(r.data!).equals(Buffer.from(pattern(4096, 1)))).to.equal(true);
      expect(disk.device.polls - before.polls, 'polls with two queues started').to.be.above(0);
      expect(disk.device.pollHits - before.hits, 'the poll found queue 1').to.be.above(0);
    } finally {
      fe.close();
      await be.stop();
      disk.close();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(old);
    }
  });

  it('is refused outside 0..1000 and ignored by the thread engine', () => {
    const dir = mkdtempSync(join('/dev/shm', 'vk-blk-uring-'));
    try {
      writeFileSync(join(dir, 'disk.img'), new Uint8Array(0));
      truncateSync(join(dir, 'disk.img'), MiB);
      for (const bad of [-1, 1001, 1.5]) expect(() => openDisk({ file: join(dir, 'disk.img'), engine: 'io_uring', pollUs: bad })).to.throw(RangeError, /pollUs/);
      const d = openDisk({ file: join(dir, 'disk.img'), engine: 'threads', pollUs: 50 });
      expect(d.engine.engine).to.equal('threads');
      d.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
