// QEMU guests with host_mtu on the vhostkit switch: QEMU 7.2 sends NET_SET_MTU (protocol
// feature NET_MTU, VIRTIO_NET_F_MTU negotiated) with the host_mtu value, and the switch
// judges frames for that guest by it, not by the port's configured MTU (1500 here).
// Guest a: host_mtu=1400, `ip link set eth0 mtu 1400`; guest b: host_mtu=9000, mtu 9000.
// b pings a with payloads around a's limit: frames up to 1400 + 18 bytes (room for a VLAN
// tag, as the data plane allows) arrive; one byte more is dropped by the switch
// (drop_too_big on port a). With the port's own 1500 it would pass. TCG, busybox initramfs.
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import type { NetDevice } from '../../src/backends/net/device.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript, type GuestRunResult } from '../lib/guest.js';
import { setLogSink } from '../../src/log.js';

const received = (dst: string, size: number, count: number) => `$(ping -c ${count} -W 2 -s ${size} ${dst} | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')`;

const guestScript = (ip: string, peer: string, mtu: number, pings: string) => `
ip link set eth0 mtu ${mtu} || vk_fail "mtu ${mtu}"
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
vk_result mtu=$(cat /sys/class/net/eth0/mtu) f_mtu=$(vk_feature /sys/class/net/eth0/device/features 3)
i=0; until ping -c 1 -W 1 ${peer} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "${peer} never answered"; done
${pings}
`;

describe('e2e: QEMU guests with host_mtu on the vhostkit switch (NET_SET_MTU)', function () {
  this.timeout(240_000);
  let tmp: TempDir;
  let sw: Switch;
  let oldSink: ReturnType<typeof setLogSink>;

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(async () => {
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-e2e-mtu-');
    sw = await Switch.create({ dataplane: 'worker' });
    for (const n of ['a', 'b']) await sw.addVhostPort({ name: n, socket: tmp.join(`${n}.sock`) });
  });
  afterEach(async () => {
    await sw.close();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  it('frames for a host_mtu=1400 guest: 1418 bytes arrive, 1419 are dropped by the switch; ping -s 1372 / 1376 answered, 1377 not', async () => {
    const dev = (n: string, mac: string, mtu: number) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`${n}.sock`), mac, reconnect: true, props: { host_mtu: mtu } }];
    const bPings = [
      `vk_result at_mtu=${received('10.0.0.1', 1372, 3)}`, // IP 1400: a's MTU exactly
      `vk_result at_limit=${received('10.0.0.1', 1376, 3)}`, // IP 1404, frame 1418 = MTU + 18 (a's reply is fragmented)
      `vk_result over_limit=${received('10.0.0.1', 1377, 2)}`, // frame 1419: dropped on the way to a
      'vk_release 10.0.0.1 9',
    ].join('\n');
    // The MTU each port's device holds while its guest runs (it returns to the port's own when the session ends).
    const seen = { a: 0, b: 0 };
    const watch = setInterval(() => {
      for (const n of ['a', 'b'] as const) {
        const m = (sw.backend(n).device as NetDevice).mtu;
        if (m !== 1500) seen[n] = m;
      }
    }, 20);
    const settled = await Promise.allSettled([
      runScript(guestScript('10.0.0.1', '10.0.0.2', 1400, 'vk_hold 9 1 30'), dev('a', '52:54:00:00:02:01', 1400), 200_000),
      runScript(guestScript('10.0.0.2', '10.0.0.1', 9000, bPings), dev('b', '52:54:00:00:02:02', 9000), 200_000),
    ]);
    clearInterval(watch);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const [a, b] = settled.map((s) => (s as PromiseFulfilledResult<GuestRunResult>).value);
    expect(a.results.mtu).to.equal('1400');
    expect(b.results.mtu).to.equal('9000');
    expect(a.results.f_mtu, 'VIRTIO_NET_F_MTU negotiated').to.equal('1');
    expect(seen.a, 'NET_SET_MTU from QEMU reached port a').to.equal(1400);
    expect(seen.b, 'NET_SET_MTU from QEMU reached port b').to.equal(9000);
    expect((sw.backend('a').device as NetDevice).mtu, 'after the guest: the port MTU a new frontend starts from').to.equal(1500);
    expect(b.results.at_mtu).to.equal('3');
    expect(b.results.at_limit).to.equal('3');
    expect(b.results.over_limit, 'over the limit: no answer').to.equal('0');
    expect(sw.counters('a').drop_too_big, 'the switch dropped them').to.equal(2);
    expect(sw.counters('b').drop_too_big).to.equal(0);
  });
});
