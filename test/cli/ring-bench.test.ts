import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

describe('vhostkit ring-bench (CLI)', () => {
  it('runs both layouts and prints a rate for each', () => {
    const out = execFileSync(process.execPath, [cli, 'ring-bench', '--seconds', '0.2', '--size', '64']).toString();
    const lines = out.trim().split('\n');
    expect(lines).to.have.length(2);
    expect(lines[0]).to.match(/^split +size 64 burst 32 64 B: \d+\.\d\d M chains\/s \((\d+) in/);
    expect(lines[1]).to.match(/^packed size 64 burst 32 64 B: /);
    for (const l of lines) expect(Number(/\((\d+) in/.exec(l)![1])).to.be.greaterThan(0);
  });

  it('refuses a bad option with a clear message and exit code 2', () => {
    const r = spawnSync(process.execPath, [cli, 'ring-bench', '--size', '3', '--layout', 'split']);
    expect(r.status).to.equal(2);
    expect(r.stderr.toString()).to.match(/split queue size 3/);
    const u = spawnSync(process.execPath, [cli, 'frobnicate']);
    expect(u.status).to.equal(2);
    expect(u.stderr.toString()).to.match(/unknown command 'frobnicate'/);
  });
});
