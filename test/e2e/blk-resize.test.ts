// A QEMU guest sees its vhost-user-blk disks grow while it runs: `vhostkit run` serves a
// file disk and a RAM disk; the guest writes the last MiB of each, then waits; the file is
// grown with truncate and re-read with `vhostkit ctl disk-resize d0`, the RAM disk given a
// size with `vhostkit ctl disk-resize d1 96M` (a shrink is refused on the way). QEMU 7.2
// answers CONFIG_CHANGE_MSG with GET_CONFIG and a config interrupt; the guest's virtio_blk
// updates /sys/block/vdX/size. The guest then writes and reads back 1 MiB past the old end
// (md5), checks the old last MiB is intact, and that writing past the new end fails.
// TCG, busybox initramfs (test/lib/guest.ts).
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, truncateSync, writeFileSync } from 'node:fs';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, startGuest, type Guest } from '../lib/guest.js';
import { ctl, start, until, type Daemon } from '../host/daemon.js';

const MiB = 1 << 20;

const script = `
for d in vda vdb; do
  [ -b /dev/$d ] || vk_fail "no /dev/$d"
  eval old_$d=$(cat /sys/block/$d/size)
  eval vk_result ${'$'}{d}_serial=$(cat /sys/block/$d/serial) ${'$'}{d}_old=\\$old_$d
done
# The last MiB of each disk as it is now: a pattern, kept across the resize.
dd if=/dev/urandom of=/tmp/tail bs=65536 count=16 2>/dev/null
for d in vda vdb; do
  eval o=\\$old_$d
  dd if=/tmp/tail of=/dev/$d bs=65536 seek=$((o / 128 - 16)) oflag=direct 2>/dev/null || vk_fail "dd tail $d"
done
vk_result tail=$(md5sum < /tmp/tail | cut -d' ' -f1)
echo VK-READY-TO-RESIZE
for d in vda vdb; do
  eval o=\\$old_$d
  n=0; while [ "$(cat /sys/block/$d/size)" = "$o" ]; do n=$((n+1)); [ $n -lt 900 ] || vk_fail "$d never changed size"; usleep 100000; done
  vk_result ${'$'}{d}_new=$(cat /sys/block/$d/size)
done
dd if=/dev/urandom of=/tmp/pat bs=65536 count=16 2>/dev/null
vk_result pat=$(md5sum < /tmp/pat | cut -d' ' -f1)
for d in vda vdb; do
  eval o=\\$old_$d
  dd if=/tmp/pat of=/dev/$d bs=65536 seek=$((o / 128)) oflag=direct 2>/dev/null || vk_fail "dd write past the old end of $d"
  dd if=/dev/$d of=/tmp/back bs=65536 skip=$((o / 128)) count=16 iflag=direct 2>/dev/null || vk_fail "dd read past the old end of $d"
  dd if=/dev/$d of=/tmp/tailback bs=65536 skip=$((o / 128 - 16)) count=16 iflag=direct 2>/dev/null || vk_fail "dd read tail of $d"
  n=$(cat /sys/block/$d/size)
  if dd if=/tmp/pat of=/dev/$d bs=512 seek=$n count=1 oflag=direct 2>/dev/null; then b=wrote; else b=refused; fi
  vk_result ${'$'}{d}_back=$(md5sum < /tmp/back | cut -d' ' -f1) ${'$'}{d}_tail=$(md5sum < /tmp/tailback | cut -d' ' -f1) ${'$'}{d}_beyond=$b
done
`;

describe('e2e: a QEMU guest sees its disks grow (vhostkit ctl disk-resize)', function () {
  this.timeout(240_000);
  let tmp: TempDir;
  let d: Daemon | null = null;
  let guest: Guest | null = null;
  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    tmp = makeTempDir('vk-e2e-resize-');
  });
  afterEach(async () => {
    if (guest?.running) await guest.kill();
    guest = null;
    if (d && d.child.exitCode === null) {
      d.child.kill('SIGKILL');
      await d.exited;
    }
    d = null;
    tmp.cleanup();
  });

  it('file disk grown with truncate + disk-resize NAME, RAM disk with disk-resize NAME SIZE: the guest sees both, writes and reads past the old end', async () => {
    const img = tmp.join('d0.img');
    writeFileSync(img, new Uint8Array(0));
    truncateSync(img, 64 * MiB);
    const api = `unix:${tmp.join('api.sock')}`;
    d = start(['--disk', `d0=${tmp.join('d0.sock')},file=${img},serial=vk-file`, '--disk', `d1=${tmp.join('d1.sock')},ram=64M,serial=vk-ram`, '--api', api]);
    const daemon = d;
    await until(() => daemon.out().includes('d1:\n'), 'vhostkit run to print the QEMU arguments');
    const g = await startGuest({
      script,
      devices: [
        { type: 'vhost-user-blk', socket: tmp.join('d0.sock') },
        { type: 'vhost-user-blk', socket: tmp.join('d1.sock') },
      ],
    });
    guest = g;
    const failed = g.waitFor(/VHOSTKIT-FAIL.*/, 200_000).then((m) => m[0]);
    const ready = await Promise.race([g.waitFor(/VK-READY-TO-RESIZE/, 120_000).then(() => null), failed]);
    expect(ready, `guest: ${g.tail()}`).to.equal(null);

    // A shrink is refused with the reason, nothing changes.
    const shrink = await ctl(api, 'disk-resize', 'd1', '32M');
    expect(shrink.code).to.equal(1);
    expect(shrink.err).to.match(/vhostkit ctl disk-resize: disk d1: size 33554432: smaller than the disk \(67108864 bytes\); shrinking is refused/);
    const noSize = await ctl(api, 'disk-resize', 'd1');
    expect(noSize.code).to.equal(1);
    expect(noSize.err).to.include('disk d1 is a RAM disk: give the new size');

    truncateSync(img, 96 * MiB);
    const r0 = await ctl(api, 'disk-resize', 'd0');
    expect(r0.code, r0.err).to.equal(0);
    expect(r0.out).to.equal(`disk d0: ${64 * MiB} -> ${96 * MiB} bytes; the guest was told\n`);
    const r1 = await ctl(api, 'disk-resize', 'd1', '96M');
    expect(r1.code, r1.err).to.equal(0);
    expect(r1.out).to.equal(`disk d1: ${64 * MiB} -> ${96 * MiB} bytes; the guest was told\n`);
    const disks = await ctl(api, 'disks');
    // The guest may have finished its checks and powered off by now (a slow
    // machine), so UP is not asserted: the sizes are what this test is about.
    expect(disks.out, disks.out).to.match(new RegExp(`d0 +\\S+ +(yes|no) +\\S*d0\\.img +${96 * MiB} `));
    expect(disks.out, disks.out).to.match(new RegExp(`d1 +\\S+ +(yes|no) +ram +${96 * MiB} `));

    const exit = await Promise.race([g.exited, failed.then((l) => new Error(l))]);
    if (exit instanceof Error) throw new Error(`${exit.message}\n${g.tail()}`);
    const res = g.results();
    expect(exit.scriptExitCode, g.tail()).to.equal(0);
    const oldSectors = String((64 * MiB) / 512);
    const newSectors = String((96 * MiB) / 512);
    expect(res.vda_serial).to.equal('vk-file');
    expect(res.vdb_serial).to.equal('vk-ram');
    for (const dev of ['vda', 'vdb']) {
      expect(res[`${dev}_old`], dev).to.equal(oldSectors);
      expect(res[`${dev}_new`], `${dev}: /sys/block/${dev}/size after the resize`).to.equal(newSectors);
      expect(res[`${dev}_back`], `${dev}: 1 MiB past the old end read back`).to.equal(res.pat);
      expect(res[`${dev}_tail`], `${dev}: the old last MiB kept`).to.equal(res.tail);
      expect(res[`${dev}_beyond`], `${dev}: a write past the new end`).to.equal('refused');
    }
    // The image holds what the guest wrote past its old end.
    const fd = openSync(img, 'r');
    try {
      const b = Buffer.alloc(MiB);
      readSync(fd, b, 0, MiB, 64 * MiB);
      expect(createHash('md5').update(b).digest('hex'), 'image bytes past the old end').to.equal(res.pat);
    } finally {
      closeSync(fd);
    }
    const info = await ctl(api, '--json', 'disk', 'd1');
    expect(JSON.parse(info.out).stats.errors.range, 'no request of the guest was out of range').to.equal(0);
  });
});
