// Ring records through the session (src/vhost-user/ring-record.ts): a frontend that
// reconnects the way QEMU 7.2 does after its backend died, re-sending the SET_VRING_BASE
// of the last start for a packed ring, is served from where the previous session
// stopped. The native record itself is tested in test/native/ring-record.test.ts; a real
// QEMU guest across `kill -9` in test/e2e/net-restart.test.ts.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VhostUserFrontend, type FrontendQueue } from '../../src/vhost-user/frontend.js';
import type { PackedDriver } from '../../src/virtio/driver.js';
import { Harness } from './harness.js';

const MiB = 1 << 20;
/** What QEMU sends for a packed ring it started fresh, and again after its backend died. */
const STALE_BASE = 0x80008000;

async function echo(q: FrontendQueue, tag: number, timeoutMs = 5000): Promise<void> {
  const d = q.driver as PackedDriver;
  const id = d.add([
    { len: 3, writable: false, data: Uint8Array.of(tag & 0xff, 1, 2) },
    { len: 16, writable: true },
  ]);
  q.publishAndKick();
  const used = await q.waitUsed(1, timeoutMs);
  expect(used[0]).to.deep.equal({ id, len: 3 });
  expect(Array.from(d.readWritten(id, 3))).to.deep.equal([2, 1, tag & 0xff]);
}

describe('ring records: a packed ring continues across a backend restart', () => {
  let h: Harness;
  afterEach(async () => h?.close());

  /** Session 1 moves `n` echoes on queue 0 (8 slots: round the ring several times), then the connection goes. */
  async function firstSession(n: number): Promise<{ fe: VhostUserFrontend; q: FrontendQueue }> {
    const { fe } = await h.connect();
    await fe.negotiate();
    await fe.setupMemory(8 * MiB);
    const q = await fe.startQueue(0, { size: 8 });
    expect(q.layout).to.equal('packed');
    for (let i = 0; i < n; i++) await echo(q, i);
    const closed = h.sessionClosed();
    fe.disconnect();
    await closed;
    return { fe, q };
  }

  /** The frontend comes back with the same guest memory and rings, and the stale base. */
  async function reconnect(prev: VhostUserFrontend, q: FrontendQueue): Promise<{ fe: VhostUserFrontend; q: FrontendQueue }> {
    const fe = await VhostUserFrontend.connect(h.socket);
    h.fe = fe;
    await h.be.nextSession();
    await fe.negotiate();
    await fe.takeMemory(prev);
    prev.close();
    return { fe, q: await fe.startQueue(0, { size: 8, driver: q.driver, base: STALE_BASE }) };
  }

  it('with a record file: served from the recorded position; GET_VRING_BASE answered drops the record', async () => {
    h = new Harness(2);
    const file = join(h.dir, 'state', 'vhost.rings');
    await h.start({ ringRecord: file });
    const first = await firstSession(13);
    const second = await reconnect(first.fe, first.q);
    expect(h.logs.some((l) => l.msg === 'ring position taken from the ring record of the previous backend' && l.queue === 0)).to.equal(true);
    for (let i = 0; i < 13; i++) await echo(second.q, 100 + i);
    // The frontend learns the state: the record is no longer a restart's to use.
    const magic = () => readFileSync(file).readUInt32LE(0);
    expect(magic()).to.equal(0x31524b56);
    await second.fe.stopQueue(0);
    expect(magic()).to.equal(0);
  });

  it('without one (what QEMU 7.2 gets from other backends): the device looks where the driver was long ago and serves nothing', async () => {
    h = await new Harness(2).start();
    const first = await firstSession(13);
    const second = await reconnect(first.fe, first.q);
    const err = await echo(second.q, 1, 300).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message, 'no chain served').to.match(/0 of 1 used buffers/);
  });
});
