// A live migration traced: guest A's source QEMU reaches switch port a1 through one
// `vhostkit trace` proxy, its destination QEMU port a2 through another; A pings a TAP peer
// in a namespace of ours across the move and fetches 4 MiB after it (md5). The migration
// works through the proxies (the guest RAM of source and destination is identical page by
// page: the dirty log the proxy passed on covered every write of the switch), and the
// traces show it: the source's SET_LOG_BASE with its memfd, LOG_ALL in SET_FEATURES, the
// rings' log flag, the rings stopped (GET_VRING_BASE); the destination's SEND_RARP with A's MAC.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Switch } from '../../src/switch/switch.js';
import { makeTempDir, vhostkitCli, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, parseGuestResults, type VhostUserNetDevice } from '../lib/guest.js';
import { ManagedProcess } from '../lib/process.js';
import { Netns, ip, netnsUnavailable } from '../lib/netns.js';
import { setLogSink } from '../../src/log.js';
import { readTrace } from '../../src/trace/replay.js';
import type { MessageRecord } from '../../src/trace/decode.js';
import { consoleLine, migrate, startMigratingGuest, type MigratingGuest } from './migrate.js';

const TAG = process.pid.toString(36).slice(-4);
const PEER_IP = '10.54.0.1';
const MAC_A = '52:54:00:00:08:01';
const FILE_BYTES = 4 << 20;
const PINGS = 100;

const PEER_CODE = `
import { createServer } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
const data = randomBytes(${FILE_BYTES});
createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length });
  res.end(data);
}).listen(8080, '0.0.0.0', () => console.log('ready ' + createHash('md5').update(data).digest('hex')));
`;

const scriptA = `
ip addr add 10.54.0.2/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
i=0; until ping -c 1 -W 1 ${PEER_IP} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || vk_fail "${PEER_IP} never answered"; done
vk_result ready=1
ping -i 0.2 -c ${PINGS} ${PEER_IP} > /tmp/ping 2>&1
vk_result ping_rx=$(sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p' /tmp/ping)
i=0; until timeout 40 wget -q -O /tmp/f http://${PEER_IP}:8080/f; do i=$((i+1)); [ $i -lt 5 ] || vk_fail "wget failed"; sleep 1; done
vk_result md5=$(md5sum < /tmp/f | cut -d' ' -f1)
`;

describe('e2e: a live migration traced by vhostkit trace', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  let sw: Switch;
  let ns: Netns;
  let peer: { child: ChildProcess; md5: string } | null = null;
  const proxies: ManagedProcess[] = [];
  let guest: MigratingGuest | null = null;
  let oldSink: ReturnType<typeof setLogSink>;

  before(() => {
    const why = netnsUnavailable();
    if (why) throw new Error(`cannot run: ${why}`);
    findGuestKernel();
    findBusybox();
  });
  beforeEach(async () => {
    oldSink = setLogSink(() => undefined);
    tmp = makeTempDir('vk-e2e-trm-');
    sw = await Switch.create({ dataplane: 'worker' });
    for (const n of ['a1', 'a2']) await sw.addVhostPort({ name: n, socket: tmp.join(`${n}.sock`) });
    ns = new Netns(`trm${TAG}`);
    const tap = await sw.addTapPort({ name: 'tap', ifname: `trm${TAG}0` });
    ip('link', 'set', 'dev', tap.socket, 'netns', ns.name);
    ns.ip('addr', 'add', `${PEER_IP}/24`, 'dev', tap.socket);
    ns.ip('link', 'set', 'dev', tap.socket, 'up');
    const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '--input-type=module', '-e', PEER_CODE], { stdio: ['ignore', 'pipe', 'inherit'] });
    peer = await new Promise((resolve, reject) => {
      child.on('exit', (code) => reject(new Error(`peer exited (${code})`)));
      createInterface({ input: child.stdout! }).on('line', (line) => line.startsWith('ready ') && resolve({ child, md5: line.slice(6) }));
    });
  });
  afterEach(async () => {
    await guest?.kill();
    guest = null;
    for (const p of proxies.splice(0)) await p.stop('SIGTERM', 3000);
    peer?.child.kill();
    peer = null;
    await sw.close();
    ns.delete();
    tmp.cleanup();
    setLogSink(oldSink);
  });

  async function proxy(n: number, backend: string): Promise<string> {
    const p = await ManagedProcess.start(
      [process.execPath, vhostkitCli, 'trace', '--listen', tmp.join(`front${n}.sock`), '--connect', tmp.join(backend), '--out', tmp.join(`trace${n}.jsonl`), '--quiet'],
      {
        name: `vhostkit-trace-${n}`,
      },
    );
    proxies.push(p);
    await p.waitForPath(tmp.join(`front${n}.sock`), 10_000, { socket: true });
    return tmp.join(`front${n}.sock`);
  }

  it('the guest moves from a1 to a2 through two proxies: RAM identical, pings and 4 MiB intact; the traces show the dirty log and the announce', async () => {
    const dev = (socket: string): VhostUserNetDevice => ({ type: 'vhost-user-net', socket, mac: MAC_A, reconnect: true });
    const src = await proxy(1, 'a1.sock');
    const dst = await proxy(2, 'a2.sock');
    guest = await startMigratingGuest(tmp, scriptA, [dev(src)]);
    const { dst: dstGuest, dstQmp } = await guest.startDestination([dev(dst)]);
    await consoleLine(guest.src, /VHOSTKIT-RESULT ready=1/, 150_000);
    const m = await migrate(guest, dstQmp, tmp);
    expect(
      m.differingPages.map((p) => `0x${p.toString(16)}`),
      `guest RAM pages that differ between source and destination\n${m.differences}`,
    ).to.deep.equal([]);
    await consoleLine(dstGuest, /VHOSTKIT-EXIT \d+/, 150_000);
    const r = parseGuestResults(guest.log());
    expect(dstGuest.log(), 'the script finished on the destination').to.match(/VHOSTKIT-EXIT 0/);
    expect(r.md5, 'the file after the move').to.equal(peer!.md5);
    expect(PINGS - Number(r.ping_rx), 'pings lost across the move').to.be.at.most(10);
    for (const p of proxies.splice(0)) await p.stop('SIGTERM', 3000);

    const srcMsgs = readTrace(tmp.join('trace1.jsonl')).filter((x): x is MessageRecord => x.type === 'message');
    const dstMsgs = readTrace(tmp.join('trace2.jsonl')).filter((x): x is MessageRecord => x.type === 'message');
    for (const [what, msgs] of [
      ['source', srcMsgs],
      ['destination', dstMsgs],
    ] as const) {
      expect(
        msgs.filter((x) => x.error !== undefined).map((x) => `${x.name}: ${x.error}`),
        `${what}: nothing malformed`,
      ).to.deep.equal([]);
    }
    const logBase = srcMsgs.find((x) => x.name === 'SET_LOG_BASE' && x.from === 'frontend');
    expect(logBase, 'the source got a dirty log').to.not.equal(undefined);
    expect(logBase!.fds.map((f) => f.kind)).to.deep.equal(['memfd']);
    expect(logBase!.fds[0].size).to.be.greaterThan(0);
    expect(
      srcMsgs.some((x) => x.name === 'SET_FEATURES' && (x.body as { names: string[] }).names.includes('LOG_ALL')),
      'LOG_ALL switched on',
    ).to.equal(true);
    expect(srcMsgs.some((x) => x.name === 'SET_VRING_ADDR' && (x.body as { log?: boolean }).log === true)).to.equal(true);
    expect(srcMsgs.filter((x) => x.name === 'GET_VRING_BASE' && x.reply).length, 'the source rings stopped').to.be.greaterThanOrEqual(2);
    const rarp = dstMsgs.find((x) => x.name === 'SEND_RARP');
    expect(rarp?.body, 'the destination announces the MAC').to.deep.equal({ mac: MAC_A });
  });
});
