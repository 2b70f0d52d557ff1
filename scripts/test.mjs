// The whole test suite, as `npm test` runs it, in two phases:
//   1. two streams side by side (on two CPUs they mostly use one each):
//      - the unit and native tests (mocha over dist/test, the folders of REAL_PEERS and
//        FUZZ left out);
//      - the libFuzzer targets (dist/test/fuzz), then the native-layer tests
//        (dist/test/native) again against the ASan/UBSan build of the addon
//        (scripts/build-asan.sh), with the sanitizer runtime preloaded;
//   2. the tests with real peers (QEMU guests, DPDK, FRR, namespaces, npm pack), one at a time,
//      alone on the machine: they are the ones whose guests run under TCG.
// Ends with one line "N passed, N failed" summing every run. VHOSTKIT_SKIP_ASAN=1 skips
// the ASan pass (for quick local iterations; CI never sets it).
//
// `--fast` (npm run test:fast): the fast tier only, the unit and native tests that need no
// QEMU, no DPDK, no network namespaces and no packing: FAST_EXCLUDED below are the
// folders left out. Runs in parallel (one mocha worker per CPU), property tests scaled down,
// no dependency install, no ASan pass.
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const mocha = join(root, 'node_modules', 'mocha', 'bin', 'mocha.js');
const fast = process.argv.includes('--fast');
const extra = process.argv.slice(2).filter((a) => a !== '--fast');
/** Tests with QEMU guests, real peers, netns, npm pack, examples run as processes. */
const REAL_PEERS = ['e2e', 'peers', 'lib', 'package', 'examples'];
const FUZZ = ['fuzz'];
/** What the fast tier leaves out. */
const FAST_EXCLUDED = [...REAL_PEERS, ...FUZZ];
const folders = (list) => `dist/test/{${list.join(',')}}/**`;
const specs = (list) => list.map((d) => `dist/test/${d}/**/*.test.js`);

/**
 * One mocha run. Its report goes to stdout as it comes, or, with `buffered` (a run beside
 * another), whole when it ends, so that two runs' lines do not interleave.
 */
function run(label, args, env, buffered = false) {
  return new Promise((resolve) => {
    const begin = Date.now();
    if (!buffered) process.stdout.write(`\n=== ${label} ===\n`);
    const child = spawn(process.execPath, [mocha, ...args, ...extra], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', buffered ? 'pipe' : 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (!buffered) process.stdout.write(d);
    });
    if (buffered) child.stderr.on('data', (d) => (out += d));
    child.on('close', (code, signal) => {
      if (buffered) process.stdout.write(`\n=== ${label} ===\n${out}`);
      process.stdout.write(`${label}: ${((Date.now() - begin) / 1000).toFixed(0)} s\n`);
      const passed = Number(/(\d+) passing/.exec(out)?.[1] ?? 0);
      let failed = Number(/(\d+) failing/.exec(out)?.[1] ?? 0);
      if ((code !== 0 || signal) && failed === 0) {
        // A crash (e.g. a sanitizer report) or a load error: count it as a failure.
        process.stdout.write(`\n${label}: mocha exited with ${signal ?? code} without reporting failures\n`);
        failed = 1;
      }
      // mocha's report of the failures ("N failing" and each failure's title and error),
      // printed again at the very end: CI shows the tail of this output.
      const at = out.search(/^\s*\d+ failing/m);
      const report = at >= 0 ? out.slice(at) : '';
      resolve({ label, passed, failed, report });
    });
  });
}

if (fast) {
  // Property tests and the connect/disconnect soak do a fifth of their default work
  // (test/lib/fuzz-runs.ts); npm test runs them whole.
  const r = await run('fast tier', ['--parallel', '--exclude', folders(FAST_EXCLUDED), 'dist/test/**/*.test.js'], {
    VHOSTKIT_TEST_SCALE: process.env.VHOSTKIT_TEST_SCALE ?? '0.2',
  });
  if (r.report !== '') process.stdout.write(`\n=== failures, again ===\n${r.report}`);
  process.stdout.write(`\n${r.passed} passed, ${r.failed} failed\n`);
  process.exit(r.failed === 0 ? 0 : 1);
}

// What the tests need (compilers, QEMU, DPDK, a guest kernel...): installed as root, or a
// stop here with the apt-get line to run.
try {
  execFileSync('bash', [join(root, 'scripts', 'test-deps.sh')], { stdio: 'inherit' });
} catch {
  process.stdout.write('\n0 passed, 1 failed\n');
  process.exit(1);
}

const results = [];
// Lint first (ESLint and Prettier, npm run lint): one check, passed or failed.
{
  process.stdout.write('\n=== lint ===\n');
  let report = '';
  try {
    execFileSync('npm', ['run', '--silent', 'lint'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    process.stdout.write('lint: clean\n');
  } catch (e) {
    report = `${e.stdout ?? ''}${e.stderr ?? ''}`;
    process.stdout.write(report);
  }
  results.push({ label: 'lint', passed: report === '' ? 1 : 0, failed: report === '' ? 0 : 1, report: report === '' ? '' : `lint failed (npm run lint):\n${report}` });
}
/** A command run beside a mocha run, its output kept whole until it ends (as `buffered`). */
function command(label, file, args) {
  return new Promise((resolve) => {
    const child = spawn(file, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', (e) => resolve({ ok: false, out: `${label}: ${e.message}\n` }));
    child.on('close', (code, signal) => resolve({ ok: code === 0, out: code === 0 ? out : `${out}${label}: exited with ${signal ?? code}\n` }));
  });
}

/**
 * The libFuzzer targets, then the native-layer tests again under ASan + UBSan: beside the
 * unit tests, which take about as long as these two together.
 */
async function sanitizedStream() {
  const out = [await run('fuzz targets', specs(FUZZ), {}, true)];
  if (process.env.VHOSTKIT_SKIP_ASAN === '1') return out;
  const build = await command('build-asan', 'bash', [join(root, 'scripts', 'build-asan.sh')]);
  process.stdout.write(build.out);
  if (!build.ok) {
    out.push({ label: 'native tests under ASan + UBSan', passed: 0, failed: 1, report: `the ASan build failed (scripts/build-asan.sh):\n${build.out}` });
    return out;
  }
  const asan = execFileSync('g++', ['-print-file-name=libasan.so']).toString().trim();
  out.push(
    // ASan and UBSan make the native code several times slower: a longer default timeout
    // (tests that set their own keep it).
    await run(
      'native tests under ASan + UBSan',
      ['--timeout', '60000', 'dist/test/native/**/*.test.js'],
      {
        VHOSTKIT_NATIVE: 'asan',
        LD_PRELOAD: asan,
        // Node itself does not free everything at exit; leaks are checked by the fd/RSS tests.
        // allow_user_segv_handler=1: the addon's SIGBUS guard over guest memory
        // (native/memory/guest_fault.h) must be able to install its handler over ASan's (it
        // chains to ASan's for any other fault, so real crashes still get ASan's report).
        // It is this runtime's default (GCC 12's libasan); said here so a runtime with
        // another default does not silently drop the guard (test/native/guest-fault checks).
        ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:allow_user_segv_handler=1',
        UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
      },
      true,
    ),
  );
  return out;
}

const [unit, sanitized] = await Promise.all([run('unit and native tests', ['--exclude', folders(FAST_EXCLUDED), 'dist/test/**/*.test.js'], {}), sanitizedStream()]);
results.push(unit, ...sanitized);
results.push(await run('tests with real peers', specs(REAL_PEERS), {}));

for (const r of results) {
  if (r.report === '') continue;
  const max = 6000;
  const text = r.report.length > max ? `${r.report.slice(0, max)}\n[... ${r.report.length - max} more characters]\n` : r.report;
  process.stdout.write(`\n=== failures in ${r.label}, again ===\n${text}`);
}
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);
