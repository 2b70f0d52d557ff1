// GoBGP as vhostkit's BGP EVPN speaker (RFC 7432, RFC 8365 for VXLAN): the daemon, gobgpd,
// speaks BGP to the fabric; vhostkit drives it through its gRPC API (the .proto files Debian
// ships in golang-github-osrg-gobgp-dev). `GoBgp.start` runs a gobgpd of its own (its own
// config file and API socket, optionally in a network namespace); `GoBgp.connect` uses one
// that is already running. Either way vhostkit adds and withdraws EVPN type-2 (MAC/IP
// advertisement) and type-3 (inclusive multicast Ethernet tag) paths and watches the best
// paths, which it reports as `route` events: what the fabric advertises ("in") and what this
// VTEP advertises ("out").
//
// The API listens on a Unix socket by default: a socket file is reachable from every network
// namespace (a TCP port inside the daemon's namespace is not), and is not open to the network.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP, isIPv4 } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { log } from '../log.js';

/** Where Debian's golang-github-osrg-gobgp-dev puts gobgp.proto, attribute.proto, capability.proto. */
export const DEFAULT_PROTO_DIR = '/usr/share/gocode/src/github.com/osrg/gobgp/api';

const AFI_L2VPN = 'AFI_L2VPN';
const SAFI_EVPN = 'SAFI_EVPN';
const EVPN_FAMILY = { afi: AFI_L2VPN, safi: SAFI_EVPN };
/** BGP tunnel encapsulation type 8, VXLAN (RFC 8365 §5.1.3): the Encapsulation extended community. */
const TUNNEL_VXLAN = 8;
/** PMSI tunnel type 6, ingress replication (RFC 7432 §11.2, RFC 8365 §5.1.3). */
const PMSI_INGRESS_REPL = 6;
/** Route Target: the transitive two-octet-AS-specific extended community, sub-type 2. */
const SUBTYPE_ROUTE_TARGET = 2;
const ANY = 'type.googleapis.com/apipb.';

/** An EVPN route type 2: a MAC (and maybe an IP) behind a VTEP. */
export interface EvpnMacIpRoute {
  kind: 'macip';
  /** Route distinguisher, "ADDRESS:N" or "ASN:N". */
  rd: string;
  ethernetTag: number;
  mac: string;
  /** The IPv4 or IPv6 address the MAC has, if known (ARP/ND snooping). */
  ip?: string;
  /** The VNI: RFC 8365 §5.1.3 carries it in the MPLS label field. */
  vni: number;
  /** The VTEP that has the MAC (the BGP next hop). */
  nextHop: string;
  /** Route targets, "ASN:N". */
  routeTargets: string[];
  /** MAC mobility sequence number (RFC 7432 §7.7, §15); 0 when the route carries none. */
  seq: number;
  sticky: boolean;
}

/** An EVPN route type 3: a VTEP that serves a VNI and takes its BUM traffic by ingress replication. */
export interface EvpnMulticastRoute {
  kind: 'multicast';
  rd: string;
  ethernetTag: number;
  /** The originating router's IP: the VTEP's address. */
  originator: string;
  /** The VNI, from the PMSI tunnel attribute's label. */
  vni: number;
  nextHop: string;
  routeTargets: string[];
}

export type EvpnRoute = EvpnMacIpRoute | EvpnMulticastRoute;

/** A best path added or withdrawn. `neighbor` is the peer it came from; null for this speaker's own. */
export interface EvpnRouteEvent {
  route: EvpnRoute;
  withdrawn: boolean;
  neighbor: string | null;
}

export type SessionState = 'unknown' | 'idle' | 'connect' | 'active' | 'opensent' | 'openconfirm' | 'established';

export interface NeighborStatus {
  address: string;
  asn: number;
  state: SessionState;
  /** Seconds since the session came up (established) or went down (otherwise), when known. */
  since: number | null;
}

export interface NeighborConfig {
  address: string;
  asn: number;
}

export interface GoBgpStartOptions {
  /** A folder of its own: the config file, the API socket, the log. Made if missing. */
  dir: string;
  asn: number;
  routerId: string;
  neighbors: NeighborConfig[];
  /** Run it in this network namespace (ip netns exec). */
  netns?: string;
  /** The address BGP listens on and connects from (default: any). */
  listenAddress?: string;
  /** BGP port (default 179). */
  listenPort?: number;
  /** Seconds between connection attempts to a neighbor that is down (default 5). */
  connectRetry?: number;
  /** BGP hold time in seconds (default 9: a dead neighbor is noticed within 9 s). */
  holdTime?: number;
  /** The API: "unix:PATH" or "HOST:PORT" (default unix:DIR/gobgp.sock). */
  api?: string;
  /** The gobgpd binary (default: gobgpd on PATH). */
  binary?: string;
  protoDir?: string;
}

/** A route's identity (its NLRI): the same route advertised again replaces the old one. */
export function routeKey(r: EvpnRoute): string {
  return r.kind === 'macip' ? `2:${r.rd}:${r.ethernetTag}:${r.mac}:${r.ip ?? ''}` : `3:${r.rd}:${r.ethernetTag}:${r.originator}`;
}

/** One line for people, in FRR's notation: "[2]:[0]:[48]:[52:54:00:00:00:01]:[32]:[10.0.0.1] rd 10.0.0.1:100 vni 100 via 10.0.0.1 seq 1". */
export function formatRoute(r: EvpnRoute): string {
  if (r.kind === 'macip') {
    const ip = r.ip ? `:[${isIPv4(r.ip) ? 32 : 128}]:[${r.ip}]` : '';
    return `[2]:[${r.ethernetTag}]:[48]:[${r.mac}]${ip} rd ${r.rd} vni ${r.vni} via ${r.nextHop}${r.seq ? ` seq ${r.seq}` : ''}${r.sticky ? ' sticky' : ''}`;
  }
  return `[3]:[${r.ethernetTag}]:[${isIPv4(r.originator) ? 32 : 128}]:[${r.originator}] rd ${r.rd} vni ${r.vni} via ${r.nextHop}`;
}

// ---- checks ----

function checkU32(what: string, v: unknown, min = 0, max = 0xffffffff): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new RangeError(`${what}: expected an integer ${min}..${max}, got ${JSON.stringify(v)}`);
  return v;
}

function checkIp(what: string, v: unknown, v4only = false): string {
  if (typeof v !== 'string' || (v4only ? !isIPv4(v) : isIP(v) === 0)) throw new RangeError(`${what}: expected an ${v4only ? 'IPv4' : 'IP'} address, got ${JSON.stringify(v)}`);
  return v;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function checkMac(what: string, v: unknown): string {
  if (typeof v !== 'string' || !MAC_RE.test(v.toLowerCase())) throw new RangeError(`${what}: expected a MAC address like 52:54:00:12:34:56, got ${JSON.stringify(v)}`);
  return v.toLowerCase();
}

/** "ADDRESS:N" or "ASN:N" as GoBGP's route distinguisher message (RFC 4364 §4.2 types 1, 0 and 2). */
function encodeRd(rd: string): Record<string, unknown> {
  const at = rd.lastIndexOf(':');
  const admin = rd.slice(0, at);
  const assigned = Number(rd.slice(at + 1));
  if (at <= 0 || !/^\d+$/.test(rd.slice(at + 1))) throw new RangeError(`route distinguisher: expected ADDRESS:N or ASN:N, got ${JSON.stringify(rd)}`);
  if (isIPv4(admin)) return { '@type': `${ANY}RouteDistinguisherIPAddress`, admin, assigned: checkU32(`route distinguisher ${rd}: assigned number`, assigned, 0, 0xffff) };
  const asn = Number(admin);
  if (!/^\d+$/.test(admin)) throw new RangeError(`route distinguisher: expected ADDRESS:N or ASN:N, got ${JSON.stringify(rd)}`);
  if (asn <= 0xffff) return { '@type': `${ANY}RouteDistinguisherTwoOctetASN`, admin: asn, assigned: checkU32(`route distinguisher ${rd}: assigned number`, assigned) };
  return {
    '@type': `${ANY}RouteDistinguisherFourOctetASN`,
    admin: checkU32(`route distinguisher ${rd}: ASN`, asn),
    assigned: checkU32(`route distinguisher ${rd}: assigned number`, assigned, 0, 0xffff),
  };
}

function encodeRt(rt: string): Record<string, unknown> {
  const m = /^(\d+):(\d+)$/.exec(rt);
  if (!m) throw new RangeError(`route target: expected ASN:N, got ${JSON.stringify(rt)}`);
  const asn = Number(m[1]);
  const n = Number(m[2]);
  if (asn <= 0xffff) return { '@type': `${ANY}TwoOctetAsSpecificExtended`, is_transitive: true, sub_type: SUBTYPE_ROUTE_TARGET, asn, local_admin: checkU32(`route target ${rt}`, n) };
  return {
    '@type': `${ANY}FourOctetAsSpecificExtended`,
    is_transitive: true,
    sub_type: SUBTYPE_ROUTE_TARGET,
    asn: checkU32(`route target ${rt}`, asn),
    local_admin: checkU32(`route target ${rt}`, n, 0, 0xffff),
  };
}

/** The API's Path for a route (to add, or to delete by its NLRI). */
export function encodePath(r: EvpnRoute): Record<string, unknown> {
  checkU32('ethernet tag', r.ethernetTag);
  checkU32('VNI', r.vni, 1, 0xffffff);
  checkIp('next hop', r.nextHop);
  if (r.routeTargets.length === 0) throw new RangeError('route targets: expected at least one');
  const communities: Record<string, unknown>[] = [...r.routeTargets.map(encodeRt), { '@type': `${ANY}EncapExtended`, tunnel_type: TUNNEL_VXLAN }];
  const pattrs: Record<string, unknown>[] = [
    { '@type': `${ANY}OriginAttribute`, origin: 0 },
    { '@type': `${ANY}NextHopAttribute`, next_hop: r.nextHop },
  ];
  let nlri: Record<string, unknown>;
  if (r.kind === 'macip') {
    const mac = checkMac('MAC', r.mac);
    if (r.ip !== undefined) checkIp('IP', r.ip);
    checkU32('MAC mobility sequence number', r.seq);
    // Single-homed: the ESI is all zeros (RFC 7432 §5).
    nlri = {
      '@type': `${ANY}EVPNMACIPAdvertisementRoute`,
      rd: encodeRd(r.rd),
      esi: { type: 0, value: Buffer.alloc(9) },
      ethernet_tag: r.ethernetTag,
      mac_address: mac,
      ip_address: r.ip ?? '',
      labels: [r.vni],
    };
    if (r.seq > 0 || r.sticky) communities.push({ '@type': `${ANY}MacMobilityExtended`, is_sticky: r.sticky, sequence_num: r.seq });
  } else {
    const originator = checkIp('originator', r.originator);
    nlri = { '@type': `${ANY}EVPNInclusiveMulticastEthernetTagRoute`, rd: encodeRd(r.rd), ethernet_tag: r.ethernetTag, ip_address: originator };
    const id = isIPv4(originator) ? Buffer.from(originator.split('.').map(Number)) : ipv6Bytes(originator);
    pattrs.push({ '@type': `${ANY}PmsiTunnelAttribute`, flags: 0, type: PMSI_INGRESS_REPL, label: r.vni, id });
  }
  pattrs.push({ '@type': `${ANY}ExtendedCommunitiesAttribute`, communities });
  return { family: EVPN_FAMILY, nlri, pattrs };
}

function ipv6Bytes(a: string): Buffer {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

// ---- decoding what the API reports ----

type Obj = Record<string, unknown>;

function typeOf(o: unknown): string {
  const t = (o as Obj | null)?.['@type'];
  return typeof t === 'string' ? t.slice(t.lastIndexOf('.') + 1) : '';
}

function str(o: Obj, k: string): string {
  const v = o[k];
  return typeof v === 'string' ? v : '';
}

function num(o: Obj, k: string): number {
  const v = o[k];
  return typeof v === 'number' ? v : Number(v ?? 0);
}

function decodeRd(o: unknown): string {
  const rd = (o ?? {}) as Obj;
  return `${String(rd.admin ?? '')}:${num(rd, 'assigned')}`;
}

/** A path the API reported as an EVPN route of type 2 or 3, or null for anything else. */
export function decodePath(p: Obj): EvpnRoute | null {
  const nlri = (p.nlri ?? {}) as Obj;
  const pattrs = (Array.isArray(p.pattrs) ? p.pattrs : []) as Obj[];
  let nextHop = '';
  const routeTargets: string[] = [];
  let seq = 0;
  let sticky = false;
  let pmsiLabel = 0;
  for (const a of pattrs) {
    const t = typeOf(a);
    if (t === 'NextHopAttribute') nextHop = str(a, 'next_hop');
    else if (t === 'MpReachNLRIAttribute') nextHop = ((a.next_hops as string[] | undefined) ?? [])[0] ?? nextHop;
    else if (t === 'PmsiTunnelAttribute') pmsiLabel = num(a, 'label');
    else if (t === 'ExtendedCommunitiesAttribute') {
      for (const c of (a.communities ?? []) as Obj[]) {
        const ct = typeOf(c);
        if ((ct === 'TwoOctetAsSpecificExtended' || ct === 'FourOctetAsSpecificExtended') && num(c, 'sub_type') === SUBTYPE_ROUTE_TARGET)
          routeTargets.push(`${num(c, 'asn')}:${num(c, 'local_admin')}`);
        else if (ct === 'MacMobilityExtended') {
          seq = num(c, 'sequence_num');
          sticky = c.is_sticky === true;
        }
      }
    }
  }
  const t = typeOf(nlri);
  if (t === 'EVPNMACIPAdvertisementRoute') {
    const ip = str(nlri, 'ip_address');
    const labels = (nlri.labels ?? []) as number[];
    return {
      kind: 'macip',
      rd: decodeRd(nlri.rd),
      ethernetTag: num(nlri, 'ethernet_tag'),
      mac: str(nlri, 'mac_address').toLowerCase(),
      ...(isIP(ip) ? { ip } : {}),
      vni: labels[0] ?? 0,
      nextHop,
      routeTargets,
      seq,
      sticky,
    };
  }
  if (t === 'EVPNInclusiveMulticastEthernetTagRoute') {
    return { kind: 'multicast', rd: decodeRd(nlri.rd), ethernetTag: num(nlri, 'ethernet_tag'), originator: str(nlri, 'ip_address'), vni: pmsiLabel, nextHop, routeTargets };
  }
  return null;
}

/** The neighbor a path came from, or null for a path this speaker originated. */
function pathNeighbor(p: Obj): string | null {
  const n = str(p, 'neighbor_ip');
  return isIP(n) && n !== '0.0.0.0' && n !== '::' ? n : null;
}

// ---- the client ----

const STATES: Record<string, SessionState> = { UNKNOWN: 'unknown', IDLE: 'idle', CONNECT: 'connect', ACTIVE: 'active', OPENSENT: 'opensent', OPENCONFIRM: 'openconfirm', ESTABLISHED: 'established' };

type Unary = (req: Obj, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Obj) => void) => void;
type Streaming = (req: Obj) => grpc.ClientReadableStream<Obj>;

interface GobgpApiClient extends grpc.Client {
  GetBgp: Unary;
  AddPath: Unary;
  DeletePath: Unary;
  ListPeer: Streaming;
  ListPath: Streaming;
  WatchEvent: Streaming;
}

function loadApi(protoDir: string): grpc.ServiceClientConstructor {
  const file = join(protoDir, 'gobgp.proto');
  if (!existsSync(file)) throw new Error(`GoBGP's API definition ${file} is missing (apt-get install golang-github-osrg-gobgp-dev, or give protoDir)`);
  const def = protoLoader.loadSync([file, join(protoDir, 'attribute.proto'), join(protoDir, 'capability.proto')], {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    json: true,
    includeDirs: [protoDir],
  });
  const pkg = grpc.loadPackageDefinition(def).apipb as grpc.GrpcObject;
  return pkg.GobgpApi as grpc.ServiceClientConstructor;
}

/** "unix:PATH" as gRPC's and gobgpd's "unix://PATH"; "HOST:PORT" as it is. */
function grpcTarget(api: string): string {
  return api.startsWith('unix:') ? `unix://${api.slice(5).replace(/^\/\//, '')}` : api;
}

function tomlString(s: string): string {
  return JSON.stringify(s);
}

/** gobgpd's TOML config: the global AS, router id and listener, and each neighbor with the EVPN family. */
export function gobgpdConfig(o: GoBgpStartOptions): string {
  const lines = ['[global.config]', `  as = ${o.asn}`, `  router-id = ${tomlString(o.routerId)}`, `  port = ${o.listenPort ?? 179}`];
  if (o.listenAddress !== undefined) lines.push(`  local-address-list = [${tomlString(o.listenAddress)}]`);
  for (const n of o.neighbors) {
    lines.push(
      '[[neighbors]]',
      '  [neighbors.config]',
      `    neighbor-address = ${tomlString(n.address)}`,
      `    peer-as = ${n.asn}`,
      '  [neighbors.timers.config]',
      `    connect-retry = ${o.connectRetry ?? 5}`,
      `    hold-time = ${o.holdTime ?? 9}`,
      `    keepalive-interval = ${Math.max(1, Math.floor((o.holdTime ?? 9) / 3))}`,
    );
    if (o.listenAddress !== undefined) lines.push('  [neighbors.transport.config]', `    local-address = ${tomlString(o.listenAddress)}`);
    lines.push('  [[neighbors.afi-safis]]', '    [neighbors.afi-safis.config]', '      afi-safi-name = "l2vpn-evpn"');
  }
  return lines.join('\n') + '\n';
}

function checkStartOptions(o: GoBgpStartOptions): void {
  checkU32('asn', o.asn, 1);
  checkIp('routerId', o.routerId, true);
  if (o.listenAddress !== undefined) checkIp('listenAddress', o.listenAddress);
  if (o.listenPort !== undefined) checkU32('listenPort', o.listenPort, 1, 65535);
  if (o.connectRetry !== undefined) checkU32('connectRetry', o.connectRetry, 1, 3600);
  if (o.holdTime !== undefined) checkU32('holdTime', o.holdTime, 3, 65535);
  if (o.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(o.netns)) throw new RangeError(`netns: expected a namespace name, got ${JSON.stringify(o.netns)}`);
  o.neighbors.forEach((n, i) => {
    checkIp(`neighbors[${i}].address`, n.address);
    checkU32(`neighbors[${i}].asn`, n.asn, 1);
  });
}

function call(client: GobgpApiClient, method: 'GetBgp' | 'AddPath' | 'DeletePath', req: Obj, timeoutMs = 10_000): Promise<Obj> {
  return new Promise((resolve, reject) => {
    client[method](req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(new Error(`GoBGP ${method}: ${err.details || err.message}`)) : resolve(res ?? {})));
  });
}

function collect(stream: grpc.ClientReadableStream<Obj>, what: string): Promise<Obj[]> {
  return new Promise((resolve, reject) => {
    const out: Obj[] = [];
    stream.on('data', (d: Obj) => out.push(d));
    stream.on('error', (e: grpc.ServiceError) => reject(new Error(`GoBGP ${what}: ${e.details || e.message}`)));
    stream.on('end', () => resolve(out));
  });
}

export interface GoBgpEvents {
  route: [EvpnRouteEvent];
  peer: [NeighborStatus];
  /** The watch stream or the daemon failed; the object stays usable for calls where the daemon still runs. */
  error: [Error];
}

/** A GoBGP speaker, started here or already running, driven through its gRPC API. */
export class GoBgp extends EventEmitter<GoBgpEvents> {
  readonly #client: GobgpApiClient;
  readonly #child: ChildProcess | null;
  readonly #logFile: string | null;
  #watch: grpc.ClientReadableStream<Obj> | null = null;
  /** Best paths from neighbors, by route key. */
  readonly #in = new Map<string, EvpnRouteEvent>();
  /** What this speaker was asked to advertise, by route key, with the API's uuid to delete it. */
  readonly #out = new Map<string, { route: EvpnRoute; uuid: Buffer }>();
  #closed = false;
  readonly #log = log.child({ component: 'evpn' });

  private constructor(
    client: GobgpApiClient,
    child: ChildProcess | null,
    logFile: string | null,
    readonly api: string,
  ) {
    super();
    this.#client = client;
    this.#child = child;
    this.#logFile = logFile;
  }

  /** Runs gobgpd with its own config file and API socket in `dir`, and waits until its API answers. */
  static async start(o: GoBgpStartOptions): Promise<GoBgp> {
    checkStartOptions(o);
    const Client = loadApi(o.protoDir ?? DEFAULT_PROTO_DIR);
    mkdirSync(o.dir, { recursive: true });
    const config = join(o.dir, 'gobgpd.toml');
    writeFileSync(config, gobgpdConfig(o));
    const api = o.api ?? `unix:${join(o.dir, 'gobgp.sock')}`;
    const logFile = join(o.dir, 'gobgpd.log');
    const out = openSync(logFile, 'a');
    const args = ['-f', config, '-t', 'toml', '--api-hosts', grpcTarget(api), '-p', '--pprof-disable'];
    const bin = o.binary ?? 'gobgpd';
    let child: ChildProcess;
    try {
      child = o.netns !== undefined ? spawn('ip', ['netns', 'exec', o.netns, bin, ...args], { stdio: ['ignore', out, out] }) : spawn(bin, args, { stdio: ['ignore', out, out] });
    } finally {
      closeSync(out);
    }
    // An error or exit before the API answers fails the start (the race below); the listeners
    // go once it answered, and the 'exit' listener below reports later exits.
    let onError: (e: Error) => void = () => undefined;
    let onEarlyExit: (code: number | null, signal: NodeJS.Signals | null) => void = () => undefined;
    const exited = new Promise<never>((_, reject) => {
      onError = (e) => reject(new Error(`gobgpd: ${e.message}`));
      onEarlyExit = (code, signal) => reject(new Error(`gobgpd exited (${signal ?? code}) before its API answered: ${tail(logFile)}`));
      child.once('error', onError);
      child.once('exit', onEarlyExit);
    });
    const client = new Client(grpcTarget(api), grpc.credentials.createInsecure()) as unknown as GobgpApiClient;
    const g = new GoBgp(client, child, logFile, api);
    child.on('exit', (code, signal) => {
      if (!g.#closed) {
        g.#log.error('gobgpd exited', { code, signal, log: tail(logFile) });
        g.emit('error', new Error(`gobgpd exited (${signal ?? code})`));
      }
    });
    try {
      await Promise.race([g.#waitReady(15_000), exited]);
    } catch (e) {
      await g.close();
      throw e;
    } finally {
      child.off('error', onError);
      child.off('exit', onEarlyExit);
    }
    g.#log.info('gobgpd started', { pid: child.pid, api, asn: o.asn, routerId: o.routerId, neighbors: o.neighbors.map((n) => n.address).join(',') });
    return g;
  }

  /** A gobgpd that is already running, configured by its owner: "unix:PATH" or "HOST:PORT". */
  static async connect(api: string, o: { protoDir?: string; timeoutMs?: number } = {}): Promise<GoBgp> {
    const Client = loadApi(o.protoDir ?? DEFAULT_PROTO_DIR);
    const client = new Client(grpcTarget(api), grpc.credentials.createInsecure()) as unknown as GobgpApiClient;
    const g = new GoBgp(client, null, null, api);
    try {
      await g.#waitReady(o.timeoutMs ?? 10_000);
    } catch (e) {
      await g.close();
      throw e;
    }
    return g;
  }

  async #waitReady(ms: number): Promise<void> {
    const until = Date.now() + ms;
    let last = '';
    while (Date.now() < until) {
      try {
        await call(this.#client, 'GetBgp', {}, 1000);
        return;
      } catch (e) {
        last = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`GoBGP API at ${this.api} did not answer in ${ms / 1000} s: ${last}`);
  }

  /** The global settings: { asn, routerId }. */
  async global(): Promise<{ asn: number; routerId: string }> {
    const r = await call(this.#client, 'GetBgp', {});
    const g = (r.global ?? {}) as Obj;
    return { asn: num(g, 'asn'), routerId: str(g, 'router_id') };
  }

  /** Advertises a route (again: replaces the one with the same NLRI, e.g. a new MAC mobility sequence). */
  async advertise(route: EvpnRoute): Promise<void> {
    const path = encodePath(route);
    const r = await call(this.#client, 'AddPath', { table_type: 'GLOBAL', path });
    const key = routeKey(route);
    this.#out.set(key, { route, uuid: Buffer.from((r.uuid as Uint8Array | undefined) ?? []) });
    this.#log.debug('advertised', { route: formatRoute(route) });
  }

  /** Withdraws a route this speaker advertised; false if it had none with that NLRI. */
  async withdraw(route: EvpnRoute): Promise<boolean> {
    const key = routeKey(route);
    const mine = this.#out.get(key);
    if (!mine) return false;
    await call(this.#client, 'DeletePath', { table_type: 'GLOBAL', family: EVPN_FAMILY, uuid: mine.uuid });
    this.#out.delete(key);
    this.#log.debug('withdrew', { route: formatRoute(route) });
    return true;
  }

  /** Routes this speaker advertises ("out"). */
  routesOut(): EvpnRoute[] {
    return [...this.#out.values()].map((v) => v.route);
  }

  /** Best paths from neighbors ("in"), as the watch has seen them. */
  routesIn(): EvpnRouteEvent[] {
    return [...this.#in.values()];
  }

  /** The whole EVPN table as the daemon has it now (best and not, local and from neighbors). */
  async listPaths(): Promise<EvpnRouteEvent[]> {
    const stream = this.#client.ListPath({ table_type: 'GLOBAL', family: EVPN_FAMILY });
    const out: EvpnRouteEvent[] = [];
    for (const d of await collect(stream, 'ListPath')) {
      for (const p of ((d.destination as Obj | undefined)?.paths ?? []) as Obj[]) {
        const route = decodePath(p);
        if (route) out.push({ route, withdrawn: false, neighbor: pathNeighbor(p) });
      }
    }
    return out;
  }

  async neighbors(): Promise<NeighborStatus[]> {
    const rows = await collect(this.#client.ListPeer({}), 'ListPeer');
    return rows.map((r) => peerStatus((r.peer ?? {}) as Obj));
  }

  /**
   * Watches best-path changes and neighbor state: `route` for each EVPN best path added or
   * withdrawn (first those already in the table), `peer` for each session state change.
   */
  watch(): void {
    if (this.#watch || this.#closed) return;
    const s = this.#client.WatchEvent({ peer: {}, table: { filters: [{ type: 'BEST', init: true }] } });
    this.#watch = s;
    s.on('data', (ev: Obj) => this.#onEvent(ev));
    s.on('error', (e: grpc.ServiceError) => {
      if (this.#closed || e.code === grpc.status.CANCELLED) return;
      this.#watch = null;
      this.emit('error', new Error(`GoBGP WatchEvent: ${e.details || e.message}`));
    });
  }

  #onEvent(ev: Obj): void {
    if (ev.peer) {
      const p = (ev.peer as Obj).peer as Obj | undefined;
      const type = (ev.peer as Obj).type;
      // INIT: each configured neighbor as it is when the watch starts; STATE: a change.
      if (p && (type === 'INIT' || type === 'STATE')) this.emit('peer', peerStatus(p));
      return;
    }
    for (const p of ((ev.table as Obj | undefined)?.paths ?? []) as Obj[]) {
      const route = decodePath(p);
      if (!route) continue;
      const neighbor = pathNeighbor(p);
      const e: EvpnRouteEvent = { route, withdrawn: p.is_withdraw === true, neighbor };
      if (neighbor !== null) {
        const key = routeKey(route);
        if (e.withdrawn) this.#in.delete(key);
        else this.#in.set(key, e);
      }
      this.emit('route', e);
    }
  }

  /** Stops watching; stops the daemon if this object started it (its routes go with it). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch?.cancel();
    this.#watch = null;
    this.#client.close();
    const child = this.#child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
  }

  /** The daemon's pid, if this object started it. */
  get pid(): number | null {
    return this.#child?.pid ?? null;
  }

  /** The last lines of the daemon's log (one it started), for errors. */
  logTail(): string {
    return this.#logFile ? tail(this.#logFile) : '';
  }
}

function peerStatus(p: Obj): NeighborStatus {
  const st = (p.state ?? {}) as Obj;
  const conf = (p.conf ?? {}) as Obj;
  const timers = ((p.timers ?? {}) as Obj).state as Obj | undefined;
  const state = STATES[str(st, 'session_state')] ?? 'unknown';
  const stamp = (state === 'established' ? timers?.uptime : timers?.downtime) as Obj | undefined;
  const secs = stamp ? num(stamp, 'seconds') : 0;
  return {
    address: str(st, 'neighbor_address') || str(conf, 'neighbor_address'),
    asn: num(st, 'peer_asn') || num(conf, 'peer_asn'),
    state,
    since: secs > 0 ? Math.max(0, Math.round(Date.now() / 1000 - secs)) : null,
  };
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-6).join('\n');
  } catch {
    return '';
  }
}
