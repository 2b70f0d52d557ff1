// TAP and VXLAN ports against the Linux kernel, in network namespaces this test makes:
// a guest (our frontend) reaches an address on the host side of a TAP port, and a Linux
// vxlan device's peer in another namespace through a VXLAN port.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { Switch } from '../../src/switch/switch.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { Netns, ip, netnsUnavailable } from '../lib/netns.js';
import { arpReplyFrom, arpRequest, icmpEchoRequest, isEchoReply } from '../lib/packets.js';
import { setLogSink } from '../../src/log.js';
import { findBusybox } from '../lib/guest.js';

const GUEST = '02:00:00:00:aa:01';
const TAG = process.pid.toString(36).slice(-4);

async function ask(g: NetGuest, frame: Uint8Array, match: (f: Uint8Array) => boolean, what: string, tries = 10): Promise<Uint8Array> {
  for (let t = 0; t < tries; t++) {
    g.send([frame]);
    for (const r of await g.receive(1, 300)) if (match(r.frame)) return r.frame;
  }
  throw new Error(`no ${what}`);
}

// With two data-plane threads too: the guest's port on thread 0, the TAP or VXLAN port on
// thread 1 (packet handlers need one thread: their test runs with one only).
for (const threads of [1, 2]) {
  describe(`switch host ports (TAP, VXLAN) against the kernel (${threads} data-plane thread${threads > 1 ? 's' : ''})`, function () {
    this.timeout(30000);
    let dir: string;
    let sw: Switch;
    let g: NetGuest;
    let old: ReturnType<typeof setLogSink>;
    const nss: Netns[] = [];

    before(() => {
      const why = netnsUnavailable();
      if (why) throw new Error(`cannot run the TAP/VXLAN tests: ${why}`);
    });
    beforeEach(async () => {
      old = setLogSink(() => undefined);
      dir = mkdtempSync(join(tmpdir(), 'vk-host-'));
      sw = await Switch.create({ dataplane: 'worker', threads });
      await sw.addVhostPort({ name: 'vm', socket: join(dir, 'vm.sock') });
      g = await NetGuest.connect(join(dir, 'vm.sock'));
      await sw.backend('vm').nextSession();
    });
    afterEach(async () => {
      g.close();
      await sw.close();
      for (const n of nss.splice(0)) n.delete();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(old);
    });

    it('a guest reaches an address on the host side of a TAP port (ARP, ping)', async () => {
      const ns = new Netns(`vkt${TAG}`);
      nss.push(ns);
      const info = await sw.addTapPort({ ifname: `vkt${TAG}0` });
      // The TAP fd keeps working after its interface moves into the namespace.
      ip('link', 'set', 'dev', info.socket, 'netns', ns.name);
      ns.ip('addr', 'add', '10.77.1.1/24', 'dev', info.socket);
      ns.ip('link', 'set', 'dev', info.socket, 'up');
      const reply = await ask(g, arpRequest(GUEST, '10.77.1.2', '10.77.1.1'), (f) => arpReplyFrom(f, '10.77.1.1') !== null, 'ARP reply from 10.77.1.1');
      const hostMac = arpReplyFrom(reply, '10.77.1.1')!;
      await ask(g, icmpEchoRequest(hostMac, GUEST, '10.77.1.2', '10.77.1.1', 7, 1), (f) => isEchoReply(f, '10.77.1.1', 7, 1), 'echo reply');
      const c = sw.counters(info.name);
      expect(c.tx_packets, 'frames into the host stack').to.be.at.least(2);
      expect(c.rx_packets, 'frames from the host stack').to.be.at.least(2);
      const fdb = await sw.fdb();
      expect(fdb.find((e) => e.mac === hostMac)?.portName).to.equal(info.name);
    });

    if (threads === 1)
      it('the kernel pings an address that is only a handler, through a TAP port: ARP and echo answered from TypeScript', async () => {
        const ns = new Netns(`vkh${TAG}`);
        nss.push(ns);
        const info = await sw.addTapPort({ ifname: `vkh${TAG}0` });
        ip('link', 'set', 'dev', info.socket, 'netns', ns.name);
        ns.ip('addr', 'add', '10.77.3.1/24', 'dev', info.socket);
        ns.ip('link', 'set', 'dev', info.socket, 'up');
        const module = fileURLToPath(new URL('./fixtures/handlers.js', import.meta.url));
        await sw.addHandler('pong', { module, export: 'pingResponder', options: { ip: '10.77.3.9', mac: '02:00:00:00:77:09' } });
        await sw.addFlow(`priority=100,in_port=${info.name},arp,actions=handler:pong,NORMAL`);
        await sw.addFlow(`priority=100,in_port=${info.name},icmp,nw_dst=10.77.3.9,actions=handler:pong`);
        let out = '';
        try {
          // Not execFileSync: the event loop must run meanwhile (the handler's module loads there).
          out = (await promisify(execFile)('ip', ['netns', 'exec', ns.name, findBusybox(), 'ping', '-c', '3', '-W', '2', '10.77.3.9'])).stdout;
        } catch (e) {
          throw new Error(`${(e as Error).message}\nhandlers: ${JSON.stringify(await sw.handlers())}\nflows:\n${(await sw.dumpFlows()).map((x) => x.line).join('\n')}`);
        }
        expect(out, 'three echo replies').to.match(/3 packets transmitted, 3 packets received/);
        const [h] = await sw.handlers();
        expect(h.frames, 'ARP request and three echo requests, from the TAP').to.be.at.least(4);
        expect([h.errors, h.sent >= 4]).to.deep.equal([0, true]);
        expect(sw.counters(info.name).tx_packets, 'the replies went into the TAP').to.be.at.least(4);
      });

    it('a flow mirrors what a guest sends to a TAP port, where tcpdump sees it; the ping still goes its way', async () => {
      const ns = new Netns(`vkm${TAG}`);
      nss.push(ns);
      const peer = await sw.addTapPort({ ifname: `vkm${TAG}0` });
      const mon = await sw.addTapPort({ ifname: `vkm${TAG}1` });
      for (const t of [peer, mon]) ip('link', 'set', 'dev', t.socket, 'netns', ns.name);
      ns.ip('addr', 'add', '10.77.4.1/24', 'dev', peer.socket);
      ns.ip('link', 'set', 'dev', peer.socket, 'up');
      ns.ip('link', 'set', 'dev', mon.socket, 'up');
      await sw.addFlow(`priority=100,in_port=vm,icmp,actions=NORMAL,output:${mon.name}`);
      const dump = spawn('ip', ['netns', 'exec', ns.name, 'tcpdump', '-l', '-n', '-i', mon.socket, '-c', '2', 'icmp'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      dump.stdout.on('data', (b: Buffer) => (out += b.toString()));
      dump.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const exited = new Promise<number | null>((r) => dump.on('exit', r));
      for (let t = 0; t < 200 && !err.includes('listening on'); t++) await new Promise((r) => setTimeout(r, 50));
      const reply = await ask(g, arpRequest(GUEST, '10.77.4.2', '10.77.4.1'), (f) => arpReplyFrom(f, '10.77.4.1') !== null, 'ARP reply from 10.77.4.1');
      const hostMac = arpReplyFrom(reply, '10.77.4.1')!;
      // Pings until tcpdump has seen two (it may have started listening late).
      let done = false;
      void exited.then(() => (done = true));
      let seq = 0;
      while (!done && seq < 20) {
        seq++;
        const s = seq;
        await ask(g, icmpEchoRequest(hostMac, GUEST, '10.77.4.2', '10.77.4.1', 9, s), (f) => isEchoReply(f, '10.77.4.1', 9, s), `echo reply ${s}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5000))]);
      if (code === 'timeout') dump.kill();
      expect(code, `tcpdump: ${err}\n${out}`).to.equal(0);
      expect(out.match(/10\.77\.4\.2 > 10\.77\.4\.1: ICMP echo request, id 9, seq \d+/g)?.length, out).to.equal(2);
      expect((await sw.dumpFlows())[0].packets, 'every echo request (and resend), mirrored').to.be.at.least(seq);
    });

    it('a guest reaches a Linux vxlan device in another namespace through a VXLAN port (VNI 42)', async () => {
      const a = new Netns(`vka${TAG}`);
      const b = new Netns(`vkb${TAG}`);
      nss.push(a, b);
      a.ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', b.name);
      a.ip('addr', 'add', '10.99.1.1/24', 'dev', 'va');
      b.ip('addr', 'add', '10.99.1.2/24', 'dev', 'vb');
      a.ip('link', 'set', 'va', 'up');
      b.ip('link', 'set', 'vb', 'up');
      a.ip('link', 'add', 'vx0', 'type', 'vxlan', 'id', '42', 'local', '10.99.1.1', 'remote', '10.99.1.2', 'dstport', '4789', 'dev', 'va');
      a.ip('addr', 'add', '10.88.1.1/24', 'dev', 'vx0');
      a.ip('link', 'set', 'vx0', 'up');
      // The switch's end of the tunnel lives in namespace b (its socket is made there).
      const fd = b.udpSocket('10.99.1.2', 4789);
      const info = await sw.addVxlanPort({ remote: '10.99.1.1', vni: 42, socketFd: fd });
      const reply = await ask(g, arpRequest(GUEST, '10.88.1.2', '10.88.1.1'), (f) => arpReplyFrom(f, '10.88.1.1') !== null, 'ARP reply through the tunnel');
      const peerMac = arpReplyFrom(reply, '10.88.1.1')!;
      await ask(g, icmpEchoRequest(peerMac, GUEST, '10.88.1.2', '10.88.1.1', 9, 3), (f) => isEchoReply(f, '10.88.1.1', 9, 3), 'echo reply through the tunnel');
      const c = sw.counters(info.name);
      expect(c.tx_packets).to.be.at.least(2);
      expect(c.rx_packets).to.be.at.least(2);
      expect((await sw.fdb()).find((e) => e.mac === peerMac)?.portName).to.equal(info.name);
    });
  });
}
