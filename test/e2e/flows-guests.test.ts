// QEMU guests on a switch with a flow table: a flow drops ICMP to one guest while TCP to it
// passes (an 8 MiB file with its md5), and the flow counts what it dropped. TCG, busybox
// initramfs (test/lib/guest.ts).
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { setLogSink } from '../../src/log.js';

const MAC = (i: number) => `52:54:00:00:02:0${i}`;

/** An 8 MiB random file over HTTP, up until its client is done (`upSeconds` at most); it pings no one (ICMP to it is dropped). */
const serverScript = (ip: string, upSeconds: number) => `
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1048576 count=8 2>/dev/null || vk_fail "no file"
vk_result md5=$(md5sum < /www/f | cut -d' ' -f1)
httpd -p 80 -h /www || vk_fail "httpd"
vk_hold 9 1 ${upSeconds} || echo "the client did not finish in ${upSeconds} s"
`;

/** Fetches the file (retrying until the server is up), then counts echo replies to 3 pings. */
const clientScript = (ip: string, server: string) => `
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
i=0; until wget -q -O /tmp/f http://${server}/f 2>/dev/null; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "wget failed"; sleep 1; done
vk_result md5=$(md5sum < /tmp/f | cut -d' ' -f1) size=$(wc -c < /tmp/f)
vk_result ping=$(ping -c 3 -W 1 ${server} | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
vk_release ${server} 9
`;

describe('e2e: QEMU guests on a switch with flows', function () {
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
    tmp = makeTempDir('vk-e2e-flows-');
    sw = await Switch.create({ dataplane: 'worker' });
    for (const n of ['a', 'b']) await sw.addVhostPort({ name: n, socket: tmp.join(`${n}.sock`) });
  });
  afterEach(async () => {
    await sw.close();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  it('icmp,nw_dst=A,actions=drop: the pings to A go unanswered, the file over TCP arrives intact, the flow counts the pings', async () => {
    await sw.addFlow('priority=100,icmp,nw_dst=10.0.0.1,actions=drop');
    const dev = (n: string, i: number) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`${n}.sock`), mac: MAC(i), reconnect: true }];
    const [a, b] = await Promise.all([runScript(serverScript('10.0.0.1', 25), dev('a', 1), 200_000), runScript(clientScript('10.0.0.2', '10.0.0.1'), dev('b', 2), 200_000)]);
    expect(b.results.size).to.equal(String(8 << 20));
    expect(b.results.md5, 'the file arrived intact').to.equal(a.results.md5);
    expect(b.results.ping, 'no echo request reached A').to.equal('0');
    const [flow] = await sw.dumpFlows();
    expect(flow.match).to.equal('icmp,nw_dst=10.0.0.1');
    expect(flow.packets, 'the three echo requests').to.be.at.least(3);
    expect(sw.counters('b').drop_flow).to.equal(flow.packets);
  });
});
