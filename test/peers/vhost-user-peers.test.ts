// Our vhost-user frontend and backend against real peers: qemu-storage-daemon (the
// reference vhost-user-blk backend) and dpdk-testpmd (vhost PMD backend, virtio-user
// frontend). docs/peers.md has the flags.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { createRawImage, makeTempDir, startStorageDaemon, startTestpmd, type TempDir } from '../lib/peers.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { BlkClient, BlkStatus } from '../lib/blk-client.js';
import { EchoDevice } from '../lib/echo-device.js';
import { NET_HDR_SIZE, ethFrame, withNetHdr } from '../../src/virtio/net-frames.js';
import {
  DeviceStatus,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  VHOST_USER_F_PROTOCOL_FEATURES,
  bit,
  has,
} from '../../src/virtio/features.js';
import type { PackedDriver } from '../../src/virtio/driver.js';
import { ProtocolFeature } from '../../src/vhost-user/protocol.js';
import { setLogSink, type LogRecord } from '../../src/log.js';

const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

describe('real peers: qemu-storage-daemon', function () {
  this.timeout(30000);
  let tmp: TempDir;
  beforeEach(() => (tmp = makeTempDir('vk-qsd-')));
  afterEach(() => tmp.cleanup());

  it('vhostkit probe decodes its features, queues and config space', async () => {
    const img = tmp.join('disk.img');
    createRawImage(img, 8 << 20);
    const qsd = await startStorageDaemon({ image: img, socket: tmp.join('qsd.sock'), numQueues: 2 });
    try {
      const out = execFileSync(process.execPath, [cli, 'probe', qsd.socket]).toString();
      expect(out).to.match(/device type: +virtio-blk/);
      expect(out).to.match(/VERSION_1/);
      expect(out).to.match(/SEG_MAX/);
      expect(out).to.match(/queues: +2/);
      expect(out).to.match(/capacity +16384/);
      const json = JSON.parse(execFileSync(process.execPath, [cli, 'probe', '--json', qsd.socket]).toString());
      expect(json.config.numQueues).to.equal(2);
    } finally {
      await qsd.stop();
    }
  });

  it('our frontend writes and reads back through it, and the image holds the data', async () => {
    const img = tmp.join('disk.img');
    createRawImage(img, 8 << 20);
    const qsd = await startStorageDaemon({ image: img, socket: tmp.join('qsd.sock') });
    const fe = await VhostUserFrontend.connect(qsd.socket);
    try {
      await fe.negotiate({ features: bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VHOST_USER_F_PROTOCOL_FEATURES) });
      await fe.setupMemory(8 << 20);
      const q = await fe.startQueue(0, { size: 128 });
      const blk = new BlkClient(q);
      const data = pattern(8192, 3);
      expect((await blk.write(16n, data)).status).to.equal(BlkStatus.OK);
      const back = await blk.read(16n, 8192);
      expect(back.status).to.equal(BlkStatus.OK);
      expect(Buffer.from(back.data!).equals(Buffer.from(data))).to.equal(true);
      // An indirect chain too.
      const d2 = pattern(4096, 9);
      expect((await blk.request(1, 100n, { data: d2, indirect: true })).status).to.equal(BlkStatus.OK);
      expect((await blk.flush()).status).to.equal(BlkStatus.OK);
      const fd = openSync(img, 'r');
      const onDisk = Buffer.alloc(8192);
      readSync(fd, onDisk, 0, 8192, 16 * 512);
      const onDisk2 = Buffer.alloc(4096);
      readSync(fd, onDisk2, 0, 4096, 100 * 512);
      closeSync(fd);
      expect(onDisk.equals(Buffer.from(data))).to.equal(true);
      expect(onDisk2.equals(Buffer.from(d2))).to.equal(true);
      const base = await fe.stopQueue(0);
      expect(base, '4 requests popped').to.equal(4);
    } finally {
      fe.close();
      await qsd.stop();
    }
  });
});

describe('real peers: dpdk-testpmd', function () {
  this.timeout(60000);

  it('vhostkit probe reads its vhost PMD; our frontend sends frames that testpmd forwards back', async () => {
    const pmd = await startTestpmd({ role: 'vhost', forwardMode: 'io', portTopology: 'loop', cpu: 1 });
    let fe: VhostUserFrontend | null = null;
    try {
      const out = execFileSync(process.execPath, [cli, 'probe', '--type', 'net', pmd.socket]).toString();
      expect(out).to.match(/PROTOCOL_FEATURES/);
      expect(out).to.match(/MRG_RXBUF/);
      fe = await VhostUserFrontend.connect(pmd.socket);
      await fe.negotiate({ features: bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_RING_F_EVENT_IDX) });
      await fe.setupMemory(16 << 20);
      const rx = await fe.startQueue(0, { size: 256 });
      const tx = await fe.startQueue(1, { size: 256 });
      if (fe.protocolFeatures & bit(ProtocolFeature.STATUS)) {
        await fe.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
      }
      for (let i = 0; i < 64; i++) rx.driver.add([{ len: 2048, writable: true }]);
      rx.publishAndKick();
      const frames = Array.from({ length: 16 }, (_, i) => ethFrame('02:00:00:00:00:02', '02:00:00:00:00:01', 64 + i * 50, i));
      for (const f of frames) tx.driver.add([{ len: NET_HDR_SIZE + f.length, writable: false, data: withNetHdr(f) }]);
      tx.publishAndKick();
      await tx.waitUsed(frames.length, 10000);
      const got: Uint8Array[] = [];
      const deadline = Date.now() + 10000;
      while (got.length < frames.length && Date.now() < deadline) {
        for (const u of await rx.waitUsed(1, 10000).catch(() => [])) {
          got.push(rx.driver.readWritten(u.id, u.len).subarray(NET_HDR_SIZE));
        }
      }
      expect(got.length).to.equal(frames.length);
      const key = (b: Uint8Array) => Buffer.from(b).toString('hex');
      expect(got.map(key).sort()).to.deep.equal(frames.map(key).sort());
    } finally {
      fe?.close();
      await pmd.stop();
    }
  });

  it('our frontend on packed rings with IN_ORDER: testpmd completes TX in in-order batches, and every frame comes back', async () => {
    // DPDK's vhost library, with IN_ORDER negotiated, marks a dequeued batch used with one
    // descriptor (the last buffer's id, at the batch's first slot). 12 rounds of 16 frames
    // on a 64-descriptor ring: the driver reuses slots only if it walks those batches.
    const pmd = await startTestpmd({ role: 'vhost', forwardMode: 'io', portTopology: 'loop', cpu: 1 });
    let fe: VhostUserFrontend | null = null;
    try {
      fe = await VhostUserFrontend.connect(pmd.socket);
      await fe.negotiate({ features: bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_F_IN_ORDER) });
      expect(has(fe.features, VIRTIO_F_IN_ORDER), 'testpmd offers IN_ORDER').to.equal(true);
      await fe.setupMemory(16 << 20);
      const rx = await fe.startQueue(0, { size: 64 });
      const tx = await fe.startQueue(1, { size: 64 });
      expect(tx.layout).to.equal('packed');
      if (fe.protocolFeatures & bit(ProtocolFeature.STATUS)) {
        await fe.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
      }
      const key = (b: Uint8Array) => Buffer.from(b).toString('hex');
      let batched = 0;
      for (let round = 0; round < 12; round++) {
        for (let i = 0; i < 16; i++) rx.driver.add([{ len: 2048, writable: true }]);
        rx.publishAndKick();
        const frames = Array.from({ length: 16 }, (_, i) => ethFrame('02:00:00:00:00:02', '02:00:00:00:00:01', 64 + i * 50, round * 16 + i));
        const slotOf = new Map<number, number>();
        for (const f of frames) {
          const id = tx.driver.add([{ len: NET_HDR_SIZE + f.length, writable: false, data: withNetHdr(f) }]);
          slotOf.set(id, (tx.driver as PackedDriver).chainSlots(id)[0]);
        }
        // the used descriptors the device wrote at the chains' first slots (read before the
        // driver reuses them): a batch leaves all but its first slot as the driver wrote it
        tx.publishAndKick();
        const done = await tx.waitUsed(frames.length, 10000);
        expect(done.length, `round ${round}: TX completions`).to.equal(frames.length);
        const drv = tx.driver as PackedDriver;
        const idAt = (slot: number) => new DataView(drv.read(drv.descAddr + 16 * slot + 12, 2).slice().buffer).getUint16(0, true);
        batched += done.filter((u) => u.id !== idAt(slotOf.get(u.id)!)).length;
        const got: Uint8Array[] = [];
        const deadline = Date.now() + 10000;
        while (got.length < frames.length && Date.now() < deadline) {
          for (const u of await rx.waitUsed(1, 10000).catch(() => [])) got.push(rx.driver.readWritten(u.id, u.len).subarray(NET_HDR_SIZE));
        }
        expect(got.map(key).sort(), `round ${round}: frames back`).to.deep.equal(frames.map(key).sort());
      }
      expect(batched, 'completions that came inside a batch of several').to.be.greaterThan(0);
    } finally {
      fe?.close();
      await pmd.stop();
    }
  });

  it('its virtio-user frontend negotiates with our backend and sends frames to it', async () => {
    const logs: LogRecord[] = [];
    const old = setLogSink((r) => logs.push(r));
    const tmp = makeTempDir('vk-pmd-');
    const dev = new EchoDevice(2);
    const be = new VhostUserBackend(dev, { socket: tmp.join('ours.sock') });
    await be.start();
    const pmd = await startTestpmd({ role: 'virtio-user', socket: tmp.join('ours.sock'), forwardMode: 'txonly', txpkts: 64, cpu: 1 });
    try {
      const s = await be.nextSession(10000);
      const deadline = Date.now() + 15000;
      while (dev.served < 1000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(dev.served, 'frames received from testpmd').to.be.at.least(1000);
      expect(s.queues().map((q) => q.running)).to.deep.equal([true, true]);
      expect(logs.some((l) => l.msg === 'features negotiated')).to.equal(true);
    } finally {
      await pmd.stop();
      await be.stop();
      tmp.cleanup();
      setLogSink(old);
    }
  });
});
