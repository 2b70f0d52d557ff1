// The flow table through `vhostkit run`'s management API and `vhostkit ctl flow`, as an
// operator uses it: add, dump with counters after traffic, refuse a bad flow with the reason,
// delete by match and strictly.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { tcpFrame } from '../lib/packets.js';
import { ctl, start, until, type Daemon } from './daemon.js';

describe('vhostkit ctl flow: the flow table through the management API', function () {
  this.timeout(60_000);
  let dir: string;
  let d: Daemon | null = null;
  const guests: NetGuest[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-flow-api-'));
  });
  afterEach(() => {
    for (const g of guests.splice(0)) g.close();
    d?.child.kill('SIGKILL');
    d = null;
    rmSync(dir, { recursive: true, force: true });
  });

  it('adds, dumps with n_packets/n_bytes after traffic, refuses a bad flow, deletes by match and strictly', async () => {
    const api = `unix:${join(dir, 'api.sock')}`;
    writeFileSync(
      join(dir, 'host.yaml'),
      ['switches:', '  - name: sw0', '    ports:', '      - { name: vm1, socket: vm1.sock }', '      - { name: vm2, socket: vm2.sock }', `api: "${api}"`].join('\n'),
    );
    d = start(['--config', join(dir, 'host.yaml')]);
    const dd = d;
    await until(() => dd.out().includes('QEMU'), 'the daemon to print its devices');

    const add = await ctl(api, 'flow', 'add', 'sw0', 'priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80,actions=drop');
    expect([add.code, add.out]).to.deep.equal([0, 'flow added to sw0\n']);
    expect((await ctl(api, 'flow', 'add', 'sw0', 'priority=5,in_port=vm1,actions=normal')).code).to.equal(0);
    const bad = await ctl(api, 'flow', 'add', 'sw0', 'tcp,tp_dst=80,actions=output:vm9');
    expect(bad.code).to.equal(1);
    expect(bad.err).to.include('no port vm9');
    const noSwitch = await ctl(api, 'flow', 'dump', 'nope');
    expect([noSwitch.code, noSwitch.err]).to.deep.equal([1, 'vhostkit ctl flow: no switch nope\n']);

    // Traffic from vm1: two frames to port 80 are dropped by the flow, one to port 22 passes.
    const a = await NetGuest.connect(join(dir, 'vm1.sock'));
    const b = await NetGuest.connect(join(dir, 'vm2.sock'));
    guests.push(a, b);
    const web = tcpFrame(new Uint8Array(10), { dport: 80 }).frame;
    const ssh = tcpFrame(new Uint8Array(10), { dport: 22 }).frame;
    let sent = 0;
    await until(() => (sent += a.send([web, web, ssh].slice(sent))) >= 3, 'the frames to be sent');
    const got = await b.receive(1, 3000);
    expect(got.map((r) => r.frame.length)).to.deep.equal([ssh.length]);

    const dump = await ctl(api, 'flow', 'dump', 'sw0');
    expect(dump.code).to.equal(0);
    expect(dump.out).to.equal(
      [
        ` table=0, n_packets=2, n_bytes=${2 * web.length}, priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80 actions=drop`,
        ` table=0, n_packets=1, n_bytes=${ssh.length}, priority=5,in_port=vm1 actions=NORMAL`,
        '',
      ].join('\n'),
    );
    const json = JSON.parse((await ctl(api, '--json', 'flow', 'dump', 'sw0')).out) as Array<{ priority: number; packets: number }>;
    expect(json.map((f) => [f.priority, f.packets])).to.deep.equal([
      [100, 2],
      [5, 1],
    ]);

    expect((await ctl(api, 'flow', 'del', 'sw0', 'tcp', '--strict')).out, 'strict: no flow of priority 32768 with that match').to.equal('0 flow(s) removed from sw0\n');
    expect((await ctl(api, 'flow', 'del', 'sw0', 'tcp')).out).to.equal('1 flow(s) removed from sw0\n');
    expect((await ctl(api, 'flow', 'del', 'sw0')).out).to.equal('1 flow(s) removed from sw0\n');
    expect((await ctl(api, 'flow', 'dump', 'sw0')).out).to.equal('');
  });
});
