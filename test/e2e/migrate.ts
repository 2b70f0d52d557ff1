// Live migration of a QEMU guest between two QEMU processes on this machine, for the
// end-to-end tests: the source runs the guest, the destination waits with the same command
// line plus `-incoming unix:...` and `-S`, QMP `migrate` moves it. With -S the destination
// stays paused after the migration, so both RAM images can be saved (`pmemsave`) and compared
// page by page before the guest runs on (`cont`): a backend that wrote guest memory without
// marking the dirty log leaves pages that differ.
import { closeSync, openSync, readSync, rmSync } from 'node:fs';
import { buildInitramfs, findGuestKernel, startGuest, type Guest, type GuestDevice, type GuestOptions } from '../lib/guest.js';
import type { TempDir } from '../lib/peers.js';
import { Qmp } from './qmp.js';

/**
 * The guest's RAM: 256 MiB and 8 KiB. QEMU 7.2 under TCG loses some of the vCPU's own writes
 * during a migration when the RAM block is a multiple of 64 pages: its dirty-bitmap sync then
 * takes a fast path that clears the migration bits without resetting TCG's TLB, so a page the
 * vCPU keeps writing through a cached TLB entry is not sent again (seen here with no
 * vhost-user device at all: kernel pages, 13-29 of 65536 differing in 5 runs of 8). Any other
 * length takes the path that resets the TLB, and the images then match (0 in 6 runs), so a
 * page that differs is one that a backend wrote without logging it.
 */
export const GUEST_RAM_BYTES = 256 * 1024 * 1024 + 8192;

export interface MigratingGuest {
  src: Guest;
  /** Where the destination listens for the migration stream (`-incoming`). */
  incomingUri: string;
  srcQmp: Qmp;
  /** Starts the destination (paused, waiting for the migration) with these devices. */
  startDestination(devices: readonly GuestDevice[]): Promise<{ dst: Guest; dstQmp: Qmp }>;
  /** Both consoles, source then destination: the script's output before and after the move. */
  log(): string;
  kill(): Promise<void>;
}

export interface MigrationResult {
  /** query-migrate on the source once completed. */
  downtimeMs: number;
  totalMs: number;
  ramBytes: number;
  /** Guest-physical addresses of the 4 KiB pages that differ between source and destination. */
  differingPages: number[];
  /** For each differing page (at most 8): the byte ranges that differ and what each side holds there. */
  differences: string;
}

/** Resolves with the match of a console line; rejects at a VHOSTKIT-FAIL line or the timeout. */
export function consoleLine(g: Pick<Guest, 'waitFor'>, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return Promise.race([
    g.waitFor(re, timeoutMs),
    g.waitFor(/VHOSTKIT-FAIL.*/, timeoutMs + 1000).then((m) => {
      throw new Error(`guest failed: ${m[0]}`);
    }),
  ]);
}

let n = 0;

/** Boots the source guest (QMP on a socket in `tmp`) and prepares its destination's command line. */
export async function startMigratingGuest(
  tmp: TempDir,
  script: string,
  devices: readonly GuestDevice[],
  opts: Omit<GuestOptions, 'script' | 'initrd' | 'devices' | 'extraArgs' | 'memoryMb'> = {},
): Promise<MigratingGuest> {
  const kernel = opts.kernel ?? findGuestKernel();
  const initrd = await buildInitramfs({ script, kernel });
  const id = ++n;
  const srcQmpPath = tmp.join(`qmp-src-${id}.sock`);
  const dstQmpPath = tmp.join(`qmp-dst-${id}.sock`);
  const incoming = tmp.join(`migrate-${id}.sock`);
  // init_on_alloc=0: a Debian kernel zeroes every page it allocates, which would hide pages
  // that the backend wrote without logging them (the destination would rewrite them itself).
  const append = `init_on_alloc=0${opts.append ? ` ${opts.append}` : ''}`;
  const base = { ...opts, kernel, initrd, append, memoryMb: GUEST_RAM_BYTES / (1024 * 1024) };
  const src = await startGuest({ ...base, devices, name: `mig-src-${id}`, extraArgs: ['-qmp', `unix:${srcQmpPath},server=on,wait=off`] });
  let dst: Guest | null = null;
  let srcQmp: Qmp;
  try {
    srcQmp = await Qmp.connect(srcQmpPath);
  } catch (e) {
    await src.kill();
    throw e;
  }
  return {
    src,
    incomingUri: `unix:${incoming}`,
    srcQmp,
    async startDestination(dstDevices) {
      dst = await startGuest({
        ...base,
        devices: dstDevices,
        name: `mig-dst-${id}`,
        extraArgs: ['-qmp', `unix:${dstQmpPath},server=on,wait=off`, '-incoming', `unix:${incoming}`, '-S'],
      });
      const dstQmp = await Qmp.connect(dstQmpPath);
      return { dst, dstQmp };
    },
    log() {
      return `${src.log()}\n${dst?.log() ?? ''}`;
    },
    async kill() {
      srcQmp.close();
      await Promise.all([src.kill(), dst?.kill()]);
    },
  };
}

async function waitStatus(q: Qmp, cmd: 'query-migrate' | 'query-status', want: (r: Record<string, unknown>) => boolean, what: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await q.execute(cmd);
    if (want(r)) return r;
    if (r.status === 'failed' || r.status === 'cancelled') throw new Error(`migration ${String(r.status)}: ${JSON.stringify(r)}`);
    if (Date.now() > until) throw new Error(`${what} not reached within ${timeoutMs} ms: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/**
 * Migrates source to destination (which must have been started with startDestination), saves
 * both RAM images and compares them, then lets the destination run and quits the source.
 */
export async function migrate(g: MigratingGuest, dstQmp: Qmp, tmp: TempDir, timeoutMs = 60_000): Promise<MigrationResult> {
  const id = ++n;
  const ramBytes = GUEST_RAM_BYTES;
  // No bandwidth cap (QEMU 7.2 defaults to 128 MiB/s): the move takes one short pass.
  await g.srcQmp.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 1024 * 1024 * 1024, 'downtime-limit': 300 });
  await g.srcQmp.execute('migrate', { uri: g.incomingUri });
  const done = await waitStatus(g.srcQmp, 'query-migrate', (r) => r.status === 'completed', 'migration completed on the source', timeoutMs);
  await waitStatus(dstQmp, 'query-status', (r) => r.status === 'paused', 'destination paused after the migration (-S)', timeoutMs);
  const srcImg = tmp.join(`ram-src-${id}.bin`);
  const dstImg = tmp.join(`ram-dst-${id}.bin`);
  await g.srcQmp.execute('pmemsave', { val: 0, size: ramBytes, filename: srcImg });
  await dstQmp.execute('pmemsave', { val: 0, size: ramBytes, filename: dstImg });
  const differingPages = comparePages(srcImg, dstImg, ramBytes);
  const differences = describePages(srcImg, dstImg, differingPages.slice(0, 8));
  rmSync(srcImg, { force: true });
  rmSync(dstImg, { force: true });
  await dstQmp.execute('cont');
  await g.srcQmp.execute('quit').catch(() => undefined); // QEMU may close QMP before it answers
  return { downtimeMs: Number(done.downtime ?? -1), totalMs: Number(done['total-time'] ?? -1), ramBytes, differingPages, differences };
}

/** Guest-physical addresses of the 4 KiB pages at which two RAM images differ. */
export function comparePages(a: string, b: string, bytes: number): number[] {
  const PAGE = 4096;
  const CHUNK = 1 << 20;
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  const ba = Buffer.alloc(CHUNK);
  const bb = Buffer.alloc(CHUNK);
  const out: number[] = [];
  try {
    for (let off = 0; off < bytes; off += CHUNK) {
      const len = Math.min(CHUNK, bytes - off);
      if (readSync(fa, ba, 0, len, off) !== len || readSync(fb, bb, 0, len, off) !== len) throw new Error(`RAM image shorter than ${bytes} bytes`);
      for (let p = 0; p < len; p += PAGE) {
        if (ba.compare(bb, p, p + PAGE, p, p + PAGE) !== 0) out.push(off + p);
      }
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
  return out;
}

function readPage(path: string, gpa: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4096);
    readSync(fd, b, 0, 4096, gpa);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** The byte ranges at which each page differs, with a printable sample of each side. */
export function describePages(a: string, b: string, pages: readonly number[]): string {
  const sample = (buf: Buffer, from: number, to: number) => {
    const s = buf.subarray(from, Math.min(to, from + 48));
    return `${s.toString('hex')} "${s.toString('latin1').replace(/[^\x20-\x7e]/g, '.')}"`;
  };
  const lines: string[] = [];
  for (const gpa of pages) {
    const pa = readPage(a, gpa);
    const pb = readPage(b, gpa);
    const ranges: Array<[number, number]> = [];
    for (let i = 0; i < 4096; i++) {
      if (pa[i] === pb[i]) continue;
      const last = ranges[ranges.length - 1];
      if (last && i - last[1] <= 8) last[1] = i + 1;
      else ranges.push([i, i + 1]);
    }
    lines.push(`page 0x${gpa.toString(16)}: ${ranges.length} range(s) differ`);
    for (const [from, to] of ranges.slice(0, 4)) {
      lines.push(`  +0x${from.toString(16)}..+0x${to.toString(16)} (${to - from} bytes)`);
      lines.push(`    src ${sample(pa, from, to)}`);
      lines.push(`    dst ${sample(pb, from, to)}`);
    }
  }
  return lines.join('\n');
}
