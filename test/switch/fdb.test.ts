// The forwarding database on its own: learning, moves, aging, flushing, and the one-entry
// caches of the last learn and lookup, which must never answer for an entry that is gone.
import { expect } from 'chai';
import fc from 'fast-check';
import { Fdb, macFromString, macToString } from '../../src/switch/fdb.js';
import { fcParams } from '../vhost-user/fuzz-runs.js';

const A = macFromString('02:00:00:00:00:0a');
const B = macFromString('02:00:00:00:00:0b');

describe('Fdb', () => {
  it('learns, moves and refreshes an address; a repeated learn of the same address is not news', () => {
    const f = new Fdb(1000);
    expect(f.learn(A, 1, 3, 0)).to.equal(true);
    expect(f.learn(A, 1, 3, 10)).to.equal(false);
    expect(f.lookup(A, 1, 10)).to.equal(3);
    expect(f.lookup(A, 2, 10), 'another VLAN').to.equal(-1);
    expect(f.learn(A, 1, 4, 20), 'a move').to.equal(true);
    expect(f.lookup(A, 1, 20)).to.equal(4);
    expect(f.stats).to.deep.include({ learned: 1, moved: 1 });
    expect(f.lookup(A, 1, 1020), 'refreshed at 20').to.equal(4);
    expect(f.lookup(A, 1, 1021), 'older than the aging time').to.equal(-1);
  });

  it('forgets what flushPort and age remove, even right after a lookup found it', () => {
    const f = new Fdb(1000);
    f.learn(A, 1, 3, 0);
    f.learn(B, 1, 5, 0);
    expect(f.lookup(A, 1, 0)).to.equal(3);
    expect(f.flushPort(3)).to.equal(1);
    expect(f.lookup(A, 1, 0)).to.equal(-1);
    expect(f.learn(A, 1, 3, 0), 'learnt again after the flush').to.equal(true);
    expect(f.size).to.equal(2);
    f.learn(B, 1, 5, 500);
    expect(f.lookup(A, 1, 600)).to.equal(3);
    expect(f.age(1200)).to.equal(1);
    expect(f.lookup(A, 1, 600), 'aged out').to.equal(-1);
    expect(f.learn(A, 1, 3, 1200)).to.equal(true);
    expect(f.dump(1200).map((e) => e.mac).sort()).to.deep.equal([macToString(A), macToString(B)]);
  });

  it('property: answers as a plain map of (VLAN, MAC) to (port, last seen) does, whatever the order of operations', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('learn' as const), mac: fc.integer({ min: 0, max: 3 }), vlan: fc.integer({ min: 1, max: 2 }), port: fc.integer({ min: 0, max: 2 }), dt: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ k: fc.constant('lookup' as const), mac: fc.integer({ min: 0, max: 3 }), vlan: fc.integer({ min: 1, max: 2 }), dt: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ k: fc.constant('flush' as const), port: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ k: fc.constant('age' as const), dt: fc.integer({ min: 0, max: 400 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const f = new Fdb(1000);
        const model = new Map<string, { port: number; seen: number }>();
        let now = 0;
        for (const o of ops) {
          if (o.k === 'learn') {
            now += o.dt;
            const key = `${o.vlan}/${o.mac}`;
            const e = model.get(key);
            const news = e === undefined || e.port !== o.port;
            model.set(key, { port: o.port, seen: now });
            expect(f.learn(o.mac, o.vlan, o.port, now)).to.equal(news);
          } else if (o.k === 'lookup') {
            now += o.dt;
            const e = model.get(`${o.vlan}/${o.mac}`);
            expect(f.lookup(o.mac, o.vlan, now)).to.equal(e === undefined || now - e.seen > 1000 ? -1 : e.port);
          } else if (o.k === 'flush') {
            let n = 0;
            for (const [k, e] of model) if (e.port === o.port) (model.delete(k), n++);
            expect(f.flushPort(o.port)).to.equal(n);
          } else {
            now += o.dt;
            let n = 0;
            for (const [k, e] of model) if (now - e.seen > 1000) (model.delete(k), n++);
            expect(f.age(now)).to.equal(n);
          }
          expect(f.size).to.equal(model.size);
        }
      }),
      fcParams(300),
    );
  });
});
