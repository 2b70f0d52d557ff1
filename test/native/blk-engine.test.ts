// The virtio-blk request engine (native/blk/blk.cc) against hand-built rings (ring-rig):
// every request type on a file and on RAM, every malformed request answered while the
// device keeps serving, every legal framing, many requests in flight, discard / write
// zeroes visible in the file, flush, read-only disks, O_DIRECT bounce buffers, a property
// test against a reference model, and no fd or thread left behind.
import { expect } from 'chai';
import fc from 'fast-check';
import { fcParams } from '../lib/fuzz-runs.js';
import { closeSync, constants, existsSync, fstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { createMemfd } from '../../src/native/guest-memory.js';
import { DirtyLog } from '../../src/vhost-user/dirty-log.js';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { BLK_ID_BYTES, BLK_SECTOR_SIZE, BLK_WRITE_ZEROES_FLAG_UNMAP, BlkEngine, BlkReqType, BlkStatus, type BlkEngineCommonOptions, type BlkEngineKind, type BlkFileEngineOptions } from '../../src/native/blk.js';
import { addon } from '../../src/native/binding.js';
import { EventFd } from '../../src/native/eventfd.js';
import type { Segment } from '../../src/virtio/driver.js';
import { MiB, Rig, bytes, concat } from './ring-rig.js';

const S = BLK_SECTOR_SIZE;
const DISK_SECTORS = 2048; // 1 MiB

// A tmpfs for speed (and for hole punching everywhere); the system temp dir otherwise.
const shmRoot = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
/** where makeFile puts files by default (the running suite's variant) */
let fileRoot = shmRoot;
let dirs: string[] = [];
function tempDir(root = shmRoot): string {
  const d = mkdtempSync(join(root, 'vhostkit-blk-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

interface Disk {
  path: string;
  fd: number;
}
function makeFile(size: number, fill?: Uint8Array | number, root = fileRoot): Disk {
  const path = join(tempDir(root), 'disk.img');
  const content = new Uint8Array(size);
  if (typeof fill === 'number') content.fill(fill);
  else if (fill) content.set(fill.subarray(0, size));
  writeFileSync(path, content);
  return { path, fd: openSync(path, 'r+') };
}

function header(type: number, sector: bigint): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  v.setUint32(4, 0xdeadbeef, true); // reserved: ignored
  v.setBigUint64(8, BigInt.asUintN(64, sector), true);
  return b;
}

function dwz(ranges: Array<{ sector: bigint | number; num: number; flags?: number }>): Uint8Array {
  const b = new Uint8Array(16 * ranges.length);
  const v = new DataView(b.buffer);
  ranges.forEach((r, i) => {
    v.setBigUint64(16 * i, BigInt(r.sector), true);
    v.setUint32(16 * i + 8, r.num, true);
    v.setUint32(16 * i + 12, r.flags ?? 0, true);
  });
  return b;
}

/** A request as the driver frames it. */
interface Req {
  type: number;
  sector?: bigint;
  /** readable bytes after the header (OUT data, discard / write zeroes segments) */
  payload?: Uint8Array;
  /** writable bytes before the status byte (IN / GET_ID data) */
  dataLen?: number;
  /** cut points in the readable bytes (header included): where descriptors end */
  rcuts?: number[];
  /** cut points in the writable bytes (status included) */
  wcuts?: number[];
  indirect?: boolean;
  /** no writable byte at all */
  noStatus?: boolean;
  /** the whole readable part, replacing header + payload */
  readable?: Uint8Array;
}

interface Result {
  id: number;
  /** status byte; undefined when the chain has no writable byte */
  status: number | undefined;
  /** used len the device reported */
  len: number;
  /** the writable bytes before the status */
  data: Uint8Array;
}

function pieces(len: number, cuts: number[] = []): Array<[number, number]> {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < len))].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  let at = 0;
  for (const p of [...points, len]) {
    if (p > at) out.push([at, p]);
    at = p;
  }
  return out;
}

const FILL = 0xee;
const STATUS_FILL = 0xff;

function segmentsOf(r: Req): Segment[] {
  const readable = r.readable ?? concat([header(r.type, r.sector ?? 0n), r.payload ?? new Uint8Array(0)]);
  const wlen = r.noStatus ? 0 : (r.dataLen ?? 0) + 1;
  const w = new Uint8Array(wlen).fill(FILL);
  if (wlen > 0) w[wlen - 1] = STATUS_FILL;
  const segs: Segment[] = [];
  for (const [a, b] of pieces(readable.length, r.rcuts)) segs.push({ len: b - a, writable: false, data: readable.subarray(a, b) });
  for (const [a, b] of pieces(wlen, r.wcuts)) segs.push({ len: b - a, writable: true, data: w.subarray(a, b) });
  return segs;
}

/** Adds the requests, publishes, lets the engine serve them, waits, reaps. Results in request order. */
function exec(rig: Rig, eng: BlkEngine, reqs: Req[]): Result[] {
  const ids = reqs.map((r) => rig.drv.add(segmentsOf(r), { indirect: r.indirect }));
  rig.drv.publish();
  expect(eng.serve(rig.q)).to.equal(reqs.length);
  expect(eng.waitIdle(10000), 'engine idle').to.equal(true);
  expect(eng.reap(rig.q)).to.equal(reqs.length);
  expect(eng.inFlightOf(rig.q)).to.equal(0);
  return collect(rig, reqs, ids);
}

function collect(rig: Rig, reqs: Req[], ids: number[]): Result[] {
  const used = rig.drv.used();
  expect(used.length, 'every request completed').to.equal(reqs.length);
  const byId = new Map(used.map((u) => [u.id, u.len]));
  return reqs.map((r, i) => {
    const id = ids[i];
    expect(byId.has(id), `chain ${id} completed`).to.equal(true);
    const written = r.noStatus ? new Uint8Array(0) : rig.drv.readWritten(id);
    return {
      id,
      status: r.noStatus ? undefined : written[written.length - 1],
      len: byId.get(id)!,
      data: written.subarray(0, Math.max(0, written.length - 1)),
    };
  });
}

function one(rig: Rig, eng: BlkEngine, r: Req): Result {
  return exec(rig, eng, [r])[0];
}

const eq = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

type Backend = 'file' | 'ram';

// Every case runs on each engine (the suite below is repeated): the thread pool; io_uring
// with files on the system's disk (/tmp: requests go through the ring); io_uring with files
// on tmpfs (small requests are copied inline, large ones go through the ring). The running
// suite's before() hook sets the engine and the file root the constructors below use.
const VARIANTS: ReadonlyArray<{ engine: BlkEngineKind; root: string; label: string }> = [
  { engine: 'threads', root: shmRoot, label: 'threads' },
  { engine: 'io_uring', root: tmpdir(), label: `io_uring, files in ${tmpdir()}` },
  { engine: 'io_uring', root: shmRoot, label: `io_uring, files in ${shmRoot}` },
];
let engine: BlkEngineKind = 'threads';
const forFile = (fd: number, o: Omit<BlkFileEngineOptions, 'fd'> = {}): BlkEngine => BlkEngine.forFile(fd, { engine, ...o });
const inRam = (sectors: number | bigint, o: BlkEngineCommonOptions = {}): BlkEngine => BlkEngine.inRam(sectors, { engine, ...o });

/** A rig, an engine on a fresh disk, and a way to read the disk's bytes directly. */
class Bench {
  readonly rig: Rig;
  readonly eng: BlkEngine;
  readonly disk: Disk | null;
  constructor(readonly backend: Backend, opts: BlkEngineCommonOptions & { layout?: 'split' | 'packed'; sectors?: number; fill?: number; regionSize?: number; queueSize?: number } = {}) {
    const sectors = opts.sectors ?? DISK_SECTORS;
    this.rig = new Rig(opts.layout ?? 'split', { size: opts.queueSize ?? 256, regionSize: opts.regionSize ?? 8 * MiB });
    const common: BlkEngineCommonOptions = { ...opts, serial: opts.serial ?? 'vhostkit-test-disk' };
    if (backend === 'file') {
      this.disk = makeFile(sectors * S, opts.fill);
      this.eng = forFile(this.disk.fd, common);
    } else {
      this.disk = null;
      this.eng = inRam(sectors, common);
    }
  }
  /** The disk's content: the file, or (RAM) one IN request over the whole disk. */
  content(sectors = DISK_SECTORS): Uint8Array {
    if (this.disk) return readFileSync(this.disk.path);
    const r = one(this.rig, this.eng, { type: BlkReqType.IN, sector: 0n, dataLen: sectors * S, wcuts: [sectors * S] });
    expect(r.status).to.equal(BlkStatus.OK);
    return r.data;
  }
  close(): void {
    this.eng.close();
    if (this.disk) {
      closeSync(this.disk.fd);
      rmSync(dirname(this.disk.path), { recursive: true, force: true });
    }
    expect(this.rig.canariesIntact(), 'nothing written outside guest memory').to.equal(true);
    this.rig.close();
  }
}

// Ways a driver may frame a request of `p` payload bytes and `d` writable data bytes
// (virtio 1.2 §2.6.4: the device must not assume any).
const framings: Record<string, (p: number, d: number) => Pick<Req, 'rcuts' | 'wcuts'>> = {
  'header | data | status': (_p, d) => ({ rcuts: [16], wcuts: [d] }),
  'header split over three descriptors': (_p, d) => ({ rcuts: [5, 9, 16], wcuts: [d] }),
  'header and data in one descriptor': (_p, d) => ({ rcuts: [], wcuts: [d] }),
  'data and status in one descriptor': () => ({ rcuts: [16], wcuts: [] }),
  'header split into the data': (p, d) => ({ rcuts: [3, 16 + Math.min(p, 100)], wcuts: [Math.min(d, 7), d] }),
  'many small data descriptors': (p, d) => ({
    rcuts: [4, 8, 12, 16, ...Array.from({ length: Math.ceil(p / 64) }, (_, k) => 16 + 64 * k)],
    wcuts: Array.from({ length: Math.ceil(d / 64) + 1 }, (_, k) => 64 * k),
  }),
  'odd cuts everywhere': (p, d) => ({ rcuts: [1, 15, 17, 16 + Math.floor(p / 3), 16 + p - 1], wcuts: [1, Math.floor(d / 2) + 3, d - 1] }),
};

for (const variant of VARIANTS) describe(`BlkEngine, engine ${variant.label}`, () => {
before(() => {
  engine = variant.engine;
  fileRoot = variant.root;
});
after(() => {
  engine = 'threads';
  fileRoot = shmRoot;
});

for (const backend of ['file', 'ram'] as const) {
  for (const layout of ['split', 'packed'] as const) {
    describe(`BlkEngine (${backend} backend, ${layout} ring)`, () => {
      let b: Bench;
      afterEach(() => b?.close());

      it('serves IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES and answers UNSUPP to others', () => {
        b = new Bench(backend, { layout, maxDiscardSeg: 4, maxWriteZeroesSeg: 4 });
        const data = bytes(8 * S, 3);
        const [w, r] = exec(b.rig, b.eng, [
          { type: BlkReqType.OUT, sector: 100n, payload: data },
          { type: BlkReqType.FLUSH },
        ]);
        expect([w.status, w.len]).to.deep.equal([BlkStatus.OK, 1]);
        expect([r.status, r.len]).to.deep.equal([BlkStatus.OK, 1]);
        const rd = one(b.rig, b.eng, { type: BlkReqType.IN, sector: 100n, dataLen: 8 * S });
        expect([rd.status, rd.len]).to.deep.equal([BlkStatus.OK, 8 * S + 1]);
        expect(eq(rd.data, data)).to.equal(true);

        const id = one(b.rig, b.eng, { type: BlkReqType.GET_ID, dataLen: BLK_ID_BYTES });
        expect([id.status, id.len]).to.deep.equal([BlkStatus.OK, 21]);
        expect(Buffer.from(id.data).toString('latin1')).to.equal('vhostkit-test-disk\0\0');

        // discard sectors 100-101, write zeroes 104-105 (unmap) and 106 (no unmap)
        const [d, z] = exec(b.rig, b.eng, [
          { type: BlkReqType.DISCARD, payload: dwz([{ sector: 100, num: 2 }]) },
          { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 104, num: 2, flags: BLK_WRITE_ZEROES_FLAG_UNMAP }, { sector: 106, num: 1 }]) },
        ]);
        expect([d.status, d.len, z.status, z.len]).to.deep.equal([BlkStatus.OK, 1, BlkStatus.OK, 1]);
        const after = one(b.rig, b.eng, { type: BlkReqType.IN, sector: 100n, dataLen: 8 * S });
        const expected = data.slice();
        expected.fill(0, 0, 2 * S);
        expected.fill(0, 4 * S, 7 * S);
        expect(eq(after.data, expected)).to.equal(true);

        for (const type of [BlkReqType.GET_LIFETIME, BlkReqType.SECURE_ERASE, 2, 7, 99, 0xffffffff]) {
          const u = one(b.rig, b.eng, { type, dataLen: 8 });
          expect([u.status, u.len], `type ${type}: the used length is the whole writable part`).to.deep.equal([BlkStatus.UNSUPP, 9]);
        }
        const st = b.eng.stats();
        expect(st.requests).to.deep.equal({ in: 2, out: 1, flush: 1, getId: 1, discard: 1, writeZeroes: 1, other: 6 });
        expect(st.bytesRead).to.equal(16 * S);
        expect(st.bytesWritten).to.equal(8 * S);
        expect(st.unsupp).to.equal(6);
        expect(st.errors.unsupported).to.equal(6);
        expect(st.fdatasyncs).to.equal(backend === 'file' ? 1 : 0);
        expect(st.inFlight).to.equal(0);
        expect(st.submitted).to.equal(st.reaped);
        expect(st.latencyUs.reduce((x, y) => x + y, 0)).to.equal(st.completed);
        if (backend === 'file') expect(eq(readFileSync(b.disk!.path).subarray(100 * S, 108 * S), expected)).to.equal(true);
      });

      it('parses every legal framing, direct and indirect', () => {
        b = new Bench(backend, { layout });
        let sector = 0n;
        for (const [name, frame] of Object.entries(framings)) {
          for (const indirect of [false, true]) {
            const len = 4 * S;
            const data = bytes(len, Number(sector) + 1);
            const w = one(b.rig, b.eng, { type: BlkReqType.OUT, sector, payload: data, indirect, ...frame(len, 0) });
            expect(w.status, `${name} OUT`).to.equal(BlkStatus.OK);
            const r = one(b.rig, b.eng, { type: BlkReqType.IN, sector, dataLen: len, indirect, ...frame(0, len) });
            expect([r.status, r.len], `${name} IN`).to.deep.equal([BlkStatus.OK, len + 1]);
            expect(eq(r.data, data), `${name}: read back`).to.equal(true);
            const id = one(b.rig, b.eng, { type: BlkReqType.GET_ID, dataLen: 20, indirect, ...frame(0, 20) });
            expect(Buffer.from(id.data).toString('latin1'), `${name} GET_ID`).to.equal('vhostkit-test-disk\0\0');
            const z = one(b.rig, b.eng, { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector, num: 1 }]), indirect, ...frame(16, 0) });
            expect(z.status, `${name} WRITE_ZEROES`).to.equal(BlkStatus.OK);
            const r2 = one(b.rig, b.eng, { type: BlkReqType.IN, sector, dataLen: len, indirect, ...frame(0, len) });
            expect(eq(r2.data.subarray(0, S), new Uint8Array(S)) && eq(r2.data.subarray(S), data.subarray(S)), `${name}: zeroed`).to.equal(true);
            sector += 4n;
          }
        }
        if (backend === 'file') {
          const file = readFileSync(b.disk!.path);
          for (let s = 0n; s < sector; s += 4n) {
            const data = bytes(4 * S, Number(s) + 1);
            data.fill(0, 0, S);
            expect(eq(file.subarray(Number(s) * S, (Number(s) + 4) * S), data)).to.equal(true);
          }
        }
      });
    });
  }
}

describe('BlkEngine: malformed requests', () => {
  let b: Bench;
  afterEach(() => b?.close());

  for (const backend of ['file', 'ram'] as const) {
    it(`answers IOERR / UNSUPP and keeps serving (${backend})`, () => {
      b = new Bench(backend, { maxDiscardSeg: 2, maxDiscardSectors: 64, maxWriteZeroesSeg: 2, maxWriteZeroesSectors: 64 });
      const cap = BigInt(DISK_SECTORS);
      const good = (): Req => ({ type: BlkReqType.IN, sector: 0n, dataLen: S });
      const cases: Array<[string, Req, number | undefined, number, string]> = [
        ['IN at the capacity', { type: BlkReqType.IN, sector: cap, dataLen: S }, BlkStatus.IOERR, 1, 'range'],
        ['IN across the end', { type: BlkReqType.IN, sector: cap - 1n, dataLen: 2 * S }, BlkStatus.IOERR, 1, 'range'],
        ['IN at sector 2^64-1 (overflow)', { type: BlkReqType.IN, sector: (1n << 64n) - 1n, dataLen: S }, BlkStatus.IOERR, 1, 'range'],
        ['IN at sector 2^55 (byte offset overflow)', { type: BlkReqType.IN, sector: 1n << 55n, dataLen: S }, BlkStatus.IOERR, 1, 'range'],
        ['OUT across the end', { type: BlkReqType.OUT, sector: cap - 1n, payload: new Uint8Array(2 * S) }, BlkStatus.IOERR, 1, 'range'],
        ['OUT of 100 bytes', { type: BlkReqType.OUT, sector: 0n, payload: new Uint8Array(100) }, BlkStatus.IOERR, 1, 'unalignedLen'],
        ['IN of 513 bytes', { type: BlkReqType.IN, sector: 0n, dataLen: 513 }, BlkStatus.IOERR, 1, 'unalignedLen'],
        ['no status byte', { type: BlkReqType.IN, noStatus: true, payload: new Uint8Array(S) }, undefined, 0, 'noStatus'],
        ['a header of 8 bytes', { type: 0, readable: new Uint8Array(8), dataLen: S }, BlkStatus.IOERR, 1, 'shortHeader'],
        ['no readable byte', { type: 0, readable: new Uint8Array(0), dataLen: 0 }, BlkStatus.IOERR, 1, 'shortHeader'],
        ['DISCARD with 3 segments (max 2)', { type: BlkReqType.DISCARD, payload: dwz([{ sector: 0, num: 1 }, { sector: 1, num: 1 }, { sector: 2, num: 1 }]) }, BlkStatus.IOERR, 1, 'tooManySegs'],
        ['WRITE_ZEROES with 3 segments (max 2)', { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 0, num: 1 }, { sector: 1, num: 1 }, { sector: 2, num: 1 }]) }, BlkStatus.IOERR, 1, 'tooManySegs'],
        ['DISCARD of 65 sectors (max 64)', { type: BlkReqType.DISCARD, payload: dwz([{ sector: 0, num: 65 }]) }, BlkStatus.IOERR, 1, 'tooManySectors'],
        ['WRITE_ZEROES of 65 sectors (max 64)', { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 0, num: 65 }]) }, BlkStatus.IOERR, 1, 'tooManySectors'],
        ['DISCARD across the end', { type: BlkReqType.DISCARD, payload: dwz([{ sector: cap - 1n, num: 2 }]) }, BlkStatus.IOERR, 1, 'range'],
        ['WRITE_ZEROES at sector 2^64-1', { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: (1n << 64n) - 1n, num: 2 }]) }, BlkStatus.IOERR, 1, 'range'],
        ['DISCARD without segments', { type: BlkReqType.DISCARD }, BlkStatus.IOERR, 1, 'badPayload'],
        ['WRITE_ZEROES with 15 payload bytes', { type: BlkReqType.WRITE_ZEROES, payload: new Uint8Array(15) }, BlkStatus.IOERR, 1, 'badPayload'],
        ['DISCARD with UNMAP (§5.2.6.2)', { type: BlkReqType.DISCARD, payload: dwz([{ sector: 0, num: 1, flags: 1 }]) }, BlkStatus.UNSUPP, 1, 'badFlags'],
        ['WRITE_ZEROES with an unknown flag', { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 0, num: 1, flags: 2 }]) }, BlkStatus.UNSUPP, 1, 'badFlags'],
        ['an unknown type', { type: 42, dataLen: S }, BlkStatus.UNSUPP, 1, 'unsupported'],
      ];
      // Each bad request between good ones, and all of them in one burst too.
      const all: Req[] = [];
      for (const [name, req, status, len, why] of cases) {
        const before = b.eng.stats().errors as unknown as Record<string, number>;
        const [g1, bad, g2] = exec(b.rig, b.eng, [good(), req, good()]);
        // The used length is the whole writable part (data buffer + status byte), or 0.
        expect([bad.status, bad.len], name).to.deep.equal([status, len === 0 ? 0 : (req.dataLen ?? 0) + 1]);
        expect([g1.status, g2.status], `${name}: neighbours`).to.deep.equal([BlkStatus.OK, BlkStatus.OK]);
        const errs = b.eng.stats().errors as unknown as Record<string, number>;
        expect(errs[why] - before[why], `${name}: counted as ${why}`).to.equal(1);
        if (status !== undefined && req.dataLen) expect(bad.data.every((x) => x === FILL), `${name}: data untouched`).to.equal(true);
        all.push(req, good());
      }
      const res = exec(b.rig, b.eng, all);
      res.forEach((r, i) => {
        const expected = i % 2 === 0 ? cases[i / 2][2] : BlkStatus.OK;
        expect(r.status, i % 2 === 0 ? cases[i / 2][0] : 'good').to.equal(expected);
      });
      // The disk is untouched by all of it.
      expect(b.content().every((x) => x === 0)).to.equal(true);
      const st = b.eng.stats();
      expect(st.errors.io).to.equal(0);
      expect(st.inFlight).to.equal(0);
    });
  }

  it('switches DISCARD / WRITE_ZEROES off with a segment limit of 0 (UNSUPP)', () => {
    b = new Bench('ram', { maxDiscardSeg: 0, maxWriteZeroesSeg: 0 });
    const [d, z] = exec(b.rig, b.eng, [
      { type: BlkReqType.DISCARD, payload: dwz([{ sector: 0, num: 1 }]) },
      { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 0, num: 1 }]) },
    ]);
    expect([d.status, z.status]).to.deep.equal([BlkStatus.UNSUPP, BlkStatus.UNSUPP]);
  });

  it('treats a queue whose memory is gone as an error, not a crash', () => {
    b = new Bench('ram');
    b.rig.drv.addAndPublish(segmentsOf({ type: BlkReqType.IN, dataLen: S }));
    expect(b.rig.q.pop()).to.equal(1);
    const mem = b.rig.q.memory;
    b.rig.q.setMemory(null);
    expect(() => b.eng.submit(b.rig.q, 1)).to.throw(/no memory/);
    b.rig.q.setMemory(mem);
  });
});

describe('BlkEngine: read-only disk', () => {
  for (const how of ['readOnly option', 'O_RDONLY fd'] as const) {
    it(`refuses writes, serves reads, flush and GET_ID (${how})`, () => {
      const disk = makeFile(DISK_SECTORS * S, 0x5a);
      const fd = how === 'O_RDONLY fd' ? openSync(disk.path, 'r') : disk.fd;
      const rig = new Rig('split', { size: 64 });
      const eng = forFile(fd, { readOnly: how === 'readOnly option', maxWriteZeroesSeg: 1 });
      try {
        expect(eng.readOnly).to.equal(true);
        expect(eng.capacitySectors).to.equal(BigInt(DISK_SECTORS));
        const res = exec(rig, eng, [
          { type: BlkReqType.OUT, sector: 0n, payload: new Uint8Array(S) },
          { type: BlkReqType.DISCARD, payload: dwz([{ sector: 0, num: 1 }]) },
          { type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 0, num: 1, flags: 1 }]) },
          { type: BlkReqType.IN, sector: 0n, dataLen: S },
          { type: BlkReqType.FLUSH },
          { type: BlkReqType.GET_ID, dataLen: 20 },
        ]);
        expect(res.map((r) => r.status)).to.deep.equal([1, 1, 1, 0, 0, 0]);
        expect(res[3].data.every((x) => x === 0x5a)).to.equal(true);
        expect(eng.stats().errors.readOnly).to.equal(3);
        expect(readFileSync(disk.path).every((x) => x === 0x5a)).to.equal(true);
      } finally {
        eng.close();
        if (fd !== disk.fd) closeSync(fd);
        closeSync(disk.fd);
        rig.close();
      }
    });
  }
});

describe('BlkEngine: dirty logging (live migration)', () => {
  it('a failed request marks the page of its status byte: the used length covers the whole writable part', () => {
    const b = new Bench('ram');
    const logFd = createMemfd('dirty-log', 4096);
    const log = DirtyLog.map(logFd, 4096n, 0n);
    try {
      b.rig.q.setDirtyLog(log.raw, null);
      const id = b.rig.drv.add(segmentsOf({ type: BlkReqType.IN, sector: BigInt(DISK_SECTORS), dataLen: 4096 }));
      b.rig.drv.publish();
      expect(b.eng.serve(b.rig.q)).to.equal(1);
      expect(b.eng.waitIdle(10000)).to.equal(true);
      expect(b.eng.reap(b.rig.q)).to.equal(1);
      const [u] = b.rig.drv.used();
      expect([u.id, u.len]).to.deep.equal([id, 4097]);
      const bufs = b.rig.drv.chainBuffers(id).filter((x) => x.writable);
      const statusGpa = bufs[bufs.length - 1].addr + bufs[bufs.length - 1].len - 1;
      const page = Math.floor(statusGpa / 4096);
      const bits = new Uint8Array(4096);
      readSync(logFd, bits, 0, 4096, 0);
      expect((bits[page >> 3] >> (page & 7)) & 1, `page ${page} of the status byte is marked`).to.equal(1);
      expect(b.rig.drv.readWritten(id)[4096]).to.equal(BlkStatus.IOERR);
    } finally {
      b.rig.q.setDirtyLog(null, null);
      log.close();
      closeSync(logFd);
      b.close();
    }
  });
});

describe('BlkEngine: dirty logging turned on while requests are in flight', () => {
  // A migration turns logging on at any moment; a read popped before and completed after
  // must still mark the pages it filled (the blk device keeps written ranges for this).
  for (const keep of [true, false]) {
    it(`a read popped before logging started and completed after it ${keep ? 'marks its pages (keepWrittenRanges)' : 'marks nothing without keepWrittenRanges: why blk sets it'}`, () => {
      const b = new Bench('ram');
      const logFd = createMemfd('dirty-log', 4096);
      const log = DirtyLog.map(logFd, 4096n, 0n);
      try {
        b.rig.q.keepWrittenRanges(keep);
        const id = b.rig.drv.add(segmentsOf({ type: BlkReqType.IN, sector: 8n, dataLen: 3 * 4096 }));
        b.rig.drv.publish();
        expect(b.eng.serve(b.rig.q)).to.equal(1); // popped, logging off
        expect(b.eng.waitIdle(10000)).to.equal(true); // the data is in guest memory now
        b.rig.q.setDirtyLog(log.raw, null); // the migration starts
        expect(b.eng.reap(b.rig.q)).to.equal(1);
        const bits = new Uint8Array(4096);
        readSync(logFd, bits, 0, 4096, 0);
        const marked = (gpa: number) => (bits[Math.floor(gpa / 4096) >> 3] >> (Math.floor(gpa / 4096) & 7)) & 1;
        const bufs = b.rig.drv.chainBuffers(id).filter((x) => x.writable);
        const pages = bufs.flatMap((x) => [x.addr, x.addr + x.len - 1]);
        expect(pages.map(marked), 'pages of the data and status buffers').to.deep.equal(pages.map(() => (keep ? 1 : 0)));
      } finally {
        b.rig.q.setDirtyLog(null, null);
        log.close();
        closeSync(logFd);
        b.close();
      }
    });
  }
});

describe('BlkEngine: GET_ID', () => {
  it('writes at most 20 bytes of serial, NUL-padded, whatever the buffer', () => {
    const b = new Bench('ram', { serial: 'vhostkit-serial-0020' });
    try {
      const [full, short, long] = exec(b.rig, b.eng, [
        { type: BlkReqType.GET_ID, dataLen: 20 },
        { type: BlkReqType.GET_ID, dataLen: 8 },
        { type: BlkReqType.GET_ID, dataLen: 512, wcuts: [5, 100] },
      ]);
      expect([full.status, full.len, Buffer.from(full.data).toString()]).to.deep.equal([0, 21, 'vhostkit-serial-0020']);
      expect([short.status, short.len, Buffer.from(short.data).toString()]).to.deep.equal([0, 9, 'vhostkit']);
      expect([long.status, long.len, Buffer.from(long.data.subarray(0, 20)).toString()]).to.deep.equal([0, 513, 'vhostkit-serial-0020']);
      expect(long.data.subarray(20).every((x) => x === FILL), 'nothing past 20 bytes').to.equal(true);
    } finally {
      b.close();
    }
    const bin = inRam(8, { serial: Uint8Array.of(1, 2, 3) });
    bin.close();
    expect(() => inRam(8, { serial: 'x'.repeat(21) })).to.throw(RangeError);
  });
});

describe('BlkEngine: many requests in flight', () => {
  for (const backend of ['file', 'ram'] as const) {
    it(`completes 128 requests submitted at once, in any order, one push and one interrupt per reap (${backend})`, async () => {
      const b = new Bench(backend, { threads: 4, layout: backend === 'file' ? 'split' : 'packed', regionSize: 8 * MiB, queueSize: 1024 });
      try {
        // First 64 writes of distinct 4 KiB blocks, then 64 reads of them plus 64 more writes.
        const block = (k: number): Uint8Array => bytes(4096, k + 10);
        const writes: Req[] = Array.from({ length: 64 }, (_, k) => ({ type: BlkReqType.OUT, sector: BigInt(k * 8), payload: block(k) }));
        const r1 = exec(b.rig, b.eng, writes);
        expect(r1.every((r) => r.status === 0)).to.equal(true);

        const mixed: Req[] = [];
        for (let k = 0; k < 64; k++) {
          mixed.push({ type: BlkReqType.IN, sector: BigInt(k * 8), dataLen: 4096, wcuts: [1000, 4096] });
          mixed.push({ type: BlkReqType.OUT, sector: BigInt(1024 + k * 8), payload: block(100 + k), rcuts: [16, 16 + 2048] });
        }
        const ids = mixed.map((r) => b.rig.drv.add(segmentsOf(r)));
        b.rig.drv.publish();
        // Completions reaped from the completion fd's watcher, on the event loop; the
        // driver's interrupts counted on a call eventfd.
        const call = new EventFd();
        b.rig.q.setCallFd(call.fd);
        let reaped = 0;
        let pushes = 0;
        const allDone = new Promise<void>((resolve) => {
          const stop = b.eng.watch(() => {
            const k = b.eng.reap(b.rig.q);
            if (k > 0) pushes++;
            reaped += Math.max(0, k);
            if (reaped === 128) {
              stop();
              resolve();
            }
          });
        });
        expect(b.eng.serve(b.rig.q)).to.equal(128);
        expect(b.eng.inFlight, 'all 128 in flight before any reap').to.equal(128);
        await allDone;
        expect(b.eng.inFlight).to.equal(0);
        expect(call.read(), 'one interrupt per reap that pushed').to.equal(BigInt(pushes));
        b.rig.q.setCallFd(-1);
        call.close();
        const res = collect(b.rig, mixed, ids);
        res.forEach((r, i) => {
          expect(r.status, `request ${i}`).to.equal(BlkStatus.OK);
          if (i % 2 === 0) expect(eq(r.data, block(i / 2)), `read ${i / 2}`).to.equal(true);
        });
        // drain(): waits for a queue's requests without blocking the event loop.
        const reads: Req[] = Array.from({ length: 96 }, (_, k) => ({ type: BlkReqType.IN, sector: BigInt(1024 + (k % 64) * 8), dataLen: 4096 }));
        const rids = reads.map((r) => b.rig.drv.add(segmentsOf(r)));
        b.rig.drv.publish();
        expect(b.eng.serve(b.rig.q)).to.equal(96);
        expect(b.eng.inFlightOf(b.rig.q)).to.equal(96);
        await b.eng.drain(b.rig.q, 10000);
        expect(b.eng.inFlightOf(b.rig.q)).to.equal(0);
        collect(b.rig, reads, rids).forEach((r, k) => expect(eq(r.data, block(100 + (k % 64))), `drained read ${k}`).to.equal(true));
        const content = b.content();
        for (let k = 0; k < 64; k++) expect(eq(content.subarray((1024 + k * 8) * S, (1024 + k * 8 + 8) * S), block(100 + k))).to.equal(true);
      } finally {
        b.close();
      }
    });
  }

  it('signals completions once per batch, and serves two queues with one engine', () => {
    const b = new Bench('ram', { threads: 2 });
    const rig2 = new Rig('packed', { size: 64 });
    const efdRead = (): bigint | null => (addon as { eventfdRead(fd: number): bigint | null }).eventfdRead(b.eng.completionFd);
    try {
      const r1: Req[] = Array.from({ length: 20 }, (_, k) => ({ type: BlkReqType.OUT, sector: BigInt(k), payload: bytes(S, k) }));
      const r2: Req[] = Array.from({ length: 10 }, (_, k) => ({ type: BlkReqType.IN, sector: BigInt(100 + k), dataLen: S }));
      const ids1 = r1.map((r) => b.rig.drv.add(segmentsOf(r)));
      const ids2 = r2.map((r) => rig2.drv.add(segmentsOf(r)));
      b.rig.drv.publish();
      rig2.drv.publish();
      expect(b.eng.serve(b.rig.q)).to.equal(20);
      expect(b.eng.serve(rig2.q)).to.equal(10);
      expect([b.eng.inFlightOf(b.rig.q), b.eng.inFlightOf(rig2.q), b.eng.inFlight]).to.deep.equal([20, 10, 30]);
      expect(b.eng.waitIdle(10000)).to.equal(true);
      expect(efdRead(), 'one eventfd write for the whole batch').to.equal(1n);
      expect(efdRead()).to.equal(null);
      // Reaping the first queue leaves the second one's completions, and the fd readable.
      expect(b.eng.reap(b.rig.q)).to.equal(20);
      expect(b.eng.inFlightOf(b.rig.q)).to.equal(0);
      expect(efdRead(), 'still readable: the other queue waits').to.equal(1n);
      expect(b.eng.reap(b.rig.q)).to.equal(0);
      expect(b.eng.reap(rig2.q)).to.equal(10);
      expect(efdRead()).to.equal(null);
      expect(b.eng.inFlight).to.equal(0);
      expect(collect(b.rig, r1, ids1).every((r) => r.status === 0)).to.equal(true);
      expect(collect(rig2, r2, ids2).every((r) => r.status === 0 && r.len === S + 1)).to.equal(true);
      expect(b.eng.stats().reaped).to.equal(30);
    } finally {
      b.close();
      rig2.close();
    }
  });

  it('close() lets queued requests finish; they can still be reaped', () => {
    const b = new Bench('file', { threads: 1 });
    try {
      const reqs: Req[] = Array.from({ length: 48 }, (_, k) => ({ type: BlkReqType.OUT, sector: BigInt(k * 8), payload: bytes(4096, k) }));
      const ids = reqs.map((r) => b.rig.drv.add(segmentsOf(r)));
      b.rig.drv.publish();
      b.eng.serve(b.rig.q);
      b.eng.close();
      expect(b.eng.completionFd).to.equal(-1);
      expect(() => b.eng.submit(b.rig.q, 0)).to.throw(/closed/);
      expect(b.eng.reap(b.rig.q)).to.equal(48);
      expect(collect(b.rig, reqs, ids).every((r) => r.status === 0)).to.equal(true);
      const file = readFileSync(b.disk!.path);
      for (let k = 0; k < 48; k++) expect(eq(file.subarray(k * 4096, (k + 1) * 4096), bytes(4096, k))).to.equal(true);
    } finally {
      b.close();
    }
  });
});

function blocks(path: string): number {
  const fd = openSync(path, 'r');
  try {
    return fstatSync(fd).blocks;
  } finally {
    closeSync(fd);
  }
}

describe('BlkEngine: discard and write zeroes reach the file', () => {
  for (const root of [shmRoot, tmpdir()]) {
    it(`punches holes and zeroes ranges (${root})`, () => {
      const rig = new Rig('split', { size: 64 });
      const disk = makeFile(DISK_SECTORS * S, 0x77, root);
      const eng = forFile(disk.fd, { maxDiscardSeg: 4, maxWriteZeroesSeg: 4 });
      try {
        const b0 = blocks(disk.path);
        expect(b0 * 512).to.be.at.least(DISK_SECTORS * S);
        // 256 KiB discarded (page-aligned: whole pages deallocated), plus an unaligned range.
        const [d] = exec(rig, eng, [{ type: BlkReqType.DISCARD, payload: dwz([{ sector: 512, num: 512 }, { sector: 3, num: 3 }]) }]);
        expect(d.status).to.equal(BlkStatus.OK);
        let st = eng.stats();
        const punched = st.holesPunched > 0;
        if (root === '/dev/shm') expect(punched, 'tmpfs punches holes').to.equal(true);
        if (punched) {
          expect(blocks(disk.path), 'st_blocks after the discard').to.be.at.most(b0 - (256 * 1024) / 512);
          const f = readFileSync(disk.path);
          expect(f.subarray(512 * S, 1024 * S).every((x) => x === 0)).to.equal(true);
          expect(f.subarray(3 * S, 6 * S).every((x) => x === 0)).to.equal(true);
          expect(f[3 * S - 1]).to.equal(0x77);
          expect(f[6 * S]).to.equal(0x77);
        }
        // Write zeroes with and without UNMAP: zeros read back either way, through the device too.
        const [z] = exec(rig, eng, [{ type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 1200, num: 256, flags: 1 }, { sector: 1600, num: 256 }, { sector: 9, num: 1 }]) }]);
        expect(z.status).to.equal(BlkStatus.OK);
        st = eng.stats();
        expect(st.holesPunched + st.zeroRanges + st.zeroWrites).to.be.at.least(4);
        const f = readFileSync(disk.path);
        for (const [a, n] of [[1200, 256], [1600, 256], [9, 1]]) {
          expect(f.subarray(a * S, (a + n) * S).every((x) => x === 0), `sectors ${a}+${n}`).to.equal(true);
          expect(f[a * S - 1]).to.equal(0x77);
          expect(f[(a + n) * S]).to.equal(0x77);
        }
        const [r] = exec(rig, eng, [{ type: BlkReqType.IN, sector: 1199n, dataLen: 3 * S }]);
        expect(r.data.subarray(0, S).every((x) => x === 0x77) && r.data.subarray(S).every((x) => x === 0)).to.equal(true);
        expect(f.length, 'size kept').to.equal(DISK_SECTORS * S);
      } finally {
        eng.close();
        closeSync(disk.fd);
        rig.close();
      }
    });
  }

  it('deallocates whole pages of a RAM disk and zeroes the edges', () => {
    const b = new Bench('ram', { maxDiscardSeg: 2 });
    try {
      exec(b.rig, b.eng, [{ type: BlkReqType.OUT, sector: 0n, payload: new Uint8Array(64 * S).fill(9) }]);
      const [d] = exec(b.rig, b.eng, [{ type: BlkReqType.DISCARD, payload: dwz([{ sector: 1, num: 30 }, { sector: 40, num: 1 }]) }]);
      expect(d.status).to.equal(0);
      const c = b.content().subarray(0, 64 * S);
      const expected = new Uint8Array(64 * S).fill(9);
      expected.fill(0, 1 * S, 31 * S);
      expected.fill(0, 40 * S, 41 * S);
      expect(eq(c, expected)).to.equal(true);
      expect(b.eng.stats().holesPunched).to.equal(1);
    } finally {
      b.close();
    }
  });
});

describe('BlkEngine: flush', () => {
  it('calls fdatasync for every FLUSH on a file, never for RAM', () => {
    const f = new Bench('file');
    const r = new Bench('ram');
    try {
      const res = exec(f.rig, f.eng, [{ type: BlkReqType.OUT, sector: 0n, payload: bytes(S) }]);
      expect(res[0].status).to.equal(0);
      exec(f.rig, f.eng, [{ type: BlkReqType.FLUSH }, { type: BlkReqType.FLUSH, sector: 12345n, dataLen: 0 }]);
      expect(f.eng.stats().fdatasyncs).to.equal(2);
      expect(exec(r.rig, r.eng, [{ type: BlkReqType.FLUSH }])[0].status).to.equal(0);
      expect(r.eng.stats().fdatasyncs).to.equal(0);
    } finally {
      f.close();
      r.close();
    }
  });
});

describe('BlkEngine: O_DIRECT', () => {
  it('bounces requests with unaligned guest buffers through an aligned buffer', () => {
    const disk = makeFile(DISK_SECTORS * S, 0, tmpdir());
    let fd: number;
    let forced = false;
    try {
      fd = openSync(disk.path, constants.O_RDWR | constants.O_DIRECT);
    } catch {
      fd = openSync(disk.path, 'r+'); // a file system without O_DIRECT: the same discipline, forced
      forced = true;
    }
    const rig = new Rig('split', { size: 64 });
    const eng = forFile(fd, { direct: forced });
    try {
      expect(eng.direct).to.equal(true);
      // Aligned: 4 KiB data buffers at 4 KiB-aligned guest addresses.
      const buf = rig.alloc.alloc(8192, 4096);
      const data = bytes(4096, 5);
      rig.drv.write(buf, data);
      const idA = rig.drv.add([
        { len: 16, writable: false, data: header(BlkReqType.OUT, 8n) },
        { len: 4096, writable: false, addr: buf },
        { len: 1, writable: true, data: Uint8Array.of(0xff) },
      ]);
      rig.drv.publish();
      eng.serve(rig.q); // the write alone first: requests in flight together run in any order
      eng.waitIdle(10000);
      expect(eng.reap(rig.q)).to.equal(1);
      expect(rig.drv.used().map((u) => [u.id, u.len])).to.deep.equal([[idA, 1]]);
      const idB = rig.drv.add([
        { len: 16, writable: false, data: header(BlkReqType.IN, 8n) },
        { len: 4096, writable: true, addr: buf + 4096 },
        { len: 1, writable: true, data: Uint8Array.of(0xff) },
      ]);
      rig.drv.publish();
      eng.serve(rig.q);
      eng.waitIdle(10000);
      expect(eng.reap(rig.q)).to.equal(1);
      expect(rig.drv.used().map((u) => [u.id, u.len])).to.deep.equal([[idB, 4097]]);
      expect(eq(rig.drv.read(buf + 4096, 4096), data)).to.equal(true);
      expect(eng.stats().bounced).to.equal(0);
      // Unaligned: odd cuts and a 16-byte-aligned allocator.
      const big = bytes(3 * 4096 * 100, 9).subarray(0, 300 * S);
      const [w, r] = exec(rig, eng, [
        { type: BlkReqType.OUT, sector: 100n, payload: big, rcuts: [16 + 100, 16 + 100 + 7000] },
        { type: BlkReqType.IN, sector: 8n, dataLen: 4096, wcuts: [333] },
      ]);
      expect([w.status, r.status]).to.deep.equal([0, 0]);
      expect(eq(r.data, data)).to.equal(true);
      const [r2] = exec(rig, eng, [{ type: BlkReqType.IN, sector: 100n, dataLen: 300 * S, wcuts: [1, 513, 70000] }]);
      expect(eq(r2.data, big)).to.equal(true);
      expect(eng.stats().bounced).to.equal(3);
      expect(eq(readFileSync(disk.path).subarray(100 * S, 400 * S), big)).to.equal(true);
      // write zeroes (zero range, or writes from an aligned zero buffer)
      const [z] = exec(rig, eng, [{ type: BlkReqType.WRITE_ZEROES, payload: dwz([{ sector: 100, num: 8 }]) }]);
      expect(z.status).to.equal(0);
      expect(readFileSync(disk.path).subarray(100 * S, 108 * S).every((x) => x === 0)).to.equal(true);
    } finally {
      eng.close();
      closeSync(fd);
      closeSync(disk.fd);
      rig.close();
    }
  });
});

/** Threads of the engines (named vhostkit-blk), so that whatever Node starts does not count. */
function tasks(): number {
  return readdirSync('/proc/self/task').filter((t) => {
    try {
      return readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim() === 'vhostkit-blk';
    } catch {
      return false;
    }
  }).length;
}
/**
 * A joined thread leaves /proc a moment after pthread_join returns (the kernel wakes the
 * joiner before it releases the task): allow it that moment.
 */
function tasksSettled(want: number): number {
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 200 && tasks() !== want; i++) Atomics.wait(sleeper, 0, 0, 5);
  return tasks();
}

describe('BlkEngine: resources', () => {
  it('leaves no fd and no thread behind after close()', () => {
    const disk = makeFile(64 * S);
    // Our fds (duplicates of the disk's, eventfds), so that whatever Node opens meanwhile
    // does not count.
    const fds = (): number =>
      readdirSync('/proc/self/fd').filter((f) => {
        try {
          const l = readlinkSync(`/proc/self/fd/${f}`);
          return l === disk.path || l === 'anon_inode:[eventfd]';
        } catch {
          return false;
        }
      }).length;
    const fd0 = fds();
    const t0 = tasks();
    expect(t0).to.equal(0);
    const rig = new Rig('split', { size: 64 });
    const rigFds = fds();
    for (const threads of [1, 3]) {
      const eng = forFile(disk.fd, { threads });
      expect(fds(), 'a duplicate of the fd and an eventfd').to.equal(rigFds + 2);
      expect(tasks(), 'worker threads').to.equal(t0 + threads);
      exec(rig, eng, [{ type: BlkReqType.OUT, sector: 0n, payload: bytes(S) }, { type: BlkReqType.FLUSH }]);
      eng.close();
      eng.close();
      expect(fds()).to.equal(rigFds);
      expect(tasksSettled(t0)).to.equal(t0);
      const ram = inRam(1 << 20, { threads });
      expect(tasks()).to.equal(t0 + threads);
      ram.close();
      expect(tasksSettled(t0)).to.equal(t0);
    }
    rig.close();
    closeSync(disk.fd);
    expect(fds()).to.equal(fd0 - 1);
  });

  it('is torn down with a worker thread that never closed it', async () => {
    expect(tasks()).to.equal(0);
    const url = new URL('../../src/native/blk.js', import.meta.url).href;
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(url)}).then(({ BlkEngine }) => {
        const eng = BlkEngine.inRam(2048, { threads: 2, engine: '${engine}' });
        const stop = eng.watch(() => {});
        stop();
        parentPort.postMessage(String(eng.capacitySectors));
      });`;
    const w = new Worker(code, { eval: true });
    let msg = '';
    w.on('message', (m: string) => (msg = m));
    // The worker ends by itself (nothing keeps its loop alive): its environment's teardown
    // destroys the engine, which joins its threads.
    const exitCode = await new Promise<number>((resolve, reject) => {
      w.once('exit', resolve);
      w.once('error', reject);
    });
    expect([msg, exitCode]).to.deep.equal(['2048', 0]);
    expect(tasksSettled(0), 'its threads joined').to.equal(0);
  });

  it('refuses bad options', () => {
    expect(() => new BlkEngine({ fd: 1 << 30 })).to.throw(/fd/);
    expect(() => inRam(0)).to.throw(/RAM disk/);
    expect(() => inRam(8, { threads: 0 })).to.throw(/threads/);
    expect(() => new BlkEngine({} as never)).to.throw(/fd or ram/);
  });
});

// ---------------------------------------------------------------------------
// Property: random request sequences against a reference model.
// ---------------------------------------------------------------------------

const P_SECTORS = 64;

type Op =
  | { kind: 'in' | 'out'; sector: number; count: number; seed: number }
  | { kind: 'discard' | 'wz'; ranges: Array<{ sector: number; num: number; unmap: boolean }> }
  | { kind: 'flush' | 'getid' };

const sectorArb = fc.integer({ min: 0, max: P_SECTORS + 4 });
const rangeArb = fc.record({ sector: sectorArb, num: fc.integer({ min: 0, max: 12 }), unmap: fc.boolean() });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('out' as const), sector: sectorArb, count: fc.integer({ min: 0, max: 8 }), seed: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('in' as const), sector: sectorArb, count: fc.integer({ min: 0, max: 8 }), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('discard' as const), ranges: fc.array(rangeArb.map((r) => ({ ...r, unmap: false })), { minLength: 1, maxLength: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('wz' as const), ranges: fc.array(rangeArb, { minLength: 1, maxLength: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('flush' as const, 'getid' as const) }) },
);
const frameArb = fc.record({
  rcuts: fc.array(fc.integer({ min: 1, max: 16 + 8 * S }), { maxLength: 5 }),
  wcuts: fc.array(fc.integer({ min: 1, max: 8 * S }), { maxLength: 5 }),
  indirect: fc.boolean(),
});
const stepArb = fc.record({ op: opArb, frame: frameArb, barrier: fc.boolean() });

/** Sectors an op reads and writes (for splitting into batches without conflicts). */
function footprint(op: Op): { reads: Array<[number, number]>; writes: Array<[number, number]> } {
  if (op.kind === 'in') return { reads: [[op.sector, op.count]], writes: [] };
  if (op.kind === 'out') return { reads: [], writes: [[op.sector, op.count]] };
  if (op.kind === 'discard' || op.kind === 'wz') return { reads: [], writes: op.ranges.map((r) => [r.sector, r.num] as [number, number]) };
  return { reads: [], writes: [] };
}
const overlaps = (a: Array<[number, number]>, b: Array<[number, number]>): boolean =>
  a.some(([s, n]) => b.some(([t, m]) => s < t + m && t < s + n));

describe('BlkEngine: property — random request sequences equal a reference model', () => {
  it('every IN returns the model, and the disk ends equal to the model', () => {
    fc.assert(
      fc.property(fc.constantFrom<Backend>('file', 'ram'), fc.constantFrom<'split' | 'packed'>('split', 'packed'), fc.array(stepArb, { minLength: 1, maxLength: 40 }), (backend, layout, steps) => {
        const b = new Bench(backend, { layout, sectors: P_SECTORS, maxDiscardSeg: 3, maxWriteZeroesSeg: 3, maxDiscardSectors: 8, maxWriteZeroesSectors: 8, threads: 3 });
        try {
          const model = new Uint8Array(P_SECTORS * S);
          const inRange = (s: number, n: number): boolean => s + n <= P_SECTORS;
          // Batches of requests that may run concurrently: no write overlaps anything else in its batch.
          let batch: Array<{ req: Req; op: Op }> = [];
          let reads: Array<[number, number]> = [];
          let writes: Array<[number, number]> = [];
          const flush = (): void => {
            if (batch.length === 0) return;
            const res = exec(b.rig, b.eng, batch.map((x) => x.req));
            batch.forEach(({ op }, i) => {
              const r = res[i];
              switch (op.kind) {
                case 'in': {
                  const ok = inRange(op.sector, op.count);
                  expect(r.status, 'IN status').to.equal(ok ? 0 : 1);
                  if (ok) expect(eq(r.data, model.subarray(op.sector * S, (op.sector + op.count) * S)), 'IN data').to.equal(true);
                  break;
                }
                case 'out': {
                  const ok = inRange(op.sector, op.count);
                  expect(r.status, 'OUT status').to.equal(ok ? 0 : 1);
                  if (ok) model.set(bytes(op.count * S, op.seed), op.sector * S);
                  break;
                }
                case 'discard':
                case 'wz': {
                  const ok = op.ranges.every((g) => g.num <= 8 && inRange(g.sector, g.num));
                  expect(r.status, `${op.kind} status`).to.equal(ok ? 0 : 1);
                  if (ok) for (const g of op.ranges) model.fill(0, g.sector * S, (g.sector + g.num) * S);
                  break;
                }
                default:
                  expect(r.status).to.equal(0);
              }
            });
            batch = [];
            reads = [];
            writes = [];
          };
          for (const { op, frame, barrier } of steps) {
            const fp = footprint(op);
            if (barrier || overlaps(fp.writes, [...reads, ...writes]) || overlaps(fp.reads, writes) || batch.length >= 16) flush();
            reads.push(...fp.reads);
            writes.push(...fp.writes);
            let req: Req;
            switch (op.kind) {
              case 'in':
                req = { type: BlkReqType.IN, sector: BigInt(op.sector), dataLen: op.count * S };
                break;
              case 'out':
                req = { type: BlkReqType.OUT, sector: BigInt(op.sector), payload: bytes(op.count * S, op.seed) };
                break;
              case 'discard':
              case 'wz':
                req = {
                  type: op.kind === 'discard' ? BlkReqType.DISCARD : BlkReqType.WRITE_ZEROES,
                  payload: dwz(op.ranges.map((g) => ({ sector: g.sector, num: g.num, flags: g.unmap ? 1 : 0 }))),
                };
                break;
              case 'flush':
                req = { type: BlkReqType.FLUSH };
                break;
              case 'getid':
                req = { type: BlkReqType.GET_ID, dataLen: 20 };
                break;
            }
            batch.push({ req: { ...req, ...frame }, op });
          }
          flush();
          expect(eq(b.content(P_SECTORS), model), 'disk equals model').to.equal(true);
          const st = b.eng.stats();
          expect(st.inFlight).to.equal(0);
          expect(st.errors.io).to.equal(0);
        } finally {
          b.close();
        }
      }),
      fcParams(40),
    );
  });
});
});

describe('BlkEngine: choosing the engine', () => {
  it("'auto' takes io_uring where the kernel allows it; 'threads' and 'io_uring' are taken as asked; anything else is refused", () => {
    const disk = makeFile(64 * S);
    const auto = BlkEngine.forFile(disk.fd);
    const threads = BlkEngine.forFile(disk.fd, { engine: 'threads' });
    const uring = BlkEngine.forFile(disk.fd, { engine: 'io_uring' });
    try {
      // This machine's kernel (Linux 6.x, kernel.io_uring_disabled 0) allows io_uring.
      expect([auto.engine, auto.engineNote]).to.deep.equal(['io_uring', '']);
      expect([threads.engine, threads.engineNote]).to.deep.equal(['threads', '']);
      expect(uring.engine).to.equal('io_uring');
      expect(BlkEngine.inRam(8).engine).to.equal('io_uring');
      expect(() => BlkEngine.forFile(disk.fd, { engine: 'aio' as never })).to.throw(TypeError, /engine: expected 'threads', 'io_uring' or 'auto'/);
    } finally {
      for (const e of [auto, threads, uring]) e.close();
      closeSync(disk.fd);
    }
  });
});

describe('BlkEngine: io_uring engine', () => {
  let b: Bench | null = null;
  afterEach(() => {
    b?.close();
    b = null;
    engine = 'threads';
    fileRoot = shmRoot;
  });

  it('executes file IN, OUT and FLUSH in the ring; cached reads on ext4 complete inside submit (no thread hop)', () => {
    engine = 'io_uring';
    fileRoot = tmpdir(); // ext4 here: buffered reads of cached pages complete without waiting
    b = new Bench('file', { fill: 0x11 });
    const data = bytes(8 * S, 3);
    const [w, f] = exec(b.rig, b.eng, [
      { type: BlkReqType.OUT, sector: 16n, payload: data, rcuts: [16, 16 + S] },
      { type: BlkReqType.FLUSH },
    ]);
    expect([w.status, f.status]).to.deep.equal([BlkStatus.OK, BlkStatus.OK]);
    // One request per submit, reaped at once, as the device does at QD 1.
    for (let i = 0; i < 4; i++) {
      const id = b.rig.drv.add(segmentsOf({ type: BlkReqType.IN, sector: 16n, dataLen: 8 * S }));
      b.rig.drv.publish();
      expect(b.eng.serve(b.rig.q)).to.equal(1);
      expect(b.eng.reap(b.rig.q), 'completed inside submit').to.equal(1);
      const got = b.rig.drv.readWritten(id);
      expect(got[got.length - 1]).to.equal(BlkStatus.OK);
      expect(eq(got.subarray(0, 8 * S), data)).to.equal(true);
      b.rig.drv.used();
    }
    const st = b.eng.stats();
    expect(st.uring.sqes).to.equal(6);
    expect(st.uring.inline + st.uring.later).to.equal(6);
    expect(st.uring.inline, 'the cached reads').to.be.at.least(4);
    expect(st.fdatasyncs).to.equal(1);
    expect([st.uring.toPool, st.uring.copiedInline]).to.deep.equal([0, 0]);
  });

  it('copies a lone small request of a file on tmpfs on the submitting thread; deeper queues go to the pool, large requests and FLUSH through the ring', () => {
    engine = 'io_uring';
    fileRoot = shmRoot;
    b = new Bench('file', { fill: 0x22 });
    const big = bytes(512 * S, 5);
    const small = bytes(8 * S, 6);
    const w = exec(b.rig, b.eng, [
      { type: BlkReqType.OUT, sector: 0n, payload: big },
      { type: BlkReqType.OUT, sector: 1024n, payload: small },
      { type: BlkReqType.FLUSH },
    ]);
    expect(w.map((r) => r.status)).to.deep.equal([BlkStatus.OK, BlkStatus.OK, BlkStatus.OK]);
    expect(b.eng.stats().uring.copiedInline, 'the small write came with two others: the pool').to.equal(0);
    const [rb] = exec(b.rig, b.eng, [{ type: BlkReqType.IN, sector: 0n, dataLen: 512 * S }]);
    const [rsm] = exec(b.rig, b.eng, [{ type: BlkReqType.IN, sector: 1024n, dataLen: 8 * S }]);
    expect(eq(rb.data, big) && eq(rsm.data, small)).to.equal(true);
    const st = b.eng.stats();
    expect([st.uring.copiedInline, st.uring.sqes, st.fdatasyncs]).to.deep.equal([1, 3, 1]);
  });

  it('a read past the end of a file shorter than the disk finishes on the pool, zero-filled', () => {
    engine = 'io_uring';
    const disk = makeFile(4 * S, 0x5a, tmpdir());
    const rig = new Rig('split', { size: 64 });
    const eng = forFile(disk.fd, { capacitySectors: 16 });
    try {
      const [r] = exec(rig, eng, [{ type: BlkReqType.IN, sector: 2n, dataLen: 6 * S, wcuts: [S, 3 * S] }]);
      expect(r.status).to.equal(BlkStatus.OK);
      expect(eq(r.data, concat([new Uint8Array(2 * S).fill(0x5a), new Uint8Array(4 * S)]))).to.equal(true);
      expect(eng.stats().uring.toPool).to.equal(1);
    } finally {
      eng.close();
      closeSync(disk.fd);
      rig.close();
    }
  });

  it('copies a lone small RAM request on the submitting thread; large ones and deeper queues go to the pool', () => {
    engine = 'io_uring';
    b = new Bench('ram', { regionSize: 16 * MiB, sectors: 8192 });
    const big = bytes(1 << 20, 9);
    const small = bytes(4 * S, 4);
    const rs = exec(b.rig, b.eng, [
      { type: BlkReqType.OUT, sector: 0n, payload: big },
      { type: BlkReqType.OUT, sector: 4096n, payload: small },
    ]);
    expect(rs.map((r) => r.status)).to.deep.equal([BlkStatus.OK, BlkStatus.OK]);
    const [rb] = exec(b.rig, b.eng, [{ type: BlkReqType.IN, sector: 0n, dataLen: 1 << 20 }]);
    const [rsm] = exec(b.rig, b.eng, [{ type: BlkReqType.IN, sector: 4096n, dataLen: 4 * S }]);
    expect(eq(rb.data, big) && eq(rsm.data, small)).to.equal(true);
    const st = b.eng.stats();
    expect(st.uring.copiedInline).to.equal(1);
    expect(st.uring.sqes).to.equal(0);
  });

  it('submitReap pushes what completed inside the submit with no completion fd write; ring and pool completions still make it readable, and nothing is left readable or unreaped', () => {
    engine = 'io_uring';
    fileRoot = shmRoot;
    b = new Bench('file', { fill: 0x33 });
    const eng = b.eng;
    const efdRead = (): bigint | null => (addon as { eventfdRead(fd: number): bigint | null }).eventfdRead(eng.completionFd);
    const submitReap = (reqs: Req[]): { pushed: number; ids: number[] } => {
      const ids = reqs.map((r) => b!.rig.drv.add(segmentsOf(r)));
      b!.rig.drv.publish();
      const n = b!.rig.q.pop();
      expect(n).to.equal(reqs.length);
      return { pushed: eng.submitReap(b!.rig.q, n), ids };
    };
    // A lone small read of a tmpfs file: copied inside the submit, pushed by the same call.
    for (let i = 0; i < 3; i++) {
      const { pushed, ids } = submitReap([{ type: BlkReqType.IN, sector: BigInt(8 * i), dataLen: 8 * S }]);
      expect(pushed, 'pushed by the same call').to.equal(1);
      expect(efdRead(), 'no completion fd write for it').to.equal(null);
      const got = b.rig.drv.readWritten(ids[0]);
      expect(got[got.length - 1]).to.equal(BlkStatus.OK);
      expect(got.subarray(0, 8 * S).every((x) => x === 0x33)).to.equal(true);
      b.rig.drv.used();
    }
    expect(eng.stats().uring.copiedInline).to.equal(3);
    // Completions that come later (a large read through the ring: tmpfs reads go to io-wq;
    // three at once: the pool) make the fd readable, and a reap takes them.
    for (const reqs of [[{ type: BlkReqType.IN, sector: 0n, dataLen: 512 * S }], Array.from({ length: 3 }, (_, k): Req => ({ type: BlkReqType.IN, sector: BigInt(64 * k), dataLen: 8 * S }))]) {
      const { pushed } = submitReap(reqs);
      expect(eng.waitIdle(10000)).to.equal(true);
      let reaped = pushed;
      if (reaped < reqs.length) {
        expect(efdRead(), 'readable for what completed later').to.not.equal(null);
        reaped += eng.reap(b.rig.q);
      }
      expect(reaped).to.equal(reqs.length);
      expect(eng.inFlight).to.equal(0);
      b.rig.drv.used();
      // Whatever the ring wrote into the fd is reset by the next reap: a level-triggered
      // watcher is not left with a readable fd and nothing to reap.
      expect(eng.reap(b.rig.q)).to.equal(0);
      expect(efdRead(), 'left readable').to.equal(null);
    }
    expect(eng.stats().reaped).to.equal(7);
  });

  it('leaves no ring behind after close(), and close() waits for I/O in the ring', () => {
    const rings = (): number =>
      readdirSync('/proc/self/fd').filter((f) => {
        try {
          return readlinkSync(`/proc/self/fd/${f}`) === 'anon_inode:[io_uring]';
        } catch {
          return false;
        }
      }).length;
    const r0 = rings();
    const disk = makeFile(256 * S, 0, tmpdir());
    const rig = new Rig('split', { size: 64 });
    const eng = BlkEngine.forFile(disk.fd, { engine: 'io_uring' });
    expect(rings()).to.equal(r0 + 1);
    const ids = Array.from({ length: 16 }, (_, i) => rig.drv.add(segmentsOf({ type: BlkReqType.OUT, sector: BigInt(i * 16), payload: bytes(16 * S, i) })));
    rig.drv.publish();
    eng.serve(rig.q);
    eng.close();
    expect(rings()).to.equal(r0);
    expect(eng.reap(rig.q), 'completed before close returned').to.equal(16);
    expect(rig.drv.used().map((u) => u.id).sort((x, y) => x - y)).to.deep.equal([...ids].sort((x, y) => x - y));
    expect(eq(readFileSync(disk.path).subarray(15 * 16 * S, 16 * 16 * S), bytes(16 * S, 15))).to.equal(true);
    closeSync(disk.fd);
    rig.close();
  });
});
