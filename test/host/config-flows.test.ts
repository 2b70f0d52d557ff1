// A switch's flows in the configuration file (switches[].flows): checked with the rest of the
// file before anything starts (a bad flow is named by its path), added after the switch's
// ports so they can name them, and in effect once `vhostkit run` serves.
import { expect } from 'chai';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, parseConfig, parseSwitchConfig, type HostConfig } from '../../src/host/config.js';
import { Host, HostError } from '../../src/host/host.js';
import { apiRequest } from '../../src/cli/api-client.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { tcpFrame } from '../lib/packets.js';
import { cli, ctl, run, start, until, type Daemon } from './daemon.js';

function problems(raw: unknown): string[] {
  try {
    parseConfig(raw, '/base');
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

const ports = [
  { name: 'vm1', socket: 'vm1.sock' },
  { name: 'vm2', socket: 'vm2.sock' },
];

describe('switches[].flows in the configuration', function () {
  this.timeout(60_000);

  describe('the check', () => {
    it('keeps the flows as written; none given is none', () => {
      const flows = ['priority=100,icmp,nw_dst=10.0.0.2,actions=drop', 'in_port=vm1,actions=output:vm2'];
      const c = parseConfig({ switches: [{ name: 'sw0', ports, flows }, { name: 'sw1' }] }, '/base');
      expect(c.switches[0].flows).to.deep.equal(flows);
      expect(c.switches[1].flows).to.deep.equal([]);
      expect(parseSwitchConfig({ name: 'sw2', ports, flows: ['in_port=vm2,actions=flood'] }, '/base').flows).to.deep.equal(['in_port=vm2,actions=flood']);
    });

    it("names a bad flow by its path, with parseFlow's reason, every one at once", () => {
      const p = problems({
        switches: [
          {
            name: 'sw0',
            ports,
            flows: [
              'priority=100,icmp,actions=drop',
              'priority=10,colour=red,actions=drop',
              'in_port=vm9,actions=normal',
              'tcp,actions=output:vm3',
              'ip,nw_dst=10.0.0.2',
              7,
              'icmp,priority=100,actions=flood',
            ],
          },
          { name: 'sw1', flows: 'drop' },
          { name: 'sw2', flows: ['in_port=vm1,actions=drop'] },
        ],
      });
      expect(p).to.have.members([
        'switches[0].flows[1]: colour: unknown field (in_port, dl_src, dl_dst, dl_vlan, dl_type, nw_src, nw_dst, ipv6_src, ipv6_dst, nw_proto, nw_ttl, arp_spa, arp_tpa, arp_op, tp_src, tp_dst, icmp_type, icmp_code, icmpv6_type, icmpv6_code, tcp_flags, priority, idle_timeout, hard_timeout)',
        'switches[0].flows[2]: no port vm9 on this switch (its ports: vm1, vm2)',
        'switches[0].flows[3]: no port vm3 on this switch (its ports: vm1, vm2)',
        'switches[0].flows[4]: ip,nw_dst=10.0.0.2: no actions= (e.g. actions=drop, actions=normal, actions=output:PORT)',
        'switches[0].flows[5]: expected a flow in ovs-ofctl syntax (a string), got 7',
        'switches[0].flows[6]: the same priority and match as switches[0].flows[0] (it would replace it)',
        'switches[1].flows: expected a list of flows, got "drop"',
        // a flow names only the ports of its own switch
        'switches[2].flows[0]: no port vm1 on this switch (it has no ports)',
      ]);
    });

    it("checks flows against the ports of a switch that has other problems (the ports' names still count)", () => {
      const p = problems({ switches: [{ name: 'sw0', poll: 'fast', ports: [{ name: 'vm1', socket: 'vm1.sock', queues: 0 }], flows: ['in_port=vm1,actions=drop', 'in_port=vm2,actions=drop'] }] });
      expect(p).to.have.members([
        'switches[0].poll: expected one of busy, event, adaptive, got "fast"',
        'switches[0].ports[0].queues: expected an integer in 1..64, got 0',
        'switches[0].flows[1]: no port vm2 on this switch (its ports: vm1)',
      ]);
    });
  });

  describe('the library: Host.start', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'vk-cfg-flows-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('adds the flows after the ports; a flow that fails there stops the start and what it started', async () => {
      const cfg = parseConfig({ stateDir: 'none', switches: [{ name: 'sw0', ports, flows: ['priority=100,icmp,nw_dst=10.0.0.2,actions=drop', 'in_port=vm1,actions=output:vm2'] }] }, dir);
      const h = await Host.start(cfg);
      try {
        // dumped highest priority first
        expect((await h.flows('sw0')).map((f) => f.line)).to.deep.equal([
          ' table=0, n_packets=0, n_bytes=0, priority=32768,in_port=vm1 actions=output:vm2',
          ' table=0, n_packets=0, n_bytes=0, priority=100,icmp,nw_dst=10.0.0.2 actions=drop',
        ]);
      } finally {
        await h.close();
      }
      // A HostConfig built by hand is not checked by parseConfig: Host.start refuses the flow.
      const bad: HostConfig = { ...cfg, switches: [{ ...cfg.switches[0], flows: ['in_port=vm1,actions=drop', 'in_port=vm1,actions=output:nope'] }] };
      let err: unknown;
      await Host.start(bad).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(HostError);
      expect((err as HostError).message).to.equal('switch sw0: flows[1]: no port nope on this switch');
      expect(existsSync(join(dir, 'vm1.sock')), 'the ports it had started are gone').to.equal(false);
    });
  });

  describe('vhostkit run --config', () => {
    let dir: string;
    let d: Daemon | null = null;
    const guests: NetGuest[] = [];
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'vk-cfg-flows-'));
    });
    afterEach(() => {
      for (const g of guests.splice(0)) g.close();
      d?.child.kill('SIGKILL');
      d = null;
      rmSync(dir, { recursive: true, force: true });
    });

    it('starts with the flows of the file: GET /v1/switches/sw0/flows lists them and traffic meets them', async () => {
      const api = `unix:${join(dir, 'api.sock')}`;
      writeFileSync(
        join(dir, 'host.yaml'),
        [
          `api: "${api}"`,
          'stateDir: none',
          'switches:',
          '  - name: sw0',
          '    ports:',
          '      - { name: vm1, socket: vm1.sock }',
          '      - { name: vm2, socket: vm2.sock }',
          '    flows:',
          '      - "priority=100,tcp,tp_dst=80,actions=drop"',
          '      - priority=5,in_port=vm1,actions=output:vm2',
        ].join('\n'),
      );
      const check = (await run(process.execPath, [cli, 'run', '--config', join(dir, 'host.yaml'), '--check'])).stdout;
      expect(check).to.include('1 switch(es) with 2 port(s) and 2 flow(s)');

      d = start(['--config', join(dir, 'host.yaml')]);
      const dd = d;
      await until(() => dd.out().includes('QEMU'), 'the daemon to print its devices');
      const r = await apiRequest(api, 'GET', '/v1/switches/sw0/flows');
      expect(r.status).to.equal(200);
      expect((r.body as Array<{ priority: number; match: string; actions: string }>).map((f) => [f.priority, f.match, f.actions])).to.deep.equal([
        [100, 'tcp,tp_dst=80', 'drop'],
        [5, 'in_port=vm1', 'output:vm2'],
      ]);

      // From vm1: the frame to port 80 is dropped, the one to port 22 goes out to vm2.
      const a = await NetGuest.connect(join(dir, 'vm1.sock'));
      const b = await NetGuest.connect(join(dir, 'vm2.sock'));
      guests.push(a, b);
      const web = tcpFrame(new Uint8Array(10), { dport: 80 }).frame;
      const ssh = tcpFrame(new Uint8Array(10), { dport: 22 }).frame;
      let sent = 0;
      await until(() => (sent += a.send([web, ssh].slice(sent))) >= 2, 'the frames to be sent');
      expect((await b.receive(1, 3000)).map((x) => x.frame.length)).to.deep.equal([ssh.length]);
      const dump = await ctl(api, 'flow', 'dump', 'sw0');
      expect(dump.out).to.equal(
        [` table=0, n_packets=1, n_bytes=${web.length}, priority=100,tcp,tp_dst=80 actions=drop`, ` table=0, n_packets=1, n_bytes=${ssh.length}, priority=5,in_port=vm1 actions=output:vm2`, ''].join(
          '\n',
        ),
      );
    });

    it('refuses to start with a bad flow, naming its path, before anything starts', async () => {
      const cfg = join(dir, 'host.json');
      writeFileSync(
        cfg,
        JSON.stringify({
          api: 'none',
          switches: [{ name: 'sw0', ports: [{ name: 'vm1', socket: 'vm1.sock' }], flows: ['in_port=vm1,actions=drop', 'tcp,tp_port=80,actions=drop', 'actions=output:vm3'] }],
        }),
      );
      d = start(['--config', cfg]);
      expect(await d.exited).to.equal(2);
      const err = d.err();
      expect(err).to.include('switches[0].flows[1]: tp_port: unknown field');
      expect(err).to.include('switches[0].flows[2]: no port vm3 on this switch (its ports: vm1)');
      expect(existsSync(join(dir, 'vm1.sock')), 'nothing started').to.equal(false);
    });

    it('POST /v1/switches takes flows too, checked the same way', async () => {
      const api = `unix:${join(dir, 'api.sock')}`;
      writeFileSync(join(dir, 'host.json'), JSON.stringify({ api, stateDir: 'none', socketDirs: [dir] }));
      d = start(['--config', join(dir, 'host.json')]);
      const dd = d;
      await until(() => dd.out().includes('management API'), 'the daemon to serve');
      const bad = await apiRequest(api, 'POST', '/v1/switches', { name: 'sw1', ports: [{ name: 'p1', socket: join(dir, 'p1.sock') }], flows: ['in_port=p2,actions=drop'] });
      expect(bad.status).to.equal(400);
      expect(bad.text).to.include('switch.flows[0]: no port p2 on this switch (its ports: p1)');
      const ok = await apiRequest(api, 'POST', '/v1/switches', { name: 'sw1', ports: [{ name: 'p1', socket: join(dir, 'p1.sock') }], flows: ['in_port=p1,actions=drop'] });
      expect(ok.status, ok.text).to.equal(201);
      expect((await ctl(api, 'flow', 'dump', 'sw1')).out).to.equal(' table=0, n_packets=0, n_bytes=0, priority=32768,in_port=p1 actions=drop\n');
    });
  });
});
