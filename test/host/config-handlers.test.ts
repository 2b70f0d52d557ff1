// A switch's packet handlers in the configuration file (switches[].handlers): checked with
// the rest of the file (flows may send to them by name), loaded on the data-plane thread
// before the flows, reported by GET /v1/switches/SW/handlers and `ctl handlers`; never
// through the API, which cannot make the daemon import code.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, parseConfig } from '../../src/host/config.js';
import { apiRequest } from '../../src/cli/api-client.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { tcpFrame } from '../lib/packets.js';
import { cli, ctl, run, start, until, type Daemon } from './daemon.js';

const FIXTURE = fileURLToPath(new URL('../switch/fixtures/handlers.js', import.meta.url));

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
  { name: 'a', socket: 'a.sock' },
  { name: 'b', socket: 'b.sock' },
];

describe('switches[].handlers in the configuration', function () {
  this.timeout(60_000);

  it('resolves modules against the file, and flows may send to the handlers by name', () => {
    const c = parseConfig(
      { switches: [{ name: 'sw0', ports, handlers: [{ name: 'fw', module: 'lib/fw.js', export: 'firewall', options: { allow: [22] } }], flows: ['tcp,actions=handler:fw'] }] },
      '/base',
    );
    expect(c.switches[0].handlers).to.deep.equal([{ name: 'fw', module: '/base/lib/fw.js', export: 'firewall', options: { allow: [22] } }]);
    expect(
      problems({
        switches: [
          {
            name: 'sw0',
            ports,
            handlers: [{ name: 'fw', module: 'fw.js' }, { name: 'fw', module: 'other.js' }, { name: 'bad name', module: 'x.js' }, { name: 'nomodule' }],
            flows: ['tcp,actions=handler:lb'],
          },
        ],
      }),
    ).to.have.members([
      'switches[0].handlers[2].name: expected 1-64 letters, digits, _ . -, got "bad name"',
      'switches[0].handlers[3].module: required',
      'switches[0].flows[0]: no handler lb on this switch (its handlers: fw, nomodule)',
    ]);
    expect(
      problems({
        switches: [
          {
            name: 'sw0',
            ports,
            handlers: [
              { name: 'fw', module: 'fw.js' },
              { name: 'fw', module: 'other.js' },
            ],
          },
        ],
      }),
    ).to.deep.equal(['switches[0].handlers[1].name: fw is given twice']);
  });

  describe('vhostkit run --config', () => {
    let dir: string;
    let d: Daemon | null = null;
    const guests: NetGuest[] = [];
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'vk-cfg-handlers-'));
    });
    afterEach(() => {
      for (const g of guests.splice(0)) g.close();
      d?.child.kill('SIGKILL');
      d = null;
      rmSync(dir, { recursive: true, force: true });
    });

    it('loads the handlers, then the flows that use them; the API and ctl report them', async () => {
      const api = `unix:${join(dir, 'api.sock')}`;
      writeFileSync(
        join(dir, 'host.yaml'),
        [
          `api: "${api}"`,
          'stateDir: none',
          `socketDirs: ["${dir}"]`,
          'switches:',
          '  - name: sw0',
          '    ports:',
          '      - { name: a, socket: a.sock }',
          '      - { name: b, socket: b.sock }',
          '    handlers:',
          `      - { name: first, module: "${FIXTURE}", export: firstPacket }`,
          '    flows:',
          '      - "priority=100,tcp,actions=handler:first"',
        ].join('\n'),
      );
      expect((await run(process.execPath, [cli, 'run', '--config', join(dir, 'host.yaml'), '--check'])).stdout).to.include('1 flow(s)');
      d = start(['--config', join(dir, 'host.yaml')]);
      const dd = d;
      await until(() => dd.out().includes('QEMU'), 'the daemon to print its devices');
      const a = await NetGuest.connect(join(dir, 'a.sock'));
      const b = await NetGuest.connect(join(dir, 'b.sock'));
      guests.push(a, b);
      const f = tcpFrame(new Uint8Array(10), { dport: 443 }).frame;
      await until(() => a.send([f]) === 1, 'the frame to be sent');
      expect(
        (await b.receive(1, 3000)).map((x) => x.frame.length),
        'the handler sent it to b',
      ).to.deep.equal([f.length]);
      const r = await apiRequest(api, 'GET', '/v1/switches/sw0/handlers');
      expect(r.status).to.equal(200);
      expect(r.body).to.deep.equal([{ name: 'first', frames: 1, runs: 1, sent: 1, errors: 0, lastError: '', lost: 0 }]);
      const out = (await ctl(api, 'handlers', 'sw0')).out;
      expect(out.split('\n')[0]).to.match(/^HANDLER\s+FRAMES\s+RUNS\s+SENT\s+ERRORS\s+LOST\s+LAST ERROR/);
      expect(out.split('\n')[1]).to.match(/^first\s+1\s+1\s+1\s+0\s+0/);
      // The flow the handler added is in the dump with the file's.
      expect((await ctl(api, 'flow', 'dump', 'sw0')).out).to.include('priority=200,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=40000,tp_dst=443 actions=output:b');
      // No handler through the API: it would make the daemon import a module.
      const refused = await apiRequest(api, 'POST', '/v1/switches', { name: 'sw1', handlers: [{ name: 'x', module: FIXTURE, export: 'broken' }] });
      expect(refused.status).to.equal(403);
      expect(refused.text).to.include('handler modules through the API are refused');
    });

    it('a handler that cannot be loaded stops the start, naming it', async () => {
      writeFileSync(
        join(dir, 'host.json'),
        JSON.stringify({ api: 'none', stateDir: 'none', switches: [{ name: 'sw0', ports: [{ name: 'a', socket: 'a.sock' }], handlers: [{ name: 'x', module: FIXTURE, export: 'nothing' }] }] }),
      );
      d = start(['--config', join(dir, 'host.json')]);
      expect(await d.exited).to.not.equal(0);
      expect(d.err()).to.include('switch sw0: handler x: handler module');
      expect(d.err()).to.include('has no function export nothing');
    });
  });
});
