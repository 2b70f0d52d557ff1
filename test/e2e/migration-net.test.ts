// Live migration of a QEMU guest on the vhostkit switch (QEMU 7.2, TCG): guest A moves from
// port a1 to port a2 of the same switch (source and destination QEMU, `migrate unix:`) while
// it pings guest B and receives a TCP stream from it. Then: the guest RAM of source and
// destination is identical page by page (the dirty log covered every write of the switch
// into A's memory), the stream arrived intact (md5), few pings were lost, and an 8 MiB bulk
// transfer after the move is intact. Split and packed rings, and a guest with two queue
// pairs (smp 2) on a switch with two threads, its pairs spread over them: each thread logs
// what it writes into A's memory.
//
// QEMU 7.2 stops the source's device with SET_STATUS 0 before GET_VRING_BASE: a backend that
// forgets its ring positions on status 0 answers 0, and the destination's rings start at 0
// while the guest's indices are far ahead (AVAIL_IDX_JUMP, "Guest index ... inconsistent
// with Host index 0x0"); then nothing after the move arrives.
import { expect } from 'chai';
import { Switch } from '../../src/switch/switch.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, parseGuestResults, startGuest, type Guest, type VhostUserNetDevice } from '../lib/guest.js';
import { setLogSink, type LogRecord } from '../../src/log.js';
import { consoleLine, migrate, startMigratingGuest, type MigratingGuest } from './migrate.js';

const MiB = 1 << 20;
const MAC_A = '52:54:00:00:02:01';
const MAC_B = '52:54:00:00:02:02';
const STREAM_SECONDS = 12;
const PINGS = 170; // every 0.1 s: longer than the stream

/** B: serves a timed TCP stream (nc -e) and an 8 MiB file (httpd), and reports their md5s. */
const scriptB = `
ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
mkdir -p /www
dd if=/dev/urandom of=/www/f bs=1048576 count=8 2>/dev/null || vk_fail "no file"
dd if=/dev/urandom of=/chunk bs=65536 count=4 2>/dev/null || vk_fail "no chunk"
vk_result bulk_md5=$(md5sum < /www/f | cut -d' ' -f1)
cat > /stream.sh <<'EOS'
#!/bin/sh
mkfifo /tmp/sent
md5sum < /tmp/sent > /tmp/sent.md5 2>/dev/null &
end=$(( $(cut -d. -f1 /proc/uptime) + ${STREAM_SECONDS} ))
while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do cat /chunk; done | tee /tmp/sent
wait
EOS
chmod +x /stream.sh
nc -l -p 5000 -e /stream.sh &
echo ok > /www/ready
httpd -p 80 -h /www || vk_fail "httpd"
vk_result serving=1
i=0; until [ -s /tmp/sent.md5 ]; do sleep 1; i=$((i+1)); [ $i -lt 300 ] || vk_fail "the stream never ended"; done
vk_result stream_md5=$(cut -d' ' -f1 /tmp/sent.md5)
sleep 600
`;

/** A: pings B through the move, receives the stream, then fetches the 8 MiB file. */
const scriptA = `
ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
vk_result packed=$(vk_feature /sys/class/net/eth0/device/features 34)
i=0; until wget -q -O /dev/null http://10.0.0.2/ready 2>/dev/null; do i=$((i+1)); [ $i -lt 120 ] || vk_fail "B never served"; sleep 1; done
ping -i 0.1 -c ${PINGS} 10.0.0.2 > /tmp/ping 2>&1 &
pp=$!
mkfifo /tmp/count
wc -c < /tmp/count > /tmp/bytes &
vk_result ready=1
md5=$(nc 10.0.0.2 5000 < /dev/null | tee /tmp/count | md5sum | cut -d' ' -f1)
wait %2 2>/dev/null; sleep 1
vk_result stream_md5=$md5 stream_bytes=$(cat /tmp/bytes)
wait $pp
vk_result ping_rx=$(sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p' /tmp/ping)
vk_result bulk_md5=$(wget -q -O - http://10.0.0.2/f | md5sum | cut -d' ' -f1)
`;

describe('e2e: live migration of a QEMU guest between two ports of the switch', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  let sw: Switch;
  let oldSink: ReturnType<typeof setLogSink>;
  let logs: LogRecord[];
  let guests: Array<Guest | MigratingGuest>;

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(async () => {
    logs = [];
    guests = [];
    oldSink = setLogSink((r) => logs.push(r));
    tmp = makeTempDir('vk-mig-');
  });
  async function start(threads: number, queuePairs: number): Promise<void> {
    sw = await Switch.create({ dataplane: 'worker', threads });
    for (const n of ['a1', 'a2', 'b']) await sw.addVhostPort({ name: n, socket: tmp.join(`${n}.sock`), queuePairs });
  }
  afterEach(async () => {
    await Promise.all(guests.map((g) => g.kill()));
    await sw?.close();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  for (const { packed, queues } of [
    { packed: false, queues: 1 },
    { packed: true, queues: 1 },
    { packed: false, queues: 2 },
  ]) {
    const what = `${packed ? 'packed' : 'split'}${queues > 1 ? `, ${queues} queue pairs on a switch with ${queues} threads` : ''}`;
    it(`moves a guest from port a1 to a2 while it pings and streams TCP: RAM identical, stream and bulk intact (${what})`, async () => {
      await start(queues, queues);
      const dev = (sock: string, mac: string): VhostUserNetDevice => ({ type: 'vhost-user-net', socket: tmp.join(sock), mac, packed, queues, reconnect: true });
      const b = await startGuest({ script: scriptB, devices: [dev('b.sock', MAC_B)], name: 'mig-b' });
      guests.push(b);
      const a = await startMigratingGuest(tmp, scriptA, [dev('a1.sock', MAC_A)]);
      guests.push(a);
      const { dst, dstQmp } = await a.startDestination([dev('a2.sock', MAC_A)]);
      await consoleLine(a.src, /VHOSTKIT-RESULT ready=1/, 150_000);
      await consoleLine(b, /VHOSTKIT-RESULT serving=1/, 1000);
      const m = await migrate(a, dstQmp, tmp);
      console.log(`      migration (${what}): downtime ${m.downtimeMs} ms, total ${m.totalMs} ms; ${m.differingPages.length} of ${m.ramBytes / 4096} pages differ`);
      expect(
        m.differingPages.map((p) => `0x${p.toString(16)}`),
        `guest RAM pages that differ between source and destination\n${m.differences}`,
      ).to.deep.equal([]);
      // The stream ends on the destination: it crossed the move.
      await consoleLine(dst, /VHOSTKIT-RESULT stream_md5=/, 150_000);
      const streamOnA2 = sw.counters('a2').tx_bytes;
      await consoleLine(dst, /VHOSTKIT-EXIT \d+/, 150_000);
      const ra = parseGuestResults(a.log());
      const rb = b.results();
      console.log(`      stream ${ra.stream_bytes} bytes in ${STREAM_SECONDS} s; pings answered ${ra.ping_rx} of ${PINGS}; ${streamOnA2} bytes of it to the guest through a2`);
      expect(ra.packed, 'packed ring bit').to.equal(packed ? '1' : '0');
      expect(dst.log(), 'the script finished on the destination').to.match(/VHOSTKIT-EXIT 0/);
      expect(ra.stream_md5, 'the TCP stream through the move').to.equal(rb.stream_md5);
      expect(Number(ra.stream_bytes)).to.be.greaterThan(MiB);
      expect(streamOnA2, 'part of the stream reached the guest through a2').to.be.greaterThan(0);
      expect(ra.bulk_md5, 'the 8 MiB bulk after the move').to.equal(rb.bulk_md5);
      expect(PINGS - Number(ra.ping_rx), 'pings lost').to.be.at.most(5);
      expect(sw.counters('a2').tx_bytes, 'frames to A went through a2 after the move').to.be.greaterThan(8 * MiB);
      expect(sw.counters('a2').queue_errors).to.equal(0);
      const text = (r: LogRecord) => JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
      const broken = logs.filter((r) => r.level === 'error' || /AVAIL_IDX_JUMP/.test(text(r)));
      expect(broken.map(text), 'errors logged by vhostkit').to.deep.equal([]);
    });
  }
});
