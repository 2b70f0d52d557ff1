// Live migration of a QEMU guest on a vhostkit virtio-blk disk (QEMU 7.2, TCG): the source
// QEMU is attached to disk d1, the destination to disk d2, both served by vhostkit over the
// same image file (`shared`: each takes a shared lock, as the two ends of a migration do).
// The guest writes numbered 64 KiB blocks with O_DIRECT and reads earlier ones back while it
// moves, and a second process reads the whole disk over and over into one buffer. Then: no
// I/O error, every block read back as written, the image holds every block, and the RAM of
// source and destination is identical page by page. Split and packed rings.
import { expect } from 'chai';
import { closeSync, openSync, readSync, truncateSync, writeFileSync } from 'node:fs';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { openDisk, type Disk } from '../../src/backends/blk/disk.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, parseGuestResults, type VhostUserBlkDevice } from '../lib/guest.js';
import { setLogSink, type LogRecord } from '../../src/log.js';
import { consoleLine, migrate, startMigratingGuest, type MigratingGuest } from './migrate.js';

const MiB = 1 << 20;
const BLOCK = 65536;
const FIRST = 16; // blocks start at 1 MiB
const SECONDS = 15;

/** Block n's contents: "block n " repeated, cut at 64 KiB (the guest makes it with yes | head). */
function block(n: number): Buffer {
  const unit = Buffer.from(`block ${n}\n`);
  const b = Buffer.alloc(BLOCK);
  for (let off = 0; off < BLOCK; off += unit.length) unit.copy(b, off);
  return b;
}

const script = `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
vk_result packed=$(vk_feature /sys/block/vda/device/features 34)
# A reader that keeps one buffer (one dd process) and fills it from the disk over and over:
# only the device writes those pages, so a read the backend did not log leaves them
# different on the destination.
( while :; do dd if=/dev/vda of=/dev/null bs=${BLOCK} iflag=direct 2>/dev/null; done ) &
reader=$!
vk_result ready=1
end=$(( $(cut -d. -f1 /proc/uptime) + ${SECONDS} ))
n=0; bad=0
while [ $(cut -d. -f1 /proc/uptime) -lt $end ] && [ $n -lt 900 ]; do
  yes "block $n" | head -c ${BLOCK} > /tmp/b
  dd if=/tmp/b of=/dev/vda bs=${BLOCK} seek=$((${FIRST} + n)) oflag=direct 2>/dev/null || vk_fail "write of block $n"
  r=$((n / 2))
  want=$(yes "block $r" | head -c ${BLOCK} | md5sum | cut -d' ' -f1)
  got=$(dd if=/dev/vda bs=${BLOCK} skip=$((${FIRST} + r)) count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  [ "$want" = "$got" ] || bad=$((bad + 1))
  n=$((n + 1))
done
kill $reader
i=0
while [ $i -lt $n ]; do
  want=$(yes "block $i" | head -c ${BLOCK} | md5sum | cut -d' ' -f1)
  got=$(dd if=/dev/vda bs=${BLOCK} skip=$((${FIRST} + i)) count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  [ "$want" = "$got" ] || bad=$((bad + 1))
  i=$((i + 1))
done
vk_result blocks=$n bad=$bad ioerrors=$(dmesg | grep -c -i 'I/O error')
`;

describe('e2e: live migration of a QEMU guest on a vhostkit disk, I/O running', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  let oldSink: ReturnType<typeof setLogSink>;
  let logs: LogRecord[];
  let disks: Array<{ disk: Disk; be: VhostUserBackend }>;
  let guest: MigratingGuest | null;

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    logs = [];
    disks = [];
    guest = null;
    oldSink = setLogSink((r) => logs.push(r));
    tmp = makeTempDir('vk-migb-');
  });
  afterEach(async () => {
    await guest?.kill();
    for (const d of disks) {
      await d.be.stop();
      d.disk.close();
    }
    tmp.cleanup();
    setLogSink(oldSink);
  });

  it('a second disk on the same image is refused unless both are shared', () => {
    const img = tmp.join('x.img');
    writeFileSync(img, new Uint8Array(0));
    truncateSync(img, MiB);
    const a = openDisk({ file: img });
    try {
      expect(() => openDisk({ file: img, shared: true })).to.throw(/in use: another disk or process serves this image without `shared`/);
    } finally {
      a.close();
    }
    const s1 = openDisk({ file: img, shared: true });
    const s2 = openDisk({ file: img, shared: true });
    expect(() => openDisk({ file: img })).to.throw(/in use.*give both disks `shared`/);
    s1.close();
    s2.close();
  });

  for (const packed of [false, true]) {
    it(`moves a guest from disk d1 to d2 of one image while it writes and reads: RAM identical, no error, data intact (${packed ? 'packed' : 'split'})`, async () => {
      const img = tmp.join('disk.img');
      // Every block different, so that each read changes the reader's buffer.
      const fill = Buffer.alloc(64 * MiB);
      for (let b = 0; b < (64 * MiB) / BLOCK; b++) fill.write(`fill ${b}\n`.repeat(BLOCK / 16).slice(0, BLOCK), b * BLOCK, 'latin1');
      writeFileSync(img, fill);
      for (const n of ['d1', 'd2']) {
        const disk = openDisk({ file: img, shared: true });
        const be = new VhostUserBackend(disk.device, { socket: tmp.join(`${n}.sock`) });
        disks.push({ disk, be });
        await be.start();
      }
      const dev = (n: string): VhostUserBlkDevice => ({ type: 'vhost-user-blk', socket: tmp.join(`${n}.sock`), packed, reconnect: true });
      guest = await startMigratingGuest(tmp, script, [dev('d1')]);
      const { dst, dstQmp } = await guest.startDestination([dev('d2')]);
      await consoleLine(guest.src, /VHOSTKIT-RESULT ready=1/, 120_000);
      await new Promise((r) => setTimeout(r, 2000)); // I/O under way
      const m = await migrate(guest, dstQmp, tmp);
      console.log(`      migration (${packed ? 'packed' : 'split'}): downtime ${m.downtimeMs} ms, total ${m.totalMs} ms; ${m.differingPages.length} of ${m.ramBytes / 4096} pages differ`);
      expect(
        m.differingPages.map((p) => `0x${p.toString(16)}`),
        `guest RAM pages that differ between source and destination\n${m.differences}`,
      ).to.deep.equal([]);
      await consoleLine(dst, /VHOSTKIT-EXIT \d+/, 200_000);
      const r = parseGuestResults(guest.log());
      console.log(`      ${r.blocks} blocks of 64 KiB written and read back across the move`);
      expect(r.packed, 'packed ring bit').to.equal(packed ? '1' : '0');
      expect(dst.log(), 'the script finished on the destination').to.match(/VHOSTKIT-EXIT 0/);
      expect(Number(r.blocks)).to.be.greaterThan(0);
      expect(r.bad, 'blocks read back differently than written').to.equal('0');
      expect(r.ioerrors, 'I/O errors in the guest kernel log').to.equal('0');
      const fd = openSync(img, 'r');
      try {
        const b = Buffer.alloc(BLOCK);
        for (let i = 0; i < Number(r.blocks); i++) {
          readSync(fd, b, 0, BLOCK, (FIRST + i) * BLOCK);
          if (!b.equals(block(i))) expect.fail(`block ${i} in the image is not what the guest wrote`);
        }
      } finally {
        closeSync(fd);
      }
      expect(
        logs.filter((l) => l.level === 'error').map((l) => l.msg),
        'errors logged by vhostkit',
      ).to.deep.equal([]);
    });
  }
});
