// TCP through the switch's host ports to real Linux peers (issue 21 item 4): a QEMU guest on
// the switch moves 8 MiB both ways, with an md5 check, to a listener behind a Linux vxlan
// device (VNI 42, in a namespace across a veth underlay of MTU 1600; inner IPv4 and IPv6)
// and to a listener behind a TAP port (the TAP moved into a namespace). Guest offloads on
// (QEMU's defaults: CSUM, GUEST_CSUM, TSO, mergeable RX buffers) and off (csum=off,
// guest_csum=off,..., mrg_rxbuf=off), split and packed rings: one boot per combination, six
// transfers per boot. And, with no guest, 8 MiB each way between the
// TAP's namespace and the vxlan peer (host port to host port through the switch).
//
// The vxlan peer's kernel leaves inner TCP checksums partial (it knows the veth never
// corrupts), and a UDP socket hands us the bytes without that fact: the switch completes
// them on receive (host_io.cc RecvUdp, offload.cc CompletePartialL4). Without that the
// guest drops the peer's SYN-ACK and no connection is ever made. A veth also carries the
// peer's GSO packets whole (up to 64 KiB): partial TCP frames over 1500 bytes of IP get a TSO
// header instead, so a guest without GUEST_TSO and mergeable buffers gets them segmented
// (before, peer -> guest failed for it: the oversized frames were dropped). The TAP (offloads on) gives
// frames with partial checksums and TSO frames: towards the VXLAN port the switch finishes
// them (engine.ts hostFrameOut, host_io.cc FinishFrame); before, the partial SYN went into
// the tunnel as it was and the vxlan peer's kernel dropped it (connect timed out).
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Switch } from '../../src/switch/switch.js';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript } from '../lib/guest.js';
import { Netns, ip, netnsUnavailable } from '../lib/netns.js';
import { setLogSink } from '../../src/log.js';

const TAG = process.pid.toString(36).slice(-4);
const VXLAN_PEER = '10.50.0.1';
const GUEST_IP = '10.50.0.2';
const TAP_PEER = '10.50.0.3';
// inner IPv6 through the tunnel too
const VXLAN_PEER6 = 'fd50::1';
const GUEST_IP6 = 'fd50::2';
const MIB8 = 8 << 20;

/**
 * An HTTP listener in a namespace: GET /f gives 8 MiB of random bytes (their md5 is the
 * first line the process prints), POST /up answers "md5:length" of what it received.
 */
const PEER_CODE = `
import { createServer } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
const data = randomBytes(${MIB8});
const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/f') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length });
    res.end(data);
    return;
  }
  if (req.method === 'POST' && req.url === '/up') {
    const h = createHash('md5');
    let n = 0;
    req.on('data', (c) => { h.update(c); n += c.length; });
    req.on('end', () => {
      const r = h.digest('hex') + ':' + n;
      console.log('up ' + r);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': r.length });
      res.end(r);
    });
    return;
  }
  res.writeHead(404).end();
});
server.listen(8080, '::', () => console.log('ready ' + createHash('md5').update(data).digest('hex')));
`;

interface Peer {
  child: ChildProcess;
  md5: string;
  ups: string[];
}

function startPeer(ns: Netns): Promise<Peer> {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '--input-type=module', '-e', PEER_CODE], { stdio: ['ignore', 'pipe', 'pipe'] });
  const peer: Peer = { child, md5: '', ups: [] };
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`peer in ${ns.name} never got ready: ${err}`)), 15000);
    child.on('exit', (code) => reject(new Error(`peer in ${ns.name} exited (${code}): ${err}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('ready ')) {
        peer.md5 = line.slice(6);
        clearTimeout(timer);
        resolve(peer);
      } else if (line.startsWith('up ')) {
        peer.ups.push(line.slice(3));
      }
    });
  });
}

/** Both directions to each peer; a transfer that does not finish in 40 s is reported failed. */
const guestScript = `
ip addr add ${GUEST_IP}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
ip -6 addr add ${GUEST_IP6}/64 dev eth0 nodad 2>/dev/null || ip -6 addr add ${GUEST_IP6}/64 dev eth0 || vk_fail "eth0 IPv6 setup"
f=/sys/class/net/eth0/device/features
vk_result packed=$(vk_feature $f 34) csum=$(vk_feature $f 0) guest_csum=$(vk_feature $f 1) guest_tso4=$(vk_feature $f 7) host_tso4=$(vk_feature $f 11) mrg=$(vk_feature $f 15)
# busybox wget --post-file sends strlen() of the file: text, 8 MiB of base64 of random bytes.
head -c 6291456 /dev/urandom | base64 | tr -d '\\n' > /tmp/up || vk_fail "no file"
[ "$(wc -c < /tmp/up)" = ${MIB8} ] || vk_fail "upload file is $(wc -c < /tmp/up) bytes"
vk_result up_md5=$(md5sum < /tmp/up | cut -d' ' -f1)
ms() { awk "BEGIN { print int(($2 - $1) * 1000) }"; }
for p in vxlan:${VXLAN_PEER} tap:${TAP_PEER} vxlan6:[${VXLAN_PEER6}]; do
  n=\${p%%:*}; a=\${p#*:}; h=\${a#[}; h=\${h%]}
  i=0; until ping -c 1 -W 1 $h >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 15 ] || break; done
  vk_result \${n}_ping=$(ping -c 2 -W 2 $h | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
  t0=$(cut -d' ' -f1 /proc/uptime)
  if timeout 40 wget -q -O /tmp/down http://$a:8080/f; then
    t1=$(cut -d' ' -f1 /proc/uptime)
    vk_result \${n}_down=$(md5sum < /tmp/down | cut -d' ' -f1):$(wc -c < /tmp/down) \${n}_down_ms=$(ms $t0 $t1)
  else
    vk_result \${n}_down=failed
  fi
  rm -f /tmp/down
  t0=$(cut -d' ' -f1 /proc/uptime)
  if timeout 40 wget -q -O /tmp/resp --post-file=/tmp/up http://$a:8080/up; then
    t1=$(cut -d' ' -f1 /proc/uptime)
    vk_result \${n}_up=$(cat /tmp/resp) \${n}_up_ms=$(ms $t0 $t1)
  else
    vk_result \${n}_up=failed
  fi
  rm -f /tmp/resp
done
`;

const OFFLOADS_OFF = {
  csum: 'off',
  guest_csum: 'off',
  gso: 'off',
  host_tso4: 'off',
  host_tso6: 'off',
  host_ecn: 'off',
  host_ufo: 'off',
  guest_tso4: 'off',
  guest_tso6: 'off',
  guest_ecn: 'off',
  guest_ufo: 'off',
  // 1518-byte RX buffers: a frame over the MTU cannot reach this guest, so the GSO-sized
  // frames a same-host VTEP sends must be segmented on the way (RecvUdp marks them TSO).
  mrg_rxbuf: 'off',
};

describe('e2e: TCP from a QEMU guest through VXLAN and TAP ports to Linux peers', function () {
  this.timeout(240_000);
  let tmp: TempDir;
  let sw: Switch;
  let oldSink: ReturnType<typeof setLogSink>;
  const nss: Netns[] = [];
  const peers: Peer[] = [];
  let vxPeer: Peer;
  let tapPeer: Peer;

  before(() => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    findGuestKernel();
    findBusybox();
  });
  beforeEach(async () => {
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-e2e-vxtcp-');
    sw = await Switch.create({ dataplane: 'worker' });
    await sw.addVhostPort({ name: 'vm', socket: tmp.join('vm.sock') });
    // VXLAN: the Linux VTEP in namespace a, the switch's socket in namespace b, a veth between.
    const a = new Netns(`vxa${TAG}`);
    const b = new Netns(`vxb${TAG}`);
    const t = new Netns(`vxt${TAG}`);
    nss.push(a, b, t);
    a.ip('link', 'add', 'va', 'mtu', '1600', 'type', 'veth', 'peer', 'name', 'vb', 'mtu', '1600', 'netns', b.name);
    a.ip('addr', 'add', '10.99.2.1/24', 'dev', 'va');
    b.ip('addr', 'add', '10.99.2.2/24', 'dev', 'vb');
    a.ip('link', 'set', 'va', 'up');
    b.ip('link', 'set', 'vb', 'up');
    a.ip('link', 'add', 'vx0', 'type', 'vxlan', 'id', '42', 'local', '10.99.2.1', 'remote', '10.99.2.2', 'dstport', '4789', 'dev', 'va');
    a.ip('addr', 'add', `${VXLAN_PEER}/24`, 'dev', 'vx0');
    a.ip('addr', 'add', `${VXLAN_PEER6}/64`, 'dev', 'vx0', 'nodad');
    a.ip('link', 'set', 'vx0', 'up');
    await sw.addVxlanPort({ name: 'vx', remote: '10.99.2.1', vni: 42, socketFd: b.udpSocket('10.99.2.2', 4789) });
    // TAP: its interface moved into namespace t (the fd keeps working), offloads on (default).
    const tap = await sw.addTapPort({ name: 'tap', ifname: `vxt${TAG}0` });
    ip('link', 'set', 'dev', tap.socket, 'netns', t.name);
    t.ip('addr', 'add', `${TAP_PEER}/24`, 'dev', tap.socket);
    t.ip('link', 'set', 'dev', tap.socket, 'up');
    [vxPeer, tapPeer] = await Promise.all([startPeer(a), startPeer(t)]);
    peers.push(vxPeer, tapPeer);
  });
  afterEach(async () => {
    for (const p of peers.splice(0)) p.child.kill();
    await sw.close();
    for (const n of nss.splice(0)) n.delete();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  it('8 MiB both ways, md5 intact, between the TAP peer and the vxlan peer (host port to host port, no guest)', async () => {
    // From the TAP's namespace (its kernel sends TSO frames with partial checksums: the TAP
    // has offloads on) to the vxlan peer and back, through the switch alone.
    const code = `
      const { createHash, randomBytes } = await import('node:crypto');
      const t0 = Date.now();
      const down = Buffer.from(await (await fetch('http://${VXLAN_PEER}:8080/f', { signal: AbortSignal.timeout(30000) })).arrayBuffer());
      const t1 = Date.now();
      const up = randomBytes(${MIB8});
      const r = await (await fetch('http://${VXLAN_PEER}:8080/up', { method: 'POST', body: up, signal: AbortSignal.timeout(30000) })).text();
      const t2 = Date.now();
      console.log(JSON.stringify({ down: createHash('md5').update(down).digest('hex') + ':' + down.length, downMs: t1 - t0, up: r, sent: createHash('md5').update(up).digest('hex') + ':' + up.length, upMs: t2 - t1 }));`;
    const t = nss[2];
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn('ip', ['netns', 'exec', t.name, process.execPath, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
      let o = '';
      let e = '';
      c.stdout!.on('data', (d: Buffer) => (o += d.toString()));
      c.stderr!.on('data', (d: Buffer) => (e += d.toString()));
      c.on('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(`the TAP-side client failed (${code}): ${e.slice(-2000)}`))));
    });
    const r = JSON.parse(out) as { down: string; downMs: number; up: string; sent: string; upMs: number };
    const vx = sw.counters('vx');
    const tp = sw.counters('tap');
    console.log(
      `      tap peer <-> vxlan peer: vxlan -> tap ${(MIB8 / r.downMs / 1e3).toFixed(1)} MB/s, tap -> vxlan ${(MIB8 / r.upMs / 1e3).toFixed(1)} MB/s; vxlan port tx ${vx.tx_packets} (dropped too big ${vx.drop_too_big}), tap port rx ${tp.rx_packets}`,
    );
    expect(r.down).to.equal(`${vxPeer.md5}:${MIB8}`);
    expect(r.up).to.equal(r.sent);
  });

  for (const packed of [false, true]) {
    for (const offloads of [true, false]) {
      it(`8 MiB both ways, md5 intact, to a vxlan peer (inner IPv4 and IPv6) and a TAP peer (${packed ? 'packed' : 'split'} ring, guest offloads ${offloads ? 'on' : 'off'})`, async () => {
        const dev = [{ type: 'vhost-user-net' as const, socket: tmp.join('vm.sock'), mac: '52:54:00:00:05:02', packed, reconnect: true, props: offloads ? {} : OFFLOADS_OFF }];
        const r = (await runScript(guestScript, dev, 220_000)).results;
        const mbs = (ms: string) => (MIB8 / (Number(ms) / 1000) / 1e6).toFixed(1);
        const label = `${packed ? 'packed' : 'split'}, offloads ${offloads ? 'on' : 'off'}`;
        for (const n of ['vxlan', 'vxlan6', 'tap']) {
          console.log(
            `      ${n} (${label}): peer -> guest ${r[`${n}_down`] === 'failed' ? 'FAILED' : `${mbs(r[`${n}_down_ms`])} MB/s`}, guest -> peer ${r[`${n}_up`] === 'failed' ? 'FAILED' : `${mbs(r[`${n}_up_ms`])} MB/s`}`,
          );
        }
        const vx = sw.counters('vx');
        console.log(`      vxlan port: ${vx.rx_packets} frames in, ${vx.rx_csum_completed} partial checksums completed, ${vx.drop_too_big} too big`);
        expect(r.packed, 'packed ring bit').to.equal(packed ? '1' : '0');
        const on = offloads ? '1' : '0';
        expect([r.csum, r.guest_csum, r.guest_tso4, r.host_tso4, r.mrg], 'CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4, MRG_RXBUF').to.deep.equal([on, on, on, on, on]);
        const got = {
          vxlan_ping: r.vxlan_ping,
          vxlan_down: r.vxlan_down,
          vxlan_up: r.vxlan_up,
          vxlan6_ping: r.vxlan6_ping,
          vxlan6_down: r.vxlan6_down,
          vxlan6_up: r.vxlan6_up,
          tap_ping: r.tap_ping,
          tap_down: r.tap_down,
          tap_up: r.tap_up,
        };
        expect(got).to.deep.equal({
          vxlan_ping: '2',
          vxlan_down: `${vxPeer.md5}:${MIB8}`,
          vxlan_up: `${r.up_md5}:${MIB8}`,
          vxlan6_ping: '2',
          vxlan6_down: `${vxPeer.md5}:${MIB8}`,
          vxlan6_up: `${r.up_md5}:${MIB8}`,
          tap_ping: '2',
          tap_down: `${tapPeer.md5}:${MIB8}`,
          tap_up: `${r.up_md5}:${MIB8}`,
        });
        expect(vx.rx_csum_completed, 'partial checksums from the Linux VTEP completed').to.be.greaterThan(0);
        expect(vxPeer.ups).to.deep.equal([`${r.up_md5}:${MIB8}`, `${r.up_md5}:${MIB8}`]);
        expect(tapPeer.ups).to.deep.equal([`${r.up_md5}:${MIB8}`]);
      });
    }
  }
});
