// The same request sequence, from our frontend, against qemu-storage-daemon (the
// reference vhost-user-blk backend) and against `vhostkit blk`, each on its own copy of
// the same image: every request's status and every byte read must agree, both must agree
// with a model of the disk, and the two images must be identical at the end.
//
// Requests in flight together touch disjoint sectors (the order in which a device runs
// overlapping requests is its own business). The used length is not compared: the spec
// lets a device report any length up to what it wrote (vhostkit: data + status byte).
import { expect } from 'chai';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { makeTempDir, startStorageDaemon, startVhostkitBlk, type StorageDaemon, type TempDir } from '../lib/peers.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { BlkClient, BlkReqType, BlkStatus, SECTOR } from '../lib/blk-client.js';
import { BlkFeature } from '../../src/virtio/blk.js';
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VHOST_USER_F_PROTOCOL_FEATURES, bit } from '../../src/virtio/features.js';

const CAP = 8192; // sectors: a 4 MiB image
const SERIAL = 'vhost_user_blk'; // what qemu-storage-daemon answers to GET_ID

interface Req {
  what: string;
  type: number;
  sector: bigint;
  data?: Uint8Array;
  readLen?: number;
  indirect?: boolean;
  /** sectors this request reads or changes (for batching and the model) */
  range?: [number, number];
}
interface Res {
  status: number;
  data?: string; // hex of what was read
}

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytes(n: number, r: () => number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

function rangeSeg(sector: number, num: number, flags: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, num, true);
  v.setUint32(12, flags, true);
  return b;
}

/** Batches of requests; requests of one batch are in flight together. */
function sequence(seed: number, count: number): Req[][] {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const batches: Req[][] = [];
  let batch: Req[] = [];
  const overlaps = (q: Req) => batch.some((b) => b.range && q.range && b.range[0] < q.range[1] && q.range[0] < b.range[1]);
  const alone = (q: Req) => {
    if (batch.length) batches.push(batch);
    batches.push([q]);
    batch = [];
  };
  for (let i = 0; i < count; i++) {
    const p = r();
    const n = int(1, 64);
    const s = int(0, CAP - n);
    if (p < 0.35) {
      const q: Req = { what: `write ${s}+${n}`, type: BlkReqType.OUT, sector: BigInt(s), data: bytes(n * SECTOR, r), indirect: r() < 0.3, range: [s, s + n] };
      if (overlaps(q) || batch.length === 8) {
        batches.push(batch);
        batch = [];
      }
      batch.push(q);
    } else if (p < 0.7) {
      const q: Req = { what: `read ${s}+${n}`, type: BlkReqType.IN, sector: BigInt(s), readLen: n * SECTOR, indirect: r() < 0.3, range: [s, s + n] };
      if (overlaps(q) || batch.length === 8) {
        batches.push(batch);
        batch = [];
      }
      batch.push(q);
    } else if (p < 0.75) {
      alone({ what: 'flush', type: BlkReqType.FLUSH, sector: 0n });
    } else if (p < 0.78) {
      alone({ what: 'get id', type: BlkReqType.GET_ID, sector: 0n, readLen: 20 });
    } else if (p < 0.84) {
      alone({ what: `discard ${s}+${n}`, type: BlkReqType.DISCARD, sector: 0n, data: rangeSeg(s, n, 0), range: [s, s + n] });
    } else if (p < 0.92) {
      const unmap = r() < 0.5 ? 1 : 0;
      alone({ what: `write zeroes ${s}+${n} unmap=${unmap}`, type: BlkReqType.WRITE_ZEROES, sector: 0n, data: rangeSeg(s, n, unmap), range: [s, s + n] });
    } else {
      // Bad requests, each with the status the spec asks for.
      const bad: Req[] = [
        { what: 'read past the end', type: BlkReqType.IN, sector: BigInt(CAP - 1), readLen: 2 * SECTOR },
        { what: 'write past the end', type: BlkReqType.OUT, sector: BigInt(CAP), data: bytes(SECTOR, r) },
        { what: 'read at a huge sector', type: BlkReqType.IN, sector: 1n << 62n, readLen: SECTOR },
        { what: 'read of 1000 bytes', type: BlkReqType.IN, sector: 0n, readLen: 1000 },
        { what: 'write of 700 bytes', type: BlkReqType.OUT, sector: 8n, data: bytes(700, r) },
        { what: 'unknown type 99', type: 99, sector: 0n },
        { what: 'discard past the end', type: BlkReqType.DISCARD, sector: 0n, data: rangeSeg(CAP - 4, 8, 0) },
        { what: 'write zeroes past the end', type: BlkReqType.WRITE_ZEROES, sector: 0n, data: rangeSeg(CAP, 1, 0) },
        { what: 'write zeroes with unknown flags', type: BlkReqType.WRITE_ZEROES, sector: 0n, data: rangeSeg(0, 1, 0x4) },
      ];
      alone(bad[int(0, bad.length - 1)]);
    }
  }
  if (batch.length) batches.push(batch);
  return batches;
}

async function run(socket: string, batches: Req[][], features: bigint): Promise<Res[]> {
  const fe = await VhostUserFrontend.connect(socket);
  try {
    await fe.negotiate({ features });
    await fe.setupMemory(64 << 20);
    const q = await fe.startQueue(0, { size: 128 });
    const blk = new BlkClient(q);
    const out: Res[] = [];
    for (const b of batches) {
      const ids = b.map((r) => blk.submit(r.type, r.sector, { data: r.data, readLen: r.readLen, indirect: r.indirect }));
      q.publishAndKick();
      const used = await q.waitUsed(b.length, 10000);
      const lens = new Map(used.map((u) => [u.id, u.len]));
      b.forEach((r, i) => {
        const res = blk.result(ids[i], lens.get(ids[i])!, r.readLen ?? 0);
        out.push(res.status === BlkStatus.OK && res.data ? { status: res.status, data: Buffer.from(res.data).toString('hex') } : { status: res.status });
      });
    }
    return out;
  } finally {
    fe.close();
  }
}

/** What each request must return, from a model of the disk. */
function model(image: Uint8Array, batches: Req[][]): Res[] {
  const disk = image.slice();
  const out: Res[] = [];
  const hex = (s: number, n: number) => Buffer.from(disk.subarray(s * SECTOR, (s + n) * SECTOR)).toString('hex');
  for (const b of batches) {
    for (const r of b) {
      if (r.range && r.type === BlkReqType.IN) {
        out.push({ status: BlkStatus.OK, data: hex(r.range[0], r.range[1] - r.range[0]) });
      } else if (r.range && r.type === BlkReqType.OUT) {
        disk.set(r.data!, r.range[0] * SECTOR);
        out.push({ status: BlkStatus.OK });
      } else if (r.range) {
        disk.fill(0, r.range[0] * SECTOR, r.range[1] * SECTOR);
        out.push({ status: BlkStatus.OK });
      } else if (r.what === 'flush') {
        out.push({ status: BlkStatus.OK });
      } else if (r.what === 'get id') {
        const id = new Uint8Array(20);
        id.set(Buffer.from(SERIAL));
        out.push({ status: BlkStatus.OK, data: Buffer.from(id).toString('hex') });
      } else if (r.what === 'unknown type 99' || r.what === 'write zeroes with unknown flags') {
        out.push({ status: BlkStatus.UNSUPP });
      } else {
        out.push({ status: BlkStatus.IOERR });
      }
    }
  }
  // The model's image after the run, for the final comparison.
  image.set(disk);
  return out;
}

describe('real peers: the same requests against qemu-storage-daemon and vhostkit blk', function () {
  this.timeout(120_000);
  let tmp: TempDir;
  const servers: StorageDaemon[] = [];
  beforeEach(() => (tmp = makeTempDir('vk-blkdiff-')));
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
    tmp.cleanup();
  });

  const features =
    bit(VIRTIO_F_VERSION_1) |
    bit(VIRTIO_RING_F_EVENT_IDX) |
    bit(VIRTIO_RING_F_INDIRECT_DESC) |
    bit(VHOST_USER_F_PROTOCOL_FEATURES) |
    bit(BlkFeature.FLUSH) |
    bit(BlkFeature.DISCARD) |
    bit(BlkFeature.WRITE_ZEROES) |
    bit(BlkFeature.SEG_MAX) |
    bit(BlkFeature.BLK_SIZE);

  for (const seed of [1, 2, 3]) {
    it(`sequence ${seed}: 300 requests (reads, writes, flush, get id, discard, write zeroes, bad ones) give the same results and images`, async () => {
      const batches = sequence(seed, 300);
      const kinds = new Set(batches.flat().map((r) => r.what.replace(/ [0-9].*$/, '')));
      for (const k of ['write', 'read', 'flush', 'get id', 'discard', 'write zeroes']) expect(kinds, 'the sequence has every kind').to.include(k);
      expect(
        batches.some((b) => b.length > 1),
        'and batches in flight together',
      ).to.equal(true);
      expect(kinds.size, 'and bad requests').to.be.greaterThan(7);
      const initial = bytes(CAP * SECTOR, rng(1000 + seed));
      const a = tmp.join('qsd.img');
      const b = tmp.join('vhostkit.img');
      writeFileSync(a, initial);
      copyFileSync(a, b);
      const qsd = await startStorageDaemon({ image: a, socket: tmp.join('qsd.sock'), discard: 'unmap' });
      servers.push(qsd);
      const vk = await startVhostkitBlk({ file: b, socket: tmp.join('vk.sock'), serial: SERIAL });
      servers.push(vk);
      const fromQsd = await run(qsd.socket, batches, features);
      const fromVk = await run(vk.socket, batches, features);
      const want = model(initial, batches);
      const flat = batches.flat();
      for (let i = 0; i < flat.length; i++) {
        expect(fromVk[i], `request ${i} (${flat[i].what}): vhostkit vs qemu-storage-daemon`).to.deep.equal(fromQsd[i]);
        expect(fromVk[i], `request ${i} (${flat[i].what}): vhostkit vs the model`).to.deep.equal(want[i]);
      }
      const imgA = readFileSync(a);
      const imgB = readFileSync(b);
      expect(imgB.equals(imgA), 'the two images are identical').to.equal(true);
      expect(imgB.equals(Buffer.from(initial)), 'and hold what the model says').to.equal(true);
    });
  }

  it('read-only: writes, discards and write-zeroes fail with IOERR on both, reads and flush succeed', async () => {
    const img = tmp.join('ro.img');
    const initial = bytes(CAP * SECTOR, rng(7));
    writeFileSync(img, initial);
    const img2 = tmp.join('ro2.img');
    copyFileSync(img, img2);
    const qsd = await startStorageDaemon({ image: img, socket: tmp.join('qsd.sock'), writable: false });
    servers.push(qsd);
    const vk = await startVhostkitBlk({ file: img2, socket: tmp.join('vk.sock'), readOnly: true, serial: SERIAL });
    servers.push(vk);
    const r = rng(8);
    const batches: Req[][] = [
      [{ what: 'write', type: BlkReqType.OUT, sector: 0n, data: bytes(4096, r) }],
      [{ what: 'read', type: BlkReqType.IN, sector: 0n, readLen: 4096 }],
      [{ what: 'discard', type: BlkReqType.DISCARD, sector: 0n, data: rangeSeg(0, 8, 0) }],
      [{ what: 'write zeroes', type: BlkReqType.WRITE_ZEROES, sector: 0n, data: rangeSeg(0, 8, 0) }],
      [{ what: 'flush', type: BlkReqType.FLUSH, sector: 0n }],
    ];
    const fromQsd = await run(qsd.socket, batches, features);
    const fromVk = await run(vk.socket, batches, features);
    expect(fromVk).to.deep.equal(fromQsd);
    expect(fromVk.map((x) => x.status)).to.deep.equal([BlkStatus.IOERR, BlkStatus.OK, BlkStatus.IOERR, BlkStatus.IOERR, BlkStatus.OK]);
    expect(fromVk[1].data).to.equal(Buffer.from(initial.subarray(0, 4096)).toString('hex'));
    expect(readFileSync(img2).equals(Buffer.from(initial))).to.equal(true);
  });
});
