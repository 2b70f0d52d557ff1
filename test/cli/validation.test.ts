// One validator for every way in: `vhostkit switch`, `vhostkit run` flags, `vhostkit blk`, a
// configuration file and the API give the same message for the same mistake, and nothing is
// created before it is caught.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseConfig, parsePortConfig, parseDiskConfig } from '../../src/host/config.js';

const run = promisify(execFile);
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

async function fails(args: string[]): Promise<string> {
  const r = await run(process.execPath, [cli, ...args]).then(
    () => null,
    (e: { code: number; stderr: string }) => e,
  );
  expect(r, `vhostkit ${args.join(' ')} should fail`).to.not.equal(null);
  expect(r!.code).to.equal(2);
  return r!.stderr;
}

describe('one validator for flags, files and the API', function () {
  this.timeout(30000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-valid-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a bad MAC: the same message from switch, run, a file and the API', async () => {
    const want = 'mac: expected a MAC address like 52:54:00:12:34:56, got "zz"';
    expect(await fails(['switch', '--port', `a=${join(dir, 'a.sock')},mac=zz`])).to.include(`switches[0].ports[0].${want}`);
    expect(await fails(['run', '--api', 'none', '--port', `a=${join(dir, 'a.sock')},mac=zz`])).to.include(`switches[0].ports[0].${want}`);
    expect(() => parseConfig({ switches: [{ name: 'sw0', ports: [{ name: 'a', socket: 'a.sock', mac: 'zz' }] }] }, dir)).to.throw(`switches[0].ports[0].${want}`);
    expect(() => parsePortConfig({ name: 'a', socket: 'a.sock', mac: 'zz' })).to.throw(want);
    expect(existsSync(join(dir, 'a.sock'))).to.equal(false);
  });

  it('the same socket twice is caught before anything is created', async () => {
    const msg = await fails(['switch', '--port', `a=${join(dir, 's.sock')}`, '--port', `b=${join(dir, 's.sock')}`]);
    expect(msg).to.match(/socket ".*s\.sock" is already used by switches\[0\]\.ports \(a\)\.socket/);
    expect(existsSync(join(dir, 's.sock')), 'no socket made').to.equal(false);
  });

  it('vhostkit blk checks its disk as a configuration file does', async () => {
    const want = 'disk.ram: expected a size that is a multiple of 512 bytes, like "1G" or "512M", got "100"';
    expect(await fails(['blk', '--socket', join(dir, 'd.sock'), '--ram', '100'])).to.include(want);
    expect(() => parseDiskConfig({ socket: 'd.sock', ram: '100' })).to.throw(want);
    expect(await fails(['blk', '--socket', join(dir, 'd.sock'), '--ram', '1M', '--serial', 'x'.repeat(21)])).to.include('disk.serial: expected at most 20 printable ASCII characters');
    expect(existsSync(join(dir, 'd.sock'))).to.equal(false);
  });

  it('a bad engine or poll-us: the same message from run --disk, blk, a file and the API', async () => {
    const sock = join(dir, 'd.sock');
    const range = 'pollUs: expected an integer in 0..1000, got 2000';
    expect(await fails(['run', '--api', 'none', '--disk', `${sock},ram=1M,poll-us=2000`])).to.include(`disks[0].${range}`);
    expect(await fails(['blk', '--socket', sock, '--ram', '1M', '--poll-us', '2000'])).to.include(`disk.${range}`);
    expect(() => parseDiskConfig({ socket: sock, ram: '1M', pollUs: 2000 })).to.throw(`disk.${range}`);
    const threads = "pollUs: 8 polls the io_uring engine's ring; engine threads has none";
    expect(await fails(['run', '--api', 'none', '--disk', `${sock},ram=1M,engine=threads,poll-us=8`])).to.include(`disks[0].${threads}`);
    expect(await fails(['blk', '--socket', sock, '--ram', '1M', '--engine', 'threads', '--poll-us', '8'])).to.include(`disk.${threads}`);
    expect(await fails(['run', '--api', 'none', '--disk', `${sock},ram=1M,engine=uring`])).to.include('disks[0].engine: expected one of threads, io_uring, auto, got "uring"');
    expect(existsSync(sock), 'no socket made').to.equal(false);
  });
});
