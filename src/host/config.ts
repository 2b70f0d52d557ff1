// The host configuration `vhostkit run --config FILE` reads (JSON, or YAML by extension):
// switches with their ports, disks, the management API and socket permissions. Checked as
// a whole before anything starts: every problem is reported with the path of the bad key
// and what was expected.
import { readFileSync } from 'node:fs';
import { resolve, dirname, isAbsolute } from 'node:path';
import { POLL_MODES, type PollMode } from '../dataplane/poller.js';
import type { VlanConfig } from '../switch/engine.js';
import { parseSize } from '../backends/blk/disk.js';
import { parseCpuList } from '../native/affinity.js';
import { MAX_REGIONS } from '../native/guest-memory.js';

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
  cpus?: number[];
  aging: number;
  /** forward on the main thread instead of a data-plane worker */
  inline: boolean;
  hook?: { module: string; export?: string };
  ports: PortConfig[];
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
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`configuration: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

type Obj = Record<string, unknown>;

/** Reads fields of one object, recording problems under its path. */
class Reader {
  constructor(
    private readonly o: Obj,
    readonly path: string,
    private readonly problems: string[],
    private readonly known: string[],
  ) {
    for (const k of Object.keys(o)) if (!known.includes(k)) this.bad(k, `unknown key (expected one of: ${known.join(', ')})`);
  }

  at(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  bad(key: string, what: string): undefined {
    this.problems.push(`${this.at(key)}: ${what}`);
    return undefined;
  }

  has(key: string): boolean {
    return this.o[key] !== undefined;
  }

  str(key: string, required: boolean, re?: RegExp, hint?: string): string | undefined {
    const v = this.o[key];
    if (v === undefined) return required ? this.bad(key, 'required') : undefined;
    if (typeof v !== 'string' || v.length === 0) return this.bad(key, `expected a non-empty string, got ${show(v)}`);
    if (re && !re.test(v)) return this.bad(key, `expected ${hint}, got ${show(v)}`);
    return v;
  }

  int(key: string, def: number, min: number, max: number): number {
    const v = this.o[key];
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.bad(key, `expected an integer in ${min}..${max}, got ${show(v)}`);
      return def;
    }
    return v;
  }

  optInt(key: string, min: number, max: number): number | undefined {
    return this.has(key) ? this.int(key, min, min, max) : undefined;
  }

  bool(key: string, def: boolean): boolean {
    const v = this.o[key];
    if (v === undefined) return def;
    if (typeof v !== 'boolean') {
      this.bad(key, `expected true or false, got ${show(v)}`);
      return def;
    }
    return v;
  }

  oneOf<T extends string>(key: string, values: readonly T[], def: T): T {
    const v = this.o[key];
    if (v === undefined) return def;
    if (typeof v !== 'string' || !values.includes(v as T)) {
      this.bad(key, `expected one of ${values.join(', ')}, got ${show(v)}`);
      return def;
    }
    return v as T;
  }

  list(key: string): Array<{ r: Obj; path: string }> {
    const v = this.o[key];
    if (v === undefined) return [];
    if (!Array.isArray(v)) {
      this.bad(key, `expected a list, got ${show(v)}`);
      return [];
    }
    const out = [];
    for (let i = 0; i < v.length; i++) {
      const path = `${this.at(key)}[${i}]`;
      if (!isObj(v[i])) this.problems.push(`${path}: expected an object, got ${show(v[i])}`);
      else out.push({ r: v[i] as Obj, path });
    }
    return out;
  }

  raw(key: string): unknown {
    return this.o[key];
  }
}

function isObj(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = typeof v === 'bigint' ? `${v}` : JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

const VID = (x: unknown) => typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= 4094;

/** A port's VLAN: a number (access VLAN) or { mode: access, vid } / { mode: trunk, allowed?, native? }. */
function vlanOf(rd: Reader, key: string): VlanConfig | undefined {
  const v = rd.raw(key);
  if (v === undefined) return undefined;
  if (typeof v === 'number') return VID(v) ? { mode: 'access', vid: v } : rd.bad(key, `expected a VLAN id 1..4094, got ${show(v)}`);
  if (!isObj(v)) return rd.bad(key, `expected a VLAN id or { mode: "access", vid } / { mode: "trunk", allowed, native }, got ${show(v)}`);
  const o = v as Obj;
  if (o.mode === 'access') {
    if (!VID(o.vid) || Object.keys(o).some((k) => k !== 'mode' && k !== 'vid')) return rd.bad(key, `access: expected { mode: "access", vid: 1..4094 }, got ${show(v)}`);
    return { mode: 'access', vid: o.vid as number };
  }
  if (o.mode === 'trunk') {
    if (o.allowed !== undefined && !(Array.isArray(o.allowed) && o.allowed.every(VID))) return rd.bad(`${key}.allowed`, `expected a list of VLAN ids 1..4094, got ${show(o.allowed)}`);
    if (o.native !== undefined && !VID(o.native)) return rd.bad(`${key}.native`, `expected a VLAN id 1..4094, got ${show(o.native)}`);
    if (Object.keys(o).some((k) => !['mode', 'allowed', 'native'].includes(k))) return rd.bad(key, `trunk: expected keys mode, allowed, native`);
    return { mode: 'trunk', allowed: o.allowed as number[] | undefined, native: o.native as number | undefined };
  }
  return rd.bad(`${key}.mode`, `expected "access" or "trunk", got ${show(o.mode)}`);
}

/** Socket paths in a file are relative to the file's directory. */
function pathOf(rd: Reader, key: string, base: string, required: boolean): string | undefined {
  const p = rd.str(key, required);
  return p === undefined ? undefined : isAbsolute(p) ? p : resolve(base, p);
}

function parsePort(r: Obj, path: string, problems: string[], base: string): PortConfig | undefined {
  const kind = r.kind ?? (r.ifname !== undefined ? 'tap' : r.remote !== undefined ? 'vxlan' : 'vhost-user');
  if (kind === 'tap') {
    const rd = new Reader(r, path, problems, ['kind', 'name', 'ifname', 'offloads', 'vlan']);
    const ifname = rd.str('ifname', true, /^[A-Za-z0-9_.-]{1,15}$/, 'an interface name of at most 15 characters');
    const name = rd.str('name', false, NAME_RE, 'a name of letters, digits, _ . -') ?? ifname;
    const vlan = vlanOf(rd, 'vlan');
    return ifname && name ? { kind: 'tap', name, ifname, offloads: rd.bool('offloads', true), vlan } : undefined;
  }
  if (kind === 'vxlan') {
    const rd = new Reader(r, path, problems, ['kind', 'name', 'remote', 'vni', 'local', 'dstport', 'vlan']);
    const remote = rd.str('remote', true);
    if (!rd.has('vni')) rd.bad('vni', 'required');
    const vni = rd.int('vni', 0, 0, (1 << 24) - 1);
    const name = rd.str('name', false, NAME_RE, 'a name of letters, digits, _ . -') ?? `vxlan${vni}`;
    const o: VxlanPortConfig = { kind: 'vxlan', name, remote: remote ?? '', vni, local: rd.str('local', false), dstport: rd.optInt('dstport', 1, 65535), vlan: vlanOf(rd, 'vlan') };
    return remote ? o : undefined;
  }
  if (kind !== 'vhost-user') {
    problems.push(`${path}.kind: expected "vhost-user", "tap" or "vxlan", got ${show(kind)}`);
    return undefined;
  }
  const rd = new Reader(r, path, problems, ['kind', 'name', 'socket', 'mode', 'mac', 'queues', 'mtu', 'packed', 'vlan']);
  const socket = pathOf(rd, 'socket', base, true);
  const name = rd.str('name', false, NAME_RE, 'a name of letters, digits, _ . -') ?? (socket ? socket.replace(/^.*\//, '').replace(/\.sock$/, '') : undefined);
  const o: VhostPortConfig = {
    kind: 'vhost-user',
    name: name ?? '',
    socket: socket ?? '',
    mode: rd.oneOf('mode', ['server', 'client'] as const, 'server'),
    mac: rd.str('mac', false, MAC_RE, 'a MAC address like 52:54:00:12:34:56'),
    queues: rd.int('queues', 1, 1, 64),
    mtu: rd.optInt('mtu', 68, 65535),
    packed: rd.bool('packed', true),
    vlan: vlanOf(rd, 'vlan'),
  };
  return socket && name ? o : undefined;
}

function parseSwitch(r: Obj, path: string, problems: string[], base: string, index: number): SwitchConfig {
  const rd = new Reader(r, path, problems, ['name', 'poll', 'cpus', 'aging', 'inline', 'hook', 'ports']);
  const name = rd.str('name', false, NAME_RE, 'a name of letters, digits, _ . -') ?? `sw${index}`;
  let cpus: number[] | undefined;
  const c = rd.raw('cpus');
  if (c !== undefined) {
    try {
      cpus = parseCpuList(typeof c === 'number' ? String(c) : (c as string));
    } catch {
      rd.bad('cpus', `expected a CPU list like "1" or "2-3,5", got ${show(c)}`);
    }
  }
  const inline = rd.bool('inline', false);
  if (inline && cpus) rd.bad('cpus', 'pins the data-plane thread: not with inline');
  let hook: SwitchConfig['hook'];
  const h = rd.str('hook', false);
  if (h) {
    const [file, exp] = h.split(':');
    hook = { module: isAbsolute(file) ? file : resolve(base, file), export: exp };
  }
  const sw: SwitchConfig = { name, poll: rd.oneOf('poll', POLL_MODES, 'event'), cpus, aging: rd.int('aging', 300, 1, 1e6), inline, hook, ports: [] };
  const seen = new Set<string>();
  for (const p of rd.list('ports')) {
    const port = parsePort(p.r, p.path, problems, base);
    if (!port) continue;
    if (seen.has(port.name)) problems.push(`${p.path}: name ${JSON.stringify(port.name)} is used twice in this switch`);
    seen.add(port.name);
    sw.ports.push(port);
  }
  return sw;
}

function parseDisk(r: Obj, path: string, problems: string[], base: string): DiskConfig | undefined {
  const rd = new Reader(r, path, problems, ['name', 'socket', 'mode', 'file', 'ram', 'readOnly', 'direct', 'shared', 'format', 'serial', 'queues', 'threads', 'packed', 'maxInFlight']);
  const socket = pathOf(rd, 'socket', base, true);
  const file = pathOf(rd, 'file', base, false);
  let ram: bigint | undefined;
  const rv = rd.raw('ram');
  if (rv !== undefined) {
    try {
      ram = parseSize(typeof rv === 'number' ? String(rv) : (rv as string));
      if (ram <= 0n || ram % 512n !== 0n) throw new Error();
    } catch {
      rd.bad('ram', `expected a size that is a multiple of 512 bytes, like "1G" or "512M", got ${show(rv)}`);
      ram = undefined;
    }
  }
  if ((file === undefined) === (rv === undefined)) rd.bad('file', 'give exactly one of file and ram');
  const threads = rd.int('threads', 2, 1, 64);
  const name = rd.str('name', false, NAME_RE, 'a name of letters, digits, _ . -') ?? (socket ? socket.replace(/^.*\//, '').replace(/\.sock$/, '') : undefined);
  const d: DiskConfig = {
    name: name ?? '',
    socket: socket ?? '',
    mode: rd.oneOf('mode', ['server', 'client'] as const, 'server'),
    file,
    ram,
    readOnly: rd.bool('readOnly', false),
    direct: rd.bool('direct', false),
    shared: rd.bool('shared', false),
    format: rd.raw('format') === undefined ? undefined : rd.oneOf('format', ['raw'] as const, 'raw'),
    serial: rd.str('serial', false, /^[\x20-\x7e]{1,20}$/, 'at most 20 printable ASCII characters'),
    queues: rd.int('queues', threads, 1, 64),
    threads,
    packed: rd.bool('packed', true),
    maxInFlight: rd.int('maxInFlight', 1024, 1, 65536),
  };
  return socket && name ? d : undefined;
}

function checked<T>(f: (problems: string[]) => T | undefined): T {
  const problems: string[] = [];
  const v = f(problems);
  if (problems.length > 0 || v === undefined) throw new ConfigError(problems.length ? problems : ['invalid']);
  return v;
}

/** One port as the management API takes it (same keys as in a switch's "ports" list). */
export function parsePortConfig(raw: unknown, base = process.cwd()): PortConfig {
  return checked((pr) => (isObj(raw) ? parsePort(raw as Obj, 'port', pr, base) : (pr.push(`port: expected an object, got ${show(raw)}`), undefined)));
}

/** One disk as the management API takes it (same keys as in "disks"). */
export function parseDiskConfig(raw: unknown, base = process.cwd()): DiskConfig {
  return checked((pr) => (isObj(raw) ? parseDisk(raw as Obj, 'disk', pr, base) : (pr.push(`disk: expected an object, got ${show(raw)}`), undefined)));
}

/** One switch as the management API takes it (same keys as in "switches"). */
export function parseSwitchConfig(raw: unknown, base = process.cwd()): SwitchConfig {
  return checked((pr) => (isObj(raw) ? parseSwitch(raw as Obj, 'switch', pr, base, 0) : (pr.push(`switch: expected an object, got ${show(raw)}`), undefined)));
}

/** A VLAN setting as the management API takes it: a VLAN id, or { mode, vid } / { mode, allowed, native }. */
export function parseVlanConfig(raw: unknown): VlanConfig {
  return checked((pr) => vlanOf(new Reader({ vlan: raw }, '', pr, ['vlan']), 'vlan'));
}

/** Checks a parsed configuration object; throws ConfigError listing every problem. `base` resolves relative paths. */
export function parseConfig(raw: unknown, base = process.cwd()): HostConfig {
  const problems: string[] = [];
  if (!isObj(raw)) throw new ConfigError([`(top level): expected an object, got ${show(raw)}`]);
  const top = new Reader(raw as Obj, '', problems, [
    'api',
    'apiTokenFile',
    'captureDir',
    'imageDirs',
    'allowBlockDevices',
    'socketDirs',
    'allowHostPorts',
    'socketMode',
    'socketGroup',
    'stateDir',
    'limits',
    'switches',
    'disks',
  ]);
  let api: string | null | undefined;
  const a = top.raw('api');
  if (a === null || a === false) api = null;
  else if (a !== undefined) api = top.str('api', false, /^(unix:.+|none|\[?[0-9A-Za-z.:-]*\]?:\d+)$/, '"unix:/path", "HOST:PORT" or "none"') ?? null;
  if (api === 'none') api = null;
  let socketMode = 0o600;
  const m = top.raw('socketMode');
  if (m !== undefined) {
    const n = typeof m === 'string' && /^0?[0-7]{3}$/.test(m) ? parseInt(m, 8) : typeof m === 'number' && Number.isInteger(m) && m >= 0 && m <= 0o777 ? m : NaN;
    if (Number.isNaN(n)) top.bad('socketMode', `expected an octal mode like "0660", got ${show(m)}`);
    else socketMode = n;
  }
  let stateDir: string | null | undefined;
  const sd = top.raw('stateDir');
  if (sd === null || sd === false || sd === 'none') stateDir = null;
  else if (sd !== undefined) {
    const v = top.str('stateDir', false);
    stateDir = v === undefined ? undefined : resolve(base, v);
  }
  const limits: HostConfig['limits'] = {};
  const lim = top.raw('limits');
  if (lim !== undefined) {
    if (!isObj(lim)) top.bad('limits', `expected { maxMemSlots, maxMappedBytes }, got ${show(lim)}`);
    else {
      const lr = new Reader(lim as Obj, 'limits', problems, ['maxMemSlots', 'maxMappedBytes']);
      limits.maxMemSlots = lr.optInt('maxMemSlots', 1, MAX_REGIONS);
      const mb = lr.raw('maxMappedBytes');
      if (mb !== undefined) {
        let n: bigint | undefined;
        try {
          n = typeof mb === 'string' ? parseSize(mb) : typeof mb === 'number' && Number.isSafeInteger(mb) ? BigInt(mb) : undefined;
        } catch {
          n = undefined;
        }
        if (n === undefined || n < 4096n) lr.bad('maxMappedBytes', `expected a size of at least 4096 bytes, like "64G", got ${show(mb)}`);
        else limits.maxMappedBytes = n;
      }
    }
  }
  const apiTokenFile = pathOf(top, 'apiTokenFile', base, false);
  const captureDir = pathOf(top, 'captureDir', base, false);
  const dirList = (key: 'imageDirs' | 'socketDirs'): string[] => {
    const v = top.raw(key);
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((d) => typeof d !== 'string' || d === '')) {
      top.bad(key, `expected a list of directories, got ${show(v)}`);
      return [];
    }
    return v.map((d) => resolve(base, d as string));
  };
  const imageDirs = dirList('imageDirs');
  const socketDirs = dirList('socketDirs');
  const allowBlockDevices = top.bool('allowBlockDevices', false);
  const allowHostPorts = top.bool('allowHostPorts', false);
  const cfg: HostConfig = {
    api,
    apiTokenFile,
    captureDir,
    imageDirs,
    allowBlockDevices,
    socketDirs,
    allowHostPorts,
    socketMode,
    socketGroup: top.str('socketGroup', false),
    stateDir,
    limits,
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
  for (const { r, path } of top.list('switches')) {
    const sw = parseSwitch(r, path, problems, base, cfg.switches.length);
    claim(swNames, sw.name, `${path}.name`, 'switch name');
    for (const [i, port] of sw.ports.entries()) {
      if (sw.ports.findIndex((q) => q.name === port.name) !== i) continue; // reported by parseSwitch
      claim(names, port.name, `${path}.ports (${port.name})`, 'name');
      if (port.kind === 'vhost-user') claim(sockets, port.socket, `${path}.ports (${port.name}).socket`, 'socket');
    }
    cfg.switches.push(sw);
  }
  for (const { r, path } of top.list('disks')) {
    const d = parseDisk(r, path, problems, base);
    if (!d) continue;
    claim(names, d.name, path, 'name');
    claim(sockets, d.socket, `${path}.socket`, 'socket');
    cfg.disks.push(d);
  }
  if (problems.length > 0) throw new ConfigError(problems);
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
