// Flows of a switch's flow table in ovs-ofctl's syntax: "priority=100,tcp,nw_dst=10.0.0.2,
// tp_dst=80,actions=drop". A flow matches on the frame's in-port, MACs, VLAN (the one the
// switch assigned it), EtherType, IPv4 addresses and prefixes, IP protocol and TTL, TCP/UDP
// ports, ICMP/ICMPv6 type and code, TCP flags, and ARP's addresses and opcode. Its actions edit the frame (VLAN tag, MACs, IPv4 addresses, ports,
// TTL; checksums kept right) and then send it: to ports, flooded, to the learning switch
// (normal), to TypeScript handlers; no output drops it. Frames no flow matches are switched
// as by `priority=0,actions=normal`. The table runs in native code
// (native/switch/switch_flows.cc, the edits in native/net/edit.cc).
import { FlowAction, FlowField, FlowOp, FlowWord } from '../native/switch.js';
import { macFromString, macToString } from './fdb.js';
import { ipv6Text } from './ipv6-text.js';

export interface FlowSpec {
  priority: number;
  /** the match as written back by formatFlow (canonical order) */
  match: string;
  /** the action as written back */
  actions: string;
  /** seconds after its last match / after it was added that the flow is removed (0: never) */
  idleTimeout: number;
  hardTimeout: number;
  /** FlowWord layout (ID left 0) */
  words: Int32Array;
}

/** ovs-ofctl's default priority. */
export const DEFAULT_PRIORITY = 32768;

const SHORTHANDS: Record<string, Array<[string, string]>> = {
  ip: [['dl_type', '0x0800']],
  icmp: [
    ['dl_type', '0x0800'],
    ['nw_proto', '1'],
  ],
  tcp: [
    ['dl_type', '0x0800'],
    ['nw_proto', '6'],
  ],
  udp: [
    ['dl_type', '0x0800'],
    ['nw_proto', '17'],
  ],
  arp: [['dl_type', '0x0806']],
  ipv6: [['dl_type', '0x86dd']],
  icmp6: [
    ['dl_type', '0x86dd'],
    ['nw_proto', '58'],
  ],
  tcp6: [
    ['dl_type', '0x86dd'],
    ['nw_proto', '6'],
  ],
  udp6: [
    ['dl_type', '0x86dd'],
    ['nw_proto', '17'],
  ],
};

function num(v: string, what: string, max: number): number {
  const n = /^0x[0-9a-f]+$/i.test(v) ? parseInt(v, 16) : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > max) throw new RangeError(`${what}=${v}: expected a number 0..${max}`);
  return n;
}

function ipv4(v: string, what: string): { addr: number; mask: number; len: number } {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?$/.exec(v);
  const parts = m ? m.slice(1, 5).map(Number) : [];
  const len = m?.[5] === undefined ? 32 : Number(m[5]);
  if (!m || parts.some((p) => p > 255) || len > 32) throw new RangeError(`${what}=${v}: expected an IPv4 address or prefix like 10.0.0.0/24`);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const addr = ((((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3]) & mask) >>> 0;
  return { addr, mask, len };
}

const ipString = (a: number) => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');

/** An IPv6 address or prefix ("fd00::1", "fd00:1::/64"): four 32-bit words, the prefix applied. */
function ipv6(v: string, what: string): { words: number[]; len: number } {
  const bad = () => new RangeError(`${what}=${v}: expected an IPv6 address or prefix like fd00::1 or fd00:1::/64`);
  const slash = v.indexOf('/');
  const addr = slash < 0 ? v : v.slice(0, slash);
  const len = slash < 0 ? 128 : /^\d+$/.test(v.slice(slash + 1)) ? Number(v.slice(slash + 1)) : NaN;
  if (!(len >= 0 && len <= 128)) throw bad();
  const halves = addr.split('::');
  if (halves.length > 2) throw bad();
  const part = (x: string) => (x === '' ? [] : x.split(':'));
  const head = part(halves[0]);
  const tail = halves.length === 2 ? part(halves[1]) : [];
  const groups = halves.length === 2 ? [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail] : head;
  if (groups.length !== 8 || groups.some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) throw bad();
  const g = groups.map((x) => parseInt(x, 16));
  const words = [0, 1, 2, 3].map((k) => {
    const bits = Math.max(0, Math.min(32, len - 32 * k));
    const mask = bits === 0 ? 0 : bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    return ((((g[2 * k] << 16) >>> 0) + g[2 * k + 1]) & mask) >>> 0;
  });
  return { words, len };
}

/** An IPv6 address in RFC 5952's form (lowercase, the longest run of zero groups as ::). */
function ipv6String(words: ArrayLike<number>): string {
  const g: number[] = [];
  for (let k = 0; k < 4; k++) g.push((words[k] >>> 16) & 0xffff, words[k] & 0xffff);
  return ipv6Text(g);
}

/**
 * Parses a flow. `port` turns a port name (in_port=, output:) into its id, or throws.
 * `forDelete`: the text is a match for del-flows (no actions; priority only with strict).
 */
export function parseFlow(text: string, port: (name: string) => number, forDelete = false, handler?: (name: string) => number): FlowSpec {
  const w = new Int32Array(FlowWord.WORDS);
  let fields = 0;
  const set = (f: keyof typeof FlowField) => (fields |= 1 << FlowField[f]);
  let priority = DEFAULT_PRIORITY;
  let actions: string | null = null;
  const at = text.search(/(^|,)\s*actions\s*=/);
  let matchText = text;
  if (at >= 0) {
    matchText = text.slice(0, at);
    actions = text.slice(text.indexOf('=', at) + 1).trim();
  }
  if (forDelete && actions !== null) throw new RangeError('a flow to delete is a match: no actions=');
  if (!forDelete && actions === null) throw new RangeError(`${text}: no actions= (e.g. actions=drop, actions=normal, actions=output:PORT)`);
  const pairs: Array<[string, string]> = [];
  for (const raw of matchText.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq < 0) {
      const s = SHORTHANDS[item];
      if (!s) throw new RangeError(`${item}: unknown keyword (ip, icmp, tcp, udp, arp, ipv6, icmp6, tcp6, udp6, or FIELD=VALUE)`);
      pairs.push(...s);
    } else {
      pairs.push([item.slice(0, eq).trim(), item.slice(eq + 1).trim()]);
    }
  }
  const seen = new Map<string, string>();
  const icmpGiven: string[] = [];
  const arpGiven: string[] = [];
  for (const [k, v] of pairs) {
    if (seen.has(k) && seen.get(k) !== v) throw new RangeError(`${k} is given twice (${seen.get(k)} and ${v})`);
    seen.set(k, v);
    switch (k) {
      case 'priority':
        priority = num(v, k, 65535);
        break;
      case 'idle_timeout':
      case 'hard_timeout':
        if (forDelete) throw new RangeError(`${k}: not a match field (a flow to delete is a match)`);
        w[k === 'idle_timeout' ? FlowWord.IDLE_TIMEOUT : FlowWord.HARD_TIMEOUT] = num(v, k, 65535);
        break;
      case 'in_port': {
        const id = port(v);
        w[FlowWord.IN_PORT] = id;
        set('IN_PORT');
        break;
      }
      case 'dl_src':
      case 'dl_dst': {
        let mac: number;
        try {
          mac = macFromString(v);
        } catch {
          throw new RangeError(`${k}=${v}: expected a MAC address like 52:54:00:12:34:56`);
        }
        const hi = Math.floor(mac / 2 ** 32);
        const lo = (mac % 2 ** 32) | 0;
        w[k === 'dl_src' ? FlowWord.DL_SRC_HI : FlowWord.DL_DST_HI] = hi;
        w[k === 'dl_src' ? FlowWord.DL_SRC_LO : FlowWord.DL_DST_LO] = lo;
        set(k === 'dl_src' ? 'DL_SRC' : 'DL_DST');
        break;
      }
      case 'dl_vlan': {
        const vid = num(v, k, 4094);
        if (vid < 1) throw new RangeError(`dl_vlan=${v}: expected a VLAN id 1..4094`);
        w[FlowWord.DL_VLAN] = vid;
        set('DL_VLAN');
        break;
      }
      case 'dl_type':
        w[FlowWord.DL_TYPE] = num(v, k, 0xffff);
        set('DL_TYPE');
        break;
      case 'nw_src':
      case 'nw_dst': {
        const a = ipv4(v, k);
        w[k === 'nw_src' ? FlowWord.NW_SRC : FlowWord.NW_DST] = a.addr | 0;
        w[k === 'nw_src' ? FlowWord.NW_SRC_MASK : FlowWord.NW_DST_MASK] = a.mask | 0;
        set(k === 'nw_src' ? 'NW_SRC' : 'NW_DST');
        break;
      }
      case 'nw_proto':
        w[FlowWord.NW_PROTO] = num(v, k, 255);
        set('NW_PROTO');
        break;
      // ARP's fields, kept where IPv4's are (as Open vSwitch does): the sender's and target's
      // IPv4 addresses, and the opcode (1 request, 2 reply).
      case 'arp_spa':
      case 'arp_tpa': {
        const a = ipv4(v, k);
        w[k === 'arp_spa' ? FlowWord.NW_SRC : FlowWord.NW_DST] = a.addr | 0;
        w[k === 'arp_spa' ? FlowWord.NW_SRC_MASK : FlowWord.NW_DST_MASK] = a.mask | 0;
        set(k === 'arp_spa' ? 'NW_SRC' : 'NW_DST');
        arpGiven.push(k);
        break;
      }
      case 'arp_op':
        w[FlowWord.NW_PROTO] = num(v, k, 255);
        set('NW_PROTO');
        arpGiven.push(k);
        break;
      case 'ipv6_src':
      case 'ipv6_dst': {
        const a = ipv6(v, k);
        const at = k === 'ipv6_src' ? FlowWord.IPV6_SRC_0 : FlowWord.IPV6_DST_0;
        a.words.forEach((x, i) => (w[at + i] = x | 0));
        w[k === 'ipv6_src' ? FlowWord.IPV6_SRC_LEN : FlowWord.IPV6_DST_LEN] = a.len;
        set(k === 'ipv6_src' ? 'IPV6_SRC' : 'IPV6_DST');
        break;
      }
      case 'nw_ttl':
        w[FlowWord.NW_TTL] = num(v, k, 255);
        set('NW_TTL');
        break;
      case 'tp_src':
      case 'tp_dst':
        w[k === 'tp_src' ? FlowWord.TP_SRC : FlowWord.TP_DST] = num(v, k, 65535);
        set(k === 'tp_src' ? 'TP_SRC' : 'TP_DST');
        break;
      case 'icmp_type':
      case 'icmp_code':
      case 'icmpv6_type':
      case 'icmpv6_code': {
        // Open vSwitch's fields: an ICMP message's type and code, kept where a TCP/UDP
        // frame's ports are (TP_SRC, TP_DST).
        const code = k.endsWith('_code');
        w[code ? FlowWord.TP_DST : FlowWord.TP_SRC] = num(v, k, 255);
        set(code ? 'TP_DST' : 'TP_SRC');
        icmpGiven.push(k);
        break;
      }
      case 'tcp_flags': {
        const f = tcpFlags(v);
        w[FlowWord.TCP_FLAGS] = f.value;
        w[FlowWord.TCP_FLAGS_MASK] = f.mask;
        set('TCP_FLAGS');
        break;
      }
      default:
        throw new RangeError(
          `${k}: unknown field (in_port, dl_src, dl_dst, dl_vlan, dl_type, nw_src, nw_dst, ipv6_src, ipv6_dst, nw_proto, nw_ttl, arp_spa, arp_tpa, arp_op, tp_src, tp_dst, icmp_type, icmp_code, icmpv6_type, icmpv6_code, tcp_flags, priority, idle_timeout, hard_timeout)`,
        );
    }
  }
  // ovs-ofctl's prerequisites: IPv4 fields need ip, IPv6 ones ipv6, ports tcp or udp (or their 6s).
  const type = (fields & (1 << FlowField.DL_TYPE)) !== 0 ? w[FlowWord.DL_TYPE] : -1;
  const isIp = type === 0x0800;
  const isIp6 = type === 0x86dd;
  const isArp = type === 0x0806;
  if (arpGiven.length > 0 && !isArp) throw new RangeError(`${arpGiven.join(' and ')}: need arp (dl_type=0x0806)`);
  if (arpGiven.length > 0 && ['nw_src', 'nw_dst', 'nw_proto'].some((k) => seen.has(k))) throw new RangeError('nw_src, nw_dst and nw_proto need ip or ipv6 (an ARP flow has arp_spa, arp_tpa, arp_op)');
  if (isArp && !arpGiven.length && fields & ((1 << FlowField.NW_SRC) | (1 << FlowField.NW_DST) | (1 << FlowField.NW_PROTO)))
    throw new RangeError('an ARP flow matches arp_spa, arp_tpa and arp_op (not nw_src, nw_dst, nw_proto)');
  if (!isArp && fields & ((1 << FlowField.NW_SRC) | (1 << FlowField.NW_DST)) && !isIp) throw new RangeError('nw_src and nw_dst need ip (dl_type=0x0800), icmp, tcp or udp');
  if (fields & ((1 << FlowField.IPV6_SRC) | (1 << FlowField.IPV6_DST)) && !isIp6) throw new RangeError('ipv6_src and ipv6_dst need ipv6 (dl_type=0x86dd), icmp6, tcp6 or udp6');
  if (fields & (1 << FlowField.NW_TTL) && !isIp && !isIp6) throw new RangeError('nw_ttl needs ip or ipv6');
  if (!isArp && fields & ((1 << FlowField.NW_PROTO) | (1 << FlowField.NW_TTL)) && !isIp && !isIp6) throw new RangeError('nw_proto and nw_ttl need ip or ipv6');
  const proto = (fields & (1 << FlowField.NW_PROTO)) !== 0 ? w[FlowWord.NW_PROTO] : -1;
  const isL4 = (isIp || isIp6) && (proto === 6 || proto === 17);
  const isIcmp = (isIp && proto === 1) || (isIp6 && proto === 58);
  if (icmpGiven.length > 0) {
    if (icmpGiven.some((k) => k.startsWith('icmpv6_')) ? !(isIp6 && proto === 58) : !isIcmp) throw new RangeError(`${icmpGiven.join(' and ')}: need icmp (icmp_type, icmp_code) or icmp6`);
    if (seen.has('tp_src') || seen.has('tp_dst')) throw new RangeError('tp_src and tp_dst need tcp or udp (tcp6, udp6)');
    if (new Set(icmpGiven.map((k) => k.endsWith('_code'))).size !== icmpGiven.length) throw new RangeError(`${icmpGiven.join(' and ')}: the same field given twice`);
  } else if (fields & ((1 << FlowField.TP_SRC) | (1 << FlowField.TP_DST)) && !isL4) throw new RangeError('tp_src and tp_dst need tcp or udp (tcp6, udp6)');
  if (fields & (1 << FlowField.TCP_FLAGS) && !((isIp || isIp6) && proto === 6)) throw new RangeError('tcp_flags needs tcp (or tcp6)');
  w[FlowWord.PRIORITY] = priority;
  w[FlowWord.FIELDS] = fields;
  const timeouts = { idleTimeout: w[FlowWord.IDLE_TIMEOUT], hardTimeout: w[FlowWord.HARD_TIMEOUT] };
  if (actions === null) return { priority, match: formatMatch(w, seen), actions: '', ...timeouts, words: w };
  const parsed = parseActions(actions, port, handler);
  const words = new Int32Array(FlowWord.WORDS + parsed.words.length);
  words.set(w);
  words.set(parsed.words, FlowWord.WORDS);
  words[FlowWord.N_ACTIONS] = parsed.words.length / FlowAction.WORDS;
  return { priority, match: formatMatch(w, seen), actions: parsed.text, ...timeouts, words };
}

/** The fields set_field:VALUE->FIELD sets, and the action that does it. */
const SET_FIELD: Record<string, string> = {
  eth_src: 'mod_dl_src',
  eth_dst: 'mod_dl_dst',
  dl_src: 'mod_dl_src',
  dl_dst: 'mod_dl_dst',
  ip_src: 'mod_nw_src',
  ip_dst: 'mod_nw_dst',
  nw_src: 'mod_nw_src',
  nw_dst: 'mod_nw_dst',
  ipv6_src: 'mod_ipv6_src',
  ipv6_dst: 'mod_ipv6_dst',
  tcp_src: 'mod_tp_src',
  tcp_dst: 'mod_tp_dst',
  udp_src: 'mod_tp_src',
  udp_dst: 'mod_tp_dst',
  tp_src: 'mod_tp_src',
  tp_dst: 'mod_tp_dst',
  vlan_vid: 'mod_vlan_vid',
  vlan_pcp: 'mod_vlan_pcp',
};

/** TCP flag names, by bit (ovs-ofctl's names). */
const TCP_FLAGS = ['fin', 'syn', 'rst', 'psh', 'ack', 'urg', 'ece', 'cwr', 'ns'] as const;

/** tcp_flags=VALUE/MASK (numbers) or =+syn-ack (flags that must be set, +, or clear, -). */
function tcpFlags(v: string): { value: number; mask: number } {
  const m = /^(0x[0-9a-f]+|\d+)(?:\/(0x[0-9a-f]+|\d+))?$/i.exec(v);
  if (m) {
    const value = num(m[1], 'tcp_flags', 0xfff);
    const mask = m[2] === undefined ? 0xfff : num(m[2], 'tcp_flags mask', 0xfff);
    return { value: value & mask, mask };
  }
  let value = 0;
  let mask = 0;
  const re = /([+-])([a-z]+)/gy;
  let at = 0;
  for (let x = re.exec(v); x; x = re.exec(v)) {
    const bit = TCP_FLAGS.indexOf(x[2] as (typeof TCP_FLAGS)[number]);
    if (bit < 0) throw new RangeError(`tcp_flags=${v}: unknown flag ${x[2]} (${TCP_FLAGS.join(', ')})`);
    mask |= 1 << bit;
    if (x[1] === '+') value |= 1 << bit;
    at = re.lastIndex;
  }
  if (at !== v.length || v === '') throw new RangeError(`tcp_flags=${v}: expected VALUE/MASK or flags like +syn-ack`);
  return { value, mask };
}

function formatTcpFlags(value: number, mask: number): string {
  let out = '';
  for (let bit = 0; bit < TCP_FLAGS.length; bit++) if (mask & (1 << bit)) out += `${value & (1 << bit) ? '+' : '-'}${TCP_FLAGS[bit]}`;
  return out;
}

function macWords(v: string, what: string): [number, number] {
  let mac: number;
  try {
    mac = macFromString(v);
  } catch {
    throw new RangeError(`${what}:${v}: expected a MAC address like 52:54:00:12:34:56`);
  }
  return [Math.floor(mac / 2 ** 32), (mac % 2 ** 32) | 0];
}

/**
 * A flow's actions ("mod_dl_dst:52:54:00:00:00:02,dec_ttl,output:vm2"): their words
 * (FlowAction each) and their canonical text. Edits come before outputs, as the native
 * table applies them (every output gets the edited frame).
 */
function parseActions(text: string, port: (name: string) => number, handler?: (name: string) => number): { words: Int32Array; text: string } {
  const out: number[] = [];
  const shown: string[] = [];
  const add = (op: number, ...args: number[]) => {
    const words = new Array<number>(FlowAction.WORDS).fill(0);
    words[FlowAction.OP] = op;
    args.forEach((x, i) => (words[FlowAction.A + i] = x));
    out.push(...words);
  };
  let outputs = 0;
  const items = text
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  if (items.length === 1 && items[0].toLowerCase() === 'drop') return { words: new Int32Array(0), text: 'drop' };
  if (items.length === 0) return { words: new Int32Array(0), text: 'drop' };
  for (const given of items) {
    // set_field:VALUE->FIELD, ovs-ofctl's general form, as the mod_ action it is.
    const sf = /^set_field:(.+)->([a-z0-9_]+)$/i.exec(given);
    const item = sf ? (SET_FIELD[sf[2].toLowerCase()] ? `${SET_FIELD[sf[2].toLowerCase()]}:${sf[1]}` : given) : given;
    if (sf && !SET_FIELD[sf[2].toLowerCase()]) throw new RangeError(`${given}: set_field of ${sf[2]} (one of ${Object.keys(SET_FIELD).join(', ')})`);
    const colon = item.indexOf(':');
    const key = (colon < 0 ? item : item.slice(0, colon)).toLowerCase();
    const arg = colon < 0 ? '' : item.slice(colon + 1);
    const needArg = () => {
      if (arg === '') throw new RangeError(`${item}: ${key} needs an argument (${key}:VALUE)`);
      return arg;
    };
    const isOutput = ['output', 'normal', 'flood', 'handler'].includes(key);
    if (!isOutput && outputs > 0) throw new RangeError(`${item}: edits come before outputs (they apply to every output)`);
    if (isOutput) outputs++;
    switch (key) {
      case 'drop':
        throw new RangeError('drop is an action on its own (actions=drop)');
      case 'output':
        add(FlowOp.OUTPUT, port(needArg()));
        shown.push(`output:${arg}`);
        break;
      case 'normal':
        add(FlowOp.NORMAL);
        shown.push('NORMAL');
        break;
      case 'flood':
        add(FlowOp.FLOOD);
        shown.push('FLOOD');
        break;
      case 'handler': {
        const name = needArg();
        if (!handler) throw new RangeError(`handler:${name}: no handlers on this switch`);
        add(FlowOp.HANDLER, handler(name));
        shown.push(`handler:${name}`);
        break;
      }
      case 'strip_vlan':
      case 'pop_vlan':
        add(FlowOp.STRIP_VLAN);
        shown.push('strip_vlan');
        break;
      case 'mod_vlan_vid': {
        const vid = num(needArg(), key, 4095);
        add(FlowOp.SET_VLAN_VID, vid);
        shown.push(`mod_vlan_vid:${vid}`);
        break;
      }
      case 'mod_vlan_pcp': {
        const pcp = num(needArg(), key, 7);
        add(FlowOp.SET_VLAN_PCP, pcp);
        shown.push(`mod_vlan_pcp:${pcp}`);
        break;
      }
      case 'mod_dl_src':
      case 'mod_dl_dst': {
        const [hi, lo] = macWords(needArg(), key);
        add(key === 'mod_dl_src' ? FlowOp.SET_DL_SRC : FlowOp.SET_DL_DST, hi, lo);
        shown.push(`${key}:${macToString(hi * 2 ** 32 + (lo >>> 0))}`);
        break;
      }
      case 'mod_nw_src':
      case 'mod_nw_dst': {
        const a = ipv4(needArg(), key);
        if (a.len !== 32) throw new RangeError(`${item}: expected an address, not a prefix`);
        add(key === 'mod_nw_src' ? FlowOp.SET_NW_SRC : FlowOp.SET_NW_DST, a.addr | 0);
        shown.push(`${key}:${ipString(a.addr)}`);
        break;
      }
      case 'mod_ipv6_src':
      case 'mod_ipv6_dst': {
        const a = ipv6(needArg(), key);
        if (a.len !== 128) throw new RangeError(`${given}: expected an address, not a prefix`);
        add(key === 'mod_ipv6_src' ? FlowOp.SET_IPV6_SRC : FlowOp.SET_IPV6_DST, ...a.words.map((x) => x | 0));
        shown.push(`set_field:${ipv6String(a.words)}->${key.slice(4)}`);
        break;
      }
      case 'mod_tp_src':
      case 'mod_tp_dst': {
        const p = num(needArg(), key, 65535);
        add(key === 'mod_tp_src' ? FlowOp.SET_TP_SRC : FlowOp.SET_TP_DST, p);
        shown.push(`${key}:${p}`);
        break;
      }
      case 'dec_ttl':
        add(FlowOp.DEC_TTL);
        shown.push('dec_ttl');
        break;
      default:
        throw new RangeError(
          `${item}: unknown action (drop, output:PORT, normal, flood, handler:NAME, strip_vlan, mod_vlan_vid:VID, mod_vlan_pcp:PCP, mod_dl_src:MAC, mod_dl_dst:MAC, mod_nw_src:IP, mod_nw_dst:IP, set_field:IPV6->ipv6_src, set_field:IPV6->ipv6_dst, mod_tp_src:PORT, mod_tp_dst:PORT, dec_ttl)`,
        );
    }
  }
  if (outputs === 0) throw new RangeError(`actions=${text}: edits without an output (output:PORT, normal, flood, handler:NAME); to drop, actions=drop`);
  return { words: Int32Array.from(out), text: shown.join(',') };
}

/** The match in ovs-ofctl's canonical form: protocol shorthand first, then the fields in table order. */
function formatMatch(w: Int32Array, given: Map<string, string>): string {
  const f = w[FlowWord.FIELDS];
  const has = (k: keyof typeof FlowField) => (f & (1 << FlowField[k])) !== 0;
  const out: string[] = [];
  let typeShown = false;
  let protoShown = false;
  if (has('DL_TYPE') && w[FlowWord.DL_TYPE] === 0x0800) {
    const proto = has('NW_PROTO') ? { 1: 'icmp', 6: 'tcp', 17: 'udp' }[w[FlowWord.NW_PROTO]] : undefined;
    out.push(proto ?? 'ip');
    typeShown = true;
    protoShown = proto !== undefined;
  } else if (has('DL_TYPE') && w[FlowWord.DL_TYPE] === 0x86dd) {
    const proto = has('NW_PROTO') ? { 58: 'icmp6', 6: 'tcp6', 17: 'udp6' }[w[FlowWord.NW_PROTO]] : undefined;
    out.push(proto ?? 'ipv6');
    typeShown = true;
    protoShown = proto !== undefined;
  } else if (has('DL_TYPE') && w[FlowWord.DL_TYPE] === 0x0806) {
    out.push('arp');
    typeShown = true;
  }
  if (has('IN_PORT')) out.push(`in_port=${given.get('in_port')}`);
  if (has('DL_SRC')) out.push(`dl_src=${macToString(w[FlowWord.DL_SRC_HI] * 2 ** 32 + (w[FlowWord.DL_SRC_LO] >>> 0))}`);
  if (has('DL_DST')) out.push(`dl_dst=${macToString(w[FlowWord.DL_DST_HI] * 2 ** 32 + (w[FlowWord.DL_DST_LO] >>> 0))}`);
  if (has('DL_VLAN')) out.push(`dl_vlan=${w[FlowWord.DL_VLAN]}`);
  if (has('DL_TYPE') && !typeShown) out.push(`dl_type=0x${w[FlowWord.DL_TYPE].toString(16).padStart(4, '0')}`);
  const prefix = (addr: number, mask: number) => {
    const len = Math.clz32(~mask); // a prefix mask: its leading ones
    return len === 32 ? ipString(addr >>> 0) : `${ipString(addr >>> 0)}/${len}`;
  };
  const arp = has('DL_TYPE') && w[FlowWord.DL_TYPE] === 0x0806;
  if (has('NW_SRC')) out.push(`${arp ? 'arp_spa' : 'nw_src'}=${prefix(w[FlowWord.NW_SRC], w[FlowWord.NW_SRC_MASK] >>> 0)}`);
  if (has('NW_DST')) out.push(`${arp ? 'arp_tpa' : 'nw_dst'}=${prefix(w[FlowWord.NW_DST], w[FlowWord.NW_DST_MASK] >>> 0)}`);
  const prefix6 = (at: number, len: number) => `${ipv6String(w.subarray(at, at + 4))}${len === 128 ? '' : `/${len}`}`;
  if (has('IPV6_SRC')) out.push(`ipv6_src=${prefix6(FlowWord.IPV6_SRC_0, w[FlowWord.IPV6_SRC_LEN])}`);
  if (has('IPV6_DST')) out.push(`ipv6_dst=${prefix6(FlowWord.IPV6_DST_0, w[FlowWord.IPV6_DST_LEN])}`);
  if (has('NW_PROTO') && !protoShown) out.push(`${arp ? 'arp_op' : 'nw_proto'}=${w[FlowWord.NW_PROTO]}`);
  if (has('NW_TTL')) out.push(`nw_ttl=${w[FlowWord.NW_TTL]}`);
  // An ICMP/ICMPv6 flow's TP_SRC/TP_DST are its message type and code.
  const icmp = has('NW_PROTO') && ((w[FlowWord.DL_TYPE] === 0x0800 && w[FlowWord.NW_PROTO] === 1) || (w[FlowWord.DL_TYPE] === 0x86dd && w[FlowWord.NW_PROTO] === 58));
  if (has('TP_SRC')) out.push(`${icmp ? 'icmp_type' : 'tp_src'}=${w[FlowWord.TP_SRC]}`);
  if (has('TP_DST')) out.push(`${icmp ? 'icmp_code' : 'tp_dst'}=${w[FlowWord.TP_DST]}`);
  if (has('TCP_FLAGS')) out.push(`tcp_flags=${formatTcpFlags(w[FlowWord.TCP_FLAGS], w[FlowWord.TCP_FLAGS_MASK])}`);
  return out.join(',');
}

/**
 * One line of `flow dump`, as ovs-ofctl dump-flows prints it; a flow with a timeout also
 * shows it, and its idle_age (whole seconds since its last match).
 */
export function formatFlow(f: { priority: number; match: string; actions: string; idleTimeout?: number; hardTimeout?: number }, packets: number, bytes: number, idleMs = 0): string {
  const idle = f.idleTimeout ? `idle_timeout=${f.idleTimeout}, ` : '';
  const hard = f.hardTimeout ? `hard_timeout=${f.hardTimeout}, ` : '';
  const age = idle || hard ? `idle_age=${Math.floor(idleMs / 1000)}, ` : '';
  return ` table=0, n_packets=${packets}, n_bytes=${bytes}, ${idle}${hard}${age}priority=${f.priority}${f.match ? `,${f.match}` : ''} actions=${f.actions}`;
}
