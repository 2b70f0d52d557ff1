// Real QEMU guests for end-to-end tests: a Debian kernel, a busybox initramfs that runs a
// shell script given as a string, and vhost-user devices (virtio-net, virtio-blk) attached to
// whatever backend the test runs (ours, dpdk-testpmd, qemu-storage-daemon).
//
//   const r = await runScript('uname -r; vk_result cpus=$(nproc)', [], 60_000);
//   r.results.cpus === '1'
//
// Where things come from (see scripts/guest-kernel.sh and scripts/test-deps.sh):
// - kernel + modules: `scripts/guest-kernel.sh` unpacks Debian's linux-image package into
//   ~/.cache/vhostkit/guest/<release>/ (VHOSTKIT_CACHE_DIR or XDG_CACHE_HOME move the cache;
//   VHOSTKIT_GUEST_KERNEL_DIR names a kernel directory directly). A host that has
//   linux-image-amd64 installed (/boot/vmlinuz-R + /lib/modules/R) works too.
// - userspace: the host's static busybox (Debian package busybox-static).
// - the initramfs is written here, in TypeScript (newc cpio + zlib gzip): no cpio command.
//
// Facts this file relies on (QEMU 7.2, Debian 12 kernel 6.1, checked on this machine):
// - Debian's vmlinuz is XZ-compressed, and under TCG its in-guest decompression is slow: a
//   no-device guest reached userspace in about 9 s from the bzImage, 2.5-3 s from the
//   decompressed ELF (`vmlinux`, made by guest-kernel.sh), which QEMU boots through its PVH
//   entry (the kernel has CONFIG_PVH=y). The bzImage is used when vmlinux is absent.
// - the package ships no modules.dep (depmod runs in its postinst): module dependencies are
//   read from each .ko's .modinfo section ("depends=a,b"). Debian 12 modules are not
//   compressed; .ko.xz / .ko.zst / .ko.gz are decompressed too (xz / zstd commands, zlib).
// - under TCG QEMU 7.2 segfaults in vhost_net_start as the guest's virtio-net driver starts
//   when the NIC has MSI-X vectors (the default, and also vectors=2*Q+2 with mq=on): `vectors=0`
//   (legacy INTx) avoids it, multiqueue included. vhost-user-blk-pci works with MSI-X under TCG.
// - the guest's virtio_net enables min(queue pairs, online CPUs) pairs and busybox has no
//   ethtool -L: a multiqueue NIC needs `-smp` >= queues for the guest to use every pair.
// - /dev/kvm exists here but is not usable: a stock kernel hangs at boot under -accel kvm
//   with QEMU's default CPU (100% CPU in the host kernel, no output), and with `-cpu host`
//   (what KVM guests get here) QEMU aborts at once ("failed to set MSR 0x10a"). KVM is used
//   only after a bounded probe boot succeeded.
// - with `reconnect=1` on the chardev, a guest whose backend (testpmd) was stopped and
//   restarted 3 s later kept pinging (21 of 25 answered); QEMU prints "vhost VQ n ring
//   restore failed" on stderr meanwhile, which is harmless.
// - the serial console carries SeaBIOS escape codes (ESC c, ESC [2J...) in front of the first
//   line the guest prints: lines are matched after stripping escape sequences.
// - /dev/urandom blocks until the guest's crng is ready (about 1 s after boot under TCG with
//   the default qemu64 CPU, which has no RDRAND): avoid it in scripts that must be quick.

import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdirSync, readFileSync, readdirSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, posix } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { ManagedProcess, shellQuote, whichOrNull, type ExitStatus } from './process.js';
import { makeTempDir, requirePeer, type TempDir } from './peers.js';

// ---------------------------------------------------------------------------
// Errors, cache location
// ---------------------------------------------------------------------------

/** Something the guests need is not on this machine; `remedy` says what to run or install. */
export class GuestPrerequisiteError extends Error {
  constructor(
    readonly what: string,
    readonly remedy: string,
  ) {
    super(`${what}. ${remedy}`);
    this.name = 'GuestPrerequisiteError';
  }
}

/** Root of vhostkit's caches: $VHOSTKIT_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/vhostkit. */
export function vhostkitCacheDir(): string {
  const env = process.env.VHOSTKIT_CACHE_DIR;
  if (env) return env;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'vhostkit');
}

const FETCH_REMEDY = 'Fetch one (as root, ~10 s, no host initramfs build): bash scripts/guest-kernel.sh ' + '(or bash scripts/test-deps.sh, which also installs busybox-static and xz-utils)';

// ---------------------------------------------------------------------------
// Guest kernel
// ---------------------------------------------------------------------------

export interface GuestKernel {
  /** Directory it was found in (the guest-kernel.sh cache dir, or "/" for the host's /boot). */
  readonly dir: string;
  /** Kernel release, e.g. "6.1.0-56-amd64". */
  readonly release: string;
  /** What QEMU boots (`-kernel`): `vmlinux` (PVH entry) when present, else the bzImage. */
  readonly image: string;
  /** True when `image` is the decompressed ELF booted through its PVH entry. */
  readonly pvh: boolean;
  /** The bzImage (boot/vmlinuz-<release>). */
  readonly bzImage: string;
  /** lib/modules/<release>. */
  readonly modulesDir: string;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** A guest kernel in `dir` (layout of scripts/guest-kernel.sh), or null. */
function kernelInDir(dir: string): GuestKernel | null {
  let release: string | null = null;
  if (isFile(join(dir, 'release'))) release = readFileSync(join(dir, 'release'), 'utf8').trim();
  if (!release && isDir(join(dir, 'lib', 'modules'))) {
    release = readdirSync(join(dir, 'lib', 'modules')).find((r) => isFile(join(dir, 'boot', `vmlinuz-${r}`))) ?? null;
  }
  if (!release) return null;
  const bzImage = join(dir, 'boot', `vmlinuz-${release}`);
  const modulesDir = join(dir, 'lib', 'modules', release);
  if (!isFile(bzImage) || !isDir(modulesDir)) return null;
  const vmlinux = join(dir, 'vmlinux');
  const pvh = isFile(vmlinux);
  return { dir, release, image: pvh ? vmlinux : bzImage, pvh, bzImage, modulesDir };
}

/**
 * Finds the guest kernel: `dir` if given, else $VHOSTKIT_GUEST_KERNEL_DIR, else the newest
 * complete directory under <cache>/guest/ (scripts/guest-kernel.sh), else a host kernel
 * installed by linux-image-amd64 (/boot/vmlinuz-R with /lib/modules/R). Throws
 * GuestPrerequisiteError naming the script to run when there is none.
 */
export function findGuestKernel(dir?: string): GuestKernel {
  const explicit = dir ?? process.env.VHOSTKIT_GUEST_KERNEL_DIR;
  if (explicit) {
    const k = kernelInDir(explicit);
    if (!k) {
      throw new GuestPrerequisiteError(`no guest kernel in ${explicit} (expected boot/vmlinuz-<release> and lib/modules/<release>)`, FETCH_REMEDY);
    }
    return k;
  }
  const root = join(vhostkitCacheDir(), 'guest');
  if (isDir(root)) {
    const releases = readdirSync(root)
      .filter((r) => isFile(join(root, r, '.complete')))
      .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
    for (const r of releases) {
      const k = kernelInDir(join(root, r));
      if (k) return k;
    }
  }
  if (isDir('/boot') && isDir('/lib/modules')) {
    const releases = readdirSync('/lib/modules')
      .filter((r) => isFile(join('/boot', `vmlinuz-${r}`)) && isDir(join('/lib/modules', r, 'kernel', 'drivers', 'virtio')))
      .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
    if (releases.length > 0) {
      const r = releases[0];
      return {
        dir: '/',
        release: r,
        image: join('/boot', `vmlinuz-${r}`),
        pvh: false,
        bzImage: join('/boot', `vmlinuz-${r}`),
        modulesDir: join('/lib/modules', r),
      };
    }
  }
  throw new GuestPrerequisiteError(`no guest kernel found (looked in ${root} and /boot)`, FETCH_REMEDY);
}

// ---------------------------------------------------------------------------
// Kernel modules
// ---------------------------------------------------------------------------

/** The virtio modules a guest loads by default, in a load order that works. */
export const DEFAULT_GUEST_MODULES: readonly string[] = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_blk',
];

const MODULE_FILE_RE = /\.ko(\.xz|\.zst|\.gz)?$/;

function moduleName(file: string): string {
  return basename(file).replace(MODULE_FILE_RE, '').replace(/-/g, '_');
}

interface ModuleIndex {
  /** Normalized name → absolute path. */
  byName: Map<string, string>;
  /** From modules.dep when the tree has one: name → direct and indirect dependencies. */
  dep: Map<string, string[]> | null;
  builtin: Set<string>;
}

const moduleIndexes = new Map<string, ModuleIndex>();

function moduleIndex(modulesDir: string): ModuleIndex {
  const cached = moduleIndexes.get(modulesDir);
  if (cached) return cached;
  const byName = new Map<string, string>();
  const kernelDir = join(modulesDir, 'kernel');
  const roots = isDir(kernelDir) ? [kernelDir] : [modulesDir];
  for (const root of roots) {
    for (const rel of readdirSync(root, { recursive: true }) as string[]) {
      if (MODULE_FILE_RE.test(rel)) byName.set(moduleName(rel), join(root, rel));
    }
  }
  let dep: Map<string, string[]> | null = null;
  const depFile = join(modulesDir, 'modules.dep');
  if (isFile(depFile)) {
    dep = new Map();
    for (const line of readFileSync(depFile, 'utf8').split('\n')) {
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const deps = line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(moduleName);
      dep.set(moduleName(line.slice(0, colon)), deps);
    }
  }
  const builtin = new Set<string>();
  const builtinFile = join(modulesDir, 'modules.builtin');
  if (isFile(builtinFile)) {
    for (const line of readFileSync(builtinFile, 'utf8').split('\n')) if (line.trim()) builtin.add(moduleName(line.trim()));
  }
  const idx = { byName, dep, builtin };
  moduleIndexes.set(modulesDir, idx);
  return idx;
}

/** A module file's contents, decompressed. */
function readModuleFile(path: string): Buffer {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.ko.gz')) return gunzipSync(readFileSync(path));
  const tool = path.endsWith('.ko.xz') ? 'xz' : 'zstd';
  const pkg = tool === 'xz' ? 'xz-utils' : 'zstd';
  const exe = whichOrNull(tool);
  if (!exe) {
    throw new GuestPrerequisiteError(`${path} is compressed and the ${tool} command is missing`, `apt-get install -y ${pkg}`);
  }
  return execFileSync(exe, ['-dc', path], { maxBuffer: 256 * 1024 * 1024 });
}

/** The NUL-separated "key=value" strings of an ELF64 module's .modinfo section. */
export function readModinfo(ko: Buffer): Map<string, string[]> {
  const info = new Map<string, string[]>();
  if (ko.length < 64 || ko.readUInt32BE(0) !== 0x7f454c46 || ko[4] !== 2 || ko[5] !== 1) {
    throw new Error('not a little-endian ELF64 object');
  }
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const shnum = ko.readUInt16LE(0x3c);
  const shstrndx = ko.readUInt16LE(0x3e);
  if (shoff + shnum * shentsize > ko.length || shstrndx >= shnum) throw new Error('truncated ELF section table');
  const section = (i: number): { name: number; offset: number; size: number } => {
    const base = shoff + i * shentsize;
    return {
      name: ko.readUInt32LE(base),
      offset: Number(ko.readBigUInt64LE(base + 0x18)),
      size: Number(ko.readBigUInt64LE(base + 0x20)),
    };
  };
  const strtab = section(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameStart = strtab.offset + s.name;
    const nameEnd = ko.indexOf(0, nameStart);
    if (ko.toString('latin1', nameStart, nameEnd) !== '.modinfo') continue;
    for (const entry of ko.toString('latin1', s.offset, s.offset + s.size).split('\0')) {
      const eq = entry.indexOf('=');
      if (eq <= 0) continue;
      const k = entry.slice(0, eq);
      info.set(k, [...(info.get(k) ?? []), entry.slice(eq + 1)]);
    }
  }
  return info;
}

export interface ResolvedModule {
  name: string;
  path: string;
  data: Buffer;
}

/**
 * The modules to load for `names`, dependencies first (from modules.dep when present, else
 * from each module's .modinfo "depends="), each once, in an order insmod accepts. Modules
 * built into the kernel (modules.builtin) are left out.
 */
export function resolveModules(kernel: GuestKernel, names: readonly string[]): ResolvedModule[] {
  const idx = moduleIndex(kernel.modulesDir);
  const out: ResolvedModule[] = [];
  const seen = new Set<string>();
  const visit = (raw: string, chain: string[]): void => {
    const name = raw.replace(/-/g, '_');
    if (seen.has(name)) return;
    seen.add(name);
    const path = idx.byName.get(name);
    if (!path) {
      if (idx.builtin.has(name)) return;
      const via = chain.length > 0 ? ` (needed by ${chain.join(' <- ')})` : '';
      throw new GuestPrerequisiteError(`kernel module ${name}${via} is not in ${kernel.modulesDir}`, FETCH_REMEDY);
    }
    const data = readModuleFile(path);
    let deps: string[];
    if (idx.dep?.has(name)) {
      deps = idx.dep.get(name) as string[];
    } else {
      deps = (readModinfo(data).get('depends') ?? []).flatMap((d) => d.split(',')).filter(Boolean);
    }
    for (const d of deps) visit(d, [name, ...chain]);
    out.push({ name, path, data });
  };
  for (const n of names) visit(n, []);
  return out;
}

// ---------------------------------------------------------------------------
// Busybox
// ---------------------------------------------------------------------------

/** True when `exe` is an ELF file without a PT_INTERP program header (statically linked). */
function isStaticElf(exe: string): boolean {
  const b = readFileSync(exe);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length) return false;
    if (b.readUInt32LE(off) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/** The host's static busybox ($VHOSTKIT_BUSYBOX, /usr/bin/busybox or /bin/busybox). */
export function findBusybox(): string {
  const candidates = process.env.VHOSTKIT_BUSYBOX ? [process.env.VHOSTKIT_BUSYBOX] : ['/usr/bin/busybox', '/bin/busybox'];
  let dynamic: string | null = null;
  for (const c of candidates) {
    if (!isFile(c)) continue;
    if (isStaticElf(c)) return c;
    dynamic = c;
  }
  throw new GuestPrerequisiteError(
    dynamic ? `${dynamic} is dynamically linked; the guest needs a static busybox` : 'busybox is not installed',
    'Install the Debian package busybox-static: apt-get install -y busybox-static',
  );
}

// ---------------------------------------------------------------------------
// cpio (newc) writer
// ---------------------------------------------------------------------------

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer | string; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/**
 * A newc ("070701") cpio archive of `entries` in the given order, ending with TRAILER!!!.
 * Owner root, mtime 0, inode numbers from 1: the same entries give the same bytes. Paths are
 * relative to the archive root (a leading "/" is dropped).
 */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 0;
  const add = (name: string, mode: number, nlink: number, data: Buffer, rdevMajor = 0, rdevMinor = 0, inode = ++ino): void => {
    const nameBuf = Buffer.from(`${name}\0`, 'utf8');
    const fields = [inode, mode, 0, 0, nlink, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBuf.length, 0];
    const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`, 'latin1');
    parts.push(header, nameBuf, Buffer.alloc(pad4(header.length + nameBuf.length)), data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (name.length === 0) throw new Error('cpio: empty path');
    switch (e.kind) {
      case 'dir':
        add(name, S_IFDIR | (e.mode ?? 0o755), 2, Buffer.alloc(0));
        break;
      case 'file':
        add(name, S_IFREG | (e.mode ?? 0o644), 1, typeof e.data === 'string' ? Buffer.from(e.data, 'utf8') : e.data);
        break;
      case 'symlink':
        add(name, S_IFLNK | 0o777, 1, Buffer.from(e.target, 'utf8'));
        break;
      case 'char':
        add(name, S_IFCHR | (e.mode ?? 0o600), 1, Buffer.alloc(0), e.major, e.minor);
        break;
    }
  }
  add('TRAILER!!!', 0, 1, Buffer.alloc(0), 0, 0, 0);
  return Buffer.concat(parts);
}

/** Adds a 'dir' entry for every missing parent of every entry, parents first; drops repeated dirs. */
function withParentDirs(entries: readonly CpioEntry[]): CpioEntry[] {
  const dirs = new Set<string>();
  const out: CpioEntry[] = [];
  const ensure = (dir: string): void => {
    if (dir === '.' || dir === '' || dir === '/' || dirs.has(dir)) return;
    ensure(posix.dirname(dir));
    dirs.add(dir);
    out.push({ kind: 'dir', path: dir });
  };
  for (const e of entries) {
    const p = e.path.replace(/^\/+/, '').replace(/\/+$/, '');
    ensure(posix.dirname(p));
    if (e.kind === 'dir') {
      if (dirs.has(p)) continue;
      dirs.add(p);
    }
    out.push({ ...e, path: p });
  }
  return out;
}

// ---------------------------------------------------------------------------
// initramfs
// ---------------------------------------------------------------------------

/** Console markers printed by the generated /init and by the guest helper functions. */
export const GUEST_MARKERS = {
  /** Modules loaded; the test script starts. Followed by the guest's uptime in seconds. */
  booted: 'VHOSTKIT-BOOTED',
  /** The script ended; followed by its exit code. Then /init powers off. */
  exit: 'VHOSTKIT-EXIT',
  /** `vk_fail` (or a failed insmod): runScript rejects at once. */
  fail: 'VHOSTKIT-FAIL',
  /** `vk_result key=value ...`: collected into `results`. */
  result: 'VHOSTKIT-RESULT',
} as const;

/**
 * Shell functions the script can use (sourced before it runs):
 * - `vk_result key=value ...`  prints "VHOSTKIT-RESULT key=value ..." (see parseGuestResults)
 * - `vk_fail message`          prints "VHOSTKIT-FAIL message" and exits the script with 1
 * - `vk_feature FILE BIT`      prints 1 or 0: bit BIT of a virtio features file in sysfs
 *                              (/sys/class/net/eth0/device/features, /sys/block/vda/device/features)
 * - `vk_wait_path PATH [SECS]` waits (default 10 s) until PATH exists; fails if it does not
 * - `vk_hold PORT COUNT SECS`  a server's end: returns once COUNT peers have said they are
 *                              done (`vk_release`) on TCP PORT, or after SECS in all (then
 *                              status 1), so a server guest stays up as long as its clients
 *                              need it and no longer
 * - `vk_release HOST PORT`     a client's end: tells the server at HOST it is done
 */
export const GUEST_SHELL_LIB = `# vhostkit guest helpers (test/lib/guest.ts)
vk_result() { echo "VHOSTKIT-RESULT $*"; }
vk_fail() { echo "VHOSTKIT-FAIL $*"; exit 1; }
vk_feature() { cut -c "$(($2 + 1))" "$1"; }
vk_wait_path() {
  _vk_n=$(( \${2:-10} * 10 ))
  while [ ! -e "$1" ] && [ "$_vk_n" -gt 0 ]; do usleep 100000; _vk_n=$((_vk_n - 1)); done
  [ -e "$1" ]
}
vk_hold() {
  _vk_end=$(( $(cut -d. -f1 /proc/uptime) + $3 )); _vk_k=0
  while [ "$_vk_k" -lt "$2" ]; do
    _vk_left=$(( _vk_end - $(cut -d. -f1 /proc/uptime) ))
    [ "$_vk_left" -gt 0 ] || return 1
    timeout "$_vk_left" nc -l -p "$1" >/dev/null 2>&1 && _vk_k=$((_vk_k + 1))
  done
}
vk_release() {
  _vk_i=0
  until echo done | nc -w 1 "$1" "$2" >/dev/null 2>&1; do
    _vk_i=$((_vk_i + 1)); [ "$_vk_i" -lt 10 ] || return 1; sleep 1
  done
}
`;

function initScript(modules: readonly string[]): string {
  return `#!/bin/sh
# vhostkit guest /init (generated by test/lib/guest.ts)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
for m in ${modules.join(' ')}; do
  insmod /lib/modules/vhostkit/$m.ko || echo "VHOSTKIT-FAIL insmod $m"
done
ip link set lo up 2>/dev/null
hostname vhostkit-guest
echo "VHOSTKIT-BOOTED $(cut -d' ' -f1 /proc/uptime)"
( . /vhostkit/lib.sh; . /vhostkit/script.sh )
echo "VHOSTKIT-EXIT $?"
poweroff -f
`;
}

export interface InitramfsOptions {
  /** The test: a busybox sh script, run after the modules are loaded (helpers: GUEST_SHELL_LIB). */
  script: string;
  /** Default: findGuestKernel(). */
  kernel?: GuestKernel;
  /** Modules to load (dependencies are added). Default DEFAULT_GUEST_MODULES. */
  modules?: readonly string[];
  /** Extra files for the guest (parents are created). */
  files?: ReadonlyArray<{ path: string; data: Buffer | string; mode?: number }>;
  /** Where images are cached. Default <cache>/initramfs. */
  cacheDir?: string;
}

const MAX_CACHED_IMAGES = 200;

interface BaseImage {
  hash: string;
  gz: Buffer;
}
const baseImages = new Map<string, BaseImage>();

function writeAtomically(path: string, data: Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

function pruneCache(dir: string): void {
  let files: { path: string; mtime: number }[];
  try {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.cpio.gz'))
      .map((f) => ({ path: join(dir, f), mtime: statSync(join(dir, f)).mtimeMs }));
  } catch {
    return;
  }
  if (files.length <= MAX_CACHED_IMAGES) return;
  files.sort((a, b) => a.mtime - b.mtime);
  for (const f of files.slice(0, files.length - MAX_CACHED_IMAGES)) {
    try {
      unlinkSync(f.path);
    } catch {
      // another process pruned it
    }
  }
}

/** busybox + applet links + device nodes + modules + /init, gzip'd; cached in memory per kernel+modules. */
function baseImage(kernel: GuestKernel, moduleNames: readonly string[]): BaseImage {
  const busybox = findBusybox();
  const st = statSync(busybox);
  const key = JSON.stringify([kernel.modulesDir, moduleNames, busybox, st.size, st.mtimeMs]);
  const cached = baseImages.get(key);
  if (cached) return cached;
  const modules = resolveModules(kernel, moduleNames);
  const applets = execFileSync(busybox, ['--list-full'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && l !== 'bin/busybox' && !l.includes('..'));
  const entries: CpioEntry[] = [
    ...['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'root', 'mnt', 'etc', 'lib/modules/vhostkit', 'vhostkit'].map((path): CpioEntry => ({
      kind: 'dir',
      path,
      mode: path === 'tmp' ? 0o1777 : 0o755,
    })),
    { kind: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
    { kind: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { kind: 'file', path: 'bin/busybox', data: readFileSync(busybox), mode: 0o755 },
    ...applets.map((a): CpioEntry => ({ kind: 'symlink', path: a, target: '/bin/busybox' })),
    ...modules.map((m): CpioEntry => ({ kind: 'file', path: `lib/modules/vhostkit/${m.name}.ko`, data: m.data })),
    { kind: 'file', path: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\n' },
    { kind: 'file', path: 'etc/group', data: 'root:x:0:\n' },
    { kind: 'file', path: 'vhostkit/lib.sh', data: GUEST_SHELL_LIB, mode: 0o644 },
    { kind: 'file', path: 'init', data: initScript(modules.map((m) => m.name)), mode: 0o755 },
  ];
  const cpio = writeCpio(withParentDirs(entries));
  const base = { hash: createHash('sha256').update(cpio).digest('hex'), gz: gzipSync(cpio, { level: 6 }) };
  baseImages.set(key, base);
  return base;
}

/**
 * Builds (or finds in the cache) a gzip'd newc initramfs that boots to the test script:
 * static busybox with its applet links, /dev/console and /dev/null, the virtio modules (with
 * their dependencies, decompressed), and an /init that mounts proc, sysfs and devtmpfs, insmods
 * the modules in order, prints "VHOSTKIT-BOOTED <uptime>", runs `opts.script` (busybox sh,
 * after sourcing GUEST_SHELL_LIB) with its output on the console, prints "VHOSTKIT-EXIT <rc>",
 * and powers off (`poweroff -f`, which does not sync: call `sync` in the script if it wrote
 * buffered data to a disk).
 *
 * The image is two concatenated gzip'd cpio archives (the kernel unpacks both): the shared
 * base, and a small one with /vhostkit/script.sh and `opts.files`. It is cached as
 * `<cacheDir>/<sha256 of both archives>.cpio.gz` and its path returned.
 */
export async function buildInitramfs(opts: InitramfsOptions): Promise<string> {
  const kernel = opts.kernel ?? findGuestKernel();
  const base = baseImage(kernel, opts.modules ?? DEFAULT_GUEST_MODULES);
  const overlay = writeCpio(
    withParentDirs([
      { kind: 'file', path: 'vhostkit/script.sh', data: opts.script, mode: 0o755 },
      ...(opts.files ?? []).map((f): CpioEntry => ({ kind: 'file', path: f.path, data: f.data, mode: f.mode })),
    ]),
  );
  const hash = createHash('sha256').update(base.hash).update(overlay).digest('hex').slice(0, 32);
  const dir = opts.cacheDir ?? join(vhostkitCacheDir(), 'initramfs');
  const path = join(dir, `${hash}.cpio.gz`);
  if (!isFile(path)) {
    writeAtomically(path, Buffer.concat([base.gz, gzipSync(overlay, { level: 6 })]));
    pruneCache(dir);
  }
  return path;
}

// ---------------------------------------------------------------------------
// Devices and the QEMU command line
// ---------------------------------------------------------------------------

export type QemuPropValue = string | number | boolean;

interface ChardevOptions {
  /** vhost-user socket path. */
  socket: string;
  /** QEMU reconnects to a restarted backend (the backend is the server): `reconnect=N` (true = 1 s). */
  reconnect?: boolean | number;
  /** QEMU listens on `socket` (`server=on,wait=off`) and the backend connects. */
  server?: boolean;
  /** Extra `-device` properties, merged over the defaults (e.g. { rx_queue_size: 1024 }). */
  props?: Record<string, QemuPropValue>;
}

export interface VhostUserNetDevice extends ChardevOptions {
  type: 'vhost-user-net';
  mac: string;
  /** `packed=on` (offer VIRTIO_F_RING_PACKED, bit 34). */
  packed?: boolean;
  /** Queue pairs (`-netdev queues=Q`, `mq=on` when > 1). Default 1. */
  queues?: number;
}

export interface VhostUserBlkDevice extends ChardevOptions {
  type: 'vhost-user-blk';
  packed?: boolean;
  /** `num-queues=N`. Default: QEMU's (1). */
  numQueues?: number;
}

export type GuestDevice = VhostUserNetDevice | VhostUserBlkDevice;

export type GuestAccel = 'tcg' | 'kvm';

function qemuValue(v: QemuPropValue): string {
  const s = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
  return s.replace(/,/g, ',,');
}

function props(entries: Map<string, QemuPropValue>): string {
  return [...entries].map(([k, v]) => `${k}=${qemuValue(v)}`).join(',');
}

function chardevArg(id: string, d: ChardevOptions): string {
  if (d.server && d.reconnect) throw new Error(`${d.socket}: reconnect applies to a client chardev, not with server: true`);
  let s = `socket,id=${id},path=${qemuValue(d.socket)}`;
  if (d.reconnect) s += `,reconnect=${d.reconnect === true ? 1 : d.reconnect}`;
  if (d.server) s += ',server=on,wait=off';
  return s;
}

/** The `-chardev`/`-netdev`/`-device` arguments of `devices` (exported for documentation and tests). */
export function deviceArgs(devices: readonly GuestDevice[], accel: GuestAccel): string[] {
  const args: string[] = [];
  devices.forEach((d, i) => {
    const chr = `chr${i}`;
    args.push('-chardev', chardevArg(chr, d));
    if (d.type === 'vhost-user-net') {
      const q = d.queues ?? 1;
      if (!Number.isInteger(q) || q < 1) throw new Error(`queues must be an integer >= 1, got ${q}`);
      if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(d.mac)) throw new Error(`bad MAC address ${d.mac}`);
      args.push('-netdev', `vhost-user,id=net${i},chardev=${chr}${q > 1 ? `,queues=${q}` : ''}`);
      const p = new Map<string, QemuPropValue>([
        ['netdev', `net${i}`],
        ['id', `dev${i}`],
        ['mac', d.mac],
        // No iPXE option ROM: nothing PXE-boots, and SeaBIOS skips loading it.
        ['romfile', ''],
      ]);
      // TCG: QEMU 7.2 segfaults in vhost_net_start with MSI-X; legacy INTx works (mq too).
      if (accel === 'tcg') p.set('vectors', 0);
      else if (q > 1) p.set('vectors', 2 * q + 2);
      if (d.packed) p.set('packed', 'on');
      if (q > 1) p.set('mq', 'on');
      for (const [k, v] of Object.entries(d.props ?? {})) p.set(k, v);
      args.push('-device', `virtio-net-pci,${props(p)}`);
    } else if (d.type === 'vhost-user-blk') {
      const p = new Map<string, QemuPropValue>([
        ['chardev', chr],
        ['id', `dev${i}`],
      ]);
      if (d.numQueues !== undefined) {
        if (!Number.isInteger(d.numQueues) || d.numQueues < 1) throw new Error(`numQueues must be an integer >= 1, got ${d.numQueues}`);
        p.set('num-queues', d.numQueues);
      }
      if (d.packed) p.set('packed', 'on');
      for (const [k, v] of Object.entries(d.props ?? {})) p.set(k, v);
      args.push('-device', `vhost-user-blk-pci,${props(p)}`);
    } else {
      throw new Error(`unknown guest device type ${String((d as { type: unknown }).type)}`);
    }
  });
  return args;
}

export interface GuestQemuConfig {
  qemu: string;
  kernel: GuestKernel;
  initrd: string;
  accel: GuestAccel;
  memoryMb: number;
  /** guest RAM in this file (memory-backend-file, shared) instead of a memfd */
  memoryFile?: string;
  smp: number;
  append: string;
  serialLog: string;
  devices: readonly GuestDevice[];
  name: string;
  extraArgs: readonly string[];
}

/**
 * The QEMU argv of a guest. The serial port is a stdio chardev (QEMU's stdout, read line by
 * line by ManagedProcess) that also logs to `serialLog` (`logfile=`), so the file holds the
 * same text as a `-serial file:LOG` would.
 */
export function guestQemuArgv(c: GuestQemuConfig): string[] {
  return [
    c.qemu,
    '-name',
    c.name,
    '-accel',
    c.accel,
    ...(c.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-smp',
    String(c.smp),
    '-m',
    `${c.memoryMb}M`,
    '-object',
    c.memoryFile !== undefined ? `memory-backend-file,id=mem,size=${c.memoryMb}M,mem-path=${qemuValue(c.memoryFile)},share=on` : `memory-backend-memfd,id=mem,size=${c.memoryMb}M,share=on`,
    '-numa',
    'node,memdev=mem',
    '-kernel',
    c.kernel.image,
    '-initrd',
    c.initrd,
    '-append',
    c.append,
    '-nographic',
    '-no-reboot',
    '-nodefaults',
    '-monitor',
    'none',
    '-chardev',
    `stdio,id=serial0,signal=off,logfile=${qemuValue(c.serialLog)}`,
    '-serial',
    'chardev:serial0',
    ...deviceArgs(c.devices, c.accel),
    ...c.extraArgs,
  ];
}

// ---------------------------------------------------------------------------
// Console text
// ---------------------------------------------------------------------------

// CSI sequences (ESC [ ... final), two-character escapes (ESC c, ESC 7...), OSC strings.
// eslint-disable-next-line no-control-regex
const ESCAPE_RE = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -/]*[0-~]|[\x00-\x08\x0b-\x1f\x7f]/g;

/** A console line without terminal escape sequences and control characters (what `grep -a` would let a regex see as text). */
export function cleanConsoleLine(line: string): string {
  return line.replace(ESCAPE_RE, '');
}

/**
 * The `key=value` pairs of every "VHOSTKIT-RESULT k=v k2=v2" line (later keys win). A word
 * without '=' continues the previous value: "VHOSTKIT-RESULT os=Linux 6.1" gives os="Linux 6.1".
 */
export function parseGuestResults(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = cleanConsoleLine(raw);
    const at = line.indexOf(`${GUEST_MARKERS.result} `);
    if (at < 0) continue;
    let last: string | null = null;
    for (const word of line
      .slice(at + GUEST_MARKERS.result.length + 1)
      .trim()
      .split(/\s+/)) {
      const eq = word.indexOf('=');
      if (eq > 0) {
        last = word.slice(0, eq);
        out[last] = word.slice(eq + 1);
      } else if (last !== null && word) {
        out[last] += ` ${word}`;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Accelerator
// ---------------------------------------------------------------------------

export interface AccelChoice {
  accel: GuestAccel;
  /** Why: "VHOSTKIT_ACCEL=tcg", "no usable /dev/kvm", "probe boot ok in 1234 ms", "cached: ...". */
  reason: string;
}

/** Bound of the KVM probe boot: a working KVM boots this guest in about a second. */
export const KVM_PROBE_TIMEOUT_MS = 8000;

let accelChoice: Promise<AccelChoice> | null = null;

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

async function probeKvm(kernel: GuestKernel, qemu: string): Promise<AccelChoice> {
  const initrd = await buildInitramfs({ script: 'true', kernel, modules: [] });
  const started = Date.now();
  const guest = await startGuest({ kernel, initrd, accel: 'kvm', memoryMb: 128, name: 'vhostkit-kvm-probe', qemu });
  try {
    await guest.waitFor(new RegExp(GUEST_MARKERS.exit), KVM_PROBE_TIMEOUT_MS);
    return { accel: 'kvm', reason: `KVM probe boot reached userspace in ${Date.now() - started} ms` };
  } catch {
    const tail = guest.tail(300).replace(/\s+/g, ' ').trim() || 'no output';
    const st = guest.process.exitStatus;
    const how = st ? `QEMU ${st.signal ? `was killed by ${st.signal}` : `exited with code ${st.code}`} after ${Date.now() - started} ms` : `no userspace within ${KVM_PROBE_TIMEOUT_MS} ms`;
    return { accel: 'tcg', reason: `KVM probe boot failed: ${how} (${tail})` };
  } finally {
    await guest.kill();
  }
}

/**
 * TCG or KVM for guests. VHOSTKIT_ACCEL=tcg|kvm forces it. Otherwise KVM is chosen only if
 * /dev/kvm is readable and writable AND a probe guest (no devices, `true` as its script)
 * boots to userspace under -accel kvm within KVM_PROBE_TIMEOUT_MS. The answer is kept in
 * memory and in <cache>/accel.json, keyed by host boot id, QEMU binary and guest kernel, so
 * the probe runs once per host boot.
 */
export function chooseAccel(kernel?: GuestKernel): Promise<AccelChoice> {
  const forced = process.env.VHOSTKIT_ACCEL;
  if (forced) {
    if (forced !== 'tcg' && forced !== 'kvm') {
      return Promise.reject(new Error(`VHOSTKIT_ACCEL must be tcg or kvm, got ${JSON.stringify(forced)}`));
    }
    return Promise.resolve({ accel: forced, reason: `VHOSTKIT_ACCEL=${forced}` });
  }
  accelChoice ??= (async (): Promise<AccelChoice> => {
    try {
      accessSync('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK);
    } catch {
      return { accel: 'tcg', reason: 'no usable /dev/kvm' };
    }
    const k = kernel ?? findGuestKernel();
    const qemu = requirePeer('qemu-system-x86_64');
    const qst = statSync(qemu);
    const kst = statSync(k.image);
    const key = JSON.stringify({ boot: bootId(), qemu, qsize: qst.size, qmtime: qst.mtimeMs, kernel: k.image, ksize: kst.size });
    const file = join(vhostkitCacheDir(), 'accel.json');
    try {
      const c = JSON.parse(readFileSync(file, 'utf8')) as { key?: string; accel?: GuestAccel; reason?: string };
      if (c.key === key && (c.accel === 'tcg' || c.accel === 'kvm')) return { accel: c.accel, reason: `cached: ${c.reason}` };
    } catch {
      // no cache yet
    }
    const choice = await probeKvm(k, qemu);
    try {
      writeAtomically(file, Buffer.from(JSON.stringify({ key, ...choice, at: new Date().toISOString() }, null, 1)));
    } catch {
      // a read-only cache only costs a probe next time
    }
    return choice;
  })();
  // A failure (no kernel, no QEMU) is not remembered: the next call tries again.
  accelChoice.catch(() => {
    accelChoice = null;
  });
  return accelChoice;
}

// ---------------------------------------------------------------------------
// Guest
// ---------------------------------------------------------------------------

export interface GuestOptions {
  /** The initramfs to boot (buildInitramfs). Either this or `script`. */
  initrd?: string;
  /** A script to build an initramfs for (with `initramfs` options). */
  script?: string;
  initramfs?: Omit<InitramfsOptions, 'script' | 'kernel'>;
  devices?: readonly GuestDevice[];
  /** Guest RAM in MiB (memfd, share=on). Default 256. */
  memoryMb?: number;
  /** guest RAM in this file (QEMU memory-backend-file, share=on) instead of a memfd */
  memoryFile?: string;
  /** Default 1, or the largest net `queues` so that the guest driver enables every pair. */
  smp?: number;
  /** Default: chooseAccel(). */
  accel?: GuestAccel;
  /** Appended to "console=ttyS0 panic=-1 quiet". */
  append?: string;
  kernel?: GuestKernel;
  /** Default: requirePeer('qemu-system-x86_64'). */
  qemu?: string;
  /** `-name`, also the log file's name. Default "vhostkit-guest-<n>". */
  name?: string;
  /** Appended to the QEMU command line. */
  extraArgs?: readonly string[];
  /** Each console line (escape sequences removed) as it arrives. */
  onLine?: (line: string) => void;
}

/** How the guest's QEMU ended. */
export interface GuestExit extends ExitStatus {
  /** The script's exit code from "VHOSTKIT-EXIT <rc>", or null if it never finished. */
  scriptExitCode: number | null;
}

let guestCounter = 0;

/**
 * A running QEMU guest. Its console (the serial port) is read line by line; QEMU's own stderr
 * is in the same log. The serial log is also written to `logPath` (removed with the guest's
 * temp dir when it exits, unless VHOSTKIT_GUEST_LOG_DIR names a directory to keep logs in).
 */
export class Guest {
  readonly startedAt = Date.now();
  /** Time the "VHOSTKIT-BOOTED" line arrived, or null. */
  bootedAt: number | null = null;
  readonly exited: Promise<GuestExit>;

  constructor(
    readonly process: ManagedProcess,
    readonly argv: readonly string[],
    readonly accel: GuestAccel,
    readonly logPath: string,
    private readonly tempDir: TempDir,
  ) {
    const booted = (line: string): void => {
      if (this.bootedAt === null && line.includes(GUEST_MARKERS.booted)) this.bootedAt = Date.now();
    };
    for (const line of process.linesSince(0)) booted(line);
    process.onLine(booted);
    this.exited = process.exited.then((st) => {
      tempDir.cleanup();
      const m = this.log().match(/VHOSTKIT-EXIT (\d+)/);
      return { ...st, scriptExitCode: m ? Number(m[1]) : null };
    });
  }

  get commandLine(): string {
    return this.argv.map(shellQuote).join(' ');
  }

  get running(): boolean {
    return this.process.running;
  }

  /** The console so far (escape sequences removed, lines joined with '\n'). */
  log(): string {
    return this.process.linesSince(0).map(cleanConsoleLine).join('\n');
  }

  /** The console so far as QEMU wrote it (escape sequences kept; no '\r'). */
  rawLog(): string {
    return this.process.log();
  }

  /** The last `maxChars` characters of the cleaned console. */
  tail(maxChars = 4000): string {
    const l = this.log();
    return l.length > maxChars ? l.slice(l.length - maxChars) : l;
  }

  /** The "VHOSTKIT-RESULT" pairs printed so far. */
  results(): Record<string, string> {
    return parseGuestResults(this.log());
  }

  /**
   * Resolves with the match of the first console line (from the start of the log) that
   * matches `regex` once escape sequences are stripped, as `grep -a` would find it. Rejects
   * (with the QEMU command line and the log tail) when QEMU exits first or after timeoutMs.
   */
  waitFor(regex: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const re = regex.global || regex.sticky ? new RegExp(regex.source, regex.flags.replace(/[gy]/g, '')) : regex;
    let next = 0;
    return this.process.waitFor<RegExpMatchArray>(
      () => {
        const lines = this.process.linesSince(next);
        next = this.process.lineCount;
        for (const line of lines) {
          const m = cleanConsoleLine(line).match(re);
          if (m) return m;
        }
        return undefined;
      },
      { what: `a console line matching ${regex}`, timeoutMs, pollMs: 0 },
    );
  }

  /** Waits for the "VHOSTKIT-BOOTED" line (modules loaded, script starting). */
  async waitForBoot(timeoutMs: number): Promise<void> {
    await this.waitFor(new RegExp(GUEST_MARKERS.booted), timeoutMs);
  }

  /** SIGKILL now; resolves when QEMU is gone. */
  async kill(): Promise<ExitStatus> {
    return this.process.stop('SIGKILL', 0);
  }

  /** SIGTERM (QEMU exits at once, the guest is not asked), SIGKILL after graceMs. */
  async stop(graceMs = 3000): Promise<ExitStatus> {
    return this.process.stop('SIGTERM', graceMs);
  }
}

/**
 * Starts a guest: builds the initramfs for `opts.script` if no `initrd` is given, picks the
 * accelerator (chooseAccel) and launches QEMU (see guestQemuArgv for the exact command line).
 * Resolves once QEMU has started, not once the guest has booted: call `waitForBoot` /
 * `waitFor`. With `server: true` devices QEMU waits in device setup until the backend connects
 * to the socket it creates.
 */
export async function startGuest(opts: GuestOptions): Promise<Guest> {
  const qemu = opts.qemu ?? requirePeer('qemu-system-x86_64');
  const kernel = opts.kernel ?? findGuestKernel();
  if (opts.initrd === undefined && opts.script === undefined) throw new Error('startGuest: give `script` or `initrd`');
  const initrd = opts.initrd ?? (await buildInitramfs({ ...opts.initramfs, script: opts.script as string, kernel }));
  const accel = opts.accel ?? (await chooseAccel(kernel)).accel;
  const devices = opts.devices ?? [];
  const maxQueues = Math.max(1, ...devices.map((d) => (d.type === 'vhost-user-net' ? (d.queues ?? 1) : 1)));
  const n = ++guestCounter;
  const name = opts.name ?? `vhostkit-guest-${n}`;
  const tempDir = makeTempDir('vhostkit-guest-');
  const keepDir = process.env.VHOSTKIT_GUEST_LOG_DIR;
  if (keepDir) mkdirSync(keepDir, { recursive: true });
  const serialLog = keepDir ? join(keepDir, `${name}-${process.pid}-${n}.log`) : tempDir.join('serial.log');
  let argv: string[];
  try {
    argv = guestQemuArgv({
      qemu,
      kernel,
      initrd,
      accel,
      memoryMb: opts.memoryMb ?? 256,
      memoryFile: opts.memoryFile,
      smp: opts.smp ?? maxQueues,
      append: `console=ttyS0 panic=-1 quiet${opts.append ? ` ${opts.append}` : ''}`,
      serialLog,
      devices,
      name,
      extraArgs: opts.extraArgs ?? [],
    });
  } catch (e) {
    tempDir.cleanup();
    throw e;
  }
  const onLine = opts.onLine;
  const proc = new ManagedProcess(argv, {
    name: `qemu(${name})`,
    cwd: tempDir.path,
    onLine: onLine ? (line) => onLine(cleanConsoleLine(line)) : undefined,
  });
  try {
    await proc.spawned;
  } catch (e) {
    tempDir.cleanup();
    throw e;
  }
  return new Guest(proc, argv, accel, serialLog, tempDir);
}

// ---------------------------------------------------------------------------
// runScript
// ---------------------------------------------------------------------------

export interface GuestRunResult {
  /** The whole console (escape sequences removed), QEMU's stderr lines included. */
  output: string;
  /** The lines between "VHOSTKIT-BOOTED" and "VHOSTKIT-EXIT": what the script printed (and kernel messages meanwhile). */
  scriptOutput: string;
  scriptExitCode: number;
  /** "VHOSTKIT-RESULT key=value" pairs (parseGuestResults). */
  results: Record<string, string>;
  accel: GuestAccel;
  /** QEMU start to the "VHOSTKIT-BOOTED" line. */
  bootMs: number;
  /** QEMU start to QEMU exit. */
  totalMs: number;
  commandLine: string;
}

export interface RunScriptOptions extends Omit<GuestOptions, 'script' | 'initrd' | 'devices'> {
  /** Resolve even if the script exits non-zero (default: reject). */
  allowFailure?: boolean;
}

/** Rejection of runScript: the message ends with the QEMU command line and the console tail. */
export class GuestRunError extends Error {
  constructor(
    message: string,
    readonly output: string,
    readonly commandLine: string,
  ) {
    const tail = output.length > 4000 ? output.slice(output.length - 4000) : output;
    super(`${message}\ncommand: ${commandLine}\n--- guest console (tail) ---\n${tail || '(no output)'}\n--- end of console ---`);
    this.name = 'GuestRunError';
  }
}

const FAIL_RE = new RegExp(`${GUEST_MARKERS.fail}\\b`);

/**
 * Boots a guest with `devices` that runs `script` (busybox sh, GUEST_SHELL_LIB helpers
 * available) and resolves once it has powered off, with its console output and results.
 * Rejects (GuestRunError, with the console tail) if: `timeoutMs` passes (QEMU is killed), a
 * "VHOSTKIT-FAIL" line appears (QEMU is killed), QEMU exits without the script finishing or by
 * a signal (a crash), or the script exits non-zero (unless allowFailure).
 */
export async function runScript(script: string, devices: readonly GuestDevice[] = [], timeoutMs = 60_000, opts: RunScriptOptions = {}): Promise<GuestRunResult> {
  const guest = await startGuest({ ...opts, script, devices });
  let timer: NodeJS.Timeout | undefined;
  let unsubscribe: (() => void) | undefined;
  const outcome = await new Promise<'exited' | 'fail' | 'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
    const check = (line: string): void => {
      if (FAIL_RE.test(cleanConsoleLine(line))) resolve('fail');
    };
    for (const l of guest.process.linesSince(0)) check(l);
    unsubscribe = guest.process.onLine(check);
    void guest.exited.then(() => resolve('exited'));
  });
  clearTimeout(timer);
  unsubscribe?.();
  if (outcome === 'fail') {
    // Let the lines right after the failure arrive, for the message.
    await Promise.race([guest.exited, new Promise((r) => setTimeout(r, 300))]);
  }
  if (outcome !== 'exited') await guest.kill();
  const exit = await guest.exited;
  const output = guest.log();
  const cmd = guest.commandLine;
  if (outcome === 'timeout') {
    const where = guest.bootedAt ? 'the script was running' : 'it never reached VHOSTKIT-BOOTED';
    throw new GuestRunError(`guest timed out after ${timeoutMs} ms (accel ${guest.accel}; ${where})`, output, cmd);
  }
  if (outcome === 'fail') {
    const line = output.split('\n').find((l) => FAIL_RE.test(l)) ?? GUEST_MARKERS.fail;
    throw new GuestRunError(`guest reported failure: ${line.trim()}`, output, cmd);
  }
  if (exit.signal || exit.error) {
    throw new GuestRunError(
      `QEMU ${exit.error ? `could not run (${exit.error.message})` : `was killed by ${exit.signal}`}` +
        (exit.signal === 'SIGSEGV' ? ' (a QEMU crash: under TCG a virtio-net-pci without vectors=0 does this)' : ''),
      output,
      cmd,
    );
  }
  if (exit.scriptExitCode === null) {
    throw new GuestRunError(`QEMU exited with code ${exit.code} before the script finished (no VHOSTKIT-EXIT line)`, output, cmd);
  }
  if (exit.scriptExitCode !== 0 && !opts.allowFailure) {
    throw new GuestRunError(`the guest script exited with ${exit.scriptExitCode}`, output, cmd);
  }
  const lines = output.split('\n');
  const from = lines.findIndex((l) => l.includes(GUEST_MARKERS.booted));
  const to = lines.findIndex((l, i) => i > from && /VHOSTKIT-EXIT \d+/.test(l));
  return {
    output,
    scriptOutput: from >= 0 && to > from ? lines.slice(from + 1, to).join('\n') : '',
    scriptExitCode: exit.scriptExitCode,
    results: parseGuestResults(output),
    accel: guest.accel,
    bootMs: guest.bootedAt !== null ? guest.bootedAt - guest.startedAt : -1,
    totalMs: Date.now() - guest.startedAt,
    commandLine: cmd,
  };
}

/** Whether the guest kernel and busybox are present (for messages; the tests fail without them). */
export function guestPrerequisites(): { ok: boolean; problems: string[] } {
  const problems: string[] = [];
  for (const check of [() => findGuestKernel(), () => findBusybox(), () => requirePeer('qemu-system-x86_64')]) {
    try {
      check();
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  return { ok: problems.length === 0, problems };
}
