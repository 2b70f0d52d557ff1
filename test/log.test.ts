// Logs for people and for machines: the line format on a terminal, JSON lines otherwise,
// --log-level / --log-format on any command, and the level changed at run time through the API.
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatPretty, log, logLevel, setLogLevel, setLogSink, type LogRecord } from '../src/log.js';
import { Host } from '../src/host/host.js';
import { ApiServer } from '../src/host/api.js';
import { parseConfig } from '../src/host/config.js';
import { apiRequest } from '../src/cli/ctl.js';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

/** Runs `vhostkit blk` on a RAM disk for a moment; resolves with what it wrote to stderr. */
function blkStderr(dir: string, flags: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [cli, 'blk', '--socket', join(dir, `b${Math.random()}.sock`), '--ram', '1M', ...flags], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, VHOSTKIT_LOG_FORMAT: '', VHOSTKIT_LOG: '' },
    });
    let stderr = '';
    let stdout = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('vhostkit blk:')) setTimeout(() => p.kill('SIGTERM'), 100);
    });
    p.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('logs', function () {
  this.timeout(20000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-log-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a line for people: time, level, component, message, key=value', () => {
    const t = new Date(2026, 11, 6, 9, 5, 7, 42).getTime();
    const line = formatPretty({ level: 'warn', time: t, msg: 'queue broken', component: 'switch', port: 'vm1', queue: 1, why: 'a b', big: 0x10n, vlan: { mode: 'access', vid: 1 } });
    expect(line).to.equal('09:05:07.042 WARN  switch: queue broken port=vm1 queue=1 why="a b" big=0x10 vlan={"mode":"access","vid":1}\n');
  });

  it('a sink that throws does not throw into what logged: the record goes to stderr, with why', () => {
    const mod = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'log.js');
    const script = `
      const { log, setLogSink } = await import(${JSON.stringify(mod)});
      setLogSink(() => { throw new Error('sink broke'); });
      log.child({ component: 'test' }).info('still here', { n: 1n });
      console.log('returned');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, VHOSTKIT_LOG_FORMAT: 'json', VHOSTKIT_LOG: '' } });
    expect(r.stdout, r.stderr).to.equal('returned\n');
    expect(r.stderr).to.include('still here');
    expect(r.stderr).to.include('log sink threw');
    expect(r.stderr).to.include('sink broke');
  });

  it('--log-format pretty | json, JSON when stderr is not a terminal, --log-level', async () => {
    const pretty = await blkStderr(dir, ['--log-format', 'pretty']);
    expect(pretty.stderr.split('\n')[0]).to.match(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}listening disk=ram:1M socket=\S+ mode=server$/);
    const json = await blkStderr(dir, ['--log-format=json']);
    expect(JSON.parse(json.stderr.split('\n')[0])).to.include({ level: 'info', msg: 'listening', disk: 'ram:1M' });
    const piped = await blkStderr(dir, []);
    expect(JSON.parse(piped.stderr.split('\n')[0])).to.include({ msg: 'listening' });
    const quiet = await blkStderr(dir, ['--log-level', 'warn']);
    expect(quiet.stderr).to.equal('');
    const bad = await blkStderr(dir, ['--log-level', 'loud']);
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.include('--log-level loud: expected one of debug, info, warn, error');
  });

  it('the level changes at run time through the API (PUT /v1/log, ctl log-level)', async () => {
    const got: LogRecord[] = [];
    const old = setLogSink((r) => got.push(r));
    const before = logLevel();
    const host = await Host.start(parseConfig({}, dir));
    const api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`);
    try {
      setLogLevel('info');
      log.debug('not yet');
      expect((await apiRequest(api.address, 'PUT', '/v1/log', { level: 'debug' })).body).to.deep.include({ level: 'debug' });
      log.debug('now');
      expect((await apiRequest(api.address, 'PUT', '/v1/log', { level: 'loud' })).status).to.equal(400);
      expect(((await apiRequest(api.address, 'GET', '/v1/log')).body as { level: string }).level).to.equal('debug');
      expect(got.filter((r) => r.level === 'debug').map((r) => r.msg)).to.deep.equal(['now']);
    } finally {
      await api.close();
      await host.close();
      setLogLevel(before);
      setLogSink(old);
    }
  });
});
