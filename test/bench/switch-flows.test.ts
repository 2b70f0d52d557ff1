// The switch-flows bench case's table and switch (bench/lib/flow-table.ts,
// bench/lib/switch-process.ts), without DPDK: the 1,000 flows are distinct and valid, a
// frame shaped like flowgen's is switched as before and counted by exactly its flow, and
// the check refuses a table the traffic did not use.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { checkFlowHits, flowgenDst, flowgenFlows, flowgenFrame, flowHits, type DumpedFlow } from '../../bench/lib/flow-table.js';
import { parseFlow } from '../../src/switch/flows.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { inetSum, fold } from '../lib/packets.js';

const noPorts = (n: string): number => {
  throw new RangeError(`no port ${n}`);
};

describe('bench switch-flows: the table', () => {
  it('1,000 distinct valid 5-tuple flows on flowgen destinations 10.253.0.0 + 0..999', () => {
    const flows = flowgenFlows(1000);
    expect(flows).to.have.length(1000);
    const matches = new Set(flows.map((f) => parseFlow(f, noPorts).match));
    expect(matches.size).to.equal(1000);
    expect(flows[0]).to.equal('priority=100,udp,nw_src=10.254.0.0,nw_dst=10.253.0.0,tp_src=1000,tp_dst=1001,actions=normal');
    expect(flowgenDst(999)).to.equal('10.253.3.231');
    expect(parseFlow(flows[999], noPorts).match).to.equal('udp,nw_src=10.254.0.0,nw_dst=10.253.3.231,tp_src=1000,tp_dst=1001');
    expect(() => flowgenFlows(1025)).to.throw(RangeError);
  });

  it("builds flowgen's 60 B UDP/IPv4 frame with a valid IP header checksum", () => {
    const f = flowgenFrame(258, '02:00:00:00:00:0b', '02:00:00:00:00:0a');
    expect(f.length).to.equal(60);
    expect([...f.subarray(26, 34)]).to.deep.equal([10, 254, 0, 0, 10, 253, 1, 2]);
    expect(fold(inetSum(f, 14, 34)), 'the header with its checksum sums to 0xffff').to.equal(0);
    expect([(f[34] << 8) | f[35], (f[36] << 8) | f[37]]).to.deep.equal([1000, 1001]);
  });

  it('the check wants every flow to have counted frames', () => {
    const dump: DumpedFlow[] = [
      { match: 'x', packets: 3 },
      { match: 'y', packets: 0 },
    ];
    expect(flowHits(dump)).to.deep.equal({ flows: 2, hit: 1, packets: 3, unused: ['y'] });
    expect(() => checkFlowHits(flowHits(dump), 2, 'here')).to.throw(/1 of 2 flows counted no frame \(e.g. y\)/);
    expect(() => checkFlowHits(flowHits(dump), 3, 'here')).to.throw(/holds 2 flows, not 3/);
    expect(() => checkFlowHits(flowHits([dump[0]]), 1, 'here')).to.not.throw();
  });
});

describe('bench switch-flows: the switch process', function () {
  this.timeout(30_000);
  const script = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'lib', 'switch-process.js');
  let dir: string;
  let p: ChildProcess | null = null;
  const guests: NetGuest[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-bench-swf-'));
  });
  afterEach(async () => {
    for (const g of guests.splice(0)) g.close();
    if (p && p.exitCode === null) {
      const exited = new Promise((r) => p!.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    p = null;
    rmSync(dir, { recursive: true, force: true });
  });

  it('switches a flowgen frame as without flows, and only its flow counts it', async () => {
    const sa = join(dir, 'a.sock');
    const sb = join(dir, 'b.sock');
    p = spawn(process.execPath, [script, '--port', `a=${sa}`, '--port', `b=${sb}`, '--flows', '1000', '--poll', 'event'], { stdio: ['pipe', 'pipe', 'ignore'] });
    const lines = createInterface({ input: p.stdout! })[Symbol.asyncIterator]();
    const next = async () => JSON.parse((await lines.next()).value as string) as Record<string, unknown>;
    expect(await next()).to.include({ ready: true, flows: 1000 });
    const a = await NetGuest.connect(sa);
    guests.push(a);
    const b = await NetGuest.connect(sb);
    guests.push(b);
    const A = '02:00:00:00:00:0a';
    const B = '02:00:00:00:00:0b';
    // B first, so its MAC is learnt; then A to B, destination 10.253.0.7 (flow 7) and
    // 10.253.3.240 (flowgen's 1009th: no flow).
    b.send([flowgenFrame(3, A, B)]);
    expect((await a.receive(1, 5000))[0].frame.subarray(0, 60)).to.deep.equal(flowgenFrame(3, A, B));
    a.send([flowgenFrame(7, B, A), flowgenFrame(7, B, A), flowgenFrame(1008, B, A)]);
    const got = [];
    while (got.length < 3) got.push(...(await b.receive(1, 5000)));
    expect(got.map((r) => r.frame[33])).to.deep.equal([7, 7, 240]);
    p.stdin!.write('dump\n');
    const { flows } = (await next()) as { flows: DumpedFlow[] };
    expect(flows).to.have.length(1000);
    const counted = flows.filter((f) => f.packets > 0);
    expect(counted.map((f) => [f.match, f.packets]).sort()).to.deep.equal([
      ['udp,nw_src=10.254.0.0,nw_dst=10.253.0.3,tp_src=1000,tp_dst=1001', 1],
      ['udp,nw_src=10.254.0.0,nw_dst=10.253.0.7,tp_src=1000,tp_dst=1001', 2],
    ]);
  });
});
