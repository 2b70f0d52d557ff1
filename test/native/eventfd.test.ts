import { expect } from 'chai';
import { readdirSync } from 'node:fs';
import { constants } from 'node:os';

import { EventFd } from '../../src/native/eventfd.js';
import { closeFd } from '../../src/native/unix-socket.js';

const openFdCount = (): number => readdirSync('/proc/self/fd').length;

describe('EventFd', () => {
  const open: EventFd[] = [];
  const make = (options?: ConstructorParameters<typeof EventFd>[0]): EventFd => {
    const e = new EventFd(options);
    open.push(e);
    return e;
  };
  afterEach(() => {
    for (const e of open.splice(0)) e.close();
  });

  it('reads null (EAGAIN) when the counter is 0, without throwing', () => {
    const e = make();
    expect(e.read()).to.equal(null);
    expect(e.read()).to.equal(null);
  });

  it('sums writes, and a read returns the sum and resets the counter', () => {
    const e = make();
    expect(e.write()).to.equal(true);
    expect(e.write(2n)).to.equal(true);
    expect(e.write(40n)).to.equal(true);
    expect(e.read()).to.equal(43n);
    expect(e.read()).to.equal(null);
    e.write(7n);
    expect(e.read()).to.equal(7n);
  });

  it('starts from initval', () => {
    const e = make({ initval: 5 });
    expect(e.read()).to.equal(5n);
    expect(e.read()).to.equal(null);
  });

  it('in semaphore mode reads 1n per read until the counter is 0', () => {
    const e = make({ semaphore: true });
    e.write(3n);
    expect([e.read(), e.read(), e.read(), e.read()]).to.deep.equal([1n, 1n, 1n, null]);
  });

  it('holds values above 2^53 exactly, and returns false (EAGAIN) when the counter is full', () => {
    const e = make();
    const max = 0xffff_ffff_ffff_fffen;
    expect(e.write(max)).to.equal(true);
    expect(e.write(1n)).to.equal(false);
    expect(e.read()).to.equal(max);
    expect(e.write(2n ** 53n + 1n)).to.equal(true);
    expect(e.read()).to.equal(2n ** 53n + 1n);
  });

  it('rejects values the kernel or a u64 cannot take', () => {
    const e = make();
    try {
      e.write(0xffff_ffff_ffff_ffffn);
      expect.fail('expected EINVAL');
    } catch (err) {
      const x = err as NodeJS.ErrnoException;
      expect(x.code).to.equal('EINVAL');
      expect(x.errno).to.equal(-constants.errno.EINVAL);
      expect(x.syscall).to.equal('write');
    }
    expect(() => e.write(-1n)).to.throw(RangeError);
    expect(() => e.write(2n ** 64n)).to.throw(RangeError);
    expect(() => new EventFd({ initval: -1 })).to.throw(RangeError);
  });

  it('close() is idempotent and later use throws', () => {
    const e = new EventFd();
    const fd = e.fd;
    expect(fd).to.be.a('number').and.at.least(0);
    e.close();
    e.close();
    expect(e.isOpen).to.equal(false);
    expect(() => e.fd).to.throw(/closed/);
    expect(() => e.read()).to.throw(/closed/);
    expect(() => e.write()).to.throw(/closed/);
    // The fd itself is really closed.
    expect(() => closeFd(fd)).to.throw().with.property('code', 'EBADF');
  });

  it('adopt() wraps an existing eventfd and takes ownership', () => {
    const original = new EventFd();
    const adopted = EventFd.adopt(original.fd);
    original.write(9n);
    expect(adopted.read()).to.equal(9n);
    adopted.close();
    expect(() => closeFd(original.fd)).to.throw().with.property('code', 'EBADF');
    expect(() => EventFd.adopt(-1)).to.throw(RangeError);
    // After adopt(), the constructor creates fresh eventfds again.
    const fresh = make();
    expect(fresh.read()).to.equal(null);
  });

  it('leaks no fd over many create/close cycles', () => {
    const before = openFdCount();
    for (let i = 0; i < 500; i++) {
      const e = new EventFd({ initval: i });
      expect(e.read()).to.equal(i === 0 ? null : BigInt(i));
      e.close();
    }
    expect(openFdCount()).to.equal(before);
  });
});
