// POST /v1/disks/NAME/resize in process (Host + ApiServer on a Unix socket, our frontend as
// the guest): what it accepts, the errors it answers, and the guest told through the
// backend channel.
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Host } from '../../src/host/host.js';
import { ApiServer } from '../../src/host/api.js';
import { parseConfig } from '../../src/host/config.js';
import { apiRequest } from '../../src/cli/ctl.js';
import { setLogSink } from '../../src/log.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { closeFd, recvMessage, socketPair } from '../../src/native/unix-socket.js';
import { BackendReq, HEADER_SIZE, Req, decodeHeader } from '../../src/vhost-user/protocol.js';
import { decodeBlkConfig } from '../../src/virtio/blk.js';

const MiB = 1 << 20;

describe('management API: POST /v1/disks/NAME/resize', function () {
  this.timeout(20000);
  let dir: string;
  let host: Host;
  let api: ApiServer;
  let addr: string;
  let old: ReturnType<typeof setLogSink>;

  beforeEach(async () => {
    old = setLogSink(() => undefined);
    dir = mkdtempSync(join(tmpdir(), 'vk-resize-api-'));
    writeFileSync(join(dir, 'd0.img'), new Uint8Array(0));
    truncateSync(join(dir, 'd0.img'), 8 * MiB);
    const cfg = parseConfig(
      {
        disks: [
          { name: 'd0', socket: 'd0.sock', file: 'd0.img' },
          { name: 'd1', socket: 'd1.sock', ram: '8M' },
        ],
      },
      dir,
    );
    host = await Host.start(cfg);
    api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`);
    addr = api.address;
  });
  afterEach(async () => {
    await api.close();
    await host.close();
    rmSync(dir, { recursive: true, force: true });
    setLogSink(old);
  });

  const post = (name: string, body?: unknown) => apiRequest(addr, 'POST', `/v1/disks/${name}/resize`, body);
  const error = (r: { body: unknown }) => (r.body as { error: string }).error;

  it('refuses bad requests with the reason and changes nothing', async () => {
    const cases: Array<[string, unknown, number, RegExp]> = [
      ['nope', { size: '16M' }, 404, /no disk nope/],
      ['d1', { size: 'lots' }, 400, /size lots: expected a number with an optional K, M, G or T suffix/],
      ['d1', { size: -512 }, 400, /size -512: expected a positive integer of bytes/],
      ['d1', { size: 1.5 }, 400, /expected a positive integer of bytes/],
      ['d1', { size: true }, 400, /size: expected bytes/],
      ['d1', { size: '16M', file: '/etc/passwd' }, 400, /file: unknown key \(expected one of: size\)/],
      ['d1', [1], 400, /body: expected/],
      ['d1', { size: 8 * MiB + 100 }, 400, /multiple of the block size/],
      ['d1', { size: '4M' }, 400, /disk d1: size 4194304: smaller than the disk \(8388608 bytes\); shrinking is refused/],
      ['d1', {}, 400, /disk d1 is a RAM disk: give the new size/],
      ['d0', { size: '4M' }, 400, /shrinking is refused/],
    ];
    for (const [name, body, status, re] of cases) {
      const r = await post(name, body);
      expect(r.status, JSON.stringify(body)).to.equal(status);
      expect(error(r)).to.match(re);
    }
    truncateSync(join(dir, 'd0.img'), 4 * MiB);
    const r = await post('d0');
    expect(r.status).to.equal(400);
    expect(error(r)).to.match(/the file is now smaller than the disk: shrinking from 16384 to 8192 sectors is refused/);
    truncateSync(join(dir, 'd0.img'), 8 * MiB);
    for (const n of ['d0', 'd1']) expect(host.diskInfo(n).sizeBytes).to.equal(8 * MiB);
  });

  it('grows a file disk (a size, or the file re-read) and a RAM disk; a connected guest gets CONFIG_CHANGE_MSG and GET_CONFIG answers the new size', async () => {
    // No guest: the size changes, nobody to tell.
    let r = await post('d1', { size: '16M' });
    expect(r.status).to.equal(201);
    expect(r.body).to.include({ name: 'd1', sizeBytes: 16 * MiB, oldSizeBytes: 8 * MiB, notified: false, connected: false });
    r = await post('d0', { size: 12 * MiB });
    expect(r.body).to.include({ sizeBytes: 12 * MiB, notified: false });
    expect(statSync(join(dir, 'd0.img')).size).to.equal(12 * MiB);
    // A guest on d0 with the backend channel.
    const fe = await VhostUserFrontend.connect(join(dir, 'd0.sock'));
    try {
      await fe.negotiate();
      const [mine, theirs] = socketPair();
      await fe.request(Req.SET_BACKEND_REQ_FD, undefined, { fds: [theirs], ack: true });
      closeFd(theirs);
      truncateSync(join(dir, 'd0.img'), 20 * MiB);
      r = await post('d0');
      expect(r.body).to.include({ sizeBytes: 20 * MiB, oldSizeBytes: 12 * MiB, notified: true, connected: true });
      const buf = new Uint8Array(HEADER_SIZE);
      let got = null;
      for (let i = 0; i < 100 && got === null; i++) {
        const m = recvMessage(mine, buf, 0);
        if (m !== null && m.bytes === HEADER_SIZE) got = decodeHeader(buf);
        else await new Promise((res) => setTimeout(res, 10));
      }
      expect(got?.request).to.equal(BackendReq.CONFIG_CHANGE_MSG);
      expect(decodeBlkConfig((await fe.getConfig(0, 60))!).capacity).to.equal(BigInt((20 * MiB) / 512));
      closeFd(mine);
    } finally {
      fe.close();
    }
    expect(readFileSync(join(dir, 'd0.img')).length).to.equal(20 * MiB);
    const list = await apiRequest(addr, 'GET', '/v1/disks');
    expect((list.body as Array<{ name: string; sizeBytes: number }>).map((x) => [x.name, x.sizeBytes])).to.deep.equal([
      ['d0', 20 * MiB],
      ['d1', 16 * MiB],
    ]);
  });
});
