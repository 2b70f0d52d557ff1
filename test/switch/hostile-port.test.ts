// A hostile guest on one port of a switch: it breaks its TX or RX ring in each way the ring
// engines detect (a looping chain, a buffer outside guest memory, an avail index that jumps,
// a head outside the ring, a bad indirect table), or it floods minimum-size and runt frames.
// Its port stops (logged, DEVICE_NEEDS_RESET, its queue error counted) or, for a flood,
// keeps going with the runts counted as bad; meanwhile two honest guests on the same switch
// move every one of their frames, in order. Split and packed rings.
import { expect } from 'chai';
import type { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame } from '../../src/virtio/net-frames.js';
import type { SplitDriver } from '../../src/virtio/driver.js';
import { SwitchRig, until } from './rig.js';
import { DeviceStatus } from '../../src/virtio/features.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const H = '02:00:00:00:00:0e';
const C = '02:00:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';
/** Far outside the guests' 16 MiB of memory. */
const OUTSIDE = 2 ** 40;

/** a sends `n` unicast frames to b in bursts; b must receive every one, in order. `between` runs before each burst. */
async function honestPair(a: NetGuest, b: NetGuest, n: number, first = 0, between?: () => Promise<void>): Promise<void> {
  let sent = 0;
  let got = 0;
  while (got < n) {
    await between?.();
    const burst: Uint8Array[] = [];
    for (let i = 0; i < 32 && sent + burst.length < n; i++) burst.push(ethFrame(B, A, 64 + ((sent + i) % 64), first + sent + i));
    if (burst.length) sent += a.send(burst);
    const frames = await b.receive(1, 3000);
    if (frames.length === 0 && sent > got) throw new Error(`b received ${got} of ${sent} frames, then nothing for 3 s`);
    for (const f of frames) {
      if (f.frame[0] & 1) continue; // a broadcast from the test itself, not the pair's traffic
      const seq = new DataView(f.frame.buffer, f.frame.byteOffset).getUint32(14);
      expect(seq, 'frames arrive in order, none lost').to.equal(first + got);
      got++;
    }
  }
}

type Breaker = { name: string; code: string; queue: 'rx' | 'tx'; layouts: Array<'split' | 'packed'>; act: (h: NetGuest) => void };

const BREAKERS: Breaker[] = [
  {
    name: 'a TX buffer outside guest memory',
    code: 'DESC_ADDR',
    queue: 'tx',
    layouts: ['split', 'packed'],
    act: (h) => {
      h.tx.driver.add([{ addr: OUTSIDE, len: 64, writable: false }]);
      h.tx.publishAndKick();
    },
  },
  {
    name: 'a TX buffer outside guest memory, inside an indirect table',
    code: 'DESC_ADDR',
    queue: 'tx',
    layouts: ['split', 'packed'],
    act: (h) => {
      h.tx.driver.add(
        [
          { len: 12, writable: false },
          { addr: OUTSIDE, len: 64, writable: false },
        ],
        { indirect: true },
      );
      h.tx.publishAndKick();
    },
  },
  {
    name: 'an RX buffer outside guest memory (found when a broadcast is delivered to it)',
    code: 'DESC_ADDR',
    queue: 'rx',
    layouts: ['split', 'packed'],
    act: (h) => {
      // Take every posted RX buffer back out of reach first: post the bad one on a ring the
      // device has drained, so the next delivery pops it.
      h.rx.driver.add([{ addr: OUTSIDE, len: 2048, writable: true }]);
      h.rx.publishAndKick();
    },
  },
  {
    name: 'a looping TX chain',
    code: 'DESC_LOOP',
    queue: 'tx',
    layouts: ['split'],
    act: (h) => {
      const d = h.tx.driver as SplitDriver;
      const head = d.add([{ len: 64, writable: false }]);
      d.writeDesc(head, { addr: d.readDesc(head).addr, len: 64, flags: 1 /* NEXT */, next: head });
      h.tx.publishAndKick();
    },
  },
  {
    name: 'a TX avail index that jumps past the ring size',
    code: 'AVAIL_IDX_JUMP',
    queue: 'tx',
    layouts: ['split'],
    act: (h) => {
      const d = h.tx.driver as SplitDriver;
      d.setAvailIdx((d.availIdx + 5000) & 0xffff);
      h.tx.kick();
    },
  },
  {
    name: 'a TX avail entry naming a descriptor outside the ring',
    code: 'HEAD_OUT_OF_RANGE',
    queue: 'tx',
    layouts: ['split'],
    act: (h) => {
      const d = h.tx.driver as SplitDriver;
      d.setAvailRing(d.availIdx, 60000);
      d.setAvailIdx((d.availIdx + 1) & 0xffff);
      h.tx.kick();
    },
  },
];

// Event mode serves each queue with a call per burst; busy mode with the forwarder's own
// loop over every queue (forwardAll), which must stop at the broken ring just the same.
// Two threads: a and h on thread 0, b on thread 1, so the honest pair crosses threads and
// b's frames for h reach its broken ring through the handoff.
for (const [poll, threads] of [
  ['event', 1],
  ['busy', 1],
  ['event', 2],
] as const) {
  describe(`switch: a hostile guest on one port (poll ${poll}, ${threads} thread${threads > 1 ? 's' : ''})`, function () {
    this.timeout(60_000);
    const rig = new SwitchRig('vk-hostile-', poll, { threads });
    const logs = rig.logs;
    const attach = (name: string, packed: boolean) => rig.attach(name, packed);
    beforeEach(() => rig.setUp());
    afterEach(() => rig.tearDown());

    for (const layout of ['split', 'packed'] as const) {
      const packed = layout === 'packed';
      for (const br of BREAKERS.filter((x) => x.layouts.includes(layout))) {
        it(`${layout}: ${br.name} stops that port only (${br.code}, logged, DEVICE_NEEDS_RESET); the others move every frame`, async () => {
          const a = await attach('a', packed);
          const b = await attach('b', packed);
          const h = await attach('h', packed);
          // Everyone is learnt; h has taken part normally.
          h.send([ethFrame(BCAST, H, 60, 0)]);
          await a.receive(1);
          await b.receive(1);
          a.send([ethFrame(BCAST, A, 60, 0)]);
          await b.receive(1);
          if (br.queue === 'rx') {
            // Let the switch fill h's posted RX buffers, so the bad one is the next it pops.
            expect((await h.receive(1)).length).to.equal(1);
            const posted = h.rx.driver.outstanding;
            for (let i = 0; i < posted; i += 32) {
              a.send(Array.from({ length: Math.min(32, posted - i) }, (_, k) => ethFrame(H, A, 60, k)));
              await until(() => rig.sw.counters('h').tx_packets >= 1 + i + Math.min(32, posted - i), 'h RX ring drained');
            }
          }
          await honestPair(a, b, 300, 1000);
          br.act(h);
          if (br.queue === 'rx') a.send([ethFrame(BCAST, A, 60, 1)]);
          await until(() => rig.sw.counters('h').queue_errors === 1, 'h queue broken');
          const qi = br.queue === 'rx' ? 0 : 1;
          await until(() => rig.sw.backend('h').session!.queues()[qi].broken, 'session sees the broken queue');
          await until(() => logs.some((l) => l.level === 'error' && new RegExp(br.code).test(String(l.reason))), `a log line naming ${br.code}`);
          expect(Number(await h.fe.getStatus()) & DeviceStatus.DEVICE_NEEDS_RESET, 'DEVICE_NEEDS_RESET').to.equal(DeviceStatus.DEVICE_NEEDS_RESET);
          // The honest pair is untouched, in both directions, and the broadcast still reaches b.
          await honestPair(a, b, 1000, 2000);
          a.send([ethFrame(BCAST, A, 60, 2)]);
          expect((await b.receive(1)).length).to.equal(1);
          expect(rig.sw.counters('a').queue_errors + rig.sw.counters('b').queue_errors).to.equal(0);
          expect(rig.sw.counters('h').queue_errors).to.equal(1);

          // The guest resets its device (a new driver on the same socket) and the port works again.
          const old = rig.sw.backend('h').session!;
          rig.close(h);
          await until(() => rig.sw.backend('h').session !== old, 'the old session gone');
          const h2 = await rig.reconnect('h', packed);
          await until(() => rig.sw.backend('h').session !== old && rig.sw.backend('h').session?.queues()[1]?.running === true, 'h renegotiated');
          h2.send([ethFrame(A, H, 80, 7)]);
          const back = await a.receive(1);
          expect(back.length, 'a hears h again').to.equal(1);
          a.send([ethFrame(H, A, 80, 8)]);
          expect((await h2.receive(1)).length, 'h hears a again').to.equal(1);
        });
      }

      it(`${layout}: a flood of minimum-size and runt frames from one guest: runts counted as bad, its port keeps going, the others move every frame`, async () => {
        const a = await attach('a', packed);
        const b = await attach('b', packed);
        const h = await attach('h', packed);
        const c = await attach('c', packed);
        for (const [g, mac] of [
          [a, A],
          [b, B],
          [c, C],
        ] as const)
          g.send([ethFrame(BCAST, mac, 60, 0)]);
        await until(() => rig.sw.counters('h').tx_packets >= 3, 'MACs learnt');
        // Before each burst of the pair, h sends a burst of 32: 60-byte frames to c, and one in
        // eight a runt (0 to 13 bytes, shorter than an Ethernet header), and the switch takes it.
        let floodSent = 0;
        let runts = 0;
        const burst: Uint8Array[] = [];
        for (let i = 0; i < 32; i++) burst.push(i % 8 === 7 ? new Uint8Array(i % 14) : ethFrame(C, H, 60, i));
        const floodBurst = async () => {
          const before = rig.sw.counters('h').rx_packets;
          const n = h.send(burst);
          floodSent += n;
          for (let i = 0; i < n; i++) if (i % 8 === 7) runts++;
          await until(() => rig.sw.counters('h').rx_packets === before + n, 'the switch took the burst');
        };
        await honestPair(a, b, 3000, 1, floodBurst);
        await until(() => rig.sw.counters('h').rx_packets >= floodSent, 'the flood consumed');
        const hc = rig.sw.counters('h');
        expect(floodSent, "a burst before each of the pair's bursts").to.be.at.least(3000);
        expect(hc.drop_bad, 'runts dropped as bad').to.equal(runts);
        expect(hc.queue_errors, 'a flood is not a ring error').to.equal(0);
        expect(rig.sw.counters('c').tx_packets + rig.sw.counters('c').drop_no_buffers, 'the rest went to c (or dropped there for lack of buffers)').to.equal(floodSent - runts + 2);
        // h still works.
        await a.receive(2); // the broadcasts of b and c, at the start
        h.send([ethFrame(A, H, 80, 9)]);
        const fromH = (await a.receive(1)).filter((f) => Buffer.from(f.frame.subarray(6, 12)).equals(Buffer.from(ethFrame(A, H, 14).subarray(6, 12))));
        expect(fromH.length, 'h still reaches a').to.equal(1);
      });
    }
  });
}
