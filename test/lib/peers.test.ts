// Real peers on this machine (docs/peers.md): qemu-storage-daemon, dpdk-testpmd in both
// roles, and the ManagedProcess machinery under them. A missing peer is a FAILURE naming the
// Debian package to install, never a skip.

import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { availableParallelism } from 'node:os';
import { ManagedProcess, ManagedProcessError, commandExists, liveManagedProcesses, whichOrNull } from './process.js';
import {
  PEER_DEBIAN_PACKAGES,
  PeerMissingError,
  TestpmdStatsParser,
  createRawImage,
  dpdkRuntimeDir,
  makeTempDir,
  peerAvailability,
  requirePeer,
  startStorageDaemon,
  startTestpmd,
  type PeerName,
  type StorageDaemon,
  type TempDir,
  type Testpmd,
  type TestpmdOptions,
} from './peers.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Minimal vhost-user conversation: GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM. */
async function vhostUserQuery(path: string): Promise<{ features: bigint; protocolFeatures: bigint; queueNum: bigint }> {
  const sock = connect({ path });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  let buf = Buffer.alloc(0);
  const waiters: Array<() => void> = [];
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    waiters.splice(0).forEach((w) => w());
  });
  sock.on('error', () => {});
  const readN = async (n: number): Promise<Buffer> => {
    const deadline = Date.now() + 3000;
    while (buf.length < n) {
      if (Date.now() > deadline || sock.destroyed) throw new Error(`vhost-user: no reply from ${path}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  const send = (request: number, payload?: bigint): void => {
    const msg = Buffer.alloc(12 + (payload === undefined ? 0 : 8));
    msg.writeUInt32LE(request, 0);
    msg.writeUInt32LE(0x1, 4); // version 1
    msg.writeUInt32LE(payload === undefined ? 0 : 8, 8);
    if (payload !== undefined) msg.writeBigUInt64LE(payload, 12);
    sock.write(msg);
  };
  const askU64 = async (request: number): Promise<bigint> => {
    send(request);
    const hdr = await readN(12);
    expect(hdr.readUInt32LE(0), 'reply request code').to.equal(request);
    expect(hdr.readUInt32LE(4) & 0x4, 'reply flag').to.equal(0x4);
    expect(hdr.readUInt32LE(8), 'reply size').to.equal(8);
    return (await readN(8)).readBigUInt64LE(0);
  };
  try {
    const features = await askU64(1); // VHOST_USER_GET_FEATURES
    const protocolFeatures = await askU64(15); // VHOST_USER_GET_PROTOCOL_FEATURES
    send(16, protocolFeatures); // VHOST_USER_SET_PROTOCOL_FEATURES (no reply)
    const queueNum = await askU64(17); // VHOST_USER_GET_QUEUE_NUM
    return { features, protocolFeatures, queueNum };
  } finally {
    sock.destroy();
  }
}

function nodeScript(code: string): string[] {
  return [process.execPath, '-e', code];
}

function ourDpdkRuntimeDirs(): string[] {
  const base = dpdkRuntimeDir('');
  try {
    return readdirSync(base).filter((n) => n.startsWith(`vhostkit-${process.pid}-`));
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------

describe('test/lib/process: ManagedProcess', function () {
  this.timeout(20_000);

  it('captures output lines, waits for a line, and stops with SIGTERM', async () => {
    const seen: string[] = [];
    const p = await ManagedProcess.start(nodeScript(`console.log('hello'); console.error('to stderr'); console.log('ready 42'); setInterval(() => {}, 1000);`), { onLine: (l) => seen.push(l) });
    const m = await p.waitForLine(/ready (\d+)/, 5000);
    expect(m[1]).to.equal('42');
    await p.waitForLine(/to stderr/, 5000);
    expect(p.running).to.equal(true);
    const st = await p.stop();
    expect(st).to.deep.include({ code: null, signal: 'SIGTERM' });
    expect(isAlive(p.pid as number)).to.equal(false);
    expect(seen).to.include.members(['hello', 'to stderr', 'ready 42']);
    expect(p.log()).to.contain('hello');
    expect(await p.exited).to.deep.equal(st);
    expect(liveManagedProcesses()).to.not.include(p);
  });

  it('rejects waitForLine with the command line and log tail when the process exits first', async () => {
    const p = await ManagedProcess.start(nodeScript(`console.log('some context'); process.exit(3);`));
    const err = await p.waitForLine(/never printed/, 5000).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ManagedProcessError);
    const msg = (err as Error).message;
    expect(msg).to.contain('exited with code 3');
    expect(msg).to.contain('some context');
    expect(msg).to.contain(process.execPath);
    expect((await p.exited).code).to.equal(3);
  });

  it('rejects waitForLine and waitForPath on timeout', async () => {
    const p = await ManagedProcess.start(nodeScript(`console.log('idle'); setInterval(() => {}, 1000);`));
    try {
      const t0 = Date.now();
      const err = await p.waitForLine(/nothing/, 300).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ManagedProcessError);
      expect((err as Error).message)
        .to.match(/timed out after 300 ms/)
        .and.contain('idle');
      expect(Date.now() - t0).to.be.lessThan(3000);
      const err2 = await p.waitForPath('/nonexistent/vhostkit.sock', 200).catch((e: Error) => e);
      expect((err2 as Error).message).to.contain('/nonexistent/vhostkit.sock');
    } finally {
      await p.stop();
    }
  });

  it('escalates to SIGKILL when SIGTERM is ignored', async () => {
    const p = await ManagedProcess.start(nodeScript(`process.on('SIGTERM', () => console.log('ignoring TERM')); console.log('up'); setInterval(() => {}, 1000);`));
    await p.waitForLine(/^up$/, 5000);
    const t0 = Date.now();
    const st = await p.stop('SIGTERM', 400);
    expect(st.signal).to.equal('SIGKILL');
    expect(Date.now() - t0).to.be.within(350, 5000);
    expect(p.log()).to.contain('ignoring TERM');
    expect(isAlive(p.pid as number)).to.equal(false);
  });

  it('keeps only the last ~1 MiB of output', async () => {
    const p = await ManagedProcess.start(nodeScript(`const l = 'x'.repeat(1023); for (let i = 0; i < 3072; i++) console.log(l); console.log('LAST LINE');`));
    const st = await p.exited;
    expect(st.code).to.equal(0);
    expect(p.lineCount).to.equal(3073);
    expect(p.log().length).to.be.at.most(1024 * 1024);
    expect(p.log().length).to.be.greaterThan(1000 * 1024);
    expect(p.tail(100)).to.match(/LAST LINE$/);
  });

  it('rejects start() for a missing executable, and finds executables on PATH', async () => {
    const err = await ManagedProcess.start(['/nonexistent/vhostkit-no-such-binary']).catch((e: Error) => e);
    expect(err).to.be.instanceOf(ManagedProcessError);
    expect((err as Error).message).to.contain('ENOENT');
    expect(commandExists('sh')).to.equal(true);
    expect(whichOrNull('sh')).to.match(/\/sh$/);
    expect(commandExists('vhostkit-definitely-not-a-command')).to.equal(false);
    expect(whichOrNull('vhostkit-definitely-not-a-command')).to.equal(null);
  });
});

// ---------------------------------------------------------------------------

describe('test/lib/peers: availability', function () {
  this.timeout(20_000);

  const peers = Object.keys(PEER_DEBIAN_PACKAGES) as PeerName[];
  for (const name of peers) {
    it(`${name} is installed and reports its version`, async () => {
      const info = (await peerAvailability())[name];
      if (!info.available) throw new PeerMissingError(name, info.debianPackage);
      expect(info.path).to.be.a('string');
      expect(info.version, `version of ${name} from: ${info.versionText}`).to.match(/^\d+\.\d+/);
    });
  }

  it('names the Debian package when a peer is missing', () => {
    const e = new PeerMissingError('dpdk-testpmd', PEER_DEBIAN_PACKAGES['dpdk-testpmd']);
    expect(e.message).to.contain('apt-get install -y dpdk-dev');
    expect(PEER_DEBIAN_PACKAGES['qemu-img']).to.equal('qemu-utils');
    expect(PEER_DEBIAN_PACKAGES['qemu-storage-daemon']).to.equal('qemu-system-x86');
  });

  it('makeTempDir creates a unique directory that cleanup() removes', () => {
    const a = makeTempDir('vhostkit-t-');
    const b = makeTempDir('vhostkit-t-');
    expect(a.path).to.not.equal(b.path);
    createRawImage(a.join('img'), 4096);
    expect(existsSync(a.join('img'))).to.equal(true);
    a.cleanup();
    a.cleanup();
    b.cleanup();
    expect(existsSync(a.path)).to.equal(false);
    expect(existsSync(b.path)).to.equal(false);
  });
});

// ---------------------------------------------------------------------------

describe('test/lib/peers: qemu-storage-daemon (vhost-user-blk)', function () {
  this.timeout(20_000);
  let daemon: StorageDaemon | null = null;
  let dir: TempDir;
  before(() => {
    dir = makeTempDir('vhostkit-qsdt-');
  });
  afterEach(async () => {
    await daemon?.stop('SIGKILL', 1000);
    daemon = null;
  });
  after(() => dir.cleanup());

  it('starts, serves after a probe connection, honours num-queues, and stops leaving nothing', async () => {
    requirePeer('qemu-storage-daemon');
    const image = dir.join('disk.img');
    createRawImage(image, 16 * 1024 * 1024);
    const socket = dir.join('blk.sock');
    const t0 = Date.now();
    daemon = await startStorageDaemon({ image, socket, numQueues: 2 });
    const startMs = Date.now() - t0;
    expect(startMs).to.be.lessThan(10_000);
    const pid = daemon.pid;
    expect(isAlive(pid)).to.equal(true);
    expect(existsSync(socket)).to.equal(true);

    // The readiness probe (connect + close) did not hurt: it still answers, twice in a row.
    for (let i = 0; i < 2; i++) {
      const q = await vhostUserQuery(socket);
      expect(q.features & (1n << 32n), 'VIRTIO_F_VERSION_1').to.not.equal(0n);
      expect(q.features & (1n << 30n), 'VHOST_USER_F_PROTOCOL_FEATURES').to.not.equal(0n);
      expect(q.queueNum).to.equal(2n);
    }

    const st = await daemon.stop();
    daemon = null;
    expect(st).to.deep.include({ code: 0, signal: null });
    expect(isAlive(pid)).to.equal(false);
    expect(existsSync(socket), 'socket removed').to.equal(false);
    expect(existsSync(image), 'the image is the caller’s').to.equal(true);
  });

  it('fails with the log tail when the daemon refuses its arguments', async () => {
    requirePeer('qemu-storage-daemon');
    const image = dir.join('disk0.img');
    createRawImage(image, 1024 * 1024);
    const err = await startStorageDaemon({ image: dir.join('missing.img'), socket: dir.join('bad.sock') }).catch((e: Error) => e);
    expect(err).to.be.instanceOf(ManagedProcessError);
    expect((err as Error).message)
      .to.contain('qemu-storage-daemon')
      .and.contain('exited with code 1')
      .and.contain('missing.img');
    expect(existsSync(dir.join('bad.sock'))).to.equal(false);
    const err0 = await startStorageDaemon({ image, numQueues: 0 }).catch((e: Error) => e);
    expect((err0 as Error).message).to.contain('numQueues');
  });
});

// ---------------------------------------------------------------------------

const SAMPLE = `
Logical Core 1 (socket 0) forwards packets on 1 streams:
\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 18240064   RX-missed: 3          RX-bytes:  1167364096
VHOST_CONFIG: (/tmp/x.sock) read message VHOST_USER_GET_VRING_BASE
  RX-errors: 2
  RX-nombuf:  1
  TX-packets: 5          TX-errors: 0          TX-bytes:  320

  Throughput (since last show)
  Rx-pps:      9118924          Rx-bps:   4668889416
  Tx-pps:            7          Tx-bps:            0
  ############################################################################
Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 18240064       RX-dropped: 0             RX-total: 18240064
  TX-packets: 0              TX-dropped: 106656        TX-total: 106656
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 18240064       RX-dropped: 0             RX-total: 18240064
  TX-packets: 0              TX-dropped: 106656        TX-total: 106656
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
`;

describe('test/lib/peers: dpdk-testpmd', function () {
  this.timeout(20_000);
  const running: Testpmd[] = [];
  const launch = async (opts: TestpmdOptions): Promise<Testpmd> => {
    const t = await startTestpmd(opts);
    running.push(t);
    return t;
  };
  afterEach(async () => {
    await Promise.all(running.splice(0).map((t) => t.stop('SIGTERM', 2000)));
  });
  // Frontend and backend each get a CPU of their own when there are two.
  const cpuA = 0;
  const cpuB = availableParallelism() > 1 ? 1 : 0;

  it('parses periodic and exit statistics, ignoring interleaved log lines', () => {
    const p = new TestpmdStatsParser();
    expect(p.latest()).to.equal(null);
    p.pushAll(SAMPLE);
    const s = p.latest();
    expect(s).to.not.equal(null);
    expect(s!.ports[0]).to.include({
      port: 0,
      rxPackets: 18240064,
      rxMissed: 3,
      rxBytes: 1167364096,
      rxErrors: 2,
      rxNombuf: 1,
      txPackets: 5,
      txBytes: 320,
      rxPps: 9118924,
      rxBps: 4668889416,
      txPps: 7,
    });
    const f = p.finalStats();
    expect(f!.ports[0]).to.include({ port: 0, rxPackets: 18240064, rxTotal: 18240064, txDropped: 106656 });
    expect(f!.accumulated).to.include({ port: 'all', rxPackets: 18240064, txTotal: 106656 });
  });

  it('vhost backend alone: ready, then stops cleanly (no process, socket or runtime dir left)', async () => {
    requirePeer('dpdk-testpmd');
    const be = await launch({ role: 'vhost', forwardMode: 'rxonly', cpu: cpuA });
    expect(isAlive(be.pid)).to.equal(true);
    expect(existsSync(be.socket)).to.equal(true);
    expect(existsSync(be.runtimeDir)).to.equal(true);
    expect(be.latestStats()!.ports[0].rxPackets).to.equal(0);
    const res = await be.stop();
    expect(res).to.deep.include({ code: 0, signal: null });
    expect(res.final?.ports[0]).to.include({ rxPackets: 0, txPackets: 0 });
    expect(res.final?.accumulated).to.not.equal(null);
    expect(isAlive(be.pid)).to.equal(false);
    expect(existsSync(be.socket), 'socket').to.equal(false);
    expect(existsSync(be.runtimeDir), 'runtime dir').to.equal(false);
    expect(existsSync(be.tempDir.path), 'temp dir').to.equal(false);
  });

  it('vhost backend (rxonly) receives from a virtio-user frontend (txonly, 64 B)', async () => {
    requirePeer('dpdk-testpmd');
    const be = await launch({ role: 'vhost', forwardMode: 'rxonly', cpu: cpuA });
    const fe = await launch({ role: 'virtio-user', socket: be.socket, forwardMode: 'txonly', txpkts: 64, cpu: cpuB });
    const s = await be.waitForStats((x) => x.ports[0]?.rxPackets > 0, 10_000);
    expect(s.ports[0].rxPackets).to.be.greaterThan(0);
    await fe.waitForStats((x) => x.ports[0]?.txPackets > 0, 10_000);

    const feRes = await fe.stop();
    const beRes = await be.stop();
    expect(feRes.code).to.equal(0);
    expect(beRes.code).to.equal(0);
    expect(feRes.final!.ports[0].txPackets).to.be.greaterThan(0);
    expect(beRes.final!.ports[0].rxPackets).to.be.greaterThan(0);
    expect(beRes.final!.accumulated!.rxPackets).to.equal(beRes.final!.ports[0].rxPackets);
    // Everything the frontend sent and the backend did not drop arrived.
    expect(beRes.final!.ports[0].rxPackets).to.be.at.most(feRes.final!.ports[0].txPackets);
    for (const t of [be, fe]) expect(isAlive(t.pid), `pid ${t.pid}`).to.equal(false);
    expect(existsSync(be.socket)).to.equal(false);
  });

  it('reversed: virtio-user server (packed ring) with a vhost client backend', async () => {
    requirePeer('dpdk-testpmd');
    const fe = await launch({ role: 'virtio-user', server: true, packed: true, forwardMode: 'txonly', txpkts: 64, cpu: cpuB });
    expect(existsSync(fe.socket)).to.equal(true);
    expect(fe.latestStats()).to.equal(null); // blocked in accept() until the backend connects
    const be = await launch({ role: 'vhost', client: true, socket: fe.socket, forwardMode: 'rxonly', cpu: cpuA });
    await fe.waitForwarding(10_000);
    await be.waitForStats((x) => x.ports[0]?.rxPackets > 0, 10_000);
    const beRes = await be.stop('SIGINT');
    const feRes = await fe.stop();
    expect(beRes.final!.ports[0].rxPackets).to.be.greaterThan(0);
    expect(feRes.final!.ports[0].txPackets).to.be.greaterThan(0);
    for (const t of [be, fe]) expect(isAlive(t.pid)).to.equal(false);
    expect(existsSync(fe.socket)).to.equal(false);
  });

  it('fails fast when the vdev cannot probe (virtio-user to a socket nobody listens on)', async () => {
    requirePeer('dpdk-testpmd');
    const dir = makeTempDir('vhostkit-tp-');
    try {
      const err = await startTestpmd({ role: 'virtio-user', socket: dir.join('nobody.sock'), forwardMode: 'txonly', cpu: cpuB }).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ManagedProcessError);
      expect((err as Error).message)
        .to.contain('No probed ethernet devices')
        .and.contain('--vdev');
      expect(liveManagedProcesses().filter((p) => p.name === 'dpdk-testpmd')).to.have.length(0);
    } finally {
      dir.cleanup();
    }
  });

  after(() => {
    expect(ourDpdkRuntimeDirs(), 'DPDK runtime dirs left behind').to.deep.equal([]);
  });
});
