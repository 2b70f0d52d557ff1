// The three ways a data-plane thread waits for work (src/dataplane/poller.ts), driven by a
// real ring: a driver that kicks only when the device's notification state asks for it,
// as Linux does. Nothing added is ever left unserved, in any mode, with or without EVENT_IDX.
import { expect } from 'chai';
import { EventFd } from '../../src/native/eventfd.js';
import { Poller, type PollMode, type PollTarget } from '../../src/dataplane/poller.js';
import { SplitDriver } from '../../src/virtio/driver.js';
import { Rig } from '../native/ring-rig.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Setup {
  readonly rig: Rig;
  readonly kick = new EventFd();
  readonly poller: Poller;
  readonly target: PollTarget;
  served = 0;

  constructor(mode: PollMode, eventIdx: boolean) {
    this.rig = new Rig('split', { size: 64, eventIdx });
    this.poller = new Poller(mode, { idleUs: 2000 });
    const q = this.rig.q;
    this.target = {
      vq: q,
      kickFd: this.kick.fd,
      service: () => {
        const n = q.pop();
        if (n <= 0) return 0;
        q.b.usedId.set(q.b.head.subarray(0, n));
        q.b.usedLen.fill(0, 0, n);
        q.push(n);
        this.served += n;
        return n;
      },
    };
    this.poller.add(this.target);
  }

  get drv(): SplitDriver {
    return this.rig.drv as SplitDriver;
  }

  /** Adds n chains and kicks if (and only if) the device asked for kicks. */
  add(n: number): boolean {
    for (let i = 0; i < n; i++) this.drv.add([{ len: 64, writable: false }]);
    this.drv.publish();
    const kicked = this.drv.kickNeeded();
    if (kicked) this.kick.write(1n);
    return kicked;
  }

  async waitServed(total: number, ms = 3000): Promise<void> {
    const end = Date.now() + ms;
    while (this.served < total) {
      if (Date.now() > end) throw new Error(`served ${this.served} of ${total}`);
      await sleep(1);
    }
    this.drv.used();
  }

  close(): void {
    this.poller.close();
    this.kick.close();
    this.rig.close();
  }
}

describe('Poller: busy, event and adaptive modes', function () {
  this.timeout(20000);
  for (const eventIdx of [false, true]) {
    const ei = eventIdx ? 'with EVENT_IDX' : 'without EVENT_IDX';

    it(`event: sleeps on kicks, serves until empty, re-arms; 200 rounds lose nothing (${ei})`, async () => {
      const s = new Setup('event', eventIdx);
      try {
        let total = 0;
        for (let round = 0; round < 200; round++) {
          const n = 1 + (round % 7);
          total += n;
          s.add(n);
          if (round % 10 === 0) await s.waitServed(total);
          else await sleep(0);
        }
        await s.waitServed(total);
        expect(s.poller.stats.wakes, 'woken by kicks').to.be.greaterThan(0);
        expect(s.poller.stats.slices, 'never spins').to.equal(0);
        // Idle: notifications are on, so the next chain is kicked.
        await sleep(5);
        expect(s.add(1), 'the driver is asked to kick once the queue is idle').to.equal(true);
        await s.waitServed(total + 1);
      } finally {
        s.close();
      }
    });

    it(`busy: serves without kicks (the driver is told not to kick) (${ei})`, async () => {
      const s = new Setup('busy', eventIdx);
      try {
        let total = 0;
        let kicks = 0;
        for (let round = 0; round < 50; round++) {
          total += 3;
          if (s.add(3)) kicks++;
          await s.waitServed(total);
        }
        expect(kicks, 'kicks asked for while busy polling').to.be.at.most(1);
        expect(s.poller.stats.slices).to.be.greaterThan(0);
        expect(s.poller.stats.sleeps).to.equal(0);
      } finally {
        s.close();
      }
    });

    it(`adaptive: polls while traffic flows, sleeps after the idle spell, a kick wakes it, nothing missed (${ei})`, async () => {
      const s = new Setup('adaptive', eventIdx);
      try {
        let total = 0;
        for (let round = 0; round < 30; round++) {
          total += 2;
          s.add(2);
          await s.waitServed(total);
          // Every third round idle long enough to fall asleep, then traffic again.
          if (round % 3 === 0) await sleep(10);
        }
        expect(s.poller.stats.sleeps, 'fell asleep when idle').to.be.greaterThan(0);
        expect(s.poller.stats.wakes, 'woken by kicks').to.be.greaterThan(0);
        await sleep(10);
        const slices = s.poller.stats.slices;
        await sleep(50);
        expect(s.poller.stats.slices - slices, 'asleep: no spinning while idle').to.equal(0);
        expect(s.add(1), 'asleep: the driver is asked to kick').to.equal(true);
        await s.waitServed(total + 1);
      } finally {
        s.close();
      }
    });
  }

  it('adaptive: a chain and its kick racing the re-arm before sleeping are not lost', async () => {
    // A driver that adds a chain and kicks the moment it sees notifications turned back on
    // (after the device's check found the ring empty): the kick must wake the poller.
    const kick = new EventFd();
    let waiting = 0;
    let served = 0;
    let raceArmed = true;
    const vq = {
      setNotify(enable: boolean): boolean {
        if (enable && raceArmed) {
          raceArmed = false;
          waiting++; // the chain lands just after the device's check...
          kick.write(1n); // ...and the driver kicks, as notifications are on
          return false;
        }
        return enable && waiting > 0;
      },
    };
    const target: PollTarget = {
      vq: vq as unknown as PollTarget['vq'],
      kickFd: kick.fd,
      service: () => {
        const n = waiting;
        served += n;
        waiting = 0;
        return n;
      },
    };
    const p = new Poller('adaptive', { idleUs: 1000 });
    try {
      p.add(target);
      const end = Date.now() + 2000;
      while (served === 0 && Date.now() < end) await sleep(5);
      expect(served, 'the raced chain was served').to.equal(1);
      expect(p.stats.wakes, 'woken by the raced kick').to.be.greaterThan(0);
    } finally {
      p.close();
      kick.close();
    }
  });

  it('refuses an unknown mode', () => {
    expect(() => new Poller('spin' as PollMode)).to.throw(/poll mode/);
  });
});
