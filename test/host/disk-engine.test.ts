// A disk's request engine in the host configuration and the management API: `engine`
// (threads | io_uring | auto, default auto) is checked by its key, reaches the disk, and
// GET /v1/disks (what `vhostkit ctl disks` shows) says which engine serves each disk.
import { expect } from 'chai';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Host } from '../../src/host/host.js';
import { ApiServer } from '../../src/host/api.js';
import { ConfigError, parseConfig, parseDiskConfig } from '../../src/host/config.js';
import { apiRequest } from '../../src/cli/ctl.js';
import { setLogSink } from '../../src/log.js';

describe('disk engine: configuration and API', function () {
  this.timeout(20000);

  it('defaults to auto, takes threads and io_uring, and names a bad value by its key', () => {
    expect(parseDiskConfig({ socket: '/d.sock', ram: '1M' }).engine).to.equal('auto');
    expect(parseDiskConfig({ socket: '/d.sock', ram: '1M', engine: 'threads' }).engine).to.equal('threads');
    expect(parseDiskConfig({ socket: '/d.sock', ram: '1M', engine: 'io_uring' }).engine).to.equal('io_uring');
    expect(() => parseConfig({ disks: [{ socket: '/d.sock', ram: '1M', engine: 'aio' }] })).to.throw(ConfigError, /disks\[0\]\.engine/);
  });

  it('GET /v1/disks shows the engine serving each disk and its pollUs', async () => {
    const old = setLogSink(() => undefined);
    const dir = mkdtempSync(join(tmpdir(), 'vk-disk-engine-'));
    let host: Host | null = null;
    let api: ApiServer | null = null;
    try {
      writeFileSync(join(dir, 'd0.img'), new Uint8Array(0));
      truncateSync(join(dir, 'd0.img'), 1 << 20);
      const cfg = parseConfig(
        {
          disks: [
            { name: 'd0', socket: 'd0.sock', file: 'd0.img' },
            { name: 'd1', socket: 'd1.sock', ram: '1M', engine: 'threads' },
            { name: 'd2', socket: 'd2.sock', ram: '1M', engine: 'io_uring', pollUs: 16 },
          ],
        },
        dir,
      );
      host = await Host.start(cfg);
      api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`);
      const r = await apiRequest(api.address, 'GET', '/v1/disks');
      const rows = r.body as Array<{ name: string; engine: string; pollUs: number }>;
      // This machine's kernel allows io_uring: auto takes it. pollUs reaches the device.
      expect(rows.map((d) => [d.name, d.engine, d.pollUs])).to.deep.equal([
        ['d0', 'io_uring', 0],
        ['d1', 'threads', 0],
        ['d2', 'io_uring', 16],
      ]);
    } finally {
      await api?.close();
      await host?.close();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(old);
    }
  });
});
