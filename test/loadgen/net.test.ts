// The virtio-net load generator (src/loadgen/net.ts) with our frontend as the guest: the
// sink takes and counts every frame the guest sends (reading each into its own memory, or
// returning it unread); the generator fills the guest's
// receive buffers with frames of the configured size; both on the calling thread and on a
// data-plane worker.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLoadDevice, SINK_MODES, type SinkMode } from '../../src/loadgen/net.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { ethFrame } from '../../src/virtio/net-frames.js';

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('loadgen: net', function () {
  this.timeout(30_000);
  let dir: string;
  const cleanup: Array<() => Promise<void> | void> = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-loadgen-net-'));
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(threads: number, generate: boolean, packed: boolean, sink: SinkMode = 'copy'): Promise<{ dev: NetLoadDevice; guest: NetGuest }> {
    const socket = join(dir, `net-${threads}-${generate}-${packed}-${sink}.sock`);
    const dev = await NetLoadDevice.create({ generate, sink, frameBytes: 128, poll: 'event', threads, packed });
    const backend = new VhostUserBackend(dev, { socket });
    await backend.start();
    cleanup.push(async () => {
      await backend.stop();
      await dev.close();
    });
    const guest = await NetGuest.connect(socket, { packed });
    cleanup.push(() => guest.close());
    return { dev, guest };
  }

  for (const threads of [0, 1]) {
    for (const packed of [false, true]) {
      const where = `${threads ? 'a worker' : 'the calling thread'}, ${packed ? 'packed' : 'split'} ring`;

      for (const sink of SINK_MODES) {
        it(`sink (${sink}) on ${where}: counts every frame and byte the guest sends`, async () => {
          const { dev, guest } = await start(threads, false, packed, sink);
          const frames = Array.from({ length: 50 }, (_, i) => ethFrame('02:00:00:00:00:01', '02:00:00:00:00:02', 60 + i, i));
          // A runt, shorter than an Ethernet header: the copying sink reads frames, and has
          // none to read here; the dropping sink counts what the driver gave.
          const runt = new Uint8Array(8);
          const all = [...frames.slice(0, 25), runt, ...frames.slice(25)];
          let sent = 0;
          while (sent < all.length) {
            sent += guest.send(all.slice(sent));
            await new Promise((r) => setTimeout(r, 1));
          }
          const bytes = frames.reduce((a, f) => a + f.length, 0);
          await until('the sink to count 51 frames', () => dev.counters.txPackets + dev.counters.rxPackets >= 51);
          const c = dev.counters;
          // The sink drains the guest's TX queue: the device receives them (its rx side).
          expect(c.rxPackets, 'frames taken').to.equal(51);
          expect(c.rxBytes, 'their bytes').to.equal(sink === 'copy' ? bytes : bytes + runt.length);
          expect(c.txPackets, 'nothing generated').to.equal(0);
        });
      }

      it(`generator on ${where}: fills receive buffers with frames of the configured size`, async () => {
        const { dev, guest } = await start(threads, true, packed);
        const got = await guest.receive(20, 5000);
        expect(got.length).to.be.at.least(20);
        for (const { frame } of got) {
          expect(frame.length).to.equal(128);
          expect([...frame.subarray(0, 6)], 'destination MAC').to.deep.equal([2, 0, 0, 0, 0, 2]);
        }
        await until('the counters', () => dev.counters.txPackets >= 20);
        expect(dev.counters.txBytes).to.equal(128 * dev.counters.txPackets);
      });
    }
  }
});
