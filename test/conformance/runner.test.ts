// The conformance runner with cases made for the test, against a real backend it spawns
// (vhostkit blk on a RAM disk): each verdict (passed, rejected, failed, hung, crashed with
// its signal, and a restart after the crash), the data check after each case, --only, the
// JSON document and the table, and the exit code.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exitCodeOf, runConformance, selectCases, type ConformanceReport } from '../../src/conformance/runner.js';
import { reportJson, reportTable } from '../../src/conformance/report.js';
import { failed, passed, rejected, type ConformanceCase } from '../../src/conformance/case.js';
import { CASES } from '../../src/conformance/cases.js';
import { listenerPid } from '../../src/conformance/backend-process.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

describe('conformance runner', function () {
  this.timeout(120000);
  let dir: string;
  let socket: string;
  let spawn: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-conf-runner-'));
    socket = join(dir, 'blk.sock');
    spawn = `exec ${process.execPath} ${cli} blk --socket ${socket} --ram 16M`;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reports each verdict; a crash shows its signal, the backend is started again and the next case runs', async () => {
    let pidAtCrash = 0;
    const cases: ConformanceCase[] = [
      { name: 'ok', group: 'negotiation', spec: 's', run: async (ctx) => passed(`features ${(await (await ctx.frontend()).getFeatures()).toString(16)}`) },
      { name: 'refused', group: 'messages', spec: 's', run: async () => rejected('said no') },
      { name: 'wrong', group: 'messages', spec: 's', run: async () => failed('answered 7') },
      { name: 'throws', group: 'messages', spec: 's', run: async () => Promise.reject(new Error('boom')) },
      { name: 'never', group: 'rings', spec: 's', timeoutMs: 300, run: () => new Promise(() => undefined) },
      {
        name: 'kill',
        group: 'connections',
        spec: 's',
        run: async (ctx) => {
          pidAtCrash = listenerPid(ctx.socket)!;
          process.kill(pidAtCrash, 'SIGSEGV');
          return passed('sent SIGSEGV');
        },
      },
      { name: 'after', group: 'negotiation', spec: 's', types: ['blk'], run: async (ctx) => passed(`pid ${listenerPid(ctx.socket)}`) },
      { name: 'net-only', group: 'negotiation', spec: 's', types: ['net'], run: async () => failed('must not run on blk') },
    ];
    const seen: string[] = [];
    const r = await runConformance(cases, { socket, type: 'blk', spawn, onResult: (c) => seen.push(c.name) });
    const by = Object.fromEntries(r.cases.map((c) => [c.name, c]));
    expect(seen).to.deep.equal(['ok', 'refused', 'wrong', 'throws', 'never', 'kill', 'after']);
    expect(by.ok.status).to.equal('passed');
    expect(by.refused).to.include({ status: 'rejected', detail: 'said no' });
    expect(by.wrong).to.include({ status: 'failed', detail: 'answered 7' });
    expect(by.throws).to.include({ status: 'failed', detail: 'boom' });
    expect(by.never.status).to.equal('hung');
    expect(by.never.detail).to.match(/no answer within 300 ms/);
    expect(by.kill.status).to.equal('crashed');
    expect(by.kill.detail).to.match(/killed by SIGSEGV/);
    expect(by.after.status).to.equal('passed');
    expect(by.after.detail).to.not.equal(`pid ${pidAtCrash}`);
    expect(r.backend.restarts).to.equal(1);
    expect(exitCodeOf(r)).to.equal(1);
    const doc = JSON.parse(reportJson(r)) as { backend: { type: string }; cases: Array<{ name: string; group: string; status: string; detail: string }> };
    expect(doc.backend.type).to.equal('blk');
    expect(doc.cases.map((c) => [c.name, c.group, c.status])).to.deep.equal(r.cases.map((c) => [c.name, c.group, c.status]));
    expect(reportTable(r)).to.match(/7 cases: 2 passed, 1 rejected, 2 failed, 1 crashed, 1 hung/);
  });

  it('a backend we did not start: a crash ends the run, the remaining cases are listed as not run', async () => {
    const { spawn: spawnChild } = await import('node:child_process');
    const child = spawnChild(process.execPath, [cli, 'blk', '--socket', socket, '--ram', '16M'], { stdio: 'ignore' });
    try {
      const deadline = Date.now() + 10000;
      while (listenerPid(socket) === null) {
        if (Date.now() > deadline) throw new Error('vhostkit blk did not listen');
        await new Promise((r) => setTimeout(r, 20));
      }
      const cases: ConformanceCase[] = [
        { name: 'first', group: 'negotiation', spec: 's', run: async () => passed('fine') },
        { name: 'kill', group: 'connections', spec: 's', run: async () => (child.kill('SIGKILL'), passed('killed it')) },
        { name: 'later', group: 'negotiation', spec: 's', run: async () => passed('never') },
      ];
      const r: ConformanceReport = await runConformance(cases, { socket, type: 'blk' });
      expect(r.cases.map((c) => [c.name, c.status])).to.deep.equal([
        ['first', 'passed'],
        ['kill', 'crashed'],
      ]);
      expect(r.notRun).to.deep.equal(['later']);
      expect(r.backend.pid).to.equal(child.pid);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('--only takes groups and case names; cases apply to their device types', () => {
    expect(selectCases(CASES, 'blk', ['memory']).every((c) => c.group === 'memory')).to.equal(true);
    expect(selectCases(CASES, 'net', ['get-vring-base', 'hostile-headers']).map((c) => c.name)).to.include.members(['get-vring-base', 'header-bad-version']);
    const names = CASES.map((c) => c.name);
    expect(new Set(names).size, 'case names are unique').to.equal(names.length);
    for (const c of CASES) expect(c.spec.length, `${c.name} says what the spec says`).to.be.above(20);
  });
});
