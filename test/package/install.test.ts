// The package as a user gets it: packed (npm pack) with the addon prebuilt for this platform,
// installed from the tarball into an empty project whose PATH has node and sh but no
// compiler, make or python; then `vhostkit --version`, an example program that imports
// 'vhostkit' serving a RAM disk, and our frontend writing and reading a block through it.
//
// The tarball is packed from a staging copy of the files package.json ships (the build of
// this run, with build/Release/vring.node as the prebuild (prebuilds/linux-<arch>/vhostkit.node) that `npm pack`'s prepack step,
// prebuildify, makes), so the test does not rebuild the addon the running tests have loaded.
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

function npmCli(): string {
  const fromNpm = process.env.npm_execpath;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  return realpathSync(execFileSync('which', ['npm'], { encoding: 'utf8' }).trim());
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

  it('installs without a compiler, runs `vhostkit --version` and an example that serves a disk', async () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string; files: string[] };
    // Staging: what `files` lists, with the prebuild in place.
    const stage = tmp.join('stage');
    mkdirSync(stage);
    for (const f of ['package.json', 'README.md', 'LICENSE', 'binding.gyp']) copyFileSync(join(root, f), join(stage, f));
    cpSync(join(root, 'native', 'vring'), join(stage, 'native', 'vring'), { recursive: true });
    cpSync(join(dist, 'src'), join(stage, 'dist', 'src'), { recursive: true });
    mkdirSync(join(stage, 'prebuilds', `linux-${process.arch}`), { recursive: true });
    copyFileSync(join(root, 'build', 'Release', 'vring.node'), join(stage, 'prebuilds', `linux-${process.arch}`, 'vhostkit.node'));
    const npm = npmCli();
    const packed = await run(process.execPath, [npm, 'pack', '--ignore-scripts', '--pack-destination', tmp.path], { cwd: stage });
    const tarball = join(tmp.path, packed.stdout.trim().split('\n').pop()!);
    const listing = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).split('\n');
    expect(listing).to.include.members(['package/package.json', 'package/LICENSE', 'package/dist/src/index.js', 'package/dist/src/index.d.ts', `package/prebuilds/linux-${process.arch}/vhostkit.node`, 'package/binding.gyp']);
    expect(listing.filter((f) => /^package\/(src|test|bench|native\/fuzz)\//.test(f)), 'sources, tests and fuzzers are not shipped').to.deep.equal([]);

    // A user's empty project; PATH: node and sh only.
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
    const inst = await run(process.execPath, [npm, 'install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: proj, env }).catch((e: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`npm install of the tarball failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
    });
    void inst;
    const installed = join(proj, 'node_modules', 'vhostkit');
    expect(existsSync(join(installed, 'build')), 'nothing was compiled: the prebuild was used').to.equal(false);

    const version = await run(process.execPath, [join(proj, 'node_modules', '.bin', 'vhostkit'), '--version'], { cwd: proj, env });
    expect(version.stdout.trim()).to.equal(`vhostkit ${pkg.version}`);

    // examples/ram-disk.ts, compiled: it imports 'vhostkit', which resolves to the installed package.
    copyFileSync(join(dist, 'examples', 'ram-disk.js'), join(proj, 'ram-disk.js'));
    const sock = tmp.join('ram.sock');
    const ex = spawn(process.execPath, ['ram-disk.js', sock, '16M'], { cwd: proj, env, stdio: ['ignore', 'pipe', 'pipe'] });
    example = ex;
    let out = '';
    ex.stdout!.on('data', (d) => (out += d));
    ex.stderr!.on('data', (d) => (out += d));
    const deadline = Date.now() + 20_000;
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
    await new Promise((r) => ex.once('exit', r));
    example = null;
  });
});
