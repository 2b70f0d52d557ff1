// The ARP sender parse of the EVPN ARP snooping handler (src/evpn/arp-snoop.ts).
import { expect } from 'chai';
import { arpSender } from '../../src/evpn/arp-snoop.js';

/** An Ethernet/IPv4 ARP frame from sender (mac, ip); tagged: with an 802.1Q tag of VLAN 10. */
function arp(mac: number[], ip: number[], tagged = false): Uint8Array {
  const body = [0, 1, 8, 0, 6, 4, 0, 1, ...mac, ...ip, 0, 0, 0, 0, 0, 0, 10, 0, 0, 9];
  const head = [255, 255, 255, 255, 255, 255, ...mac, ...(tagged ? [0x81, 0, 0, 10] : []), 8, 6];
  return Uint8Array.from([...head, ...body]);
}

describe('evpn ARP snooping: the sender of an ARP frame', () => {
  const mac = [0x52, 0x54, 0, 0x26, 0, 0x11];

  it('untagged and 802.1Q-tagged requests give the sender MAC and IPv4', () => {
    expect(arpSender(arp(mac, [10, 26, 0, 11]))).to.deep.equal({ mac: '52:54:00:26:00:11', ip: '10.26.0.11' });
    expect(arpSender(arp(mac, [10, 26, 0, 11], true))).to.deep.equal({ mac: '52:54:00:26:00:11', ip: '10.26.0.11' });
  });

  it('probes (sender 0.0.0.0), multicast senders, other protocols and short frames give nothing', () => {
    expect(arpSender(arp(mac, [0, 0, 0, 0]))).to.equal(null);
    expect(arpSender(arp([1, 0, 0x5e, 0, 0, 1], [10, 0, 0, 1]))).to.equal(null);
    const ipv4 = arp(mac, [10, 0, 0, 1]);
    ipv4[13] = 0x00; // ethertype 0x0800
    expect(arpSender(ipv4)).to.equal(null);
    expect(arpSender(arp(mac, [10, 0, 0, 1]).subarray(0, 30))).to.equal(null);
  });
});
