// The virtio-blk load generator (src/loadgen/blk.ts) against vhostkit's own RAM disk,
// served by `vhostkit blk` in a process of its own (the generator busy-polls its thread): it
// keeps its depth of requests in flight, counts what completed, and counts a backend's
// error statuses as errors rather than failing.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { publishSplitAvail, runBlkLoad } from '../../src/loadgen/blk.js';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

/** A DataView that logs its 16-bit stores and loads by offset, in program order. */
class LoggingView extends DataView<ArrayBuffer> {
  readonly log: string[] = [];
  override setUint16(at: number, v: number, le?: boolean): void {
    this.log.push(`store ${at}`);
    super.setUint16(at, v, le);
  }
  override getUint16(at: number, le?: boolean): number {
    this.log.push(`load ${at}`);
    return super.getUint16(at, le);
  }
}

describe('loadgen: blk kick decision', () => {
  const ring = { availAddr: 0, usedAddr: 1024, size: 16 };
  const AVAIL_IDX = 2;
  const USED_EVENT = 4 + 2 * 16;
  const AVAIL_EVENT = 1024 + 4 + 8 * 16;

  it('stores avail idx and used_event, then a full barrier, then reads avail_event', () => {
    const dv = new LoggingView(new ArrayBuffer(4096));
    publishSplitAvail(dv, ring, 0, 1, 0x8000, () => dv.log.push('fence'));
    expect(dv.log).to.deep.equal([`store ${AVAIL_IDX}`, `store ${USED_EVENT}`, 'fence', `load ${AVAIL_EVENT}`]);
    expect(dv.getUint16(AVAIL_IDX, true)).to.equal(1);
    expect(dv.getUint16(USED_EVENT, true)).to.equal(0x8000);
  });

  it('asks for a kick when the published range crosses avail_event (vring_need_event), across the u16 wrap', () => {
    const dv = new DataView(new ArrayBuffer(4096));
    const kick = (availEvent: number, oldIdx: number, newIdx: number): boolean => {
      dv.setUint16(AVAIL_EVENT, availEvent, true);
      return publishSplitAvail(dv, ring, oldIdx, newIdx, 0);
    };
    expect(kick(0, 0, 1), 'idx 0 -> 1, event 0').to.equal(true);
    expect(kick(1, 0, 1), 'idx 0 -> 1, event 1: not yet').to.equal(false);
    expect(kick(3, 1, 5), 'idx 1 -> 5 passes event 3').to.equal(true);
    expect(kick(5, 1, 5), 'idx 1 -> 5, event 5: not yet').to.equal(false);
    expect(kick(0xffff, 0xfffe, 1), 'idx 0xfffe -> 1 passes event 0xffff').to.equal(true);
    expect(kick(1, 0xfffe, 1), 'idx 0xfffe -> 1, event 1: not yet').to.equal(false);
    expect(kick(7, 4, 4), 'nothing published').to.equal(false);
  });
});

describe('loadgen: blk', function () {
  this.timeout(30_000);
  let dir: string;
  const children: ChildProcess[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-loadgen-blk-'));
  });
  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.exitCode === null) {
        c.kill('SIGTERM');
        await new Promise((r) => c.once('exit', r));
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** `vhostkit blk` on a 16 MiB RAM disk with 2 queues; resolves once its socket exists. */
  async function serve(readOnly: boolean): Promise<string> {
    const socket = join(dir, readOnly ? 'ro.sock' : 'rw.sock');
    const args = [cli, 'blk', '--socket', socket, '--ram', '16M', '--num-queues', '2', ...(readOnly ? ['--read-only'] : [])];
    const c = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(c);
    const end = Date.now() + 10_000;
    while (!existsSync(socket)) {
      if (c.exitCode !== null) throw new Error(`vhostkit blk exited with ${c.exitCode}`);
      if (Date.now() > end) throw new Error('vhostkit blk did not create its socket in 10 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    return socket;
  }

  it('randread and randwrite at depth 4 on 2 queues: requests complete, none fails, IOPS is requests over seconds', async () => {
    const socket = await serve(false);
    for (const pattern of ['randread', 'randwrite'] as const) {
      const r = await runBlkLoad({ socket, pattern, depth: 4, queues: 2, blockSize: 4096, seconds: 0.3, warmupSeconds: 0.05 });
      expect(r.pattern).to.equal(pattern);
      expect(r.requests, `${pattern}: requests completed`).to.be.greaterThan(0);
      expect(r.errors, `${pattern}: error statuses`).to.equal(0);
      expect(r.iops).to.be.closeTo(r.requests / r.seconds, 1e-6 * r.iops);
      expect(r.p50us).to.be.at.most(r.p99us);
    }
  });

  it('counts the error statuses of a read-only disk asked to write, and does not throw', async () => {
    const socket = await serve(true);
    const r = await runBlkLoad({ socket, pattern: 'randwrite', depth: 2, queues: 1, blockSize: 4096, seconds: 0.2, warmupSeconds: 0.05 });
    expect(r.requests).to.be.greaterThan(0);
    expect(r.errors, 'every write refused, counted in the measured window only').to.equal(r.requests);
  });
});
