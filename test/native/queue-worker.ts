// Worker side of threads.test.ts: claims a queue and a memory table parked by the main
// thread, serves `want` chains (writing 0xee into writable buffers), parks them back.
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory } from '../../src/native/guest-memory.js';
import { Virtqueue } from '../../src/native/virtqueue.js';

const { qtoken, mtoken, layout, size, want } = workerData as { qtoken: number; mtoken: number; layout: 'split' | 'packed'; size: number; want: number };
const mem = GuestMemory.claim(mtoken);
const q = new Virtqueue({ layout, size, token: qtoken });
let served = 0;
const spin = () => {
  const n = q.pop();
  if (n < 0) throw q.error!;
  for (let i = 0; i < n; i++) {
    for (let s = q.b.firstSeg[i]; s < q.b.firstSeg[i + 1]; s++) {
      if (q.b.segFlags[s] & 1) mem.view(q.b.segRegion[s]).fill(0xee, q.b.segOffset[s], q.b.segOffset[s] + q.b.segLen[s]);
    }
    q.b.usedId[i] = q.b.head[i];
    q.b.usedLen[i] = q.b.writeLen[i];
  }
  if (n > 0) q.push(n);
  served += n;
  if (served < want) setImmediate(spin);
  else {
    mem.close();
    parentPort!.postMessage({ served, qtoken: q.park() });
  }
};
spin();
