// `vhostkit run` with EVPN, once from an evpn section of its config file and once from its
// --vxlan / --evpn / --evpn-neighbor flags, in host 1's namespace, against FRR on host 3
// (advertise-all-vni, an endpoint behind br100): vhostkit starts its own gobgpd, the session
// comes up, `vhostkit ctl evpn` shows the neighbor established, FRR's routes in, its own out,
// FRR's VTEP in the VNI's flood list and FRR's endpoint behind it; /metrics says the same;
// the TAP endpoint pings FRR's; SIGTERM stops vhostkit and its gobgpd.
import { expect } from 'chai';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { FrrVtep } from '../lib/frr.js';
import { Netns, netnsUnavailable, pingCount } from '../lib/netns.js';
import { Underlay } from '../lib/underlay.js';
import { makeTempDir, vhostkitCli, type TempDir } from '../lib/peers.js';
import { until } from '../lib/wait.js';

const PID = process.pid.toString(36).slice(-4);
const NET = `10.${50 + (process.pid % 50)}.0`;
const H1 = `${NET}.1`;
const H3 = `${NET}.3`;
const VNI = 100;

function ctl(api: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [vhostkitCli, 'ctl', '--api', api, ...args], (err, stdout, stderr) => (err ? reject(new Error(`ctl ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout))),
  );
}

for (const how of ['config', 'flags'] as const)
  describe(`peers: vhostkit run with EVPN from its ${how === 'config' ? 'config file' : 'flags'}, and ctl evpn, against FRR`, function () {
    this.timeout(120_000);
    const TAG = `er${how[0]}${PID}`;
    let tmp: TempDir;
    let ul: Underlay;
    let h1: Netns;
    let t1: Netns;
    let ep: Netns;
    let frr: FrrVtep;
    let vk: ChildProcess | null = null;
    let vkErr = '';
    let api = '';
    let epMac = '';

    before(async () => {
      const why = netnsUnavailable();
      if (why) throw new Error(`cannot run: ${why}`);
      tmp = makeTempDir('vk-evpn-run-');
      ul = new Underlay(TAG, NET);
      h1 = ul.addHost(1);
      const h3 = ul.addHost(3);
      frr = new FrrVtep({ ns: h3, asn: 65000, routerId: H3, vtep: H3, underlayDev: 'eth0', neighbors: [H1], vnis: [VNI] });
      ({ ns: ep, mac: epMac } = frr.addEndpoint(`${TAG}e`, VNI, '10.26.0.3/24'));
      // br100 with an address: zebra learns the endpoint's neighbor entry and advertises its MAC+IP.
      h3.ip('addr', 'add', '10.26.0.254/24', 'dev', `br${VNI}`);
      await frr.start();
      api = `unix:${tmp.join('api.sock')}`;
      const ports: unknown[] = [{ kind: 'tap', name: 'tap', ifname: `${TAG}t0` }];
      // remote: the port's static remote until EVPN starts; EVPN sends by its routes.
      const vxlan = { kind: 'vxlan', name: 'vx100', remote: H1, local: H1, vni: VNI };
      const evpn = {
        asn: 65000,
        routerId: H1,
        neighbors: [{ address: H3 }],
        vnis: [{ vni: VNI, switch: 'sw0', port: 'vx100' }],
        gobgpDir: tmp.join('gobgp'),
        listenAddress: H1,
        arpSnooping: true,
        arpSuppression: true,
      };
      const config = { api, stateDir: tmp.join('state'), switches: [{ name: 'sw0', ports: how === 'config' ? [...ports, vxlan] : ports }], ...(how === 'config' ? { evpn } : {}) };
      writeFileSync(tmp.join('host.json'), JSON.stringify(config, null, 2));
      const flags =
        how === 'config'
          ? []
          : [
              '--vxlan',
              `name=vx100,remote=${H1},local=${H1},vni=${VNI}`,
              '--evpn',
              `asn=65000,router-id=${H1},listen=${H1},gobgp-dir=${tmp.join('gobgp')},arp-snooping,arp-suppression`,
              '--evpn-neighbor',
              H3,
            ];
      vk = spawn('ip', ['netns', 'exec', h1.name, process.execPath, vhostkitCli, 'run', '--config', tmp.join('host.json'), ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
      vk.stderr!.on('data', (d: Buffer) => (vkErr += d.toString()));
      await until('the API', 20_000, () => (existsSync(tmp.join('api.sock')) ? true : undefined));
      // The TAP vhostkit made in host 1's namespace goes to the endpoint's namespace.
      t1 = new Netns(`${TAG}t`);
      h1.ip('link', 'set', `${TAG}t0`, 'netns', t1.name);
      t1.ip('addr', 'add', '10.26.0.1/24', 'dev', `${TAG}t0`);
      t1.ip('link', 'set', `${TAG}t0`, 'up');
    });

    after(async () => {
      if (vk && vk.exitCode === null) {
        vk.kill('SIGTERM');
        await new Promise((r) => vk!.once('exit', r));
      }
      await frr?.stop();
      t1?.delete();
      ep?.delete();
      ul?.delete();
      tmp?.cleanup();
    });

    it('ctl evpn: the neighbor established, routes in and out, the flood VTEP and the remote MAC', async () => {
      expect(await until('pings', 40_000, () => (pingCount(t1, '10.26.0.3', 3) === 3 ? 3 : undefined))).to.equal(3);
      frr.ns.exec('busybox', 'ping', '-c', '1', '-W', '2', '10.26.0.3');
      const text = await until('ctl evpn to show FRR and its endpoint', 30_000, async () => {
        const t = await ctl(api, 'evpn');
        return t.includes('established') && t.includes(`remote ${epMac} via ${H3}`) && t.includes(`answers 10.26.0.3 with ${epMac}`) && / ip 10\.26\.0\.1\n/.test(t) ? t : undefined;
      });
      console.log(`      vhostkit ctl evpn:\n${text.replace(/^/gm, '        ')}`);
      expect(text).to.include(`AS 65000, router id ${H1}, VTEP ${H1}`);
      expect(text).to.match(new RegExp(`${H3.replace(/\./g, '\\.')}\\s+65000\\s+established`));
      expect(text).to.include(`[3]:[0]:[32]:[${H3}]`);
      expect(text).to.include(`[3]:[0]:[32]:[${H1}] rd ${H1}:${VNI} vni ${VNI} via ${H1}`);
      expect(text).to.include(`VNI ${VNI}: switch sw0, port vx100, VLAN 1`);
      expect(text).to.include(`flood VTEPs: ${H3}`);
      const j = JSON.parse(await ctl(api, '--json', 'evpn')) as { neighbors: Array<{ state: string }>; vnis: Array<{ localMacs: unknown[] }> };
      expect(j.neighbors[0].state).to.equal('established');
      expect(j.vnis[0].localMacs).to.have.length.greaterThan(0);
      // ctl fdb lists FRR's endpoint as EVPN installed it: on the VXLAN port, towards FRR's VTEP, never aged.
      const fdb = await until('ctl fdb to list the installed MAC', 10_000, async () => {
        const t = await ctl(api, 'fdb', 'sw0');
        return t.includes(epMac) ? t : undefined;
      });
      console.log(`      vhostkit ctl fdb sw0:\n${fdb.replace(/^/gm, '        ')}`);
      expect(fdb).to.match(/^MAC\s+VLAN\s+PORT\s+AGE\s+VTEP$/m);
      expect(fdb).to.match(new RegExp(`^${epMac}\\s+1\\s+vx100\\s+-\\s+${H3.replace(/\./g, '\\.')}$`, 'm'));
      const rows = JSON.parse(await ctl(api, '--json', 'fdb', 'sw0')) as Array<{ mac: string; portName: string; age: number; vtep?: string }>;
      expect(rows.find((r) => r.mac === epMac)).to.deep.include({ portName: 'vx100', age: 0, vtep: H3 });
      expect(rows.filter((r) => r.portName === 'tap').every((r) => r.vtep === undefined)).to.equal(true);
      const table = frr.vtysh('show bgp l2vpn evpn');
      expect(table).to.include(`Route Distinguisher: ${H1}:${VNI}`);
      expect(table).to.include(`[3]:[0]:[32]:[${H1}]`);
    });

    it('/metrics has the EVPN gauges', async () => {
      const m = await ctl(api, 'metrics');
      expect(m).to.include(`vhostkit_evpn_neighbor_up{neighbor="${H3}",asn="65000",state="established"} 1`);
      expect(m).to.include(`vhostkit_evpn_flood_vteps{switch="sw0",vni="${VNI}",port="vx100"} 1`);
      expect(m).to.match(/vhostkit_evpn_remote_macs\{switch="sw0",vni="100",port="vx100"\} [1-9]/);
      // ARP suppression answers for FRR's endpoint (10.26.0.3); snooping saw the TAP endpoint's 10.26.0.1.
      expect(m).to.match(/^vhostkit_evpn_suppressed_addresses\{switch="sw0",vni="100",port="vx100"\} [1-9]\d*$/m);
      expect(m).to.match(/^vhostkit_evpn_local_addresses\{switch="sw0",vni="100",port="vx100"\} [1-9]\d*$/m);
    });

    it("ctl vlan moves the VNI's port and the TAP to VLAN 2: FRR's endpoint is installed again there", async () => {
      expect(await ctl(api, 'vlan', 'vx100', '2')).to.include('port vx100: VLAN access 2');
      await ctl(api, 'vlan', 'tap', '2');
      await until('ctl evpn to show VLAN 2', 10_000, async () => ((await ctl(api, 'evpn')).includes(`VNI ${VNI}: switch sw0, port vx100, VLAN 2`) ? true : undefined));
      expect(await until('pings in VLAN 2', 20_000, () => (pingCount(t1, '10.26.0.3', 2) === 2 ? 2 : undefined))).to.equal(2);
      // ctl fdb lists the installed entry in VLAN 2 now; and the TAP port's flooded count says
      // it is used: echo requests to an installed MAC are not flooded (a round of pings with
      // none flooded; a stray multicast of the endpoint's may take another round).
      await until('ctl fdb to list the installed MAC in VLAN 2', 10_000, async () =>
        new RegExp(`^${epMac}\\s+2\\s+vx100\\s+-\\s+${H3.replace(/\./g, '\\.')}$`, 'm').test(await ctl(api, 'fdb', 'sw0')) ? true : undefined,
      );
      const flooded = async () => (JSON.parse(await ctl(api, '--json', 'ports', 'sw0')) as Array<{ name: string; counters: { flooded: number } }>).find((p) => p.name === 'tap')!.counters.flooded;
      await until('pings to the endpoint not flooded', 20_000, async () => {
        const before = await flooded();
        const n = pingCount(t1, '10.26.0.3', 3);
        return n === 3 && (await flooded()) === before ? true : undefined;
      });
    });

    it('SIGTERM stops vhostkit and the gobgpd it started', async () => {
      const log = readFileSync(tmp.join('gobgp', 'gobgpd.log'), 'utf8');
      expect(log).to.include('gobgpd started');
      vk!.kill('SIGTERM');
      const code = await new Promise<number | null>((r) => vk!.once('exit', (c) => r(c)));
      expect(code, vkErr.slice(-2000)).to.equal(0);
      // The session goes down at FRR once gobgpd is gone.
      await until('the session down at FRR', 30_000, () => (frr.vtysh('show bgp l2vpn evpn summary').includes('Established') ? undefined : true));
    });
  });
