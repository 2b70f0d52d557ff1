// kill -9 of the backend during net traffic: two QEMU guests (reconnect=1) ping each other
// through `vhostkit run`; the process is killed with SIGKILL mid-stream and started again on
// the same sockets (stale socket files replaced); QEMU reconnects, vhostkit renegotiates and
// restarts the rings, and the guests' pings flow again.
// TCG, busybox initramfs (test/lib/guest.ts).
//
// Split rings restart from the guests' used indices (QEMU reads them back). Packed rings
// cannot: QEMU 7.2 re-sends the SET_VRING_BASE of the previous start (it could not ask the
// dead backend), and gives vhost-user-net no inflight area. They restart from the ring
// records the dead process left in --state-dir (src/vhost-user/ring-record.ts); without
// them the packed guests' pings never come back.
import { expect } from 'chai';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { chooseAccel, cleanConsoleLine, findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { ctl, start, until, type Daemon, printedQemuArgs } from '../host/daemon.js';

const pingScript = (ip: string, peer: string) => `
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
i=0; until ping -c 1 -W 1 ${peer} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 90 ] || vk_fail "${peer} never answered"; done
echo "PINGS-FLOWING"
s=""; n=0
while [ $n -lt 60 ]; do
  if ping -c 1 -W 1 ${peer} >/dev/null 2>&1; then s="\${s}1"; else s="\${s}0"; fi
  n=$((n+1)); sleep 0.2
done
vk_result seq=$s
sleep 8 # answer the peer's last pings: the two loops drift apart under load
`;

describe('e2e: kill -9 of vhostkit during net traffic, restart, QEMU reconnects', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  const daemons: Daemon[] = [];

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    tmp = makeTempDir('vk-e2e-netkill-');
  });
  afterEach(async () => {
    for (const d of daemons) {
      if (d.child.exitCode === null && d.child.signalCode === null) {
        d.child.kill('SIGKILL');
        await d.exited;
      }
    }
    daemons.length = 0;
    tmp.cleanup();
  });

  for (const packed of [false, true]) {
    it(`${packed ? 'packed' : 'split'} rings: the guests' pings flow again after the backend is killed and restarted`, async () => {
      const api = `unix:${tmp.join('api.sock')}`;
      const args = ['--port', `vm1=${tmp.join('vm1.sock')}`, '--port', `vm2=${tmp.join('vm2.sock')}`, '--api', api, '--state-dir', tmp.join('state')];
      const first = start(args);
      daemons.push(first);
      await until(() => first.out().includes('vm2:\n'), 'vhostkit run to print the QEMU arguments');
      const { accel } = await chooseAccel();
      const dev = (n: string) => printedQemuArgs(first.out(), n, accel).map((a) => (packed && a.startsWith('virtio-net-pci,') ? `${a},packed=on` : a));
      let flowing = 0;
      const onLine = (l: string) => {
        if (cleanConsoleLine(l).includes('PINGS-FLOWING')) flowing++;
      };
      const guests = Promise.allSettled([
        runScript(pingScript('10.0.0.1', '10.0.0.2'), [], 240_000, { accel, extraArgs: dev('vm1'), name: 'vm1', onLine }),
        runScript(pingScript('10.0.0.2', '10.0.0.1'), [], 240_000, { accel, extraArgs: dev('vm2'), name: 'vm2', onLine }),
      ]);
      await until(() => flowing === 2, 'both guests pinging', 200_000);
      await new Promise((r) => setTimeout(r, 1500));
      first.child.kill('SIGKILL');
      expect(await first.exited).to.equal(null);
      await new Promise((r) => setTimeout(r, 500));
      const second = start(args);
      daemons.push(second);
      await until(() => second.out().includes('vm2:\n'), 'the restarted vhostkit to serve');

      const settled = await guests;
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
      for (const s of settled) {
        const seq = (s as PromiseFulfilledResult<Awaited<ReturnType<typeof runScript>>>).value.results.seq;
        console.log(`      pings (1 = answered within 1 s): ${seq}`);
        expect(seq).to.have.length(60);
        expect(seq.endsWith('11111'), 'the last pings are answered').to.equal(true);
        expect(seq.startsWith('1'), 'pings flowed before the kill').to.equal(true);
      }
      // each guest's rings: packed ones continue from the records, split ones need none
      const recovered = second
        .err()
        .split('\n')
        .filter((l) => l.includes('ring position taken from the ring record')).length;
      if (packed) expect(recovered, 'rings restarted from their records').to.be.at.least(4);
      else expect(recovered).to.equal(0);
      const ports = await ctl(api, '--json', 'ports');
      const list = JSON.parse(ports.out) as Array<{ name: string; connected: boolean; counters: Record<string, number> }>;
      for (const p of list) expect(p.counters.rx_packets, `${p.name} traffic through the restarted process`).to.be.greaterThan(3);
      second.child.kill('SIGTERM');
      expect(await second.exited).to.equal(0);
    });
  }
});
