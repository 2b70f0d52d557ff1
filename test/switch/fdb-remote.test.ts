// The fdb's installed entries (EVPN: a MAC behind a remote VTEP of a VXLAN port), on the
// native table (switch_fdb.cc): never aged, never refreshed or moved by frames from their own
// port, taken over by a frame from another port (the guest came here, RFC 7432 §15), and
// removed only as installed.
import { expect } from 'chai';
import { Fdb, macFromString } from '../../src/switch/fdb.js';

describe('switch fdb: installed (remote VTEP) entries', () => {
  const mac = macFromString('52:54:00:00:26:07');
  const VX = 5;
  const LOCAL = 2;

  it('never ages, and frames from the VXLAN port leave it as installed', () => {
    const f = new Fdb(1000);
    expect(f.t.setRemote(mac, 1, VX, 3)).to.equal(true);
    expect(f.lookup(mac, 1, 1_000_000)).to.equal(VX);
    expect(f.age(1_000_000)).to.equal(0);
    expect(f.learn(mac, 1, VX, 2_000_000), 'a frame from the tunnel').to.equal(false);
    expect(f.t.remoteOf(mac, 1)).to.equal(3);
    expect([...f.t.dumpRemote()]).to.deep.equal([mac, 1, VX, 3]);
  });

  it('dump lists it on its port with its VTEP, at age 0, long after the aging time', () => {
    const f = new Fdb(1000);
    const other = macFromString('52:54:00:00:26:08');
    f.learn(other, 1, LOCAL, 100);
    f.t.setRemote(mac, 1, VX, 3);
    expect(f.dump(600)).to.deep.equal([
      { mac: '52:54:00:00:26:07', vlan: 1, port: VX, age: 0, remote: 3 },
      { mac: '52:54:00:00:26:08', vlan: 1, port: LOCAL, age: 500 },
    ]);
    // The learned entry ages out of the dump; the installed one stays, never aged.
    expect(f.dump(5_000_000)).to.deep.equal([{ mac: '52:54:00:00:26:07', vlan: 1, port: VX, age: 0, remote: 3 }]);
    f.t.removeRemote(mac, 1, VX, 3);
    expect(f.dump(5_000_000)).to.deep.equal([]);
  });

  it('a frame from a local port takes it over as a learned entry, which ages', () => {
    const f = new Fdb(1000);
    f.t.setRemote(mac, 1, VX, 3);
    expect(f.learn(mac, 1, LOCAL, 10)).to.equal(true);
    expect(f.stats.moved).to.equal(1);
    expect(f.t.remoteOf(mac, 1)).to.equal(0);
    expect(f.t.removeRemote(mac, 1, VX, 3), 'no longer the installed entry').to.equal(false);
    expect(f.lookup(mac, 1, 500)).to.equal(LOCAL);
    expect(f.age(2000)).to.equal(1);
    expect(f.lookup(mac, 1, 2000)).to.equal(-1);
  });

  it('removeRemote removes only the entry it names; other VLANs are other entries', () => {
    const f = new Fdb(1000);
    f.t.setRemote(mac, 1, VX, 3);
    f.t.setRemote(mac, 2, VX, 4);
    expect(f.t.removeRemote(mac, 1, VX, 4)).to.equal(false);
    expect(f.t.removeRemote(mac, 1, VX + 1, 3)).to.equal(false);
    expect(f.t.removeRemote(mac, 1, VX, 3)).to.equal(true);
    expect(f.t.remoteOf(mac, 2)).to.equal(4);
    expect(f.size).to.equal(1);
  });

  it('a full table refuses an installation; bad arguments are range errors', () => {
    const f = new Fdb(1000, 1);
    expect(f.t.setRemote(mac, 1, VX, 1)).to.equal(true);
    expect(f.t.setRemote(mac + 1, 1, VX, 1)).to.equal(false);
    expect(() => f.t.setRemote(mac, 1, VX, 0)).to.throw(RangeError, /remote must be an integer in \[1, 4096\]/);
    expect(() => f.t.setRemote(mac, 4096, VX, 1)).to.throw(RangeError, /vlan must be an integer in \[0, 4095\]/);
  });
});
