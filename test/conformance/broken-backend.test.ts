// `vhostkit conformance` against a backend with rules broken on purpose (broken-backend.ts:
// vhostkit's RAM disk behind a proxy that breaks them): each broken rule is caught by the
// case that checks it, with the right verdict, and the tool itself runs to the end.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RULES, type Rule } from './broken-backend.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const broken = fileURLToPath(new URL('./broken-backend.js', import.meta.url));

/** The case that must catch each rule, and its verdict. */
const CAUGHT_BY: Record<Rule, [string, string, RegExp]> = {
  'vring-base-plus-one': ['get-vring-base', 'failed', /GET_VRING_BASE answered 6 after 5 chains/],
  'crash-on-bad-version': ['header-bad-version', 'crashed', /killed by SIGSEGV/],
  'leak-unknown-fds': ['unknown-request', 'leaked', /1 more fds open/],
  'hang-on-big-size': ['header-size-4gib', 'hung', /neither closed nor answered/],
  'status-zero': ['status', 'failed', /GET_STATUS 0x0 after SET_STATUS 0xb/],
  'config-wrong-size': ['get-config', 'failed', /payload of 20 bytes for size 7/],
  'mem-slots-plus-one': ['max-mem-slots', 'failed', /refused a region within its own limit of 65/],
  'inflight-too-small': ['inflight-area-size', 'failed', /mmap_size 64, at least 1040/],
};

describe('vhostkit conformance against a backend with broken rules', function () {
  this.timeout(300000);
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'vk-conf-broken-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('each broken rule is reported by its case; with no rule broken every case passes or is rejected', async () => {
    const sock = join(dir, 'b.sock');
    const only = Object.values(CAUGHT_BY).map(([name]) => name);
    const runWith = async (rules: readonly string[]): Promise<{ code: number; cases: Array<{ name: string; status: string; detail: string }> }> => {
      const spawn = `exec ${process.execPath} ${broken} ${sock} ${rules.join(',') || 'none'}`;
      const r = await new Promise<{ code: number; stdout: string }>((resolve) =>
        execFile(process.execPath, [cli, 'conformance', sock, '--type', 'blk', '--json', '--only', only.join(','), '--spawn', spawn], { maxBuffer: 16 << 20 }, (e, stdout) =>
          resolve({ code: e ? ((e as { code?: number }).code ?? -1) : 0, stdout }),
        ),
      );
      return { code: r.code, cases: (JSON.parse(r.stdout) as { cases: Array<{ name: string; status: string; detail: string }> }).cases };
    };
    const bad = await runWith(RULES);
    expect(bad.code, 'exit code with broken rules').to.equal(1);
    for (const rule of RULES) {
      const [name, status, detail] = CAUGHT_BY[rule];
      const c = bad.cases.find((x) => x.name === name);
      expect(c, `${rule}: case ${name} ran`).to.not.equal(undefined);
      expect(c!.status, `${rule} -> ${name}: ${c!.detail}`).to.equal(status);
      expect(c!.detail, rule).to.match(detail);
    }
    const good = await runWith([]);
    expect(good.cases.filter((c) => c.status !== 'passed' && c.status !== 'rejected')).to.deep.equal([]);
    expect(good.code).to.equal(0);
  });
});
