// The EVPN control plane of one switch (RFC 7432, RFC 8365 for VXLAN): per VNI (a VXLAN
// port of the switch, an access port of the VNI's VLAN) it
//   - advertises a type-3 route for the local VTEP (the flood list), and a type-2 route for
//     every MAC the switch learns on a local port of that VLAN, withdrawn when the MAC ages
//     out or its port goes;
//   - installs the fabric's type-2 routes as fdb entries "MAC -> remote VTEP" (never learned
//     or aged by data) and its type-3 routes as the port's flood VTEPs (head-end replication);
//   - follows MAC mobility (RFC 7432 §15): a MAC learned here that a remote route also has
//     is advertised with that route's sequence number + 1; a remote route with a higher
//     sequence number than ours wins, its entry replaces the local one and ours is withdrawn.
// The BGP speaker is GoBGP (gobgp.ts). Local MACs are read from the switch's fdb every
// `pollMs` (a MAC that moved here is advertised within that time).
import { isIP, isIPv4 } from 'node:net';
import { randomBytes } from 'node:crypto';
import { BroadcastChannel } from 'node:worker_threads';
import { log } from '../log.js';
import type { Switch } from '../switch/switch.js';
import type { ArpSighting, SuppressEntry } from './arp-snoop.js';
import { solicitedNode } from './neigh.js';
import { SnoopedAddresses } from './snooped.js';
import { formatRoute, routeKey, type EvpnMacIpRoute, type EvpnMulticastRoute, type EvpnRouteEvent, type GoBgp, type NeighborStatus } from './gobgp.js';

export interface EvpnVni {
  vni: number;
  /** The switch's VXLAN port that carries this VNI (an access port: its VLAN is the VNI's). */
  port: string;
  /** Route distinguisher (default ROUTERID:VNI mod 65536). */
  rd?: string;
  /** Route targets to advertise with and import by (default ASN:VNI, as FRR derives them). */
  routeTargets?: string[];
}

export interface EvpnControlOptions {
  asn: number;
  routerId: string;
  /** The local VTEP address (the next hop of our routes; default routerId). */
  vtep?: string;
  vnis: EvpnVni[];
  /** How often the switch's fdb is read for local MACs (default 250 ms). */
  pollMs?: number;
  /** The switch's aging time: an entry older than this is gone even before the ager removes it (default 300 s). */
  agingSeconds?: number;
  /**
   * ARP snooping (arp-snoop.ts): local MACs are also advertised with the IPv4 address they
   * use, as a second type-2 route (MAC+IP). Adds a flow `arp,actions=normal,handler:evpn-arp`
   * to the switch (every frame then takes the flow table's lookup). Default off.
   */
  arpSnooping?: boolean;
  /**
   * ND snooping: the same for IPv6, from the neighbor solicitations and advertisements local
   * hosts send (global addresses; link-local ones stay on the link, as FRR keeps them). Adds
   * flows `icmp6,icmp_type=135` and `=136` with `actions=normal,handler:evpn-arp`. Default off.
   */
  ndSnooping?: boolean;
  /**
   * ARP suppression and ND proxy (as Linux's neigh_suppress with FRR): an ARP request (an
   * IPv6 neighbor solicitation) from a local port for an address a remote MAC+IP route has
   * is answered here with that route's MAC, and not sent to the fabric. One flow per remote
   * address sends its requests to the handler; requests from the VXLAN ports are switched as
   * usual. Default off.
   */
  arpSuppression?: boolean;
}

interface LocalMac {
  route: EvpnMacIpRoute;
  /** the MAC+IP routes, by address, once ARP/ND snooping saw the addresses */
  withIps: Map<string, EvpnMacIpRoute>;
}

/** A remote address that ARP suppression / ND proxy answers for. */
interface RemoteIp {
  mac: string;
  /** the route that gave it */
  key: string;
  /** its flow (sending its requests to the handler) */
  flow: string;
}

interface RemoteMacState {
  route: EvpnMacIpRoute;
  neighbor: string;
  /** The routes (MAC-only, MAC+IP) that hold the entry, by route key: it goes with the last. */
  keys: Set<string>;
}

interface VniState {
  cfg: Required<EvpnVni>;
  vlan: number;
  /** The VXLAN port's id: another one after the port was removed and added again. -1: the port is gone. */
  portId: number;
  multicast: EvpnMulticastRoute;
  /** MACs learned here and advertised, by MAC. */
  local: Map<string, LocalMac>;
  /** The fabric's best type-2 routes, by MAC (the one installed). */
  remote: Map<string, RemoteMacState>;
  /** Flood VTEPs (type-3 routes), by originator. */
  flood: Set<string>;
  /** The fabric's MAC+IP addresses (ARP suppression / ND proxy), by address. */
  remoteIps: Map<string, RemoteIp>;
}

export interface EvpnVniStatus {
  vni: number;
  port: string;
  vlan: number;
  /** The VTEPs that get BUM traffic (type-3 routes). */
  floodVteps: string[];
  localMacs: Array<{ mac: string; seq: number; ip?: string; ips?: string[] }>;
  remoteMacs: Array<{ mac: string; vtep: string; seq: number; neighbor: string }>;
  /** The remote addresses ARP suppression / ND proxy answers for. */
  suppressed?: Array<{ ip: string; mac: string }>;
}

export interface EvpnStatus {
  asn: number;
  routerId: string;
  vtep: string;
  neighbors: NeighborStatus[];
  routesIn: Array<{ route: string; neighbor: string }>;
  routesOut: string[];
  vnis: EvpnVniStatus[];
}

/** EVPN for one switch over one BGP speaker. */
export class EvpnControl {
  readonly #bgp: GoBgp;
  readonly #sw: Switch;
  readonly #o: EvpnControlOptions;
  readonly #vtep: string;
  readonly #byVni = new Map<number, VniState>();
  #timer: NodeJS.Timeout | null = null;
  /** Work on the switch and the speaker, one at a time, in order. */
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  readonly #log = log.child({ component: 'evpn' });
  #arp: BroadcastChannel | null = null;
  /** The handler's suppression table (arpSuppression). */
  #table: BroadcastChannel | null = null;
  /** Addresses ARP/ND snooping saw, by VLAN and MAC (pruned by #poll to the MACs the switch has). */
  readonly #ips = new SnoopedAddresses();
  /** Flows of remote addresses, by their text: how many addresses share each (one solicited-node group). */
  readonly #flowRefs = new Map<string, number>();

  constructor(bgp: GoBgp, sw: Switch, o: EvpnControlOptions) {
    this.#bgp = bgp;
    this.#sw = sw;
    this.#o = o;
    this.#vtep = o.vtep ?? o.routerId;
    if (isIP(this.#vtep) === 0) throw new RangeError(`evpn vtep: expected an IP address, got ${JSON.stringify(this.#vtep)}`);
    for (const v of o.vnis) {
      if (!Number.isInteger(v.vni) || v.vni < 1 || v.vni > 0xffffff) throw new RangeError(`evpn vni ${v.vni}: expected 1..16777215`);
      if (this.#byVni.has(v.vni)) throw new RangeError(`evpn vni ${v.vni}: given twice`);
      const info = sw.port(v.port);
      if (info.kind !== 'vxlan') throw new RangeError(`evpn vni ${v.vni}: port ${v.port} is not a VXLAN port`);
      if (info.vlan.mode !== 'access') throw new RangeError(`evpn vni ${v.vni}: port ${v.port} must be an access port (one VLAN per VNI)`);
      const cfg: Required<EvpnVni> = { vni: v.vni, port: v.port, rd: v.rd ?? `${o.routerId}:${v.vni % 65536}`, routeTargets: v.routeTargets ?? [`${o.asn}:${v.vni}`] };
      const multicast: EvpnMulticastRoute = { kind: 'multicast', rd: cfg.rd, ethernetTag: 0, originator: this.#vtep, vni: v.vni, nextHop: this.#vtep, routeTargets: cfg.routeTargets };
      this.#byVni.set(v.vni, { cfg, vlan: info.vlan.vid, portId: info.id, multicast, local: new Map(), remote: new Map(), flood: new Set(), remoteIps: new Map() });
    }
  }

  /** Advertises each VNI's type-3 route, takes the fabric's routes, and starts reading local MACs. */
  async start(): Promise<void> {
    for (const s of this.#byVni.values()) {
      // The port sends by its VTEP table from now on (not to its one static remote), even
      // before the fabric's first route: the local VTEP is entry 1, taking no floods.
      await this.#sw.setVxlanRemote(s.cfg.port, this.#vtep, { flood: false });
      await this.#bgp.advertise(s.multicast);
    }
    this.#bgp.on('route', (e) => this.#queue(() => this.#onRoute(e)));
    this.#bgp.on('peer', (p) => this.#log.info('neighbor', { address: p.address, state: p.state }));
    // The speaker failed (gobgpd exited, the watch broke): said; what the fabric had
    // installed goes (no withdrawal can reach us any more, and the neighbors drop our
    // routes too); local switching goes on and the process stays up.
    this.#bgp.on('error', (e) => {
      this.#log.error('BGP speaker failed', { error: e.message });
      void this.#queue(() => this.#dropRemote());
    });
    this.#bgp.watch();
    if (this.#o.arpSnooping || this.#o.ndSnooping || this.#o.arpSuppression) await this.#startNeighHandler();
    this.#timer = setInterval(() => this.#queue(() => this.#poll()), this.#o.pollMs ?? 250);
    this.#timer.unref();
    await this.#queue(() => this.#poll());
    this.#log.info('evpn started', { vtep: this.#vtep, vnis: [...this.#byVni.keys()].join(',') });
  }

  #queue(fn: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(() => (this.#closed ? undefined : fn()));
    this.#chain = next.catch((e: unknown) => this.#log.warn('evpn step failed', { error: (e as Error).message }));
    return this.#chain;
  }

  #vniOf(route: EvpnMacIpRoute | EvpnMulticastRoute): VniState | undefined {
    const byLabel = this.#byVni.get(route.vni);
    if (byLabel && route.routeTargets.some((rt) => byLabel.cfg.routeTargets.includes(rt))) return byLabel;
    // A route whose label is not a VNI of ours (e.g. a speaker that puts 0 there): its route target.
    for (const s of this.#byVni.values()) if (route.routeTargets.some((rt) => s.cfg.routeTargets.includes(rt))) return s;
    return undefined;
  }

  async #onRoute(e: EvpnRouteEvent): Promise<void> {
    if (e.neighbor === null) return;
    const s = this.#vniOf(e.route);
    if (!s) return;
    // The port is gone (or not an access port): what changes is kept here, installed when it is back.
    if (s.portId < 0) return this.#onRouteState(s, e);
    if (e.route.kind === 'multicast') {
      const vtep = e.route.originator;
      if (vtep === this.#vtep) return;
      if (e.withdrawn) {
        s.flood.delete(vtep);
        await this.#sw.unsetVxlanFlood(s.cfg.port, vtep);
      } else {
        s.flood.add(vtep);
        await this.#sw.setVxlanRemote(s.cfg.port, vtep, { flood: true });
      }
      this.#log.info(e.withdrawn ? 'flood VTEP gone' : 'flood VTEP', { vni: s.cfg.vni, vtep });
      return;
    }
    const r = e.route;
    if (r.nextHop === this.#vtep) return;
    const cur = s.remote.get(r.mac);
    const key = routeKey(r);
    if (r.ip !== undefined && this.#table) await (e.withdrawn ? this.#unsuppress(s, r.ip, key) : this.#suppress(s, r.ip, r.mac, key));
    if (e.withdrawn) {
      if (!cur || cur.route.nextHop !== r.nextHop) return;
      cur.keys.delete(key);
      if (cur.keys.size > 0) return;
      s.remote.delete(r.mac);
      await this.#sw.removeRemoteMac(s.cfg.port, r.mac, r.nextHop);
      this.#log.info('remote MAC gone', { vni: s.cfg.vni, mac: r.mac, vtep: r.nextHop });
      return;
    }
    const mine = s.local.get(r.mac);
    if (mine && mine.route.seq >= r.seq) {
      // We have it, with a sequence number at least theirs: theirs is stale (RFC 7432 §15.1:
      // the higher sequence number wins); keep ours, advertised above theirs.
      s.remote.set(r.mac, { route: r, neighbor: e.neighbor, keys: new Set([key, ...(cur && cur.route.nextHop === r.nextHop ? cur.keys : [])]) });
      if (mine.route.seq === r.seq) await this.#advertiseLocal(s, r.mac, r.seq + 1);
      return;
    }
    if (mine) {
      // The MAC moved away (their sequence number is higher): ours goes.
      s.local.delete(r.mac);
      await this.#bgp.withdraw(mine.route);
      for (const w of mine.withIps.values()) await this.#bgp.withdraw(w);
      this.#log.info('MAC moved away', { vni: s.cfg.vni, mac: r.mac, vtep: r.nextHop, seq: r.seq });
    }
    if (cur && cur.route.nextHop !== r.nextHop) await this.#sw.removeRemoteMac(s.cfg.port, r.mac, cur.route.nextHop);
    const keys = cur && cur.route.nextHop === r.nextHop ? cur.keys : new Set<string>();
    keys.add(key);
    s.remote.set(r.mac, { route: r, neighbor: e.neighbor, keys });
    await this.#sw.installRemoteMac(s.cfg.port, r.mac, r.nextHop);
    this.#log.info('remote MAC', { vni: s.cfg.vni, route: formatRoute(r) });
  }

  /** A route's change while the VNI's port is away: the state only (#followPort installs it). */
  #onRouteState(s: VniState, e: EvpnRouteEvent): void {
    const r = e.route;
    if (r.kind === 'multicast') {
      if (r.originator === this.#vtep) return;
      if (e.withdrawn) s.flood.delete(r.originator);
      else s.flood.add(r.originator);
      return;
    }
    if (r.nextHop === this.#vtep) return;
    const key = routeKey(r);
    const cur = s.remote.get(r.mac);
    if (r.ip !== undefined) {
      if (e.withdrawn && s.remoteIps.get(r.ip)?.key === key) s.remoteIps.delete(r.ip);
      else if (!e.withdrawn) s.remoteIps.set(r.ip, { mac: r.mac, key, flow: '' });
    }
    if (e.withdrawn) {
      if (cur && cur.route.nextHop === r.nextHop) {
        cur.keys.delete(key);
        if (cur.keys.size === 0) s.remote.delete(r.mac);
      }
      return;
    }
    const keys = cur && cur.route.nextHop === r.nextHop ? cur.keys : new Set<string>();
    keys.add(key);
    s.remote.set(r.mac, { route: r, neighbor: e.neighbor ?? '', keys });
  }

  async #startNeighHandler(): Promise<void> {
    const id = randomBytes(6).toString('hex');
    const channel = `vhostkit-evpn-arp-${id}`;
    this.#arp = new BroadcastChannel(channel);
    this.#arp.onmessage = (ev: unknown) => {
      const m = (ev as { data: ArpSighting }).data;
      this.#ips.add(m.vlan, m.mac, m.ip);
      void this.#queue(() => this.#poll());
    };
    const table = this.#o.arpSuppression ? `vhostkit-evpn-table-${id}` : undefined;
    if (table !== undefined) this.#table = new BroadcastChannel(table);
    await this.#sw.addHandler('evpn-arp', { module: new URL('./arp-snoop.js', import.meta.url).href, options: { channel, table, arp: this.#o.arpSnooping === true, nd: this.#o.ndSnooping === true } });
    if (this.#o.arpSnooping) await this.#sw.addFlow('priority=65000,arp,actions=normal,handler:evpn-arp');
    if (this.#o.ndSnooping) {
      await this.#sw.addFlow('priority=65000,icmp6,icmp_type=135,actions=normal,handler:evpn-arp');
      await this.#sw.addFlow('priority=65000,icmp6,icmp_type=136,actions=normal,handler:evpn-arp');
    }
    if (this.#o.arpSuppression) {
      // What the fabric asks is the fabric's to answer: switched as usual.
      for (const s of this.#byVni.values()) await this.#fabricFlows(s);
    }
  }

  /** ARP and neighbor solicitations from the fabric are the fabric's to answer: switched as usual. */
  async #fabricFlows(s: VniState): Promise<void> {
    await this.#sw.addFlow(`priority=65200,in_port=${s.cfg.port},arp,actions=normal`);
    await this.#sw.addFlow(`priority=65200,in_port=${s.cfg.port},icmp6,icmp_type=135,actions=normal`);
  }

  /** The flow that gives the handler the requests for a remote address of VLAN vlan. */
  #suppressFlow(vlan: number, ip: string): string {
    return isIPv4(ip)
      ? `priority=65100,arp,dl_vlan=${vlan},arp_op=1,arp_tpa=${ip},actions=handler:evpn-arp`
      : `priority=65100,icmp6,dl_vlan=${vlan},icmp_type=135,ipv6_dst=${solicitedNode(ip)},actions=handler:evpn-arp`;
  }

  /** Answers requests for a remote (ip, mac) here from now on. */
  async #suppress(s: VniState, ip: string, mac: string, key: string): Promise<void> {
    const old = s.remoteIps.get(ip);
    if (old?.mac === mac && old.key === key) return;
    const msg: SuppressEntry = { vlan: s.vlan, ip, mac };
    // The handler learns the answer before its flow sends it a request.
    this.#table?.postMessage(msg);
    const flow = this.#suppressFlow(s.vlan, ip);
    if (!old) {
      const n = this.#flowRefs.get(flow) ?? 0;
      this.#flowRefs.set(flow, n + 1);
      if (n === 0) await this.#sw.addFlow(flow);
    }
    s.remoteIps.set(ip, { mac, key, flow });
    this.#log.info('suppressing', { vni: s.cfg.vni, ip, mac });
  }

  /** Stops answering for a remote address (the route `key` that gave it is withdrawn, or all go: key null). */
  async #unsuppress(s: VniState, ip: string, key: string | null): Promise<void> {
    const old = s.remoteIps.get(ip);
    if (!old || (key !== null && old.key !== key)) return;
    s.remoteIps.delete(ip);
    if (old.flow === '') return; // taken while the port was away: no flow, nothing posted
    const n = (this.#flowRefs.get(old.flow) ?? 1) - 1;
    if (n > 0) this.#flowRefs.set(old.flow, n);
    else {
      this.#flowRefs.delete(old.flow);
      await this.#sw.delFlows(old.flow.slice(0, old.flow.indexOf(',actions=')), true);
    }
    const msg: SuppressEntry = { vlan: s.vlan, ip, mac: null };
    this.#table?.postMessage(msg);
  }

  /** Removes every installed MAC and flood VTEP (the speaker is gone). */
  async #dropRemote(): Promise<void> {
    for (const s of this.#byVni.values()) {
      if (s.portId < 0) {
        s.remote.clear();
        s.flood.clear();
        s.remoteIps.clear();
        continue;
      }
      for (const [mac, r] of s.remote) await this.#sw.removeRemoteMac(s.cfg.port, mac, r.route.nextHop);
      s.remote.clear();
      for (const vtep of s.flood) await this.#sw.unsetVxlanFlood(s.cfg.port, vtep);
      s.flood.clear();
      for (const ip of [...s.remoteIps.keys()]) await this.#unsuppress(s, ip, null);
    }
  }

  async #advertiseLocal(s: VniState, mac: string, seq: number): Promise<void> {
    const route: EvpnMacIpRoute = { kind: 'macip', rd: s.cfg.rd, ethernetTag: 0, mac, vni: s.cfg.vni, nextHop: this.#vtep, routeTargets: s.cfg.routeTargets, seq, sticky: false };
    await this.#bgp.advertise(route);
    const withIps = new Map<string, EvpnMacIpRoute>();
    for (const ip of s.local.get(mac)?.withIps.keys() ?? []) {
      const w = { ...route, ip };
      await this.#bgp.advertise(w);
      withIps.set(ip, w);
    }
    s.local.set(mac, { route, withIps });
    this.#log.info('local MAC', { vni: s.cfg.vni, mac, seq });
  }

  /**
   * The VNI's VXLAN port changed under us: its VLAN was changed (which flushes its fdb
   * entries, installed ones too), or it was removed (its remote VTEPs go with it) and added
   * again. What the fabric's routes installed is installed again, in its VLAN now.
   */
  async #followPort(s: VniState): Promise<void> {
    const info = this.#sw.list().find((p) => p.name === s.cfg.port);
    const vlan = info?.kind === 'vxlan' && info.vlan.mode === 'access' ? info.vlan.vid : -1;
    if (info?.kind === 'vxlan' && info.id === s.portId && vlan === s.vlan) return;
    if (vlan < 0) {
      const why = info?.kind === 'vxlan' ? -2 : -1;
      if (s.portId !== why) {
        if (why === -1) this.#log.warn('VNI port gone: nothing installed until it is back', { vni: s.cfg.vni, port: s.cfg.port });
        else this.#log.error('VNI port is not an access port: nothing installed until it is one', { vni: s.cfg.vni, port: s.cfg.port });
      }
      if (s.portId >= 0) {
        // Nothing answered for a fabric this VNI cannot reach; the addresses are kept for its return.
        const ips = [...s.remoteIps];
        for (const [ip] of ips) await this.#unsuppress(s, ip, null);
        for (const [ip, r] of ips) s.remoteIps.set(ip, { ...r, flow: '' });
      }
      s.portId = why;
      return;
    }
    if (!info) return; // (vlan >= 0: it is there)
    const readded = info.id !== s.portId;
    this.#log.info('VNI port changed: installing the fabric again', { vni: s.cfg.vni, port: s.cfg.port, vlan, readded });
    const ips = [...s.remoteIps];
    for (const [ip] of ips) await this.#unsuppress(s, ip, null);
    s.vlan = vlan;
    s.portId = info.id;
    // Local MACs of the old VLAN are no longer this VNI's: the next poll withdraws them.
    await this.#sw.setVxlanRemote(s.cfg.port, this.#vtep, { flood: false });
    for (const vtep of s.flood) await this.#sw.setVxlanRemote(s.cfg.port, vtep, { flood: true });
    for (const r of s.remote.values()) await this.#sw.installRemoteMac(s.cfg.port, r.route.mac, r.route.nextHop);
    if (this.#o.arpSuppression && readded) await this.#fabricFlows(s);
    for (const [ip, r] of ips) await this.#suppress(s, ip, r.mac, r.key);
  }

  /** Reads the switch's fdb: MACs learned on local ports of each VNI's VLAN are advertised, those gone are withdrawn. */
  async #poll(): Promise<void> {
    for (const s of this.#byVni.values()) await this.#followPort(s);
    const agingMs = (this.#o.agingSeconds ?? 300) * 1000;
    const vxlan = new Set(
      this.#sw
        .list()
        .filter((p) => p.kind === 'vxlan')
        .map((p) => p.name),
    );
    const entries = await this.#sw.fdb();
    /** The MACs each VNI's VLAN has, local or the fabric's: what snooping keeps addresses of. */
    const live = new Map<number, Set<string>>();
    for (const s of this.#byVni.values()) {
      const here = new Set<string>();
      const known = new Set<string>(s.remote.keys());
      live.set(s.vlan, known);
      for (const e of entries) {
        if (e.vlan !== s.vlan || e.age > agingMs) continue;
        known.add(e.mac);
        if (!vxlan.has(e.portName)) here.add(e.mac);
      }
      for (const mac of here) {
        if (!s.local.has(mac)) {
          const remote = s.remote.get(mac);
          // Learned here while the fabric has it elsewhere: it moved here (RFC 7432 §15).
          await this.#advertiseLocal(s, mac, remote ? remote.route.seq + 1 : 0);
        }
        const l = s.local.get(mac);
        const ips = this.#ips.get(s.vlan, mac);
        if (!l) continue;
        for (const [ip, w] of l.withIps) {
          if (ips.includes(ip)) continue;
          l.withIps.delete(ip);
          await this.#bgp.withdraw(w);
        }
        for (const ip of ips) {
          if (l.withIps.has(ip)) continue;
          const w = { ...l.route, ip };
          l.withIps.set(ip, w);
          await this.#bgp.advertise(w);
          this.#log.info('local MAC+IP', { vni: s.cfg.vni, mac, ip });
        }
      }
      for (const [mac, l] of s.local) {
        if (here.has(mac)) continue;
        s.local.delete(mac);
        await this.#bgp.withdraw(l.route);
        for (const w of l.withIps.values()) await this.#bgp.withdraw(w);
        this.#ips.delete(s.vlan, mac);
        this.#log.info('local MAC gone', { vni: s.cfg.vni, mac });
      }
    }
    // The fabric's MACs that aged out or whose route was withdrawn, and other VLANs' senders.
    this.#ips.prune(live);
  }

  async status(): Promise<EvpnStatus> {
    return {
      asn: this.#o.asn,
      routerId: this.#o.routerId,
      vtep: this.#vtep,
      neighbors: await this.#bgp.neighbors(),
      routesIn: this.#bgp.routesIn().map((e) => ({ route: formatRoute(e.route), neighbor: e.neighbor ?? '' })),
      routesOut: this.#bgp.routesOut().map(formatRoute),
      vnis: [...this.#byVni.values()].map((s) => ({
        vni: s.cfg.vni,
        port: s.cfg.port,
        vlan: s.vlan,
        floodVteps: [...s.flood].sort(),
        localMacs: [...s.local.values()].map((l) => {
          const ips = [...l.withIps.keys()];
          const v4 = ips.find((a) => isIPv4(a));
          return { mac: l.route.mac, seq: l.route.seq, ...(v4 !== undefined ? { ip: v4 } : {}), ...(ips.length ? { ips } : {}) };
        }),
        remoteMacs: [...s.remote.values()].map((r) => ({ mac: r.route.mac, vtep: r.route.nextHop, seq: r.route.seq, neighbor: r.neighbor })),
        ...(this.#table ? { suppressed: [...s.remoteIps].map(([ip, r]) => ({ ip, mac: r.mac })) } : {}),
      })),
    };
  }

  /** Stops reading the fdb and taking routes; the speaker is the caller's to close. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#arp?.close();
    this.#arp = null;
    this.#table?.close();
    this.#table = null;
    await this.#chain;
    this.#closed = true;
  }
}
