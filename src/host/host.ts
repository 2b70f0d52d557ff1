// One process for a host: named switches with their ports, and disks, started from a
// HostConfig and changed at run time (the management API calls these methods). Port and
// disk names are one namespace: the API and `vhostkit ctl` address them by name alone.
import { log as rootLog, type Logger } from '../log.js';
import { Switch, type PortInfo } from '../switch/switch.js';
import type { QueueStat, VlanConfig } from '../switch/engine.js';
import type { FdbEntry } from '../switch/fdb.js';
import { VhostUserBackend } from '../vhost-user/backend.js';
import type { SessionLimits } from '../vhost-user/session.js';
import { openDisk, type Disk } from '../backends/blk/disk.js';
import type { BlkEngineStats } from '../native/blk.js';
import type { DataplaneThread } from '../switch/dataplane.js';
import type { DiskConfig, HostConfig, PortConfig, SwitchConfig } from './config.js';
import { resolveGroup } from '../native/socket-files.js';
import { Capture, type CaptureInfo, type CaptureOptions } from './capture.js';
import { EvpnService, type EvpnServiceStatus } from '../evpn/service.js';

/** A disk's counters: its engine's, and its device's polls (pollUs) and in-flight cap hold-backs. */
export type DiskStats = BlkEngineStats & {
  /** polls started after a kick's requests were done, and those that found a request */
  polls: number;
  pollHits: number;
  /** times a queue's chains were left in its ring because maxInFlight requests were in flight */
  heldBack: number;
};

export interface DiskInfo {
  name: string;
  socket: string;
  mode: 'server' | 'client';
  backing: string;
  sizeBytes: number;
  readOnly: boolean;
  queues: number;
  /** the request engine in use: 'threads' or 'io_uring' */
  engine: string;
  /** µs the io_uring engine polls the ring after a kick (0: off, and always 0 with threads) */
  pollUs: number;
  connected: boolean;
}

export interface SwitchInfo {
  name: string;
  poll: string;
  ports: string[];
  threads: DataplaneThread[];
}

interface HostSwitch {
  cfg: SwitchConfig;
  sw: Switch;
}

interface HostDisk {
  cfg: DiskConfig;
  disk: Disk;
  backend: VhostUserBackend;
}

/** The QEMU arguments that attach a guest to a vhost-user net port (idx: unique per guest command line). */
export function qemuNetArgs(p: { name: string; socket: string; mode: 'server' | 'client'; mac?: string; queuePairs?: number }, idx: number | string): string {
  const id = typeof idx === 'number' ? `${idx}` : idx;
  const chardev = p.mode === 'server' ? `-chardev socket,id=c${id},path=${p.socket},reconnect=1` : `-chardev socket,id=c${id},path=${p.socket},server=on,wait=off`;
  const q = p.queuePairs && p.queuePairs > 1 ? `,queues=${p.queuePairs}` : '';
  const mq = p.queuePairs && p.queuePairs > 1 ? `,mq=on,vectors=${2 * p.queuePairs + 2}` : '';
  return `${chardev} -netdev vhost-user,id=n${id},chardev=c${id}${q} -device virtio-net-pci,netdev=n${id}${p.mac ? `,mac=${p.mac}` : ''}${mq}`;
}

/** The QEMU arguments that attach a guest to a vhost-user-blk disk. */
export function qemuBlkArgs(d: { socket: string; mode: 'server' | 'client'; queues: number }, id: string): string {
  const chardev = d.mode === 'server' ? `-chardev socket,id=c${id},path=${d.socket},reconnect=1` : `-chardev socket,id=c${id},path=${d.socket},server=on,wait=off`;
  return `${chardev} -device vhost-user-blk-pci,chardev=c${id}${d.queues > 1 ? `,num-queues=${d.queues}` : ''}`;
}

/** What every guest of a vhost-user backend needs: its RAM shared with the backend. */
export const QEMU_MEMORY_ARGS = '-object memory-backend-memfd,id=mem,size=<RAM>,share=on -numa node,memdev=mem';

let macCounter = 0x10;

export class Host {
  readonly log: Logger;
  private readonly switches = new Map<string, HostSwitch>();
  private readonly disks = new Map<string, HostDisk>();
  /** port name -> switch name */
  private readonly portSwitch = new Map<string, string>();
  private readonly macs = new Map<string, string>();
  private readonly queuePairs = new Map<string, number>();
  private readonly captures = new Map<string, Capture>();
  private readonly socketMode: number;
  private readonly socketGroup: number | undefined;
  private readonly stateDir: string | null;
  private readonly limits: SessionLimits;
  private closing: Promise<void> | null = null;
  private evpn: EvpnService | null = null;

  private constructor(cfg: HostConfig, log: Logger) {
    this.log = log;
    this.socketMode = cfg.socketMode;
    this.socketGroup = cfg.socketGroup === undefined ? undefined : resolveGroup(cfg.socketGroup);
    this.stateDir = cfg.stateDir ?? null;
    this.limits = cfg.limits ?? {};
  }

  /** Starts everything in the configuration; if anything fails, what started is stopped and the error thrown. */
  static async start(cfg: HostConfig, opts: { log?: Logger } = {}): Promise<Host> {
    const h = new Host(cfg, opts.log ?? rootLog.child({ component: 'host' }));
    try {
      for (const s of cfg.switches) await h.addSwitch(s);
      for (const d of cfg.disks) await h.addDisk(d);
      if (cfg.evpn) {
        const aging = Object.fromEntries(cfg.switches.map((s) => [s.name, s.aging]));
        h.evpn = await EvpnService.start({ ...cfg.evpn, aging }, (name) => h.switch(name));
      }
    } catch (e) {
      await h.close();
      throw e;
    }
    return h;
  }

  // ---- switches and ports ----

  async addSwitch(cfg: SwitchConfig): Promise<SwitchInfo> {
    if (this.switches.has(cfg.name)) throw new HostError(409, `switch ${cfg.name} exists`);
    const sw = await Switch.create({
      agingSeconds: cfg.aging,
      dataplane: cfg.inline ? 'inline' : 'worker',
      hook: cfg.hook,
      poll: cfg.poll,
      cpus: cfg.cpus,
      threads: cfg.threads,
      log: this.log.child({ switch: cfg.name }),
      stateDir: this.stateDir ?? undefined,
      limits: this.limits,
    });
    this.switches.set(cfg.name, { cfg: { ...cfg, ports: [], flows: [] }, sw });
    try {
      for (const h of cfg.handlers ?? []) {
        try {
          await sw.addHandler(h.name, { module: h.module, export: h.export, options: h.options });
        } catch (e) {
          throw new HostError(400, `switch ${cfg.name}: handler ${h.name}: ${(e as Error).message}`);
        }
      }
      for (const p of cfg.ports) await this.addPort(cfg.name, p);
      // After the ports: flows name them (in_port=, output:).
      for (const [i, f] of (cfg.flows ?? []).entries()) {
        try {
          await sw.addFlow(f);
        } catch (e) {
          throw new HostError(400, `switch ${cfg.name}: flows[${i}]: ${(e as Error).message}`);
        }
      }
      if (cfg.flows?.length) this.log.info('flows added', { switch: cfg.name, flows: cfg.flows.length });
    } catch (e) {
      await this.removeSwitch(cfg.name);
      throw e;
    }
    return this.switchInfo(cfg.name);
  }

  async removeSwitch(name: string): Promise<void> {
    const s = this.getSwitch(name);
    for (const p of s.sw.list()) await this.removePort(p.name);
    this.switches.delete(name);
    await s.sw.close();
  }

  async addPort(swName: string, p: PortConfig): Promise<PortInfo> {
    const s = this.getSwitch(swName);
    if (this.portSwitch.has(p.name) || this.disks.has(p.name)) throw new HostError(409, `the name ${p.name} is taken`);
    let info: PortInfo;
    if (p.kind === 'vhost-user') {
      const mac = p.mac ?? `52:54:00:00:${((macCounter >> 8) & 0xff).toString(16).padStart(2, '0')}:${(macCounter++ & 0xff).toString(16).padStart(2, '0')}`;
      info = await s.sw.addVhostPort({
        name: p.name,
        socket: p.socket,
        mode: p.mode,
        mac,
        queuePairs: p.queues,
        mtu: p.mtu,
        packed: p.packed,
        vlan: p.vlan,
        socketMode: this.socketMode,
        socketGroup: this.socketGroup,
      });
      this.macs.set(p.name, mac);
      this.queuePairs.set(p.name, p.queues);
    } else if (p.kind === 'tap') {
      info = await s.sw.addTapPort({ name: p.name, ifname: p.ifname, offloads: p.offloads, vlan: p.vlan });
    } else {
      info = await s.sw.addVxlanPort({ name: p.name, remote: p.remote, vni: p.vni, local: p.local, dstport: p.dstport, vlan: p.vlan });
    }
    this.portSwitch.set(p.name, swName);
    return info;
  }

  async removePort(name: string): Promise<void> {
    const s = this.switchOf(name);
    if (this.captures.has(name)) await this.stopCapture(name);
    await s.sw.removePort(name);
    this.portSwitch.delete(name);
    this.macs.delete(name);
    this.queuePairs.delete(name);
  }

  async setVlan(name: string, vlan: VlanConfig): Promise<PortInfo> {
    const s = this.switchOf(name);
    try {
      await s.sw.setVlan(name, vlan);
    } catch (e) {
      throw new HostError(400, (e as Error).message);
    }
    return s.sw.port(name);
  }

  port(name: string): PortInfo & { switch: string } {
    const s = this.switchOf(name);
    return { ...s.sw.port(name), switch: s.cfg.name };
  }

  ports(swName?: string): Array<PortInfo & { switch: string }> {
    const out = [];
    for (const [n, s] of this.switches) {
      if (swName !== undefined && n !== swName) continue;
      for (const p of s.sw.list()) out.push({ ...p, switch: n });
    }
    if (swName !== undefined && !this.switches.has(swName)) throw new HostError(404, `no switch ${swName}`);
    return out;
  }

  async fdb(swName: string): Promise<Array<FdbEntry & { portName: string }>> {
    return this.getSwitch(swName).sw.fdb();
  }

  /** The switch's packet handlers: frames, runs, sends, errors. */
  async handlers(swName: string): Promise<Awaited<ReturnType<Switch['handlers']>>> {
    return this.getSwitch(swName).sw.handlers();
  }

  /** The switch's flow table, as ovs-ofctl dump-flows lists it. */
  async flows(swName: string): Promise<Awaited<ReturnType<Switch['dumpFlows']>>> {
    return this.getSwitch(swName).sw.dumpFlows();
  }

  /** Adds a flow in ovs-ofctl's syntax (or replaces the one of its priority and match); returns the table. */
  async addFlow(swName: string, flow: string): Promise<Awaited<ReturnType<Switch['dumpFlows']>>> {
    const sw = this.getSwitch(swName).sw;
    await sw.addFlow(flow);
    this.log.info('flow added', { switch: swName, flow });
    return sw.dumpFlows();
  }

  /** Removes the flows a match names (strict: the one of its priority); returns how many. */
  async delFlows(swName: string, match: string, strict: boolean): Promise<{ removed: number }> {
    const removed = await this.getSwitch(swName).sw.delFlows(match, strict);
    this.log.info('flows removed', { switch: swName, match, strict, removed });
    return { removed };
  }

  async switchInfo(name: string): Promise<SwitchInfo> {
    const s = this.getSwitch(name);
    return { name, poll: s.cfg.poll, ports: s.sw.list().map((p) => p.name), threads: await s.sw.dataplane.threads() };
  }

  /** Counters and ring fill of every guest queue of a switch. */
  async queueStats(swName: string): Promise<QueueStat[]> {
    return this.getSwitch(swName).sw.dataplane.queueStats();
  }

  async switchList(): Promise<SwitchInfo[]> {
    return Promise.all([...this.switches.keys()].map((n) => this.switchInfo(n)));
  }

  /** The switch object (embedders and tests). */
  switch(name: string): Switch {
    return this.getSwitch(name).sw;
  }

  // ---- disks ----

  async addDisk(cfg: DiskConfig): Promise<DiskInfo> {
    if (this.disks.has(cfg.name) || this.portSwitch.has(cfg.name)) throw new HostError(409, `the name ${cfg.name} is taken`);
    const disk = openDisk({
      file: cfg.file,
      ramBytes: cfg.ram,
      readOnly: cfg.readOnly,
      direct: cfg.direct,
      shared: cfg.shared,
      format: cfg.format,
      serial: cfg.serial,
      numQueues: cfg.queues,
      threads: cfg.threads,
      engine: cfg.engine,
      pollUs: cfg.pollUs,
      packed: cfg.packed,
      maxInFlight: cfg.maxInFlight,
    });
    const backend = new VhostUserBackend(disk.device, {
      socket: cfg.socket,
      mode: cfg.mode,
      socketMode: this.socketMode,
      socketGroup: this.socketGroup,
      log: this.log.child({ disk: cfg.name }),
      limits: this.limits,
    });
    try {
      await backend.start();
    } catch (e) {
      disk.close();
      throw e;
    }
    this.disks.set(cfg.name, { cfg, disk, backend });
    this.log.info('disk added', { disk: cfg.name, socket: cfg.socket, backing: cfg.file ?? `ram:${cfg.ram}`, readOnly: cfg.readOnly });
    return this.diskInfo(cfg.name);
  }

  /** Stops serving a disk: the session closes once in-flight requests are done, then the engine. */
  async removeDisk(name: string): Promise<void> {
    const d = this.disks.get(name);
    if (!d) throw new HostError(404, `no disk ${name}`);
    this.disks.delete(name);
    await d.backend.stop();
    d.disk.close();
    this.log.info('disk removed', { disk: name });
  }

  diskInfo(name: string): DiskInfo {
    const d = this.disks.get(name);
    if (!d) throw new HostError(404, `no disk ${name}`);
    return {
      name,
      socket: d.cfg.socket,
      mode: d.cfg.mode,
      backing: d.cfg.file ?? `ram`,
      sizeBytes: Number(d.disk.size),
      readOnly: d.cfg.readOnly,
      queues: d.cfg.queues,
      engine: d.disk.engine.engine,
      pollUs: d.disk.device.pollUs,
      connected: d.backend.session !== null,
    };
  }

  /**
   * Grows disk `name` to `size` bytes, or with no size re-reads its file's size (grown with
   * truncate): the capacity in its config space changes and a connected guest is told
   * (CONFIG_CHANGE_MSG). Shrinking, a size for a RAM disk's re-read, or a size that is not
   * a multiple of the block size: HostError 400, nothing changed.
   */
  resizeDisk(name: string, size?: bigint): DiskInfo & { oldSizeBytes: number; notified: boolean } {
    const d = this.disks.get(name);
    if (!d) throw new HostError(404, `no disk ${name}`);
    if (size === undefined && d.cfg.file === undefined) throw new HostError(400, `disk ${name} is a RAM disk: give the new size`);
    const s = d.backend.session;
    const sent = s?.configChangesSent ?? 0;
    let r: { oldBytes: bigint; newBytes: bigint };
    try {
      r = d.disk.resize(size);
    } catch (e) {
      throw new HostError(400, `disk ${name}: ${(e as Error).message}`);
    }
    const notified = s !== null && s.configChangesSent > sent;
    this.log.info('disk resized', { disk: name, oldBytes: String(r.oldBytes), newBytes: String(r.newBytes), notified });
    return { ...this.diskInfo(name), oldSizeBytes: Number(r.oldBytes), notified };
  }

  diskList(): DiskInfo[] {
    return [...this.disks.keys()].map((n) => this.diskInfo(n));
  }

  diskStats(name: string): DiskStats {
    const d = this.disks.get(name);
    if (!d) throw new HostError(404, `no disk ${name}`);
    const dev = d.disk.device;
    return { ...d.disk.engine.stats(), polls: dev.polls, pollHits: dev.pollHits, heldBack: dev.heldBack };
  }

  // ---- capture ----

  /** Captures a port (both directions) into a pcap file; with opts.count, stops by itself after that many frames. */
  async startCapture(port: string, file: string, opts: CaptureOptions = {}): Promise<CaptureInfo> {
    const s = this.switchOf(port);
    if (this.captures.get(port)?.info().running) throw new HostError(409, `port ${port} is already being captured`);
    let c: Capture;
    try {
      c = await Capture.start(s.sw, port, file, opts, () => this.log.info('capture ended', { port, file, packets: c.info().packets }));
    } catch (e) {
      throw new HostError(400, `capture of ${port} into ${file}: ${(e as Error).message}`);
    }
    this.captures.set(port, c);
    this.log.info('capture started', { port, file, count: opts.count ?? 0, snaplen: opts.snaplen ?? 65535 });
    return c.info();
  }

  async stopCapture(port: string): Promise<CaptureInfo> {
    const c = this.captures.get(port);
    if (!c) throw new HostError(404, `no capture on port ${port}`);
    this.captures.delete(port);
    await c.stop();
    return c.info();
  }

  /** Captures running, and those that ended by their count (until stopped or replaced). */
  captureList(): CaptureInfo[] {
    return [...this.captures.values()].map((c) => c.info());
  }

  // ---- QEMU arguments ----

  /** For each vhost-user port and disk: the QEMU arguments that attach a guest to it. */
  qemuLines(): Array<{ name: string; kind: 'net' | 'blk'; args: string }> {
    const out: Array<{ name: string; kind: 'net' | 'blk'; args: string }> = [];
    for (const p of this.ports()) {
      if (p.kind !== 'vhost-user') continue;
      out.push({ name: p.name, kind: 'net', args: qemuNetArgs({ ...p, mac: this.macs.get(p.name), queuePairs: this.queuePairs.get(p.name) }, `-${p.name}`) });
    }
    for (const d of this.diskList()) out.push({ name: d.name, kind: 'blk', args: qemuBlkArgs(d, `-${d.name}`) });
    return out;
  }

  // ---- stop ----

  /** BGP EVPN: neighbors, routes in and out, VTEPs and MACs per VNI (HostError 404 without an evpn section). */
  async evpnStatus(): Promise<EvpnServiceStatus> {
    if (!this.evpn) throw new HostError(404, 'EVPN is not configured (no evpn section)');
    return this.evpn.status();
  }

  /** Stops everything: no new sessions, in-flight block requests finished, sessions closed, sockets removed. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.evpn?.close().catch((e) => this.log.warn('evpn stop failed', { error: (e as Error).message }));
      this.evpn = null;
      for (const port of [...this.captures.keys()]) {
        await this.stopCapture(port).catch((e) => this.log.warn('capture stop failed', { port, error: (e as Error).message }));
      }
      // Disks first, concurrently: each drains its own in-flight requests.
      await Promise.all([...this.disks.keys()].map((n) => this.removeDisk(n).catch((e) => this.log.error('disk stop failed', { disk: n, error: (e as Error).message }))));
      for (const n of [...this.switches.keys()]) {
        await this.removeSwitch(n).catch((e) => this.log.error('switch stop failed', { switch: n, error: (e as Error).message }));
      }
    })();
    return this.closing;
  }

  private getSwitch(name: string): HostSwitch {
    const s = this.switches.get(name);
    if (!s) throw new HostError(404, `no switch ${name}`);
    return s;
  }

  private switchOf(port: string): HostSwitch {
    const n = this.portSwitch.get(port);
    if (n === undefined) throw new HostError(404, `no port ${port}`);
    return this.getSwitch(n);
  }
}

/** An error with the HTTP status the management API answers it with. */
export class HostError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}
