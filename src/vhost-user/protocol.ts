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

/** Thrown for malformed input; the session logs it and closes. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
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
  if (p.length < n) throw new ProtocolError(`${what}: payload of ${p.length} bytes, expected ${n}`);
}

export const u64 = {
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
  decode(p: Uint8Array): VringAddr {
    need(p, 40, 'vring address');
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
export const vringFile = {
  encode(index: number, noFd: boolean): Uint8Array {
    return u64.encode(BigInt(index) | (noFd ? VRING_NOFD_MASK : 0n));
  },
  decode(p: Uint8Array, what: string): { index: number; noFd: boolean } {
    const x = u64.decode(p, what);
    if (x & ~(VRING_IDX_MASK | VRING_NOFD_MASK)) throw new ProtocolError(`${what}: reserved bits set in 0x${x.toString(16)}`);
    return { index: Number(x & VRING_IDX_MASK), noFd: (x & VRING_NOFD_MASK) !== 0n };
  },
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
  encode(regions: MemRegion[]): Uint8Array {
    const b = new Uint8Array(8 + 32 * regions.length);
    const v = view(b);
    v.setUint32(0, regions.length, true);
    regions.forEach((r, i) => putRegion(v, 8 + 32 * i, r));
    return b;
  },
  decode(p: Uint8Array): MemRegion[] {
    need(p, 8, 'memory table');
    const v = view(p);
    const n = v.getUint32(0, true);
    if (n > MAX_MEM_TABLE_REGIONS) throw new ProtocolError(`memory table: ${n} regions, at most ${MAX_MEM_TABLE_REGIONS}`);
    need(p, 8 + 32 * n, `memory table of ${n} regions`);
    return Array.from({ length: n }, (_, i) => getRegion(v, 8 + 32 * i));
  },
};

export const singleRegion = {
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
  size: 16,
  encode(l: LogArea): Uint8Array {
    const b = new Uint8Array(16);
    const v = view(b);
    v.setBigUint64(0, l.size, true);
    v.setBigUint64(8, l.offset, true);
    return b;
  },
  decode(p: Uint8Array): LogArea {
    need(p, 16, 'log area');
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
  encode(c: ConfigAccess): Uint8Array {
    const b = new Uint8Array(12 + c.data.length);
    const v = view(b);
    v.setUint32(0, c.offset, true);
    v.setUint32(4, c.size, true);
    v.setUint32(8, c.flags, true);
    b.set(c.data, 12);
    return b;
  },
  decode(p: Uint8Array): ConfigAccess {
    need(p, 12, 'config space');
    const v = view(p);
    const offset = v.getUint32(0, true);
    const size = v.getUint32(4, true);
    const flags = v.getUint32(8, true);
    if (size > MAX_CONFIG_SIZE || offset > MAX_CONFIG_SIZE || offset + size > MAX_CONFIG_SIZE) {
      throw new ProtocolError(`config space access at ${offset}+${size}, at most ${MAX_CONFIG_SIZE} bytes`);
    }
    if (p.length !== 12 + size) throw new ProtocolError(`config space: payload of ${p.length} bytes for size ${size}`);
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
  size: 24,
  encode(a: InflightArea): Uint8Array {
    const b = new Uint8Array(24); // QEMU sends sizeof(VhostUserInflight): 20 bytes padded to 24
    const v = view(b);
    v.setBigUint64(0, a.mmapSize, true);
    v.setBigUint64(8, a.mmapOffset, true);
    v.setUint16(16, a.numQueues, true);
    v.setUint16(18, a.queueSize, true);
    return b;
  },
  decode(p: Uint8Array): InflightArea {
    need(p, 20, 'inflight description');
    const v = view(p);
    return { mmapSize: v.getBigUint64(0, true), mmapOffset: v.getBigUint64(8, true), numQueues: v.getUint16(16, true), queueSize: v.getUint16(18, true) };
  },
};
