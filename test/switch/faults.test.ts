// Faults a switch port must survive while traffic flows on it and beside it: a guest that
// resets its device in a loop on one connection, and memory-table changes (ADD_MEM_REG with
// frames sent from the new region, REM_MEM_REG, SET_MEM_TABLE sent again) under load.
// Split and packed rings.
import { expect } from 'chai';
import { closeSync } from 'node:fs';
import type { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame, NET_HDR_SIZE } from '../../src/virtio/net-frames.js';
import { GuestMemory } from '../../src/native/guest-memory.js';
import { SwitchRig, until } from './rig.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const H = '02:00:00:00:00:0e';

const seqOf = (f: Uint8Array) => new DataView(f.buffer, f.byteOffset).getUint32(14);
const srcIs = (f: Uint8Array, mac: string) => Buffer.from(f.subarray(6, 12)).equals(Buffer.from(ethFrame(mac, mac, 14).subarray(6, 12)));

/** Receives on `g` until `n` unicast frames from `src` arrived; checks their sequence numbers run from `first`. */
async function expectFrames(g: NetGuest, src: string, n: number, first: number): Promise<void> {
  let got = 0;
  while (got < n) {
    const frames = await g.receive(1, 3000);
    if (frames.length === 0) throw new Error(`received ${got} of ${n} frames from ${src}, then nothing for 3 s`);
    for (const f of frames) {
      if (f.frame[0] & 1 || !srcIs(f.frame, src)) continue;
      expect(seqOf(f.frame), `frame ${got} from ${src}`).to.equal(first + got);
      got++;
    }
  }
}

// With two data-plane threads too (a and h on thread 0, b on thread 1): a guest's device
// reset or memory table sent again while its port is in use must not move the port.
for (const threads of [1, 2]) {
  describe(`switch: faults under traffic (${threads} data-plane thread${threads > 1 ? 's' : ''})`, function () {
    this.timeout(60_000);
    const rig = new SwitchRig('vk-faults-', 'event', { threads });
    const logs = rig.logs;
    const attach = (name: string, packed: boolean) => rig.attach(name, packed);
    beforeEach(() => rig.setUp());
    afterEach(() => rig.tearDown());

    for (const packed of [false, true]) {
      const layout = packed ? 'packed' : 'split';

      it(`${layout}: a guest resets its device 25 times on one connection while the others' traffic flows; each time it comes back`, async () => {
        const a = await attach('a', packed);
        const b = await attach('b', packed);
        const h = await attach('h', packed);
        const session = rig.sw.backend('h').session;
        // b announces itself, so h's frames to b in flight at each reset are not flooded to a.
        b.send([ethFrame('ff:ff:ff:ff:ff:ff', B, 60, 0)]);
        await until(() => rig.sw.counters('a').tx_packets >= 1 && rig.sw.counters('h').tx_packets >= 1, 'b learnt');
        let seq = 0;
        for (let round = 0; round < 25; round++) {
          // a's burst is forwarded by the data-plane thread while h's reset runs on the main
          // thread; h also leaves frames in flight in its own TX ring as it resets.
          const first = seq;
          seq += a.send(Array.from({ length: 32 }, (_, i) => ethFrame(B, A, 64, first + i)));
          h.send(Array.from({ length: 8 }, (_, i) => ethFrame(B, H, 64, 100000 + i)));
          await h.reset();
          await expectFrames(b, A, seq - first, first);
          h.send([ethFrame(A, H, 70, 200000 + round)]);
          await expectFrames(a, H, 1, 200000 + round);
          a.send([ethFrame(H, A, 70, 300000 + round)]);
          await expectFrames(h, A, 1, 300000 + round);
        }
        expect(rig.sw.backend('h').session, 'the same connection throughout').to.equal(session);
        for (const p of ['a', 'b', 'h']) expect(rig.sw.counters(p).queue_errors, p).to.equal(0);
        expect(logs.filter((l) => l.msg === 'device reset').length, 'one log line a reset').to.be.at.least(25);
      });

      it(`${layout}: memory regions added and removed, and the memory table sent again, while frames flow; frames from an added region arrive`, async () => {
        const a = await attach('a', packed);
        const b = await attach('b', packed);
        let seq = 0;
        for (let round = 0; round < 15; round++) {
          // Traffic queued, then a new region (ADD_MEM_REG) while it is forwarded.
          let first = seq;
          seq += a.send(Array.from({ length: 32 }, (_, i) => ethFrame(B, A, 80, first + i)));
          const gpa = BigInt(1 << 30) + BigInt(round) * BigInt(1 << 21);
          const added = await a.fe.addRegion(gpa, 1 << 20);
          await expectFrames(b, A, seq - first, first);
          // A frame whose buffer lies in the new region.
          const extra = GuestMemory.map([{ fd: added.fd, ...added.region }]);
          const frame = ethFrame(B, A, 120, seq);
          const data = new Uint8Array(NET_HDR_SIZE + frame.length);
          data.set(frame, NET_HDR_SIZE);
          extra.write(gpa, data);
          a.tx.driver.add([{ addr: Number(gpa), len: data.length, writable: false }]);
          a.tx.publishAndKick();
          await expectFrames(b, A, 1, seq);
          seq++;
          await until(() => a.reapTx() >= 0 && a.tx.driver.outstanding === 0, 'the frame in the new region consumed');
          // REM_MEM_REG, then SET_MEM_TABLE again (the main region only), frames in flight.
          first = seq;
          seq += a.send(Array.from({ length: 32 }, (_, i) => ethFrame(B, A, 80, first + i)));
          await a.fe.removeRegion(added.region);
          extra.close();
          closeSync(added.fd);
          await a.resendMemTable();
          await expectFrames(b, A, seq - first, first);
        }
        expect(rig.sw.counters('a').queue_errors + rig.sw.counters('b').queue_errors).to.equal(0);
      });
    }
  });
}
