// Host side of switch ports against the real kernel: a TAP device and a Linux vxlan device,
// each inside network namespaces this file creates (and deletes); the rest on loopback.
// Guest frames come from real TX chains (ring-rig.ts). Needs root (CAP_NET_ADMIN),
// /dev/net/tun and iproute2; skipped otherwise.
//
// Topology (N = this process's pid, in base 36):
//   namespace vhk-N-t:  tapA 10.77.0.1/24  (guest-facing: txToTap writes, readTap reads)
//                       tapB 10.79.0.1/24  (the kernel forwards guest frames out of it)
//                       tapC + veth d0/d1  (a TAP whose ingress is held in a tbf qdisc: EAGAIN)
//   namespace vhk-N-a:  veth va 10.99.0.1/24 fd99::1/64, vx4 (VNI 42) 10.88.0.1/24, vx6 (VNI 43) 10.89.0.1/24
//   namespace vhk-N-b:  veth vb 10.99.0.2/24 fd99::2/64, our UDP sockets on port 4789
// The test process cannot enter a namespace, so a child started with `ip netns exec vhk-N-b node`
// creates the UDP sockets there and passes them back over a Unix socket (SCM_RIGHTS): a socket
// stays in the namespace it was created in, whoever uses the fd. A TAP fd likewise keeps
// working after its interface moves to another namespace.
import { expect } from 'chai';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, readdirSync } from 'node:fs';
import {
  close,
  createTapReadBatch,
  createUdpRecvBatch,
  datagramSource,
  finishFrame,
  FINISH_BAD,
  FINISH_NO_ROOM,
  IFF,
  openTap,
  readTap,
  READ_STATS,
  ReadStat,
  readVxlanHeader,
  RECV_STATS,
  RecvStat,
  recvUdp,
  setTapOffloads,
  sockaddr,
  TAP_SLOT_1500,
  tapInfo,
  TX_STATS,
  TxStat,
  txToTap,
  txToUdp,
  udpSocket,
  vxlanHeader,
  type Tap,
  type TapReadBatch,
  type UdpRecvBatch,
} from '../../src/native/host-io.js';
import { closeFd, recvMessage, socketPair } from '../../src/native/unix-socket.js';
import { concat, Rig } from './ring-rig.js';

// ---------------------------------------------------------------------------------------
// Environment

const TAG = process.pid.toString(36);
const childEnv = { ...process.env };
delete childEnv.LD_PRELOAD; // iproute2 need not run under the sanitizer runtime

function canRun(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync('/dev/net/tun')) return 'needs /dev/net/tun';
  if (spawnSync('ip', ['-V'], { env: childEnv }).status !== 0) return 'needs iproute2 (ip)';
  return null;
}

function run(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}
const ip = (...args: string[]): string => run('ip', ...args);
const nsRun = (ns: string, ...cmd: string[]): string => ip('netns', 'exec', ns, ...cmd);
function nsDelete(ns: string): void {
  spawnSync('ip', ['netns', 'del', ns], { env: childEnv, stdio: 'ignore' });
}
function nsCreate(ns: string): void {
  nsDelete(ns);
  ip('netns', 'add', ns);
  // No IPv6 chatter (router solicitations, MLD) on the links unless a test asks for it.
  nsRun(ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.all.disable_ipv6=1');
  ip('-n', ns, 'link', 'set', 'lo', 'up');
}

/** A counter of /proc/net/snmp in a namespace, e.g. snmp(ns, 'Udp', 'InCsumErrors'). */
function snmp(ns: string, proto: string, field: string): number {
  const lines = nsRun(ns, 'cat', '/proc/net/snmp').split('\n').filter((l) => l.startsWith(`${proto}:`));
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/);
  return Number(values[names.indexOf(field)]);
}

/** Whether ::1 can be bound (IPv6 may be disabled on the host). */
function hasIpv6Loopback(): boolean {
  try {
    close(udpSocket({ address: '::1', port: 0 }).fd);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const openFdCount = (): number => readdirSync('/proc/self/fd').length;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// ---------------------------------------------------------------------------------------
// Frames

type Mac = readonly number[];
const GUEST_MAC: Mac = [0x52, 0x54, 0x00, 0x77, 0x00, 0x02];
const TAPA_MAC: Mac = [0x02, 0x00, 0x00, 0x77, 0x00, 0x01];
const TAPB_MAC: Mac = [0x02, 0x00, 0x00, 0x79, 0x00, 0x01];
const PEERB_MAC: Mac = [0x02, 0x00, 0x00, 0x79, 0x00, 0x02];
const VX4_MAC: Mac = [0x02, 0x00, 0x00, 0x88, 0x00, 0x01];
const VX6_MAC: Mac = [0x02, 0x00, 0x00, 0x89, 0x00, 0x01];
const BCAST: Mac = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const macText = (m: Mac): string => m.map((b) => b.toString(16).padStart(2, '0')).join(':');
const ip4 = (s: string): number[] => s.split('.').map(Number);

/** Ones' complement sum of 16-bit big-endian words, folded, not complemented. */
function sum16(b: Uint8Array, acc = 0): number {
  for (let i = 0; i < b.length; i += 2) acc += (b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0);
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}
const put16 = (b: Uint8Array, at: number, v: number): void => {
  b[at] = (v >> 8) & 0xff;
  b[at + 1] = v & 0xff;
};
const get16 = (b: Uint8Array, at: number): number => (b[at] << 8) | b[at + 1];

function eth(dst: Mac, src: Mac, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(dst, 0);
  f.set(src, 6);
  put16(f, 12, type);
  f.set(payload, 14);
  return f;
}

/** The frame with an 802.1Q tag (TCI) after its MACs. */
function tagged(frame: Uint8Array, tci: number): Uint8Array {
  return concat([frame.subarray(0, 12), Uint8Array.of(0x81, 0x00, tci >> 8, tci & 0xff), frame.subarray(12)]);
}

function arp(op: number, sha: Mac, spa: string, tha: Mac, tpa: string): Uint8Array {
  return Uint8Array.from([0, 1, 8, 0, 6, 4, 0, op, ...sha, ...ip4(spa), ...tha, ...ip4(tpa)]);
}

function ipv4(src: string, dst: string, proto: number, payload: Uint8Array, id = 1): Uint8Array {
  const h = new Uint8Array(20);
  h[0] = 0x45;
  put16(h, 2, 20 + payload.length);
  put16(h, 4, id);
  h[6] = 0x40; // DF
  h[8] = 64;
  h[9] = proto;
  h.set(ip4(src), 12);
  h.set(ip4(dst), 16);
  put16(h, 10, ~sum16(h) & 0xffff);
  return concat([h, payload]);
}

function pseudo4(src: string, dst: string, proto: number, len: number): number {
  const p = new Uint8Array(12);
  p.set(ip4(src), 0);
  p.set(ip4(dst), 4);
  p[9] = proto;
  put16(p, 10, len);
  return sum16(p);
}

/**
 * 'full': a complete checksum; 'partial': the pseudo-header sum only, as a driver leaves it
 * for NEEDS_CSUM (virtio 1.2 §5.1.6.2); 'wrong': a complete checksum, off by one.
 */
type CsumMode = 'full' | 'partial' | 'wrong';

function l4(seg: Uint8Array, at: number, src: string, dst: string, proto: number, mode: CsumMode): Uint8Array {
  const ph = pseudo4(src, dst, proto, seg.length);
  if (mode === 'partial') {
    put16(seg, at, ph);
  } else {
    put16(seg, at, 0);
    let c = ~sum16(seg, ph) & 0xffff;
    if (c === 0) c = 0xffff;
    put16(seg, at, mode === 'wrong' ? c ^ 1 : c);
  }
  return seg;
}

function udp(src: string, dst: string, sport: number, dport: number, data: Uint8Array, mode: CsumMode): Uint8Array {
  const u = new Uint8Array(8 + data.length);
  put16(u, 0, sport);
  put16(u, 2, dport);
  put16(u, 4, u.length);
  u.set(data, 8);
  return ipv4(src, dst, 17, l4(u, 6, src, dst, 17, mode));
}

function tcp(src: string, dst: string, sport: number, dport: number, seq: number, data: Uint8Array, mode: CsumMode): Uint8Array {
  const t = new Uint8Array(20 + data.length);
  put16(t, 0, sport);
  put16(t, 2, dport);
  new DataView(t.buffer).setUint32(4, seq);
  new DataView(t.buffer).setUint32(8, 1);
  t[12] = 5 << 4;
  t[13] = 0x18; // PSH ACK
  put16(t, 14, 65535);
  t.set(data, 20);
  return ipv4(src, dst, 6, l4(t, 16, src, dst, 6, mode));
}

function icmpEcho(id: number, seq: number, data: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  m[0] = 8;
  put16(m, 4, id);
  put16(m, 6, seq);
  m.set(data, 8);
  put16(m, 2, ~sum16(m) & 0xffff);
  return m;
}

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + (i >> 7)) & 0xff);
}

interface Parsed {
  dst: number[];
  src: number[];
  type: number;
  payload: Uint8Array;
}
function parseEth(f: Uint8Array): Parsed {
  return { dst: Array.from(f.subarray(0, 6)), src: Array.from(f.subarray(6, 12)), type: get16(f, 12), payload: f.subarray(14) };
}
interface Ip4 {
  src: string;
  dst: string;
  proto: number;
  id: number;
  payload: Uint8Array;
  hdrOk: boolean;
}
function parseIp4(p: Uint8Array): Ip4 {
  const ihl = (p[0] & 15) * 4;
  return {
    src: Array.from(p.subarray(12, 16)).join('.'),
    dst: Array.from(p.subarray(16, 20)).join('.'),
    proto: p[9],
    id: get16(p, 4),
    payload: p.subarray(ihl, get16(p, 2)),
    hdrOk: sum16(p.subarray(0, ihl)) === 0xffff,
  };
}
/** Whether a TCP/UDP segment's checksum verifies. */
function l4Ok(ipPkt: Ip4): boolean {
  return sum16(ipPkt.payload, pseudo4(ipPkt.src, ipPkt.dst, ipPkt.proto, ipPkt.payload.length)) === 0xffff;
}

// ---------------------------------------------------------------------------------------
// Guest TX chains

interface VnetHdr {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}
const NEEDS_CSUM = 1;
const GSO_TCPV4 = 1;

function vnetHdr(h: VnetHdr = {}): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? 0;
  v.setUint16(2, h.hdrLen ?? 0, true);
  v.setUint16(4, h.gsoSize ?? 0, true);
  v.setUint16(6, h.csumStart ?? 0, true);
  v.setUint16(8, h.csumOffset ?? 0, true);
  return b;
}
function parseVnetHdr(b: Uint8Array): Required<VnetHdr> {
  const v = new DataView(b.buffer, b.byteOffset, 10);
  return { flags: b[0], gsoType: b[1], hdrLen: v.getUint16(2, true), gsoSize: v.getUint16(4, true), csumStart: v.getUint16(6, true), csumOffset: v.getUint16(8, true) };
}
/** The header of a NEEDS_CSUM IPv4 TCP/UDP frame (Ethernet header of `l2` bytes). */
const csumHdr = (proto: 'udp' | 'tcp', l2 = 14): VnetHdr => ({ flags: NEEDS_CSUM, csumStart: l2 + 20, csumOffset: proto === 'udp' ? 6 : 16 });

interface TxFrame {
  frame: Uint8Array;
  hdr?: VnetHdr;
  /** where to split header + frame into descriptors (offsets into the whole chain) */
  cuts?: number[];
  hdrLen?: number;
  indirect?: boolean;
}

function addTx(rig: Rig, f: TxFrame): void {
  const hdrLen = f.hdrLen ?? 12;
  const all = concat([vnetHdr(f.hdr).subarray(0, hdrLen), f.frame]);
  const points = [0, ...(f.cuts ?? []).filter((c) => c > 0 && c < all.length).sort((a, b) => a - b), all.length];
  const segs = [];
  for (let i = 0; i + 1 < points.length; i++) {
    if (points[i + 1] > points[i]) segs.push({ len: points[i + 1] - points[i], writable: false, data: all.subarray(points[i], points[i + 1]) });
  }
  rig.drv.add(segs, { indirect: f.indirect ?? false });
}

const ALL_CHAINS = Uint16Array.from({ length: 1024 }, (_, i) => i);

/** Adds the frames as TX chains, pops them, calls send(n), and completes them (push used). */
function transmit(rig: Rig, frames: TxFrame[], send: (n: number) => void): void {
  for (const f of frames) addTx(rig, f);
  rig.drv.publish();
  const n = rig.q.pop();
  expect(n, 'chains popped').to.equal(frames.length);
  send(n);
  for (let i = 0; i < n; i++) {
    rig.q.b.usedId[i] = rig.q.b.head[i];
    rig.q.b.usedLen[i] = 0;
  }
  rig.q.push(n);
  rig.drv.used();
}

// ---------------------------------------------------------------------------------------
// Reading

interface TapFrame {
  frame: Uint8Array;
  hdr: Required<VnetHdr>;
}

function drainTap(fd: number, batch: TapReadBatch, stats: Uint32Array, into: TapFrame[]): void {
  for (;;) {
    const n = readTap(fd, batch, stats);
    for (let k = 0; k < n; k++) {
      into.push({
        frame: batch.data.slice(batch.offsets[k], batch.offsets[k] + batch.lens[k]),
        hdr: parseVnetHdr(batch.hdr10.slice(10 * k, 10 * k + 10)),
      });
    }
    if (n === 0) return;
  }
}

/** Reads the TAP until `count` frames match (others are kept in `seen` for the message). */
async function tapExpect(fd: number, match: (f: TapFrame) => boolean, what: string, count = 1, ms = 3000): Promise<TapFrame[]> {
  const batch = createTapReadBatch(32);
  const stats = new Uint32Array(READ_STATS);
  const seen: TapFrame[] = [];
  const got: TapFrame[] = [];
  const end = Date.now() + ms;
  while (got.length < count) {
    const now: TapFrame[] = [];
    drainTap(fd, batch, stats, now);
    for (const f of now) (match(f) ? got : seen).push(f);
    if (got.length >= count) break;
    if (Date.now() > end) {
      throw new Error(`no ${what} within ${ms} ms (${got.length} of ${count}); other frames: ${seen.map((f) => hex(f.frame.subarray(0, 60))).join(', ') || 'none'}`);
    }
    await sleep(5);
  }
  return got;
}

/** Every frame the TAP gives within `ms`. */
async function tapCollect(fd: number, ms: number): Promise<TapFrame[]> {
  const batch = createTapReadBatch(32);
  const stats = new Uint32Array(READ_STATS);
  const out: TapFrame[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    drainTap(fd, batch, stats, out);
    await sleep(5);
  }
  return out;
}

interface UdpFrame {
  frame: Uint8Array;
  /** the first 10 virtio_net_hdr bytes recvUdp gave the frame */
  hdr: Uint8Array;
  vni: number;
  source: { family: 4 | 6; address: string; port: number };
}

function drainUdp(fd: number, batch: UdpRecvBatch, stats: Uint32Array, into: UdpFrame[]): void {
  for (;;) {
    const before = stats[RecvStat.DATAGRAMS];
    const n = recvUdp(fd, batch, stats);
    for (let k = 0; k < n; k++) {
      into.push({ frame: batch.data.slice(batch.offsets[k], batch.offsets[k] + batch.lens[k]), hdr: batch.hdr10.slice(10 * k, 10 * k + 10), vni: batch.vni[k], source: datagramSource(batch, k) });
    }
    if (stats[RecvStat.DATAGRAMS] === before) return;
  }
}

async function udpExpect(fd: number, match: (f: UdpFrame) => boolean, what: string, ms = 3000): Promise<UdpFrame> {
  const batch = createUdpRecvBatch(16, 2048);
  const stats = new Uint32Array(RECV_STATS);
  const seen: UdpFrame[] = [];
  const end = Date.now() + ms;
  for (;;) {
    const now: UdpFrame[] = [];
    drainUdp(fd, batch, stats, now);
    const hit = now.find(match);
    if (hit) return hit;
    seen.push(...now);
    if (Date.now() > end) {
      throw new Error(`no ${what} within ${ms} ms; other datagrams: ${seen.map((f) => `vni ${f.vni} ${hex(f.frame.subarray(0, 50))}`).join(', ') || 'none'}`);
    }
    await sleep(5);
  }
}

async function udpCollect(fd: number, ms: number): Promise<UdpFrame[]> {
  const batch = createUdpRecvBatch(16, 2048);
  const stats = new Uint32Array(RECV_STATS);
  const out: UdpFrame[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    drainUdp(fd, batch, stats, out);
    await sleep(5);
  }
  return out;
}

const isArpReply = (f: Uint8Array, to: Mac, from: string): boolean => {
  const e = parseEth(f);
  return e.type === 0x0806 && e.payload[7] === 2 && Array.from(e.payload.subarray(14, 18)).join('.') === from && hex(e.payload.subarray(18, 24)) === hex(Uint8Array.from(to));
};
const isEchoReply = (f: Uint8Array, id: number): boolean => {
  const e = parseEth(f);
  if (e.type !== 0x0800) return false;
  const p = parseIp4(e.payload);
  return p.proto === 1 && p.payload[0] === 0 && get16(p.payload, 4) === id;
};
const isUdpTo = (f: Uint8Array, dport: number): boolean => {
  const e = parseEth(f);
  if (e.type !== 0x0800) return false;
  const p = parseIp4(e.payload);
  return p.proto === 17 && get16(p.payload, 2) === dport;
};
const isTcpTo = (f: Uint8Array, dport: number): boolean => {
  const e = parseEth(f);
  if (e.type !== 0x0800) return false;
  const p = parseIp4(e.payload);
  return p.proto === 6 && get16(p.payload, 2) === dport;
};
const isPortUnreachable = (f: Uint8Array, dport: number): boolean => {
  const e = parseEth(f);
  if (e.type !== 0x0800) return false;
  const p = parseIp4(e.payload);
  // ICMP type 3 code 3, quoting our IP header (20 bytes) and the first 8 bytes of our UDP header
  return p.proto === 1 && p.payload[0] === 3 && p.payload[1] === 3 && get16(p.payload, 8 + 20 + 2) === dport;
};

// ---------------------------------------------------------------------------------------
// A UDP socket inside a namespace, in a child process: prints what it receives and echoes it.

class NsListener {
  readonly lines: Array<{ from: string; port: number; hex: string }> = [];
  private readonly child: ChildProcess;
  private ready = false;
  private err = '';

  constructor(ns: string, address: string, port: number) {
    const code = `const d = require('node:dgram').createSocket('udp4');
      d.on('message', (m, r) => { process.stdout.write(JSON.stringify({ from: r.address, port: r.port, hex: m.toString('hex') }) + '\\n'); d.send(m, r.port, r.address); });
      d.bind(${port}, '${address}', () => process.stdout.write('ready\\n'));`;
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === 'ready') this.ready = true;
        else this.lines.push(JSON.parse(line) as { from: string; port: number; hex: string });
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
  }

  async started(): Promise<void> {
    const end = Date.now() + 5000;
    while (!this.ready) {
      if (Date.now() > end || this.child.exitCode !== null) throw new Error(`listener did not start: ${this.err}`);
      await sleep(10);
    }
  }

  async received(payloadHex: string, ms = 2000): Promise<boolean> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (this.lines.some((l) => l.hex === payloadHex)) return true;
      await sleep(10);
    }
    return this.lines.some((l) => l.hex === payloadHex);
  }

  stop(): void {
    this.child.kill();
  }
}

// =======================================================================================

describe('host I/O: TAP devices in a network namespace (txToTap, readTap)', function () {
  this.timeout(15000);
  const ns = `vhk-${TAG}-t`;
  let tapA: Tap;
  let tapB: Tap;
  let rig: Rig;
  let listener: NsListener | undefined;
  const stats = new Uint32Array(TX_STATS);

  before(function () {
    const why = canRun();
    // CI runs as root with /dev/net/tun and iproute2: not being able to run is a failure.
    if (why) throw new Error(`cannot run the TAP/VXLAN kernel tests: ${why}`);
    nsCreate(ns);
    nsRun(ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    tapA = openTap(`vk${TAG}A`, { offloads: true });
    tapB = openTap(`vk${TAG}B`, { offloads: false });
    for (const [t, mac, addr] of [[tapA, TAPA_MAC, '10.77.0.1/24'], [tapB, TAPB_MAC, '10.79.0.1/24']] as const) {
      ip('link', 'set', t.name, 'netns', ns);
      ip('-n', ns, 'link', 'set', t.name, 'address', macText(mac));
      ip('-n', ns, 'addr', 'add', addr, 'dev', t.name);
      ip('-n', ns, 'link', 'set', t.name, 'up');
    }
    // The guest and the host behind tapB are known: no ARP needed for them.
    ip('-n', ns, 'neigh', 'replace', '10.77.0.2', 'lladdr', macText(GUEST_MAC), 'dev', tapA.name, 'nud', 'permanent');
    ip('-n', ns, 'neigh', 'replace', '10.79.0.2', 'lladdr', macText(PEERB_MAC), 'dev', tapB.name, 'nud', 'permanent');
  });

  after(() => {
    listener?.stop();
    if (tapA) close(tapA.fd);
    if (tapB) close(tapB.fd);
    nsDelete(ns);
  });

  beforeEach(() => {
    rig = new Rig('split');
    stats.fill(0);
    drainTap(tapA.fd, createTapReadBatch(8), new Uint32Array(READ_STATS), []); // forget frames of earlier tests
    drainTap(tapB.fd, createTapReadBatch(8), new Uint32Array(READ_STATS), []);
  });
  afterEach(() => rig.close());

  it('opens TAPs with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, a 12-byte vnet header, the name asked for or one of the kernel', () => {
    const info = tapInfo(tapA.fd);
    expect(info.name).to.equal(tapA.name);
    expect(info.name).to.equal(`vk${TAG}A`);
    expect(info.vnetHdrLen).to.equal(12);
    expect(info.flags & (IFF.TAP | IFF.NO_PI | IFF.VNET_HDR | IFF.TUN)).to.equal(IFF.TAP | IFF.NO_PI | IFF.VNET_HDR);
    const anon = openTap('');
    try {
      expect(anon.name).to.match(/^tap\d+$/);
      expect(tapInfo(anon.fd).name).to.equal(anon.name);
    } finally {
      close(anon.fd);
    }
  });

  it('the kernel answers a guest ARP request: ARP reply to the guest MAC from the TAP (which moved into the namespace)', async () => {
    const req = eth(BCAST, GUEST_MAC, 0x0806, arp(1, GUEST_MAC, '10.77.0.2', [0, 0, 0, 0, 0, 0], '10.77.0.1'));
    transmit(rig, [{ frame: req, cuts: [12, 17] }], (n) => expect(txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats)).to.equal(1));
    expect(stats[TxStat.SENT]).to.equal(1);
    expect(stats[TxStat.BYTES]).to.equal(req.length);
    const [reply] = await tapExpect(tapA.fd, (f) => isArpReply(f.frame, GUEST_MAC, '10.77.0.1'), 'ARP reply');
    const e = parseEth(reply.frame);
    expect(e.dst).to.deep.equal(GUEST_MAC);
    expect(e.src).to.deep.equal(TAPA_MAC);
    expect(Array.from(e.payload.subarray(8, 14)), 'sender MAC').to.deep.equal(TAPA_MAC);
    expect(Array.from(e.payload.subarray(24, 28)), 'target IP').to.deep.equal([10, 77, 0, 2]);
    expect(reply.hdr).to.deep.equal(parseVnetHdr(new Uint8Array(10)));
  });

  it('the kernel answers a guest ICMP echo request; header and frame spread over many descriptors go out whole', async () => {
    const data = pattern(1000, 3);
    const req = eth(TAPA_MAC, GUEST_MAC, 0x0800, ipv4('10.77.0.2', '10.77.0.1', 1, icmpEcho(0x4242, 7, data)));
    // the 12-byte header in two pieces, then pieces of 1, 13, 2, ... bytes
    const cuts = [5, 12, 13, 26, 28, 40, 41, 300, 301, 777];
    transmit(rig, [{ frame: req, cuts }], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
    expect(stats[TxStat.SENT]).to.equal(1);
    const [reply] = await tapExpect(tapA.fd, (f) => isEchoReply(f.frame, 0x4242), 'ICMP echo reply');
    const e = parseEth(reply.frame);
    expect(e.dst).to.deep.equal(GUEST_MAC);
    expect(e.src).to.deep.equal(TAPA_MAC);
    const p = parseIp4(e.payload);
    expect([p.src, p.dst]).to.deep.equal(['10.77.0.1', '10.77.0.2']);
    expect(p.hdrOk).to.equal(true);
    expect(sum16(p.payload), 'ICMP checksum').to.equal(0xffff);
    expect(get16(p.payload, 6), 'sequence').to.equal(7);
    expect(hex(p.payload.subarray(8))).to.equal(hex(data));
  });

  it('a UDP datagram with a partial checksum (NEEDS_CSUM) reaches a socket in the namespace; its echo comes back NEEDS_CSUM with offloads on, checksummed with them off', async () => {
    listener = new NsListener(ns, '10.77.0.1', 7777);
    await listener.started();
    for (const offloads of [true, false]) {
      setTapOffloads(tapA.fd, offloads);
      const data = pattern(300, offloads ? 1 : 2);
      const f = eth(TAPA_MAC, GUEST_MAC, 0x0800, udp('10.77.0.2', '10.77.0.1', 5555, 7777, data, 'partial'));
      transmit(rig, [{ frame: f, hdr: csumHdr('udp'), cuts: [12, 40, 47] }], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
      expect(await listener.received(hex(data)), 'the listener got the payload').to.equal(true);
      const [echo] = await tapExpect(tapA.fd, (x) => isUdpTo(x.frame, 5555), 'the echoed datagram');
      const p = parseIp4(parseEth(echo.frame).payload);
      expect(hex(p.payload.subarray(8))).to.equal(hex(data));
      if (offloads) {
        // The kernel leaves the checksum to us (TUN_F_CSUM): pseudo-header sum only.
        expect(echo.hdr.flags & NEEDS_CSUM, 'NEEDS_CSUM').to.equal(NEEDS_CSUM);
        expect([echo.hdr.csumStart, echo.hdr.csumOffset]).to.deep.equal([34, 6]);
        expect(get16(p.payload, 6)).to.equal(pseudo4(p.src, p.dst, 17, p.payload.length));
      } else {
        expect(echo.hdr.flags).to.equal(0);
        expect(l4Ok(p), 'complete UDP checksum').to.equal(true);
      }
    }
    setTapOffloads(tapA.fd, true);
    expect(stats[TxStat.SENT]).to.equal(2);
  });

  it('with a zeroed header (passHdr false) the checksum is completed here and the kernel verifies it; a wrong one is dropped by the kernel', async () => {
    listener ??= new NsListener(ns, '10.77.0.1', 7777);
    await listener.started();
    const good = pattern(201, 4); // odd length: the last byte is padded in the sum
    const bad = pattern(64, 5);
    const errors0 = snmp(ns, 'Udp', 'InCsumErrors');
    transmit(rig, [
      // the checksum field itself split across two descriptors
      { frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, udp('10.77.0.2', '10.77.0.1', 5556, 7777, good, 'partial')), hdr: csumHdr('udp'), cuts: [12, 53, 55, 60] },
      { frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, udp('10.77.0.2', '10.77.0.1', 5557, 7777, bad, 'wrong')) },
    ], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats, { passHdr: false }));
    expect(stats[TxStat.SENT]).to.equal(2);
    expect(await listener.received(hex(good)), 'completed checksum accepted').to.equal(true);
    expect(await listener.received(hex(bad), 300), 'wrong checksum delivered').to.equal(false);
    expect(snmp(ns, 'Udp', 'InCsumErrors') - errors0, 'InCsumErrors').to.equal(1);
  });

  it('the kernel completes a partial checksum when it forwards the frame out a TAP without offloads; csum_start moves with a stripped VLAN tag', async () => {
    setTapOffloads(tapB.fd, false);
    const d1 = pattern(500, 6);
    const d2 = pattern(333, 7);
    const plain = eth(TAPA_MAC, GUEST_MAC, 0x0800, udp('10.77.0.2', '10.79.0.2', 6000, 6001, d1, 'partial'));
    const withTag = tagged(eth(TAPA_MAC, GUEST_MAC, 0x0800, udp('10.77.0.2', '10.79.0.2', 6000, 6002, d2, 'partial')), 5);
    transmit(rig, [{ frame: plain, hdr: csumHdr('udp'), cuts: [20] }], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
    transmit(rig, [{ frame: withTag, hdr: csumHdr('udp', 18) }], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats, { vlan: -2 }));
    expect(stats[TxStat.SENT]).to.equal(2);
    const outs = await tapExpect(tapB.fd, (f) => isUdpTo(f.frame, 6001) || isUdpTo(f.frame, 6002), 'the datagrams forwarded out tapB', 2);
    for (const [dport, data] of [[6001, d1], [6002, d2]] as const) {
      const out = outs.find((f) => isUdpTo(f.frame, dport))!;
      expect(out.hdr.flags, 'no offload towards tapB').to.equal(0);
      const e = parseEth(out.frame);
      expect(e.dst).to.deep.equal(PEERB_MAC);
      expect(e.type, 'untagged').to.equal(0x0800);
      const p = parseIp4(e.payload);
      expect(hex(p.payload.subarray(8))).to.equal(hex(data));
      expect(l4Ok(p), `UDP checksum completed by the kernel (port ${dport})`).to.equal(true);
    }
  });

  it('a TSO frame (GSO_TCPV4) is segmented by the kernel towards a TAP without offloads and passed whole to a TAP with them', async () => {
    const data = pattern(3000, 8);
    const mk = (dport: number): TxFrame => ({
      frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, tcp('10.77.0.2', '10.79.0.2', 40000, dport, 1000, data, 'partial')),
      hdr: { ...csumHdr('tcp'), gsoType: GSO_TCPV4, gsoSize: 1000, hdrLen: 54 },
      cuts: [12, 66, 1066, 2066],
    });
    setTapOffloads(tapB.fd, false);
    transmit(rig, [mk(7001)], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
    const segs = await tapExpect(tapB.fd, (f) => isTcpTo(f.frame, 7001), 'TCP segments', 3);
    const joined: Uint8Array[] = [];
    for (const s of segs) {
      expect(s.frame.length).to.be.at.most(1514);
      const p = parseIp4(parseEth(s.frame).payload);
      expect(p.hdrOk).to.equal(true);
      expect(l4Ok(p), 'TCP checksum of a segment').to.equal(true);
      joined.push(p.payload.subarray(20));
    }
    expect(hex(concat(joined))).to.equal(hex(data));

    setTapOffloads(tapB.fd, true);
    transmit(rig, [mk(7002)], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
    const [whole] = await tapExpect(tapB.fd, (f) => isTcpTo(f.frame, 7002), 'the TSO frame');
    expect(whole.frame.length).to.equal(14 + 20 + 20 + 3000);
    expect(whole.hdr.gsoType).to.equal(GSO_TCPV4);
    expect(whole.hdr.gsoSize).to.equal(1000);
    expect(whole.hdr.flags & NEEDS_CSUM).to.equal(NEEDS_CSUM);
    setTapOffloads(tapB.fd, false);
    expect(stats[TxStat.SENT]).to.equal(2);
  });

  it('GSO frames given a zeroed header are counted NEEDS_SEGMENTATION and not written; bad chains are counted BAD / TOO_BIG', async () => {
    const gso: TxFrame = {
      frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, tcp('10.77.0.2', '10.79.0.2', 40000, 7003, 1, pattern(3000, 9), 'partial')),
      hdr: { ...csumHdr('tcp'), gsoType: GSO_TCPV4, gsoSize: 1000, hdrLen: 54 },
    };
    const tooShort: TxFrame = { frame: new Uint8Array(13) };
    const tooBig: TxFrame = { frame: new Uint8Array(65536 + 257) };
    const badCsum: TxFrame = { frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, new Uint8Array(40)), hdr: { flags: NEEDS_CSUM, csumStart: 50, csumOffset: 6 } };
    transmit(rig, [gso, tooShort, tooBig, badCsum], (n) => expect(txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats, { passHdr: false })).to.equal(0));
    expect(Array.from(stats)).to.deep.equal([0, 0, 0, 0, 2, 1, 1, 0]);
    expect((await tapCollect(tapB.fd, 200)).filter((f) => isTcpTo(f.frame, 7003))).to.have.length(0);
  });

  it('VLAN strip: a tagged echo request reaches the kernel untagged and is answered; without the strip it is ignored', async () => {
    const req = (id: number): Uint8Array => tagged(eth(TAPA_MAC, GUEST_MAC, 0x0800, ipv4('10.77.0.2', '10.77.0.1', 1, icmpEcho(id, 1, pattern(56, id)))), 0x2005);
    transmit(rig, [{ frame: req(0x51), cuts: [12, 24, 26, 30] }], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats, { vlan: -2 }));
    transmit(rig, [{ frame: req(0x52) }], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
    expect(stats[TxStat.SENT]).to.equal(2);
    expect(stats[TxStat.BYTES]).to.equal(2 * req(0).length - 4);
    await tapExpect(tapA.fd, (f) => isEchoReply(f.frame, 0x51), 'echo reply to the stripped request');
    expect((await tapCollect(tapA.fd, 200)).filter((f) => isEchoReply(f.frame, 0x52)), 'a reply to the tagged request').to.have.length(0);
  });

  it('readTap records each frame once, back to back, and drops a frame that fills the room left as TRUNCATED', async () => {
    const big = pattern(1200, 10);
    transmit(rig, [
      { frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, ipv4('10.77.0.2', '10.77.0.1', 1, icmpEcho(0x61, 1, pattern(20, 1)))) },
      { frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, ipv4('10.77.0.2', '10.77.0.1', 1, icmpEcho(0x62, 2, big))) },
      { frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, ipv4('10.77.0.2', '10.77.0.1', 1, icmpEcho(0x63, 3, pattern(20, 3)))) },
    ], (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
    await sleep(100);
    // room for 62-byte replies (+12) but not for the 1262-byte one: the kernel copies 126
    // bytes of it and says 126 (Linux 6.x) or the full size (older): cut short either way
    const batch = createTapReadBatch(8, 100, 200);
    const rs = new Uint32Array(READ_STATS);
    const frames: TapFrame[] = [];
    drainTap(tapA.fd, batch, rs, frames);
    const ids = frames.filter((f) => isEchoReply(f.frame, 0x61) || isEchoReply(f.frame, 0x63)).map((f) => get16(parseIp4(parseEth(f.frame).payload).payload, 4));
    expect(ids).to.deep.equal([0x61, 0x63]);
    expect(frames.some((f) => isEchoReply(f.frame, 0x62))).to.equal(false);
    expect(rs[ReadStat.TRUNCATED]).to.equal(1);
    expect(rs[ReadStat.FRAMES]).to.equal(frames.length);
    // the first read of a batch starts at offset 12, the next right after the previous frame
    const again = createTapReadBatch(8, TAP_SLOT_1500);
    transmit(rig, [0x64, 0x65].map((id) => ({ frame: eth(TAPA_MAC, GUEST_MAC, 0x0800, ipv4('10.77.0.2', '10.77.0.1', 1, icmpEcho(id, 1, pattern(30, id)))) })), (n) => txToTap(tapA.fd, rig.q, ALL_CHAINS, n, stats));
    await sleep(100);
    const n = readTap(tapA.fd, again, rs);
    expect(n).to.be.at.least(2);
    expect(again.offsets[0]).to.equal(12);
    for (let k = 1; k < n; k++) expect(again.offsets[k]).to.equal(again.offsets[k - 1] + again.lens[k - 1] + 12);
  });

  describe('a full TAP queue (TUNSETSNDBUF and a tbf qdisc holding the frames the TAP took)', () => {
    let tapC: Tap;
    before(() => {
      tapC = openTap(`vk${TAG}C`, { sndBuf: 20000 });
      ip('link', 'set', tapC.name, 'netns', ns);
      ip('-n', ns, 'link', 'set', tapC.name, 'up');
      ip('-n', ns, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
      ip('-n', ns, 'link', 'set', 'd0', 'up');
      ip('-n', ns, 'link', 'set', 'd1', 'up');
      // 8 kbit/s out of d0, a deep queue: what tapC takes stays charged to its sndbuf.
      run('tc', '-n', ns, 'qdisc', 'add', 'dev', 'd0', 'root', 'tbf', 'rate', '8kbit', 'burst', '1600', 'limit', '1000000');
      run('tc', '-n', ns, 'qdisc', 'add', 'dev', tapC.name, 'handle', 'ffff:', 'ingress');
      run('tc', '-n', ns, 'filter', 'add', 'dev', tapC.name, 'parent', 'ffff:', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', 'd0');
    });
    after(() => {
      if (tapC) close(tapC.fd);
    });

    it('EAGAIN drops the frame and the rest of its burst, counted, and never blocks', () => {
      const frames = Array.from({ length: 32 }, (_, i) => ({ frame: eth(BCAST, GUEST_MAC, 0x88b5, pattern(1000, i)) }));
      const t0 = process.hrtime.bigint();
      transmit(rig, frames, (n) => txToTap(tapC.fd, rig.q, ALL_CHAINS, n, stats));
      transmit(rig, frames, (n) => txToTap(tapC.fd, rig.q, ALL_CHAINS, n, stats));
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      expect(stats[TxStat.SENT], 'some frames fit').to.be.at.least(1);
      expect(stats[TxStat.SENT], 'sndbuf bounds what is taken').to.be.below(32);
      expect(stats[TxStat.DROPPED]).to.equal(64 - stats[TxStat.SENT]);
      expect(stats[TxStat.ERRORS]).to.equal(0);
      expect(ms, 'two bursts into a full queue').to.be.below(1000);
    });
  });
});

// =======================================================================================

describe('host I/O: VXLAN to a Linux vxlan device in another namespace (txToUdp, recvUdp)', function () {
  this.timeout(15000);
  const nsA = `vhk-${TAG}-a`;
  const nsB = `vhk-${TAG}-b`;
  let s4 = -1;
  let s6 = -1;
  let rig: Rig;
  const stats = new Uint32Array(TX_STATS);
  const to4 = (): Uint8Array => sockaddr('10.99.0.1', 4789);
  const to6 = (): Uint8Array => sockaddr('fd99::1', 4789);

  before(function () {
    const why = canRun();
    // CI runs as root with /dev/net/tun and iproute2: not being able to run is a failure.
    if (why) throw new Error(`cannot run the TAP/VXLAN kernel tests: ${why}`);
    nsCreate(nsA);
    nsCreate(nsB);
    for (const ns of [nsA, nsB]) nsRun(ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=0', 'net.ipv6.conf.all.disable_ipv6=0');
    ip('-n', nsA, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', nsB);
    ip('-n', nsA, 'addr', 'add', '10.99.0.1/24', 'dev', 'va');
    ip('-n', nsA, 'addr', 'add', 'fd99::1/64', 'dev', 'va', 'nodad');
    ip('-n', nsB, 'addr', 'add', '10.99.0.2/24', 'dev', 'vb');
    ip('-n', nsB, 'addr', 'add', 'fd99::2/64', 'dev', 'vb', 'nodad');
    ip('-n', nsA, 'link', 'set', 'va', 'up');
    ip('-n', nsB, 'link', 'set', 'vb', 'up');
    ip('-n', nsA, 'link', 'add', 'vx4', 'address', macText(VX4_MAC), 'type', 'vxlan', 'id', '42', 'local', '10.99.0.1', 'remote', '10.99.0.2', 'dstport', '4789', 'dev', 'va');
    ip('-n', nsA, 'link', 'add', 'vx6', 'address', macText(VX6_MAC), 'type', 'vxlan', 'id', '43', 'local', 'fd99::1', 'remote', 'fd99::2', 'dstport', '4789', 'dev', 'va');
    ip('-n', nsA, 'addr', 'add', '10.88.0.1/24', 'dev', 'vx4');
    ip('-n', nsA, 'addr', 'add', '10.89.0.1/24', 'dev', 'vx6');
    ip('-n', nsA, 'link', 'set', 'vx4', 'up');
    ip('-n', nsA, 'link', 'set', 'vx6', 'up');
    ip('-n', nsA, 'neigh', 'replace', '10.88.0.2', 'lladdr', macText(GUEST_MAC), 'dev', 'vx4', 'nud', 'permanent');
    ip('-n', nsA, 'neigh', 'replace', '10.89.0.2', 'lladdr', macText(GUEST_MAC), 'dev', 'vx6', 'nud', 'permanent');

    // Our VXLAN endpoint's sockets, created inside nsB by a child and handed back.
    const [mine, theirs] = socketPair();
    try {
      const hostIo = new URL('../../src/native/host-io.js', import.meta.url).href;
      const unix = new URL('../../src/native/unix-socket.js', import.meta.url).href;
      const code = `import { udpSocket } from '${hostIo}'; import { sendMessage } from '${unix}';
        const a = udpSocket({ address: '10.99.0.2', port: 4789 });
        const b = udpSocket({ address: 'fd99::2', port: 4789, v6Only: true });
        if (sendMessage(3, Uint8Array.of(1), [a.fd, b.fd]) !== 1) process.exit(3);`;
      const r = spawnSync('ip', ['netns', 'exec', nsB, process.execPath, '--input-type=module', '-e', code], { env: process.env, stdio: ['ignore', 'pipe', 'pipe', theirs], timeout: 10000 });
      if (r.status !== 0) throw new Error(`the endpoint child failed (${r.status}): ${r.stderr.toString()}`);
      const msg = recvMessage(mine, new Uint8Array(8), 2);
      if (msg === null || msg.fds.length !== 2) throw new Error('the endpoint child sent no sockets');
      [s4, s6] = msg.fds;
    } finally {
      closeFd(mine);
      closeFd(theirs);
    }
  });

  after(() => {
    if (s4 >= 0) close(s4);
    if (s6 >= 0) close(s6);
    nsDelete(nsA);
    nsDelete(nsB);
  });

  beforeEach(() => {
    rig = new Rig('packed');
    stats.fill(0);
    drainUdp(s4, createUdpRecvBatch(8, 2048), new Uint32Array(RECV_STATS), []);
    drainUdp(s6, createUdpRecvBatch(8, 2048), new Uint32Array(RECV_STATS), []);
  });
  afterEach(() => rig.close());

  it('an ARP request for 10.88.0.1 encapsulated with VNI 42 gets the ARP reply back, VNI 42, from 10.99.0.1', async () => {
    const req = eth(BCAST, GUEST_MAC, 0x0806, arp(1, GUEST_MAC, '10.88.0.2', [0, 0, 0, 0, 0, 0], '10.88.0.1'));
    transmit(rig, [{ frame: req, cuts: [3, 12, 20] }], (n) => expect(txToUdp(s4, rig.q, ALL_CHAINS, n, vxlanHeader(42), to4(), stats)).to.equal(1));
    expect(Array.from(stats)).to.deep.equal([1, req.length, 0, 0, 0, 0, 0, 0]);
    const r = await udpExpect(s4, (f) => isArpReply(f.frame, GUEST_MAC, '10.88.0.1'), 'encapsulated ARP reply');
    expect(r.vni).to.equal(42);
    expect(r.source.family).to.equal(4);
    expect(r.source.address).to.equal('10.99.0.1');
    expect(r.source.port).to.be.above(0);
    const e = parseEth(r.frame);
    expect(e.dst).to.deep.equal(GUEST_MAC);
    expect(e.src).to.deep.equal(VX4_MAC);
  });

  it('an ICMP echo request to 10.88.0.1 gets its echo reply; a wrong VNI gets nothing', async () => {
    const data = pattern(600, 11);
    const req = (id: number): Uint8Array => eth(VX4_MAC, GUEST_MAC, 0x0800, ipv4('10.88.0.2', '10.88.0.1', 1, icmpEcho(id, 9, data)));
    transmit(rig, [{ frame: req(0x71), cuts: [12, 14, 100] }, { frame: req(0x72) }], (n) => {
      expect(txToUdp(s4, rig.q, ALL_CHAINS, 1, vxlanHeader(42), to4(), stats)).to.equal(1);
      expect(txToUdp(s4, rig.q, ALL_CHAINS.subarray(1), 1, vxlanHeader(41), to4(), stats)).to.equal(1);
      expect(n).to.equal(2);
    });
    const r = await udpExpect(s4, (f) => isEchoReply(f.frame, 0x71), 'encapsulated echo reply');
    expect(r.vni).to.equal(42);
    const p = parseIp4(parseEth(r.frame).payload);
    expect([p.src, p.dst]).to.deep.equal(['10.88.0.1', '10.88.0.2']);
    expect(hex(p.payload.subarray(8))).to.equal(hex(data));
    expect((await udpCollect(s4, 200)).filter((f) => isEchoReply(f.frame, 0x72)), 'a reply on VNI 41').to.have.length(0);
  });

  it('over an IPv6 underlay (VNI 43, [fd99::1]:4789) an echo request gets its reply', async () => {
    const req = eth(VX6_MAC, GUEST_MAC, 0x0800, ipv4('10.89.0.2', '10.89.0.1', 1, icmpEcho(0x73, 1, pattern(100, 12))));
    transmit(rig, [{ frame: req }], (n) => txToUdp(s6, rig.q, ALL_CHAINS, n, vxlanHeader(43), to6(), stats));
    expect(stats[TxStat.SENT]).to.equal(1);
    const r = await udpExpect(s6, (f) => isEchoReply(f.frame, 0x73), 'encapsulated echo reply over IPv6');
    expect(r.vni).to.equal(43);
    expect(r.source.family).to.equal(6);
    expect(r.source.address).to.equal('fd99::1');
  });

  it('a NEEDS_CSUM datagram goes out with its checksum completed (the kernel answers port unreachable); a wrong checksum is dropped', async () => {
    const errors0 = snmp(nsA, 'Udp', 'InCsumErrors');
    const good = eth(VX4_MAC, GUEST_MAC, 0x0800, udp('10.88.0.2', '10.88.0.1', 5000, 9901, pattern(101, 13), 'partial'));
    const bad = eth(VX4_MAC, GUEST_MAC, 0x0800, udp('10.88.0.2', '10.88.0.1', 5000, 9902, pattern(40, 14), 'wrong'));
    // a wrong pseudo-header sum stays wrong once completed
    const badPartial = eth(VX4_MAC, GUEST_MAC, 0x0800, udp('10.88.0.2', '10.88.0.1', 5000, 9903, pattern(40, 15), 'partial'));
    badPartial[14 + 20 + 6] ^= 0x10;
    transmit(rig, [
      { frame: good, hdr: csumHdr('udp'), cuts: [12, 45, 47, 53] },
      { frame: bad },
      { frame: badPartial, hdr: csumHdr('udp') },
    ], (n) => txToUdp(s4, rig.q, ALL_CHAINS, n, vxlanHeader(42), to4(), stats));
    expect(stats[TxStat.SENT]).to.equal(3);
    await udpExpect(s4, (f) => isPortUnreachable(f.frame, 9901), 'port unreachable for the completed checksum');
    const late = await udpCollect(s4, 300);
    expect(late.filter((f) => isPortUnreachable(f.frame, 9902) || isPortUnreachable(f.frame, 9903))).to.have.length(0);
    expect(snmp(nsA, 'Udp', 'InCsumErrors') - errors0, 'InCsumErrors').to.equal(2);
  });

  it('the kernel leaves inner checksums partial (UDP echo, TCP SYN-ACK from 10.88.0.1): recvUdp completes them, over IPv4 and IPv6 underlays', async () => {
    const echo = new NsListener(nsA, '0.0.0.0', 9950);
    const tcpCode = `require('node:net').createServer((c) => c.destroy()).listen(9951, '0.0.0.0', () => process.stdout.write('ready\\n'));`;
    const listener = spawn('ip', ['netns', 'exec', nsA, process.execPath, '-e', tcpCode], { env: childEnv, stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await echo.started();
      await new Promise<void>((resolve, reject) => {
        listener.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        listener.on('exit', () => reject(new Error('TCP listener exited')));
      });
      const syn = (src: string, dst: string, sport: number): Uint8Array => {
        const t = new Uint8Array(20);
        put16(t, 0, sport);
        put16(t, 2, 9951);
        new DataView(t.buffer).setUint32(4, 1000);
        t[12] = 5 << 4;
        t[13] = 0x02; // SYN
        put16(t, 14, 65535);
        return ipv4(src, dst, 6, l4(t, 16, src, dst, 6, 'full'));
      };
      for (const [sock, dest, vni, mac, net] of [
        [s4, to4(), 42, VX4_MAC, '10.88.0'],
        [s6, to6(), 43, VX6_MAC, '10.89.0'],
      ] as const) {
        const data = pattern(700, vni);
        transmit(rig, [
          { frame: eth(mac, GUEST_MAC, 0x0800, udp(`${net}.2`, `${net}.1`, 5001, 9950, data, 'full')) },
          { frame: eth(mac, GUEST_MAC, 0x0800, syn(`${net}.2`, `${net}.1`, 40000 + vni)) },
        ], (n) => expect(txToUdp(sock, rig.q, ALL_CHAINS, n, vxlanHeader(vni), dest, stats)).to.equal(2));
        const batch = createUdpRecvBatch(16, 2048);
        const rs = new Uint32Array(RECV_STATS);
        const got: UdpFrame[] = [];
        const isEcho = (f: UdpFrame): boolean => isUdpTo(f.frame, 5001);
        const isSynAck = (f: UdpFrame): boolean => isTcpTo(f.frame, 40000 + vni) && parseIp4(parseEth(f.frame).payload).payload[13] === 0x12;
        const end = Date.now() + 3000;
        while (!(got.some(isEcho) && got.some(isSynAck)) && Date.now() < end) {
          drainUdp(sock, batch, rs, got);
          await sleep(5);
        }
        const e = got.find(isEcho);
        const sa = got.find(isSynAck);
        expect(e, `UDP echo over VNI ${vni}`).to.not.equal(undefined);
        expect(sa, `SYN-ACK over VNI ${vni}`).to.not.equal(undefined);
        for (const f of [e!, sa!]) expect(l4Ok(parseIp4(parseEth(f.frame).payload)), 'the checksum verifies').to.equal(true);
        expect(hex(parseIp4(parseEth(e!.frame).payload).payload.subarray(8))).to.equal(hex(data));
        expect(rs[RecvStat.CSUM_COMPLETED], `partial checksums completed (VNI ${vni})`).to.be.at.least(2);
      }
    } finally {
      echo.stop();
      listener.kill();
    }
  });

  it('GSO frames are counted NEEDS_SEGMENTATION and not sent', () => {
    const gso: TxFrame = {
      frame: eth(VX4_MAC, GUEST_MAC, 0x0800, tcp('10.88.0.2', '10.88.0.1', 40000, 80, 1, pattern(3000, 16), 'partial')),
      hdr: { ...csumHdr('tcp'), gsoType: GSO_TCPV4, gsoSize: 1400, hdrLen: 54 },
    };
    const ecnOnly: TxFrame = { frame: eth(VX4_MAC, GUEST_MAC, 0x0800, new Uint8Array(46)), hdr: { gsoType: 0x80 } };
    transmit(rig, [gso, ecnOnly], (n) => expect(txToUdp(s4, rig.q, ALL_CHAINS, n, vxlanHeader(42), to4(), stats)).to.equal(0));
    expect(stats[TxStat.NEEDS_SEGMENTATION]).to.equal(2);
    expect(stats[TxStat.SENT]).to.equal(0);
  });
});

// =======================================================================================

describe('host I/O on loopback: VXLAN framing, malformed datagrams, argument checks, fd leaks', function () {
  this.timeout(15000);
  let rx: { fd: number; port: number };
  let tx: { fd: number; port: number };
  let rig: Rig;
  const stats = new Uint32Array(TX_STATS);

  before(() => {
    rx = udpSocket({ address: '127.0.0.1', port: 0 });
    tx = udpSocket({ address: '127.0.0.1', port: 0 });
  });
  after(() => {
    close(rx.fd);
    close(tx.fd);
  });
  beforeEach(() => {
    rig = new Rig('split', { size: 256 });
    stats.fill(0);
  });
  afterEach(() => rig.close());

  /** What recvUdp should see for a frame sent with these options. */
  function expected(f: TxFrame, vlan: number): Uint8Array {
    let out: Uint8Array = f.frame.slice();
    if (f.hdr?.flags === NEEDS_CSUM) {
      const s = f.hdr.csumStart ?? 0;
      const at = s + (f.hdr.csumOffset ?? 0);
      let c = ~sum16(out.subarray(s)) & 0xffff;
      if (c === 0) c = 0xffff;
      put16(out, at, c);
    }
    if (vlan >= 0) out = tagged(out, vlan);
    if (vlan === -2 && out.length >= 18 && out[12] === 0x81 && out[13] === 0) out = concat([out.subarray(0, 12), out.subarray(16)]);
    return out;
  }

  it('datagrams carry the VXLAN header and the frame byte for byte, whatever the segmentation, VLAN operation and checksum completion', async () => {
    const batch = createUdpRecvBatch(64, 2048);
    const rs = new Uint32Array(RECV_STATS);
    const dest = sockaddr('127.0.0.1', rx.port);
    let seed = 1;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    for (const vlan of [-1, -2, 0, 0x3fff]) {
      const frames: TxFrame[] = [];
      for (let i = 0; i < 32; i++) {
        const len = 14 + rnd(1400);
        const kind = rnd(3);
        let frame: Uint8Array;
        let hdr: VnetHdr | undefined;
        if (kind === 0 && len > 60) {
          frame = eth(PEERB_MAC, GUEST_MAC, 0x0800, udp('10.1.0.1', '10.1.0.2', 1, 2, pattern(len - 42, i), 'partial'));
          hdr = csumHdr('udp');
        } else if (kind === 1 && len > 64) {
          frame = tagged(eth(PEERB_MAC, GUEST_MAC, 0x0800, udp('10.1.0.1', '10.1.0.2', 1, 2, pattern(len - 46, i), 'partial')), 0x100 + i);
          hdr = csumHdr('udp', 18);
        } else {
          frame = pattern(len, i);
        }
        const total = 12 + frame.length;
        const cuts = Array.from({ length: rnd(6) }, () => 1 + rnd(total - 1));
        frames.push({ frame, hdr, cuts, hdrLen: i % 5 === 0 ? 10 : 12 });
      }
      for (const hl of [10, 12]) {
        const group = frames.filter((f) => (f.hdrLen ?? 12) === hl);
        transmit(rig, group, (n) => expect(txToUdp(tx.fd, rig.q, ALL_CHAINS, n, vxlanHeader(0xabcdef), dest, stats, { hdrLen: hl, vlan })).to.equal(n));
        const got: UdpFrame[] = [];
        const end = Date.now() + 2000;
        while (got.length < group.length && Date.now() < end) {
          drainUdp(rx.fd, batch, rs, got);
          await sleep(1);
        }
        expect(got).to.have.length(group.length);
        got.forEach((g, k) => {
          expect(g.vni).to.equal(0xabcdef);
          expect(g.source).to.deep.equal({ family: 4, address: '127.0.0.1', port: tx.port });
          expect(hex(g.frame), `frame ${k}, vlan ${vlan}, header ${hl}`).to.equal(hex(expected(group[k], vlan)));
        });
      }
    }
    expect(stats[TxStat.BAD] + stats[TxStat.ERRORS] + stats[TxStat.DROPPED]).to.equal(0);
  });

  it('a chain of 1024 descriptors (more iovecs than one message takes: 1 + 1024) still goes out whole', async () => {
    const frame = pattern(1100, 17);
    // the header and the first frame byte, then 1022 one-byte pieces, then the rest
    const cuts = Array.from({ length: 1023 }, (_, i) => 13 + i);
    transmit(rig, [{ frame, cuts, indirect: true }], (n) => {
      expect(rig.q.b.firstSeg[1] - rig.q.b.firstSeg[0]).to.equal(1024);
      expect(txToUdp(tx.fd, rig.q, ALL_CHAINS, n, vxlanHeader(5), sockaddr('127.0.0.1', rx.port), stats)).to.equal(1);
    });
    expect(stats[TxStat.ERRORS], `errno ${stats[TxStat.LAST_ERRNO]}`).to.equal(0);
    const r = await udpExpect(rx.fd, () => true, 'the long chain');
    expect(hex(r.frame)).to.equal(hex(frame));
  });

  it('malformed VXLAN datagrams (too short, I flag clear, reserved bits set, too big for a slot) are counted and skipped', async () => {
    const sock = createSocket('udp4');
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    const inner = eth(GUEST_MAC, PEERB_MAC, 0x88b5, pattern(46, 1));
    const send = (b: Uint8Array): Promise<void> => new Promise((resolve, reject) => sock.send(b, rx.port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
    try {
      await send(Uint8Array.of(0x08, 0, 0)); // shorter than the header
      await send(concat([vxlanHeader(1), inner.subarray(0, 10)])); // no Ethernet header
      await send(concat([Uint8Array.of(0, 0, 0, 0, 0, 0, 1, 0), inner])); // I flag clear
      await send(concat([Uint8Array.of(0x0c, 0, 0, 0, 0, 0, 1, 0), inner])); // another flag bit
      await send(concat([Uint8Array.of(0x08, 0, 0, 0, 0, 0, 1, 0x55), inner])); // last reserved byte
      await send(concat([vxlanHeader(7), pattern(3000, 2)])); // larger than a slot
      await send(concat([vxlanHeader(0xffffff), inner])); // fine
      const batch = createUdpRecvBatch(16, 2048);
      const rs = new Uint32Array(RECV_STATS);
      const got: UdpFrame[] = [];
      const end = Date.now() + 2000;
      while (rs[RecvStat.DATAGRAMS] < 7 && Date.now() < end) {
        drainUdp(rx.fd, batch, rs, got);
        await sleep(1);
      }
      expect(Array.from(rs)).to.deep.equal([7, 1, inner.length, 2, 1, 2, 1, 0, 0]);
      expect(got).to.have.length(1);
      expect(got[0].vni).to.equal(0xffffff);
      expect(hex(got[0].frame)).to.equal(hex(inner));
      expect(got[0].source).to.deep.equal({ family: 4, address: '127.0.0.1', port: sock.address().port });
      expect(readVxlanHeader(vxlanHeader(0x123456))).to.equal(0x123456);
      expect(readVxlanHeader(Uint8Array.of(0x0c, 0, 0, 0, 0, 0, 1, 0))).to.equal(null);
      expect(recvUdp(rx.fd, batch, rs), 'nothing pending').to.equal(0);
    } finally {
      sock.close();
    }
  });

  it('partial inner TCP/UDP checksums (the folded pseudo-header sum, as a same-host Linux VTEP leaves them) are completed on receive; nothing else is touched', async () => {
    const sock = createSocket('udp4');
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    const send = (b: Uint8Array): Promise<void> => new Promise((resolve, reject) => sock.send(b, rx.port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
    const A = '10.5.0.1';
    const B = '10.5.0.2';
    const v4 = (p: Uint8Array): Uint8Array => eth(PEERB_MAC, GUEST_MAC, 0x0800, p);
    // IPv6: fd05::1 -> fd05::2, next header `nh`, payload `pl` (TCP/UDP built with its pseudo-header).
    const a6 = Uint8Array.from([0xfd, 0x05, ...new Array(13).fill(0), 1]);
    const b6 = Uint8Array.from([0xfd, 0x05, ...new Array(13).fill(0), 2]);
    const ipv6 = (nh: number, pl: Uint8Array): Uint8Array => {
      const h = new Uint8Array(40);
      h[0] = 0x60;
      put16(h, 4, pl.length);
      h[6] = nh;
      h[7] = 64;
      h.set(a6, 8);
      h.set(b6, 24);
      return concat([h, pl]);
    };
    const l4v6 = (seg: Uint8Array, at: number, proto: number, mode: CsumMode): Uint8Array => {
      const ph = new Uint8Array(40);
      ph.set(a6, 0);
      ph.set(b6, 16);
      put16(ph, 34, seg.length);
      ph[39] = proto;
      const sum = sum16(ph);
      if (mode === 'partial') put16(seg, at, sum);
      else {
        put16(seg, at, 0);
        const c = ~sum16(seg, sum) & 0xffff || 0xffff;
        put16(seg, at, mode === 'wrong' ? c ^ 1 : c);
      }
      return seg;
    };
    const tcp6 = (data: Uint8Array, mode: CsumMode): Uint8Array => {
      const t = new Uint8Array(20 + data.length);
      put16(t, 0, 40000);
      put16(t, 2, 80);
      t[12] = 5 << 4;
      t[13] = 0x12;
      t.set(data, 20);
      return eth(PEERB_MAC, GUEST_MAC, 0x86dd, ipv6(6, l4v6(t, 16, 6, mode)));
    };
    const udp6 = (data: Uint8Array, mode: CsumMode): Uint8Array => {
      const u = new Uint8Array(8 + data.length);
      put16(u, 0, 5353);
      put16(u, 2, 53);
      put16(u, 4, u.length);
      u.set(data, 8);
      return eth(PEERB_MAC, GUEST_MAC, 0x86dd, ipv6(17, l4v6(u, 6, 17, mode)));
    };
    /** Whether the L4 checksum of an (untagged or tagged) IPv4 / IPv6 frame verifies. */
    const verifies = (f: Uint8Array): boolean => {
      let l3 = 14;
      while (get16(f, l3 - 2) === 0x8100 || get16(f, l3 - 2) === 0x88a8) l3 += 4;
      if (get16(f, l3 - 2) === 0x0800) return l4Ok(parseIp4(f.subarray(l3)));
      const len = get16(f, l3 + 4);
      const ph = new Uint8Array(40);
      ph.set(f.subarray(l3 + 8, l3 + 40), 0);
      put16(ph, 34, len);
      ph[39] = f[l3 + 6];
      return sum16(f.subarray(l3 + 40, l3 + 40 + len), sum16(ph)) === 0xffff;
    };

    const fragment = v4(udp(A, B, 1, 2, pattern(100, 3), 'partial'));
    fragment[14 + 6] = 0x20; // MF, no DF: the first fragment of a larger datagram
    fragment[14 + 10] = fragment[14 + 11] = 0;
    put16(fragment, 14 + 10, ~sum16(fragment.subarray(14, 34)) & 0xffff);
    const udpNoCsum = v4(udp(A, B, 1, 2, pattern(30, 4), 'full'));
    put16(udpNoCsum, 14 + 20 + 6, 0);
    const offByOne = v4(tcp(A, B, 3, 4, 9, pattern(50, 5), 'partial'));
    offByOne[14 + 20 + 17] ^= 1; // neither the pseudo-header sum nor a right checksum
    const ext = udp6(pattern(20, 6), 'partial');
    ext[14 + 6] = 44; // a fragment header would follow: not looked into
    // Ethernet padding after a short partial UDP datagram: not part of the sum, left as it is
    const padded = concat([v4(udp(A, B, 7, 8, pattern(4, 7), 'partial')), Uint8Array.of(0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8)]);
    // Partial TCP over 1500 bytes of IP (a GSO packet the VTEP never cut): left partial, TSO header
    const big4 = v4(tcp(A, B, 40000, 80, 7, pattern(1700, 17), 'partial'));
    const big6 = tagged(tcp6(pattern(1600, 18), 'partial'), 0x0a0);
    const bigQinQ = (() => { const f = tagged(tagged(v4(tcp(A, B, 1, 2, 3, pattern(1600, 19), 'partial')), 0x064), 0x0c8); f[12] = 0x88; f[13] = 0xa8; return f; })();
    const cases: Array<{ what: string; frame: Uint8Array; completed: boolean; gso?: number[] }> = [
      { what: 'IPv4 TCP partial, 1740 bytes of IP', frame: big4, completed: false, gso: [1, 1, 54, 1460, 34, 16] },
      { what: 'IPv6 TCP partial, 1660 bytes of IP, one tag', frame: big6, completed: false, gso: [1, 4, 78, 1440, 58, 16] },
      { what: 'IPv4 TCP partial over 1500, two tags (SegmentTcp takes one): completed', frame: bigQinQ, completed: true },
      { what: 'IPv4 TCP partial', frame: v4(tcp(A, B, 40000, 80, 7, pattern(1400, 1), 'partial')), completed: true },
      { what: 'IPv4 UDP partial', frame: v4(udp(A, B, 5000, 53, pattern(333, 2), 'partial')), completed: true },
      { what: 'IPv4 TCP partial, one 802.1Q tag', frame: tagged(v4(tcp(A, B, 1, 2, 3, pattern(99, 8), 'partial')), 0x123), completed: true },
      { what: 'IPv4 UDP partial, 802.1ad + 802.1Q', frame: (() => { const f = tagged(tagged(v4(udp(A, B, 1, 2, pattern(77, 9), 'partial')), 0x064), 0x0c8); f[12] = 0x88; f[13] = 0xa8; return f; })(), completed: true },
      { what: 'IPv6 TCP partial', frame: tcp6(pattern(1000, 10), 'partial'), completed: true },
      { what: 'IPv6 UDP partial', frame: udp6(pattern(201, 11), 'partial'), completed: true },
      { what: 'IPv4 UDP partial, Ethernet padding', frame: padded, completed: true },
      { what: 'IPv4 TCP complete', frame: v4(tcp(A, B, 5, 6, 1, pattern(500, 12), 'full')), completed: false },
      { what: 'IPv4 TCP wrong', frame: v4(tcp(A, B, 5, 6, 1, pattern(500, 13), 'wrong')), completed: false },
      { what: 'IPv4 UDP wrong', frame: v4(udp(A, B, 5, 6, pattern(64, 14), 'wrong')), completed: false },
      { what: 'IPv6 UDP wrong', frame: udp6(pattern(64, 15), 'wrong'), completed: false },
      { what: 'IPv4 TCP off by one from the pseudo-header sum', frame: offByOne, completed: false },
      { what: 'IPv4 UDP checksum 0 (none)', frame: udpNoCsum, completed: false },
      { what: 'IPv4 fragment (MF)', frame: fragment, completed: false },
      { what: 'IPv6 with an extension header', frame: ext, completed: false },
      { what: 'not IP', frame: eth(PEERB_MAC, GUEST_MAC, 0x88b5, pattern(60, 16)), completed: false },
    ];
    try {
      for (const c of cases) await send(concat([vxlanHeader(9), c.frame]));
      const batch = createUdpRecvBatch(32, 2048);
      const rs = new Uint32Array(RECV_STATS);
      const got: UdpFrame[] = [];
      const end = Date.now() + 2000;
      while (got.length < cases.length && Date.now() < end) {
        drainUdp(rx.fd, batch, rs, got);
        await sleep(1);
      }
      expect(got).to.have.length(cases.length);
      cases.forEach((c, k) => {
        const f = got[k].frame;
        const h = parseVnetHdr(got[k].hdr);
        expect([h.flags, h.gsoType, h.hdrLen, h.gsoSize, h.csumStart, h.csumOffset], `${c.what}: header`).to.deep.equal(c.gso ?? [0, 0, 0, 0, 0, 0]);
        if (!c.completed) {
          expect(hex(f), `${c.what}: untouched`).to.equal(hex(c.frame));
          return;
        }
        expect(verifies(f), `${c.what}: checksum verifies`).to.equal(true);
        expect(verifies(c.frame), `${c.what}: did not verify as sent`).to.equal(false);
        const diff = Array.from(f).flatMap((b, i) => (b !== c.frame[i] ? [i] : []));
        expect(diff.length, `${c.what}: only the checksum bytes change`).to.be.within(1, 2);
        expect(diff[diff.length - 1] - diff[0]).to.be.at.most(1);
      });
      expect(rs[RecvStat.CSUM_COMPLETED]).to.equal(cases.filter((c) => c.completed).length);
      expect(rs[RecvStat.GSO_MARKED]).to.equal(2);
      expect(rs[RecvStat.ACCEPTED]).to.equal(cases.length);
    } finally {
      sock.close();
    }
  });

  it('finishFrame completes a TAP frame\'s partial checksum (csum_start moved by a removed tag), segments a TSO frame, refuses bad offsets and too little room', () => {
    const hdr10 = (h: VnetHdr): Uint8Array => vnetHdr(h).subarray(0, 10);
    const out = new Uint8Array(65536);
    const offs = new Uint32Array(64);
    const lens = new Uint32Array(64);
    // NEEDS_CSUM written for the tagged frame (csum_start 38); the tag is gone: adj -4
    const plain = eth(PEERB_MAC, GUEST_MAC, 0x0800, tcp('10.6.0.1', '10.6.0.2', 1, 2, 3, pattern(300, 1), 'partial'));
    expect(finishFrame(plain, hdr10(csumHdr('tcp', 18)), -4, out, offs, lens)).to.equal(1);
    const done = out.slice(offs[0], offs[0] + lens[0]);
    expect(l4Ok(parseIp4(parseEth(done).payload))).to.equal(true);
    expect(hex(done.subarray(0, 50))).to.equal(hex(plain.subarray(0, 50)));
    expect(hex(done.subarray(52))).to.equal(hex(plain.subarray(52)));
    // TSO: 5000 bytes, mss 1448: 4 segments, each a valid TCP segment, payloads in order
    const data = pattern(5000, 2);
    const big = eth(PEERB_MAC, GUEST_MAC, 0x0800, tcp('10.6.0.1', '10.6.0.2', 1, 2, 1000, data, 'partial'));
    const n = finishFrame(big, hdr10({ ...csumHdr('tcp'), gsoType: GSO_TCPV4, gsoSize: 1448, hdrLen: 54 }), 0, out, offs, lens);
    expect(n).to.equal(4);
    const payloads: Uint8Array[] = [];
    for (let k = 0; k < n; k++) {
      const ipp = parseIp4(parseEth(out.subarray(offs[k], offs[k] + lens[k])).payload);
      expect(ipp.hdrOk && l4Ok(ipp), `segment ${k} checksums`).to.equal(true);
      expect(new DataView(ipp.payload.buffer, ipp.payload.byteOffset).getUint32(4)).to.equal(1000 + 1448 * k);
      payloads.push(ipp.payload.subarray(20));
    }
    expect(hex(concat(payloads))).to.equal(hex(data));
    // no offloads asked: copied as it is
    expect(finishFrame(plain, hdr10({}), 0, out, offs, lens)).to.equal(1);
    expect(hex(out.subarray(0, lens[0]))).to.equal(hex(plain));
    expect(finishFrame(plain, hdr10({ flags: NEEDS_CSUM, csumStart: plain.length - 1, csumOffset: 0 }), 0, out, offs, lens)).to.equal(FINISH_BAD);
    expect(finishFrame(plain, hdr10(csumHdr('tcp')), 0, new Uint8Array(100), offs, lens)).to.equal(FINISH_NO_ROOM);
    expect(finishFrame(big, hdr10({ ...csumHdr('tcp'), gsoType: GSO_TCPV4, gsoSize: 1448, hdrLen: 54 }), 0, out, offs.subarray(0, 3), lens)).to.equal(FINISH_NO_ROOM);
  });

  it('IPv6 loopback: a bound [::1] socket receives and reports an IPv6 source', async function () {
    expect(hasIpv6Loopback(), 'this machine has an IPv6 loopback').to.equal(true);
    const a = udpSocket({ address: '::1', port: 0 });
    const b = udpSocket({ address: '::1', port: 0, v6Only: true });
    try {
      const frame = pattern(64, 3);
      transmit(rig, [{ frame }], (n) => expect(txToUdp(b.fd, rig.q, ALL_CHAINS, n, vxlanHeader(3), sockaddr('::1', a.port), stats)).to.equal(1));
      const r = await udpExpect(a.fd, () => true, 'the IPv6 datagram');
      expect(r.source).to.deep.equal({ family: 6, address: '::1', port: b.port });
      expect(hex(r.frame)).to.equal(hex(frame));
      // an IPv4 destination from an IPv6-only socket: a send error, counted, not thrown
      transmit(rig, [{ frame }], (n) => expect(txToUdp(b.fd, rig.q, ALL_CHAINS, n, vxlanHeader(3), sockaddr('127.0.0.1', rx.port), stats)).to.equal(0));
      expect(stats[TxStat.ERRORS]).to.equal(1);
      expect(stats[TxStat.LAST_ERRNO]).to.be.above(0);
    } finally {
      close(a.fd);
      close(b.fd);
    }
  });

  it('argument and system errors are typed and say what was wrong', () => {
    const err = (fn: () => unknown): NodeJS.ErrnoException => {
      try {
        fn();
      } catch (e) {
        return e as NodeJS.ErrnoException;
      }
      throw new Error('did not throw');
    };
    expect(err(() => openTap('a-name-of-16-byt')).code).to.equal('ENAMETOOLONG');
    const bind = err(() => udpSocket({ address: '192.0.2.1', port: 0 })); // not a local address: nothing is sent
    expect([bind.code, bind.syscall]).to.deep.equal(['EADDRNOTAVAIL', 'bind']);
    const inUse = err(() => udpSocket({ address: '127.0.0.1', port: rx.port, reuseAddr: false }));
    expect(inUse.code).to.equal('EADDRINUSE');
    expect(err(() => sockaddr('localhost', 1))).to.be.instanceOf(TypeError);
    expect(sockaddr('10.0.0.1', 4789)).to.have.length(16);
    expect(sockaddr('fe80::1%lo', 4789)).to.have.length(28);
    expect(err(() => vxlanHeader(1 << 24))).to.be.instanceOf(RangeError);
    transmit(rig, [{ frame: pattern(60, 1) }], (n) => {
      expect(err(() => txToUdp(tx.fd, rig.q, Uint16Array.of(32), 1, vxlanHeader(1), sockaddr('127.0.0.1', rx.port), stats))).to.be.instanceOf(RangeError);
      expect(err(() => txToUdp(tx.fd, rig.q, ALL_CHAINS, n, vxlanHeader(1), sockaddr('127.0.0.1', rx.port), stats, { hdrLen: 11 }))).to.be.instanceOf(RangeError);
      expect(err(() => txToUdp(tx.fd, rig.q, ALL_CHAINS, n, vxlanHeader(1), new Uint8Array(20), stats))).to.be.instanceOf(RangeError);
      expect(err(() => txToUdp(tx.fd, rig.q, ALL_CHAINS, n, vxlanHeader(1), sockaddr('127.0.0.1', rx.port), new Uint32Array(3)))).to.be.instanceOf(RangeError);
    });
    const badFd = err(() => readTap(1 << 30, createTapReadBatch(2, TAP_SLOT_1500), new Uint32Array(READ_STATS)));
    expect([badFd.code, badFd.syscall]).to.deep.equal(['EBADF', 'read']);
    expect(readTap(rx.fd, createTapReadBatch(2, TAP_SLOT_1500), new Uint32Array(READ_STATS)), 'EAGAIN is no error').to.equal(0);
  });

  it('leaks no fd: opening and closing TAPs and sockets, failed opens, and every I/O call', function () {
    const why = canRun();
    if (why) throw new Error(`cannot run: ${why}`);
    const before = openFdCount();
    const dest = sockaddr('127.0.0.1', rx.port);
    transmit(rig, [{ frame: pattern(60, 1) }], (n) => {
      for (let i = 0; i < 50; i++) {
        const t = openTap('', { offloads: i % 2 === 0 });
        txToTap(t.fd, rig.q, ALL_CHAINS, n, stats); // the interface is down: EIO, counted
        readTap(t.fd, createTapReadBatch(1, TAP_SLOT_1500), new Uint32Array(READ_STATS));
        close(t.fd);
        const u = udpSocket({ address: '127.0.0.1', port: 0 });
        txToUdp(u.fd, rig.q, ALL_CHAINS, n, vxlanHeader(1), dest, stats);
        close(u.fd);
        const u6 = udpSocket({ address: hasIpv6Loopback() ? '::1' : '127.0.0.1', port: 0 });
        recvUdp(u6.fd, createUdpRecvBatch(2, 128), new Uint32Array(RECV_STATS));
        close(u6.fd);
        try {
          openTap('x'.repeat(20));
        } catch {
          /* expected */
        }
        try {
          udpSocket({ address: '192.0.2.1', port: 0 });
        } catch {
          /* expected */
        }
      }
    });
    expect(openFdCount()).to.equal(before);
    expect(stats[TxStat.ERRORS], 'writes to a TAP that is down').to.equal(50);
    expect(stats[TxStat.LAST_ERRNO]).to.be.above(0);
  });
});
