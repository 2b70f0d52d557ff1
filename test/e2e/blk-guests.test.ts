// QEMU guests on vhostkit's virtio-blk: write a pattern with O_DIRECT, read it back,
// compare checksums; split and packed rings, file and RAM disks, 1 and 4 queues, each with
// both request engines (io_uring and threads); the image file holds exactly what the guest
// wrote.
import { expect } from 'chai';
import type { BlkEngineKind } from '../../src/native/blk.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { MiB, WRITE_PATTERN, expectImageHoldsPattern, guestTestHooks, makeImage, patternMd5, runGuestOnDisk } from '../lib/blk-guest.js';

// The pattern written at 1 MiB (one MiB further per CPU), read back, checksummed in the guest.
const script = (cpus: number) => `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
vk_result sectors=$(cat /sys/block/vda/size) features=$(cat /sys/block/vda/device/features) hwq=$(ls /sys/block/vda/mq | wc -l)
${WRITE_PATTERN}
for cpu in $(seq 0 ${cpus - 1}); do
  taskset $((1 << cpu)) dd if=/tmp/pat of=/dev/vda bs=65536 seek=$((16 + cpu * 16)) oflag=direct 2>/dev/null || vk_fail "dd write on cpu $cpu"
done
sync
for cpu in $(seq 0 ${cpus - 1}); do
  taskset $((1 << cpu)) dd if=/dev/vda of=/tmp/back bs=65536 skip=$((16 + cpu * 16)) count=16 iflag=direct 2>/dev/null || vk_fail "dd read"
  vk_result back$cpu=$(md5sum < /tmp/back | cut -d' ' -f1)
done
vk_result written=$(md5sum < /tmp/pat | cut -d' ' -f1)
`;

describe('e2e: QEMU guests on vhostkit virtio-blk', function () {
  this.timeout(120_000);
  let tmp: TempDir;
  guestTestHooks();
  beforeEach(() => {
    tmp = makeTempDir('vk-e2e-blk-');
  });
  afterEach(() => {
    tmp.cleanup();
  });

  const cases: Array<{ kind: 'file' | 'ram'; packed: boolean; queues: number }> = [
    { kind: 'file', packed: false, queues: 1 },
    { kind: 'file', packed: true, queues: 1 },
    { kind: 'ram', packed: false, queues: 1 },
    { kind: 'file', packed: false, queues: 4 },
  ];
  const engines: BlkEngineKind[] = ['io_uring', 'threads'];
  for (const engine of engines) {
    for (const c of cases) {
      it(`writes and reads back with O_DIRECT (engine ${engine}; ${c.kind}, ${c.packed ? 'packed' : 'split'}, ${c.queues} queue${c.queues > 1 ? 's' : ''})`, async () => {
        const img = makeImage(tmp);
        const disk = c.kind === 'file' ? { file: img, numQueues: c.queues, engine } : { ramBytes: BigInt(64 * MiB), numQueues: c.queues, engine };
        const cpus = c.queues;
        const { results: r, stats } = await runGuestOnDisk(tmp, disk, script(cpus), { packed: c.packed, queues: c.queues, smp: cpus });
        const md5 = patternMd5();
        expect(r.sectors).to.equal(String((64 * MiB) / 512));
        expect(r.features.charAt(34), 'packed ring bit').to.equal(c.packed ? '1' : '0');
        expect(Number(r.hwq), 'hardware queues the guest uses').to.equal(c.queues);
        expect(r.written).to.equal(md5);
        for (let cpu = 0; cpu < cpus; cpu++) expect(r[`back${cpu}`], `read back on cpu ${cpu}`).to.equal(md5);
        if (c.kind === 'file')
          expectImageHoldsPattern(
            img,
            Array.from({ length: cpus }, (_, cpu) => 1 + cpu),
          );
        expect(stats.errors.io + stats.ioerr, 'no failed request').to.equal(0);
        // The engine asked for is the one that served: the threads engine never touches a ring.
        if (engine === 'threads') expect(stats.uring.sqes, 'no io_uring SQE with the threads engine').to.equal(0);
        else if (c.kind === 'file') expect(stats.uring.sqes, 'requests through the ring').to.be.greaterThan(0);
      });
    }
  }
});
