// The EVPN fabric (issue 26) with QEMU guests: three hosts on a bridged veth underlay,
//   host 1 and host 2: a vhostkit Switch (a guest's vhost-user port, a VXLAN port for VNI 100
//     whose socket is in the host's namespace), GoBGP and EvpnControl in that namespace;
//   host 3: FRR (zebra + bgpd, advertise-all-vni over br100 + vx100) with a Linux endpoint;
// iBGP full mesh (AS 65000). Guest 1 pings guest 2 and the endpoint, moves 8 MiB each way
// to the endpoint and 8 MiB from guest 2 with md5 checks; FRR shows both vhostkit hosts'
// type-2 and type-3 routes, vhostkit shows FRR's; the guests' unicast to each other never
// reaches host 3 (a promiscuous tcpdump on its vx100 sees none of it, and sees the
// endpoint's traffic). Then a guest migrates from host 1 to host 2 (QEMU live migration,
// SEND_RARP on the destination) while it reads a TCP stream from the endpoint and pings it:
// host 2 learns the MAC from the RARP and advertises it with MAC mobility sequence 1 (RFC
// 7432 §15), host 1 withdraws its route and installs host 2's, FRR's table shows the MAC
// behind host 2 with MM:1, and the stream arrives whole (md5). Guests that powered off
// age out of the switches (20 s) and their routes are withdrawn; FRR's bgpd stopped takes
// its routes out of both vhostkit hosts, and once it is back a guest reaches the endpoint.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Switch } from '../../src/switch/switch.js';
import { GoBgp } from '../../src/evpn/gobgp.js';
import { EvpnControl } from '../../src/evpn/control.js';
import { FrrVtep } from '../lib/frr.js';
import { Netns, netnsUnavailable } from '../lib/netns.js';
import { Underlay } from '../lib/underlay.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, parseGuestResults, runScript } from '../lib/guest.js';
import { consoleLine, migrate, startMigratingGuest, type MigratingGuest } from './migrate.js';
import { setLogSink } from '../../src/log.js';
import { sleep, until } from '../lib/wait.js';

const TAG = `ef${process.pid.toString(36).slice(-4)}`;
const NET = `10.${200 + (process.pid % 50)}.1`;
const H = [1, 2, 3].map((i) => `${NET}.${i}`);
const VNI = 100;
const ASN = 65000;
const MIB8 = 8 << 20;
const EP = '10.26.0.3';
const G1 = '10.26.0.11';
const G2 = '10.26.0.12';
const G1_MAC = '52:54:00:26:00:11';
const G2_MAC = '52:54:00:26:00:12';
const GM = '10.26.0.21';
const GM_MAC = '52:54:00:26:00:21';
const STREAM_SECONDS = 25;
/** The switches' aging time: short, so that a guest that stopped is withdrawn within the test. */
const AGING_S = 20;

/**
 * The endpoint's HTTP server: GET /f 8 MiB (md5 printed first), POST /up answers md5:length,
 * GET /stream: random data for ${STREAM_SECONDS} s (prints "stream MD5:BYTES" when done).
 */
function endpointServer(ns: Netns): Promise<{ md5: string; child: ChildProcess; streams: string[] }> {
  const code = `import { createServer } from 'node:http'; import { createHash, randomBytes } from 'node:crypto';
    const data = randomBytes(${MIB8});
    const chunk = randomBytes(16384);
    createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/stream') {
        const h = createHash('md5'); let n = 0; const end = Date.now() + ${STREAM_SECONDS * 1000};
        res.writeHead(200);
        const more = () => {
          while (Date.now() < end) { h.update(chunk); n += chunk.length; if (!res.write(chunk)) return res.once('drain', more); }
          res.end(() => console.log('stream ' + h.digest('hex') + ':' + n));
        };
        more();
        return;
      }
      if (req.method === 'GET') { res.writeHead(200, { 'content-length': data.length }); res.end(data); return; }
      const h = createHash('md5'); let n = 0;
      req.on('data', (c) => { h.update(c); n += c.length; });
      req.on('end', () => { const r = h.digest('hex') + ':' + n; res.writeHead(200, { 'content-length': r.length }); res.end(r); });
    }).listen(8080, () => console.log('ready ' + createHash('md5').update(data).digest('hex')));`;
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  const streams: string[] = [];
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const m = /^ready ([0-9a-f]{32})$/.exec(l);
      if (m) resolve({ md5: m[1], child, streams });
      const st = /^stream (\S+)$/.exec(l);
      if (st) streams.push(st[1]);
    });
    child.on('exit', (c) => reject(new Error(`endpoint server exited ${c}`)));
  });
}

interface VkHost {
  sw: Switch;
  bgp: GoBgp;
  evpn: EvpnControl;
}

const G2_SCRIPT = `
ip addr add ${G2}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
mkdir -p /www && head -c 6291456 /dev/urandom | base64 | tr -d '\\n' > /www/f || vk_fail "no file"
vk_result g2_md5=$(md5sum < /www/f | cut -d' ' -f1):$(wc -c < /www/f)
httpd -p 8081 -h /www || vk_fail "httpd"
i=0; until ping -c 1 -W 1 ${EP} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 40 ] || vk_fail "endpoint unreachable"; done
# until guest 1 says it is done (a connection to port 9000)
timeout 200 nc -l -p 9000 > /dev/null
vk_result g2_done=1
`;

const G1_SCRIPT = `
ip addr add ${G1}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
for a in ${EP} ${G2}; do
  i=0; until ping -c 1 -W 1 $a >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || break; done
done
vk_result ping_ep=$(ping -c 2 -W 2 ${EP} | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
vk_result ping_g2=$(ping -c 2 -W 2 ${G2} | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
i=0; until wget -q -O /tmp/g http://${G2}:8081/f; do i=$((i+1)); [ $i -lt 10 ] || break; sleep 1; done
vk_result from_g2=$(md5sum < /tmp/g | cut -d' ' -f1):$(wc -c < /tmp/g)
rm -f /tmp/g
timeout 90 wget -q -O /tmp/d http://${EP}:8080/f && vk_result from_ep=$(md5sum < /tmp/d | cut -d' ' -f1):$(wc -c < /tmp/d) || vk_result from_ep=failed
head -c 6291456 /dev/urandom | base64 | tr -d '\\n' > /tmp/up
vk_result up_md5=$(md5sum < /tmp/up | cut -d' ' -f1):$(wc -c < /tmp/up)
timeout 90 wget -q -O /tmp/r --post-file=/tmp/up http://${EP}:8080/up && vk_result to_ep=$(cat /tmp/r) || vk_result to_ep=failed
echo done | nc ${G2} 9000
`;

/** The guest that migrates: pings the endpoint through the move and reads a timed TCP stream from it. */
const GM_SCRIPT = `
ip addr add ${GM}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
i=0; until ping -c 1 -W 1 ${EP} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "endpoint unreachable"; done
ping -i 0.2 -c 150 ${EP} > /tmp/ping 2>&1 &
vk_result ready=1
md5=$(wget -q -O - http://${EP}:8080/stream | md5sum | cut -d' ' -f1)
vk_result stream=$md5
wait
vk_result ping_rx=$(sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p' /tmp/ping)
`;

describe('e2e: an EVPN fabric of two vhostkit hosts with QEMU guests and FRR', function () {
  this.timeout(600_000);
  let tmp: TempDir;
  let ul: Underlay;
  let ep: Netns;
  let frr: FrrVtep;
  const hosts: VkHost[] = [];
  let oldSink: ReturnType<typeof setLogSink>;

  before(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    findGuestKernel();
    findBusybox();
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-evpn-fabric-');
    ul = new Underlay(TAG, NET);
    const ns = [1, 2, 3].map((i) => ul.addHost(i));
    frr = new FrrVtep({ ns: ns[2], asn: ASN, routerId: H[2], vtep: H[2], underlayDev: 'eth0', neighbors: [H[0], H[1]], vnis: [VNI] });
    ep = new Netns(`${TAG}e`);
    ns[2].ip('link', 'add', 'ep0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ep.name);
    ns[2].ip('link', 'set', 'ep0', 'master', `br${VNI}`, 'up');
    ep.ip('addr', 'add', `${EP}/24`, 'dev', 'eth0');
    ep.ip('link', 'set', 'eth0', 'up');
    await frr.start();
    for (const i of [0, 1]) {
      const sw = await Switch.create({ dataplane: 'worker', agingSeconds: AGING_S });
      await sw.addVhostPort({ name: 'vm', socket: tmp.join(`vm${i + 1}.sock`) });
      await sw.addVxlanPort({ name: 'vx100', remote: H[i], vni: VNI, socketFd: ns[i].udpSocket(H[i], 4789) });
      const bgp = await GoBgp.start({
        dir: tmp.join(`gobgp${i + 1}`),
        netns: ns[i].name,
        asn: ASN,
        routerId: H[i],
        listenAddress: H[i],
        neighbors: H.filter((_, j) => j !== i).map((address) => ({ address, asn: ASN })),
      });
      const evpn = new EvpnControl(bgp, sw, { asn: ASN, routerId: H[i], vnis: [{ vni: VNI, port: 'vx100' }], agingSeconds: AGING_S });
      await evpn.start();
      hosts.push({ sw, bgp, evpn });
    }
    await until('every session established', 60_000, async () => {
      for (const h of hosts) if ((await h.bgp.neighbors()).some((n) => n.state !== 'established')) return undefined;
      return true;
    });
  });

  after(async () => {
    for (const h of hosts.splice(0)) {
      await h.evpn.close();
      await h.bgp.close();
      await h.sw.close();
    }
    await frr?.stop();
    ep?.delete();
    ul?.delete();
    tmp?.cleanup();
    if (oldSink) setLogSink(oldSink);
  });

  it('guests ping and move 8 MiB with md5 intact; routes seen on both sides; unicast between guests stays off host 3', async () => {
    const server = await endpointServer(ep);
    // A promiscuous listener on host 3's vxlan device: guest-to-guest TCP (port 8081) must
    // never come; the endpoint's (8080) does.
    const dump = spawn('ip', ['netns', 'exec', ul.hosts[2].name, 'tcpdump', '-nli', `vx${VNI}`, 'tcp port 8081 or tcp port 8080'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let seen8081 = 0;
    let seen8080 = 0;
    createInterface({ input: dump.stdout! }).on('line', (l) => {
      if (/\.8081[ :>]/.test(l)) seen8081++;
      else if (/\.8080[ :>]/.test(l)) seen8080++;
    });
    try {
      const dev = (i: number, mac: string) => [{ type: 'vhost-user-net' as const, socket: tmp.join(`vm${i}.sock`), mac, reconnect: true }];
      const [g1, g2] = await Promise.all([runScript(G1_SCRIPT, dev(1, G1_MAC), 400_000, { name: `${TAG}-g1` }), runScript(G2_SCRIPT, dev(2, G2_MAC), 400_000, { name: `${TAG}-g2` })]);
      const r = g1.results;
      console.log(`      guest 1: ${JSON.stringify(r)}; guest 2: ${JSON.stringify(g2.results)}`);
      expect({ ping_ep: r.ping_ep, ping_g2: r.ping_g2 }).to.deep.equal({ ping_ep: '2', ping_g2: '2' });
      expect(r.from_g2).to.equal(g2.results.g2_md5);
      expect(r.from_ep).to.equal(`${server.md5}:${MIB8}`);
      expect(r.to_ep).to.equal(r.up_md5);
      expect(g2.results.g2_done).to.equal('1');
    } finally {
      server.child.kill();
      dump.kill();
    }
    console.log(`      tcpdump on host 3's vx${VNI}: ${seen8080} frames of the endpoint's TCP, ${seen8081} of the guests' TCP to each other`);
    expect(seen8080, "host 3's listener works (it sees the endpoint's traffic)").to.be.greaterThan(0);
    expect(seen8081, "guest 1 <-> guest 2 frames seen on host 3's vxlan device").to.equal(0);
    const table = frr.vtysh('show bgp l2vpn evpn');
    console.log(`      FRR's show bgp l2vpn evpn:\n${table.replace(/^/gm, '        ')}`);
    for (const [i, mac] of [
      [0, G1_MAC],
      [1, G2_MAC],
    ] as const) {
      expect(table).to.include(`Route Distinguisher: ${H[i]}:${VNI}`);
      expect(table).to.include(`[3]:[0]:[32]:[${H[i]}]`);
      expect(table).to.include(`[2]:[0]:[48]:[${mac}]`);
    }
    for (const h of hosts) {
      const st = await h.evpn.status();
      expect(st.vnis[0].floodVteps).to.have.length(2);
      expect(st.routesIn.some((x) => x.neighbor === H[2] && x.route.startsWith(`[3]:[0]:[32]:[${H[2]}]`))).to.equal(true);
    }
    // The guests have powered off: their MACs age out of the switches (20 s) and are withdrawn.
    await until("the guests' MACs withdrawn at FRR", 90_000, () => {
      const t = frr.vtysh('show bgp l2vpn evpn');
      return t.includes(G1_MAC) || t.includes(G2_MAC) ? undefined : true;
    });
    expect(frr.kernelFdb(VNI)).to.not.include(G1_MAC);
    expect(frr.vtysh('show bgp l2vpn evpn')).to.include(`[3]:[0]:[32]:[${H[0]}]`);
  });
  it('a guest migrates from host 1 to host 2: its TCP stream goes on, FRR sees the MAC move with a higher sequence number', async () => {
    for (const h of hosts) await h.sw.addVhostPort({ name: 'vmm', socket: tmp.join(`vmm${hosts.indexOf(h) + 1}.sock`) });
    const server = await endpointServer(ep);
    let g: MigratingGuest | null = null;
    try {
      const dev = (sock: string) => [{ type: 'vhost-user-net' as const, socket: tmp.join(sock), mac: GM_MAC, reconnect: true }];
      g = await startMigratingGuest(tmp, GM_SCRIPT, dev('vmm1.sock'), { name: `${TAG}-gm` });
      const { dst, dstQmp } = await g.startDestination(dev('vmm2.sock'));
      await consoleLine(g.src, /VHOSTKIT-RESULT ready=1/, 150_000);
      // The MAC is advertised from host 1 first.
      await until('the MAC at FRR from host 1', 30_000, () => (frr.vtysh(`show evpn mac vni ${VNI} mac ${GM_MAC}`).includes(`Remote VTEP: ${H[0]}`) ? true : undefined));
      await sleep(3000);
      const m = await migrate(g, dstQmp, tmp, 120_000);
      console.log(`      migration: downtime ${m.downtimeMs} ms, total ${m.totalMs} ms`);
      const moved = await until('the MAC at FRR from host 2', 30_000, () => {
        const t = frr.vtysh(`show evpn mac vni ${VNI} mac ${GM_MAC}`);
        return t.includes(`Remote VTEP: ${H[1]}`) ? t : undefined;
      });
      console.log(`      FRR's show evpn mac vni ${VNI} mac ${GM_MAC} after the move:\n${moved.replace(/^/gm, '        ')}`);
      const seq = Number(/Remote Seq: (\d+)/.exec(moved)?.[1] ?? -1);
      expect(seq, 'the MAC mobility sequence number at FRR').to.be.at.least(1);
      const table = frr.vtysh('show bgp l2vpn evpn route type macip');
      console.log(`      FRR's show bgp l2vpn evpn route type macip:\n${table.replace(/^/gm, '        ')}`);
      expect(table).to.include(`MM:${seq}`);
      await consoleLine(dst, /VHOSTKIT-EXIT \d+/, 200_000);
      const r = parseGuestResults(g.log());
      console.log(`      the guest: stream ${r.stream}, pings answered ${r.ping_rx} of 150; the endpoint sent ${server.streams.join(', ')}`);
      expect(dst.log(), 'the script finished on the destination').to.match(/VHOSTKIT-EXIT 0/);
      expect(server.streams).to.have.length(1);
      expect(r.stream, 'the TCP stream through the move').to.equal(server.streams[0].split(':')[0]);
      expect(Number(r.ping_rx)).to.be.greaterThan(0);
      // Host 1 has the MAC behind host 2 now, and advertises it no more.
      const st1 = await hosts[0].evpn.status();
      expect(st1.vnis[0].remoteMacs.find((x) => x.mac === GM_MAC)).to.deep.include({ vtep: H[1] });
      expect(st1.vnis[0].localMacs.map((x) => x.mac)).to.not.include(GM_MAC);
      expect((await hosts[1].evpn.status()).vnis[0].localMacs.find((x) => x.mac === GM_MAC)?.seq).to.equal(seq);
    } finally {
      server.child.kill();
      await g?.kill();
    }
  });
  it("a BGP session that drops removes FRR's routes from both hosts; a guest reaches the endpoint again when it returns", async () => {
    await frr.stopBgpd();
    await until("FRR's routes gone from both vhostkit hosts", 60_000, async () => {
      for (const h of hosts) {
        const st = await h.evpn.status();
        if (st.vnis[0].floodVteps.includes(H[2]) || st.routesIn.some((x) => x.neighbor === H[2])) return undefined;
      }
      return true;
    });
    for (const h of hosts) expect((await h.sw.remoteMacs()).filter((m) => m.vtep === H[2])).to.deep.equal([]);
    await frr.startBgpd();
    await until("FRR's type-3 back at both hosts", 90_000, async () => {
      for (const h of hosts) if (!(await h.evpn.status()).vnis[0].floodVteps.includes(H[2])) return undefined;
      return true;
    });
    const script = `
ip addr add ${G1}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
i=0; until ping -c 1 -W 1 ${EP} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || break; done
vk_result ping_ep=$(ping -c 3 -W 2 ${EP} | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
`;
    const r = await runScript(script, [{ type: 'vhost-user-net', socket: tmp.join('vm1.sock'), mac: G1_MAC, reconnect: true }], 200_000, { name: `${TAG}-g1b` });
    expect(r.results.ping_ep).to.equal('3');
  });
});
