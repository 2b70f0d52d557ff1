// The software L2 switch: ports (vhost-user virtio-net, TAP, VXLAN), MAC
// learning with aging, flooding, 802.1Q VLANs, per-port counters, a dataplane hook. This
// is the control plane, on the caller's thread; forwarding runs in the data plane.
import type { PollMode } from '../dataplane/poller.js';
import { basename } from 'node:path';
import { log as rootLog, type Logger } from '../log.js';
import { VhostUserBackend } from '../vhost-user/backend.js';
import { ringRecordPath } from '../vhost-user/ring-record.js';
import type { SessionLimits } from '../vhost-user/session.js';
import { NetDevice } from '../backends/net/device.js';
import { createDataplane, dataplaneThreads, type Dataplane, type HookModule } from './dataplane.js';
import type { BurstHook, VlanConfig } from './engine.js';
import { parseFlow } from './flows.js';
import type { FlowEntry } from './flow-table.js';
import type { HandlerModule, HandlerStats, PacketHandler } from './handlers.js';
import { newCounters, readCounters, type PortCounters } from './counters.js';
import { macFromString, macToString, type FdbEntry } from './fdb.js';
import type { CaptureSink, CaptureSpec } from './capture.js';
import { close as closeHostFd, openTap, sockaddr, udpSocket, VXLAN_PORT } from '../native/host-io.js';
import type { NetPortDataplane } from '../backends/net/port-dataplane.js';

export interface SwitchOptions {
  /** MAC aging in seconds (default 300) */
  agingSeconds?: number;
  /** 'worker' (default): forwarding on its own thread; 'inline': on this thread */
  dataplane?: 'worker' | 'inline';
  /** a dataplane hook: a module for the worker, or (inline only) a function */
  hook?: BurstHook | HookModule;
  burst?: number;
  /** how the data plane waits for the guests' frames: busy, event (default), adaptive */
  poll?: PollMode;
  /**
   * Pin the data plane to these CPUs (worker data plane only): one thread on each, unless
   * `threads` says how many (then thread k on the k-th CPU, round robin).
   */
  cpus?: number[];
  /** data-plane threads (worker only; default: one per CPU of `cpus`, else 1); a guest's queue pairs are spread over them */
  threads?: number;
  log?: Logger;
  /**
   * Directory for the vhost-user ports' ring records (ring-record.ts), one file per
   * socket: with it, packed-ring ports survive a restart of this process (kill -9
   * included), which QEMU cannot recover from alone. Unset: no records.
   */
  stateDir?: string;
  /** what one frontend may make a vhost-user port's session hold (SessionLimits) */
  limits?: SessionLimits;
}

export interface VhostPortOptions {
  /** port name (default: the socket's basename) */
  name?: string;
  socket: string;
  /** 'server' (default): we listen; 'client': we connect to QEMU's socket (server=on) */
  mode?: 'server' | 'client';
  /** MAC for the config space (default: 52:54:00 + a counter) */
  mac?: string;
  queuePairs?: number;
  mtu?: number;
  vlan?: VlanConfig;
  /** offer the packed ring (default true) */
  packed?: boolean;
  /** permission bits of the socket file (server mode; default 0o600) */
  socketMode?: number;
  /** group (gid) of the socket file (server mode) */
  socketGroup?: number;
  /** ring record file (default: in SwitchOptions.stateDir, if set; false: none) */
  ringRecord?: string | false;
}

export interface TapPortOptions {
  /** port name (default: the interface name) */
  name?: string;
  /** TAP interface name (created if it does not exist; the kernel picks one if empty) */
  ifname: string;
  /** let the host stack take checksum/TSO offloads (IFF_VNET_HDR + TUNSETOFFLOAD; default true) */
  offloads?: boolean;
  vlan?: VlanConfig;
}

export interface VxlanPortOptions {
  name?: string;
  /** the remote VTEP (a Linux vxlan device or OVS) */
  remote: string;
  vni: number;
  /** local address to bind (default 0.0.0.0, or :: for an IPv6 remote) */
  local?: string;
  /** UDP port (default 4789) */
  dstport?: number;
  vlan?: VlanConfig;
  /** a bound UDP socket to use instead of opening one (e.g. made in another namespace); the switch owns it */
  socketFd?: number;
}

export interface PortInfo {
  id: number;
  name: string;
  kind: 'vhost-user' | 'tap' | 'vxlan';
  /** vhost-user: the socket; tap: the interface; vxlan: remote:port/vni */
  socket: string;
  mode: 'server' | 'client';
  vlan: VlanConfig;
  connected: boolean;
  counters: PortCounters;
}

interface Port {
  id: number;
  name: string;
  kind: 'vhost-user' | 'tap' | 'vxlan';
  socket: string;
  mode: 'server' | 'client';
  vlan: VlanConfig;
  counters: Float64Array;
  backend: VhostUserBackend | null;
  device: NetDevice | null;
  /** TAP / UDP fd (closed when the port goes) */
  fd: number;
  /** VXLAN: the UDP port of its remotes, and its remote VTEPs by address (EVPN) with their index in the data plane */
  dstport?: number;
  vteps?: Map<string, { index: number; flood: boolean }>;
}

/** An fdb entry installed by a control plane (EVPN): a MAC behind a remote VTEP of a VXLAN port. */
export interface RemoteMac {
  mac: string;
  vlan: number;
  portName: string;
  vtep: string;
}

let macCounter = 1;

export class Switch {
  readonly log: Logger;
  private readonly ports = new Map<string, Port>();
  /** packet handlers by name: the id flows send to (handler:NAME) */
  private readonly handlerIds = new Map<string, number>();
  private nextHandlerId = 1;
  private nextId = 1;

  private constructor(
    private readonly dp: Dataplane,
    log: Logger,
    private readonly stateDir: string | null,
    private readonly limits: SessionLimits | undefined,
    private readonly inline: boolean,
  ) {
    this.log = log;
  }

  static async create(opts: SwitchOptions = {}): Promise<Switch> {
    const log = (opts.log ?? rootLog).child({ component: 'switch' });
    let sw: Switch | null = null;
    const dp = await createDataplane({
      thread: opts.dataplane === 'inline' ? 'inline' : 'worker',
      burst: opts.burst,
      agingMs: (opts.agingSeconds ?? 300) * 1000,
      hook: opts.hook ?? null,
      poll: opts.poll,
      cpus: opts.cpus,
      threads: dataplaneThreads(opts),
      onError: (message: string) => sw?.log.error(message),
      onQueueError: (port: number, index: number, reason: string) => sw?.onQueueError(port, index, reason),
      onHandlerError: (handler: string, message: string) => sw?.log.error('packet handler threw: its frames of that run are dropped', { handler, error: message }),
    });
    sw = new Switch(dp, log, opts.stateDir ?? null, opts.limits, opts.dataplane === 'inline');
    return sw;
  }

  /** The data plane (inline mode exposes the engine for tests and embedders). */
  get dataplane(): Dataplane {
    return this.dp;
  }

  /** Adds a vhost-user virtio-net port; resolves once it listens (server) or is connecting (client). */
  async addVhostPort(o: VhostPortOptions): Promise<PortInfo> {
    const name = o.name ?? basename(o.socket).replace(/\.sock$/, '');
    if (this.ports.has(name)) throw new Error(`port ${name} exists`);
    const id = this.nextId++;
    const vlan = o.vlan ?? { mode: 'access', vid: 1 };
    validateVlan(vlan);
    const counters = newCounters(this.dp.threadCount);
    await this.dp.addPort(id, name, vlan, counters);
    const mac = o.mac ?? `52:54:00:00:${((macCounter >> 8) & 0xff).toString(16).padStart(2, '0')}:${(macCounter++ & 0xff).toString(16).padStart(2, '0')}`;
    const dp = this.dp;
    const portDataplane: NetPortDataplane = {
      setMemory: (token) => dp.setMemory(id, token),
      releaseMemory: () => dp.releaseMemory(id),
      startQueue: (spec) => dp.startQueue({ ...spec, port: id }),
      stopQueue: (index) => dp.stopQueue(id, index),
      setMtu: (mtu) => dp.setMtu(id, mtu),
      pause: () => dp.pause(),
      resume: () => dp.resume(),
      inject: (frame) => dp.inject(id, frame),
    };
    const device = new NetDevice(portDataplane, { mac, queuePairs: o.queuePairs, mtu: o.mtu, packed: o.packed, log: this.log.child({ port: name }) });
    const backend = new VhostUserBackend(device, {
      socket: o.socket,
      mode: o.mode ?? 'server',
      socketMode: o.socketMode,
      socketGroup: o.socketGroup,
      log: this.log.child({ port: name }),
      limits: this.limits,
      ringRecord: o.ringRecord === false ? undefined : (o.ringRecord ?? (this.stateDir !== null ? ringRecordPath(this.stateDir, o.socket) : undefined)),
    });
    try {
      await backend.start();
    } catch (e) {
      await this.dp.removePort(id);
      throw e;
    }
    const port: Port = { id, name, kind: 'vhost-user', socket: o.socket, mode: o.mode ?? 'server', vlan, counters, backend, device, fd: -1 };
    this.ports.set(name, port);
    this.log.info('port added', { port: name, socket: o.socket, mode: port.mode, vlan });
    return this.info(port);
  }

  /** Adds a TAP port: frames between the switch and the host's network stack. */
  async addTapPort(o: TapPortOptions): Promise<PortInfo> {
    const tap = openTap(o.ifname, { offloads: o.offloads ?? true });
    const name = o.name ?? tap.name;
    return this.addHostPort(name, 'tap', tap.name, tap.fd, o.vlan, { kind: 'tap', fd: tap.fd, offloads: o.offloads ?? true });
  }

  /** Adds a VXLAN port (RFC 7348): a tunnel to a Linux vxlan device or OVS on another host. */
  async addVxlanPort(o: VxlanPortOptions): Promise<PortInfo> {
    if (!Number.isInteger(o.vni) || o.vni < 0 || o.vni >= 1 << 24) throw new RangeError(`VNI ${o.vni}: expected 0..16777215`);
    const port = o.dstport ?? VXLAN_PORT;
    const v6 = o.remote.includes(':');
    const dest = sockaddr(o.remote, port);
    const sock = o.socketFd !== undefined ? { fd: o.socketFd } : udpSocket({ address: o.local ?? (v6 ? '::' : '0.0.0.0'), port, reuseAddr: true });
    const name = o.name ?? `vxlan${o.vni}`;
    const info = await this.addHostPort(name, 'vxlan', `${o.remote}:${port}/vni ${o.vni}`, sock.fd, o.vlan, { kind: 'vxlan', fd: sock.fd, vni: o.vni, dest });
    this.ports.get(name)!.dstport = port;
    return info;
  }

  private vxlanPort(name: string): Port & { vteps: Map<string, { index: number; flood: boolean }>; dstport: number } {
    const p = this.ports.get(name);
    if (!p) throw new Error(`no port ${name}`);
    if (p.kind !== 'vxlan' || p.dstport === undefined) throw new Error(`port ${name} is not a VXLAN port`);
    p.vteps ??= new Map();
    return p as Port & { vteps: Map<string, { index: number; flood: boolean }>; dstport: number };
  }

  /**
   * EVPN (RFC 8365): remote VTEP `address` of VXLAN port `name`. From the first one on, the
   * port sends a frame whose MAC is installed (installRemoteMac) to that MAC's VTEP alone,
   * and the rest (broadcast, multicast, unknown unicast) to every VTEP with `flood` (a
   * type-3 route), a copy each: head-end replication. Its one static remote is no longer used.
   */
  async setVxlanRemote(name: string, address: string, o: { flood: boolean }): Promise<void> {
    const p = this.vxlanPort(name);
    const dest = sockaddr(address, p.dstport);
    let v = p.vteps.get(address);
    if (!v) {
      if (p.vteps.size >= 4096) throw new RangeError(`port ${name}: at most 4096 remote VTEPs`);
      v = { index: p.vteps.size + 1, flood: o.flood };
      p.vteps.set(address, v);
    }
    v.flood = o.flood;
    await this.dp.setVtep(p.id, v.index, dest, o.flood);
  }

  /** Stops flooding to remote VTEP `address` (its type-3 route was withdrawn); MACs installed behind it stay until removed. */
  async unsetVxlanFlood(name: string, address: string): Promise<void> {
    const p = this.vxlanPort(name);
    const v = p.vteps.get(address);
    if (!v || !v.flood) return;
    await this.setVxlanRemote(name, address, { flood: false });
  }

  /** The remote VTEPs of a VXLAN port: address and whether it takes BUM copies. */
  vxlanRemotes(name: string): Array<{ address: string; flood: boolean }> {
    const p = this.vxlanPort(name);
    return [...p.vteps].map(([address, v]) => ({ address, flood: v.flood }));
  }

  /** The VLAN a VXLAN port's frames belong to (an EVPN VNI maps to one VLAN: an access port). */
  private vxlanVlan(p: Port): number {
    if (p.vlan.mode !== 'access') throw new Error(`port ${p.name}: EVPN needs an access VXLAN port (one VLAN per VNI)`);
    return p.vlan.vid;
  }

  /**
   * Installs `mac` behind remote VTEP `vtep` of VXLAN port `name` (a type-2 route): frames to
   * it go to that VTEP only; the entry never ages and frames from the tunnel never move it
   * (a frame from a local port does: the guest came here). Replaces any entry of the MAC.
   */
  async installRemoteMac(name: string, mac: string, vtep: string): Promise<void> {
    const p = this.vxlanPort(name);
    if (!p.vteps.has(vtep)) await this.setVxlanRemote(name, vtep, { flood: false });
    const ok = await this.dp.setRemoteMac(macFromString(mac), this.vxlanVlan(p), p.id, p.vteps.get(vtep)!.index);
    if (!ok) throw new Error(`port ${name}: the fdb is full; ${mac} not installed`);
  }

  /** Removes what installRemoteMac installed, if it is still there (not replaced or taken over); true if removed. */
  async removeRemoteMac(name: string, mac: string, vtep: string): Promise<boolean> {
    const p = this.vxlanPort(name);
    const v = p.vteps.get(vtep);
    if (!v) return false;
    return this.dp.removeRemoteMac(macFromString(mac), this.vxlanVlan(p), p.id, v.index);
  }

  /** Every installed entry. */
  async remoteMacs(): Promise<RemoteMac[]> {
    const out: RemoteMac[] = [];
    for (const e of await this.dp.dumpRemoteMacs()) {
      const p = [...this.ports.values()].find((q) => q.id === e.port);
      const vtep = p?.vteps ? [...p.vteps].find(([, v]) => v.index === e.remote)?.[0] : undefined;
      out.push({ mac: macToString(e.mac), vlan: e.vlan, portName: p?.name ?? `#${e.port}`, vtep: vtep ?? `#${e.remote}` });
    }
    return out;
  }

  private async addHostPort(name: string, kind: 'tap' | 'vxlan', what: string, fd: number, vlan: VlanConfig | undefined, spec: import('./engine.js').HostPortSpec): Promise<PortInfo> {
    if (this.ports.has(name)) {
      closeHostFd(fd);
      throw new Error(`port ${name} exists`);
    }
    const v = vlan ?? { mode: 'access', vid: 1 };
    try {
      validateVlan(v);
    } catch (e) {
      closeHostFd(fd);
      throw e;
    }
    const id = this.nextId++;
    const counters = newCounters(this.dp.threadCount);
    await this.dp.addPort(id, name, v, counters);
    await this.dp.attachHost(id, spec);
    const port: Port = { id, name, kind, socket: what, mode: 'server', vlan: v, counters, backend: null, device: null, fd };
    this.ports.set(name, port);
    this.log.info('port added', { port: name, kind, what, vlan: v });
    return this.info(port);
  }

  async removePort(name: string): Promise<void> {
    const p = this.ports.get(name);
    if (!p) throw new Error(`no port ${name}`);
    this.ports.delete(name);
    await p.backend?.stop();
    await this.dp.removePort(p.id);
    if (p.fd >= 0) closeHostFd(p.fd);
    this.log.info('port removed', { port: name });
  }

  async setVlan(name: string, vlan: VlanConfig): Promise<void> {
    const p = this.ports.get(name);
    if (!p) throw new Error(`no port ${name}`);
    validateVlan(vlan);
    await this.dp.setVlan(p.id, vlan);
    p.vlan = vlan;
  }

  port(name: string): PortInfo {
    const p = this.ports.get(name);
    if (!p) throw new Error(`no port ${name}`);
    return this.info(p);
  }

  list(): PortInfo[] {
    return [...this.ports.values()].map((p) => this.info(p));
  }

  counters(name: string): PortCounters {
    return this.port(name).counters;
  }

  /** The forwarding database, with port names. */
  async fdb(): Promise<Array<FdbEntry & { portName: string }>> {
    const names = new Map([...this.ports.values()].map((p) => [p.id, p.name]));
    return (await this.dp.dumpFdb()).map((e) => ({ ...e, portName: names.get(e.port) ?? `#${e.port}` }));
  }

  /** Captures a port's frames, both directions, as pcap records handed to `sink` (see CaptureTap). */
  async startCapture(name: string, spec: CaptureSpec, sink: CaptureSink): Promise<void> {
    const p = this.ports.get(name);
    if (!p) throw new Error(`no port ${name}`);
    await this.dp.startCapture(p.id, spec, sink);
  }

  async stopCapture(name: string): Promise<void> {
    const p = this.ports.get(name);
    if (!p) throw new Error(`no port ${name}`);
    await this.dp.stopCapture(p.id);
  }

  /**
   * Adds a flow in ovs-ofctl's syntax ("priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80,
   * actions=drop"; flows.ts), or replaces the one of the same priority and match. Ports are
   * named (in_port=vm1, output:vm2), handlers too (handler:fw).
   */
  async addFlow(text: string): Promise<void> {
    await this.dp.addFlow(
      parseFlow(
        text,
        (n) => this.portIdOf(n),
        false,
        (n) => this.handlerIdOf(n),
      ),
    );
  }

  /**
   * Removes flows: every flow whose match includes `match`'s fields with its values (all of
   * them for ""), or with strict, the one flow of exactly that match and priority. Returns
   * how many.
   */
  async delFlows(match = '', strict = false): Promise<number> {
    return this.dp.removeFlows(parseFlow(match, (n) => this.portIdOf(n), true).words, strict);
  }

  /** The flow table as ovs-ofctl dump-flows prints it, with each flow's counters. */
  async dumpFlows(): Promise<FlowEntry[]> {
    return this.dp.dumpFlows();
  }

  /**
   * Adds a packet handler (handlers.ts): flows send frames to it with handler:NAME. On the
   * worker data plane (the default) it is a module's export, loaded on that thread; on the
   * inline one, a function too.
   */
  async addHandler(name: string, handler: PacketHandler | HandlerModule): Promise<void> {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new RangeError(`handler name ${JSON.stringify(name)}: 1-64 letters, digits, _ . -`);
    if (this.handlerIds.has(name)) throw new RangeError(`handler ${name} exists`);
    if (typeof handler === 'function' && !this.inline) throw new RangeError('a handler function cannot cross to the worker data plane: give { module, export } instead');
    const id = this.nextHandlerId++;
    await this.dp.addHandler(id, name, handler);
    this.handlerIds.set(name, id);
    this.log.info('packet handler added', { handler: name });
  }

  /** Removes a handler and every flow that sends to it; returns how many flows went. */
  async removeHandler(name: string): Promise<number> {
    const id = this.handlerIds.get(name);
    if (id === undefined) throw new RangeError(`no handler ${name} on this switch`);
    const n = await this.dp.removeHandler(id);
    this.handlerIds.delete(name);
    this.log.info('packet handler removed', { handler: name, flows: n });
    return n;
  }

  /** Each handler's frames, runs, sends and errors. */
  async handlers(): Promise<HandlerStats[]> {
    return this.dp.handlerStats();
  }

  private handlerIdOf(name: string): number {
    const id = this.handlerIds.get(name);
    if (id === undefined) throw new RangeError(`no handler ${name} on this switch`);
    return id;
  }

  private portIdOf(name: string): number {
    const p = this.ports.get(name);
    if (!p) throw new RangeError(`no port ${name} on this switch`);
    return p.id;
  }

  async setAging(seconds: number): Promise<void> {
    await this.dp.setAging(seconds * 1000);
  }

  /** The vhost-user backend of a port (its session, to wait for a frontend). */
  backend(name: string): VhostUserBackend {
    const p = this.ports.get(name);
    if (!p || !p.backend) throw new Error(`no vhost-user port ${name}`);
    return p.backend;
  }

  async close(): Promise<void> {
    for (const name of [...this.ports.keys()]) await this.removePort(name);
    await this.dp.close();
  }

  private info(p: Port): PortInfo {
    return { id: p.id, name: p.name, kind: p.kind, socket: p.socket, mode: p.mode, vlan: p.vlan, connected: p.backend ? p.backend.session !== null : true, counters: readCounters(p.counters) };
  }

  private onQueueError(portId: number, index: number, reason: string): void {
    const p = [...this.ports.values()].find((x) => x.id === portId);
    this.log.error('port queue broken by its guest', { port: p?.name ?? portId, queue: index, reason });
    const s = p?.backend?.session;
    // The session stops the queue, sets DEVICE_NEEDS_RESET and signals the error fd.
    s?.failQueueByIndex(index, reason);
  }
}

function validateVlan(v: VlanConfig): void {
  const ok = (x: number) => Number.isInteger(x) && x >= 1 && x <= 4094;
  if (v.mode === 'access') {
    if (!ok(v.vid)) throw new RangeError(`VLAN ${v.vid}: expected 1..4094`);
  } else if (v.mode === 'trunk') {
    if (v.native !== undefined && !ok(v.native)) throw new RangeError(`native VLAN ${v.native}: expected 1..4094`);
    for (const x of v.allowed ?? []) if (!ok(x)) throw new RangeError(`VLAN ${x}: expected 1..4094`);
  } else {
    throw new RangeError('vlan.mode must be access or trunk');
  }
}
