// Every subcommand answers --help (its usage, exit 0) and --version (the package's version).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = join(dist, 'src', 'cli', 'main.js');
const version = (JSON.parse(readFileSync(join(dist, '..', 'package.json'), 'utf8')) as { version: string }).version;
const COMMANDS = ['run', 'ctl', 'switch', 'blk', 'net-load', 'blk-load', 'ring-bench', 'probe', 'conformance'];

describe('vhostkit --help and --version', function () {
  this.timeout(60000);
  for (const c of COMMANDS) {
    it(`${c} --help prints its usage; ${c} --version the version`, async () => {
      const h = await run(process.execPath, [cli, c, '--help']);
      expect(h.stdout).to.match(new RegExp(`vhostkit ${c}\\b`));
      expect(h.stderr).to.equal('');
      const v = await run(process.execPath, [cli, c, '--version']);
      expect(v.stdout.trim()).to.equal(`vhostkit ${version}`);
    });
  }
  it('vhostkit --version, and an unknown command exits 2 with the usage', async () => {
    expect((await run(process.execPath, [cli, '--version'])).stdout.trim()).to.equal(`vhostkit ${version}`);
    const bad = await run(process.execPath, [cli, 'frob']).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).to.equal(2);
    expect((bad as { stderr: string }).stderr).to.match(/unknown command 'frob'/);
  });
});
