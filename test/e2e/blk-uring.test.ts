// QEMU guests on vhostkit's virtio-blk with the io_uring engine: the guest writes a pattern
// with O_DIRECT and through its page cache, drops its cache, reads both back and checksums
// them; the image holds exactly what it wrote. A file on the system's disk (requests go
// through the ring) and one on tmpfs with polling (small requests copied inline, large ones
// through the ring), split and packed rings.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { openDisk } from '../../src/backends/blk/disk.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { setLogSink } from '../../src/log.js';

const MiB = 1 << 20;
// 1 MiB of numbered lines: at 1 MiB with O_DIRECT (64 KiB requests), at 3 MiB through the
// guest's page cache (written back by sync), then both read back after drop_caches, once
// with O_DIRECT in 4 KiB requests (the QD 1 path) and once buffered.
const script = `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
awk 'BEGIN { for (i = 0; i < 16384; i++) printf "vhostkit line %08d 0123456789abcdefghijklmnopqrstuvwxyzABCD\\n", i }' > /tmp/pat
dd if=/tmp/pat of=/dev/vda bs=65536 seek=16 oflag=direct 2>/dev/null || vk_fail "dd write direct"
dd if=/tmp/pat of=/dev/vda bs=65536 seek=48 2>/dev/null || vk_fail "dd write buffered"
sync
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/d bs=4096 skip=256 count=256 iflag=direct 2>/dev/null || vk_fail "dd read direct"
vk_result direct=$(md5sum < /tmp/d | cut -d' ' -f1)
dd if=/dev/vda of=/tmp/b bs=65536 skip=48 count=16 2>/dev/null || vk_fail "dd read buffered"
vk_result buffered=$(md5sum < /tmp/b | cut -d' ' -f1)
vk_result written=$(md5sum < /tmp/pat | cut -d' ' -f1)
`;

function expected(): Buffer {
  let s = '';
  for (let i = 0; i < 16384; i++) s += `vhostkit line ${String(i).padStart(8, '0')} 0123456789abcdefghijklmnopqrstuvwxyzABCD\n`;
  return Buffer.from(s, 'latin1');
}

describe('e2e: QEMU guests on vhostkit virtio-blk, io_uring engine', function () {
  this.timeout(120_000);
  let tmp: TempDir;
  let old: ReturnType<typeof setLogSink>;
  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    old = setLogSink(() => undefined);
  });
  afterEach(() => {
    tmp.cleanup();
    setLogSink(old);
  });

  const cases = [
    { where: tmpdir(), packed: false, pollUs: 0, path: 'the ring' },
    { where: '/dev/shm', packed: true, pollUs: 32, path: 'inline copies and the ring' },
  ];
  for (const c of cases) {
    it(`writes O_DIRECT and buffered, reads back after drop_caches (file in ${c.where}: ${c.path}; ${c.packed ? 'packed' : 'split'}, pollUs ${c.pollUs})`, async () => {
      tmp = makeTempDir('vk-e2e-uring-', c.where);
      const img = tmp.join('disk.img');
      writeFileSync(img, new Uint8Array(0));
      truncateSync(img, 64 * MiB);
      const disk = openDisk({ file: img, engine: 'io_uring', pollUs: c.pollUs });
      expect(disk.engine.engine).to.equal('io_uring');
      const be = new VhostUserBackend(disk.device, { socket: tmp.join('blk.sock') });
      await be.start();
      let r;
      let st;
      try {
        r = await runScript(script, [{ type: 'vhost-user-blk', socket: tmp.join('blk.sock'), packed: c.packed }], 100_000);
      } finally {
        await be.stop();
        st = disk.engine.stats();
        disk.close();
      }
      const md5 = createHash('md5').update(expected()).digest('hex');
      expect([r.results.written, r.results.direct, r.results.buffered]).to.deep.equal([md5, md5, md5]);
      const fd = openSync(img, 'r');
      try {
        for (const at of [1, 3]) {
          const b = Buffer.alloc(MiB);
          readSync(fd, b, 0, MiB, at * MiB);
          expect(b.equals(expected()), `the image holds the guest's bytes at ${at} MiB`).to.equal(true);
        }
      } finally {
        closeSync(fd);
      }
      // The path the requests took: the ring for the 64 KiB writes everywhere; inline
      // copies of the 4 KiB reads on tmpfs.
      expect(st.errors.io + st.ioerr, 'no failed request').to.equal(0);
      expect(st.uring.sqes, 'requests through the ring').to.be.greaterThan(0);
      expect(st.uring.inline + st.uring.later, 'every SQE completed').to.equal(st.uring.sqes);
      if (c.where === '/dev/shm') expect(st.uring.copiedInline, 'small requests copied inline').to.be.at.least(256);
      else expect(st.uring.copiedInline).to.equal(0);
    });
  }
});
