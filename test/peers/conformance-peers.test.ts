// `vhostkit conformance` against other projects' backends, started by the tool itself with
// --spawn: qemu-storage-daemon (vhost-user-blk, QEMU 7.2) and dpdk-testpmd's vhost PMD
// (virtio-net, DPDK 22.11, forwarding back what it receives). The tool must run every case
// to the end whatever they do, start a crashed backend again, and report what it found:
// these assertions are their known faults as measured here (docs/conformance.md), so a
// change in either peer, or in a case, shows.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CASES } from '../../src/conformance/cases.js';
import { selectCases } from '../../src/conformance/runner.js';
import { createRawImage, dpdkRuntimeDir, makeTempDir, requirePeer, type TempDir } from '../lib/peers.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Doc {
  backend: { restarts: number };
  cases: Array<{ name: string; group: string; status: string; detail: string }>;
}

function conformance(args: string[]): Promise<{ code: number; doc: Doc; stderr: string }> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [cli, 'conformance', ...args, '--json'], { maxBuffer: 16 << 20, timeout: 600_000 }, (e, stdout, stderr) => {
      try {
        resolve({ code: e ? ((e as { code?: number }).code ?? -1) : 0, doc: JSON.parse(stdout) as Doc, stderr });
      } catch (pe) {
        reject(new Error(`no JSON document (exit ${(e as { code?: number } | null)?.code}): ${(pe as Error).message}\n${stderr.slice(-2000)}`));
      }
    }),
  );
}

const status = (d: Doc, name: string): { status: string; detail: string } => {
  const c = d.cases.find((x) => x.name === name);
  if (!c) throw new Error(`case ${name} not reported`);
  return c;
};

describe('vhostkit conformance against real peers', function () {
  this.timeout(600_000);
  let temp: TempDir;
  before(() => (temp = makeTempDir('vk-conf-peers-')));
  after(() => temp.cleanup());

  it('qemu-storage-daemon: every case reported; its crashes found with their signals and the daemon started again', async () => {
    const qsd = requirePeer('qemu-storage-daemon');
    const image = temp.join('disk.img');
    createRawImage(image, 64 << 20);
    const sock = temp.join('qsd.sock');
    const spawn = `exec ${qsd} --blockdev driver=file,node-name=f,filename=${image} --export type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${sock},writable=on`;
    const { code, doc } = await conformance([sock, '--type', 'blk', '--spawn', spawn]);
    console.log(`      qsd: ${summary(doc)}`);
    expect(code, 'exit code: crashes were found').to.equal(1);
    expect(doc.cases.map((c) => c.name)).to.deep.equal(selectCases(CASES, 'blk').map((c) => c.name));
    expect(doc.backend.restarts, 'started again after each crash').to.equal(doc.cases.filter((c) => c.status === 'crashed').length);
    // The rules it keeps.
    for (const n of ['get-features', 'reply-ack-every-message', 'get-vring-base', 'split-ring', 'indirect-descriptors', 'get-config', 'disconnect-at-every-step', 'rapid-cycles'])
      expect(status(doc, n).status, n).to.equal('passed');
    // Its known faults.
    expect(status(doc, 'memory-file-truncated')).to.include({ status: 'crashed' });
    expect(status(doc, 'memory-file-truncated').detail).to.match(/killed by SIGBUS/);
    expect(status(doc, 'vring-addr-queue-huge')).to.include({ status: 'crashed' });
    expect(status(doc, 'vring-addr-queue-huge').detail).to.match(/killed by SIGSEGV/);
    expect(status(doc, 'max-mem-slots')).to.include({ status: 'failed', detail: 'accepted region 33 beyond its limit of 32' });
    expect(status(doc, 'get-config-offset')).to.include({ status: 'failed' });
    expect(status(doc, 'get-config-offset').detail).to.match(/the offset is not honoured/);
  });

  it('dpdk-testpmd vhost PMD: every case reported, data moves; its fd leak and used-ring overrun found', async () => {
    const testpmd = requirePeer('dpdk-testpmd');
    const sock = temp.join('tpmd.sock');
    const prefix = `vkconf-${process.pid}`;
    const cpu = Math.min(1, (await import('node:os')).cpus().length - 1);
    const spawn =
      `exec ${testpmd} --no-huge -m 512 --no-pci --file-prefix ${prefix} --lcores 0@${cpu},1@${cpu} --vdev net_vhost0,iface=${sock},queues=1 ` +
      '-- --forward-mode=io --port-topology=loop --stats-period=1 --total-num-mbufs=16384 --nb-cores=1';
    try {
      const { code, doc } = await conformance([sock, '--type', 'net', '--spawn', spawn]);
      console.log(`      testpmd: ${summary(doc)}`);
      expect(code).to.equal(1);
      expect(doc.cases.map((c) => c.name)).to.deep.equal(selectCases(CASES, 'net').map((c) => c.name));
      for (const n of [
        'get-features',
        'reply-ack-every-message',
        'get-vring-base',
        'get-vring-base-packed',
        'split-ring',
        'packed-ring',
        'in-order',
        'in-order-packed',
        'event-idx-used-event',
        'event-idx-avail-event',
        'status',
        'disconnect-at-every-step',
      ])
        expect(status(doc, n).status, n).to.equal('passed');
      expect(status(doc, 'mem-table-huge').status).to.equal('leaked');
      expect(status(doc, 'avail-idx-jump')).to.include({ status: 'failed' });
      expect(status(doc, 'avail-idx-jump').detail).to.match(/used idx 1000: the device returned more entries than the ring of 64 holds/);
    } finally {
      rmSync(dpdkRuntimeDir(prefix), { recursive: true, force: true });
    }
  });
});

function summary(d: Doc): string {
  const counts = new Map<string, number>();
  for (const c of d.cases) counts.set(c.status, (counts.get(c.status) ?? 0) + 1);
  const notable = d.cases.filter((c) => c.status !== 'passed' && c.status !== 'rejected').map((c) => `${c.name}: ${c.status}`);
  return `${[...counts].map(([s, n]) => `${n} ${s}`).join(', ')}; ${notable.join('; ')}`;
}
