// The vhost-user wire format (QEMU docs/interop/vhost-user.rst): header, request ids,
// protocol feature bits, and a codec for every payload layout. All numbers are in the
// machine's byte order, which on the platforms we run on (x86-64, arm64) is little-endian.

export const HEADER_SIZE = 12;
/** Largest payload we accept. SET_MEM_TABLE with 8 regions is 264 bytes; config space at most 256. */
export const MAX_PAYLOAD = 4096;
export const VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 1 << 2;
export const FLAG_NEED_REPLY = 1 << 3;
/** Most fds one message carries (SET_MEM_TABLE: one per region, at most 8 regions). */
export const MAX_FDS = 8;
/** Regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_TABLE_REGIONS = 8;

/** Front-end -> back-end requests. */
export enum Req {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  CREATE_CRYPTO_SESSION = 26,
  CLOSE_CRYPTO_SESSION = 27,
  POSTCOPY_ADVISE = 28,
  POSTCOPY_LISTEN = 29,
  POSTCOPY_END = 30,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GPU_SET_SOCKET = 33,
  RESET_DEVICE = 34,
  VRING_KICK = 35,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
}

/** Back-end -> front-end requests (on the SET_BACKEND_REQ_FD channel). */
export enum BackendReq {
  IOTLB_MSG = 1,
  CONFIG_CHANGE_MSG = 2,
  VRING_HOST_NOTIFIER_MSG = 3,
}

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export enum ProtocolFeature {
  MQ = 0,
  LOG_SHMFD = 1,
  RARP = 2,
  REPLY_ACK = 3,
  MTU = 4,
  BACKEND_REQ = 5,
  CROSS_ENDIAN = 6,
  CRYPTO_SESSION = 7,
  PAGEFAULT = 8,
  CONFIG = 9,
  BACKEND_SEND_FD = 10,
  HOST_NOTIFIER = 11,
  INFLIGHT_SHMFD = 12,
  RESET_DEVICE = 13,
  INBAND_NOTIFICATIONS = 14,
  CONFIGURE_MEM_SLOTS = 15,
  STATUS = 16,
}

export function reqName(id: number): string {
  return Req[id] !== undefined ? `VHOST_USER_${Req[id]}` : `request ${id}`;
}

export function protocolFeatureNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) if ((mask >> BigInt(i)) & 1n) out.push(ProtocolFeature[i] ?? `bit ${i}`);
  return out;
}

/** A decoded message: header fields, payload bytes, and the fds that came with it. */
export interface Message {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
}

/**
 * Thrown for malformed input; the session logs it and closes. Errors of the codec (this
 * file) also say, in `found` and `expected`, what arrived and what was expected; both
 * strings appear verbatim in the message ("SET_FEATURES: payload of 4 bytes, expected 8").
 */
export class ProtocolError extends Error {
  readonly found?: string;
  /** "expected ..." or "at most ..." */
  readonly expected?: string;
  constructor(message: string, detail?: { found: string; expected: string }) {
    super(message);
    this.name = 'ProtocolError';
    this.found = detail?.found;
    this.expected = detail?.expected;
  }

  /** `${what}: ${found}, ${expected}` (without the prefix when `what` is empty). */
  static mismatch(what: string, found: string, expected: string): ProtocolError {
    return new ProtocolError(`${what ? `${what}: ` : ''}${found}, ${expected}`, { found, expected });
  }
}

/**
 * A frontend asked for more than a configured limit allows (see SessionLimits in
 * session.ts): `limit` names the option, and the message names it too.
 */
export class LimitError extends ProtocolError {
  constructor(
    readonly limit: string,
    what: string,
    found: string,
    max: number | bigint,
  ) {
    const expected = `at most ${max}`;
    super(`${what}: ${found}, ${expected} (limit ${limit})`, { found, expected });
    this.name = 'LimitError';
  }
}

export function encodeHeader(request: number, flags: number, size: number): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return b;
}

export function decodeHeader(b: Uint8Array): { request: number; flags: number; size: number } {
  const v = new DataView(b.buffer, b.byteOffset, HEADER_SIZE);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

// ---- payload layouts ------------------------------------------------------

function view(p: Uint8Array): DataView {
  return new DataView(p.buffer, p.byteOffset, p.byteLength);
}

function need(p: Uint8Array, n: number, what: string): void {
  if (p.length < n) throw ProtocolError.mismatch(what, `payload of ${p.length} bytes`, `expected ${n}`);
}

/**
 * A payload layout: its size on the wire and how to write and read it. `decode` checks
 * what it needs of the bytes and throws ProtocolError; `what` names the message in errors.
 */
export interface Layout<T> {
  readonly name: string;
  /** payload bytes: exact, or [min, max] */
  readonly size: number | readonly [number, number];
  encode(v: T): Uint8Array;
  decode(p: Uint8Array, what?: string): T;
}

/** No payload (GET_FEATURES, SET_OWNER, ...). */
export const none: Layout<null> = {
  name: 'none',
  size: 0,
  encode: () => new Uint8Array(0),
  decode: () => null,
};

/** No payload, or a u64 that carries nothing (RESET_OWNER and RESET_DEVICE as some frontends send them). */
export const noneOrU64: Layout<null> = {
  name: 'none or u64',
  size: [0, 8],
  encode: () => new Uint8Array(0),
  decode: () => null,
};

export const u64 = {
  name: 'u64',
  size: 8,
  encode(x: bigint): Uint8Array {
    const b = new Uint8Array(8);
    view(b).setBigUint64(0, x, true);
    return b;
  },
  decode(p: Uint8Array, what = 'u64'): bigint {
    need(p, 8, what);
    return view(p).getBigUint64(0, true);
  },
};

export interface VringState {
  index: number;
  num: number;
}
export const vringState = {
  name: 'vring state',
  size: 8,
  encode(s: VringState): Uint8Array {
    const b = new Uint8Array(8);
    const v = view(b);
    v.setUint32(0, s.index, true);
    v.setUint32(4, s.num, true);
    return b;
  },
  decode(p: Uint8Array, what = 'vring state'): VringState {
    need(p, 8, what);
    const v = view(p);
    return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
  },
};

/** VHOST_VRING_F_LOG: log writes to the used ring at log_guest_addr. */
export const VRING_F_LOG = 1;

export interface VringAddr {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}
export const vringAddr = {
  name: 'vring address',
  size: 40,
  encode(a: VringAddr): Uint8Array {
    const b = new Uint8Array(40);
    const v = view(b);
    v.setUint32(0, a.index, true);
    v.setUint32(4, a.flags, true);
    v.setBigUint64(8, a.desc, true);
    v.setBigUint64(16, a.used, true);
    v.setBigUint64(24, a.avail, true);
    v.setBigUint64(32, a.log, true);
    return b;
  },
  decode(p: Uint8Array, what = 'vring address'): VringAddr {
    need(p, 40, what);
    const v = view(p);
    return {
      index: v.getUint32(0, true),
      flags: v.getUint32(4, true),
      desc: v.getBigUint64(8, true),
      used: v.getBigUint64(16, true),
      avail: v.getBigUint64(24, true),
      log: v.getBigUint64(32, true),
    };
  },
};

/** The u64 of SET_VRING_KICK / CALL / ERR: bits 0-7 index, bit 8 "no fd" (polling). */
export const VRING_IDX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;
export interface VringFile {
  index: number;
  noFd: boolean;
}
export const vringFile = {
  encode(index: number, noFd: boolean): Uint8Array {
    return u64.encode(BigInt(index) | (noFd ? VRING_NOFD_MASK : 0n));
  },
  decode(p: Uint8Array, what = 'vring file'): VringFile {
    const x = u64.decode(p, what);
    if (x & ~(VRING_IDX_MASK | VRING_NOFD_MASK)) throw ProtocolError.mismatch(what, `reserved bits set in 0x${x.toString(16)}`, 'expected only bits 0-8 (queue index, no-fd flag)');
    return { index: Number(x & VRING_IDX_MASK), noFd: (x & VRING_NOFD_MASK) !== 0n };
  },
};
/** vringFile as a Layout (the body of SET_VRING_KICK / CALL / ERR). */
export const vringFileBody: Layout<VringFile> = {
  name: 'vring file',
  size: 8,
  encode: (f) => vringFile.encode(f.index, f.noFd),
  decode: (p, what) => vringFile.decode(p, what),
};

export interface MemRegion {
  gpa: bigint;
  size: bigint;
  uva: bigint;
  mmapOffset: bigint;
}
function putRegion(v: DataView, at: number, r: MemRegion): void {
  v.setBigUint64(at, r.gpa, true);
  v.setBigUint64(at + 8, r.size, true);
  v.setBigUint64(at + 16, r.uva, true);
  v.setBigUint64(at + 24, r.mmapOffset, true);
}
function getRegion(v: DataView, at: number): MemRegion {
  return {
    gpa: v.getBigUint64(at, true),
    size: v.getBigUint64(at + 8, true),
    uva: v.getBigUint64(at + 16, true),
    mmapOffset: v.getBigUint64(at + 24, true),
  };
}

export const memTable = {
  name: 'memory table',
  size: [8, 8 + 32 * MAX_MEM_TABLE_REGIONS] as const,
  encode(regions: MemRegion[]): Uint8Array {
    const b = new Uint8Array(8 + 32 * regions.length);
    const v = view(b);
    v.setUint32(0, regions.length, true);
    regions.forEach((r, i) => putRegion(v, 8 + 32 * i, r));
    return b;
  },
  decode(p: Uint8Array, what = 'memory table'): MemRegion[] {
    need(p, 8, what);
    const v = view(p);
    const n = v.getUint32(0, true);
    if (n > MAX_MEM_TABLE_REGIONS) throw ProtocolError.mismatch('memory table', `${n} regions`, `at most ${MAX_MEM_TABLE_REGIONS}`);
    if (p.length !== 8 + 32 * n) throw ProtocolError.mismatch(what, `payload of ${p.length} bytes for ${n} regions`, `expected ${8 + 32 * n}`);
    return Array.from({ length: n }, (_, i) => getRegion(v, 8 + 32 * i));
  },
};

export const singleRegion = {
  name: 'memory region',
  size: 40,
  encode(r: MemRegion): Uint8Array {
    const b = new Uint8Array(40);
    putRegion(view(b), 8, r);
    return b;
  },
  decode(p: Uint8Array, what = 'memory region'): MemRegion {
    need(p, 40, what);
    return getRegion(view(p), 8);
  },
};

export interface LogArea {
  size: bigint;
  offset: bigint;
}
export const logArea = {
  name: 'log area',
  size: 16,
  encode(l: LogArea): Uint8Array {
    const b = new Uint8Array(16);
    const v = view(b);
    v.setBigUint64(0, l.size, true);
    v.setBigUint64(8, l.offset, true);
    return b;
  },
  decode(p: Uint8Array, what = 'log area'): LogArea {
    need(p, 16, what);
    const v = view(p);
    return { size: v.getBigUint64(0, true), offset: v.getBigUint64(8, true) };
  },
};

/** GET/SET_CONFIG flags. */
export const CONFIG_FLAG_WRITABLE = 0;
export const CONFIG_FLAG_MIGRATION = 1;
/** Largest config space access we accept. */
export const MAX_CONFIG_SIZE = 256;

export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}
export const configSpace = {
  name: 'config space',
  size: [12, 12 + MAX_CONFIG_SIZE] as const,
  encode(c: ConfigAccess): Uint8Array {
    const b = new Uint8Array(12 + c.data.length);
    const v = view(b);
    v.setUint32(0, c.offset, true);
    v.setUint32(4, c.size, true);
    v.setUint32(8, c.flags, true);
    b.set(c.data, 12);
    return b;
  },
  decode(p: Uint8Array, what = 'config space'): ConfigAccess {
    need(p, 12, what);
    const v = view(p);
    const offset = v.getUint32(0, true);
    const size = v.getUint32(4, true);
    const flags = v.getUint32(8, true);
    if (size > MAX_CONFIG_SIZE || offset > MAX_CONFIG_SIZE || offset + size > MAX_CONFIG_SIZE) {
      throw ProtocolError.mismatch('config space', `access at ${offset}+${size}`, `at most ${MAX_CONFIG_SIZE} bytes`);
    }
    if (p.length !== 12 + size) throw ProtocolError.mismatch(what, `payload of ${p.length} bytes for size ${size}`, `expected ${12 + size}`);
    return { offset, size, flags, data: p.subarray(12, 12 + size) };
  },
};

export interface InflightArea {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}
export const inflightArea = {
  name: 'inflight description',
  /** QEMU sends sizeof(VhostUserInflight): 20 bytes padded to 24; we accept either */
  size: [20, 24] as const,
  encode(a: InflightArea): Uint8Array {
    const b = new Uint8Array(24); // QEMU sends sizeof(VhostUserInflight): 20 bytes padded to 24
    const v = view(b);
    v.setBigUint64(0, a.mmapSize, true);
    v.setBigUint64(8, a.mmapOffset, true);
    v.setUint16(16, a.numQueues, true);
    v.setUint16(18, a.queueSize, true);
    return b;
  },
  decode(p: Uint8Array, what = 'inflight description'): InflightArea {
    need(p, 20, what);
    const v = view(p);
    return { mmapSize: v.getBigUint64(0, true), mmapOffset: v.getBigUint64(8, true), numQueues: v.getUint16(16, true), queueSize: v.getUint16(18, true) };
  },
};

/** SEND_RARP: a u64 whose first 6 bytes are the MAC address to announce. */
export const rarpMac: Layout<Uint8Array> = {
  name: 'MAC address',
  size: 8,
  encode(mac: Uint8Array): Uint8Array {
    if (mac.length !== 6) throw new RangeError(`MAC address of ${mac.length} bytes, expected 6`);
    const b = new Uint8Array(8);
    b.set(mac);
    return b;
  },
  decode(p: Uint8Array, what = 'MAC address'): Uint8Array {
    need(p, 8, what);
    return p.slice(0, 6);
  },
};

/** IOTLB_MSG: struct vhost_iotlb_msg (26 bytes, padded to 32). */
export interface IotlbMsg {
  iova: bigint;
  size: bigint;
  uaddr: bigint;
  perm: number;
  type: number;
}
export const iotlbMsg: Layout<IotlbMsg> = {
  name: 'IOTLB message',
  size: 32,
  encode(m: IotlbMsg): Uint8Array {
    const b = new Uint8Array(32);
    const v = view(b);
    v.setBigUint64(0, m.iova, true);
    v.setBigUint64(8, m.size, true);
    v.setBigUint64(16, m.uaddr, true);
    v.setUint8(24, m.perm);
    v.setUint8(25, m.type);
    return b;
  },
  decode(p: Uint8Array, what = 'IOTLB message'): IotlbMsg {
    need(p, 32, what);
    const v = view(p);
    return { iova: v.getBigUint64(0, true), size: v.getBigUint64(8, true), uaddr: v.getBigUint64(16, true), perm: v.getUint8(24), type: v.getUint8(25) };
  },
};

// ---- requests ---------------------------------------------------------------

/** What one request looks like on the wire (vhost-user.rst, "Front-end message types"). */
export interface RequestSpec<B, R = bigint> {
  /** layout of the payload */
  readonly body: Layout<B>;
  /** file descriptors the request carries: [min, max] */
  readonly fds: readonly [number, number];
  /** layout of the reply, for requests that are always answered (others: REPLY_ACK's u64, the default R) */
  readonly reply?: Layout<R>;
  /** fds the reply carries */
  readonly replyFds?: number;
  /** checks across body and fds (e.g. one fd per memory region) */
  verify?(body: B, m: Message): void;
}

function spec<B, R = bigint>(body: Layout<B>, fds: readonly [number, number] = [0, 0], reply?: Layout<R>, more: Partial<Pick<RequestSpec<B, R>, 'replyFds' | 'verify'>> = {}): RequestSpec<B, R> {
  return { body, fds, reply, ...more };
}

function fdMatchesFlag(name: string) {
  return (f: VringFile, m: Message): void => {
    if (f.noFd !== (m.fds.length === 0)) {
      throw ProtocolError.mismatch(name, `no-fd flag ${f.noFd} with ${m.fds.length} fds`, `expected ${f.noFd ? 'no fd' : 'one fd'}`);
    }
  };
}

/**
 * Every front-end request the codec knows, by id. CREATE_CRYPTO_SESSION (a variable
 * crypto session description) is the one request left out: no vhostkit device does crypto.
 */
export const REQUESTS = {
  [Req.GET_FEATURES]: spec(none, [0, 0], u64),
  [Req.SET_FEATURES]: spec(u64),
  [Req.SET_OWNER]: spec(none),
  [Req.RESET_OWNER]: spec(noneOrU64),
  [Req.SET_MEM_TABLE]: spec(memTable, [1, MAX_MEM_TABLE_REGIONS], undefined, {
    verify(regions: MemRegion[], m: Message) {
      if (m.fds.length !== regions.length) throw ProtocolError.mismatch('SET_MEM_TABLE', `${regions.length} regions but ${m.fds.length} file descriptors`, 'expected one per region');
    },
  }),
  [Req.SET_LOG_BASE]: spec(logArea, [1, 1], u64),
  [Req.SET_LOG_FD]: spec(none, [1, 1]),
  [Req.SET_VRING_NUM]: spec(vringState),
  [Req.SET_VRING_ADDR]: spec(vringAddr),
  [Req.SET_VRING_BASE]: spec(vringState),
  [Req.GET_VRING_BASE]: spec(vringState, [0, 0], vringState),
  [Req.SET_VRING_KICK]: spec(vringFileBody, [0, 1], undefined, { verify: fdMatchesFlag('SET_VRING_KICK') }),
  [Req.SET_VRING_CALL]: spec(vringFileBody, [0, 1], undefined, { verify: fdMatchesFlag('SET_VRING_CALL') }),
  [Req.SET_VRING_ERR]: spec(vringFileBody, [0, 1], undefined, { verify: fdMatchesFlag('SET_VRING_ERR') }),
  [Req.GET_PROTOCOL_FEATURES]: spec(none, [0, 0], u64),
  [Req.SET_PROTOCOL_FEATURES]: spec(u64),
  [Req.GET_QUEUE_NUM]: spec(none, [0, 0], u64),
  [Req.SET_VRING_ENABLE]: spec(vringState),
  [Req.SEND_RARP]: spec(rarpMac),
  [Req.NET_SET_MTU]: spec(u64),
  [Req.SET_BACKEND_REQ_FD]: spec(none, [1, 1]),
  [Req.IOTLB_MSG]: spec(iotlbMsg),
  [Req.SET_VRING_ENDIAN]: spec(vringState),
  [Req.GET_CONFIG]: spec(configSpace, [0, 0], configSpace),
  [Req.SET_CONFIG]: spec(configSpace),
  [Req.CLOSE_CRYPTO_SESSION]: spec(u64),
  [Req.POSTCOPY_ADVISE]: spec(none, [0, 0], none, { replyFds: 1 }),
  [Req.POSTCOPY_LISTEN]: spec(none),
  [Req.POSTCOPY_END]: spec(none, [0, 0], u64),
  [Req.GET_INFLIGHT_FD]: spec(inflightArea, [0, 0], inflightArea, { replyFds: 1 }),
  [Req.SET_INFLIGHT_FD]: spec(inflightArea, [1, 1]),
  [Req.GPU_SET_SOCKET]: spec(none, [1, 1]),
  [Req.RESET_DEVICE]: spec(noneOrU64),
  [Req.VRING_KICK]: spec(vringState),
  [Req.GET_MAX_MEM_SLOTS]: spec(none, [0, 0], u64),
  [Req.ADD_MEM_REG]: spec(singleRegion, [1, 1]),
  [Req.REM_MEM_REG]: spec(singleRegion, [0, 1]),
  [Req.SET_STATUS]: spec(u64),
  [Req.GET_STATUS]: spec(none, [0, 0], u64),
};

export type CodedRequest = keyof typeof REQUESTS;
/** The decoded payload of request R. */
export type BodyOf<R extends CodedRequest> = (typeof REQUESTS)[R] extends RequestSpec<infer B, infer _> ? B : never;
/** The decoded reply payload of request R (REPLY_ACK's u64 for requests without a reply of their own). */
export type ReplyOf<R extends CodedRequest> = (typeof REQUESTS)[R] extends RequestSpec<infer _, infer P> ? P : never;

const specs = new Map<number, RequestSpec<unknown, unknown>>(Object.entries(REQUESTS).map(([k, v]) => [Number(k), v as RequestSpec<unknown, unknown>]));

/** The request ids the codec knows. */
export const codedRequests: readonly CodedRequest[] = [...specs.keys()] as CodedRequest[];
const knownIds = (() => {
  const lo = Math.min(...codedRequests);
  const hi = Math.max(...codedRequests);
  const gaps = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i).filter((id) => !specs.has(id));
  return `a request id in ${lo}..${hi}${gaps.length ? ` other than ${gaps.join(', ')}` : ''}`;
})();

export function requestSpec(request: number): RequestSpec<unknown, unknown> | undefined {
  return specs.get(request);
}

function range([lo, hi]: readonly [number, number]): string {
  return lo === hi ? `${lo}` : `${lo}..${hi}`;
}

function sizeRange(l: Layout<unknown>): readonly [number, number] {
  return typeof l.size === 'number' ? [l.size, l.size] : l.size;
}

/**
 * Checks a request's header flags, payload size and fd count against its spec, and
 * returns the spec. Throws ProtocolError (the body itself is not decoded).
 */
export function checkRequest(m: Message): RequestSpec<unknown, unknown> {
  const name = reqName(m.request);
  const s = specs.get(m.request);
  if (s === undefined) throw ProtocolError.mismatch('', `unknown ${name}`, `expected ${knownIds}`);
  if ((m.flags & FLAG_VERSION_MASK) !== VERSION) throw ProtocolError.mismatch(name, `header version ${m.flags & FLAG_VERSION_MASK}`, `expected ${VERSION}`);
  if (m.flags & FLAG_REPLY) throw ProtocolError.mismatch('', `${name} carries the reply flag (flags 0x${m.flags.toString(16)})`, 'expected a request');
  const size = sizeRange(s.body);
  if (m.payload.length < size[0] || m.payload.length > size[1]) throw ProtocolError.mismatch(name, `payload of ${m.payload.length} bytes`, `expected ${range(size)}`);
  if (m.fds.length < s.fds[0] || m.fds.length > s.fds[1]) throw ProtocolError.mismatch(name, `${m.fds.length} file descriptors`, `expected ${range(s.fds)}`);
  return s;
}

/** The body of request R (checkRequest, the layout's decode, then the spec's cross-checks). */
export function decodeBody<R extends CodedRequest>(request: R, m: Message): BodyOf<R> {
  if (m.request !== request) throw ProtocolError.mismatch('', `${reqName(m.request)}`, `expected ${reqName(request)}`);
  const s = checkRequest(m);
  const body = s.body.decode(m.payload, Req[request]);
  s.verify?.(body, m);
  return body as BodyOf<R>;
}

/** Any coded request, decoded: its id and body. */
export function decodeRequest(m: Message): { request: CodedRequest; body: unknown } {
  checkRequest(m);
  const request = m.request as CodedRequest;
  return { request, body: decodeBody(request, m) };
}

/** Payload of request R with `body`. */
export function encodeBody<R extends CodedRequest>(request: R, body: BodyOf<R>): Uint8Array {
  return (REQUESTS[request].body as Layout<BodyOf<R>>).encode(body);
}

/** One message on the wire: the header (VERSION added to `flags`) and the payload. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE + payload.length);
  b.set(encodeHeader(request, flags | VERSION, payload.length), 0);
  b.set(payload, HEADER_SIZE);
  return b;
}

/** Request R with `body` as bytes on the wire. */
export function encodeRequest<R extends CodedRequest>(request: R, body: BodyOf<R>, flags = 0): Uint8Array {
  return encodeMessage(request, flags, encodeBody(request, body));
}

/**
 * The reply to request R: its own reply layout, or REPLY_ACK's u64 (when the request had
 * NEED_REPLY set). Throws ProtocolError if `m` is not that reply.
 */
export function decodeReply<R extends CodedRequest>(request: R, m: Message): ReplyOf<R> {
  const name = reqName(request);
  if (m.request !== request) throw ProtocolError.mismatch('', `reply to ${reqName(m.request)}`, `expected the reply to ${name}`);
  if ((m.flags & FLAG_VERSION_MASK) !== VERSION) throw ProtocolError.mismatch(`${name} reply`, `header version ${m.flags & FLAG_VERSION_MASK}`, `expected ${VERSION}`);
  if (!(m.flags & FLAG_REPLY)) throw ProtocolError.mismatch(`${name} reply`, `flags 0x${m.flags.toString(16)} without the reply flag`, 'expected the reply flag');
  const s = REQUESTS[request] as RequestSpec<unknown, unknown>;
  const layout: Layout<unknown> = s.reply ?? u64;
  const size = sizeRange(layout);
  if (m.payload.length < size[0] || m.payload.length > size[1]) throw ProtocolError.mismatch(`${name} reply`, `payload of ${m.payload.length} bytes`, `expected ${range(size)}`);
  const fds = s.reply ? (s.replyFds ?? 0) : 0;
  if (m.fds.length !== fds) throw ProtocolError.mismatch(`${name} reply`, `${m.fds.length} file descriptors`, `expected ${fds}`);
  return layout.decode(m.payload, `${name} reply`) as ReplyOf<R>;
}

// ---- framing ----------------------------------------------------------------

/**
 * Cuts a byte stream into messages: the header, then exactly `size` payload bytes, so
 * the fds that arrive with a message's first bytes stay with that message. The caller
 * receives into target() (never more than it is long), then calls received(). No buffer
 * larger than maxPayload is ever allocated, whatever the size field says.
 */
export class MessageReader {
  private readonly header = new Uint8Array(HEADER_SIZE);
  private got = 0;
  private hdr: { request: number; flags: number; size: number } | null = null;
  private payload: Uint8Array | null = null;
  private fds: number[] = [];

  constructor(
    readonly maxPayload = MAX_PAYLOAD,
    private readonly alloc: (bytes: number) => Uint8Array = (n) => new Uint8Array(n),
  ) {
    if (!Number.isInteger(maxPayload) || maxPayload < 0 || maxPayload > 0xffffffff) throw new RangeError(`maxPayload ${maxPayload}: expected 0..2^32-1`);
  }

  /** Where the next bytes go: the rest of the header or of the payload. Never empty. */
  target(): Uint8Array {
    return this.hdr === null ? this.header.subarray(this.got) : this.payload!.subarray(this.got);
  }

  /** No part of a message is held (between messages). */
  get idle(): boolean {
    return this.hdr === null && this.got === 0;
  }

  /** The request whose payload is being read, if any (for logs). */
  get pendingRequest(): number | null {
    return this.hdr?.request ?? null;
  }

  /**
   * `bytes` bytes were written into target(), with `fds`. The reader owns the fds from
   * now on (also when this throws: takeFds() hands them back for closing). Returns the
   * message once whole; its fds are then the caller's. Throws ProtocolError on a bad
   * header, a size above maxPayload, fds in a payload or more than MAX_FDS fds.
   */
  received(bytes: number, fds: readonly number[] = []): Message | null {
    const room = this.target().length;
    if (!Number.isInteger(bytes) || bytes < 0 || bytes > room) throw new RangeError(`received ${bytes} bytes into a target of ${room}`);
    this.fds.push(...fds);
    if (this.hdr !== null && fds.length > 0) {
      throw ProtocolError.mismatch('', `file descriptors arrived in the payload of ${reqName(this.hdr.request)}`, 'expected them with the header only');
    }
    if (this.fds.length > MAX_FDS) throw ProtocolError.mismatch('', `more than ${MAX_FDS} file descriptors in one message`, `at most ${MAX_FDS}`);
    this.got += bytes;
    if (this.hdr === null) {
      if (this.got < HEADER_SIZE) return null;
      const h = decodeHeader(this.header);
      const name = reqName(h.request);
      if ((h.flags & FLAG_VERSION_MASK) !== VERSION) throw ProtocolError.mismatch(name, `header version ${h.flags & FLAG_VERSION_MASK}`, `expected ${VERSION}`);
      if (h.size > this.maxPayload) throw ProtocolError.mismatch(name, `payload size ${h.size}`, `at most ${this.maxPayload}`);
      this.hdr = h;
      this.payload = this.alloc(h.size);
      this.got = 0;
    }
    if (this.got < this.payload!.length) return null;
    const msg: Message = { request: this.hdr.request, flags: this.hdr.flags, payload: this.payload!, fds: this.fds };
    this.hdr = null;
    this.payload = null;
    this.got = 0;
    this.fds = [];
    return msg;
  }

  /** Hands back the fds of the message being read (to close when giving up on the stream). */
  takeFds(): number[] {
    const f = this.fds;
    this.fds = [];
    return f;
  }
}
