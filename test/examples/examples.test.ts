// Each program in examples/ run as a user runs it (compiled to dist/examples), and checked
// for what it says it does.
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { BlkClient, BlkStatus } from '../lib/blk-client.js';
import { bit, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1 } from '../../src/virtio/features.js';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const example = (name: string) => join(dist, 'examples', `${name}.js`);
const cli = join(dist, 'src', 'cli', 'main.js');

async function until(f: () => boolean, what: string, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** An Ethernet frame with this ethertype, 64 bytes. */
function frame(type: number, seed: number): Uint8Array {
  const f = new Uint8Array(64);
  f.set([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, type >> 8, type & 0xff]);
  f[20] = seed;
  return f;
}

describe('examples/', function () {
  this.timeout(30000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-ex-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('acl-hook: the switch drops what port "guest" may not send (IPv6 here) and passes ARP and IPv4', async () => {
    const g = join(dir, 'guest.sock');
    const u = join(dir, 'up.sock');
    const child = spawn(process.execPath, [cli, 'switch', '--port', `guest=${g}`, '--port', `up=${u}`, '--hook', example('acl-hook')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    try {
      await until(() => out.includes('port up'), 'the switch');
      const guest = await NetGuest.connect(g);
      const up = await NetGuest.connect(u);
      try {
        guest.send([frame(0x0800, 1), frame(0x86dd, 2), frame(0x0806, 3), frame(0x86dd, 4)]);
        const got = await up.receive(2, 5000);
        await new Promise((r) => setTimeout(r, 200)); // anything else would have come by now
        got.push(...(await up.receive(0, 10)));
        expect(got.map((x) => `${((x.frame[12] << 8) | x.frame[13]).toString(16)}/${x.frame[20]}`)).to.deep.equal(['800/1', '806/3']);
        // The other way is not filtered.
        up.send([frame(0x86dd, 5)]);
        expect((await guest.receive(1, 5000)).map((x) => x.frame[20])).to.deep.equal([5]);
      } finally {
        guest.close();
        up.close();
      }
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('ram-disk: serves a RAM disk that our frontend writes and reads back; SIGTERM removes the socket', async () => {
    const s = join(dir, 'ram.sock');
    const child = spawn(process.execPath, [example('ram-disk'), s, '8M'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    try {
      await until(() => out.includes('vhost-user-blk-pci'), 'the disk');
      expect(out).to.include('RAM disk of 8388608 bytes');
      const fe = await VhostUserFrontend.connect(s);
      try {
        await fe.negotiate({ features: bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) });
        await fe.setupMemory(4 << 20);
        const blk = new BlkClient(await fe.startQueue(0, { size: 64 }));
        const data = new Uint8Array(4096).map((_, i) => (i * 13) & 0xff);
        expect((await blk.write(8n, data)).status).to.equal(BlkStatus.OK);
        const back = await blk.read(8n, 4096);
        expect(Buffer.from(back.data!).equals(Buffer.from(data))).to.equal(true);
      } finally {
        fe.close();
      }
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
      expect(existsSync(s)).to.equal(false);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('ring-bench: sends frames through a vhostkit sink with the frontend and reports the rate', async () => {
    const r = await promisify(execFile)(process.execPath, [example('ring-bench'), '1'], { env: { ...process.env, VHOSTKIT_LOG: 'warn' } });
    const m = /^(\d+) frames of 64 B in ([\d.]+) s: ([\d.]+) Mpps$/m.exec(r.stdout);
    expect(m, r.stdout).to.not.equal(null);
    expect(Number(m![1])).to.be.greaterThan(1000);
  });
});
