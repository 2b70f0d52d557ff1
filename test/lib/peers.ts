// Launchers for the real vhost-user peers installed on the machine (docs/peers.md):
// qemu-storage-daemon as a vhost-user-blk backend, and dpdk-testpmd as a vhost-user net
// backend (net_vhost) or as a virtio-user frontend (net_virtio_user, a virtio driver with no
// VM). Each launcher resolves once the peer is ready and returns a handle whose stop() leaves
// no process, socket (where the peer owns it), DPDK runtime directory or temp dir behind.
//
// Facts these launchers rely on, checked on Debian 12 (QEMU 7.2.22, DPDK 22.11.11):
//
// qemu-storage-daemon
//   - prints nothing when it starts; ready = the socket exists and accepts a connection.
//     Connecting and disconnecting at once is harmless: it keeps serving the next client.
//   - `num-queues=N` is accepted by the vhost-user-blk export (N >= 1; 0 is refused with
//     "num-queues must be greater than 0"); VHOST_USER_GET_QUEUE_NUM then answers N.
//     Default 1.
//   - a stale socket file at addr.path is replaced. SIGTERM: it removes the socket, exit 0.
//     Socket up about 10 ms after exec.
//
// dpdk-testpmd
//   - stdout is a pipe here, so testpmd's printf output would be block-buffered (4 KiB): the
//     periodic statistics would arrive seconds late, in lumps. It runs under
//     `stdbuf -oL -eL` (coreutils) so every line arrives as it is printed.
//   - what keeps it running non-interactively: either `--stats-period=N` (it loops printing
//     statistics until SIGINT/SIGTERM, stdin is not read at all), or a stdin that is not at
//     EOF (without --stats-period it prints "Press enter to exit" and blocks in read(0)).
//     ManagedProcess gives it an open, never-written stdin pipe, and we pass --stats-period=1.
//   - needs two lcores (main + one forwarding core): `-l 0` fails with "No cores defined for
//     forwarding". `--lcores 0@N,1@N` pins both to CPU N.
//   - start time grows with -m under --no-huge (memory is touched at init): -m 256 about
//     0.5 s, 512 about 0.8 s, 1024 about 1.2 s, 2048 about 3.8 s to the first statistics.
//     16384 mbufs fit in -m 256. Default here: -m 512.
//   - with --stats-period it prints a first statistics block as soon as forwarding starts
//     ("Port statistics ====" then one "NIC statistics for port N" block per port): that is
//     the readiness line, once a port block is complete.
//   - if its vdev fails to probe (e.g. virtio-user client to a socket nobody listens on),
//     testpmd does NOT exit: it prints "testpmd: No probed ethernet devices" and forwards on
//     zero ports. The launcher treats that line as a failure.
//   - virtio-user with server=1 blocks inside EAL init (accept) until a vhost client connects:
//     the socket appears within ~0.2 s with the line "waiting for client connection...",
//     and forwarding starts only after the peer connected. SIGTERM while it waits makes it
//     exit 0 but leaves its socket file behind (stop() removes it).
//   - SIGTERM or SIGINT: it stops forwarding, prints "Forward statistics for port N" blocks
//     and the "Accumulated forward statistics for all ports" block, closes the ports, and
//     exits 0 (not by the signal) within one stats period (0.1-1 s: the main lcore sleeps 1 s
//     between prints). A vhost server removes its socket on exit. Since the main lcore shares
//     its CPU with the busy-polling forwarding lcore, prints come every 1-3 s, not exactly 1 s.
//   - as root, every run leaves /var/run/dpdk/<file-prefix>/ (config, fbarray files) behind,
//     even on a clean exit; stop() removes it. (`--in-memory` would avoid it but is refused
//     together with --no-huge: "Option --legacy-mem is not compatible with --in-memory".)
//   - `dpdk-testpmd --version` does not exist; `dpdk-testpmd -v -h` prints
//     "EAL: RTE Version: 'DPDK 22.11.11'" and the usage, exits 0, creates nothing.

import { execFile } from 'node:child_process';
import { closeSync, ftruncateSync, lstatSync, mkdtempSync, openSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ManagedProcess, registerExitCleanup, whichOrNull, type ExitStatus, type LineListener } from './process.js';

// ---------------------------------------------------------------------------
// Peers, packages, availability
// ---------------------------------------------------------------------------

export type PeerName = 'qemu-storage-daemon' | 'dpdk-testpmd' | 'qemu-system-x86_64' | 'qemu-img';

/**
 * The Debian 12 package to install for each peer. (qemu-storage-daemon itself ships in
 * qemu-system-common, which qemu-system-x86 depends on.)
 */
export const PEER_DEBIAN_PACKAGES: Readonly<Record<PeerName, string>> = {
  'qemu-storage-daemon': 'qemu-system-x86',
  'dpdk-testpmd': 'dpdk-dev',
  'qemu-system-x86_64': 'qemu-system-x86',
  'qemu-img': 'qemu-utils',
};

/** Thrown when a peer's executable is not on PATH; the message names the Debian package. */
export class PeerMissingError extends Error {
  constructor(
    readonly peer: PeerName,
    readonly debianPackage: string,
  ) {
    super(`${peer} is not installed (not found on PATH). Install the Debian package ${debianPackage}: ` + `apt-get install -y ${debianPackage}`);
    this.name = 'PeerMissingError';
  }
}

/** The full path of a peer's executable; throws PeerMissingError if it is not installed. */
export function requirePeer(peer: PeerName): string {
  const path = whichOrNull(peer);
  if (!path) throw new PeerMissingError(peer, PEER_DEBIAN_PACKAGES[peer]);
  return path;
}

export interface PeerInfo {
  name: PeerName;
  /** Full path, or null when not installed. */
  path: string | null;
  available: boolean;
  /** e.g. "7.2.22" for QEMU tools, "22.11.11" for DPDK; null if missing or not parsed. */
  version: string | null;
  /** The line the version was read from, e.g. "qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)". */
  versionText: string | null;
  /** Debian package to install to get it. */
  debianPackage: string;
}

function execText(file: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (_err, stdout, stderr) => {
      resolve(`${stdout ?? ''}\n${stderr ?? ''}`);
    });
  });
}

/**
 * Which peers exist and their versions. QEMU tools are asked `--version`
 * ("... version 7.2.22 (Debian ...)"); dpdk-testpmd has no --version, so it runs
 * `dpdk-testpmd -v -h` and reads "EAL: RTE Version: 'DPDK 22.11.11'".
 */
export async function peerAvailability(): Promise<Record<PeerName, PeerInfo>> {
  const names = Object.keys(PEER_DEBIAN_PACKAGES) as PeerName[];
  const infos = await Promise.all(
    names.map(async (name): Promise<PeerInfo> => {
      const path = whichOrNull(name);
      const info: PeerInfo = {
        name,
        path,
        available: path !== null,
        version: null,
        versionText: null,
        debianPackage: PEER_DEBIAN_PACKAGES[name],
      };
      if (!path) return info;
      if (name === 'dpdk-testpmd') {
        const out = await execText(path, ['-v', '-h'], 10_000);
        const m = /RTE Version: '(DPDK ([0-9][0-9A-Za-z.\-_]*))'/.exec(out);
        if (m) {
          info.versionText = m[1];
          info.version = m[2];
        }
      } else {
        const out = await execText(path, ['--version'], 10_000);
        const line = out.split('\n').find((l) => /version\s+\d/.test(l));
        if (line) {
          info.versionText = line.trim();
          info.version = /version\s+(\d+(?:\.\d+)*)/.exec(line)?.[1] ?? null;
        }
      }
      return info;
    }),
  );
  return Object.fromEntries(infos.map((i) => [i.name, i])) as Record<PeerName, PeerInfo>;
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

export interface TempDir {
  readonly path: string;
  /** `join(path, ...parts)`. */
  join(...parts: string[]): string;
  /** Removes the directory and everything in it. Idempotent. */
  cleanup(): void;
}

/**
 * A new unique directory `<os.tmpdir()>/<prefix>XXXXXX`. Removed by `cleanup()`, or when
 * Node exits if cleanup() was never called. Keep prefixes short: a Unix socket path must fit
 * in 107 bytes.
 */
export function makeTempDir(prefix = 'vhostkit-', parent = tmpdir()): TempDir {
  const path = mkdtempSync(join(parent, prefix));
  let unregister: (() => void) | null = null;
  const cleanup = (): void => {
    unregister?.();
    unregister = null;
    rmSync(path, { recursive: true, force: true });
  };
  unregister = registerExitCleanup(cleanup);
  return { path, join: (...parts: string[]) => join(path, ...parts), cleanup };
}

/** Creates (or truncates) a sparse raw image file of `sizeBytes` bytes, all zero. */
export function createRawImage(path: string, sizeBytes: number): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

const MAX_SUN_PATH = 107;

function checkSocketPath(path: string, forDpdk: boolean): void {
  if (Buffer.byteLength(path) > MAX_SUN_PATH) {
    throw new Error(`socket path too long for a Unix socket (${Buffer.byteLength(path)} > ${MAX_SUN_PATH} bytes): ${path}`);
  }
  if (forDpdk && /[,=\s]/.test(path)) {
    throw new Error(`DPDK devargs cannot carry ',', '=' or whitespace in a path: ${path}`);
  }
}

/** QEMU option values escape ',' by doubling it. */
function qemuOptValue(v: string): string {
  return v.replace(/,/g, ',,');
}

/** Removes `path` if it is a socket (never a regular file or directory). */
function unlinkSocketIfPresent(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // absent
  }
}

/** One non-blocking connect attempt: true if `path` accepts a connection (closed at once). */
export function canConnect(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ path });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.removeAllListeners();
      sock.on('error', () => {});
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// qemu-storage-daemon
// ---------------------------------------------------------------------------

export interface StorageDaemonOptions {
  /** Raw image file to export (must exist; see createRawImage). */
  image: string;
  /** Unix socket path the daemon listens on. Default: `<temp dir>/blk.sock`. */
  socket?: string;
  /** Default true (`writable=on`); false exports read-only (`writable=off`). */
  writable?: boolean;
  /** `num-queues=N` on the export (N >= 1). Omitted: QEMU's default, 1. */
  numQueues?: number;
  /** The blockdev's `discard=` (default QEMU's, ignore: DISCARD requests leave the data). */
  discard?: 'ignore' | 'unmap';
  /** `cache.direct=on` (O_DIRECT); default off. */
  direct?: boolean;
  /** Pin the process (all its threads) to these CPUs: `taskset -c CPUS` (e.g. "1"). */
  cpus?: string;
  /** Extra arguments appended to the command line. */
  extraArgs?: string[];
  /** Default 10 s. */
  readyTimeoutMs?: number;
  onLine?: LineListener;
}

export interface StorageDaemon {
  readonly process: ManagedProcess;
  readonly pid: number;
  readonly socket: string;
  readonly image: string;
  /** SIGTERM (escalating to SIGKILL after graceMs); removes a leftover socket and our temp dir. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<ExitStatus>;
}

/**
 * Starts qemu-storage-daemon as a vhost-user-blk backend (server) and resolves when its
 * socket exists and accepts a connection. Runs exactly:
 *
 * ```
 * qemu-storage-daemon \
 *   --blockdev driver=file,node-name=f,filename=IMG,cache.direct=off \
 *   --export type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=SOCK,writable=on[,num-queues=N]
 * ```
 *
 * (`writable=off` when `writable: false`; commas in IMG or SOCK are doubled, QEMU's escape.)
 * It prints nothing on start; readiness is a successful connect() to SOCK, closed at once,
 * which the daemon tolerates (it keeps serving the next client).
 */
export async function startStorageDaemon(opts: StorageDaemonOptions): Promise<StorageDaemon> {
  const exe = requirePeer('qemu-storage-daemon');
  if (opts.numQueues !== undefined && (!Number.isInteger(opts.numQueues) || opts.numQueues < 1)) {
    throw new Error(`numQueues must be an integer >= 1, got ${opts.numQueues}`);
  }
  const temp = opts.socket === undefined ? makeTempDir('vhostkit-qsd-') : null;
  const socket = opts.socket ?? (temp as TempDir).join('blk.sock');
  try {
    checkSocketPath(socket, false);
    const exportOpts = ['type=vhost-user-blk', 'id=e', 'node-name=f', 'addr.type=unix', `addr.path=${qemuOptValue(socket)}`, `writable=${opts.writable === false ? 'off' : 'on'}`];
    if (opts.numQueues !== undefined) exportOpts.push(`num-queues=${opts.numQueues}`);
    const argv = [
      exe,
      '--blockdev',
      `driver=file,node-name=f,filename=${qemuOptValue(opts.image)},cache.direct=${opts.direct ? 'on' : 'off'}` + (opts.discard ? `,discard=${opts.discard}` : ''),
      '--export',
      exportOpts.join(','),
      ...(opts.extraArgs ?? []),
    ];
    return await serveOnSocket(argv, 'qemu-storage-daemon', socket, opts.image, temp, opts);
  } catch (e) {
    temp?.cleanup();
    throw e;
  }
}

/** Starts a vhost-user server process and resolves once its socket accepts a connection. */
async function serveOnSocket(
  argv: string[],
  name: string,
  socket: string,
  image: string,
  temp: TempDir | null,
  opts: { readyTimeoutMs?: number; onLine?: LineListener; cpus?: string; wrapper?: string[] },
): Promise<StorageDaemon> {
  // taskset and the wrapper exec the program: the pid stays the server's.
  const wrapped = [...(opts.wrapper ?? []), ...argv];
  const full = opts.cpus !== undefined ? ['taskset', '-c', opts.cpus, ...wrapped] : wrapped;
  const proc = await ManagedProcess.start(full, { name, onLine: opts.onLine });
  // If Node exits with the server still running, it is SIGKILLed and leaves its socket.
  const unregisterSocket = registerExitCleanup(() => unlinkSocketIfPresent(socket));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<ExitStatus> => {
    try {
      return await proc.stop(signal, graceMs);
    } finally {
      unlinkSocketIfPresent(socket);
      unregisterSocket();
      temp?.cleanup();
    }
  };
  try {
    await proc.waitFor(async () => isSocket(socket) && (await canConnect(socket)), {
      what: `the vhost-user socket ${socket} to accept a connection`,
      timeoutMs: opts.readyTimeoutMs ?? 10_000,
      pollMs: 20,
    });
  } catch (e) {
    await stop('SIGKILL', 1000);
    throw e;
  }
  return { process: proc, pid: proc.pid as number, socket, image, stop };
}

export interface VhostkitBlkOptions {
  /** image file (or `ram`) */
  file?: string;
  /** RAM disk size (`--ram`), e.g. '64M' */
  ram?: string;
  socket?: string;
  numQueues?: number;
  threads?: number;
  serial?: string;
  readOnly?: boolean;
  direct?: boolean;
  extraArgs?: string[];
  /** Pin the process to these CPUs (`taskset -c`). */
  cpus?: string;
  /** a command that execs the rest of its arguments (test/lib/no-uring.ts) */
  wrapper?: string[];
  readyTimeoutMs?: number;
  onLine?: LineListener;
  /** the CLI entry (src/cli/main.js) to run: another build's, for an A/B (default this checkout's) */
  cli?: string;
}

/** The vhostkit CLI of this build (dist/src/cli/main.js). */
export const vhostkitCli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/**
 * Starts `vhostkit blk` (this build's CLI, in its own Node process) and resolves once its
 * socket accepts a connection, like startStorageDaemon, so both references run the same way.
 */
export async function startVhostkitBlk(opts: VhostkitBlkOptions): Promise<StorageDaemon> {
  if ((opts.file === undefined) === (opts.ram === undefined)) throw new Error('startVhostkitBlk: one of file or ram');
  const temp = opts.socket === undefined ? makeTempDir('vhostkit-blk-') : null;
  const socket = opts.socket ?? (temp as TempDir).join('blk.sock');
  try {
    checkSocketPath(socket, false);
    const argv = [process.execPath, opts.cli ?? vhostkitCli, 'blk', '--socket', socket];
    if (opts.file !== undefined) argv.push('--file', opts.file);
    if (opts.ram !== undefined) argv.push('--ram', opts.ram);
    if (opts.numQueues !== undefined) argv.push('--num-queues', String(opts.numQueues));
    if (opts.threads !== undefined) argv.push('--threads', String(opts.threads));
    if (opts.serial !== undefined) argv.push('--serial', opts.serial);
    if (opts.readOnly) argv.push('--read-only');
    if (opts.direct) argv.push('--direct');
    argv.push(...(opts.extraArgs ?? []));
    return await serveOnSocket(argv, 'vhostkit-blk', socket, opts.file ?? `ram:${opts.ram}`, temp, opts);
  } catch (e) {
    temp?.cleanup();
    throw e;
  }
}

// ---------------------------------------------------------------------------
// testpmd statistics
// ---------------------------------------------------------------------------

/** One port's block of the periodic statistics ("NIC statistics for port N"). */
export interface TestpmdPortStats {
  port: number;
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  /** "Throughput (since last show)". */
  rxPps: number;
  rxBps: number;
  txPps: number;
  txBps: number;
  /** Every "Key: number" pair of the block, by testpmd's own key ("RX-packets", "Rx-pps"...). */
  raw: Record<string, number>;
  /** Index of the "Port statistics" print this block belongs to (0 = the first). */
  seq: number;
  /** Date.now() when the block was parsed. */
  at: number;
}

/** The latest statistics of every port seen so far. */
export interface TestpmdStatsSnapshot {
  /** Index of the latest "Port statistics" print. */
  seq: number;
  at: number;
  /** By port id. */
  ports: Record<number, TestpmdPortStats>;
}

/** A "Forward statistics" block printed when forwarding stops (per port, or accumulated). */
export interface TestpmdForwardStats {
  /** Port id, or 'all' for the "Accumulated forward statistics for all ports" block. */
  port: number | 'all';
  rxPackets: number;
  rxDropped: number;
  rxTotal: number;
  txPackets: number;
  txDropped: number;
  txTotal: number;
  raw: Record<string, number>;
}

/** The statistics testpmd prints when it stops forwarding (on SIGINT/SIGTERM). */
export interface TestpmdFinalStats {
  ports: Record<number, TestpmdForwardStats>;
  accumulated: TestpmdForwardStats | null;
}

// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;?]*[A-Za-z]/g;
const PAIR_RE = /([A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*):\s*(-?\d+)/g;

function pairs(line: string, into: Record<string, number>): void {
  for (const m of line.matchAll(PAIR_RE)) into[m[1]] = Number(m[2]);
}

type ParserState = { kind: 'idle' } | { kind: 'nic'; port: number; raw: Record<string, number> } | { kind: 'fwd'; port: number | 'all'; raw: Record<string, number> } | { kind: 'skip' };

/**
 * Incremental parser of testpmd output: feed it every line (in order). Lines that are not
 * part of a statistics block (log lines of other threads, VHOST_CONFIG...) are ignored, also
 * in the middle of a block; ANSI escapes (testpmd clears the screen before each print) are
 * stripped.
 *
 * Periodic block (`--stats-period`):
 * ```
 * Port statistics ====================================
 *   ######################## NIC statistics for port 0  ########################
 *   RX-packets: 0          RX-missed: 0          RX-bytes:  0
 *   RX-errors: 0
 *   RX-nombuf:  0
 *   TX-packets: 0          TX-errors: 0          TX-bytes:  0
 *
 *   Throughput (since last show)
 *   Rx-pps:            0          Rx-bps:            0
 *   Tx-pps:            0          Tx-bps:            0
 *   ############################################################################
 * ```
 * On exit:
 * ```
 *   ---------------------- Forward statistics for port 0  ----------------------
 *   RX-packets: 0              RX-dropped: 0             RX-total: 0
 *   TX-packets: 18240064       TX-dropped: 106656        TX-total: 18346720
 *   ----------------------------------------------------------------------------
 *
 *   +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
 *   RX-packets: 0              RX-dropped: 0             RX-total: 0
 *   TX-packets: 18240064       TX-dropped: 106656        TX-total: 18346720
 *   ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
 * ```
 */
export class TestpmdStatsParser {
  private state: ParserState = { kind: 'idle' };
  private printSeq = -1;
  private snapshot: TestpmdStatsSnapshot | null = null;
  private readonly final: TestpmdFinalStats = { ports: {}, accumulated: null };
  private sawFinal = false;

  /** Feeds one line; returns what it completed, if anything. */
  push(rawLine: string): TestpmdPortStats | TestpmdForwardStats | null {
    const line = rawLine.replace(ANSI_RE, '');
    let completed: TestpmdPortStats | TestpmdForwardStats | null = null;

    if (/Port statistics =+/.test(line)) {
      this.printSeq++;
      this.state = { kind: 'idle' };
      return null;
    }
    let m = /NIC statistics for port (\d+)/.exec(line);
    if (m) {
      this.state = { kind: 'nic', port: Number(m[1]), raw: {} };
      return null;
    }
    m = /Forward statistics for port (\d+)/.exec(line);
    if (m) {
      this.state = { kind: 'fwd', port: Number(m[1]), raw: {} };
      return null;
    }
    if (/Accumulated forward statistics for all ports/.test(line)) {
      this.state = { kind: 'fwd', port: 'all', raw: {} };
      return null;
    }
    if (/Forward Stats for RX Port=/.test(line)) {
      // Per-stream block (several queues per port): no end border, not kept.
      this.state = { kind: 'skip' };
      return null;
    }

    const st = this.state;
    if (st.kind === 'nic') {
      if (/^\s*#{10,}\s*$/.test(line)) {
        completed = this.finishNic(st.port, st.raw);
        this.state = { kind: 'idle' };
      } else {
        pairs(line, st.raw);
      }
    } else if (st.kind === 'fwd') {
      if (/^\s*(-{10,}|\+{10,})\s*$/.test(line)) {
        completed = this.finishFwd(st.port, st.raw);
        this.state = { kind: 'idle' };
      } else {
        pairs(line, st.raw);
      }
    }
    return completed;
  }

  /** Feeds many lines (or a whole text). */
  pushAll(text: string | readonly string[]): void {
    for (const l of typeof text === 'string' ? text.split('\n') : text) this.push(l);
  }

  /** The latest periodic statistics, or null before the first complete port block. */
  latest(): TestpmdStatsSnapshot | null {
    return this.snapshot;
  }

  /** The exit statistics, or null if none were printed (yet). */
  finalStats(): TestpmdFinalStats | null {
    return this.sawFinal ? this.final : null;
  }

  private finishNic(port: number, raw: Record<string, number>): TestpmdPortStats {
    const g = (k: string): number => raw[k] ?? 0;
    const at = Date.now();
    const seq = Math.max(this.printSeq, 0);
    const stats: TestpmdPortStats = {
      port,
      rxPackets: g('RX-packets'),
      rxMissed: g('RX-missed'),
      rxBytes: g('RX-bytes'),
      rxErrors: g('RX-errors'),
      rxNombuf: g('RX-nombuf'),
      txPackets: g('TX-packets'),
      txErrors: g('TX-errors'),
      txBytes: g('TX-bytes'),
      rxPps: g('Rx-pps'),
      rxBps: g('Rx-bps'),
      txPps: g('Tx-pps'),
      txBps: g('Tx-bps'),
      raw,
      seq,
      at,
    };
    this.snapshot = { seq, at, ports: { ...(this.snapshot?.ports ?? {}), [port]: stats } };
    return stats;
  }

  private finishFwd(port: number | 'all', raw: Record<string, number>): TestpmdForwardStats {
    const g = (k: string): number => raw[k] ?? 0;
    const stats: TestpmdForwardStats = {
      port,
      rxPackets: g('RX-packets'),
      rxDropped: g('RX-dropped'),
      rxTotal: g('RX-total'),
      txPackets: g('TX-packets'),
      txDropped: g('TX-dropped'),
      txTotal: g('TX-total'),
      raw,
    };
    this.sawFinal = true;
    if (port === 'all') this.final.accumulated = stats;
    else this.final.ports[port] = stats;
    return stats;
  }
}

// ---------------------------------------------------------------------------
// dpdk-testpmd
// ---------------------------------------------------------------------------

export type TestpmdRole = 'vhost' | 'virtio-user';

export interface TestpmdOptions {
  /** 'vhost': net_vhost0, a vhost-user backend. 'virtio-user': net_virtio_user0, a frontend. */
  role: TestpmdRole;
  /** vhost-user socket path. Default: `<instance temp dir>/vhost-user.sock`. */
  socket?: string;
  /** `--forward-mode=` (io, rxonly, txonly, macswap...). Default 'io'. */
  forwardMode?: string;
  /** `--txpkts=N` (packet length for txonly). */
  txpkts?: number;
  /** `--port-topology=` (paired is testpmd's default and is then not passed). */
  portTopology?: 'paired' | 'chained' | 'loop';
  /** CPU both lcores are pinned to (`--lcores 0@CPU,1@CPU`). Default 0. */
  cpu?: number;
  /** `-m` in MiB. Default 512. */
  memMb?: number;
  /** `queues=` of the vdev. Default 1. */
  queues?: number;
  /** virtio-user: `queue_size=`. Default 1024. */
  queueSize?: number;
  /** virtio-user: `packed_vq=1` (offer the packed ring). */
  packed?: boolean;
  /** virtio-user: `mac=` of the port (its source MAC in txonly). */
  mac?: string;
  /** vhost: `client=1`, connect to a listening frontend instead of creating the socket. */
  client?: boolean;
  /** virtio-user: `server=1`, create the socket and wait for a vhost client. */
  server?: boolean;
  /** `--total-num-mbufs=`. Default 16384. */
  totalNumMbufs?: number;
  /** `--stats-period=` in seconds. Default 1; 0 leaves it out (no periodic statistics). */
  statsPeriod?: number;
  /** Extra EAL arguments, inserted before `--`. */
  extraEalArgs?: string[];
  /** Extra testpmd arguments, appended at the end. */
  extraArgs?: string[];
  /** Run under `stdbuf -oL -eL` (default true when stdbuf exists): see the notes at the top. */
  lineBuffered?: boolean;
  /** Default 20 s. */
  readyTimeoutMs?: number;
  onLine?: LineListener;
}

export interface TestpmdStopResult extends ExitStatus {
  /** Exit statistics ("Forward statistics"), or null if testpmd printed none (e.g. SIGKILLed). */
  final: TestpmdFinalStats | null;
  /** The last periodic statistics seen. */
  lastStats: TestpmdStatsSnapshot | null;
}

/** A running dpdk-testpmd. */
export interface Testpmd {
  readonly process: ManagedProcess;
  readonly pid: number;
  readonly role: TestpmdRole;
  readonly socket: string;
  /** True when this testpmd creates the socket (vhost without client, virtio-user with server). */
  readonly ownsSocket: boolean;
  /** Its `--file-prefix`. */
  readonly filePrefix: string;
  /** Its DPDK runtime directory (/var/run/dpdk/<prefix> as root), removed by stop(). */
  readonly runtimeDir: string;
  /** Per-instance temp dir (cwd of testpmd, default socket location), removed by stop(). */
  readonly tempDir: TempDir;
  /** The latest periodic statistics, or null before the first block. */
  latestStats(): TestpmdStatsSnapshot | null;
  /**
   * Resolves with the first snapshot (the current one included) for which `pred` is true.
   * Rejects if testpmd exits first or after timeoutMs, with the log tail in the message.
   */
  waitForStats(pred: (s: TestpmdStatsSnapshot) => boolean, timeoutMs: number): Promise<TestpmdStatsSnapshot>;
  /**
   * Resolves once forwarding has started (a complete port statistics block was printed).
   * startTestpmd already waits for this except for virtio-user with server=1, which starts
   * forwarding only after the vhost side connected.
   */
  waitForwarding(timeoutMs: number): Promise<TestpmdStatsSnapshot>;
  /** Exit statistics parsed so far (available after stop()). */
  finalStats(): TestpmdFinalStats | null;
  /**
   * Sends SIGTERM (or SIGINT), escalating to SIGKILL after graceMs; parses the exit
   * statistics; removes the runtime dir, the temp dir, and the socket if this testpmd owns it.
   */
  stop(signal?: 'SIGTERM' | 'SIGINT', graceMs?: number): Promise<TestpmdStopResult>;
}

let filePrefixCounter = 0;

/** Where EAL puts its runtime files for `prefix` (eal_get_runtime_dir in DPDK). */
export function dpdkRuntimeDir(prefix: string): string {
  const base = process.getuid?.() === 0 ? '/var/run' : (process.env.XDG_RUNTIME_DIR ?? '/tmp');
  return join(base, 'dpdk', prefix);
}

const FORWARDING_TIMEOUT_DEFAULT = 20_000;
const NO_PORT_RE = /testpmd: No probed ethernet devices/;

/**
 * Builds the argv of startTestpmd (exported for documentation and tests). See startTestpmd.
 */
export function testpmdArgv(opts: TestpmdOptions, resolved: { exe: string; socket: string; filePrefix: string; stdbuf: string | null }): string[] {
  const cpu = opts.cpu ?? 0;
  if (!Number.isInteger(cpu) || cpu < 0) throw new Error(`cpu must be an integer >= 0, got ${cpu}`);
  const queues = opts.queues ?? 1;
  let vdev: string;
  if (opts.role === 'vhost') {
    if (opts.server || opts.packed || opts.queueSize !== undefined) {
      throw new Error('server, packed and queueSize are virtio-user options (role "virtio-user")');
    }
    vdev = `net_vhost0,iface=${resolved.socket},queues=${queues}${opts.client ? ',client=1' : ''}`;
  } else if (opts.role === 'virtio-user') {
    if (opts.client) throw new Error('client is a vhost option (role "vhost"); virtio-user connects by default');
    vdev =
      `net_virtio_user0,path=${resolved.socket},queues=${queues},queue_size=${opts.queueSize ?? 1024}` +
      `${opts.packed ? ',packed_vq=1' : ''}${opts.server ? ',server=1' : ''}${opts.mac ? `,mac=${opts.mac}` : ''}`;
  } else {
    throw new Error(`unknown testpmd role ${String((opts as { role: unknown }).role)}`);
  }
  const app = [`--forward-mode=${opts.forwardMode ?? 'io'}`];
  if (opts.txpkts !== undefined) app.push(`--txpkts=${opts.txpkts}`);
  if (opts.portTopology !== undefined && opts.portTopology !== 'paired') app.push(`--port-topology=${opts.portTopology}`);
  const period = opts.statsPeriod ?? 1;
  if (period > 0) app.push(`--stats-period=${period}`);
  app.push(`--total-num-mbufs=${opts.totalNumMbufs ?? 16384}`, '--nb-cores=1');
  return [
    ...(resolved.stdbuf ? [resolved.stdbuf, '-oL', '-eL'] : []),
    resolved.exe,
    '--no-huge',
    '-m',
    String(opts.memMb ?? 512),
    '--no-pci',
    '--file-prefix',
    resolved.filePrefix,
    '--lcores',
    `0@${cpu},1@${cpu}`,
    '--vdev',
    vdev,
    ...(opts.extraEalArgs ?? []),
    '--',
    ...app,
    ...(opts.extraArgs ?? []),
  ];
}

/**
 * Starts dpdk-testpmd as a vhost-user backend or a virtio-user frontend. Runs exactly
 * (defaults shown; PREFIX is `vhostkit-<node pid>-<n>`, unique per instance):
 *
 * ```
 * stdbuf -oL -eL dpdk-testpmd --no-huge -m 512 --no-pci --file-prefix PREFIX \
 *   --lcores 0@CPU,1@CPU \
 *   --vdev net_vhost0,iface=SOCK,queues=1[,client=1]                                  # role 'vhost'
 *   --vdev net_virtio_user0,path=SOCK,queues=1,queue_size=1024[,packed_vq=1][,server=1]  # role 'virtio-user'
 *   [EXTRA_EAL...] -- --forward-mode=MODE [--txpkts=N] [--port-topology=loop] \
 *   --stats-period=1 --total-num-mbufs=16384 --nb-cores=1 [EXTRA...]
 * ```
 *
 * with cwd = the instance's temp dir and stdin an open pipe. Resolves when ready:
 * - vhost (server): forwarding started (first complete "NIC statistics for port 0" block)
 *   and SOCK exists, so a frontend can connect;
 * - vhost with client=1, virtio-user (client): forwarding started. A virtio-user client
 *   needs SOCK to be listening already;
 * - virtio-user with server=1: SOCK exists ("waiting for client connection..."); call
 *   `waitForwarding()` after the vhost side connected.
 * Rejects (and stops the process) if testpmd prints "testpmd: No probed ethernet devices",
 * exits, or is not ready within readyTimeoutMs.
 */
export async function startTestpmd(opts: TestpmdOptions): Promise<Testpmd> {
  const exe = requirePeer('dpdk-testpmd');
  const stdbuf = opts.lineBuffered === false ? null : whichOrNull('stdbuf');
  const tempDir = makeTempDir('vhostkit-tpmd-');
  const socket = opts.socket ?? tempDir.join('vhost-user.sock');
  const filePrefix = `vhostkit-${process.pid}-${++filePrefixCounter}`;
  const runtimeDir = dpdkRuntimeDir(filePrefix);
  const ownsSocket = (opts.role === 'vhost' && !opts.client) || (opts.role === 'virtio-user' && !!opts.server);
  const removeRuntimeDir = (): void => {
    rmSync(runtimeDir, { recursive: true, force: true });
    if (ownsSocket) unlinkSocketIfPresent(socket);
  };
  const unregisterRuntimeDir = registerExitCleanup(removeRuntimeDir);

  let argv: string[];
  try {
    checkSocketPath(socket, true);
    argv = testpmdArgv(opts, { exe, socket, filePrefix, stdbuf });
  } catch (e) {
    unregisterRuntimeDir();
    tempDir.cleanup();
    throw e;
  }

  const parser = new TestpmdStatsParser();
  const userOnLine = opts.onLine;
  let noPort = false;
  const proc = new ManagedProcess(argv, {
    name: 'dpdk-testpmd',
    cwd: tempDir.path,
    onLine: (line, stream) => {
      parser.push(line);
      if (NO_PORT_RE.test(line)) noPort = true;
      userOnLine?.(line, stream);
    },
  });

  let stopping: Promise<TestpmdStopResult> | null = null;
  const stop = (signal: 'SIGTERM' | 'SIGINT' = 'SIGTERM', graceMs = 5000): Promise<TestpmdStopResult> => {
    stopping ??= (async () => {
      let st: ExitStatus;
      try {
        st = await proc.stop(signal, graceMs);
      } finally {
        removeRuntimeDir();
        unregisterRuntimeDir();
        tempDir.cleanup();
      }
      return { ...st, final: parser.finalStats(), lastStats: parser.latest() };
    })();
    return stopping;
  };

  const failIfNoPort = (): void => {
    if (noPort) {
      throw proc.error(`its vdev failed to probe ("No probed ethernet devices"); it would forward on zero ports`);
    }
  };
  const forwarding = (timeoutMs: number): Promise<TestpmdStatsSnapshot> =>
    proc.waitFor(
      () => {
        failIfNoPort();
        const s = parser.latest();
        return s && Object.keys(s.ports).length > 0 ? s : undefined;
      },
      { what: 'forwarding to start (a complete "NIC statistics for port" block)', timeoutMs, pollMs: 50 },
    );

  try {
    await proc.spawned;
    const timeoutMs = opts.readyTimeoutMs ?? FORWARDING_TIMEOUT_DEFAULT;
    if (opts.role === 'virtio-user' && opts.server) {
      await proc.waitFor(
        () => {
          failIfNoPort();
          return isSocket(socket);
        },
        { what: `the socket ${socket} to appear (virtio-user server)`, timeoutMs },
      );
    } else {
      await forwarding(timeoutMs);
      if (ownsSocket) await proc.waitForPath(socket, 2000, { socket: true });
    }
  } catch (e) {
    await stop('SIGTERM', 2000).catch(() => undefined);
    throw e;
  }

  return {
    process: proc,
    pid: proc.pid as number,
    role: opts.role,
    socket,
    ownsSocket,
    filePrefix,
    runtimeDir,
    tempDir,
    latestStats: () => parser.latest(),
    waitForStats: (pred, timeoutMs) =>
      proc.waitFor(
        () => {
          const s = parser.latest();
          return s && pred(s) ? s : undefined;
        },
        { what: 'testpmd statistics matching the predicate', timeoutMs, pollMs: 0 },
      ),
    waitForwarding: (timeoutMs) => forwarding(timeoutMs),
    finalStats: () => parser.finalStats(),
    stop,
  };
}
