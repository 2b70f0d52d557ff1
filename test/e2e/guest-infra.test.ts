// The QEMU guest infrastructure (test/lib/guest.ts) against real peers we do not write:
// a Debian kernel + busybox guest under QEMU, dpdk-testpmd as a vhost-user "wire" between two
// guests' virtio-net NICs, and qemu-storage-daemon as a vhost-user-blk disk.
//
// Needs (scripts/test-deps.sh installs them): qemu-system-x86, dpdk-dev, busybox-static,
// xz-utils, and the guest kernel fetched by scripts/guest-kernel.sh. A missing one FAILS the
// tests with a message naming what to install; nothing is skipped.
//
// The 10.0.0.x addresses below exist only inside the two guests: their frames go guest A ->
// QEMU -> testpmd port 0 -> testpmd port 1 -> QEMU -> guest B, never through a host interface.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { createRawImage, makeTempDir, startStorageDaemon, startTestpmd, type TempDir } from '../lib/peers.js';
import { GuestRunError, chooseAccel, findBusybox, findGuestKernel, runScript, type GuestKernel, type GuestRunResult } from '../lib/guest.js';

function report(what: string, r: GuestRunResult): void {
  console.log(`      ${what}: accel ${r.accel}, boot to script ${(r.bootMs / 1000).toFixed(1)} s, total ${(r.totalMs / 1000).toFixed(1)} s`);
}

/** Script lines without kernel messages ("[    1.234] ..."). */
function scriptLines(r: GuestRunResult): string[] {
  return r.scriptOutput
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !/^\[\s*\d+\.\d+\]/.test(l));
}

describe('e2e: QEMU guests (test/lib/guest.ts)', function () {
  this.timeout(60_000);
  let kernel: GuestKernel;

  before(async function () {
    this.timeout(30_000);
    // These throw GuestPrerequisiteError / PeerMissingError naming what to install.
    kernel = findGuestKernel();
    findBusybox();
    const accel = await chooseAccel(kernel);
    console.log(`      guest kernel ${kernel.release} (${kernel.pvh ? 'vmlinux, PVH boot' : 'bzImage'}); accel ${accel.accel}: ${accel.reason}`);
  });

  it('boots a guest with no devices, runs a script and powers off', async () => {
    const r = await runScript('uname -r; cat /proc/cpuinfo | grep -c processor', [], 50_000);
    report('no devices', r);
    const lines = scriptLines(r);
    expect(lines[0]).to.equal(kernel.release);
    expect(Number(lines[1])).to.equal(1);
    expect(r.scriptExitCode).to.equal(0);
  });

  it('rejects at once, with the console tail, when the guest script reports VHOSTKIT-FAIL', async () => {
    const started = Date.now();
    let err: unknown = null;
    try {
      await runScript('echo before-the-failure; vk_fail the thing broke; echo not-reached', [], 50_000);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(GuestRunError);
    expect((err as Error).message).to.match(/guest reported failure: VHOSTKIT-FAIL the thing broke/);
    expect((err as Error).message).to.include('before-the-failure');
    expect((err as Error).message).to.include('qemu-system-x86_64');
    expect(Date.now() - started).to.be.below(45_000);
  });

  describe('virtio-net through dpdk-testpmd (two vhost ports, io forwarding)', () => {
    let tmp: TempDir;
    beforeEach(() => (tmp = makeTempDir('vk-e2e-')));
    afterEach(() => tmp.cleanup());

    // Each guest: address, link up, ping the other until it answers (it may still be booting),
    // then 3 counted pings from each guest CPU (with 2 queue pairs, CPU n transmits on tx-n),
    // then stay up a little so that the other guest's pings are answered.
    const pingScript = (me: string, peer: string, cpus: number): string => `
F=/sys/class/net/eth0/device/features
[ -e "$F" ] || vk_fail "no eth0: $(ls /sys/class/net)"
vk_result features=$(cat $F) packed=$(vk_feature $F 34) mq=$(vk_feature $F 22) queues=$(ls /sys/class/net/eth0/queues | tr '\\n' ' ')
ip addr add ${me}/24 dev eth0 || vk_fail "ip addr add"
ip link set eth0 up || vk_fail "ip link set eth0 up"
i=0
until ping -c 1 -W 1 ${peer} >/dev/null 2>&1; do
  i=$((i + 1))
  [ $i -lt 35 ] || vk_fail "${peer} never answered"
done
for cpu in $(seq 0 ${cpus - 1}); do
  out=$(taskset $((1 << cpu)) ping -c 3 -W 2 ${peer})
  echo "$out"
  vk_result received_cpu$cpu=$(echo "$out" | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
done
sleep 3
`;

    async function pingPair(opts: { packed: boolean; queues: number }): Promise<void> {
      const { packed, queues } = opts;
      const s0 = tmp.join('s0.sock');
      const s1 = tmp.join('s1.sock');
      // Port 0 (net_vhost0, s0) and port 1 (net_vhost1, s1), paired: what arrives on one is
      // sent on the other (queue n to queue n). Pinned to CPU 1; the guests' TCG threads get
      // CPU 0 mostly.
      const tpmd = await startTestpmd({
        role: 'vhost',
        socket: s0,
        queues,
        extraEalArgs: ['--vdev', `net_vhost1,iface=${s1},queues=${queues}`],
        extraArgs: queues > 1 ? [`--rxq=${queues}`, `--txq=${queues}`] : [],
        forwardMode: 'io',
        cpu: 1,
        memMb: 256,
      });
      let results: GuestRunResult[];
      try {
        await tpmd.process.waitForPath(s1, 5000, { socket: true });
        // A guest with queues > 1 gets -smp queues (startGuest's default) so that its driver
        // enables every queue pair.
        // allSettled: if one guest fails, the other still ends (bounded) before testpmd stops.
        const settled = await Promise.allSettled([
          runScript(pingScript('10.0.0.1', '10.0.0.2', queues), [{ type: 'vhost-user-net', socket: s0, mac: '52:54:00:00:00:01', packed, queues }], 55_000),
          runScript(pingScript('10.0.0.2', '10.0.0.1', queues), [{ type: 'vhost-user-net', socket: s1, mac: '52:54:00:00:00:02', packed, queues }], 55_000),
        ]);
        const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
        if (failed) throw failed.reason;
        results = settled.map((s) => (s as PromiseFulfilledResult<GuestRunResult>).value);
      } finally {
        await tpmd.stop();
      }
      const what = `${packed ? 'packed' : 'split'}, ${queues} queue pair${queues > 1 ? 's' : ''}`;
      results.forEach((r, i) => report(`guest ${'AB'[i]} (${what})`, r));
      for (const r of results) {
        for (let cpu = 0; cpu < queues; cpu++) expect(r.results[`received_cpu${cpu}`], r.scriptOutput).to.equal('3');
        expect(r.results.features.charAt(32), 'VIRTIO_F_VERSION_1').to.equal('1');
        expect(r.results.packed, `packed ring bit 34 in ${r.results.features}`).to.equal(packed ? '1' : '0');
        expect(r.results.mq, `VIRTIO_NET_F_MQ bit 22 in ${r.results.features}`).to.equal(queues > 1 ? '1' : '0');
        const expectedQueues = Array.from({ length: queues }, (_, q) => `rx-${q}`).concat(Array.from({ length: queues }, (_, q) => `tx-${q}`));
        expect(r.results.queues.split(' ').sort()).to.deep.equal(expectedQueues.sort());
      }
    }

    it('two guests ping each other over split rings', async () => {
      await pingPair({ packed: false, queues: 1 });
    });

    it('two guests ping each other over packed rings (packed=on, bit 34 negotiated)', async () => {
      await pingPair({ packed: true, queues: 1 });
    });

    it('two guests ping each other over 2 queue pairs (mq=on, -smp 2, vectors=0)', async () => {
      await pingPair({ packed: false, queues: 2 });
    });
  });

  describe('virtio-blk served by qemu-storage-daemon', () => {
    let tmp: TempDir;
    beforeEach(() => (tmp = makeTempDir('vk-e2e-')));
    afterEach(() => tmp.cleanup());

    it('writes a pattern with O_DIRECT, reads it back, and the image file holds it', async () => {
      const img = tmp.join('disk.img');
      const size = 64 << 20;
      createRawImage(img, size);
      const qsd = await startStorageDaemon({ image: img, socket: tmp.join('blk.sock') });
      // 16384 lines of 64 bytes = 1 MiB, written at 1 MiB (bs 64 KiB, seek 16).
      let expected = '';
      for (let i = 0; i < 16384; i++) expected += `vhostkit line ${String(i).padStart(8, '0')} 0123456789abcdefghijklmnopqrstuvwxyzABCD\n`;
      const expectedBuf = Buffer.from(expected, 'latin1');
      expect(expectedBuf.length).to.equal(1 << 20);
      const script = `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
vk_result sectors=$(cat /sys/block/vda/size) features=$(cat /sys/block/vda/device/features)
awk 'BEGIN { for (i = 0; i < 16384; i++) printf "vhostkit line %08d 0123456789abcdefghijklmnopqrstuvwxyzABCD\\n", i }' > /tmp/pat
dd if=/tmp/pat of=/dev/vda bs=65536 seek=16 oflag=direct 2>&1 || vk_fail "dd write"
dd if=/dev/vda of=/tmp/back bs=65536 skip=16 count=16 iflag=direct 2>&1 || vk_fail "dd read"
md5sum /tmp/pat /tmp/back
vk_result written=$(md5sum < /tmp/pat | cut -d' ' -f1) readback=$(md5sum < /tmp/back | cut -d' ' -f1)
`;
      let r: GuestRunResult;
      try {
        r = await runScript(script, [{ type: 'vhost-user-blk', socket: qsd.socket }], 50_000);
      } finally {
        await qsd.stop();
      }
      report('blk', r);
      const md5 = createHash('md5').update(expectedBuf).digest('hex');
      expect(r.results.sectors).to.equal(String(size / 512));
      expect(r.results.written, 'the guest generated the same pattern').to.equal(md5);
      expect(r.results.readback, 'read back through the disk').to.equal(md5);
      const fd = openSync(img, 'r');
      const onDisk = Buffer.alloc(1 << 20);
      const before = Buffer.alloc(1 << 20);
      try {
        readSync(fd, onDisk, 0, onDisk.length, 1 << 20);
        readSync(fd, before, 0, before.length, 0);
      } finally {
        closeSync(fd);
      }
      expect(onDisk.equals(expectedBuf), 'the image holds the pattern at 1 MiB').to.equal(true);
      expect(
        before.every((x) => x === 0),
        'nothing written below 1 MiB',
      ).to.equal(true);
    });
  });
});
