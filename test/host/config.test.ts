// The host configuration: defaults, every kind of port and disk, and problems reported with
// the path of the key.
import { expect } from 'chai';
import { ConfigError, parseConfig, parseDiskConfig, parsePortConfig, parseVlanConfig } from '../../src/host/config.js';
import { mergeFlags, diskSpecToRaw } from '../../src/cli/run.js';

function problems(raw: unknown): string[] {
  try {
    parseConfig(raw, '/base');
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('host configuration', () => {
  it('fills defaults and resolves relative paths against the file directory', () => {
    const c = parseConfig(
      {
        switches: [{ ports: [{ socket: 'vm1.sock' }, { kind: 'tap', ifname: 'vk0', vlan: 10 }, { remote: '10.0.0.2', vni: 42 }] }],
        disks: [{ socket: '/run/d.sock', file: 'img/d.raw', readOnly: true }],
        socketMode: '0660',
      },
      '/base',
    );
    expect(c.api).to.equal(undefined);
    expect(c.socketMode).to.equal(0o660);
    expect(c.switches[0]).to.deep.include({ name: 'sw0', poll: 'event', aging: 300, inline: false });
    expect(c.switches[0].ports).to.deep.equal([
      { kind: 'vhost-user', name: 'vm1', socket: '/base/vm1.sock', mode: 'server', mac: undefined, queues: 1, mtu: undefined, packed: true, vlan: undefined },
      { kind: 'tap', name: 'vk0', ifname: 'vk0', offloads: true, vlan: { mode: 'access', vid: 10 } },
      { kind: 'vxlan', name: 'vxlan42', remote: '10.0.0.2', vni: 42, local: undefined, dstport: undefined, vlan: undefined },
    ]);
    expect(c.disks[0]).to.deep.include({ name: 'd', socket: '/run/d.sock', file: '/base/img/d.raw', readOnly: true, queues: 2, threads: 2, maxInFlight: 1024 });
    expect(parseConfig({ api: 'none' }).api).to.equal(null);
    expect(parseConfig({ api: '127.0.0.1:9000' }).api).to.equal('127.0.0.1:9000');
    expect(c.stateDir, 'not said: vhostkit run applies its default').to.equal(undefined);
    expect(parseConfig({ stateDir: 'state' }, '/base').stateDir).to.equal('/base/state');
    expect(parseConfig({ stateDir: 'none' }).stateDir).to.equal(null);
    expect(parseConfig({ stateDir: null }).stateDir).to.equal(null);
    expect(c.limits).to.deep.equal({});
    expect(parseConfig({ limits: { maxMemSlots: 16, maxMappedBytes: '64G' } }).limits).to.deep.equal({ maxMemSlots: 16, maxMappedBytes: 64n << 30n });
  });

  it('names every problem by its path, all at once', () => {
    const p = problems({
      api: 'http://x',
      switches: [{ name: 'a', cpus: 'x', ports: [{ socket: 's1', queues: 0 }, { kind: 'wire' }, { socket: 's1' }] }, { name: 'a', ports: 'no' }, 7],
      disks: [
        { socket: 'd', ram: '1000', maxInFlight: 0 },
        { name: 's1', socket: 'e', file: 'f', serial: 'x'.repeat(21) },
      ],
      socketMode: 'rw',
      stateDir: 5,
      limits: { maxMemSlots: 65, maxMappedBytes: '1K', x: 1 },
    });
    expect(p).to.include.members([
      'api: expected "unix:/path", "HOST:PORT" or "none", got "http://x"',
      'switches[0].cpus: expected a CPU list like "1" or "2-3,5", got "x"',
      'switches[0].ports[0].queues: expected an integer in 1..64, got 0',
      'switches[0].ports[1].kind: expected "vhost-user", "tap" or "vxlan", got "wire"',
      'switches[0].ports[2]: name "s1" is used twice in this switch',
      'switches[1].name: switch name "a" is already used by switches[0].name',
      'switches[1].ports: expected a list, got "no"',
      'switches[2]: expected an object, got 7',
      'disks[0].ram: expected a size that is a multiple of 512 bytes, like "1G" or "512M", got "1000"',
      'disks[0].maxInFlight: expected an integer in 1..65536, got 0',
      'disks[1].serial: expected at most 20 printable ASCII characters, got "xxxxxxxxxxxxxxxxxxxxx"',
      'socketMode: expected an octal mode like "0660", got "rw"',
      'stateDir: expected a non-empty string, got 5',
      'limits.x: unknown key (expected one of: maxMemSlots, maxMappedBytes)',
      'limits.maxMemSlots: expected an integer in 1..64, got 65',
      'limits.maxMappedBytes: expected a size of at least 4096 bytes, like "64G", got "1K"',
    ]);
    expect(
      p.some((x) => /^disks\[1\]: name "s1" is already used by switches\[0\]\.ports/.test(x)),
      p.join('\n'),
    ).to.equal(true);
    expect(
      p.filter((x) => x.includes('"s1"')),
      'a duplicate is reported once',
    ).to.have.length(2);
  });

  it('several data-plane threads: from cpus or threads, and not with a hook, handlers or inline', () => {
    const c = parseConfig({
      switches: [
        { name: 'a', cpus: '0-1' },
        { name: 'b', threads: 3 },
      ],
    });
    expect(c.switches.map((s) => [s.cpus, s.threads])).to.deep.equal([
      [[0, 1], undefined],
      [undefined, 3],
    ]);
    expect(
      problems({
        switches: [
          { name: 'a', cpus: '0-1', hook: 'h.js' },
          { name: 'b', threads: 2, handlers: [{ name: 'x', module: 'x.js' }] },
          { name: 'c', threads: 2, inline: true },
          { name: 'd', threads: 65 },
        ],
      }),
    ).to.include.members([
      'switches[0].hook: a hook needs one data-plane thread (this switch has 2)',
      'switches[1].handlers: packet handlers need one data-plane thread (this switch has 2)',
      'switches[2].threads: several data-plane threads need the worker data plane, not inline',
      'switches[3].threads: expected an integer in 1..64, got 65',
    ]);
  });

  it('checks single ports, disks and VLANs as the API takes them', () => {
    expect(parsePortConfig({ name: 'p', socket: '/s', mac: '52:54:00:00:00:01', vlan: { mode: 'trunk', allowed: [10, 20], native: 10 } }).vlan).to.deep.equal({
      mode: 'trunk',
      allowed: [10, 20],
      native: 10,
    });
    expect(() => parsePortConfig({ socket: '/s', mac: '52:54' })).to.throw(ConfigError, /port\.mac: expected a MAC address/);
    expect(() => parsePortConfig({ socket: '/s', vlan: { mode: 'trunk', allowed: [0] } })).to.throw(ConfigError, /port\.vlan\.allowed/);
    expect(parseDiskConfig({ socket: '/d.sock', ram: '64M' }).ram).to.equal(64n << 20n);
    expect(parseDiskConfig({ socket: '/d.sock', file: '/i.raw' }).shared).to.equal(false);
    expect(parseDiskConfig({ socket: '/d.sock', file: '/i.raw', shared: true }).shared).to.equal(true);
    expect(parseDiskConfig(diskSpecToRaw('/d.sock,file=/i.raw,shared')).shared).to.equal(true);
    expect(() => parseDiskConfig({ socket: '/d.sock' })).to.throw(ConfigError, /disk\.file: give exactly one of file and ram/);
    expect(parseVlanConfig(7)).to.deep.equal({ mode: 'access', vid: 7 });
    expect(() => parseVlanConfig({ mode: 'x' })).to.throw(ConfigError, /vlan\.mode/);
  });

  it("a disk's engine and pollUs: defaults, values, and each bad value named with what is expected", () => {
    const d = parseConfig({
      disks: [
        { socket: '/a.sock', ram: '1M' },
        { socket: '/b.sock', ram: '1M', engine: 'io_uring', pollUs: 32 },
        { socket: '/c.sock', ram: '1M', engine: 'threads', pollUs: 0 },
      ],
    }).disks;
    expect(d.map((x) => [x.engine, x.pollUs])).to.deep.equal([
      ['auto', 0],
      ['io_uring', 32],
      ['threads', 0],
    ]);
    expect(parseDiskConfig({ socket: '/d.sock', ram: '1M', engine: 'auto', pollUs: 1000 }).pollUs).to.equal(1000);
    const p = problems({
      disks: [
        { socket: '/a.sock', ram: '1M', pollUs: -1 },
        { socket: '/b.sock', ram: '1M', pollUs: 1001 },
        { socket: '/c.sock', ram: '1M', pollUs: 1.5 },
        { socket: '/d.sock', ram: '1M', pollUs: '32' },
        { socket: '/e.sock', ram: '1M', engine: 'aio' },
        { socket: '/f.sock', ram: '1M', engine: 'threads', pollUs: 32 },
      ],
    });
    expect(p).to.deep.equal([
      'disks[0].pollUs: expected an integer in 0..1000, got -1',
      'disks[1].pollUs: expected an integer in 0..1000, got 1001',
      'disks[2].pollUs: expected an integer in 0..1000, got 1.5',
      'disks[3].pollUs: expected an integer in 0..1000, got "32"',
      'disks[4].engine: expected one of threads, io_uring, auto, got "aio"',
      "disks[5].pollUs: 32 polls the io_uring engine's ring; engine threads has none (use engine io_uring or auto, or pollUs 0)",
    ]);
  });

  it('--disk engine= and poll-us=: parsed into engine and pollUs, bad values refused by the same checks as a file', () => {
    expect(diskSpecToRaw('d=/d.sock,ram=1M,engine=io_uring,poll-us=32')).to.deep.equal({ name: 'd', socket: '/d.sock', ram: '1M', engine: 'io_uring', pollUs: 32 });
    const c = parseConfig(mergeFlags({}, { disk: ['d=/d.sock,ram=1M,engine=threads', 'e=/e.sock,file=/e.raw,poll-us=8'] }));
    expect(c.disks.map((x) => [x.name, x.engine, x.pollUs])).to.deep.equal([
      ['d', 'threads', 0],
      ['e', 'auto', 8],
    ]);
    const bad = (spec: string): string[] => problems(mergeFlags({}, { disk: [spec] }));
    expect(bad('/d.sock,ram=1M,engine=fast')).to.deep.equal(['disks[0].engine: expected one of threads, io_uring, auto, got "fast"']);
    expect(bad('/d.sock,ram=1M,poll-us=abc')).to.deep.equal(['disks[0].pollUs: expected an integer in 0..1000, got "abc"']);
    expect(bad('/d.sock,ram=1M,poll-us=')).to.deep.equal(['disks[0].pollUs: expected an integer in 0..1000, got ""']);
    expect(bad('/d.sock,ram=1M,poll-us=5000')).to.deep.equal(['disks[0].pollUs: expected an integer in 0..1000, got 5000']);
    expect(bad('/d.sock,ram=1M,queues=two')).to.deep.equal(['disks[0].queues: expected an integer in 1..64, got "two"']);
    expect(bad('/d.sock,ram=1M,engine=threads,poll-us=32')).to.deep.equal(["disks[0].pollUs: 32 polls the io_uring engine's ring; engine threads has none (use engine io_uring or auto, or pollUs 0)"]);
    expect(() => diskSpecToRaw('/d.sock,ram=1M,pollus=3')).to.throw(/unknown option pollus \(.*engine, poll-us/);
  });

  it('merges command-line ports and disks into switch sw0 and the disk list', () => {
    const raw = mergeFlags({ switches: [{ name: 'sw0', ports: [{ socket: '/a.sock' }] }] }, { port: ['b=/b.sock,vlan=5'], disk: ['d=/d.sock,ram=1M,readonly'], poll: 'busy' });
    const c = parseConfig(raw);
    expect(c.switches[0].poll).to.equal('busy');
    expect(c.switches[0].ports.map((p) => p.name)).to.deep.equal(['a', 'b']);
    expect(c.disks[0]).to.deep.include({ name: 'd', socket: '/d.sock', ram: 1n << 20n, readOnly: true });
    expect(() => diskSpecToRaw('/d.sock,frob=1')).to.throw(/unknown option frob/);
  });

  it('--evpn and --evpn-neighbor: an evpn section whose VNIs are the --vxlan ports of sw0', () => {
    const c = parseConfig(
      mergeFlags(
        {},
        {
          vxlan: ['remote=192.0.2.1,vni=100,local=192.0.2.1', 'remote=192.0.2.1,vni=200,name=blue'],
          evpn: 'asn=65000,router-id=192.0.2.1,arp-snooping',
          'evpn-neighbor': ['192.0.2.2', '192.0.2.3,asn=65001'],
        },
      ),
    );
    expect(c.evpn).to.deep.include({ asn: 65000, routerId: '192.0.2.1', arpSnooping: true });
    expect(c.evpn?.neighbors).to.deep.equal([{ address: '192.0.2.2' }, { address: '192.0.2.3', asn: 65001 }]);
    expect(c.evpn?.vnis).to.deep.equal([
      { vni: 100, switch: 'sw0', port: 'vxlan100' },
      { vni: 200, switch: 'sw0', port: 'blue' },
    ]);
    const vx = ['remote=192.0.2.1,vni=100'];
    expect(() => mergeFlags({}, { vxlan: vx, 'evpn-neighbor': ['192.0.2.2'] })).to.throw(/--evpn-neighbor needs --evpn/);
    expect(() => mergeFlags({}, { evpn: 'asn=65000,router-id=192.0.2.1' })).to.throw(/no --vxlan port/);
    expect(() => mergeFlags({}, { vxlan: vx, evpn: 'asn=65000,colour=red' })).to.throw(/unknown option colour/);
    expect(() => mergeFlags({ evpn: {} }, { vxlan: vx, evpn: 'asn=65000,router-id=192.0.2.1' })).to.throw(/evpn section already/);
    expect(() => parseConfig(mergeFlags({}, { vxlan: vx, evpn: 'asn=0,router-id=192.0.2.1' }))).to.throw(ConfigError, /evpn\.asn/);
  });

  it('refuses ARP/ND snooping or suppression on a switch with several data-plane threads (they add a packet handler)', () => {
    const vx = ['remote=192.0.2.1,vni=100'];
    const raw = (evpn: string, threads: number) => {
      const r = mergeFlags({}, { vxlan: vx, evpn }) as { switches: Array<Record<string, unknown>> };
      r.switches[0].threads = threads;
      return r;
    };
    for (const opt of ['arp-snooping', 'nd-snooping', 'arp-suppression']) {
      expect(() => parseConfig(raw(`asn=65000,router-id=192.0.2.1,${opt}`, 2)), opt).to.throw(ConfigError, /evpn\.vnis\[0\]\.switch: .*needs one data-plane thread \(it has 2\)/);
      expect(parseConfig(raw(`asn=65000,router-id=192.0.2.1,${opt}`, 1)).evpn?.vnis).to.have.length(1);
    }
    expect(parseConfig(raw('asn=65000,router-id=192.0.2.1', 2)).switches[0].threads).to.equal(2);
  });
});
