// `npm pack`'s prepack step: the addon prebuilt (prebuildify, N-API) for each Linux
// architecture this machine can build, as prebuilds/linux-<arch>/vhostkit.node, which
// node-gyp-build loads in an installed package instead of compiling (package.json "install").
//
//   node scripts/prebuild.mjs                    the host's architecture, then every other
//                                                one whose cross compiler is installed
//   node scripts/prebuild.mjs --arch arm64 [--out DIR]
//                                                that architecture only, into DIR/prebuilds
//                                                (default: the package root); an error if
//                                                its compiler is missing
//
// The host build runs in ./build as before (node-gyp rebuild), so build/Release/vring.node is
// the host's addon afterwards. A cross build runs in a staging directory of its own: gyp
// always builds in <cwd>/build, and an arm64 vring.node there would replace the addon that
// npm test and npm start load. Cross compilers are Debian's (g++-aarch64-linux-gnu for arm64
// on amd64); CC/CXX/AR and the strip binary are set to that triple's tools.
//
// Headers: an N-API addon needs only node_api.h and friends, which are the same for every
// architecture, so every build uses the running Node's own headers (the nodedir npm is
// configured with, else <node prefix>/include/node) and --target is the running Node's
// version; nothing is fetched from the network.
//
// Each result is checked to be an ELF shared object for its architecture (e_machine), so a
// toolchain setting that did not take effect (an x64 file named linux-arm64) fails here.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, openSync, readSync, closeSync, readFileSync, rmSync, symlinkSync, copyFileSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

// Node's arch name -> the GNU triple of Debian's cross toolchain and the ELF e_machine.
const ARCHES = {
  x64: { triple: 'x86_64-linux-gnu', machine: 62 /* EM_X86_64 */ },
  arm64: { triple: 'aarch64-linux-gnu', machine: 183 /* EM_AARCH64 */ },
};

function log(msg) {
  process.stderr.write(`prebuild: ${msg}\n`);
}

function die(msg) {
  log(msg);
  process.exit(1);
}

function onPath(cmd) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

function parseArgs(argv) {
  const out = { arches: [], out: root };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--arch' && i + 1 < argv.length) out.arches.push(argv[++i]);
    else if (a === '--out' && i + 1 < argv.length) out.out = argv[++i];
    else die(`unknown argument ${a}; usage: node scripts/prebuild.mjs [--arch x64|arm64]... [--out DIR]`);
  }
  for (const a of out.arches) if (!(a in ARCHES)) die(`unknown architecture ${a} (known: ${Object.keys(ARCHES).join(', ')})`);
  return out;
}

// npm's own npm-cli.js (npm's bin/ directory also holds the node-gyp it runs scripts with).
function npmCliPath() {
  const fromNpm = process.env.npm_execpath;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  return realpathSync(spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim());
}

// The environment every build gets: node-gyp on PATH (npm puts its own there for scripts;
// `node scripts/prebuild.mjs` run by hand or from a test has none), the running Node's
// headers, and both CPUs.
function baseEnv() {
  const env = { ...process.env };
  if (!onPath('node-gyp')) {
    const gypBin = join(dirname(npmCliPath()), 'node-gyp-bin');
    if (!existsSync(join(gypBin, 'node-gyp'))) die(`node-gyp is not on PATH and npm's (${gypBin}) is missing`);
    env.PATH = `${gypBin}${delimiter}${env.PATH ?? ''}`;
  }
  if (!env.npm_config_nodedir) {
    const prefix = join(dirname(process.execPath), '..');
    if (!existsSync(join(prefix, 'include', 'node', 'node_api.h'))) die(`no Node headers at ${prefix}/include/node and no npm nodedir configured`);
    env.npm_config_nodedir = prefix;
  }
  env.JOBS ??= 'max';
  return env;
}

function elfMachine(file) {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(20);
    readSync(fd, b, 0, 20, 0);
    if (b.readUInt32BE(0) !== 0x7f454c46) return -1; // not "\x7fELF"
    return b.readUInt16LE(18);
  } finally {
    closeSync(fd);
  }
}

function prebuildify(cwd, out, arch, env) {
  const bin = join(root, 'node_modules', 'prebuildify', 'bin.js');
  const args = [bin, '--napi', '--strip', '--target', process.versions.node, '--arch', arch, '--name', pkg.name, '--out', out];
  const host = arch === process.arch;
  if (!host) args.push('--strip-bin', `${ARCHES[arch].triple}-strip`);
  const r = spawnSync(process.execPath, args, { cwd, env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) die(`prebuildify for linux-${arch} failed (${r.signal ?? `exit ${r.status}`})`);
  const file = join(out, 'prebuilds', `linux-${arch}`, `${pkg.name}.node`);
  if (!existsSync(file)) die(`prebuildify for linux-${arch} made no ${file}`);
  const m = elfMachine(file);
  if (m !== ARCHES[arch].machine) die(`${file} is not an ELF object for ${arch} (e_machine ${m}, want ${ARCHES[arch].machine})`);
  log(`linux-${arch}: ${file}`);
}

function crossBuild(arch, out, env) {
  const { triple } = ARCHES[arch];
  // What binding.gyp needs: its sources (native/) and node-addon-api (node_modules/, for the
  // include_dirs command gyp runs in the staging directory).
  const stage = mkdtempSync(join(tmpdir(), `vhostkit-prebuild-${arch}-`));
  try {
    copyFileSync(join(root, 'binding.gyp'), join(stage, 'binding.gyp'));
    symlinkSync(join(root, 'native'), join(stage, 'native'));
    symlinkSync(join(root, 'node_modules'), join(stage, 'node_modules'));
    const crossEnv = { ...env, CC: `${triple}-gcc`, CXX: `${triple}-g++`, AR: `${triple}-ar` };
    log(`linux-${arch}: cross build with ${triple}-g++ in ${stage}`);
    prebuildify(stage, out, arch, crossEnv);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

const opts = parseArgs(process.argv.slice(2));
const env = baseEnv();
if (opts.arches.length > 0) {
  // Only the architectures asked for; a missing compiler is an error.
  for (const arch of opts.arches) {
    if (arch === process.arch) {
      if (opts.out !== root) die('the host build always runs in the package root; --out is for cross builds');
      prebuildify(root, root, arch, env);
    } else {
      if (!onPath(`${ARCHES[arch].triple}-g++`)) die(`${ARCHES[arch].triple}-g++ is not installed (Debian: apt-get install g++-${ARCHES[arch].triple.replace(/_/g, '-')})`);
      crossBuild(arch, opts.out, env);
    }
  }
} else {
  // npm pack: start from an empty prebuilds/ so a prebuild left by an earlier pack (older
  // sources, or an architecture whose compiler is gone) is never shipped.
  if (opts.out !== root) die('--out needs --arch');
  rmSync(join(root, 'prebuilds'), { recursive: true, force: true });
  if (!(process.arch in ARCHES)) die(`no prebuild for host architecture ${process.arch}`);
  prebuildify(root, root, process.arch, env);
  for (const arch of Object.keys(ARCHES)) {
    if (arch === process.arch) continue;
    const cxx = `${ARCHES[arch].triple}-g++`;
    if (onPath(cxx)) crossBuild(arch, root, env);
    else log(`linux-${arch}: NOT built, ${cxx} is not installed (Debian: apt-get install g++-${ARCHES[arch].triple.replace(/_/g, '-')}); the package then builds from source there`);
  }
}
