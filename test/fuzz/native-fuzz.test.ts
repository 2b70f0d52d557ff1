// The libFuzzer harnesses over the native engine (native/fuzz/), through
// scripts/fuzz-native.sh: every target is built with ASan + UBSan and run for a bounded time
// (VHOSTKIT_FUZZ_SECONDS per target, default 10; a positive whole number) on its committed seeds, which
// include the inputs of past findings (regressions are replayed on every run), and a
// working corpus in build-fuzz/. Any crash, leak, timeout or out-of-memory input fails the
// test, named in the message with the sanitizer's report.
//
// Needs clang++ with libFuzzer (Debian 12: clang-14 libclang-rt-14-dev).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const script = join(root, 'scripts', 'fuzz-native.sh');
const seconds = Number(process.env.VHOSTKIT_FUZZ_SECONDS ?? 10);
if (!Number.isInteger(seconds) || seconds < 1) throw new RangeError(`VHOSTKIT_FUZZ_SECONDS=${process.env.VHOSTKIT_FUZZ_SECONDS}: expected a positive whole number of seconds`);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function fuzz(args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile('bash', [script, ...args], { cwd: root, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

interface TargetLine {
  executions: number;
  execPerSec: number;
  units: number;
  findings: string[];
}

/** "fuzz-native: <t> N executions (R exec/s), corpus U units (F files in DIR), findings: none|a b" */
function parse(stdout: string, target: string): TargetLine | undefined {
  // ("?" where libFuzzer printed no figure: a crash while it loaded the corpus)
  const re = new RegExp(`^fuzz-native: ${target}\\s+(\\S+) executions \\((\\S+) exec/s\\), corpus (\\S+) units .*findings: (.*)$`, 'm');
  const m = re.exec(stdout);
  if (m === null) return undefined;
  const num = (s: string): number => (/^\d+$/.test(s) ? Number(s) : 0);
  return {
    executions: num(m[1]),
    execPerSec: num(m[2]),
    units: num(m[3]),
    findings: m[4] === 'none' ? [] : m[4].split(' '),
  };
}

describe('native fuzz targets (libFuzzer, ASan + UBSan)', function () {
  // Building the targets (each source compiled once, then linked per target) takes about
  // 2.5 minutes of one CPU here.
  this.timeout(15 * 60 * 1000);

  // guest_fault: the SIGBUS guard over guest memory, with real truncated memfds.
  const targets = ['split_ring', 'packed_ring', 'memory', 'offload', 'edit', 'net', 'blk', 'host_io', 'switch', 'handoff', 'guest_fault'];

  before(async function () {
    const list = await fuzz(['--list'], 60_000);
    expect(list.code, list.stderr).to.equal(0);
    expect(list.stdout.trim().split('\n'), 'the script runs the targets this test knows').to.deep.equal(targets);
    const build = await fuzz(['--build-only'], 14 * 60 * 1000);
    expect(build.code, `build of the fuzz targets failed (clang++ with libFuzzer: Debian clang-14 libclang-rt-14-dev)\n${build.stderr}`).to.equal(0);
  });

  for (const target of targets) {
    it(`${target}: no crash, leak, timeout or broken invariant in ${seconds} s`, async function () {
      this.timeout(seconds * 1000 + 5 * 60 * 1000);
      const run = await fuzz([String(seconds), target], seconds * 1000 + 4 * 60 * 1000);
      const line = parse(run.stdout, target);
      const report = `${run.stdout}\n${run.stderr}`;
      expect(line, `no result line for ${target}:\n${report}`).to.not.equal(undefined);
      expect(line!.findings, `${target}: findings ${line!.findings.join(', ')} (in build-fuzz/findings/${target}/)\n${report}`).to.deep.equal([]);
      expect(run.code, `fuzz-native.sh exited with ${run.code}\n${report}`).to.equal(0);
      expect(line!.executions, `${target} ran no input`).to.be.above(0);
      expect(line!.units, `${target} has an empty corpus`).to.be.above(0);
    });
  }
});
