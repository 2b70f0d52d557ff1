// The EVPN neighbor handler (src/evpn/arp-snoop.ts) on a running switch's data-plane thread,
// fed by the flows EvpnControl adds (no BGP here: the suppression table is posted as
// EvpnControl posts it): requests for a known remote address are answered to the asker and
// reach no other port; a solicitation for another address of the same solicited-node group,
// or a request after the address is withdrawn, is dropped; senders are posted only for the
// kinds of snooping turned on.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { BroadcastChannel } from 'node:worker_threads';
import { Switch } from '../../src/switch/switch.js';
import type { NetGuest } from '../../src/loadgen/net-guest.js';
import type { ArpSighting, SuppressEntry } from '../../src/evpn/arp-snoop.js';
import { icmp6ChecksumOk, ipv6At, ndSender } from '../../src/evpn/neigh.js';
import { setLogSink } from '../../src/log.js';
import { A, ThreeGuests } from '../switch/three-guests.js';
import { arpReplyFrom, arpRequest } from '../lib/packets.js';
import { nd } from '../lib/nd.js';
import { until } from '../lib/wait.js';

const REMOTE_MAC = '02:00:00:00:00:09';
const A_BYTES = A.split(':').map((x) => parseInt(x, 16));

describe('evpn neighbor handler on a running switch', function () {
  this.timeout(20_000);
  let sw: Switch;
  let rig: ThreeGuests;
  let guests: Record<string, NetGuest>;
  let oldSink: ReturnType<typeof setLogSink>;
  let table: BroadcastChannel;
  let sightings: BroadcastChannel;
  const seen: ArpSighting[] = [];

  before(async () => {
    oldSink = setLogSink(() => undefined);
    sw = await Switch.create({ dataplane: 'worker' });
    rig = await ThreeGuests.attach(sw);
    guests = rig.guests;
    const id = randomBytes(6).toString('hex');
    sightings = new BroadcastChannel(`test-evpn-arp-${id}`);
    sightings.onmessage = (ev: unknown) => seen.push((ev as { data: ArpSighting }).data);
    table = new BroadcastChannel(`test-evpn-table-${id}`);
    // ARP snooping on, ND snooping off.
    const module = new URL('../../src/evpn/arp-snoop.js', import.meta.url).href;
    await sw.addHandler('evpn-arp', { module, options: { channel: `test-evpn-arp-${id}`, table: `test-evpn-table-${id}`, arp: true, nd: false } });
    const post = (e: SuppressEntry) => table.postMessage(e);
    post({ vlan: 1, ip: '10.0.0.9', mac: REMOTE_MAC });
    post({ vlan: 1, ip: 'fd00::9', mac: REMOTE_MAC });
    await sw.addFlow('priority=65100,arp,dl_vlan=1,arp_op=1,arp_tpa=10.0.0.9,actions=handler:evpn-arp');
    await sw.addFlow('priority=65100,icmp6,dl_vlan=1,icmp_type=135,ipv6_dst=ff02::1:ff00:9,actions=handler:evpn-arp');
  });

  after(async () => {
    sightings?.close();
    table?.close();
    rig?.close();
    await sw?.close();
    if (oldSink) setLogSink(oldSink);
  });

  it('answers an ARP request for a known remote address to the asker alone', async () => {
    // The table's message reaches the data-plane thread in its own time: asked until answered.
    const r = await until('the ARP reply', 5_000, async () => {
      guests.a.send([arpRequest(A, '10.0.0.1', '10.0.0.9')]);
      const got = await rig.got(200);
      return got.a.length > 0 ? got : undefined;
    });
    expect(r.a.map((f) => arpReplyFrom(f, '10.0.0.9'))).to.deep.equal([REMOTE_MAC]);
    expect(r.a[0].subarray(0, 6)).to.deep.equal(Uint8Array.from(A_BYTES));
    expect([r.b.length, r.c.length], 'no other port sees the request').to.deep.equal([0, 0]);
    // A gratuitous ARP for the address (a local host claiming it) and an ARP probe (sender 0.0.0.0): no answer.
    guests.a.send([arpRequest(A, '10.0.0.9', '10.0.0.9'), arpRequest(A, '0.0.0.0', '10.0.0.9')]);
    const quiet = await rig.got(300);
    expect([quiet.a.length, quiet.b.length, quiet.c.length]).to.deep.equal([0, 0, 0]);
    // ARP snooping is on: a's sender is posted.
    await until('a sighting of a', 5_000, () => (seen.some((s) => s.mac === A && s.ip === '10.0.0.1' && s.vlan === 1 && s.port === 'a') ? true : undefined));
  });

  it('answers a neighbor solicitation for a known remote IPv6 address with an advertisement; another target of the group is dropped', async () => {
    const ns = nd(135, { src: 'fd00::1', dst: 'ff02::1:ff00:9', target: 'fd00::9', lladdr: A_BYTES, from: A_BYTES });
    const r = await until('the advertisement', 5_000, async () => {
      guests.a.send([ns]);
      const got = await rig.got(200);
      return got.a.length > 0 ? got : undefined;
    });
    expect(r.a).to.have.length(1);
    const na = r.a[0];
    expect([na[14 + 40], icmp6ChecksumOk(na), ipv6At(na, 14 + 24)]).to.deep.equal([136, true, 'fd00::1']);
    expect(ndSender(na)).to.deep.equal({ mac: REMOTE_MAC, ip: 'fd00::9' });
    expect([r.b.length, r.c.length]).to.deep.equal([0, 0]);
    // fd00::ab:0:9 has the same solicited-node group (its last 24 bits): the flow takes it, the handler has no answer.
    guests.a.send([nd(135, { src: 'fd00::1', dst: 'ff02::1:ff00:9', target: 'fd00::ab:0:9', lladdr: A_BYTES, from: A_BYTES })]);
    const none = await rig.got(300);
    expect([none.a.length, none.b.length, none.c.length]).to.deep.equal([0, 0, 0]);
    // ND snooping is off: no sighting of fd00::1.
    expect(seen.some((s) => s.ip === 'fd00::1')).to.equal(false);
  });

  it('stops answering once the address is withdrawn; requests for other addresses are switched as usual', async () => {
    table.postMessage({ vlan: 1, ip: '10.0.0.9', mac: null } satisfies SuppressEntry);
    await until('no answer any more', 5_000, async () => {
      guests.a.send([arpRequest(A, '10.0.0.1', '10.0.0.9')]);
      const got = await rig.got(200);
      return got.a.length === 0 ? true : undefined;
    });
    guests.a.send([arpRequest(A, '10.0.0.1', '10.0.0.2')]);
    const r = await rig.got();
    expect([r.a.length, r.b.length, r.c.length], 'flooded by the learning switch').to.deep.equal([0, 1, 1]);
    const stats = (await sw.handlers()).find((h) => h.name === 'evpn-arp')!;
    expect([stats.errors, stats.sent >= 2]).to.deep.equal([0, true]);
  });
});
