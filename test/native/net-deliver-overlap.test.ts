// Regression (found by the net fuzz target, native/fuzz/corpus/net/regression-overlap): a
// guest that sends to itself through two of its queues (two NICs of one VM share its
// memory) can make its TX frame and its RX buffer overlap. The copy was a memcpy between
// overlapping ranges, undefined behaviour that the ASan run of the native tests reports
// (memcpy-param-overlap); it is a memmove now, and the receiver gets the frame as it was.
import { expect } from 'chai';
import { DeliverStat, netDeliver } from '../../src/native/net.js';
import { Virtqueue } from '../../src/native/virtqueue.js';
import { SplitDriver } from '../../src/virtio/driver.js';
import { SplitDescFlags as S } from '../../src/virtio/ring-layout.js';
import { BASE, Rig } from './ring-rig.js';

const HDR = 12;
const SIZE = 16;

describe('netDeliver between overlapping TX and RX buffers of one guest', () => {
  let tx: Rig;
  let rxq: Virtqueue;
  afterEach(() => {
    rxq.detach();
    tx.close();
  });

  for (const shift of [-100, -5, 5, 100]) {
    it(`copies the frame exactly with the RX buffer ${Math.abs(shift)} bytes ${shift < 0 ? 'before' : 'after'} the TX frame`, () => {
      tx = new Rig('split', { size: SIZE });
      // A second queue, the same guest's RX queue: its ring in the same memory.
      const rxDrv = new SplitDriver({ mem: tx.mem.view(0), base: BASE, size: SIZE, alloc: tx.alloc });
      rxq = new Virtqueue({ layout: 'split', size: SIZE });
      rxq.setFeatures({ eventIdx: false, indirect: true });
      rxq.setMemory(tx.mem);
      rxq.setBase(0);
      rxq.setRings({ desc: BigInt(rxDrv.descAddr), driver: BigInt(rxDrv.availAddr), device: BigInt(rxDrv.usedAddr) }, 'gpa');
      rxq.syncUsedFromRing();

      const frame = Uint8Array.from({ length: 300 }, (_, i) => (i * 7 + 3) & 0xff);
      const all = new Uint8Array(HDR + frame.length);
      all.set(frame, HDR);
      const id = tx.drv.add([{ len: all.length, writable: false, data: all }]);
      tx.drv.publish();
      const txAt = tx.drv.chainBuffers(id)[0].addr;
      expect(tx.q.pop()).to.equal(1);

      // The RX buffer where the TX frame is, shifted.
      const rxAt = txAt + shift;
      rxDrv.writeDesc(0, { addr: rxAt, len: 1024, flags: S.WRITE, next: 0 });
      rxDrv.setAvailRing(0, 0);
      rxDrv.setAvailIdx(1);

      const stats = new Uint32Array(7);
      const r = netDeliver({ q: rxq, hdrLen: HDR, mergeable: true }, tx.q, HDR, false, Uint16Array.of(0), 1, stats);
      expect(r).to.be.at.least(0);
      expect(stats[DeliverStat.DELIVERED]).to.equal(1);
      expect(rxq.inFlight).to.equal(0);
      // The receiver's header (no offload, num_buffers 1) is written first: where it lies
      // over the TX frame (a shift right), those frame bytes are sent as the header's.
      // The rest of the frame arrives exactly as it was sent.
      const rxHdr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
      const want = Array.from(frame);
      rxHdr.forEach((b, j) => {
        const k = shift - HDR + j;
        if (k >= 0 && k < want.length) want[k] = b;
      });
      expect(Array.from(tx.mem.read(BigInt(rxAt), HDR))).to.deep.equal(rxHdr);
      expect(Array.from(tx.mem.read(BigInt(rxAt + HDR), frame.length))).to.deep.equal(want);
    });
  }
});
