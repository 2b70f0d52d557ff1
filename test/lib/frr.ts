// FRR as the reference EVPN VTEP for tests (Debian's frr: zebra + bgpd, FRR 8.4): in a test's
// namespace, a Linux bridge and a kernel vxlan device (nolearning) per VNI, and bgpd with
// `advertise-all-vni`, so zebra advertises the bridge's MACs and installs the fabric's routes
// into the kernel's fdb. Its own config, pid and vty socket folder (owned by the frr user,
// which the daemons drop to). /work/shared/PEERS.md has the flags known to work here.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns } from './netns.js';

export interface FrrVtepOptions {
  ns: Netns;
  asn: number;
  routerId: string;
  /** The local VTEP address (on `underlayDev`). */
  vtep: string;
  underlayDev: string;
  /** iBGP neighbors (same AS). */
  neighbors: string[];
  vnis: number[];
}

function frrIds(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'frr']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'frr']).toString().trim());
  return { uid, gid };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class FrrVtep {
  readonly dir: string;
  readonly ns: Netns;

  constructor(readonly o: FrrVtepOptions) {
    this.ns = o.ns;
    this.dir = mkdtempSync(join(tmpdir(), 'vk-frr-'));
    chmodSync(this.dir, 0o755);
    const { uid, gid } = frrIds();
    chownSync(this.dir, uid, gid);
    for (const vni of o.vnis) {
      this.ns.ip('link', 'add', `br${vni}`, 'type', 'bridge');
      this.ns.ip('link', 'set', `br${vni}`, 'up');
      this.ns.ip('link', 'add', `vx${vni}`, 'type', 'vxlan', 'id', String(vni), 'local', o.vtep, 'dstport', '4789', 'nolearning', 'dev', o.underlayDev);
      this.ns.ip('link', 'set', `vx${vni}`, 'master', `br${vni}`, 'up');
    }
    writeFileSync(join(this.dir, 'zebra.conf'), `hostname frr-${o.routerId}\n`);
    const lines = [`hostname frr-${o.routerId}`, `router bgp ${o.asn}`, ` bgp router-id ${o.routerId}`, ' no bgp default ipv4-unicast', ' timers bgp 3 9'];
    for (const n of o.neighbors) lines.push(` neighbor ${n} remote-as ${o.asn}`, ` neighbor ${n} timers connect 5`);
    lines.push(' address-family l2vpn evpn');
    for (const n of o.neighbors) lines.push(`  neighbor ${n} activate`);
    lines.push('  advertise-all-vni', ' exit-address-family', '');
    writeFileSync(join(this.dir, 'bgpd.conf'), lines.join('\n'));
    for (const f of ['zebra.conf', 'bgpd.conf']) chownSync(join(this.dir, f), uid, gid);
  }

  #daemon(name: 'zebra' | 'bgpd'): void {
    const d = this.dir;
    this.ns.exec(`/usr/lib/frr/${name}`, '-d', '-f', join(d, `${name}.conf`), '-i', join(d, `${name}.pid`), '-z', join(d, 'zserv.api'), '--vty_socket', d, '-A', '127.0.0.1', '-P', '0');
  }

  /** zebra, then bgpd; resolves once vtysh reaches both. */
  async start(): Promise<void> {
    this.#daemon('zebra');
    await this.#waitFor(join(this.dir, 'zebra.vty'));
    await this.startBgpd();
  }

  async startBgpd(): Promise<void> {
    this.#daemon('bgpd');
    await this.#waitFor(join(this.dir, 'bgpd.vty'));
  }

  async #waitFor(path: string): Promise<void> {
    for (let i = 0; i < 100 && !existsSync(path); i++) await sleep(100);
    if (!existsSync(path)) throw new Error(`FRR: ${path} never appeared`);
  }

  vtysh(cmd: string): string {
    return execFileSync('vtysh', ['--vty_socket', this.dir, '-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  }

  vtyshJson<T>(cmd: string): T {
    return JSON.parse(this.vtysh(`${cmd} json`)) as T;
  }

  /** A Linux endpoint behind br<vni>: namespace `name` with eth0 at `cidr`; its namespace and MAC. */
  addEndpoint(name: string, vni: number, cidr: string): { ns: Netns; mac: string } {
    const ns = new Netns(name);
    this.ns.ip('link', 'add', 'ep0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name);
    this.ns.ip('link', 'set', 'ep0', 'master', `br${vni}`, 'up');
    ns.ip('addr', 'add', cidr, 'dev', 'eth0');
    ns.ip('link', 'set', 'eth0', 'up');
    return { ns, mac: /link\/ether ([0-9a-f:]{17})/.exec(ns.ip('link', 'show', 'eth0'))![1] };
  }

  /** The kernel's fdb entries of vx<vni>, as `bridge fdb show` prints them. */
  kernelFdb(vni: number): string {
    return this.ns.exec('bridge', 'fdb', 'show', 'dev', `vx${vni}`);
  }

  async #kill(name: 'zebra' | 'bgpd'): Promise<void> {
    const pidFile = join(this.dir, `${name}.pid`);
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!(pid > 0)) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
    for (let i = 0; i < 50; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        rmSync(pidFile, { force: true });
        return;
      }
      await sleep(100);
    }
    process.kill(pid, 'SIGKILL');
    rmSync(pidFile, { force: true });
  }

  /** Stops bgpd alone (its sessions drop; zebra and the kernel devices stay). */
  async stopBgpd(): Promise<void> {
    await this.#kill('bgpd');
    rmSync(join(this.dir, 'bgpd.vty'), { force: true });
  }

  async stop(): Promise<void> {
    await this.#kill('bgpd');
    await this.#kill('zebra');
    rmSync(this.dir, { recursive: true, force: true });
  }
}
