// The configuration's evpn section (schema.ts evpnSchema, config.ts cross-checks): what a
// right one gives, and every problem of a wrong one named by its key.
import { expect } from 'chai';
import { ConfigError, parseConfig } from '../../src/host/config.js';

const switches = [
  {
    name: 'sw0',
    ports: [
      { kind: 'tap', ifname: 'vk0' },
      { kind: 'vxlan', name: 'vx100', remote: '10.0.0.1', vni: 100 },
    ],
  },
];

function problems(raw: unknown): string[] {
  try {
    parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('host config: evpn', () => {
  it('a right section: defaults filled in (poll 250 ms, neighbors of our AS)', () => {
    const c = parseConfig({ switches, evpn: { asn: 65000, routerId: '10.0.0.1', neighbors: [{ address: '10.0.0.3' }], vnis: [{ vni: 100, switch: 'sw0', port: 'vx100' }] } });
    expect(c.evpn).to.deep.include({ asn: 65000, routerId: '10.0.0.1', pollMs: 250 });
    expect(c.evpn?.neighbors).to.deep.equal([{ address: '10.0.0.3' }]);
  });

  it('every problem named by its key', () => {
    const p = problems({
      switches,
      evpn: {
        asn: 0,
        routerId: 'r1',
        neighbors: [{ address: 'x' }],
        vnis: [
          { vni: 100, switch: 'nope', port: 'vx100' },
          { vni: 100, switch: 'sw0', port: 'tap' },
        ],
        gobgp: 'somewhere',
      },
    });
    expect(p).to.include.members([
      'evpn.asn: expected an integer in 1..4294967295, got 0',
      'evpn.routerId: expected an IPv4 address, got "r1"',
      'evpn.neighbors[0].address: expected an IPv4 or IPv6 address, got "x"',
      'evpn.gobgp: expected "unix:/path" or "HOST:PORT", got "somewhere"',
    ]);
  });

  it('VNIs must name a VXLAN port of a configured switch carrying that VNI, once', () => {
    const p = problems({
      switches,
      evpn: {
        asn: 65000,
        routerId: '10.0.0.1',
        neighbors: [],
        vnis: [
          { vni: 100, switch: 'nope', port: 'vx100' },
          { vni: 100, switch: 'sw0', port: 'vk0' },
          { vni: 200, switch: 'sw0', port: 'vx100' },
        ],
      },
    });
    expect(p).to.deep.equal([
      'evpn.vnis[0].switch: no switch "nope" in switches',
      'evpn.vnis[1].vni: 100 is given twice',
      'evpn.vnis[1].port: switch sw0 has no VXLAN port "vk0"',
      'evpn.vnis[2].vni: port vx100 carries VNI 100, not 200',
    ]);
  });
});
