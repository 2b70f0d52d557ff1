// examples/l3-router.ts with QEMU guests: h1 (10.0.1.1/24, access VLAN 10) and h2
// (10.0.2.1/24, access VLAN 20; also 10.0.2.2, which the router learns only when h1 pings it,
// and 10.0.3.1 on lo, reached through a static route via 10.0.2.1) talk through the router,
// whose addresses are their default gateways. h1 pings, traces (busybox traceroute: UDP
// probes of TTL 1, 2, ..., which the guest kernel matches to the ICMP errors, checksums
// checked) and fetches an 8 MiB file from h2's httpd; the test reads the forwarding flows'
// and the handler's counters as the transfer starts and ends. Busybox initramfs guests
// (test/lib/guest.ts).
import { expect } from 'chai';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Switch } from '../../src/switch/switch.js';
import { installRouter, type RouterOptions } from '../../examples/l3-router.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { setLogSink } from '../../src/log.js';

const EXAMPLE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'l3-router.js');
const MAC = (i: number) => `52:54:00:00:04:0${i}`;
const RMAC = '02:00:00:00:0a:fe';
/** Lines h1 prints around the transfer: the test reads the counters there. */
const FETCH_START = 'L3-FETCH-START';
const FETCH_END = 'L3-FETCH-END';

/** h2: serves an 8 MiB file of its own (md5 reported) until h1 says it is done (GET /done). */
const h2Script = `
ip addr add 10.0.2.1/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.254 || vk_fail "eth0 setup"
ip addr add 10.0.2.2/24 dev eth0 && ip addr add 10.0.3.1/32 dev lo || vk_fail "more addresses"
mkdir -p /www && echo done > /www/done && dd if=/dev/urandom of=/www/f bs=1048576 count=8 2>/dev/null || vk_fail "no file"
vk_result md5=$(md5sum < /www/f | cut -d' ' -f1)
httpd -f -vv -p 80 -h /www 2>/tmp/log &
i=0; until grep -q 'url:/done' /tmp/log; do i=$((i+1)); [ $i -lt 280 ] || vk_fail "h1 never finished"; sleep 1; done
sleep 1
`;

/** A busybox traceroute's hop lines: each hop's address ("-" for none), comma-separated. */
const hops = (dst: string, max: number) => `$(traceroute -n -m ${max} -q 1 -w 3 ${dst} 2>/dev/null | awk '$1 ~ /^[0-9]+$/ {printf "%s,", $2}' | tr '*' -)`;
const received = (dst: string) => `$(ping -c 3 ${dst} 2>&1 | grep -o '[0-9]* packets received' | cut -d' ' -f1)`;

/** h1: waits until h2 answers through the router, then pings, traces and fetches. */
const h1Script = `
ip addr add 10.0.1.1/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.1.254 || vk_fail "eth0 setup"
i=0; until ping -c 1 -W 2 10.0.2.1 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 120 ] || vk_fail "h2 not reachable"; done
vk_result waited=$i
vk_result gw=${received('10.0.1.254')} gw2=${received('10.0.2.254')} h2=${received('10.0.2.1')} static=${received('10.0.3.1')}
vk_result second=${received('10.0.2.2')}
vk_result ttl1=${hops('10.0.2.1', 1)}
vk_result trace=${hops('10.0.2.1', 4)}
vk_result trace_static=${hops('10.0.3.1', 4)}
vk_result nohost=$(traceroute -n -f 2 -m 2 -q 5 -w 2 10.0.2.99 2>/dev/null | awk '$1 == 2 {print $0}' | tr '*' -)
vk_result noroute=$(traceroute -n -f 2 -m 2 -q 1 -w 3 192.168.9.9 2>/dev/null | awk '$1 == 2 {print $2 "," $NF}')
echo "${FETCH_START}"; sleep 2
t0=$(cut -d' ' -f1 /proc/uptime)
wget -q -O /tmp/f http://10.0.2.1/f || vk_fail "fetch"
t1=$(cut -d' ' -f1 /proc/uptime)
echo "${FETCH_END}"
vk_result md5=$(md5sum < /tmp/f | cut -d' ' -f1) bytes=$(wc -c < /tmp/f) t0=$t0 t1=$t1
wget -q -O /dev/null http://10.0.2.1/done || vk_fail "done"
`;

describe('e2e: examples/l3-router.ts with QEMU guests', function () {
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
    tmp = makeTempDir('vk-e2e-l3-');
    sw = await Switch.create({ dataplane: 'worker' });
    await sw.addVhostPort({ name: 'h1', socket: tmp.join('h1.sock'), vlan: { mode: 'access', vid: 10 } });
    await sw.addVhostPort({ name: 'h2', socket: tmp.join('h2.sock'), vlan: { mode: 'access', vid: 20 } });
  });
  afterEach(async () => {
    await sw.close();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  it('routes pings, traceroutes and TCP between two VLANs; answers ARP, echo, TTL expiry and no-route', async () => {
    const o: RouterOptions = {
      mac: RMAC,
      interfaces: [
        { vlan: 10, ip: '10.0.1.254', prefixLen: 24, ports: ['h1'] },
        { vlan: 20, ip: '10.0.2.254', prefixLen: 24, ports: ['h2'] },
      ],
      routes: [{ prefix: '10.0.3.0/24', via: '10.0.2.1' }],
    };
    await installRouter(sw, o, EXAMPLE);
    const dev = (n: string, i: number) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`${n}.sock`), mac: MAC(i), reconnect: true }];
    // The forwarding flows' and the handler's counters as h1 starts and ends the transfer.
    const counts = async () => {
      const flows = await sw.dumpFlows();
      const [h] = await sw.handlers();
      const fwd = flows.filter((f) => f.actions.startsWith('dec_ttl'));
      return { packets: fwd.reduce((s, f) => s + f.packets, 0), bytes: fwd.reduce((s, f) => s + f.bytes, 0), handler: h.frames };
    };
    const marks = new Map<string, ReturnType<typeof counts>>();
    const onLine = (line: string) => {
      for (const m of [FETCH_START, FETCH_END]) if (line.includes(m) && !marks.has(m)) marks.set(m, counts());
    };
    const [h1, h2] = await Promise.all([runScript(h1Script, dev('h1', 1), 280_000, { onLine }), runScript(h2Script, dev('h2', 2), 280_000)]);
    const r = h1.results;
    expect(r.gw, 'pings to the gateway answered').to.equal('3');
    expect(r.gw2, "pings to the router's other address answered").to.equal('3');
    expect(r.h2, 'pings to h2 answered').to.equal('3');
    expect(r.static, 'pings to 10.0.3.1 (static route via h2) answered').to.equal('3');
    expect(r.second, 'pings to 10.0.2.2 (h2 too, not known to the router before: queued, ARP, injected) answered').to.equal('3');
    expect(r.ttl1, 'TTL 1: time exceeded from the ingress address').to.equal('10.0.1.254,');
    expect(r.trace).to.equal('10.0.1.254,10.0.2.1,');
    expect(r.trace_static).to.equal('10.0.1.254,10.0.3.1,');
    // 3 ARP requests unanswered (one per probe; the handler has no timer): the next probes hear
    // host unreachable (!H). The first ones, queued, heard it when busybox no longer waited.
    expect(r.nohost.trim(), 'an address on a connected subnet that nobody has').to.match(/^2 .*10\.0\.1\.254 .*!H$/);
    expect(r.noroute, 'no route: net unreachable (!N) from the gateway').to.equal('10.0.1.254,!N');
    expect(r.bytes).to.equal(String(8 << 20));
    expect(r.md5, 'the file arrived intact').to.equal(h2.results.md5);

    const flows = await sw.dumpFlows();
    const fwd = (dst: string) => flows.find((f) => f.match.includes(`nw_dst=${dst}`) && f.actions.startsWith('dec_ttl'));
    expect(fwd('10.0.2.1')?.actions).to.equal(`dec_ttl,mod_dl_src:${RMAC},mod_dl_dst:${MAC(2)},mod_vlan_vid:20,output:h2`);
    expect(fwd('10.0.1.1')?.actions).to.equal(`dec_ttl,mod_dl_src:${RMAC},mod_dl_dst:${MAC(1)},mod_vlan_vid:10,output:h1`);
    expect(fwd('10.0.3.0/24')?.actions, 'the static route, through h2').to.equal(`dec_ttl,mod_dl_src:${RMAC},mod_dl_dst:${MAC(2)},mod_vlan_vid:20,output:h2`);
    const [h] = await sw.handlers();
    expect(h.errors, h.lastError).to.equal(0);

    const start = await marks.get(FETCH_START);
    const end = await marks.get(FETCH_END);
    if (!start || !end) throw new Error('h1 printed no transfer marks');
    const during = { packets: end.packets - start.packets, bytes: end.bytes - start.bytes, handler: end.handler - start.handler };
    const secs = Number(r.t1) - Number(r.t0);
    console.log(
      `      l3-router: 8 MiB in ${secs.toFixed(2)} s of guest time; during it the forwarding flows ${during.packets} frames (${during.bytes} bytes), the handler ${during.handler}; ` +
        `in all, the handler ${h.frames} frames in ${h.runs} runs (sent ${h.sent}); h1 waited ${r.waited} pings for h2 (accel ${h1.accel})`,
    );
    for (const f of flows) console.log(`        ${f.line}`);
    // The transfer went through the forwarding flows (the file at least, in frames of at
    // most 64 KiB); the handler saw ARP, pings to its addresses, expired TTLs and the
    // frames that waited for a next hop, and next to nothing of the transfer.
    expect(during.bytes, 'bytes the forwarding flows switched during the transfer').to.be.at.least(8 << 20);
    expect(during.packets).to.be.at.least(128);
    expect(during.handler * 20, 'frames the handler saw during the transfer, x20').to.be.lessThan(during.packets);
  });
});
