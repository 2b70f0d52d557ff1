// vhostkit blk where io_uring is refused (io_uring_setup fails with EPERM, as under Docker's
// default seccomp profile; test/lib/no-uring.c): the default engine falls back to the thread
// pool and the log says why, and a QEMU guest's writes and reads check out; asked for
// io_uring explicitly, the disk refuses to start and says why.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { makeTempDir, startVhostkitBlk, vhostkitCli, type TempDir } from '../lib/peers.js';
import { WRITE_PATTERN, expectImageHoldsPattern, guestTestHooks, makeImage, patternMd5 } from '../lib/blk-guest.js';
import { runScript } from '../lib/guest.js';
import { buildNoUring } from '../lib/no-uring.js';

// The pattern at 1 MiB with O_DIRECT, read back with O_DIRECT in 4 KiB requests (QD 1).
const script = `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
${WRITE_PATTERN}
dd if=/tmp/pat of=/dev/vda bs=65536 seek=16 oflag=direct 2>/dev/null || vk_fail "dd write"
dd if=/dev/vda of=/tmp/back bs=4096 skip=256 count=256 iflag=direct 2>/dev/null || vk_fail "dd read"
vk_result back=$(md5sum < /tmp/back | cut -d' ' -f1) written=$(md5sum < /tmp/pat | cut -d' ' -f1)
`;

describe('e2e: vhostkit blk where io_uring is refused (seccomp)', function () {
  this.timeout(120_000);
  let tmp: TempDir;
  let noUring: string;
  guestTestHooks();
  beforeEach(() => {
    tmp = makeTempDir('vk-e2e-nouring-');
    noUring = buildNoUring(tmp);
  });
  afterEach(() => {
    tmp.cleanup();
  });

  it('the default engine falls back to the thread pool, says why, and serves a QEMU guest', async () => {
    const img = makeImage(tmp);
    const socket = tmp.join('blk.sock');
    const lines: string[] = [];
    const disk = await startVhostkitBlk({ file: img, socket, wrapper: [noUring], onLine: (l) => lines.push(l) });
    let r: Record<string, string>;
    try {
      r = (await runScript(script, [{ type: 'vhost-user-blk', socket, packed: false }], 100_000)).results;
    } finally {
      await disk.stop();
    }
    expect(
      lines.find((l) => l.includes('vhostkit blk:')),
      'the engine it announces',
    ).to.match(/engine threads\)/);
    const why = lines.find((l) => l.includes('io_uring is not available here'));
    expect(why, 'a log line saying why').to.match(/seccomp/);
    expect([r.written, r.back]).to.deep.equal([patternMd5(), patternMd5()]);
    expectImageHoldsPattern(img, [1]);
  });

  it('engine io_uring, asked for, refuses to start and says why', async () => {
    const img = makeImage(tmp);
    const argv = [process.execPath, vhostkitCli, 'blk', '--socket', tmp.join('blk.sock'), '--file', img, '--engine', 'io_uring'];
    const out = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = execFile(noUring, argv, { timeout: 30_000 }, (_e, _stdout, stderr) => resolve({ code: child.exitCode, stderr }));
    });
    expect(out.code, 'exit status').to.not.equal(0);
    expect(out.stderr)
      .to.match(/io_uring/)
      .and.to.match(/seccomp/);
  });
});
