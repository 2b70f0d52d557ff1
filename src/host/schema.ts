// The one schema of what vhostkit is configured with: the host configuration file, the
// flags that build the same objects (`switch --port`, `blk`), and the bodies of the
// management API. Declared once with zod (a well-kept validator whose schemas also give a
// JSON Schema): config.ts checks input against it and words every problem the way a user
// reads it ("PATH: expected ..., got ..."), openapi.ts takes the API's request bodies from
// it, and configJsonSchema() gives editors a JSON Schema of the file (docs/config.schema.json).
// What a schema cannot say (names derived from sockets, paths relative to the file, names
// used twice) config.ts checks after it.
import { z } from 'zod';
import { POLL_MODES } from '../dataplane/poller.js';
import { LEVELS, type Level } from '../log.js';
import { parseSize } from '../backends/blk/disk.js';
import { parseCpuList } from '../native/affinity.js';
import { MAX_REGIONS } from '../native/guest-memory.js';

/** A value as a problem quotes it (at most 60 characters). */
export function show(v: unknown): string {
  const s = typeof v === 'bigint' ? `${v}` : JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

type Issue = { input?: unknown };
/** One message for every way a value can fail: "expected WHAT, got VALUE". */
const expected = (what: string) => (iss: Issue) => (iss.input === undefined ? 'required' : `expected ${what}, got ${show(iss.input)}`);
/** A problem at a path below the value's own (used where one check covers nested keys). */
export const SUB = '\u0000';
const at = (sub: string, msg: string) => `${SUB}${sub}${SUB}${msg}`;

function str() {
  return z.string({ error: expected('a non-empty string') }).min(1, { error: expected('a non-empty string') });
}
function matching(re: RegExp, hint: string) {
  return z
    .string({ error: expected('a non-empty string') })
    .min(1, { error: expected('a non-empty string') })
    .regex(re, { error: expected(hint) });
}
function int(min: number, max: number) {
  const e = expected(`an integer in ${min}..${max}`);
  return z.number({ error: e }).int({ error: e }).min(min, { error: e }).max(max, { error: e });
}
const bool = () => z.boolean({ error: expected('true or false') });
function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: expected(`one of ${values.join(', ')}`) });
}
/** An object with exactly these keys (an unknown key is named with the ones expected). */
function strict<S extends z.ZodRawShape>(shape: S, what = 'an object') {
  const keys = Object.keys(shape).join(', ');
  return z.strictObject(shape, { error: (iss) => (iss.code === 'unrecognized_keys' ? `unknown key (expected one of: ${keys})` : expected(what)(iss)) });
}
function list<T extends z.ZodType>(item: T, what = 'a list') {
  return z.array(item, { error: expected(what) });
}
/** A size: bytes, or a string like "1G"; refine says what else it must be. */
function size(hint: string, ok: (n: bigint) => boolean) {
  const e = expected(hint);
  return z.union([z.string(), z.number().int().min(1)], { error: e }).transform((v, ctx) => {
    let n: bigint | undefined;
    try {
      n = parseSize(String(v));
    } catch {
      n = undefined;
    }
    if (n === undefined || !ok(n)) {
      ctx.issues.push({ code: 'custom', input: v, message: e({ input: v }) });
      return z.NEVER;
    }
    return n;
  });
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const name = () => matching(NAME_RE, 'a name of letters, digits, _ . -');
const VID = (x: unknown) => typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= 4094;
function vid() {
  const e = expected('a VLAN id 1..4094');
  return z.number({ error: e }).int({ error: e }).min(1, { error: e }).max(4094, { error: e });
}

/** Why a VLAN setting is not one, and where below it (the union's one message). */
function vlanProblem(v: unknown): string {
  if (typeof v === 'number') return `expected a VLAN id 1..4094, got ${show(v)}`;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return `expected a VLAN id or { mode: "access", vid } / { mode: "trunk", allowed, native }, got ${show(v)}`;
  const o = v as Record<string, unknown>;
  if (o.mode === 'access') return `access: expected { mode: "access", vid: 1..4094 }, got ${show(v)}`;
  if (o.mode === 'trunk') {
    if (o.allowed !== undefined && !(Array.isArray(o.allowed) && o.allowed.every(VID))) return at('allowed', `expected a list of VLAN ids 1..4094, got ${show(o.allowed)}`);
    if (o.native !== undefined && !VID(o.native)) return at('native', `expected a VLAN id 1..4094, got ${show(o.native)}`);
    return 'trunk: expected keys mode, allowed, native';
  }
  return at('mode', `expected "access" or "trunk", got ${show(o.mode)}`);
}

/** A port's VLAN: an access VLAN id, or { mode: access, vid } / { mode: trunk, allowed?, native? }. */
export const vlanSchema = z
  .union(
    [
      vid(),
      strict({ mode: z.literal('access'), vid: vid() }),
      strict({ mode: z.literal('trunk'), allowed: z.array(vid(), { error: expected('a list of VLAN ids 1..4094') }).optional(), native: vid().optional() }),
    ],
    { error: (iss) => vlanProblem(iss.input) },
  )
  .transform((v) => (typeof v === 'number' ? { mode: 'access' as const, vid: v } : v));

const mode = () => oneOf(['server', 'client'] as const).default('server');

export const vhostPortSchema = strict({
  kind: z.literal('vhost-user').optional(),
  name: name().optional(),
  socket: str().describe('the vhost-user socket path (relative: to the configuration file)'),
  mode: mode(),
  mac: matching(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/, 'a MAC address like 52:54:00:12:34:56')
    .optional()
    .describe('the MAC the guest is given (config space)'),
  queues: int(1, 64).default(1).describe('queue pairs (VIRTIO_NET_F_MQ above 1)'),
  mtu: int(68, 65535).optional(),
  packed: bool().default(true),
  vlan: vlanSchema.optional(),
});
export const tapPortSchema = strict({
  kind: z.literal('tap').optional(),
  name: name().optional(),
  ifname: matching(/^[A-Za-z0-9_.-]{1,15}$/, 'an interface name of at most 15 characters').describe('the TAP device (created if it does not exist)'),
  offloads: bool().default(true),
  vlan: vlanSchema.optional(),
});
export const vxlanPortSchema = strict({
  kind: z.literal('vxlan').optional(),
  name: name().optional(),
  remote: str().describe('the remote VTEP address (IPv4 or IPv6)'),
  vni: int(0, (1 << 24) - 1),
  local: str().optional(),
  dstport: int(1, 65535).optional(),
  vlan: vlanSchema.optional(),
});
/** A switch port, as in a switch's "ports" list and POST /v1/ports ("kind" defaults from the keys given). */
export const portSchema = z.union([vhostPortSchema, tapPortSchema, vxlanPortSchema]);

const cpuList = z.union([z.string(), z.number().int().min(0)], { error: expected('a CPU list like "1" or "2-3,5"') }).transform((v, ctx) => {
  try {
    return parseCpuList(String(v));
  } catch {
    ctx.issues.push({ code: 'custom', input: v, message: expected('a CPU list like "1" or "2-3,5"')({ input: v }) });
    return z.NEVER;
  }
});

export const switchSchema = strict({
  name: name().optional(),
  poll: oneOf(POLL_MODES as unknown as readonly [string, ...string[]]).default('event'),
  cpus: cpuList.optional(),
  /** data-plane threads (default: one per CPU of cpus, else 1) */
  threads: int(1, 64).optional(),
  aging: int(1, 1e6).default(300),
  /** forward on the main thread instead of a data-plane worker */
  inline: bool().default(false),
  /** a hook module, "FILE" or "FILE:EXPORT" */
  hook: str().optional(),
  /** checked one by one (portSchema), so that each port's problems are named by its kind */
  ports: list(z.unknown()).default([]),
  /** packet handlers: code the data plane imports, so the configuration only names them */
  handlers: list(
    strict({
      name: matching(/^[A-Za-z0-9_.-]{1,64}$/, '1-64 letters, digits, _ . -').describe('what flows call it: actions=handler:NAME'),
      module: str().describe('its module (relative to this file), loaded on the data-plane thread'),
      export: str().optional().describe('the export (default: default)'),
      options: z.unknown().optional().describe('if given, the export is a factory called with them'),
    }),
    'a list of handlers',
  )
    .default([])
    .describe('TypeScript packet handlers flows send frames to (docs/dataplane.md)'),
  /** each checked by parseFlow (config.ts), against this switch's port names */
  flows: list(z.string({ error: expected('a flow in ovs-ofctl syntax (a string)') }), 'a list of flows')
    .default([])
    .describe('the flow table at start, in ovs-ofctl syntax, e.g. "priority=100,icmp,nw_dst=10.0.0.2,actions=drop"; added after the ports, so in_port= and output: name them'),
});

export const diskSchema = strict({
  name: name().optional(),
  socket: str(),
  mode: mode(),
  file: str().optional(),
  ram: size('a size that is a multiple of 512 bytes, like "1G" or "512M"', (n) => n > 0n && n % 512n === 0n).optional(),
  readOnly: bool().default(false),
  direct: bool().default(false),
  shared: bool().default(false),
  format: oneOf(['raw'] as const).optional(),
  serial: matching(/^[\x20-\x7e]{1,20}$/, 'at most 20 printable ASCII characters').optional(),
  queues: int(1, 64).optional(),
  threads: int(1, 64).default(2),
  engine: oneOf(['threads', 'io_uring', 'auto'] as const).default('auto'),
  /** checked against engine by config.ts (threads has no ring to poll) */
  pollUs: int(0, 1000).default(0),
  packed: bool().default(true),
  maxInFlight: int(1, 65536).default(1024),
});

const octal = expected('an octal mode like "0660"');
const none = z.union([z.null(), z.literal(false), z.literal('none')]).transform(() => null);

const ipv4 = () => matching(/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/, 'an IPv4 address');
const ip = () => str().refine((v) => /^[0-9a-fA-F.:]+$/.test(v) && (v.includes(':') || /^\d+\.\d+\.\d+\.\d+$/.test(v)), { error: expected('an IPv4 or IPv6 address') });
/** BGP EVPN (src/evpn/): the speaker, its neighbors, and which VXLAN port of which switch carries each VNI. */
export const evpnSchema = strict({
  asn: int(1, 4294967295).describe('our autonomous system'),
  routerId: ipv4().describe('the BGP router id'),
  vtep: ip().optional().describe('the local VTEP address, next hop of our routes (default: routerId)'),
  neighbors: list(strict({ address: ip(), asn: int(1, 4294967295).optional().describe('default: ours (iBGP)') }, '{ address, asn }')).describe('BGP neighbors'),
  vnis: list(
    strict(
      {
        vni: int(1, (1 << 24) - 1),
        switch: name(),
        port: name().describe("the switch's VXLAN port of this VNI (an access port: its VLAN is the VNI's)"),
        rd: str().optional().describe('route distinguisher (default ROUTERID:VNI)'),
        routeTargets: list(matching(/^\d+:\d+$/, 'a route target like "65000:100"'))
          .optional()
          .describe('default ASN:VNI'),
      },
      '{ vni, switch, port, rd?, routeTargets? }',
    ),
  ),
  gobgp: matching(/^(unix:.+|\[?[0-9A-Za-z.:-]*\]?:\d+)$/, '"unix:/path" or "HOST:PORT"')
    .optional()
    .describe('the API of a running gobgpd to use (default: start one)'),
  gobgpDir: str().optional().describe('where a gobgpd vhostkit starts keeps its config, API socket and log (default: a new temporary directory)'),
  listenAddress: ip().optional().describe('the address a started gobgpd listens on and connects from (default: any)'),
  pollMs: int(50, 10000).default(250).describe('how often the fdb is read for local MACs'),
  arpSnooping: bool().default(false).describe('advertise local MACs with the IPv4 address ARP shows (adds a flow arp,actions=normal,handler:evpn-arp)'),
  ndSnooping: bool().default(false).describe('advertise local MACs with the global IPv6 addresses neighbor discovery shows (adds flows icmp6,icmp_type=135/136,actions=normal,handler:evpn-arp)'),
  arpSuppression: bool().default(false).describe("answer local ARP requests and neighbor solicitations for the fabric's MAC+IP addresses here, not across the fabric (one flow per address)"),
});

export const hostSchema = strict(
  {
    api: z
      .union([none, matching(/^(unix:.+|\[?[0-9A-Za-z.:-]*\]?:\d+)$/, '"unix:/path", "HOST:PORT" or "none"')])
      .optional()
      .describe('the management API: "unix:/path", "HOST:PORT", or none'),
    apiTokenFile: str().optional().describe("a file holding the API's bearer token; required for an API on a non-loopback address"),
    captureDir: str().optional().describe('where captures asked through the API may write'),
    imageDirs: list(z.string().min(1), 'a list of directories').default([]).describe('directories of the images that disks added through the API may serve'),
    allowBlockDevices: bool().default(false).describe('disks added through the API may serve block devices (inside imageDirs)'),
    socketDirs: list(z.string().min(1), 'a list of directories')
      .default([])
      .describe('where ports and disks added through the API may have their sockets (default: the directories of the configured sockets)'),
    allowHostPorts: bool().default(false).describe('TAP and VXLAN ports may be added through the API'),
    socketMode: z
      .union([z.string({ error: octal }).regex(/^0?[0-7]{3}$/, { error: octal }), z.number({ error: octal }).int({ error: octal }).min(0, { error: octal }).max(0o777, { error: octal })], {
        error: octal,
      })
      .transform((m) => (typeof m === 'string' ? parseInt(m, 8) : m))
      .default(0o600)
      .describe('permission bits of the sockets created, like "0660"'),
    socketGroup: str().optional().describe('the group of the sockets created (name or gid)'),
    stateDir: z
      .union([none, str()], { error: expected('a non-empty string') })
      .optional()
      .describe('where net ports keep their ring records across restarts, or none'),
    limits: strict(
      {
        maxMemSlots: int(1, MAX_REGIONS).optional(),
        maxMappedBytes: size('a size of at least 4096 bytes, like "64G"', (n) => n >= 4096n).optional(),
      },
      '{ maxMemSlots, maxMappedBytes }',
    ).default({}),
    switches: list(z.unknown()).default([]),
    disks: list(z.unknown()).default([]),
    evpn: evpnSchema.optional().describe('BGP EVPN: this host is a VTEP of a fabric (docs/evpn.md)'),
  },
  'an object',
);

/** A port as POST /v1/ports takes it: a switch's port and the switch to add it to. */
export const portBodySchema = z.union([vhostPortSchema.extend({ switch: name() }), tapPortSchema.extend({ switch: name() }), vxlanPortSchema.extend({ switch: name() })]);

const sizeError = 'expected bytes (a number) or a string such as "10G"';
/** Bodies of the management API's other requests (api.ts checks them with these). */
export const apiBodies = {
  /** a flow in ovs-ofctl's syntax, e.g. "priority=100,tcp,nw_dst=10.0.0.2,tp_dst=80,actions=drop" */
  flowAdd: strict({ flow: str() }),
  /** a match ("" or none: every flow); strict: only the flow of exactly that match and priority */
  flowDel: strict({ match: z.string({ error: expected('a string') }).optional(), strict: bool().optional() }),
  capture: strict({ file: str(), count: int(1, 2 ** 31).optional(), snaplen: int(1, 65535).optional() }),
  logLevel: strict({ level: oneOf(LEVELS as unknown as readonly [Level, ...Level[]]) }),
  /** no size (or null): the disk's file is read again */
  resize: strict({
    size: z
      .union([z.null(), z.number().min(1, { error: (iss) => `size ${show(iss.input)}: expected a positive integer of bytes` }), z.string()], { error: sizeError })
      .transform((v, ctx) => {
        if (v === null) return undefined;
        if (typeof v === 'number') {
          if (Number.isSafeInteger(v)) return BigInt(v);
          ctx.issues.push({ code: 'custom', input: v, message: `size ${show(v)}: expected a positive integer of bytes` });
          return z.NEVER;
        }
        try {
          return parseSize(v);
        } catch (e) {
          ctx.issues.push({ code: 'custom', input: v, message: (e as Error).message });
          return z.NEVER;
        }
      })
      .optional(),
  }),
};

/** A JSON Schema (draft 2020-12) of a schema's input: what a user writes. */
export function inputJsonSchema(s: z.ZodType): Record<string, unknown> {
  return z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

/** The JSON Schema of a configuration file, with the switches' ports and the disks spelled out. */
export function configJsonSchema(): Record<string, unknown> {
  const top = inputJsonSchema(hostSchema);
  const props = top.properties as Record<string, Record<string, unknown>>;
  const sw = inputJsonSchema(switchSchema);
  (sw.properties as Record<string, Record<string, unknown>>).ports = { type: 'array', items: strip(inputJsonSchema(portSchema)) };
  props.switches = { type: 'array', items: strip(sw) };
  props.disks = { type: 'array', items: strip(inputJsonSchema(diskSchema)) };
  return { ...top, $id: 'https://vhostkit.dev/config.schema.json', title: 'vhostkit run --config' };
}

function strip(s: Record<string, unknown>): Record<string, unknown> {
  const { $schema: _drop, ...rest } = s;
  void _drop;
  return rest;
}
