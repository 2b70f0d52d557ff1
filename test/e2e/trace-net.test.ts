// `vhostkit trace` (the CLI, in its own process) between a QEMU guest's virtio-net
// (`-netdev vhost-user` on the proxy's socket, reconnect=1) and a port of a vhostkit switch
// whose other port is a TAP in a namespace of ours, where a Node HTTP server holds 4 MiB of
// random bytes. The guest pings the TAP side and fetches the file (md5 checked); then the
// switch port is removed and added again (the backend goes away and comes back on its
// socket), the proxy follows (closes QEMU's connection, QEMU reconnects through it to the
// new backend) and the guest fetches the file again. The trace file must hold both
// negotiations, GET_FEATURES .. SET_VRING_KICK, with the features in words and the fds
// described, and ring snapshots (--rings) whose indices move. Last, `trace replay` of the
// first session against the switch port, with no VM: vhostkit negotiates the same features
// and starts the rings QEMU had started.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Switch } from '../../src/switch/switch.js';
import { makeTempDir, vhostkitCli, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, startGuest, type Guest } from '../lib/guest.js';
import { ManagedProcess } from '../lib/process.js';
import { Netns, ip, netnsUnavailable } from '../lib/netns.js';
import { setLogSink } from '../../src/log.js';
import { Replay, readTrace, replaySteps } from '../../src/trace/replay.js';
import { until } from '../vhost-user/harness.js';
import type { MessageRecord, RingsRecord, SessionRecord } from '../../src/trace/decode.js';

const TAG = process.pid.toString(36).slice(-4);
const PEER_IP = '10.51.0.1';
const GUEST_IP = '10.51.0.2';
const FILE_BYTES = 4 << 20;

const PEER_CODE = `
import { createServer } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
const data = randomBytes(${FILE_BYTES});
createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length });
  res.end(data);
}).listen(8080, '0.0.0.0', () => console.log('ready ' + createHash('md5').update(data).digest('hex')));
`;

function startPeer(ns: Netns): Promise<{ child: ChildProcess; md5: string }> {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '--input-type=module', '-e', PEER_CODE], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`peer never got ready: ${err}`)), 15000);
    child.on('exit', (code) => reject(new Error(`peer exited (${code}): ${err}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.startsWith('ready ')) return;
      clearTimeout(timer);
      resolve({ child, md5: line.slice(6) });
    });
  });
}

/** ping, fetch (md5), "phase=N" markers the test waits for; after phase 1 it waits for the backend to come back. */
const guestScript = `
ip addr add ${GUEST_IP}/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
fetch() {
  i=0; until ping -c 1 -W 1 ${PEER_IP} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "${PEER_IP} never answered ($1)"; done
  vk_result ping$1=$(ping -c 3 -W 2 ${PEER_IP} | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
  i=0; until timeout 40 wget -q -O /tmp/f http://${PEER_IP}:8080/f; do i=$((i+1)); [ $i -lt 5 ] || vk_fail "wget failed ($1)"; sleep 1; done
  vk_result md5$1=$(md5sum < /tmp/f | cut -d' ' -f1) size$1=$(wc -c < /tmp/f)
  rm -f /tmp/f
}
fetch 1
echo "phase=1 done"
sleep 4
fetch 2
`;

describe('e2e: vhostkit trace between a QEMU guest and a vhostkit switch port', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  let sw: Switch;
  let ns: Netns;
  let peer: { child: ChildProcess; md5: string } | null = null;
  let proxy: ManagedProcess | null = null;
  let guest: Guest | null = null;
  let oldSink: ReturnType<typeof setLogSink>;

  before(() => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    findGuestKernel();
    findBusybox();
  });
  beforeEach(async () => {
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-e2e-trn-');
    sw = await Switch.create({ dataplane: 'worker' });
    await sw.addVhostPort({ name: 'vm', socket: tmp.join('vm.sock') });
    ns = new Netns(`trn${TAG}`);
    const tap = await sw.addTapPort({ name: 'tap', ifname: `trn${TAG}0` });
    ip('link', 'set', 'dev', tap.socket, 'netns', ns.name);
    ns.ip('addr', 'add', `${PEER_IP}/24`, 'dev', tap.socket);
    ns.ip('link', 'set', 'dev', tap.socket, 'up');
    peer = await startPeer(ns);
  });
  afterEach(async () => {
    await guest?.kill();
    guest = null;
    await proxy?.stop('SIGTERM', 3000);
    proxy = null;
    peer?.child.kill();
    peer = null;
    await sw.close();
    ns.delete();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  it('ping and 4 MiB over TCP through the proxy, md5 intact, across a backend restart; the trace has both negotiations in words and moving rings; its replay starts the same rings', async () => {
    const out = tmp.join('trace.jsonl');
    proxy = await ManagedProcess.start([process.execPath, vhostkitCli, 'trace', '--listen', tmp.join('front.sock'), '--connect', tmp.join('vm.sock'), '--out', out, '--rings', '--interval', '250'], {
      name: 'vhostkit-trace',
    });
    await proxy.waitForPath(tmp.join('front.sock'), 10_000, { socket: true });
    guest = await startGuest({ script: guestScript, devices: [{ type: 'vhost-user-net', socket: tmp.join('front.sock'), mac: '52:54:00:00:05:01', reconnect: true }] });
    await guest.waitFor(/phase=1 done/, 150_000);
    // The backend goes away and comes back on the same socket.
    await sw.removePort('vm');
    await sw.addVhostPort({ name: 'vm', socket: tmp.join('vm.sock') });
    const exit = await Promise.race([guest.exited, new Promise<null>((r) => setTimeout(() => r(null), 150_000))]);
    const log = guest.log();
    if (exit === null || exit.scriptExitCode !== 0) throw new Error(`guest did not finish: ${exit ? `script exit ${exit.scriptExitCode}` : 'timeout'}\n${log.slice(-3000)}`);
    const r = guest.results();
    expect(r.ping1, 'pings answered before the restart').to.equal('3');
    expect(r.md51, 'the file, before the restart').to.equal(peer!.md5);
    expect(r.size1).to.equal(String(FILE_BYTES));
    expect(r.md52, 'the file, after the restart').to.equal(peer!.md5);
    expect(Number(r.ping2)).to.be.greaterThan(0);

    await proxy.stop('SIGTERM', 3000);
    const text = proxy.log();
    proxy = null;
    const records = readTrace(out);
    const msgs = records.filter((x): x is MessageRecord => x.type === 'message');
    const sessions = records.filter((x): x is SessionRecord => x.type === 'session');
    expect(
      msgs.filter((m) => m.error !== undefined).map((m) => `${m.name}: ${m.error}`),
      'nothing malformed from QEMU or vhostkit',
    ).to.deep.equal([]);
    // Session 1 ended by the backend; QEMU came back through the proxy (maybe after a few
    // connections turned away while the port was gone) and negotiated again.
    const closed = sessions.filter((s) => s.event === 'close');
    expect(closed[0].side, 'the first session ends with the backend').to.equal('backend');
    const negotiated = [...new Set(msgs.filter((m) => m.name === 'SET_VRING_KICK').map((m) => m.session))];
    expect(negotiated.length, 'sessions that started rings').to.be.greaterThanOrEqual(2);
    for (const s of negotiated.slice(0, 2)) {
      const names = msgs.filter((m) => m.session === s && m.from === 'frontend').map((m) => m.name);
      const at = (n: string) => names.indexOf(n);
      expect(at('GET_FEATURES'), `session ${s}: GET_FEATURES first`).to.equal(0);
      for (const n of ['GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'SET_OWNER', 'SET_FEATURES', 'SET_VRING_NUM', 'SET_VRING_ADDR', 'SET_VRING_BASE', 'SET_VRING_CALL', 'SET_VRING_KICK']) {
        expect(at(n), `session ${s}: ${n} in ${names.join(' ')}`).to.be.greaterThan(0);
      }
      expect(at('SET_FEATURES')).to.be.lessThan(at('SET_VRING_KICK'));
      const offered = msgs.find((m) => m.session === s && m.name === 'GET_FEATURES' && m.reply)!;
      expect(offered.body).to.deep.include({ deviceType: 'net' });
      expect((offered.body as { names: string[] }).names).to.include.members(['MRG_RXBUF', 'VERSION_1', 'PROTOCOL_FEATURES']);
      const acked = msgs.find((m) => m.session === s && m.name === 'SET_FEATURES')!;
      expect((acked.body as { names: string[] }).names).to.include.members(['MRG_RXBUF', 'VERSION_1']);
      // QEMU 7.2 shares its RAM with ADD_MEM_REG when CONFIGURE_MEM_SLOTS is offered (vhostkit does).
      const mem = msgs.filter((m) => m.session === s && (m.name === 'SET_MEM_TABLE' || m.name === 'ADD_MEM_REG'));
      expect(at(mem[0].name)).to.be.lessThan(at('SET_VRING_KICK'));
      expect(
        mem.flatMap((m) => m.fds).some((f) => f.kind === 'memfd' && f.size === 256 << 20),
        'the guest RAM: a 256 MiB memfd',
      ).to.equal(true);
      expect(msgs.find((m) => m.session === s && m.name === 'SET_VRING_KICK')!.fds.map((f) => f.kind)).to.deep.equal(['eventfd']);
    }
    // Ring snapshots from guest memory: the RX and TX rings' indices moved with the traffic.
    const snaps = records.filter((x): x is RingsRecord => x.type === 'rings' && x.session === negotiated[0]);
    const tx = snaps.map((s) => s.rings.find((q) => q.index === 1)?.avail).filter((v): v is number => v !== undefined);
    expect(new Set(tx).size, `distinct TX avail indices seen: ${tx.join(' ')}`).to.be.greaterThan(2);
    // The text on stdout says the same for people.
    expect(text).to.match(/B->F GET_FEATURES reply features=0x[0-9a-f]+ deviceType=net/);
    expect(text).to.match(/F->B ADD_MEM_REG .* fds: memfd .*256 MiB/);
    expect(text).to.match(/session closed by the backend/);
    expect(text).to.match(/rings: q0 avail \d+ used \d+/);

    // Replay QEMU's first session against the switch port, with no VM: vhostkit negotiates
    // the same features and starts the rings QEMU had started when that session ended.
    const first = negotiated[0];
    const started = new Map<number, boolean>();
    for (const m of msgs.filter((x) => x.session === first && x.from === 'frontend')) {
      if (m.name === 'SET_VRING_KICK') started.set((m.body as { index: number }).index, true);
      if (m.name === 'GET_VRING_BASE') started.set((m.body as { index: number }).index, false);
    }
    const expectStarted = [...started].filter(([, on]) => on).map(([i]) => i);
    expect(expectStarted.length).to.be.greaterThan(0);
    const acked = msgs.filter((m) => m.session === first && m.name === 'SET_FEATURES').pop()!;
    const replay = new Replay(tmp.join('vm.sock'));
    try {
      const res = await replay.run(replaySteps(records, first));
      expect(res.error, res.error).to.equal(undefined);
      const session = await sw.backend('vm').nextSession();
      await until(() => session.queues().filter((q) => q.started).length === expectStarted.length, 5000, 'the replayed rings to start');
      expect(
        session
          .queues()
          .filter((q) => q.started)
          .map((q) => q.index),
      ).to.deep.equal(expectStarted.sort((x, y) => x - y));
      expect(`0x${session.negotiatedFeatures.toString(16)}`).to.equal((acked.body as { features: string }).features);
      expect(res.steps.find((s) => s.name === 'GET_FEATURES')!.differs, 'the same features offered').to.equal(false);
    } finally {
      replay.close();
    }
  });
});
