// The switch's flow table: flows in ovs-ofctl's syntax (src/switch/flows.ts) run by the
// native forwarder after classification (native/switch/switch_flows.cc), on a switch with
// its data plane on a worker and our frontend as the guests.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Switch } from '../../src/switch/switch.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { DEFAULT_PRIORITY, parseFlow } from '../../src/switch/flows.js';
import { FlowWord } from '../../src/native/switch.js';
import { setLogSink } from '../../src/log.js';
import { tcpFrame, icmpEchoRequest } from '../lib/packets.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const C = '02:00:00:00:00:0c';
const ports: Record<string, number> = { vm1: 1, vm2: 2 };
const port = (n: string) => {
  if (!(n in ports)) throw new RangeError(`no port ${n}`);
  return ports[n];
};

describe('flows: ovs-ofctl syntax', () => {
  it('parses matches and actions, writes them back in canonical form', () => {
    const f = parseFlow('priority=100,tcp,nw_dst=10.0.0.0/24,tp_dst=80,actions=drop', port);
    expect([f.priority, f.match, f.actions]).to.deep.equal([100, 'tcp,nw_dst=10.0.0.0/24,tp_dst=80', 'drop']);
    expect(f.words[FlowWord.NW_DST_MASK] >>> 0).to.equal(0xffffff00);
    const g = parseFlow('in_port=vm1,dl_vlan=10,dl_dst=52:54:00:00:00:01,actions=output:vm2', port);
    expect([g.priority, g.match, g.actions]).to.deep.equal([DEFAULT_PRIORITY, 'in_port=vm1,dl_dst=52:54:00:00:00:01,dl_vlan=10', 'output:vm2']);
    expect(g.words[FlowWord.OUT_PORT]).to.equal(2);
    expect(parseFlow('icmp,nw_src=10.1.2.3,actions=normal', port).match).to.equal('icmp,nw_src=10.1.2.3');
    expect(parseFlow('dl_type=0x88b5,actions=flood', port).match).to.equal('dl_type=0x88b5');
    expect(parseFlow('', port, true).words[FlowWord.FIELDS], 'an empty match for del-flows: every flow').to.equal(0);
  });

  it('refuses what it cannot run, saying why', () => {
    const bad: Array<[string, RegExp]> = [
      ['tcp,tp_dst=80', /no actions=/],
      ['nw_dst=10.0.0.1,actions=drop', /need ip/],
      ['ip,tp_dst=80,actions=drop', /need tcp or udp/],
      ['tcp,tp_dst=70000,actions=drop', /tp_dst=70000: expected a number 0..65535/],
      ['foo=1,actions=drop', /foo: unknown field/],
      ['sctp,actions=drop', /sctp: unknown keyword/],
      ['ip,nw_dst=10.0.0.300,actions=drop', /expected an IPv4 address/],
      ['in_port=vm9,actions=drop', /no port vm9/],
      ['ip,actions=strip_vlan,output:vm2', /one of drop, normal, flood, output:PORT/],
      ['tcp,udp,actions=drop', /nw_proto is given twice/],
    ];
    for (const [t, re] of bad) expect(() => parseFlow(t, port), t).to.throw(RangeError, re);
    expect(() => parseFlow('tcp,actions=drop', port, true)).to.throw(/no actions=/);
  });
});

describe('flows on a running switch', function () {
  this.timeout(20_000);
  let dir: string;
  let sw: Switch;
  const guests: Record<string, NetGuest> = {};
  let oldSink: ReturnType<typeof setLogSink>;

  beforeEach(async () => {
    oldSink = setLogSink(() => undefined);
    dir = mkdtempSync(join(tmpdir(), 'vk-flows-'));
    sw = await Switch.create({ dataplane: 'worker' });
    for (const name of ['a', 'b', 'c']) {
      await sw.addVhostPort({ name, socket: join(dir, `${name}.sock`) });
      guests[name] = await NetGuest.connect(join(dir, `${name}.sock`));
      await sw.backend(name).nextSession();
    }
    // Every guest is learned: known unicast goes to one port only.
    for (const [name, mac] of [
      ['a', A],
      ['b', B],
      ['c', C],
    ] as const) {
      guests[name].send([tcpFrame(new Uint8Array(1), { src: mac, dst: 'ff:ff:ff:ff:ff:ff' }).frame]);
      for (const other of ['a', 'b', 'c'].filter((x) => x !== name)) await guests[other].receive(1, 2000);
    }
  });
  afterEach(async () => {
    for (const g of Object.values(guests)) g.close();
    await sw.close();
    rmSync(dir, { recursive: true, force: true });
    setLogSink(oldSink);
  });

  /** Frames each guest got within `ms` (after sending). */
  async function got(ms = 300): Promise<Record<string, Uint8Array[]>> {
    const out: Record<string, Uint8Array[]> = {};
    for (const name of ['a', 'b', 'c']) out[name] = (await guests[name].receive(1000, ms)).map((r) => r.frame);
    return out;
  }

  it('drops what a drop flow matches and counts it; the rest is switched as before', async () => {
    await sw.addFlow('priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80,actions=drop');
    const web = tcpFrame(new Uint8Array(10), { src: A, dst: B, dport: 80 }).frame;
    const ssh = tcpFrame(new Uint8Array(10), { src: A, dst: B, dport: 22 }).frame;
    expect(guests.a.send([web, web, ssh])).to.equal(3);
    const r = await got();
    expect(r.b.length, 'only the frame to port 22 reaches b').to.equal(1);
    expect(r.c.length).to.equal(0);
    const [flow] = await sw.dumpFlows();
    expect(flow.line).to.equal(` table=0, n_packets=2, n_bytes=${2 * web.length}, priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80 actions=drop`);
    expect(sw.counters('a').drop_flow).to.equal(2);
  });

  it('sends to another port, floods, and lets the higher priority win; del-flows removes strictly or by match', async () => {
    await sw.addFlow(`priority=10,in_port=a,dl_dst=${B},actions=output:c`);
    await sw.addFlow(`priority=20,in_port=a,dl_dst=${B},icmp,actions=flood`);
    guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame]);
    let r = await got();
    expect([r.b.length, r.c.length], 'to c instead of b').to.deep.equal([0, 1]);
    guests.a.send([icmpEchoRequest(B, A, '10.0.0.1', '10.0.0.2', 1, 1)]);
    r = await got();
    expect([r.b.length, r.c.length], 'ICMP flooded by the higher priority').to.deep.equal([1, 1]);
    expect((await sw.dumpFlows()).map((f) => [f.priority, f.packets])).to.deep.equal([
      [20, 1],
      [10, 1],
    ]);
    // Re-adding a flow of the same priority and match replaces its action, keeps its counters.
    await sw.addFlow(`priority=10,in_port=a,dl_dst=${B},actions=drop`);
    expect((await sw.dumpFlows()).map((f) => [f.priority, f.actions, f.packets])).to.deep.equal([
      [20, 'FLOOD', 1],
      [10, 'drop', 1],
    ]);
    expect(await sw.delFlows(`priority=30,in_port=a,dl_dst=${B}`, true), 'strict: no flow of that priority').to.equal(0);
    expect(await sw.delFlows(`in_port=a`), 'every flow matching in_port=a').to.equal(2);
    expect(await sw.dumpFlows()).to.deep.equal([]);
    guests.a.send([tcpFrame(new Uint8Array(10), { src: A, dst: B }).frame]);
    r = await got();
    expect([r.b.length, r.c.length], 'the learning switch again').to.deep.equal([1, 0]);
  });
});
