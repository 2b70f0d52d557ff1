// The package as a user gets it: packed (npm pack) with the addon prebuilt, installed from
// the tarball into an empty project whose PATH has node and sh but no compiler, make or
// python; then an example program that imports 'vhostkit' serving a RAM disk, and our
// frontend writing and reading a block through it.
//
// The tarball is packed from a staging copy of the files package.json ships (the build of
// this run, with build/Release/vring.node as the host's prebuild
// (prebuilds/linux-<arch>/vhostkit.node) that `npm pack`'s prepack step, scripts/prebuild.mjs,
// makes), so the test does not rebuild the addon the running tests have loaded.
//
// The second test checks the linux-arm64 prebuild on an x64 machine: scripts/prebuild.mjs
// cross-builds it into the staging copy as prepack does (g++-aarch64-linux-gnu), and an arm64
// Node (scripts/arm64-node.sh) run by qemu-aarch64 loads it through node-gyp-build from the
// installed package and serves the RAM disk to our (x64) frontend: the arm64 addon maps the
// guest memory, passes fds and moves the virtqueue. scripts/test-deps.sh installs all of it on
// amd64, so in CI (CI set) a missing piece is a failure; elsewhere the test is skipped and
// says why.
import { expect } from 'chai';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { makeTempDir, type TempDir } from '../lib/peers.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { BlkClient, BlkStatus } from '../lib/blk-client.js';

const run = promisify(execFile);
const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = join(dist, '..');
/** Where Debian's cross toolchain keeps the arm64 glibc and libstdc++ (qemu-aarch64 -L). */
const arm64Sysroot = '/usr/aarch64-linux-gnu';

function npmCli(): string {
  const fromNpm = process.env.npm_execpath;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  return realpathSync(execFileSync('which', ['npm'], { encoding: 'utf8' }).trim());
}

/** The absolute path of `cmd` on this process's PATH, or null. */
function which(cmd: string): string | null {
  try {
    return execFileSync('/bin/sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

function failedRun(what: string) {
  return (e: Error & { stdout?: string; stderr?: string }): never => {
    throw new Error(`${what} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  };
}

/**
 * Stages what package.json's `files` lists, with build/Release/vring.node as the host's
 * prebuild; `extra` may add more to the staging directory (another architecture's prebuild);
 * then packs it. Returns the tarball and its file list.
 */
async function stageAndPack(tmp: TempDir, extra?: (stage: string) => Promise<void>): Promise<{ tarball: string; listing: string[] }> {
  const stage = tmp.join('stage');
  mkdirSync(stage);
  for (const f of ['package.json', 'README.md', 'LICENSE', 'binding.gyp']) copyFileSync(join(root, f), join(stage, f));
  // All of native/ but the fuzz corpora (35 MiB): the fuzz targets stay, so that `files`
  // leaving native/fuzz out is checked below.
  cpSync(join(root, 'native'), join(stage, 'native'), { recursive: true, filter: (src) => !src.includes(`${join('native', 'fuzz', 'corpus')}`) });
  cpSync(join(dist, 'src'), join(stage, 'dist', 'src'), { recursive: true });
  mkdirSync(join(stage, 'prebuilds', `linux-${process.arch}`), { recursive: true });
  copyFileSync(join(root, 'build', 'Release', 'vring.node'), join(stage, 'prebuilds', `linux-${process.arch}`, 'vhostkit.node'));
  if (extra) await extra(stage);
  const packed = await run(process.execPath, [npmCli(), 'pack', '--ignore-scripts', '--pack-destination', tmp.path], { cwd: stage }).catch(failedRun('npm pack'));
  const tarball = join(tmp.path, packed.stdout.trim().split('\n').pop()!);
  const listing = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).split('\n');
  return { tarball, listing };
}

/**
 * A user's empty project with the tarball installed by npm, everything run with PATH = node
 * and sh only (checked: no compiler, make or python). Returns the project, the installed
 * package and that environment.
 */
async function installInEmptyProject(tmp: TempDir, tarball: string): Promise<{ proj: string; installed: string; env: NodeJS.ProcessEnv }> {
  const proj = tmp.join('proj');
  mkdirSync(proj);
  writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', private: true, type: 'module' }));
  const bin = tmp.join('bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  const env = { HOME: process.env.HOME ?? '/root', PATH: bin, npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? '/root', '.npm') };
  for (const tool of ['g++', 'cc', 'make', 'python3']) {
    const found = await run('/bin/sh', ['-c', `command -v ${tool} || true`], { env }).then((r) => r.stdout.trim());
    expect(found, `${tool} on the user's PATH`).to.equal('');
  }
  await run(process.execPath, [npmCli(), 'install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: proj, env }).catch(failedRun('npm install of the tarball'));
  const installed = join(proj, 'node_modules', 'vhostkit');
  expect(existsSync(join(installed, 'build')), 'nothing was compiled: the prebuild was used').to.equal(false);
  return { proj, installed, env };
}

describe('the package, packed and installed from its tarball', function () {
  this.timeout(300_000);
  let tmp: TempDir;
  let example: ChildProcess | null = null;
  beforeEach(() => {
    tmp = makeTempDir('vk-pkg-');
  });
  afterEach(() => {
    example?.kill('SIGKILL');
    example = null;
    tmp.cleanup();
  });

  /**
   * examples/ram-disk.ts, compiled, run in the user's project by `command` (a node, or
   * qemu-aarch64 with an arm64 node): it imports 'vhostkit', which resolves to the installed
   * package. Our frontend writes a block and reads it back through it; then SIGTERM.
   */
  async function serveRamDiskAndCheck(proj: string, env: NodeJS.ProcessEnv, command: string[], startMs: number): Promise<void> {
    copyFileSync(join(dist, 'examples', 'ram-disk.js'), join(proj, 'ram-disk.js'));
    const sock = tmp.join('ram.sock');
    const ex = spawn(command[0]!, [...command.slice(1), 'ram-disk.js', sock, '16M'], { cwd: proj, env, stdio: ['ignore', 'pipe', 'pipe'] });
    example = ex;
    let out = '';
    ex.stdout!.on('data', (d) => (out += d));
    ex.stderr!.on('data', (d) => (out += d));
    const deadline = Date.now() + startMs;
    while (!/RAM disk of 16777216 bytes/.test(out)) {
      if (Date.now() > deadline || ex.exitCode !== null) throw new Error(`the example did not start: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const fe = await VhostUserFrontend.connect(sock);
    try {
      await fe.negotiate();
      await fe.setupMemory(4 << 20);
      const blk = new BlkClient(await fe.startQueue(0, { size: 64 }));
      const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff);
      expect((await blk.write(8n, data)).status).to.equal(BlkStatus.OK);
      const r = await blk.read(8n, 4096);
      expect(r.status).to.equal(BlkStatus.OK);
      expect(Buffer.from(r.data!).equals(Buffer.from(data)), 'read back through the installed package').to.equal(true);
    } finally {
      fe.close();
    }
    ex.kill('SIGTERM');
    const code = await new Promise((r) => ex.once('exit', (c, s) => r(s ?? c)));
    example = null;
    expect(code, `the example's exit after SIGTERM; its output:\n${out}`).to.equal(0);
  }

  it('installs without a compiler, runs `vhostkit --version` and an example that serves a disk', async () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string; files: string[] };
    const { tarball, listing } = await stageAndPack(tmp);
    expect(listing).to.include.members([
      'package/package.json',
      'package/LICENSE',
      'package/dist/src/index.js',
      'package/dist/src/index.d.ts',
      `package/prebuilds/linux-${process.arch}/vhostkit.node`,
      'package/binding.gyp',
      'package/native/addon/addon.cc',
      'package/native/ring/virtqueue.h',
    ]);
    expect(
      listing.filter((f) => /^package\/(src|test|bench|native\/fuzz)\//.test(f)),
      'sources, tests and fuzzers are not shipped',
    ).to.deep.equal([]);

    const { proj, env } = await installInEmptyProject(tmp, tarball);
    const version = await run(process.execPath, [join(proj, 'node_modules', '.bin', 'vhostkit'), '--version'], { cwd: proj, env });
    expect(version.stdout.trim()).to.equal(`vhostkit ${pkg.version}`);
    await serveRamDiskAndCheck(proj, env, [process.execPath], 20_000);
  });

  // On an x64 host the arm64 prebuild is cross-built and run under qemu; on an arm64 host the
  // test above already checks linux-arm64 natively, so this one is only defined on x64.
  const onX64 = process.arch === 'x64';
  if (onX64)
    it('ships a linux-arm64 prebuild that arm64 Node (qemu-aarch64) loads from the installed package and serves a disk with', async function () {
      this.timeout(600_000);
      const qemu = which('qemu-aarch64');
      const missing = [
        which('aarch64-linux-gnu-g++') ? null : 'aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu)',
        existsSync(join(arm64Sysroot, 'lib', 'ld-linux-aarch64.so.1')) ? null : `${arm64Sysroot}/lib/ld-linux-aarch64.so.1 (comes with g++-aarch64-linux-gnu)`,
        qemu ? null : 'qemu-aarch64 (apt-get install qemu-user)',
      ].filter((m): m is string => m !== null);
      if (missing.length > 0) {
        // npm test installs them first (scripts/test-deps.sh): missing here is a failure, never a skip.
        throw new Error(`the linux-arm64 check cannot run: not installed: ${missing.join(', ')}; scripts/test-deps.sh installs them as root`);
      }
      const arm64Node = execFileSync('bash', [join(root, 'scripts', 'arm64-node.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
      const arm64 = [qemu!, '-L', arm64Sysroot, arm64Node];

      const { tarball, listing } = await stageAndPack(tmp, async (stage) => {
        // prepack's cross build, into the staging copy (not this checkout's prebuilds/).
        await run(process.execPath, [join(root, 'scripts', 'prebuild.mjs'), '--arch', 'arm64', '--out', stage], { cwd: root, maxBuffer: 64 << 20 }).catch(
          failedRun('scripts/prebuild.mjs --arch arm64'),
        );
      });
      expect(listing).to.include.members(['package/prebuilds/linux-x64/vhostkit.node', 'package/prebuilds/linux-arm64/vhostkit.node']);

      const { proj, installed, env } = await installInEmptyProject(tmp, tarball);
      // The arm64 process: its arch, and the file node-gyp-build (the package's own copy)
      // picks for it in the installed package.
      const probe = 'const g = require(require.resolve("node-gyp-build", { paths: [process.argv[1]] })); console.log(JSON.stringify({ arch: process.arch, file: g.path(process.argv[1]) }))';
      const seen = await run(arm64[0]!, [...arm64.slice(1), '-e', probe, installed], { cwd: proj, env, timeout: 120_000 }).catch(failedRun('arm64 node'));
      expect(JSON.parse(seen.stdout) as unknown).to.deep.equal({ arch: 'arm64', file: join(installed, 'prebuilds', 'linux-arm64', 'vhostkit.node') });

      await serveRamDiskAndCheck(proj, env, arm64, 120_000);
    });
});
