// The bench entry points' command lines: --help prints the usage and exits 0; a bad option
// or value exits 2 with one line saying why and the usage, no stack trace, and runs nothing.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const benchDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench');
/** this checkout's dist directory: a built checkout ab-blk.js accepts */
const dist = join(benchDir, '..');
const run = (script: string, args: string[]) => spawnSync(process.execPath, [join(benchDir, script), ...args], { encoding: 'utf8', timeout: 20000 });

describe('bench command lines', () => {
  for (const script of ['run.js', 'ab.js', 'ab-blk.js']) {
    it(`${script} --help prints the usage and exits 0`, () => {
      const r = run(script, ['--help']);
      expect(r.status).to.equal(0);
      expect(r.stdout).to.match(/^usage: /);
      expect(r.stdout).to.include('--rounds');
    });
  }

  const bad: [string, string[], RegExp][] = [
    ['run.js', ['--bogus'], /^Unknown option '--bogus'/],
    ['run.js', ['--rounds', '2'], /^--rounds 2: at least 3\n/],
    ['run.js', ['--cases', 'net-rx,nope'], /^unknown case nope; cases: net-rx, net-tx, switch, blk, cpu, memory, api, switch-flows, switch-threads\n/],
    ['ab.js', ['--b', '/nonexistent'], /^--a DIST: the dist directory of a built checkout\n/],
    ['ab.js', ['--a', '/nonexistent', '--b', '/nonexistent'], /^--a \/nonexistent: no \/nonexistent\/src\/cli\/main\.js\n/],
    ['ab-blk.js', ['--b', '/nonexistent'], /^--a DIST: the dist directory of a built checkout\n/],
    ['ab-blk.js', ['--a', dist, '--b', dist, '--configs', 'randread:1,seqread:4'], /^--configs: seqread:4 is not RW:QD\n/],
    ['ab-blk.js', ['--a', dist, '--b', dist, '--rounds', '0'], /^--rounds 0: a positive integer\n/],
  ];
  for (const [script, args, want] of bad) {
    it(`${script} ${args.join(' ')}: exits 2 with a reason and the usage`, () => {
      const r = run(script, args);
      expect(r.status).to.equal(2);
      expect(r.stderr).to.match(want);
      expect(r.stderr).to.include('\nusage: ');
      expect(r.stderr).not.to.match(/\n\s+at /); // no stack trace
      expect(r.stdout).to.equal('');
    });
  }
});
