// QEMU guests on our switch: three guests ping each other and move an 8 MiB file with an
// md5 check, with split and with packed rings, and with two data-plane threads (ports a and
// c on one, b on the other: the server's frames to b cross threads); a guest powered off and
// booted again on the same socket re-attaches and works; two guests with two queue pairs
// each (smp 2) on two threads have their pairs spread and fetch the file from both CPUs.
// TCG, busybox initramfs (test/lib/guest.ts).
// The 10.0.0.x addresses exist only inside the guests, on the switch between them.
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript, type GuestRunResult } from '../lib/guest.js';
import { setLogSink } from '../../src/log.js';

const MAC = (i: number) => `52:54:00:00:01:0${i}`;

/**
 * The server: an 8 MiB random file over HTTP; stays up until `releases` clients (one per
 * peer unless said) are done, `upSeconds` at most.
 */
const serverScript = (ip: string, peers: string[], upSeconds: number, releases = peers.length) => `
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
vk_result packed=$(vk_feature /sys/class/net/eth0/device/features 34)
mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1048576 count=8 2>/dev/null || vk_fail "no file"
vk_result md5=$(md5sum < /www/f | cut -d' ' -f1)
httpd -p 80 -h /www || vk_fail "httpd"
for p in ${peers.join(' ')}; do
  i=0; until ping -c 1 -W 1 $p >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "$p never answered"; done
done
vk_result pinged=ok
vk_hold 9 ${releases} ${upSeconds} || echo "the clients did not all finish in ${upSeconds} s"
`;

/** A client: pings everyone, fetches the file, prints its md5. */
const clientScript = (ip: string, server: string, peers: string[]) => `
ip addr add ${ip}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
vk_result packed=$(vk_feature /sys/class/net/eth0/device/features 34)
for p in ${[server, ...peers].join(' ')}; do
  i=0; until ping -c 1 -W 1 $p >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "$p never answered"; done
done
vk_result ping=$(ping -c 3 -W 2 ${server} | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
t0=$(cut -d' ' -f1 /proc/uptime)
i=0; until wget -q -O /tmp/f http://${server}/f 2>/dev/null; do i=$((i+1)); [ $i -lt 30 ] || vk_fail "wget failed"; sleep 1; done
t1=$(cut -d' ' -f1 /proc/uptime)
vk_result md5=$(md5sum < /tmp/f | cut -d' ' -f1) size=$(wc -c < /tmp/f) ms=$(awk "BEGIN { print int(($t1 - $t0) * 1000) }")
vk_release ${server} 9
`;

describe('e2e: QEMU guests on the vhostkit switch', function () {
  this.timeout(240_000);
  let tmp: TempDir;
  let sw: Switch;
  let oldSink: ReturnType<typeof setLogSink>;

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  async function start(threads: number, queuePairs = 1): Promise<void> {
    sw = await Switch.create({ dataplane: 'worker', threads });
    for (const n of ['a', 'b', 'c']) await sw.addVhostPort({ name: n, socket: tmp.join(`${n}.sock`), queuePairs });
  }
  beforeEach(() => {
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-e2e-sw-');
  });
  afterEach(async () => {
    await sw?.close();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  for (const [packed, threads] of [
    [false, 1],
    [true, 1],
    [false, 2],
  ] as const) {
    it(`three guests ping each other and move an 8 MiB file intact (${packed ? 'packed' : 'split'} rings, ${threads} data-plane thread${threads > 1 ? 's' : ''})`, async () => {
      await start(threads);
      const dev = (n: string, i: number) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`${n}.sock`), mac: MAC(i), packed, reconnect: true }];
      const settled = await Promise.allSettled([
        runScript(serverScript('10.0.0.1', ['10.0.0.2', '10.0.0.3'], 25), dev('a', 1), 200_000),
        runScript(clientScript('10.0.0.2', '10.0.0.1', ['10.0.0.3']), dev('b', 2), 200_000),
        runScript(clientScript('10.0.0.3', '10.0.0.1', ['10.0.0.2']), dev('c', 3), 200_000),
      ]);
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
      const [a, b, c] = settled.map((s) => (s as PromiseFulfilledResult<GuestRunResult>).value);
      for (const r of [a, b, c]) expect(r.results.packed, 'packed ring bit').to.equal(packed ? '1' : '0');
      for (const r of [b, c]) {
        console.log(
          `      8 MiB over TCP guest to guest (${packed ? 'packed' : 'split'}, ${threads} thread(s), TCG): ${r.results.ms} ms = ${((8 * 1048576) / (Number(r.results.ms) / 1000) / 1e6).toFixed(1)} MB/s`,
        );
        expect(r.results.ping).to.equal('3');
        expect(r.results.size).to.equal(String(8 << 20));
        expect(r.results.md5, 'the file arrived intact').to.equal(a.results.md5);
      }
      const fdb = await sw.fdb();
      expect(fdb.map((e) => [e.mac, e.portName]).sort()).to.deep.include.members([
        [MAC(1), 'a'],
        [MAC(2), 'b'],
        [MAC(3), 'c'],
      ]);
      expect(sw.counters('a').rx_bytes, 'the file came in on port a (twice: one copy per client)').to.be.greaterThan(16 << 20);
      // Ports go to the thread with the fewest: a and c on thread 0, b on thread 1 (the
      // guests are gone now, so their queues are not listed): each thread forwarded.
      const served = await sw.dataplane.threads();
      expect(served.map((t) => t.thread)).to.deep.equal(threads === 1 ? [0] : [0, 1]);
      for (const t of served) expect(t.busySeconds, `thread ${t.thread} forwarded frames`).to.be.greaterThan(0);
    });
  }

  it('two guests with two queue pairs each, on two threads: the pairs spread, a transfer from each guest CPU arrives intact', async () => {
    await start(2, 2);
    const dev = (n: string, i: number) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`${n}.sock`), mac: MAC(i), queues: 2, reconnect: true }];
    // The client fetches the file twice at once, one wget on each CPU: a guest CPU n sends
    // on its tx-n (the driver's XPS), so both of b's TX queues carry.
    const client = `
ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
vk_result queues=$(ls /sys/class/net/eth0/queues | tr '\\n' ' ')
i=0; until ping -c 1 -W 1 10.0.0.1 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "10.0.0.1 never answered"; done
for cpu in 0 1; do
  ( i=0; until taskset $((1 << cpu)) wget -q -O /tmp/f$cpu http://10.0.0.1/f 2>/dev/null; do i=$((i+1)); [ $i -lt 30 ] || exit 1; sleep 1; done ) &
done
wait || vk_fail "wget failed"
vk_result md5_0=$(md5sum < /tmp/f0 | cut -d' ' -f1) md5_1=$(md5sum < /tmp/f1 | cut -d' ' -f1) size=$(wc -c < /tmp/f1)
vk_release 10.0.0.1 9
`;
    // While the guests run, which thread serves each queue and how many frames it carried.
    const seen = new Map<string, { thread: number; packets: number }>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const q of await sw.dataplane.queueStats()) seen.set(`${q.port}${q.index}`, { thread: q.thread, packets: Math.max(q.packets, seen.get(`${q.port}${q.index}`)?.packets ?? 0) });
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    let settled: Array<PromiseSettledResult<GuestRunResult>>;
    try {
      settled = await Promise.allSettled([runScript(serverScript('10.0.0.1', ['10.0.0.2'], 30), dev('a', 1), 200_000), runScript(client, dev('b', 2), 200_000)]);
    } finally {
      sampling = false;
      await sampler;
    }
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const [a, b] = settled.map((s) => (s as PromiseFulfilledResult<GuestRunResult>).value);
    expect(b.results.queues, 'the guest driver enabled both pairs').to.equal('rx-0 rx-1 tx-0 tx-1');
    expect(b.results.size).to.equal(String(8 << 20));
    for (const k of ['md5_0', 'md5_1']) expect(b.results[k], `${k}: the file arrived intact`).to.equal(a.results.md5);
    const at = (k: string) => seen.get(k)?.thread;
    for (const port of ['a', 'b']) {
      expect(
        [0, 1, 2, 3].map((i) => at(`${port}${i}`)).every((t) => t !== undefined),
        `all of ${port}'s queues served: ${JSON.stringify([...seen])}`,
      ).to.equal(true);
      expect(at(`${port}0`), `${port}'s pair 0: RX and TX on one thread`).to.equal(at(`${port}1`));
      expect(at(`${port}2`), `${port}'s pair 1: RX and TX on one thread`).to.equal(at(`${port}3`));
      expect(at(`${port}0`), `${port}'s pairs on different threads`).to.not.equal(at(`${port}2`));
    }
    for (const k of ['b1', 'b3']) expect(seen.get(k)!.packets, `${k}: the client sent on this TX queue`).to.be.greaterThan(0);
    expect(sw.counters('a').queue_errors + sw.counters('b').queue_errors).to.equal(0);
  });

  it('a guest powered off and booted again on the same socket re-attaches and works', async () => {
    await start(1);
    const dev = (n: string, i: number) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`${n}.sock`), mac: MAC(i), reconnect: true }];
    const server = runScript(serverScript('10.0.0.1', ['10.0.0.2'], 60, 2), dev('a', 1), 200_000);
    const first = await runScript(clientScript('10.0.0.2', '10.0.0.1', []), dev('b', 2), 120_000);
    const second = await runScript(clientScript('10.0.0.2', '10.0.0.1', []), dev('b', 2), 120_000);
    const a = await server;
    for (const r of [first, second]) {
      expect(r.results.ping).to.equal('3');
      expect(r.results.md5).to.equal(a.results.md5);
    }
    expect(sw.counters('b').queue_errors).to.equal(0);
  });
});
