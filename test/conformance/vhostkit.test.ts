// `vhostkit conformance` against vhostkit's own backends, spawned through the CLI as a user
// would: every case passes or is rejected cleanly (no failure, crash, hang or leak), the
// JSON document is what CI reads, and the exit code is 0.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CASES } from '../../src/conformance/cases.js';
import { selectCases } from '../../src/conformance/runner.js';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Doc {
  backend: { socket: string; type: string; spawn: string };
  cases: Array<{ name: string; group: string; status: string; detail: string }>;
}

describe('vhostkit conformance against vhostkit', function () {
  this.timeout(300000);
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'vk-conf-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const targets: Array<['net' | 'blk', (sock: string) => string]> = [
    ['net', (sock) => `exec ${process.execPath} ${cli} net-load --socket ${sock} --gen`],
    ['blk', (sock) => `exec ${process.execPath} ${cli} blk --socket ${sock} --ram 64M`],
  ];
  for (const [type, spawn] of targets) {
    it(`${type}: every case passed or rejected, exit 0 (--json)`, async () => {
      const sock = join(dir, `${type}.sock`);
      const r = await run(process.execPath, [cli, 'conformance', sock, '--type', type, '--spawn', spawn(sock), '--json'], { maxBuffer: 16 << 20 });
      const doc = JSON.parse(r.stdout) as Doc;
      expect(doc.backend.type).to.equal(type);
      expect(doc.cases.map((c) => c.name)).to.deep.equal(selectCases(CASES, type).map((c) => c.name));
      const bad = doc.cases.filter((c) => c.status !== 'passed' && c.status !== 'rejected');
      expect(bad, JSON.stringify(bad, null, 1)).to.deep.equal([]);
      // The spec's rules with a feature vhostkit offers are passed, not merely survived.
      const offered = [
        'get-vring-base',
        'reply-ack-every-message',
        'max-mem-slots',
        'status',
        'event-idx-used-event',
        'event-idx-avail-event',
        'packed-ring',
        'indirect-descriptors',
        'get-config',
        'get-config-offset',
        'get-vring-base-packed',
      ];
      for (const name of type === 'blk' ? [...offered, 'inflight-area-size'] : offered) {
        const c = doc.cases.find((x) => x.name === name)!;
        expect(c.status, name).to.equal('passed');
        expect(c.detail, name).to.not.match(/^not offered/);
      }
    });
  }

  it('the table, --only, and a socket nothing listens on', async () => {
    const sock = join(dir, 'blk2.sock');
    const r = await run(process.execPath, [cli, 'conformance', sock, '--only', 'memory,header-bad-version', '--spawn', `exec ${process.execPath} ${cli} blk --socket ${sock} --ram 16M`]);
    expect(r.stdout).to.match(/memory\/max-mem-slots +passed/);
    expect(r.stdout).to.match(/hostile-headers\/header-bad-version +rejected/);
    expect(r.stdout).to.match(/\d+ cases: \d+ passed, 1 rejected/);
    const none = await run(process.execPath, [cli, 'conformance', join(dir, 'none.sock')]).catch((e: { code: number; stderr: string }) => e);
    expect((none as { code: number }).code).to.equal(2);
    expect((none as { stderr: string }).stderr).to.match(/nothing accepts connections there/);
  });
});
