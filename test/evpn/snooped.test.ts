// What EvpnControl keeps of ARP/ND snooping (src/evpn/snooped.ts): one IPv4 and a few IPv6
// addresses per (VLAN, MAC), and pruning to the MACs the switch still has, so that the
// fabric's MACs (whose ARP crosses the switch too) do not stay after they age out or their
// route is withdrawn.
import { expect } from 'chai';
import { MAX_IPV6, SnoopedAddresses } from '../../src/evpn/snooped.js';

const LOCAL = '52:54:00:00:26:01';
const FABRIC = '52:54:00:00:26:03';

describe('evpn: snooped addresses', () => {
  it('keeps the last IPv4 address of a MAC and its newest IPv6 ones, per VLAN', () => {
    const a = new SnoopedAddresses();
    a.add(1, LOCAL, '10.26.0.1');
    a.add(1, LOCAL, 'fe80::1');
    a.add(1, LOCAL, '10.26.0.9');
    expect(a.get(1, LOCAL)).to.deep.equal(['fe80::1', '10.26.0.9']);
    for (let i = 2; i <= MAX_IPV6 + 1; i++) a.add(1, LOCAL, `2001:db8::${i}`);
    expect(a.get(1, LOCAL)).to.deep.equal(['10.26.0.9', ...Array.from({ length: MAX_IPV6 }, (_, i) => `2001:db8::${i + 2}`)]);
    a.add(1, LOCAL, '2001:db8::3');
    expect(a.get(1, LOCAL).at(-1), 'seen again: newest').to.equal('2001:db8::3');
    expect(a.get(2, LOCAL), 'another VLAN').to.deep.equal([]);
    a.delete(1, LOCAL);
    expect(a.size).to.equal(0);
  });

  it("prunes a fabric MAC once the switch no longer has it (aged out, route withdrawn), and other VLANs' senders", () => {
    const a = new SnoopedAddresses();
    a.add(1, LOCAL, '10.26.0.1');
    a.add(1, FABRIC, '10.26.0.3');
    a.add(7, LOCAL, '10.7.0.1');
    // Both MACs in VLAN 1 (the local one learned, the fabric's installed); VLAN 7 is no VNI's.
    expect(a.prune(new Map([[1, new Set([LOCAL, FABRIC])]]))).to.equal(1);
    expect(a.get(7, LOCAL)).to.deep.equal([]);
    expect(a.get(1, FABRIC)).to.deep.equal(['10.26.0.3']);
    // The fabric's MAC is gone from the switch: its addresses go, the local MAC's stay.
    expect(a.prune(new Map([[1, new Set([LOCAL])]]))).to.equal(1);
    expect(a.get(1, FABRIC)).to.deep.equal([]);
    expect(a.get(1, LOCAL)).to.deep.equal(['10.26.0.1']);
    expect(a.size).to.equal(1);
    // Seen again later (it came back): kept again until it goes.
    a.add(1, FABRIC, '10.26.0.3');
    expect(a.prune(new Map([[1, new Set([LOCAL, FABRIC])]]))).to.equal(0);
    expect(a.size).to.equal(2);
  });
});
