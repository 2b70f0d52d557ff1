// examples/l4-balancer.ts with QEMU guests: a client VM fetches files from a virtual
// address over TCP; the balancer's handler spreads the connections over two backend VMs,
// whose replies come back rewritten to the VIP. TCG, busybox initramfs (test/lib/guest.ts).
import { expect } from 'chai';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Switch } from '../../src/switch/switch.js';
import { installBalancer, type BalancerOptions } from '../../examples/l4-balancer.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { setLogSink } from '../../src/log.js';

const EXAMPLE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'l4-balancer.js');
const MAC = (i: number) => `52:54:00:00:03:0${i}`;
const VIP = '10.0.0.100';

/** A backend: its name at /id, a 2 MiB file of its own at /f (md5 reported), up until it served /f twice. */
const backendScript = (name: string, ip: string) => `
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
mkdir -p /www && echo ${name} > /www/id && dd if=/dev/urandom of=/www/f bs=1048576 count=2 2>/dev/null || vk_fail "no file"
vk_result md5=$(md5sum < /www/f | cut -d' ' -f1)
httpd -f -vv -p 80 -h /www 2>/tmp/log &
i=0; until [ "$(grep -c 'url:/f' /tmp/log)" -ge 2 ]; do i=$((i+1)); [ $i -lt 240 ] || vk_fail "served /f $(grep -c 'url:/f' /tmp/log) times"; sleep 1; done
sleep 3
`;

/** Waits until both backends answer at the VIP, then 6 /id and 4 /f fetches, each a connection. */
const clientScript = (ip: string) => `
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
seen=""; i=0
until echo "$seen" | grep -q b && echo "$seen" | grep -q c; do
  i=$((i+1)); [ $i -lt 90 ] || vk_fail "backends not both up at the VIP: $seen"
  rm -f /tmp/id; wget -q -O /tmp/id http://${VIP}/id 2>/dev/null && seen="$seen $(cat /tmp/id)"; sleep 1
done
ids=""; for k in 1 2 3 4 5 6; do rm -f /tmp/id; wget -q -O /tmp/id http://${VIP}/id || vk_fail "id $k"; ids="$ids$(cat /tmp/id)"; done
vk_result ids=$ids
sums=""; for k in 1 2 3 4; do wget -q -O /tmp/f http://${VIP}/f || vk_fail "fetch $k"; sums="$sums,$(md5sum < /tmp/f | cut -d' ' -f1)"; done
vk_result sums=$sums
`;

describe('e2e: examples/l4-balancer.ts with QEMU guests', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  let sw: Switch;
  let oldSink: ReturnType<typeof setLogSink>;

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(async () => {
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-e2e-lb-');
    sw = await Switch.create({ dataplane: 'worker' });
    for (const n of ['client', 'b', 'c']) await sw.addVhostPort({ name: n, socket: tmp.join(`${n}.sock`) });
  });
  afterEach(async () => {
    await sw.close();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  it('spreads TCP connections to the VIP over both backends, in turn; every file arrives intact', async () => {
    const o: BalancerOptions = {
      vip: VIP,
      vipMac: '02:00:00:00:01:00',
      tcpPort: 80,
      backends: [
        { port: 'b', ip: '10.0.0.2', mac: MAC(2) },
        { port: 'c', ip: '10.0.0.3', mac: MAC(3) },
      ],
    };
    await installBalancer(sw, o, EXAMPLE);
    const dev = (n: string, i: number) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`${n}.sock`), mac: MAC(i), reconnect: true }];
    const [client, b, c] = await Promise.all([
      runScript(clientScript('10.0.0.1'), dev('client', 1), 280_000),
      runScript(backendScript('b', '10.0.0.2'), dev('b', 2), 280_000),
      runScript(backendScript('c', '10.0.0.3'), dev('c', 3), 280_000),
    ]);
    expect(client.results.ids, 'six connections, alternating').to.match(/^(bc){3}$|^(cb){3}$/);
    const sums = client.results.sums.split(',').filter((x) => x !== '');
    expect(sums.length).to.equal(4);
    expect(new Set(sums), "each file is one backend's, intact; both served").to.deep.equal(new Set([b.results.md5, c.results.md5]));
    const flows = await sw.dumpFlows();
    const perConnection = flows.filter((f) => f.priority === 250);
    expect(perConnection.length % 2, 'two flows per connection').to.equal(0);
    expect(perConnection.length / 2, 'at least the 10 measured connections').to.be.at.least(10);
    const [h] = await sw.handlers();
    expect(h.errors).to.equal(0);
    // The handler saw each connection's first frames (and ARP), not the 8 MiB of data.
    const native = perConnection.reduce((s, f) => s + f.packets, 0);
    expect(native, 'frames switched by the connection flows').to.be.greaterThan(10 * h.frames);
  });
});
