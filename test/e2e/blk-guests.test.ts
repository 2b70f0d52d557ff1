// QEMU guests on vhostkit's virtio-blk: write a pattern with O_DIRECT, read it back,
// compare checksums; split and packed rings, file and RAM disks, 1 and 4 queues; the image
// file holds exactly what the guest wrote.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, truncateSync, writeFileSync } from 'node:fs';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { openDisk } from '../../src/backends/blk/disk.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { setLogSink } from '../../src/log.js';

const MiB = 1 << 20;
// 1 MiB of numbered lines, written at 1 MiB, read back, checksummed in the guest.
const script = (cpus: number) => `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
vk_result sectors=$(cat /sys/block/vda/size) features=$(cat /sys/block/vda/device/features) hwq=$(ls /sys/block/vda/mq | wc -l)
awk 'BEGIN { for (i = 0; i < 16384; i++) printf "vhostkit line %08d 0123456789abcdefghijklmnopqrstuvwxyzABCD\\n", i }' > /tmp/pat
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

function expected(): Buffer {
  let s = '';
  for (let i = 0; i < 16384; i++) s += `vhostkit line ${String(i).padStart(8, '0')} 0123456789abcdefghijklmnopqrstuvwxyzABCD\n`;
  return Buffer.from(s, 'latin1');
}

describe('e2e: QEMU guests on vhostkit virtio-blk', function () {
  this.timeout(120_000);
  let tmp: TempDir;
  let old: ReturnType<typeof setLogSink>;
  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    old = setLogSink(() => undefined);
    tmp = makeTempDir('vk-e2e-blk-');
  });
  afterEach(() => {
    tmp.cleanup();
    setLogSink(old);
  });

  const cases: Array<{ kind: 'file' | 'ram'; packed: boolean; queues: number }> = [
    { kind: 'file', packed: false, queues: 1 },
    { kind: 'file', packed: true, queues: 1 },
    { kind: 'ram', packed: false, queues: 1 },
    { kind: 'file', packed: false, queues: 4 },
  ];
  for (const c of cases) {
    it(`writes and reads back with O_DIRECT (${c.kind}, ${c.packed ? 'packed' : 'split'}, ${c.queues} queue${c.queues > 1 ? 's' : ''})`, async () => {
      const img = tmp.join('disk.img');
      writeFileSync(img, new Uint8Array(0));
      truncateSync(img, 64 * MiB);
      const disk = openDisk(c.kind === 'file' ? { file: img, numQueues: c.queues } : { ramBytes: 64 * MiB, numQueues: c.queues });
      const be = new VhostUserBackend(disk.device, { socket: tmp.join('blk.sock') });
      await be.start();
      const cpus = c.queues;
      let r;
      try {
        r = await runScript(script(cpus), [{ type: 'vhost-user-blk', socket: tmp.join('blk.sock'), packed: c.packed, numQueues: c.queues }], 100_000, { smp: cpus });
      } finally {
        await be.stop();
        disk.close();
      }
      const md5 = createHash('md5').update(expected()).digest('hex');
      expect(r.results.sectors).to.equal(String((64 * MiB) / 512));
      expect(r.results.features.charAt(34), 'packed ring bit').to.equal(c.packed ? '1' : '0');
      expect(Number(r.results.hwq), 'hardware queues the guest uses').to.equal(c.queues);
      expect(r.results.written).to.equal(md5);
      for (let cpu = 0; cpu < cpus; cpu++) expect(r.results[`back${cpu}`], `read back on cpu ${cpu}`).to.equal(md5);
      if (c.kind === 'file') {
        const fd = openSync(img, 'r');
        try {
          for (let cpu = 0; cpu < cpus; cpu++) {
            const b = Buffer.alloc(MiB);
            readSync(fd, b, 0, MiB, (1 + cpu) * MiB);
            expect(b.equals(expected()), `the image holds the guest's bytes (cpu ${cpu})`).to.equal(true);
          }
        } finally {
          closeSync(fd);
        }
      }
    });
  }
});
