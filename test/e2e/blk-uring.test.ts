// QEMU guests on vhostkit's virtio-blk with the io_uring engine: the guest writes a pattern
// with O_DIRECT and through its page cache, drops its cache, reads both back and checksums
// them; the image holds exactly what it wrote. A file on the system's disk (requests go
// through the ring) and one on tmpfs with polling (small requests copied inline, large ones
// through the ring), split and packed rings.
import { expect } from 'chai';
import { tmpdir } from 'node:os';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { WRITE_PATTERN, expectImageHoldsPattern, guestTestHooks, makeImage, patternMd5, runGuestOnDisk } from '../lib/blk-guest.js';

// The pattern at 1 MiB with O_DIRECT (64 KiB requests), at 3 MiB through the guest's page
// cache (written back by sync), then both read back after drop_caches, once with O_DIRECT in
// 4 KiB requests (the QD 1 path) and once buffered.
const script = `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
${WRITE_PATTERN}
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

describe('e2e: QEMU guests on vhostkit virtio-blk, io_uring engine', function () {
  this.timeout(120_000);
  let tmp: TempDir;
  guestTestHooks();
  afterEach(() => {
    tmp.cleanup();
  });

  const cases = [
    { where: tmpdir(), packed: false, pollUs: 0, queues: 1, path: 'the ring' },
    // two queues and two vCPUs: the poll watches both rings
    { where: '/dev/shm', packed: true, pollUs: 32, queues: 2, path: 'inline copies and the ring' },
  ];
  for (const c of cases) {
    it(`writes O_DIRECT and buffered, reads back after drop_caches (file in ${c.where}: ${c.path}; ${c.packed ? 'packed' : 'split'}, pollUs ${c.pollUs}, ${c.queues} queue${c.queues > 1 ? 's' : ''})`, async () => {
      tmp = makeTempDir('vk-e2e-uring-', c.where);
      const img = makeImage(tmp);
      const {
        results: r,
        stats: st,
        polls,
      } = await runGuestOnDisk(tmp, { file: img, engine: 'io_uring', pollUs: c.pollUs, numQueues: c.queues }, script, { packed: c.packed, queues: c.queues, smp: c.queues });
      const md5 = patternMd5();
      expect([r.written, r.direct, r.buffered]).to.deep.equal([md5, md5, md5]);
      expectImageHoldsPattern(img, [1, 3]);
      // The path the requests took: the ring for the 64 KiB writes everywhere; inline
      // copies of the 4 KiB reads on tmpfs.
      expect(st.errors.io + st.ioerr, 'no failed request').to.equal(0);
      expect(st.uring.sqes, 'requests through the ring').to.be.greaterThan(0);
      expect(st.uring.inline + st.uring.later, 'every SQE completed').to.equal(st.uring.sqes);
      if (c.where === '/dev/shm') expect(st.uring.copiedInline, 'small requests copied inline').to.be.at.least(256);
      else expect(st.uring.copiedInline).to.equal(0);
      // A request done inline leaves nothing in flight: a poll follows (not how often it hits: timing).
      if (c.pollUs > 0) expect(polls.started, 'polls with every queue started').to.be.greaterThan(0);
      else expect(polls.started).to.equal(0);
      // SINGLE_ISSUER | DEFER_TASKRUN on the buffered tmpfs file only (its ring requests complete on io-wq).
      expect(st.uring.deferTaskrun, 'deferred task work').to.equal(c.where === '/dev/shm');
    });
  }
});
