// vhostkit ctl top: rates from two readings of the counters, and the command against a
// running host.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { rate, render } from '../../src/cli/top.js';
import { Host } from '../../src/host/host.js';
import { ApiServer } from '../../src/host/api.js';
import { parseConfig } from '../../src/host/config.js';
import { setLogSink } from '../../src/log.js';

const run = promisify(execFile);
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

describe('vhostkit ctl top', function () {
  this.timeout(20000);

  it('rates per second from two readings', () => {
    expect([rate(0), rate(999), rate(1500), rate(2_500_000), rate(3e9)]).to.deep.equal(['0', '999', '1.5k', '2.50M', '3.00G']);
    const port = (rx: number, bytes: number, drops: number) => ({
      name: 'vm1',
      switch: 'sw0',
      connected: true,
      counters: { rx_packets: rx, rx_bytes: bytes, tx_packets: 0, tx_bytes: 0, drop_no_buffers: drops },
    });
    const q = (packets: number) => ({ switch: 'sw0', port: 'vm1', index: 1, size: 256, packets, bytes: packets * 64, notifySent: 0, ringFill: 3 });
    const screen = render({ at: 0, ports: [port(1000, 64000, 5)], queues: [q(1000)] }, { at: 2000, ports: [port(3_001_000, 192_064_000, 25)], queues: [q(3_001_000)] });
    const lines = screen.split('\n');
    const row = lines.find((l) => l.startsWith('vm1') && l.includes('sw0'))!;
    // 3,000,000 frames and 192,000,000 bytes in 2 s: 1.50 Mpps, 768 Mbit/s; 20 drops: 10/s.
    expect(row.split(/\s+/)).to.deep.equal(['vm1', 'sw0', 'yes', '1.50M', '768.00M', '0', '0', '10', '25']);
    expect(
      lines
        .find((l) => /^vm1 +1 tx/.test(l))!
        .split(/\s+/)
        .slice(0, 5),
    ).to.deep.equal(['vm1', '1', 'tx', '1.50M', '768.00M']);
  });

  it('prints a screen per interval against a running host (--count)', async () => {
    const old = setLogSink(() => undefined);
    const dir = mkdtempSync(join(tmpdir(), 'vk-top-'));
    const host = await Host.start(parseConfig({ switches: [{ name: 'sw0', ports: [{ name: 'vm1', socket: 'vm1.sock' }] }] }, dir));
    const api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`);
    try {
      const r = await run(process.execPath, [cli, 'ctl', '--api', api.address, 'top', '--count', '2', '--interval', '0.2']);
      expect(r.stdout.match(/^vhostkit top: /gm)).to.have.length(2);
      expect(r.stdout).to.match(/^PORT +SWITCH +UP +RX pps/m);
      expect(r.stdout).to.match(/^vm1 +sw0 +no +0 +0 +0 +0 +0 +0$/m);
    } finally {
      await api.close();
      await host.close();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(old);
    }
  });
});
