import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { Virtqueue } from '../../src/native/virtqueue.js';
import { GuestMemory } from '../../src/native/guest-memory.js';
import { handOver } from '../../src/native/parked.js';
import { Rig } from './ring-rig.js';

const workerFile = fileURLToPath(new URL('./queue-worker.js', import.meta.url));

for (const layout of ['split', 'packed'] as const) {
  it(`a ${layout} queue and its memory are served by a worker thread, then handed back`, async () => {
    const rig = new Rig(layout, { size: 64 });
    try {
      const ids = Array.from({ length: 30 }, () => rig.drv.add([{ len: 16, writable: false }, { len: 32, writable: true }]));
      rig.drv.publish();
      const w = new Worker(workerFile, { workerData: { qtoken: rig.q.park(), mtoken: rig.mem.park(), layout, size: 64, want: 30 } });
      const reply = await new Promise<{ served: number; qtoken: number }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      await w.terminate();
      expect(reply.served).to.equal(30);
      const used = rig.drv.used();
      expect(used.map((u) => u.id)).to.deep.equal(ids);
      expect(used.every((u) => u.len === 32)).to.equal(true);
      expect(Array.from(rig.drv.readWritten(ids[0], 32))).to.deep.equal(new Array(32).fill(0xee));
      // Back on the main thread: the same native queue continues where the worker stopped.
      const back = new Virtqueue({ layout, size: 64, token: reply.qtoken });
      const id = rig.drv.addAndPublish([{ len: 8, writable: false }]);
      expect(back.pop()).to.equal(1);
      expect(back.b.head[0]).to.equal(id);
      expect(() => new Virtqueue({ layout, size: 64, token: reply.qtoken }), 'a token is claimed once').to.throw(/no parked queue/);
    } finally {
      rig.close();
    }
  });
}

/** Mappings of the rigs' memfds in this process. */
const rigMaps = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:rig ')).length;

/** The error of a promise expected to reject. */
async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  return 'resolved';
}

it('a hand-over whose call fails drops the parked queue and memory: nothing stays mapped', async () => {
  const before = rigMaps();
  const rig = new Rig('split', { size: 64 });
  let qtoken = 0;
  let mtoken = 0;
  let claimed = 0;
  try {
    // A thread that exited before it claimed anything (its call rejects), one that refuses
    // the call at once (a throw), and one that claims and then fails: the last one's drop
    // is nothing, since the token is already taken.
    const died = () => Promise.reject(new Error('data-plane thread 1 exited with code 1'));
    expect(await refusal(handOver((qtoken = rig.q.park()), died))).to.equal('data-plane thread 1 exited with code 1');
    const refused = (): Promise<void> => {
      throw new Error('no such port');
    };
    expect(await refusal(handOver((mtoken = rig.mem.park()), refused))).to.equal('no such port');
    const t = rig.mem.park();
    const claimedThenFailed = (token: number) => {
      GuestMemory.claim(token).close();
      claimed++;
      return Promise.reject(new Error('later failure'));
    };
    expect(await refusal(handOver(t, claimedThenFailed))).to.equal('later failure');
  } finally {
    rig.close();
  }
  expect(claimed).to.equal(1);
  expect(rigMaps(), "the rig's memory unmapped: no parked token holds it").to.equal(before);
  expect(() => new Virtqueue({ layout: 'split', size: 64, token: qtoken }), 'the queue token is gone').to.throw(/no parked queue/);
  expect(() => GuestMemory.claim(mtoken), 'the table token is gone').to.throw(/no parked memory table/);
});
