import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Virtqueue } from '../../src/native/virtqueue.js';
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
