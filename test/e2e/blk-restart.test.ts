// Crash-safe restart: the vhostkit blk backend is killed with SIGKILL while a QEMU guest
// writes in a loop, and started again on the same socket; QEMU reconnects (reconnect=1),
// the requests that were in flight are resubmitted (inflight tracking), and the guest's
// run finishes with no I/O error and the data verifies. Split and packed rings (for
// packed ones the backend also takes the ring position from the inflight area: QEMU
// sends the base of the previous start again).
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, truncateSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, startGuest } from '../lib/guest.js';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

function startBackend(socket: string, img: string): ChildProcess {
  return spawn(process.execPath, [cli, 'blk', '--socket', socket, '--file', img], { stdio: ['ignore', 'ignore', 'ignore'] });
}

async function waitFor(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// 48 chunks of 256 KiB, each a distinct pattern, written with O_DIRECT one after another;
// then everything is read back and checksummed against what was written.
const script = `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
i=0
while [ $i -lt 48 ]; do
  awk -v c=$i 'BEGIN { for (l = 0; l < 4096; l++) printf "chunk %04d line %06d 0123456789abcdefghijklmnopqrstuvwxyzABCD\\n", c, l }' > /tmp/c
  dd if=/tmp/c of=/dev/vda bs=262144 seek=$i oflag=direct 2>/dev/null || vk_fail "write of chunk $i failed"
  md5sum < /tmp/c | cut -d' ' -f1 >> /tmp/want
  echo "VHOSTKIT-PROGRESS $i"
  i=$((i + 1))
done
i=0
while [ $i -lt 48 ]; do
  dd if=/dev/vda of=/tmp/r bs=262144 skip=$i count=1 iflag=direct 2>/dev/null || vk_fail "read of chunk $i failed"
  md5sum < /tmp/r | cut -d' ' -f1 >> /tmp/got
  i=$((i + 1))
done
cmp /tmp/want /tmp/got && vk_result verified=yes || vk_fail "data differs"
`;

describe('e2e: kill -9 of the blk backend during guest writes (crash-safe restart)', function () {
  this.timeout(240_000);
  let tmp: TempDir;
  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => (tmp = makeTempDir('vk-e2e-kill-')));
  afterEach(() => tmp.cleanup());

  for (const ring of ['split', 'packed'] as const) {
    it(`${ring} ring: survives three SIGKILL + restarts with no I/O error and no lost or torn write`, async () => {
      const img = tmp.join('disk.img');
      writeFileSync(img, new Uint8Array(0));
      truncateSync(img, 64 << 20);
      const sock = tmp.join('blk.sock');
      let be = startBackend(sock, img);
      await waitFor(() => existsSync(sock), 10000, 'the backend socket');
      const guest = await startGuest({
        script,
        devices: [{ type: 'vhost-user-blk', socket: sock, reconnect: true, packed: ring === 'packed' }],
      });
      try {
        for (const at of [8, 20, 32]) {
          await guest.waitFor(new RegExp(`VHOSTKIT-PROGRESS ${at}\\b`), 120_000);
          be.kill('SIGKILL');
          await new Promise((r) => be.once('exit', r));
          be = startBackend(sock, img);
        }
        const exit = await guest.exited;
        expect(guest.results().verified, guest.tail(30)).to.equal('yes');
        expect(exit.scriptExitCode).to.equal(0);
      } finally {
        await guest.stop();
        be.kill('SIGKILL');
      }
    });
  }
});
