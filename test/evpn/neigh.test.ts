// The neighbor frames of EVPN (src/evpn/neigh.ts): what snooping reads from ARP and IPv6
// neighbor discovery, and the answers ARP suppression and ND proxy write. The peers test
// (test/peers/evpn-neigh-frr.test.ts) has the Linux kernel take those answers.
import { expect } from 'chai';
import { arpReply, arpRequest, icmp6ChecksumOk, ipv6At, ipv6Bytes, ndAdvertisement, ndSender, ndSolicitation, solicitedNode } from '../../src/evpn/neigh.js';
import { arpRequest as arpRequestFrame, fold, inetSum } from '../lib/packets.js';
import { ND_MAC as MAC, nd } from '../lib/nd.js';

const MAC_S = '52:54:00:26:00:11';

describe('evpn neighbor frames', () => {
  it('IPv6 addresses: bytes, text (RFC 5952), solicited-node groups', () => {
    expect(ipv6At(ipv6Bytes('FD27:0:0:0:0:0:0:3'), 0)).to.equal('fd27::3');
    expect(ipv6At(ipv6Bytes('2001:db8:0:1:1:1:1:1'), 0)).to.equal('2001:db8:0:1:1:1:1:1');
    expect(ipv6At(ipv6Bytes('::'), 0)).to.equal('::');
    expect(solicitedNode('fd27::3')).to.equal('ff02::1:ff00:3');
    expect(solicitedNode('2001:db8::12:3456:789a')).to.equal('ff02::1:ff56:789a');
    expect(() => ipv6Bytes('10.0.0.1')).to.throw(RangeError, /expected an IPv6 address/);
  });

  it('ND snooping: an NS gives its source and source link-layer address; an NA its target and target address', () => {
    expect(ndSender(nd(135, { src: 'fd27::1', dst: 'ff02::1:ff00:3', target: 'fd27::3', lladdr: MAC }))).to.deep.equal({ mac: MAC_S, ip: 'fd27::1' });
    // No option: the Ethernet source.
    expect(ndSender(nd(135, { src: 'fd27::1', dst: 'ff02::1:ff00:3', target: 'fd27::3' }))).to.deep.equal({ mac: MAC_S, ip: 'fd27::1' });
    expect(ndSender(nd(136, { src: 'fd27::3', dst: 'fd27::1', target: 'fd27::9', lladdr: [2, 0, 0, 0, 0, 9], tag: true }))).to.deep.equal({ mac: '02:00:00:00:00:09', ip: 'fd27::9' });
  });

  it('ND snooping skips duplicate address detection, link-local and multicast addresses, and frames not from the link', () => {
    expect(ndSender(nd(135, { src: '::', dst: 'ff02::1:ff00:1', target: 'fd27::1' })), 'DAD').to.equal(null);
    expect(ndSender(nd(135, { src: 'fe80::1', dst: 'ff02::1:ff00:3', target: 'fe80::3', lladdr: MAC })), 'link-local').to.equal(null);
    expect(ndSender(nd(136, { src: 'fd27::3', dst: 'fd27::1', target: 'ff05::1' })), 'multicast target').to.equal(null);
    expect(ndSender(nd(135, { src: 'fd27::1', dst: 'ff02::1:ff00:3', target: 'fd27::3', hop: 64 })), 'routed (hop limit 64)').to.equal(null);
    expect(ndSender(nd(135, { src: 'fd27::1', dst: 'ff02::1:ff00:3', target: 'fd27::3', lladdr: [1, 0, 0x5e, 0, 0, 1] })), 'multicast MAC').to.equal(null);
    expect(ndSender(nd(135, { src: 'fd27::1', dst: 'ff02::1:ff00:3', target: 'fd27::3' }).subarray(0, 70)), 'short').to.equal(null);
    const zeroOpt = nd(135, { src: 'fd27::1', dst: 'ff02::1:ff00:3', target: 'fd27::3', lladdr: MAC });
    zeroOpt[14 + 40 + 24 + 1] = 0; // an option of length 0
    expect(ndSender(zeroOpt)?.mac, 'a malformed option: the Ethernet source').to.equal(MAC_S);
  });

  it('ND proxy: the advertisement for a solicitation, with a right checksum; to all nodes for DAD', () => {
    const ns = nd(135, { src: 'fd27::1', dst: 'ff02::1:ff00:3', target: 'fd27::3', lladdr: MAC, tag: true });
    expect(ndSolicitation(ns)).to.deep.equal({ mac: MAC_S, ip: 'fd27::1', target: 'fd27::3' });
    const na = ndAdvertisement(ns, '02:00:00:00:00:03', 'fd27::3');
    expect(icmp6ChecksumOk(na)).to.equal(true);
    expect(Array.from(na.subarray(0, 18))).to.deep.equal([...MAC, 2, 0, 0, 0, 0, 3, 0x81, 0, 0, 10, 0x86, 0xdd]);
    expect(ndSender(na)).to.deep.equal({ mac: '02:00:00:00:00:03', ip: 'fd27::3' });
    expect(ipv6At(na, 18 + 24), 'to the solicitor').to.equal('fd27::1');
    expect(na[18 + 40 + 4], 'solicited, override').to.equal(0x60);
    // The checksum again, computed the test's way.
    const l3 = 18;
    expect(fold(inetSum(na, l3 + 40, na.length, inetSum(na, l3 + 8, l3 + 40, na.length - l3 - 40 + 58)))).to.equal(0);
    const dad = ndAdvertisement(nd(135, { src: '::', dst: 'ff02::1:ff00:3', target: 'fd27::3' }), '02:00:00:00:00:03', 'fd27::3');
    expect(icmp6ChecksumOk(dad)).to.equal(true);
    expect([ipv6At(dad, 14 + 24), dad[14 + 40 + 4], Array.from(dad.subarray(0, 6))]).to.deep.equal(['ff02::1', 0x20, [0x33, 0x33, 0, 0, 0, 1]]);
    expect(() => ndAdvertisement(nd(136, { src: 'fd27::3', dst: 'fd27::1', target: 'fd27::3' }), '02:00:00:00:00:03', 'fd27::3')).to.throw(RangeError, /not a neighbor solicitation/);
  });

  it('ARP suppression: the reply to a request, as the owner of the address sends it', () => {
    const req = arpRequestFrame(MAC_S, '10.27.0.1', '10.27.0.3');
    expect(arpRequest(req)).to.deep.equal({ mac: MAC_S, ip: '10.27.0.1', target: '10.27.0.3' });
    const r = arpReply(req, '02:00:00:00:00:03', '10.27.0.3');
    expect(r.length).to.equal(60);
    expect(Array.from(r.subarray(0, 22))).to.deep.equal([...MAC, 2, 0, 0, 0, 0, 3, 8, 6, 0, 1, 8, 0, 6, 4, 0, 2]);
    expect(Array.from(r.subarray(22, 42))).to.deep.equal([2, 0, 0, 0, 0, 3, 10, 27, 0, 3, ...MAC, 10, 27, 0, 1]);
    // A reply is not a request: nothing to answer.
    expect(arpRequest(r)).to.equal(null);
    expect(() => arpReply(r, '02:00:00:00:00:03', '10.27.0.3')).to.throw(RangeError);
  });
});
