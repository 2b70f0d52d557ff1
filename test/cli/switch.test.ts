import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { ethFrame } from '../../src/virtio/net-frames.js';
import { parsePortSpec, parseVxlanSpec, qemuArgs } from '../../src/cli/switch.js';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

describe('vhostkit switch (CLI)', function () {
  this.timeout(20000);

  it('parses port specs', () => {
    expect(parsePortSpec('vm1=/run/vm1.sock')).to.deep.equal({ name: 'vm1', socket: '/run/vm1.sock' });
    expect(parsePortSpec('/run/x.sock,mode=client,queues=4,vlan=10')).to.deep.equal({ socket: '/run/x.sock', mode: 'client', queuePairs: 4, vlan: { mode: 'access', vid: 10 } });
    expect(parsePortSpec('t=/run/t.sock,trunk=10:20,native=1').vlan).to.deep.equal({ mode: 'trunk', allowed: [10, 20], native: 1 });
    expect(() => parsePortSpec('/x.sock,frob=1')).to.throw(/unknown option frob/);
    expect(parseVxlanSpec('remote=10.0.0.2,vni=42,dstport=4790')).to.deep.equal({ remote: '10.0.0.2', vni: 42, dstport: 4790 });
    expect(() => parseVxlanSpec('vni=1')).to.throw(/remote= is required/);
    expect(() => parseVxlanSpec('remote=1.2.3.4,vni=99999999')).to.throw(/vni=/);
    expect(qemuArgs({ name: 'a', socket: '/s', mode: 'server', mac: '52:54:00:00:00:01' }, 0)).to.equal(
      '-chardev socket,id=c0,path=/s,reconnect=1 -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01',
    );
  });

  it('switches frames between two ports, prints the QEMU arguments, and stops cleanly on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vk-cli-'));
    const s1 = join(dir, 'vm1.sock');
    const s2 = join(dir, 'vm2.sock');
    const child = spawn(process.execPath, [cli, 'switch', '--port', `vm1=${s1}`, '--port', s2], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', () => undefined);
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 10000;
      while (!(existsSync(s1) && existsSync(s2) && out.includes('port vm2')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(out).to.match(
        /port vm1: .*vm1\.sock \(server\)\n {2}qemu \.\.\. -chardev socket,id=c0,path=.*vm1\.sock,reconnect=1 -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56/,
      );
      expect(out).to.match(/memory-backend-memfd/);
      const a = await NetGuest.connect(s1);
      const b = await NetGuest.connect(s2);
      const f = ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:01', 100, 1);
      a.send([f]);
      const got = await b.receive(1, 5000);
      expect(got.map((x) => Buffer.from(x.frame).toString('hex'))).to.deep.equal([Buffer.from(f).toString('hex')]);
      a.close();
      b.close();
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
      expect(existsSync(s1) || existsSync(s2), 'sockets removed').to.equal(false);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
