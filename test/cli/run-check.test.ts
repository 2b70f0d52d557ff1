// `vhostkit run --check` checks the disk images as well as the configuration: a missing image,
// one that is not raw (qcow2, with the qemu-img line to convert it), one of a size that is not
// whole sectors; and openDisk refuses a qcow2 image instead of serving its bytes as raw.
import { expect } from 'chai';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { openDisk } from '../../src/backends/blk/disk.js';
import { requirePeer } from '../lib/peers.js';

const run = promisify(execFile);
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

describe('vhostkit run --check: disk images', function () {
  this.timeout(30000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-check-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('names each image that cannot be served, and why; a good one passes', async () => {
    execFileSync(requirePeer('qemu-img'), ['create', '-q', '-f', 'qcow2', join(dir, 'vm.qcow2'), '16M']);
    writeFileSync(join(dir, 'odd.img'), new Uint8Array(1000));
    writeFileSync(join(dir, 'ok.img'), new Uint8Array(0));
    truncateSync(join(dir, 'ok.img'), 1 << 20);
    const disk = (n: string, f: string) => ['--disk', `${n}=${join(dir, `${n}.sock`)},file=${join(dir, f)}`];
    const bad = await run(process.execPath, [cli, 'run', '--check', '--api', 'none', ...disk('a', 'vm.qcow2'), ...disk('b', 'nope.img'), ...disk('c', 'odd.img'), ...disk('d', 'ok.img')]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((bad as { code: number }).code).to.equal(2);
    const err = (bad as { stderr: string }).stderr;
    expect(err).to.include(
      `disk a: ${join(dir, 'vm.qcow2')} is a qcow2 image, and vhostkit serves raw images only: convert it with  qemu-img convert -O raw ${join(dir, 'vm.qcow2')} ${join(dir, 'vm.raw')}`,
    );
    expect(err).to.match(/disk b: .*nope\.img: ENOENT \(no such image\)/);
    expect(err).to.match(/disk c: .*odd\.img: 1000 bytes, expected a positive multiple of 512/);
    expect(err).to.not.match(/disk d:/);
    const ok = await run(process.execPath, [cli, 'run', '--check', '--api', 'none', ...disk('d', 'ok.img')]);
    expect(ok.stdout).to.match(/configuration OK: .* 1 disk/);
    expect(() => openDisk({ file: join(dir, 'vm.qcow2') })).to.throw(/is a qcow2 image.*qemu-img convert -O raw/);
    // Declared raw: served as it is (a raw disk whose guest wrote a qcow2 header at its start).
    const raw = await run(process.execPath, [cli, 'run', '--check', '--api', 'none', '--disk', `a=${join(dir, 'a.sock')},file=${join(dir, 'vm.qcow2')},format=raw`]).catch(
      (e: { stderr: string }) => e,
    );
    expect((raw as { stderr?: string }).stderr ?? '').to.not.include('qcow2 image');
    openDisk({ file: join(dir, 'ok.img'), format: 'raw' }).close();
  });
});
