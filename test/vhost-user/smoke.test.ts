import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { EchoDevice } from '../lib/echo-device.js';
import { setLogSink, type LogRecord } from '../../src/log.js';

describe('vhost-user smoke', () => {
  it('negotiates and echoes one chain', async () => {
    const logs: LogRecord[] = [];
    const old = setLogSink((r) => logs.push(r));
    const dir = mkdtempSync(join(tmpdir(), 'vk-'));
    const dev = new EchoDevice();
    const be = new VhostUserBackend(dev, { socket: join(dir, 's') });
    await be.start();
    const fe = await VhostUserFrontend.connect(join(dir, 's'));
    try {
      await fe.negotiate();
      await fe.setupMemory(4 << 20);
      const q = await fe.startQueue(0, { size: 64 });
      const id = q.driver.add([
        { len: 4, writable: false, data: Uint8Array.of(1, 2, 3, 4) },
        { len: 8, writable: true },
      ]);
      q.publishAndKick();
      const used = await q.waitUsed(1);
      expect(used).to.deep.equal([{ id, len: 4 }]);
      expect(Array.from(q.driver.readWritten(id, 4))).to.deep.equal([4, 3, 2, 1]);
    } finally {
      fe.close();
      await be.stop();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(old);
    }
    expect(logs.map((l) => l.msg)).to.include('ring started');
  });
});
