// The dangerous half of guest-fault.test.ts, in a child process: a frontend truncates the
// file under its guest memory while a switch port or a disk serves it. Without the SIGBUS
// guard (native/memory/guest_fault.h) this process dies of SIGBUS, and the parent reports
// that as a failure instead of dying with it. Prints one JSON line: what it saw.
//
//   node guest-fault-child.js unit
//   node guest-fault-child.js net <worker|inline> <split|packed>
//   node guest-fault-child.js blk <file|ram>
//   node guest-fault-child.js dirtylog        (the dirty log's file truncated, blk RAM disk)
//   node guest-fault-child.js qemu            (a QEMU guest with memory-backend-file; test/e2e)
//   node guest-fault-child.js kill            (a SIGBUS sent by kill(): must still kill)
import { closeSync, ftruncateSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestMemory, createMemfd, guestFaultGuard } from '../../src/native/guest-memory.js';
import { Switch } from '../../src/switch/switch.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame } from '../../src/virtio/net-frames.js';
import { setLogSink, type LogRecord } from '../../src/log.js';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { openDisk, type Disk } from '../../src/backends/blk/disk.js';
import { BlkClient, BlkReqType, BlkStatus } from '../lib/blk-client.js';
import { VHOST_F_LOG_ALL, VIRTIO_F_RING_PACKED, bit } from '../../src/virtio/features.js';
import { Req, logArea } from '../../src/vhost-user/protocol.js';
import { startGuest } from '../lib/guest.js';

const MiB = 1 << 20;
const logs: LogRecord[] = [];
setLogSink((r) => logs.push(r));

const fdCount = () => readdirSync('/proc/self/fd').length;
const fdsTo = (path: string) =>
  readdirSync('/proc/self/fd').filter((f) => {
    try {
      return readlinkSync(`/proc/self/fd/${f}`) === path;
    } catch {
      return false;
    }
  }).length;
const mapsOf = (needle: string) => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(needle)).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(f: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) return false;
    await sleep(5);
  }
  return true;
}
const lostLine = () => logs.find((l) => l.msg === 'guest memory file truncated, ending the session');
const describeLine = (l: LogRecord | undefined) =>
  l === undefined ? null : { msg: l.msg, gpa: String(l.gpa), size: String(l.size), fd: l.fd, file: l.file, session: l.session };

function unit(): object {
  const out: Record<string, unknown> = { guard: guestFaultGuard() };
  const dir = mkdtempSync('/dev/shm/vk-gf-unit-');
  try {
    // An unsealed memfd and a plain file are guarded; a sealed memfd needs no guard.
    const sealed = createMemfd('vk-gf-sealed', MiB);
    const ms = GuestMemory.map([{ fd: sealed, gpa: 0n, size: BigInt(MiB), uva: 0n, mmapOffset: 0n }]);
    out.sealed = { sealed: ms.regions[0].sealed, guarded: ms.regions[0].guarded };
    ms.close();
    closeSync(sealed);
    for (const kind of ['memfd', 'file'] as const) {
      const path = join(dir, 'mem');
      const fd = kind === 'memfd' ? createMemfd('vk-gf-unsealed', 4 * MiB, false) : openSync(path, 'w+');
      if (kind === 'file') ftruncateSync(fd, 4 * MiB);
      const name = kind === 'memfd' ? 'memfd:vk-gf-unsealed' : path;
      // Two regions of one fd (mmap offsets 0 and 2 MiB), as QEMU maps RAM above and below 4G.
      const mem = GuestMemory.map([
        { fd, gpa: 0n, size: BigInt(2 * MiB), uva: 0x10000000n, mmapOffset: 0n },
        { fd, gpa: 1n << 32n, size: BigInt(2 * MiB), uva: 0x20000000n, mmapOffset: BigInt(2 * MiB) },
      ]);
      mem.write(100n, Uint8Array.of(1, 2, 3));
      mem.write((1n << 32n) + 100n, Uint8Array.of(4, 5, 6));
      const epoch0 = guestFaultGuard().epoch;
      ftruncateSync(fd, 3 * MiB); // the second region loses its upper half
      const low = [...mem.read(100n, 3)];
      const highKept = [...mem.read((1n << 32n) + 100n, 3)];
      const lostBefore = mem.lostRegions();
      const gone = [...mem.read((1n << 32n) + BigInt(1.5 * MiB), 4)]; // faults: recovered, zeros
      mem.write((1n << 32n) + BigInt(1.75 * MiB), Uint8Array.of(9)); // a write there goes nowhere
      const r: Record<string, unknown> = {
        guarded: mem.regions.map((x) => x.guarded),
        low,
        highKept,
        lostBefore,
        gone,
        lost: mem.lostRegions(),
        epochDelta: guestFaultGuard().epoch - epoch0,
      };
      mem.close();
      closeSync(fd);
      r.mapsAfterClose = mapsOf(name);
      out[kind] = r;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const C = '02:00:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const seqOf = (f: Uint8Array) => new DataView(f.buffer, f.byteOffset).getUint32(14);
const srcOf = (f: Uint8Array) => Buffer.from(f.subarray(6, 12)).toString('hex');
const mac = (s: string) => s.replace(/:/g, '');

/**
 * Receives on g until `want[src]` more frames from each src arrived, checking that each
 * source's sequence numbers continue from next[src] (a gap or a timeout goes to errs).
 */
async function take(g: NetGuest, want: Record<string, number>, next: Record<string, number>, errs: string[]): Promise<void> {
  const left = new Map(Object.entries(want).map(([k, v]) => [mac(k), v]));
  const total = () => [...left.values()].reduce((x, y) => x + y, 0);
  while (total() > 0) {
    const fs = await g.receive(1, 3000);
    if (fs.length === 0) {
      errs.push(`nothing for 3 s, still waiting for ${JSON.stringify(Object.fromEntries(left))}`);
      return;
    }
    for (const f of fs) {
      const src = srcOf(f.frame);
      if (f.frame[0] & 1 || !left.has(src)) continue;
      const n = next[src] ?? 0;
      if (seqOf(f.frame) !== n) errs.push(`from ${src}: frame ${seqOf(f.frame)}, expected ${n}`);
      next[src] = seqOf(f.frame) + 1;
      left.set(src, Math.max(0, left.get(src)! - 1));
    }
  }
}

async function net(dataplane: 'worker' | 'inline', layout: 'split' | 'packed'): Promise<object> {
  const packed = layout === 'packed';
  const dir = mkdtempSync('/dev/shm/vk-gf-net-');
  const sock = (n: string) => join(dir, `${n}.sock`);
  const memFile = join(dir, 'a.mem');
  const sw = await Switch.create({ dataplane });
  const out: Record<string, unknown> = { dataplane, layout };
  try {
    for (const n of ['a', 'b', 'c']) await sw.addVhostPort({ name: n, socket: sock(n) });
    const b = await NetGuest.connect(sock('b'), { packed });
    const c = await NetGuest.connect(sock('c'), { packed });
    await until(() => sw.backend('b').session !== null && sw.backend('c').session !== null);
    const fds0 = fdCount();
    const a = await NetGuest.connect(sock('a'), { packed, memoryFile: memFile });
    await until(() => sw.backend('a').session !== null);
    const sessionA = sw.backend('a').session!;
    // Everyone announces itself so that unicast frames are not flooded.
    a.send([ethFrame(BCAST, A, 60, 0)]);
    b.send([ethFrame(BCAST, B, 60, 0)]);
    c.send([ethFrame(BCAST, C, 60, 0)]);
    await until(() => sw.counters('a').tx_packets >= 1 && sw.counters('b').tx_packets >= 1 && sw.counters('c').tx_packets >= 1);
    const errs: string[] = [];
    const seq = { ab: 0, bc: 0, cb: 0 };
    const atC: Record<string, number> = {};
    const atB: Record<string, number> = {};
    let aSent = 0;
    let aErrors = 0;
    let truncatedAt = -1;
    for (let round = 0; round < 40; round++) {
      let abN = 0;
      if (truncatedAt < 0 || sw.backend('a').session !== null) {
        try {
          const first = seq.ab;
          abN = a.send(Array.from({ length: 16 }, (_, i) => ethFrame(B, A, 200, first + i)));
          seq.ab += abN;
          aSent += abN;
        } catch {
          aErrors++; // A's own view of its memory is gone too
        }
      }
      const bc0 = seq.bc;
      const bcN = b.send(Array.from({ length: 16 }, (_, i) => ethFrame(C, B, 300, bc0 + i)));
      seq.bc += bcN;
      const cb0 = seq.cb;
      const cbN = c.send(Array.from({ length: 16 }, (_, i) => ethFrame(B, C, 300, cb0 + i)));
      seq.cb += cbN;
      // B also sends to A: the switch fills A's RX ring, so the backend touches A's memory
      // after the truncation even if A's own TX burst was done with before it.
      b.send(Array.from({ length: 2 }, (_, i) => ethFrame(A, B, 100, 500000 + round * 2 + i)));
      if (round === 10) {
        // A's frames are in the switch's hands (or about to be) when its memory goes.
        truncateSync(memFile, 64 * 1024);
        truncatedAt = round;
      }
      await take(c, { [B]: bcN }, atC, errs);
      // Before the truncation A's frames must arrive too; after it, whatever comes of them.
      await take(b, truncatedAt < 0 ? { [C]: cbN, [A]: abN } : { [C]: cbN }, atB, errs);
      if (errs.length) break;
    }
    out.bc = { sent: seq.bc, receivedInOrder: atC[mac(B)] ?? 0 };
    out.cb = { sent: seq.cb, receivedInOrder: atB[mac(C)] ?? 0 };
    out.aFramesAtB = atB[mac(A)] ?? 0;
    out.errors = errs;
    out.aSent = aSent;
    out.aErrors = aErrors;
    out.sessionEnded = await until(() => sw.backend('a').session === null && sessionA.closed);
    out.lostLine = describeLine(lostLine());
    out.disconnectReason = logs.find((l) => l.session === sessionA.id && l.msg === 'frontend disconnected')?.reason ?? null;
    out.aCounters = { queue_errors: sw.counters('a').queue_errors };
    out.epoch = guestFaultGuard().epoch;
    // A's frontend lets go of its side too; then nothing of A's memory is left open or mapped.
    a.close();
    await until(() => fdCount() <= fds0 && fdsTo(memFile) === 0 && mapsOf(memFile) === 0, 2000);
    out.fds = { before: fds0, after: fdCount(), toMemFile: fdsTo(memFile) };
    out.mapsOfMemFile = mapsOf(memFile);
    // The port serves a new frontend; B and C still talk.
    const a2 = await NetGuest.connect(sock('a'), { packed });
    out.newSession = await until(() => sw.backend('a').session !== null && !sw.backend('a').session!.closed);
    const e2: string[] = [];
    a2.send([ethFrame(BCAST, A, 60, 1)]);
    await sleep(20);
    a2.send(Array.from({ length: 8 }, (_, i) => ethFrame(B, A, 100, 1000 + i)));
    await take(b, { [A]: 8 }, { [mac(A)]: 1000 }, e2);
    b.send(Array.from({ length: 8 }, (_, i) => ethFrame(A, B, 100, 2000 + i)));
    await take(a2, { [B]: 8 }, { [mac(B)]: 2000 }, e2);
    out.newFrontendErrors = e2;
    a2.close();
    b.close();
    c.close();
  } finally {
    await sw.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + (i >> 9)) & 0xff);
}

async function blk(kind: 'file' | 'ram'): Promise<object> {
  const dir = mkdtempSync('/dev/shm/vk-gf-blk-');
  const memFile = join(dir, 'v.mem');
  const disks: Disk[] = [];
  const bes: VhostUserBackend[] = [];
  const out: Record<string, unknown> = { kind };
  const open = async (name: string) => {
    const img = join(dir, `${name}.img`);
    writeFileSync(img, new Uint8Array(0));
    truncateSync(img, 64 * MiB);
    const disk = openDisk(kind === 'file' ? { file: img, serial: name } : { ramBytes: 64 * MiB, serial: name });
    const be = new VhostUserBackend(disk.device, { socket: join(dir, `${name}.sock`) });
    await be.start();
    disks.push(disk);
    bes.push(be);
    return { disk, be, sock: join(dir, `${name}.sock`) };
  };
  const connect = async (sock: string, memory: { file?: string }) => {
    const fe = await VhostUserFrontend.connect(sock);
    await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
    await fe.setupMemory(192 * MiB, memory);
    const q = await fe.startQueue(0, { size: 128 });
    return { fe, blk: new BlkClient(q), q };
  };
  try {
    const v = await open('victim');
    const o = await open('other');
    const fo = await connect(o.sock, {});
    const fds0 = fdCount();
    const fv = await connect(v.sock, { file: memFile });
    const sessionV = v.be.session!;
    // The other disk: 64 KiB written at each of 64 places, checked at the end.
    const written = new Map<number, Uint8Array>();
    const errs: string[] = [];
    const writeOther = async (k: number, seed: number) => {
      const d = pattern(64 * 1024, seed);
      const r = await fo.blk.write(BigInt(k * 1024), d);
      if (r.status !== BlkStatus.OK) errs.push(`other disk: write ${k} status ${r.status}`);
      written.set(k, d);
    };
    for (let k = 0; k < 16; k++) await writeOther(k, k);
    // Victim: 24 writes of 1 MiB in flight on the I/O threads, then its memory file is cut
    // to 64 KiB (the rings stay, the buffers go).
    const before = v.disk.engine.stats().submitted;
    for (let i = 0; i < 24; i++) fv.blk.submit(BlkReqType.OUT, BigInt(i * 2048), { data: pattern(MiB, i) });
    fv.q.publishAndKick();
    for (let i = 0; i < 1000 && v.disk.engine.stats().submitted < before + 24; i++) await new Promise((r) => setImmediate(r));
    out.executingAtTruncation = v.disk.engine.stats().executing;
    truncateSync(memFile, 64 * 1024);
    // The victim keeps asking (its frontend's memory is guarded too: it reads zeros).
    try {
      fv.blk.submit(BlkReqType.IN, 0n, { readLen: 4096 });
      fv.q.publishAndKick();
    } catch (e) {
      out.victimSubmitError = (e as Error).message;
    }
    // The other disk keeps serving meanwhile.
    for (let k = 16; k < 64; k++) await writeOther(k, k);
    out.sessionEnded = await until(() => v.be.session === null && sessionV.closed);
    out.lostLine = describeLine(lostLine());
    out.disconnectReason = logs.find((l) => l.session === sessionV.id && l.msg === 'frontend disconnected')?.reason ?? null;
    const st = v.disk.engine.stats();
    out.victimEngine = { guestMemoryLost: st.errors.guestMemoryLost, io: st.errors.io, ioerr: st.ioerr, ok: st.ok, inFlight: st.inFlight };
    out.epoch = guestFaultGuard().epoch;
    fv.fe.close();
    await until(() => fdCount() <= fds0 && fdsTo(memFile) === 0 && mapsOf(memFile) === 0, 2000);
    out.fds = { before: fds0, after: fdCount(), toMemFile: fdsTo(memFile) };
    out.mapsOfMemFile = mapsOf(memFile);
    // Everything the other disk was given reads back.
    let intact = 0;
    for (const [k, d] of written) {
      const r = await fo.blk.request(BlkReqType.IN, BigInt(k * 1024), { readLen: d.length });
      if (r.status === BlkStatus.OK && r.data && Buffer.from(r.data).equals(Buffer.from(d))) intact++;
      else errs.push(`other disk: read ${k} differs (status ${r.status})`);
    }
    out.other = { written: written.size, intact, errors: errs };
    // The victim's socket serves a new frontend.
    const fv2 = await connect(v.sock, {});
    const d = pattern(4096, 99);
    const w = await fv2.blk.write(4096n, d);
    const r = await fv2.blk.request(BlkReqType.IN, 4096n, { readLen: 4096 });
    out.newFrontend = { write: w.status, read: r.status, same: r.data !== undefined && Buffer.from(r.data).equals(Buffer.from(d)) };
    fv2.fe.close();
    fo.fe.close();
  } finally {
    for (const be of bes) await be.stop();
    for (const d of disks) d.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/**
 * A QEMU guest (TCG, busybox) on port q of a switch, its RAM a file (memory-backend-file,
 * share=on), pinging an address no one has (its ARP requests are broadcast). B floods
 * broadcasts (to q too) and talks with C. The test cuts the RAM file to 0 bytes: QEMU
 * itself may die of its own SIGBUS; this process and B↔C must not notice. QEMU is stopped
 * (SIGSTOP) around the cut, so that the switch touches the lost memory before QEMU's own
 * death could end the session (that race would otherwise decide whether the guard is used),
 * and continued (SIGCONT) once the session has ended.
 */
async function qemu(): Promise<object> {
  const dir = mkdtempSync('/dev/shm/vk-gf-qemu-');
  const sock = (n: string) => join(dir, `${n}.sock`);
  const memFile = join(dir, 'guest.ram');
  const GUEST = '52:54:00:00:01:01';
  const sw = await Switch.create({ dataplane: 'worker' });
  const out: Record<string, unknown> = {};
  let guest: Awaited<ReturnType<typeof startGuest>> | null = null;
  try {
    for (const n of ['q', 'b', 'c']) await sw.addVhostPort({ name: n, socket: sock(n) });
    const b = await NetGuest.connect(sock('b'), {});
    const c = await NetGuest.connect(sock('c'), {});
    b.send([ethFrame(BCAST, B, 60, 0)]);
    c.send([ethFrame(BCAST, C, 60, 0)]);
    const script = `
ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up || vk_fail "eth0 setup"
for i in 1 2 3 4; do ping 10.0.0.2 >/dev/null 2>&1 & done  # no one answers: ARP requests, broadcast
echo VK-PINGING
sleep 600
`;
    guest = await startGuest({ script, devices: [{ type: 'vhost-user-net', socket: sock('q'), mac: GUEST }], memoryFile: memFile, memoryMb: 256 });
    await guest.waitFor(/VK-PINGING/, 150_000);
    const sessionQ = sw.backend('q').session;
    out.sessionAtStart = sessionQ !== null;
    // The guest's pings reach B.
    let fromGuest = 0;
    const deadline = Date.now() + 20_000;
    while (fromGuest < 3 && Date.now() < deadline) {
      for (const f of await b.receive(1, 500)) if (srcOf(f.frame) === mac(GUEST)) fromGuest++;
    }
    out.guestFramesAtB = fromGuest;
    out.mapped = readFileSync('/proc/self/maps', 'utf8').includes(memFile);
    const pid = guest.process.pid!;
    // QEMU may have exited on its own by now (its guest script ends): the checks below say
    // what the backend did either way, so a missing process is not an error here.
    signalIfAlive(pid, 'SIGSTOP');
    // kill() only queues the signal: a vCPU thread running on another CPU may still touch
    // its RAM, and a SIGBUS it takes after the cut is dequeued before the SIGSTOP (QEMU then
    // dies first and the session ends by EOF). Cut only once every thread is stopped.
    await until(() => allStopped(pid), 5000);
    truncateSync(memFile, 0);
    const errs: string[] = [];
    const seq = { bc: 0, cb: 0 };
    const atC: Record<string, number> = {};
    const atB: Record<string, number> = {};
    for (let round = 0; round < 30; round++) {
      // Broadcasts from B go to q too: the switch writes into the guest's RX ring.
      b.send(Array.from({ length: 4 }, (_, i) => ethFrame(BCAST, B, 100, 700000 + round * 4 + i)));
      const bc0 = seq.bc;
      const bcN = b.send(Array.from({ length: 16 }, (_, i) => ethFrame(C, B, 300, bc0 + i)));
      seq.bc += bcN;
      const cb0 = seq.cb;
      const cbN = c.send(Array.from({ length: 16 }, (_, i) => ethFrame(B, C, 300, cb0 + i)));
      seq.cb += cbN;
      await take(c, { [B]: bcN }, atC, errs);
      await take(b, { [C]: cbN }, atB, errs);
      if (errs.length) break;
      await sleep(20);
    }
    out.bc = { sent: seq.bc, receivedInOrder: atC[mac(B)] ?? 0 };
    out.cb = { sent: seq.cb, receivedInOrder: atB[mac(C)] ?? 0 };
    out.errors = errs;
    out.sessionEnded = await until(() => sw.backend('q').session === null && (sessionQ === null || sessionQ.closed), 20_000);
    signalIfAlive(pid, 'SIGCONT');
    out.lostLine = describeLine(lostLine());
    out.disconnectReason = sessionQ ? (logs.find((l) => l.session === sessionQ.id && l.msg === 'frontend disconnected')?.reason ?? null) : null;
    const exit = await Promise.race([guest.exited, sleep(10_000).then(() => null)]);
    out.qemuExit = exit === null ? 'still running (killed)' : { code: exit.code, signal: exit.signal };
    if (exit === null) await guest.kill();
    await until(() => fdsTo(memFile) === 0 && mapsOf(memFile) === 0, 3000);
    out.fdsToMemFile = fdsTo(memFile);
    out.mapsOfMemFile = mapsOf(memFile);
    out.epoch = guestFaultGuard().epoch;
    b.close();
    c.close();
  } finally {
    if (guest?.running) await guest.kill();
    await sw.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/** Live migration: the frontend's dirty log (SET_LOG_BASE, an unsealed memfd) truncated under it. */
async function dirtylog(): Promise<object> {
  const dir = mkdtempSync('/dev/shm/vk-gf-log-');
  const out: Record<string, unknown> = {};
  const disk = openDisk({ ramBytes: 16 * MiB, serial: 'log' });
  const be = new VhostUserBackend(disk.device, { socket: join(dir, 'blk.sock') });
  await be.start();
  try {
    const fds0 = fdCount();
    const fe = await VhostUserFrontend.connect(join(dir, 'blk.sock'));
    await fe.negotiate({ features: ~bit(VIRTIO_F_RING_PACKED) });
    await fe.setupMemory(16 * MiB);
    const session = be.session!;
    const blk = new BlkClient(await fe.startQueue(0, { size: 64 }));
    const logBytes = (16 * MiB) / 4096 / 8;
    const logFd = createMemfd('vk-gf-log', logBytes, false);
    await fe.request(Req.SET_LOG_BASE, logArea.encode({ size: BigInt(logBytes), offset: 0n }), { fds: [logFd], reply: true });
    await fe.setFeatures(fe.features | bit(VHOST_F_LOG_ALL));
    out.before = (await blk.read(0n, 4096)).status;
    ftruncateSync(logFd, 0);
    // The next completion marks pages in the log: the mark faults, the guard recovers it.
    const after = await blk.request(BlkReqType.IN, 8n, { readLen: 4096, timeoutMs: 2000 }).then(
      (r) => r.status,
      (e: Error) => e.message,
    );
    out.after = after;
    out.sessionEnded = await until(() => be.session === null && session.closed);
    out.lostLine = logs.find((l) => l.msg === 'guest memory file truncated, ending the session')?.region ?? null;
    out.disconnectReason = logs.find((l) => l.session === session.id && l.msg === 'frontend disconnected')?.reason ?? null;
    fe.close();
    closeSync(logFd);
    await until(() => fdCount() <= fds0 && mapsOf('vk-gf-log') === 0, 2000);
    out.fds = { before: fds0, after: fdCount() };
    out.mapsOfLog = mapsOf('vk-gf-log');
  } finally {
    await be.stop();
    disk.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

const [what, p1, p2] = process.argv.slice(2);
let result: object;
if (what === 'unit') result = unit();
else if (what === 'net') result = await net(p1 as 'worker' | 'inline', p2 as 'split' | 'packed');
else if (what === 'blk') result = await blk(p1 as 'file' | 'ram');
else if (what === 'qemu') result = await qemu();
else if (what === 'dirtylog') result = await dirtylog();
else if (what === 'kill') {
  process.kill(process.pid, 'SIGBUS');
  await sleep(1000);
  result = { survived: true };
} else throw new Error(`unknown case ${what}`);
process.stdout.write(`${JSON.stringify(result, (_, v) => (typeof v === 'bigint' ? String(v) : v))}\n`);
process.exit(0);

/** Sends `sig` to `pid`; a process that is already gone (ESRCH) is not an error. */
/** Every thread of pid is stopped (state T in /proc), or the process is gone. */
function allStopped(pid: number): boolean {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return true; // gone: nothing of it runs
  }
  return tids.every((t) => {
    try {
      // state is the field after the parenthesized command name (which may hold spaces)
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      return /^[TtXZ]/.test(stat.slice(stat.lastIndexOf(')') + 2));
    } catch {
      return true; // the thread exited
    }
  });
}

function signalIfAlive(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}
