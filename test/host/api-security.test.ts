// The management API against a hostile client: who may connect (a token on TCP), and which
// files and devices a request may make vhostkit touch (captures in the capture directory only,
// never over an existing file or through a symlink; disk images under the image directories
// only, block devices only when allowed).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Host } from '../../src/host/host.js';
import { ApiServer, isLoopback } from '../../src/host/api.js';
import { AccessPolicy } from '../../src/host/policy.js';
import { parseConfig } from '../../src/host/config.js';
import { apiRequest } from '../../src/cli/ctl.js';
import { setLogSink, type LogRecord } from '../../src/log.js';

const run = promisify(execFile);
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
const TOKEN = 'vk-test-token-0123456789abcdef';

describe('management API security', function () {
  this.timeout(30000);
  let dir: string;
  let host: Host;
  let api: ApiServer | null;
  let logs: LogRecord[];
  let old: ReturnType<typeof setLogSink>;

  beforeEach(async () => {
    logs = [];
    old = setLogSink((r) => logs.push(r));
    dir = mkdtempSync(join(tmpdir(), 'vk-apisec-'));
    host = await Host.start(parseConfig({ switches: [{ name: 'sw0', ports: [{ name: 'vm1', socket: 'vm1.sock' }] }] }, dir));
    api = null;
  });
  afterEach(async () => {
    await api?.close();
    await host.close();
    rmSync(dir, { recursive: true, force: true });
    setLogSink(old);
  });

  const error = (r: { body: unknown }) => (r.body as { error: string }).error;

  it('refuses to listen on a non-loopback TCP address without a token; loopback without one says so', async () => {
    expect(isLoopback('127.0.0.1') && isLoopback('127.1.2.3') && isLoopback('::1') && isLoopback('localhost')).to.equal(true);
    expect(isLoopback('0.0.0.0') || isLoopback('10.0.0.1') || isLoopback('::')).to.equal(false);
    let err: Error | null = null;
    await ApiServer.listen(host, '0.0.0.0:0').catch((e: Error) => (err = e));
    expect(err, 'listening on 0.0.0.0 without a token').to.not.equal(null);
    expect(err!.message).to.match(/without a token.*--api-token-file/);
    api = await ApiServer.listen(host, '127.0.0.1:0');
    expect(logs.some((l) => l.level === 'warn' && /loopback TCP without a token/.test(l.msg))).to.equal(true);
    expect((await apiRequest(api.address, 'GET', '/v1/status')).status).to.equal(200);
  });

  it('with a token: no token or a wrong one gets 401 and changes nothing, the right one works (/metrics too)', async () => {
    api = await ApiServer.listen(host, '0.0.0.0:0', { token: TOKEN });
    const addr = `127.0.0.1:${api.address.split(':').pop()}`;
    for (const [token, what] of [
      [undefined, 'none'],
      ['wrong-token-0123456789', 'wrong'],
      [`${TOKEN}x`, 'longer'],
    ] as const) {
      const r = await apiRequest(addr, 'POST', '/v1/ports', { switch: 'sw0', name: 'evil', socket: join(dir, 'evil.sock') }, token);
      expect(r.status, `token ${what}`).to.equal(401);
      expect(error(r)).to.match(/unauthorized/);
      expect((await apiRequest(addr, 'GET', '/metrics', undefined, token)).status, `/metrics, token ${what}`).to.equal(401);
    }
    expect(existsSync(join(dir, 'evil.sock'))).to.equal(false);
    expect(host.ports().map((p) => p.name)).to.deep.equal(['vm1']);
    expect((await apiRequest(addr, 'GET', '/v1/status', undefined, TOKEN)).status).to.equal(200);
    expect((await apiRequest(addr, 'GET', '/metrics', undefined, TOKEN)).status).to.equal(200);
    // vhostkit ctl with --token-file
    const tf = join(dir, 'token');
    writeFileSync(tf, `${TOKEN}\n`, { mode: 0o600 });
    const ok = await run(process.execPath, [cli, 'ctl', '--api', addr, '--token-file', tf, 'status']);
    expect(JSON.parse(ok.stdout)).to.include({ ports: 1 });
    const no = await run(process.execPath, [cli, 'ctl', '--api', addr, 'status']).catch((e: { code: number; stderr: string }) => e);
    expect((no as { code: number }).code).to.equal(1);
    expect((no as { stderr: string }).stderr).to.match(/unauthorized/);
  });

  it('captures: refused without a capture directory, outside it, through a symlink or over an existing file', async () => {
    api = await ApiServer.listen(host, `unix:${join(dir, 'api0.sock')}`);
    const r0 = await apiRequest(api.address, 'POST', '/v1/ports/vm1/capture', { file: join(dir, 'x.pcap') });
    expect(r0.status).to.equal(403);
    expect(error(r0)).to.match(/captures through the API are off/);
    await api.close();

    const caps = join(dir, 'caps');
    mkdirSync(caps);
    writeFileSync(join(caps, 'existing.pcap'), 'keep me');
    symlinkSync('/etc', join(caps, 'etc'));
    symlinkSync(join(dir, 'target'), join(caps, 'link.pcap'));
    writeFileSync(join(dir, 'target'), 'not yours');
    api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`, { policy: new AccessPolicy({ captureDir: caps }) });
    const passwd = readFileSync('/etc/passwd');
    const cases: Array<[string, number, RegExp]> = [
      ['/etc/passwd', 403, /outside the capture directory/],
      ['../x.pcap', 403, /outside the capture directory/],
      ['etc/passwd', 403, /outside the capture directory/],
      [caps, 403, /outside the capture directory/],
      ['existing.pcap', 400, /EEXIST/],
      ['link.pcap', 400, /EEXIST/],
      ['nodir/x.pcap', 400, /ENOENT/],
    ];
    for (const [file, status, re] of cases) {
      const r = await apiRequest(api.address, 'POST', '/v1/ports/vm1/capture', { file });
      expect(r.status, file).to.equal(status);
      expect(error(r), file).to.match(re);
    }
    expect(readFileSync('/etc/passwd').equals(passwd)).to.equal(true);
    expect(readFileSync(join(caps, 'existing.pcap'), 'utf8')).to.equal('keep me');
    expect(readFileSync(join(dir, 'target'), 'utf8')).to.equal('not yours');
    expect(existsSync(join(dir, 'x.pcap'))).to.equal(false);
    // The CLI says the same.
    const c = await run(process.execPath, [cli, 'ctl', '--api', api.address, 'capture', 'start', 'vm1', '/etc/passwd']).catch((e: { code: number; stderr: string }) => e);
    expect((c as { code: number }).code).to.equal(1);
    expect((c as { stderr: string }).stderr).to.match(/outside the capture directory/);
    // A new name in the directory (relative or absolute) works.
    const ok = await apiRequest(api.address, 'POST', '/v1/ports/vm1/capture', { file: 'vm1.pcap', count: 1 });
    expect(ok.status, error(ok)).to.equal(201);
    expect(statSync(join(caps, 'vm1.pcap')).mode & 0o777).to.equal(0o600);
    await apiRequest(api.address, 'DELETE', '/v1/ports/vm1/capture');
  });

  it('disks through the API: only images under the image directories; block devices only when allowed', async () => {
    const images = join(dir, 'images');
    mkdirSync(images);
    writeFileSync(join(images, 'ok.img'), new Uint8Array(0));
    truncateSync(join(images, 'ok.img'), 1 << 20);
    symlinkSync('/etc/passwd', join(images, 'sneaky.img'));
    mkdirSync(join(images, 'sub'));
    api = await ApiServer.listen(host, `unix:${join(dir, 'api0.sock')}`, { policy: new AccessPolicy({ socketDirs: [dir] }) });
    const off = await apiRequest(api.address, 'POST', '/v1/disks', { name: 'd', socket: join(dir, 'd.sock'), file: join(images, 'ok.img') });
    expect(off.status).to.equal(403);
    expect(error(off)).to.match(/disks with a file are off through the API/);
    await api.close();

    const blockDev = readdirSync('/dev')
      .map((n) => join('/dev', n))
      .find((p) => {
        try {
          return statSync(p).isBlockDevice();
        } catch {
          return false;
        }
      });
    api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`, { policy: new AccessPolicy({ imageDirs: [images, '/dev'], socketDirs: [dir] }) });
    const cases: Array<[string, RegExp]> = [
      ['/etc/passwd', /not under an image directory/],
      [join(images, '..', 'api.sock'), /not under an image directory/],
      [join(images, 'sneaky.img'), /not under an image directory/],
      [join(images, 'sub'), /not a regular file or block device/],
      ['/dev/null', /not a regular file or block device/],
      ...(blockDev ? [[blockDev, /a block device, and block devices are off/] as [string, RegExp]] : []),
    ];
    for (const [file, re] of cases) {
      const r = await apiRequest(api.address, 'POST', '/v1/disks', { name: 'd', socket: join(dir, 'd.sock'), file });
      expect(r.status, file).to.equal(403);
      expect(error(r), file).to.match(re);
      expect(existsSync(join(dir, 'd.sock')), `${file}: no socket made`).to.equal(false);
    }
    expect(host.diskList()).to.deep.equal([]);
    const ok = await apiRequest(api.address, 'POST', '/v1/disks', { name: 'd', socket: join(dir, 'd.sock'), file: join(images, 'ok.img') });
    expect(ok.status, error(ok)).to.equal(201);
    expect(host.diskList().map((d) => d.name)).to.deep.equal(['d']);
    const ram = await apiRequest(api.address, 'POST', '/v1/disks', { name: 'r', socket: join(dir, 'r.sock'), ram: '1M' });
    expect(ram.status, 'RAM disks need no image directory').to.equal(201);
  });

  it('sockets, TAP/VXLAN ports and hooks through the API: held to the socket directories, off unless allowed', async () => {
    const socks = join(dir, 'socks');
    mkdirSync(socks);
    mkdirSync(join(socks, 'sub'));
    symlinkSync('/tmp', join(socks, 'out'));
    api = await ApiServer.listen(host, `unix:${join(dir, 'api0.sock')}`);
    const off = await apiRequest(api.address, 'POST', '/v1/ports', { switch: 'sw0', name: 'p', socket: join(socks, 'p.sock') });
    expect(off.status).to.equal(403);
    expect(error(off)).to.match(/sockets through the API are off: start vhostkit run with --socket-dir DIR/);
    await api.close();

    api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`, { policy: new AccessPolicy({ socketDirs: [socks] }) });
    const refused: Array<[string, string, Record<string, unknown>, RegExp]> = [
      ['port in /etc', '/v1/ports', { switch: 'sw0', name: 'p', socket: '/etc/p.sock' }, /not in a socket directory/],
      ['port below the directory', '/v1/ports', { switch: 'sw0', name: 'p', socket: join(socks, 'sub', 'p.sock') }, /not in a socket directory/],
      ['port through a symlinked directory', '/v1/ports', { switch: 'sw0', name: 'p', socket: join(socks, 'out', 'p.sock') }, /not in a socket directory/],
      ['port through ..', '/v1/ports', { switch: 'sw0', name: 'p', socket: join(socks, '..', 'p.sock') }, /not in a socket directory/],
      ['disk outside', '/v1/disks', { name: 'd', socket: join(dir, 'd.sock'), ram: '1M' }, /not in a socket directory/],
      ['TAP port', '/v1/ports', { switch: 'sw0', name: 't', kind: 'tap', ifname: 'vktap9' }, /TAP and VXLAN ports through the API are off/],
      ['VXLAN port', '/v1/ports', { switch: 'sw0', name: 'x', kind: 'vxlan', remote: '127.0.0.1', vni: 9 }, /TAP and VXLAN ports through the API are off/],
      ['switch with a port outside', '/v1/switches', { name: 'sw1', ports: [{ name: 'q', socket: '/tmp/q.sock' }] }, /not in a socket directory/],
      ['switch with a hook', '/v1/switches', { name: 'sw2', hook: join(dir, 'evil.mjs'), ports: [] }, /a hook module through the API is refused/],
    ];
    for (const [what, path, body, re] of refused) {
      const r = await apiRequest(api.address, 'POST', path, body);
      expect(r.status, what).to.equal(403);
      expect(error(r), what).to.match(re);
    }
    expect(existsSync('/etc/p.sock') || existsSync('/tmp/p.sock') || existsSync('/tmp/q.sock') || existsSync(join(dir, 'p.sock')), 'no socket made').to.equal(false);
    expect(host.ports().map((p) => p.name)).to.deep.equal(['vm1']);
    expect((await host.switchList()).map((s) => s.name)).to.deep.equal(['sw0']);
    expect(host.diskList()).to.deep.equal([]);

    const ok = await apiRequest(api.address, 'POST', '/v1/ports', { switch: 'sw0', name: 'p', socket: join(socks, 'p.sock') });
    expect(ok.status, error(ok)).to.equal(201);
    expect(existsSync(join(socks, 'p.sock'))).to.equal(true);
    const disk = await apiRequest(api.address, 'POST', '/v1/disks', { name: 'd', socket: join(socks, 'd.sock'), ram: '1M' });
    expect(disk.status, error(disk)).to.equal(201);
  });
});
