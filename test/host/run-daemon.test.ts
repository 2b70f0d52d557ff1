// `vhostkit run` as a user runs it: a config file with a switch, two ports and a disk; the
// management API and `vhostkit ctl` through real HTTP on a Unix socket; /metrics after
// traffic; socket modes; SIGTERM with block requests in flight.
import { expect } from 'chai';
import { existsSync, lstatSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame } from '../../src/virtio/net-frames.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { BlkClient, BlkReqType, BlkStatus } from '../lib/blk-client.js';
import { bit, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX } from '../../src/virtio/features.js';
import { apiRequest } from '../../src/cli/ctl.js';
import { ctl, metric, run, start, until, type Daemon } from './daemon.js';

describe('vhostkit run: one process for a host, its management API and ctl', function () {
  this.timeout(60000);
  let dir: string;
  let d: Daemon | null = null;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-run-'));
  });
  afterEach(() => {
    d?.child.kill('SIGKILL');
    d = null;
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports every configuration problem with the path of its key, before starting anything', async () => {
    const cfg = join(dir, 'host.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        switches: [
          {
            name: 'sw0',
            poll: 'fast',
            ports: [
              { name: 'a', socket: 'a.sock', mac: 'zz:00' },
              { name: 'a', socket: 'b.sock', vlan: 5000 },
            ],
          },
        ],
        disks: [{ name: 'd0', socket: 'a.sock', file: 'x.img', ram: '1G' }],
        frob: 1,
      }),
    );
    const r = start(['--config', cfg]);
    expect(await r.exited).to.equal(2);
    const err = r.err();
    expect(err).to.include('frob: unknown key');
    expect(err).to.include('switches[0].poll: expected one of busy, event, adaptive, got "fast"');
    expect(err).to.include('switches[0].ports[0].mac: expected a MAC address');
    expect(err).to.include('switches[0].ports[1].vlan: expected a VLAN id 1..4094, got 5000');
    expect(err).to.match(/switches\[0\]\.ports\[1\]: name "a" is used twice/);
    expect(err).to.include('disks[0].file: give exactly one of file and ram');
    expect(err).to.match(/disks\[0\]\.socket: socket ".*a\.sock" is already used/);
    expect(existsSync(join(dir, 'a.sock')), 'nothing started').to.equal(false);
  });

  it('serves a switch with two ports and a RAM disk from a YAML file; ctl lists, adds, sets VLANs, dumps the FDB; /metrics counts the traffic; SIGTERM cleans up', async () => {
    const api = `unix:${join(dir, 'api.sock')}`;
    writeFileSync(
      join(dir, 'host.yaml'),
      [
        'switches:',
        '  - name: sw0',
        '    ports:',
        '      - { name: vm1, socket: vm1.sock, mac: "52:54:00:00:00:01" }',
        '      - { name: vm2, socket: vm2.sock, vlan: 1 }',
        'disks:',
        '  - { name: disk0, socket: disk0.sock, ram: 16M, serial: vk-disk0 }',
        `api: "${api}"`,
        `captureDir: "${dir}"`,
        `imageDirs: ["${dir}"]`,
      ].join('\n'),
    );
    d = start(['--config', join(dir, 'host.yaml')]);
    const dd = d;
    await until(() => dd.out().includes('QEMU'), 'the daemon to print its devices');
    const out = d.out();
    expect(out).to.include('memory-backend-memfd,id=mem,size=<RAM>,share=on');
    expect(out).to.match(/vm1:\n {2}-chardev socket,id=c-vm1,path=.*vm1\.sock,reconnect=1 -netdev vhost-user,id=n-vm1,chardev=c-vm1 -device virtio-net-pci,netdev=n-vm1,mac=52:54:00:00:00:01/);
    expect(out).to.match(/disk0:\n {2}-chardev socket,id=c-disk0,path=.*disk0\.sock,reconnect=1 -device vhost-user-blk-pci,chardev=c-disk0/);
    for (const s of ['vm1.sock', 'vm2.sock', 'disk0.sock', 'api.sock']) expect(lstatSync(join(dir, s)).mode & 0o777, s).to.equal(0o600);

    const st = await ctl(api, 'status');
    expect(st.code).to.equal(0);
    expect(JSON.parse(st.out)).to.include({ ports: 2, disks: 1 });
    // A port added at run time; the name space is shared by ports and disks.
    expect((await ctl(api, 'port-add', 'sw0', `vm3=${join(dir, 'vm3.sock')},mac=52:54:00:00:00:03`)).code).to.equal(0);
    const dup = await ctl(api, 'port-add', 'sw0', `disk0=${join(dir, 'x.sock')}`);
    expect(dup.code).to.equal(1);
    expect(dup.err).to.include('the name disk0 is taken');
    expect((await ctl(api, 'vlan', 'vm3', '20')).code).to.equal(0);
    const ports = await ctl(api, 'ports');
    expect(ports.out).to.match(/vm3 +sw0 +vhost-user .*access 20/);
    expect((await ctl(api, 'port-del', 'nope')).err).to.include('no port nope');

    const a = await NetGuest.connect(join(dir, 'vm1.sock'));
    const b = await NetGuest.connect(join(dir, 'vm2.sock'));
    try {
      a.send([ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:0a', 100, 1), ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:0a', 200, 2)]);
      expect((await b.receive(2, 5000)).length).to.equal(2);
      const fdb = await ctl(api, 'fdb', 'sw0');
      expect(fdb.out).to.match(/02:00:00:00:00:0a +1 +vm1/);
      const text = (await ctl(api, 'metrics')).out;
      expect(metric(text, 'vhostkit_port_rx_packets_total', { port: 'vm1' })).to.equal(2);
      expect(metric(text, 'vhostkit_port_rx_bytes_total', { port: 'vm1' })).to.equal(300);
      expect(metric(text, 'vhostkit_port_tx_packets_total', { port: 'vm2' })).to.equal(2);
      expect(metric(text, 'vhostkit_port_drops_total', { port: 'vm3', reason: 'vlan' })).to.equal(0);
      expect(metric(text, 'vhostkit_queue_packets_total', { port: 'vm1', queue: '1', direction: 'tx' })).to.equal(2);
      expect(metric(text, 'vhostkit_queue_packets_total', { port: 'vm2', queue: '0', direction: 'rx' })).to.equal(2);
      expect(metric(text, 'vhostkit_queue_size', { port: 'vm2', queue: '0' })).to.be.greaterThan(0);
      expect(metric(text, 'vhostkit_dataplane_busy_seconds_total', { switch: 'sw0' })).to.be.a('number');
      expect(metric(text, 'vhostkit_disk_size_bytes', { disk: 'disk0' })).to.equal(16 << 20);
      expect(text).to.match(/^vhostkit_disk_request_latency_seconds_bucket\{disk="disk0",le="\+Inf"\} 0$/m);
      expect(metric(text, 'vhostkit_disk_polls_total', { disk: 'disk0', result: 'hit' })).to.equal(0);
      expect(metric(text, 'vhostkit_disk_held_back_total', { disk: 'disk0' })).to.equal(0);
      // The standard process metrics (prom-client): this process's memory and open fds.
      expect(metric(text, 'process_resident_memory_bytes', {})).to.be.greaterThan(10 << 20);
      expect(metric(text, 'process_open_fds', {})).to.be.greaterThan(3);
      expect(text).to.match(/^# TYPE nodejs_eventloop_lag_seconds gauge$/m);
      expect(text.match(/^# TYPE (\S+)/gm)?.length, 'each metric declared once').to.equal(new Set(text.match(/^# TYPE (\S+)/gm)).size);
      const q = await ctl(api, 'queues', 'sw0');
      expect(q.out).to.match(/vm2 +0 rx +2 +/);
      // Capture vm2, both directions, stopping by itself after 3 frames; tcpdump reads the file.
      const pcap = join(dir, 'vm2.pcap');
      const cap = await ctl(api, 'capture', 'start', 'vm2', pcap, '--count', '3');
      expect(cap.code, cap.err).to.equal(0);
      a.send([ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:0a', 120, 3), ethFrame('02:00:00:00:00:0b', '02:00:00:00:00:0a', 130, 4)]);
      expect((await b.receive(1, 5000)).length).to.be.at.least(1);
      b.send([ethFrame('02:00:00:00:00:0a', '02:00:00:00:00:0b', 140, 5)]);
      expect((await a.receive(1, 5000)).length).to.equal(1);
      a.send([ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:0a', 150, 6)]); // the 4th: not captured
      let caps: Array<{ running: boolean; packets: number }> = [];
      for (let i = 0; i < 100 && !(caps.length > 0 && !caps[0].running); i++) {
        caps = (await apiRequest(api, 'GET', '/v1/captures')).body as typeof caps;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(caps).to.deep.include({ port: 'vm2', file: pcap, snaplen: 65535, packets: 3, count: 3, running: false });
      const td = await run('tcpdump', ['-r', pcap, '-nn', '-e']);
      const lines = td.stdout.split('\n').filter((l) => /^\d\d:\d\d:\d\d/.test(l)); // one per packet (hex dumps of unknown ethertypes follow)
      expect(lines).to.have.length(3);
      expect(lines[0]).to.match(/02:00:00:00:00:0a > ff:ff:ff:ff:ff:ff, .*length 120/);
      expect(lines[1]).to.match(/02:00:00:00:00:0a > 02:00:00:00:00:0b, .*length 130/);
      expect(lines[2]).to.match(/02:00:00:00:00:0b > 02:00:00:00:00:0a, .*length 140/);
      // Without a count: runs until stopped.
      const pcap2 = join(dir, 'vm1.pcap');
      expect((await ctl(api, 'capture', 'start', 'vm1', pcap2)).code).to.equal(0);
      expect((await ctl(api, 'capture', 'start', 'vm1', pcap2)).err).to.include('already being captured');
      a.send([ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:0a', 99, 7)]);
      await b.receive(1, 5000);
      const stop = await ctl(api, 'capture', 'stop', 'vm1');
      expect(stop.out).to.include('1 packet(s), stopped');
      expect((await run('tcpdump', ['-r', pcap2, '-nn'])).stdout.split('\n').filter((l) => /^\d\d:\d\d:\d\d/.test(l))).to.have.length(1);
    } finally {
      a.close();
      b.close();
    }
    // Disks through the API: add one, read its counters, remove it.
    expect((await ctl(api, 'disk-add', `disk1=${join(dir, 'disk1.sock')},ram=1M,readonly`)).code).to.equal(0);
    const disks = await ctl(api, 'disks');
    expect(disks.out).to.match(/disk1 +.*disk1\.sock +no +ram +1048576 +yes/);
    const bad = await apiRequest(api, 'POST', '/v1/disks', { socket: join(dir, 'disk2.sock'), ram: '1000' });
    expect(bad.status).to.equal(400);
    expect((bad.body as { error: string }).error).to.include('disk.ram: expected a size that is a multiple of 512 bytes');
    const missing = await apiRequest(api, 'POST', '/v1/disks', { socket: join(dir, 'disk3.sock'), file: join(dir, 'nope.img') });
    expect(missing.status, "a missing image is the request's fault").to.equal(400);
    expect((missing.body as { error: string }).error).to.include('ENOENT');
    expect(existsSync(join(dir, 'disk3.sock'))).to.equal(false);
    expect((await ctl(api, 'disk-del', 'disk1')).code).to.equal(0);
    expect(existsSync(join(dir, 'disk1.sock'))).to.equal(false);
    expect((await apiRequest(api, 'GET', '/v1/nothing')).status).to.equal(404);

    d.child.kill('SIGTERM');
    expect(await d.exited).to.equal(0);
    for (const s of ['vm1.sock', 'vm2.sock', 'vm3.sock', 'disk0.sock', 'api.sock']) expect(existsSync(join(dir, s)), `${s} removed`).to.equal(false);
    const stopLine = d
      .err()
      .split('\n')
      .find((l) => l.includes('"msg":"stopping"'));
    expect(stopLine, 'a log line for the stop').to.be.a('string');
    expect(JSON.parse(stopLine!)).to.include({ level: 'info', msg: 'stopping', signal: 'SIGTERM' });
  });

  it('SIGTERM with block requests in flight: they complete before the session closes; exit 0', async () => {
    d = start(['--disk', `d0=${join(dir, 'd0.sock')},ram=64M,threads=1`, '--api', 'none']);
    const dd = d;
    await until(() => existsSync(join(dir, 'd0.sock')) && dd.out().includes('QEMU'), 'the disk socket');
    const fe = await VhostUserFrontend.connect(join(dir, 'd0.sock'));
    try {
      await fe.negotiate({ features: bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VHOST_USER_F_PROTOCOL_FEATURES) });
      await fe.setupMemory(16 << 20);
      const q = await fe.startQueue(0, { size: 256 });
      const blk = new BlkClient(q);
      expect((await blk.write(0n, new Uint8Array(4096).fill(7))).status).to.equal(BlkStatus.OK);
      // 64 writes of 64 KiB queued at once, then the signal.
      const ids = [];
      for (let i = 0; i < 64; i++) ids.push(blk.submit(BlkReqType.OUT, BigInt(i * 128), { data: new Uint8Array(65536).fill(i) }));
      q.publishAndKick();
      d.child.kill('SIGTERM');
      expect(await d.exited).to.equal(0);
      // Everything submitted was completed with OK before the backend went away.
      const used = q.driver.used();
      expect(used.length, 'requests completed').to.equal(64);
      for (const u of used) expect(blk.result(u.id, u.len).status).to.equal(BlkStatus.OK);
    } finally {
      fe.close();
    }
    expect(existsSync(join(dir, 'd0.sock'))).to.equal(false);
  });

  it('a second signal exits at once (exit 1), even while the first stop is under way', async () => {
    // An inline switch whose hook holds the main thread for 1.5 s when a frame comes: both
    // signals are handled after it, the first starts the stop, the second ends the process.
    writeFileSync(join(dir, 'slow-hook.mjs'), 'export default function () { const t = Date.now(); while (Date.now() - t < 1500) {} }\n');
    writeFileSync(join(dir, 'host.json'), JSON.stringify({ api: 'none', switches: [{ name: 'sw0', inline: true, hook: 'slow-hook.mjs', ports: [{ name: 'a', socket: 'a.sock' }] }] }));
    d = start(['--config', join(dir, 'host.json')]);
    const dd = d;
    await until(() => dd.out().includes('QEMU'), 'the port');
    const g = await NetGuest.connect(join(dir, 'a.sock'));
    try {
      g.send([ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:0a', 60, 1)]);
      await new Promise((r) => setTimeout(r, 300)); // the hook is running now
      d.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      d.child.kill('SIGTERM');
      expect(await d.exited).to.equal(1);
      expect(d.err()).to.include('second signal: exiting now');
    } finally {
      g.close();
    }
  });

  it('creates sockets 0600 by default, with --socket-mode / --socket-group when asked; never follows a symlink or replaces a file', async () => {
    writeFileSync(join(dir, 'target'), 'not a socket');
    symlinkSync(join(dir, 'target'), join(dir, 'link.sock'));
    const r = start(['--port', `l=${join(dir, 'link.sock')}`, '--api', 'none']);
    expect(await r.exited).to.equal(2);
    expect(r.err()).to.include('link.sock exists and is not a socket; refusing to replace it');
    expect(lstatSync(join(dir, 'link.sock')).isSymbolicLink()).to.equal(true);
    d = start(['--port', `p=${join(dir, 'p.sock')}`, '--api', `unix:${join(dir, 'api.sock')}`, '--socket-mode', '0660', '--socket-group', '0']);
    const dd = d;
    await until(() => dd.out().includes('QEMU'), 'the port');
    for (const s of ['p.sock', 'api.sock']) {
      const st = lstatSync(join(dir, s));
      expect(st.mode & 0o777, s).to.equal(0o660);
      expect(st.gid, s).to.equal(0);
    }
    d.child.kill('SIGINT');
    expect(await d.exited).to.equal(0);
  });
});
