// The host configuration `vhostkit run --config FILE` reads (JSON, or YAML by extension):
// switches with their ports, disks, the management API and socket permissions. Checked as
// a whole against its schema (schema.ts) before anything starts: every problem is reported
// with the path of the bad key and what was expected. The flags of `switch` and `blk` and
// the API's bodies are checked by the same functions.
import { readFileSync } from 'node:fs';
import { resolve, dirname, isAbsolute } from 'node:path';
import type { z } from 'zod';
import type { PollMode } from '../dataplane/poller.js';
import type { VlanConfig } from '../switch/engine.js';
import { parseFlow } from '../switch/flows.js';
import { dataplaneThreads } from '../switch/dataplane.js';
import type { EvpnServiceOptions } from '../evpn/service.js';
import { SUB, diskSchema, hostSchema, show, switchSchema, tapPortSchema, vhostPortSchema, vlanSchema, vxlanPortSchema } from './schema.js';

export interface VhostPortConfig {
  kind: 'vhost-user';
  name: string;
  socket: string;
  mode: 'server' | 'client';
  mac?: string;
  queues: number;
  mtu?: number;
  packed: boolean;
  vlan?: VlanConfig;
}
export interface TapPortConfig {
  kind: 'tap';
  name: string;
  ifname: string;
  offloads: boolean;
  vlan?: VlanConfig;
}
export interface VxlanPortConfig {
  kind: 'vxlan';
  name: string;
  remote: string;
  vni: number;
  local?: string;
  dstport?: number;
  vlan?: VlanConfig;
}
export type PortConfig = VhostPortConfig | TapPortConfig | VxlanPortConfig;

export interface SwitchConfig {
  name: string;
  poll: PollMode;
  /** the data plane's CPUs: one thread on each, unless threads says how many */
  cpus?: number[];
  threads?: number;
  aging: number;
  /** forward on the main thread instead of a data-plane worker */
  inline: boolean;
  hook?: { module: string; export?: string };
  ports: PortConfig[];
  /** packet handlers (their modules resolved against the configuration's directory) */
  handlers?: Array<{ name: string; module: string; export?: string; options?: unknown }>;
  /** the flow table at start, in ovs-ofctl syntax (added after the ports, which they may name) */
  flows?: string[];
}

export interface DiskConfig {
  name: string;
  socket: string;
  mode: 'server' | 'client';
  file?: string;
  ram?: bigint;
  readOnly: boolean;
  direct: boolean;
  /** the image may be served by other shared disks at once (a live migration's two ends) */
  shared: boolean;
  /** 'raw': serve the image as raw without looking at its first bytes */
  format?: 'raw';
  serial?: string;
  queues: number;
  threads: number;
  /** request engine: 'threads', 'io_uring' or 'auto' (io_uring where the kernel allows it) */
  engine: 'threads' | 'io_uring' | 'auto';
  /** io_uring engine: after a kick, poll the ring up to this many µs before sleeping (0: off) */
  pollUs: number;
  packed: boolean;
  /** requests in flight at most, over all queues (beyond it, chains wait in their rings) */
  maxInFlight: number;
}

export interface HostConfig {
  /** management API: "unix:/path", "HOST:PORT", null for none, undefined: not said (the default applies) */
  api?: string | null;
  /** a file holding the API's bearer token; required for an API on a non-loopback address */
  apiTokenFile?: string;
  /** where captures asked through the API may write; none: such captures are refused */
  captureDir?: string;
  /** directories of the images that disks added through the API may serve */
  imageDirs: string[];
  /** disks added through the API may serve block devices (inside imageDirs) */
  allowBlockDevices: boolean;
  /** directories where ports and disks added through the API may have their sockets (default: those of the configured sockets) */
  socketDirs: string[];
  /** TAP and VXLAN ports may be added through the API */
  allowHostPorts: boolean;
  /** permission bits of the sockets we create (default 0o600) */
  socketMode: number;
  /** group the sockets we create are given (name or gid) */
  socketGroup?: string;
  /**
   * where vhost-user net ports keep their ring records (ring-record.ts), so packed rings
   * survive a restart of the process; null: none; undefined: not said (the default applies)
   */
  stateDir?: string | null;
  /** what one frontend may make a session hold, on every vhost-user socket (SessionLimits) */
  limits: { maxMemSlots?: number; maxMappedBytes?: bigint };
  switches: SwitchConfig[];
  disks: DiskConfig[];
  /** BGP EVPN (docs/evpn.md) */
  evpn?: EvpnConfig;
}

export type EvpnConfig = EvpnServiceOptions;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`configuration: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks raw against a schema; its problems go to `problems`, worded under `path`. */
function check<T extends z.ZodType>(schema: T, raw: unknown, path: string, problems: string[]): z.output<T> | undefined {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const seen = new Set<string>();
  for (const iss of r.error.issues) {
    let where = [path, ...iss.path.map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`))].join('').replace(/^\./, '');
    let msg = iss.message;
    // A check that names a key below its own value: SUB key SUB message.
    if (msg.startsWith(SUB)) {
      const [, sub, rest] = msg.split(SUB);
      where = `${where}.${sub}`;
      msg = rest;
    }
    const lines = iss.code === 'unrecognized_keys' ? iss.keys.map((k) => `${where ? `${where}.` : ''}${k}: ${msg}`) : [`${where || '(top level)'}: ${msg}`];
    for (const line of lines) {
      // one problem per key: a value that fails several checks is reported by the first
      const key = line.slice(0, line.indexOf(': '));
      if (seen.has(key)) continue;
      seen.add(key);
      problems.push(line);
    }
  }
  return undefined;
}

/** Paths in a file are relative to the file's directory. */
function pathFrom(base: string, p: string): string;
function pathFrom(base: string, p: string | undefined): string | undefined;
function pathFrom(base: string, p: string | undefined): string | undefined {
  return p === undefined ? undefined : isAbsolute(p) ? p : resolve(base, p);
}

/** The name a socket path gives a port or disk that has none: its file name without .sock. */
const nameOfSocket = (socket: string) => socket.replace(/^.*\//, '').replace(/\.sock$/, '');

function parsePort(raw: unknown, path: string, problems: string[], base: string): PortConfig | undefined {
  if (!isObj(raw)) {
    problems.push(`${path}: expected an object, got ${show(raw)}`);
    return undefined;
  }
  const kind = raw.kind ?? (raw.ifname !== undefined ? 'tap' : raw.remote !== undefined ? 'vxlan' : 'vhost-user');
  // A port with problems still has a name (if it can be told), so that a second port of the
  // same name is reported too; the problems make the whole check fail.
  const str = (k: string) => (typeof raw[k] === 'string' && raw[k] !== '' ? (raw[k] as string) : undefined);
  const partial = (name: string | undefined): PortConfig | undefined => (name === undefined ? undefined : ({ kind, name } as PortConfig));
  if (kind === 'tap') {
    const t = check(tapPortSchema, raw, path, problems);
    if (!t) return partial(str('name') ?? str('ifname'));
    return { kind: 'tap', name: t.name ?? t.ifname, ifname: t.ifname, offloads: t.offloads, vlan: t.vlan };
  }
  if (kind === 'vxlan') {
    const x = check(vxlanPortSchema, raw, path, problems);
    if (!x) return partial(str('name') ?? (typeof raw.vni === 'number' ? `vxlan${raw.vni}` : undefined));
    return { kind: 'vxlan', name: x.name ?? `vxlan${x.vni}`, remote: x.remote, vni: x.vni, local: x.local, dstport: x.dstport, vlan: x.vlan };
  }
  if (kind !== 'vhost-user') {
    problems.push(`${path}.kind: expected "vhost-user", "tap" or "vxlan", got ${show(kind)}`);
    return undefined;
  }
  const v = check(vhostPortSchema, raw, path, problems);
  if (!v) {
    const sock = str('socket');
    const p = partial(str('name') ?? (sock === undefined ? undefined : nameOfSocket(sock)));
    return p && sock !== undefined ? ({ ...p, socket: pathFrom(base, sock) } as PortConfig) : p;
  }
  const socket = pathFrom(base, v.socket);
  return { kind: 'vhost-user', name: v.name ?? nameOfSocket(socket), socket, mode: v.mode, mac: v.mac, queues: v.queues, mtu: v.mtu, packed: v.packed, vlan: v.vlan };
}

function parseSwitch(raw: unknown, path: string, problems: string[], base: string, index: number): SwitchConfig | undefined {
  const s = check(switchSchema, raw, path, problems);
  if (!s) {
    // Its ports and its name are still checked, so that every problem is said at once.
    if (!isObj(raw)) return undefined;
    const named = typeof raw.name === 'string' && switchSchema.shape.name.safeParse(raw.name).success;
    const partial: SwitchConfig = { name: named ? (raw.name as string) : `sw${index}`, poll: 'event', aging: 300, inline: false, ports: [] };
    if (Array.isArray(raw.ports)) addPorts(partial, raw.ports, path, problems, base);
    // the handlers' names that are right, and the flows that are strings (the schema reports the others)
    if (Array.isArray(raw.handlers)) {
      const names = raw.handlers.map((h: unknown) => (isObj(h) && typeof h.name === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(h.name) ? h.name : null));
      partial.handlers = [...new Set(names.filter((n): n is string => n !== null))].map((name) => ({ name, module: '' }));
    }
    if (Array.isArray(raw.flows)) partial.flows = checkFlows(partial, raw.flows as unknown[], path, problems);
    return partial;
  }
  if (s.inline && s.cpus) problems.push(`${path}.cpus: pins the data-plane thread: not with inline`);
  const threads = dataplaneThreads(s);
  if (s.inline && threads > 1) problems.push(`${path}.threads: several data-plane threads need the worker data plane, not inline`);
  if (threads > 1 && s.hook) problems.push(`${path}.hook: a hook needs one data-plane thread (this switch has ${threads})`);
  if (threads > 1 && s.handlers.length > 0) problems.push(`${path}.handlers: packet handlers need one data-plane thread (this switch has ${threads})`);
  let hook: SwitchConfig['hook'];
  if (s.hook) {
    const [file, exp] = s.hook.split(':');
    hook = { module: pathFrom(base, file), export: exp };
  }
  const sw: SwitchConfig = { name: s.name ?? `sw${index}`, poll: s.poll as PollMode, cpus: s.cpus, threads: s.threads, aging: s.aging, inline: s.inline, hook, ports: [] };
  sw.handlers = s.handlers.map((h) => ({ name: h.name, module: pathFrom(base, h.module), export: h.export, options: h.options }));
  s.handlers.forEach((h, i) => {
    if (s.handlers.findIndex((x) => x.name === h.name) < i) problems.push(`${path}.handlers[${i}].name: ${h.name} is given twice`);
  });
  addPorts(sw, s.ports, path, problems, base);
  sw.flows = checkFlows(sw, s.flows, path, problems);
  return sw;
}

/**
 * Checks a switch's flows as Switch.addFlow will parse them, with in_port= and output:
 * resolved against the switch's configured ports (they are added first), so that a bad flow
 * is said before anything starts. Two flows of the same priority and match are refused: the
 * second would replace the first.
 */
function checkFlows(sw: SwitchConfig, flows: unknown[], path: string, problems: string[]): string[] {
  const names = sw.ports.map((p) => p.name);
  const port = (n: string): number => {
    const i = names.indexOf(n);
    if (i < 0) throw new RangeError(`no port ${n} on this switch (${names.length ? `its ports: ${names.join(', ')}` : 'it has no ports'})`);
    return i + 1;
  };
  const handlers = (sw.handlers ?? []).map((h) => h.name);
  const handler = (n: string): number => {
    const i = handlers.indexOf(n);
    if (i < 0) throw new RangeError(`no handler ${n} on this switch (${handlers.length ? `its handlers: ${handlers.join(', ')}` : 'it has none'})`);
    return i + 1;
  };
  const seen = new Map<string, number>();
  const out: string[] = [];
  flows.forEach((f, i) => {
    if (typeof f !== 'string') return;
    const p = `${path}.flows[${i}]`;
    let spec: ReturnType<typeof parseFlow>;
    try {
      spec = parseFlow(f, port, false, handler);
    } catch (e) {
      problems.push(`${p}: ${(e as Error).message}`);
      return;
    }
    const key = `${spec.priority} ${spec.match}`;
    const prev = seen.get(key);
    if (prev !== undefined) problems.push(`${p}: the same priority and match as ${path}.flows[${prev}] (it would replace it)`);
    else seen.set(key, i);
    out.push(f);
  });
  return out;
}

function addPorts(sw: SwitchConfig, ports: unknown[], path: string, problems: string[], base: string): void {
  const seen = new Set<string>();
  ports.forEach((r, i) => {
    const p = `${path}.ports[${i}]`;
    const port = parsePort(r, p, problems, base);
    if (!port) return;
    if (seen.has(port.name)) problems.push(`${p}: name ${JSON.stringify(port.name)} is used twice in this switch`);
    seen.add(port.name);
    sw.ports.push(port);
  });
}

function parseDisk(raw: unknown, path: string, problems: string[], base: string): DiskConfig | undefined {
  const d = check(diskSchema, raw, path, problems);
  if (!d) {
    if (!isObj(raw)) return undefined;
    // exactly one of file and ram, said even when other keys are wrong
    if ((raw.file === undefined) === (raw.ram === undefined)) problems.push(`${path}.file: give exactly one of file and ram`);
    // A disk with problems still has a name and a socket (if they can be told), so that
    // another of the same is reported too; the problems make the whole check fail.
    const sock = typeof raw.socket === 'string' && raw.socket !== '' ? pathFrom(base, raw.socket) : undefined;
    const nm = typeof raw.name === 'string' && raw.name !== '' ? raw.name : sock === undefined ? undefined : nameOfSocket(sock);
    return sock === undefined || nm === undefined ? undefined : ({ name: nm, socket: sock } as DiskConfig);
  }
  const socket = pathFrom(base, d.socket);
  if ((d.file === undefined) === (d.ram === undefined)) {
    problems.push(`${path}.file: give exactly one of file and ram`);
    return { name: d.name ?? nameOfSocket(socket), socket } as DiskConfig; // for the checks of names and sockets used twice
  }
  if (d.pollUs > 0 && d.engine === 'threads') problems.push(`${path}.pollUs: ${d.pollUs} polls the io_uring engine's ring; engine threads has none (use engine io_uring or auto, or pollUs 0)`);
  return {
    name: d.name ?? nameOfSocket(socket),
    socket,
    mode: d.mode,
    file: pathFrom(base, d.file),
    ram: d.ram,
    readOnly: d.readOnly,
    direct: d.direct,
    shared: d.shared,
    format: d.format,
    serial: d.serial,
    queues: d.queues ?? d.threads,
    threads: d.threads,
    engine: d.engine,
    pollUs: d.pollUs,
    packed: d.packed,
    maxInFlight: d.maxInFlight,
  };
}

/** A request body checked against its schema (schema.ts apiBodies); throws ConfigError naming each problem. */
export function parseBody<T extends z.ZodType>(schema: T, raw: unknown): z.output<T> {
  return checked((pr) => check(schema, raw ?? {}, 'body', pr));
}

function checked<T>(f: (problems: string[]) => T | undefined): T {
  const problems: string[] = [];
  const v = f(problems);
  if (problems.length > 0 || v === undefined) throw new ConfigError(problems.length ? problems : ['invalid']);
  return v;
}

/** One port as the management API takes it (same keys as in a switch's "ports" list). */
export function parsePortConfig(raw: unknown, base = process.cwd()): PortConfig {
  return checked((pr) => parsePort(raw, 'port', pr, base));
}

/** One disk as the management API takes it (same keys as in "disks"). */
export function parseDiskConfig(raw: unknown, base = process.cwd()): DiskConfig {
  return checked((pr) => parseDisk(raw, 'disk', pr, base));
}

/** One switch as the management API takes it (same keys as in "switches"). */
export function parseSwitchConfig(raw: unknown, base = process.cwd()): SwitchConfig {
  return checked((pr) => parseSwitch(raw, 'switch', pr, base, 0));
}

/** A VLAN setting as the management API takes it: a VLAN id, or { mode, vid } / { mode, allowed, native }. */
export function parseVlanConfig(raw: unknown): VlanConfig {
  return checked((pr) => check(vlanSchema, raw, 'vlan', pr));
}

/** Checks a parsed configuration object; throws ConfigError listing every problem. `base` resolves relative paths. */
export function parseConfig(raw: unknown, base = process.cwd()): HostConfig {
  const problems: string[] = [];
  const top = check(hostSchema, raw, '', problems);
  const cfg: HostConfig = {
    api: top?.api,
    apiTokenFile: pathFrom(base, top?.apiTokenFile),
    captureDir: pathFrom(base, top?.captureDir),
    imageDirs: (top?.imageDirs ?? []).map((d) => resolve(base, d)),
    allowBlockDevices: top?.allowBlockDevices ?? false,
    socketDirs: (top?.socketDirs ?? []).map((d) => resolve(base, d)),
    allowHostPorts: top?.allowHostPorts ?? false,
    socketMode: top?.socketMode ?? 0o600,
    socketGroup: top?.socketGroup,
    stateDir: top?.stateDir === null || top?.stateDir === undefined ? top?.stateDir : resolve(base, top.stateDir),
    limits: Object.fromEntries(Object.entries(top?.limits ?? {}).filter(([, v]) => v !== undefined)) as HostConfig['limits'],
    switches: [],
    disks: [],
  };
  const names = new Map<string, string>(); // port and disk names are one namespace (the API addresses them by name)
  const sockets = new Map<string, string>();
  const claim = (map: Map<string, string>, key: string, path: string, what: string) => {
    const prev = map.get(key);
    if (prev !== undefined) problems.push(`${path}: ${what} ${JSON.stringify(key)} is already used by ${prev}`);
    else map.set(key, path);
  };
  const swNames = new Map<string, string>();
  // The lists are checked item by item even when the top level has problems, so that every
  // problem is said at once.
  const raws = (key: 'switches' | 'disks'): unknown[] => top?.[key] ?? (isObj(raw) && Array.isArray(raw[key]) ? raw[key] : []);
  raws('switches').forEach((r, i) => {
    const path = `switches[${i}]`;
    const sw = parseSwitch(r, path, problems, base, cfg.switches.length);
    if (!sw) return;
    claim(swNames, sw.name, `${path}.name`, 'switch name');
    for (const [j, port] of sw.ports.entries()) {
      if (sw.ports.findIndex((q) => q.name === port.name) !== j) continue; // reported by parseSwitch
      claim(names, port.name, `${path}.ports (${port.name})`, 'name');
      if (port.kind === 'vhost-user') claim(sockets, port.socket, `${path}.ports (${port.name}).socket`, 'socket');
    }
    cfg.switches.push(sw);
  });
  raws('disks').forEach((r, i) => {
    const path = `disks[${i}]`;
    const d = parseDisk(r, path, problems, base);
    if (!d) return;
    claim(names, d.name, path, 'name');
    claim(sockets, d.socket, `${path}.socket`, 'socket');
    cfg.disks.push(d);
  });
  if (top?.evpn) {
    const e = top.evpn;
    cfg.evpn = { ...e, gobgpDir: pathFrom(base, e.gobgpDir) };
    // Each VNI names a VXLAN access port of a configured switch, and is given once.
    e.vnis.forEach((v, i) => {
      const path = `evpn.vnis[${i}]`;
      if (e.vnis.findIndex((w) => w.vni === v.vni) < i) problems.push(`${path}.vni: ${v.vni} is given twice`);
      const sw = cfg.switches.find((x) => x.name === v.switch);
      if (!sw) return problems.push(`${path}.switch: no switch ${JSON.stringify(v.switch)} in switches`);
      const port = sw.ports.find((p) => p.name === v.port);
      if (!port || port.kind !== 'vxlan') return problems.push(`${path}.port: switch ${v.switch} has no VXLAN port ${JSON.stringify(v.port)}`);
      if (port.vlan && port.vlan.mode !== 'access') problems.push(`${path}.port: ${v.port} must be an access port (one VLAN per VNI)`);
      if (port.vni !== v.vni) problems.push(`${path}.vni: port ${v.port} carries VNI ${port.vni}, not ${v.vni}`);
      // Snooping and suppression run as the packet handler evpn-arp on the VNI's switch.
      const threads = dataplaneThreads(sw);
      const neigh = (['arpSnooping', 'ndSnooping', 'arpSuppression'] as const).filter((k) => e[k]);
      if (neigh.length > 0 && threads > 1) {
        problems.push(`${path}.switch: ${neigh.join(', ')} add a packet handler to switch ${v.switch}, which needs one data-plane thread (it has ${threads})`);
      }
    });
  }
  if (problems.length > 0 || top === undefined) throw new ConfigError(problems.length ? problems : ['invalid']);
  return cfg;
}

/** Reads and checks a configuration file (.json, or .yaml / .yml). */
export async function loadConfig(file: string): Promise<HostConfig> {
  return parseConfig(await readConfigFile(file), dirname(resolve(file)));
}

/** A configuration file's contents, parsed but not checked. */
export async function readConfigFile(file: string): Promise<unknown> {
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`${file}: ${(e as Error).message}`]);
  }
  let raw: unknown;
  try {
    if (/\.ya?ml$/i.test(path)) {
      const YAML = await import('yaml');
      raw = YAML.parse(text);
    } else {
      raw = JSON.parse(text);
    }
  } catch (e) {
    throw new ConfigError([`${file}: not valid ${/\.ya?ml$/i.test(path) ? 'YAML' : 'JSON'}: ${(e as Error).message}`]);
  }
  return raw;
}
