// A user's session with `vhostkit run`: one process serving two switch ports and a RAM disk;
// two QEMU guests booted with the QEMU arguments it printed (vm1 with the disk, vm2 without);
// they ping each other, vm1 writes and reads back its disk; `vhostkit ctl` then shows the
// ports' counters, the learnt MACs, the disk's requests and /metrics; SIGTERM cleans up.
// TCG, busybox initramfs (test/lib/guest.ts).
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { chooseAccel, findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { ctl, metric, start, until, type Daemon, printedQemuArgs } from '../host/daemon.js';

const vm1Script = `
ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
i=0; until ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 90 ] || vk_fail "vm2 never answered"; done
vk_result ping=$(ping -c 3 -W 2 10.0.0.2 | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
[ -b /dev/vda ] || vk_fail "no /dev/vda"
vk_result sectors=$(cat /sys/block/vda/size)
dd if=/dev/urandom of=/tmp/pat bs=65536 count=16 2>/dev/null
dd if=/tmp/pat of=/dev/vda bs=65536 seek=8 oflag=direct 2>/dev/null || vk_fail "dd write"
dd if=/dev/vda of=/tmp/back bs=65536 skip=8 count=16 iflag=direct 2>/dev/null || vk_fail "dd read"
vk_result wrote=$(md5sum < /tmp/pat | cut -d' ' -f1) read=$(md5sum < /tmp/back | cut -d' ' -f1)
sleep 8
`;

const vm2Script = `
ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
i=0; until ping -c 1 -W 1 10.0.0.1 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 90 ] || vk_fail "vm1 never answered"; done
vk_result ping=$(ping -c 3 -W 2 10.0.0.1 | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
sleep 4
`;

describe('e2e: a user sets up two QEMU guests and a disk with `vhostkit run` and `vhostkit ctl`', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  let d: Daemon | null = null;

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    tmp = makeTempDir('vk-e2e-run-');
  });
  afterEach(async () => {
    if (d && d.child.exitCode === null) {
      d.child.kill('SIGKILL');
      await d.exited;
    }
    d = null;
    tmp.cleanup();
  });

  it('the guests ping each other through the switch, vm1 writes and reads back its disk; ctl and /metrics show it all', async () => {
    const api = `unix:${tmp.join('api.sock')}`;
    d = start(['--port', `vm1=${tmp.join('vm1.sock')}`, '--port', `vm2=${tmp.join('vm2.sock')}`, '--disk', `disk0=${tmp.join('disk0.sock')},ram=64M`, '--api', api]);
    const daemon = d;
    await until(() => daemon.out().includes('disk0:\n'), 'vhostkit run to print the QEMU arguments');
    const out = daemon.out();
    expect(out).to.include('-object memory-backend-memfd,id=mem,size=<RAM>,share=on -numa node,memdev=mem');
    expect(out).to.include('under TCG, QEMU 7.2 needs vectors=0');
    const { accel } = await chooseAccel();
    const args1 = [...printedQemuArgs(out, 'vm1', accel), ...printedQemuArgs(out, 'disk0', accel)];
    const args2 = printedQemuArgs(out, 'vm2', accel);
    // The guests' -m and memory-backend-memfd come from the test launcher, as they would
    // from the user's own command line.
    const settled = await Promise.allSettled([
      runScript(vm1Script, [], 240_000, { accel, extraArgs: args1, name: 'vm1' }),
      runScript(vm2Script, [], 240_000, { accel, extraArgs: args2, name: 'vm2' }),
    ]);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const [g1, g2] = settled.map((s) => (s as PromiseFulfilledResult<Awaited<ReturnType<typeof runScript>>>).value);
    expect(g1.results.ping).to.equal('3');
    expect(g2.results.ping).to.equal('3');
    expect(g1.results.sectors, '64 MiB in 512-byte sectors').to.equal(String((64 << 20) / 512));
    expect(g1.results.read, 'vm1 read back what it wrote').to.equal(g1.results.wrote);

    const ports = await ctl(api, '--json', 'ports');
    expect(ports.code, ports.err).to.equal(0);
    const list = JSON.parse(ports.out) as Array<{ name: string; counters: Record<string, number> }>;
    for (const n of ['vm1', 'vm2']) {
      const p = list.find((x) => x.name === n);
      expect(p, n).to.not.equal(undefined);
      expect(p!.counters.rx_packets, `${n} sent frames into the switch`).to.be.greaterThan(3);
      expect(p!.counters.tx_packets, `${n} received frames from the switch`).to.be.greaterThan(3);
    }
    const fdb = await ctl(api, 'fdb', 'sw0');
    expect(fdb.out).to.match(/52:54:00:00:00:10\s.*vm1/);
    expect(fdb.out).to.match(/52:54:00:00:00:11\s.*vm2/);
    const disks = await ctl(api, '--json', 'disks');
    expect(disks.code, disks.err).to.equal(0);
    expect((JSON.parse(disks.out) as Array<{ name: string }>).map((x) => x.name)).to.deep.equal(['disk0']);
    const m = (await ctl(api, 'metrics')).out;
    expect(metric(m, 'vhostkit_disk_written_bytes_total', { disk: 'disk0' }), 'written bytes').to.be.at.least(1 << 20);
    expect(metric(m, 'vhostkit_disk_read_bytes_total', { disk: 'disk0' }), 'read bytes').to.be.at.least(1 << 20);
    expect(metric(m, 'vhostkit_port_rx_packets_total', { port: 'vm2' })).to.be.greaterThan(3);

    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).to.equal(0);
    for (const s of ['vm1.sock', 'vm2.sock', 'disk0.sock', 'api.sock']) expect(existsSync(tmp.join(s)), s).to.equal(false);
  });
});
