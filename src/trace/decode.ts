// The decoder of a traced vhost-user session: turns each message seen by the proxy, either
// way, on the main socket or on the backend request channel (SET_BACKEND_REQ_FD), into a
// record of plain JSON (names, the decoded payload with feature bits in words, the fds it
// carried) and keeps what the session negotiated (features, rings) for the records after
// it and for ring snapshots. It never throws on a message: what does not decode gets an
// `error` saying why (protocol.ts's words) and the raw payload still.
import { DeviceStatus, featureNames, VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, has } from '../virtio/features.js';
import { decodeNetConfig, netFeatureNames } from '../virtio/net.js';
import { blkFeatureNames, decodeBlkConfig } from '../virtio/blk.js';
import { guessType, type ProbeType } from '../vhost-user/probe.js';
import {
  BackendReq,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  ProtocolError,
  Req,
  VERSION,
  VRING_F_LOG,
  checkRequest,
  decodeReply,
  iotlbMsg,
  none,
  protocolFeatureNames,
  requestSpec,
  u64,
  vringFile,
  type CodedRequest,
  type Layout,
  type Message,
  type VringAddr,
} from '../vhost-user/protocol.js';
import type { FdInfo } from './fd-info.js';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The main vhost-user socket, or the backend request channel (SET_BACKEND_REQ_FD). */
export type Channel = 'main' | 'backend';
export type Side = 'frontend' | 'backend';

/** One message as traced. */
export interface MessageRecord {
  type: 'message';
  /** ms since the epoch, with microseconds as the fraction */
  t: number;
  session: number;
  channel: Channel;
  from: Side;
  request: number;
  /** GET_FEATURES, BACKEND_CONFIG_CHANGE_MSG, or "request 99" */
  name: string;
  flags: number;
  reply: boolean;
  needReply: boolean;
  size: number;
  /** the payload as hex (what replay sends) */
  payload: string;
  body?: Json;
  fds: FdInfo[];
  /** ms since the request this reply answers */
  latencyMs?: number;
  /** why the message did not decode (it was forwarded as it came) */
  error?: string;
}

/** A session opened or closed, or something the proxy did about it. */
export interface SessionRecord {
  type: 'session';
  t: number;
  session: number;
  event: 'open' | 'close' | 'refused';
  /** who ended it, for close */
  side?: Side | 'proxy';
  reason?: string;
  frontend?: string;
  backend?: string;
  /** pid of the frontend (SO_PEERCRED), on open */
  frontendPid?: number;
}

/** One ring's indices as read from guest memory. */
export interface RingSnapshot {
  index: number;
  layout: 'split' | 'packed';
  size: number;
  /** split: avail->idx, used->idx, their flags, and the event indices with EVENT_IDX */
  avail?: number;
  used?: number;
  availFlags?: number;
  usedFlags?: number;
  usedEvent?: number;
  availEvent?: number;
  /** packed: the driver and device event suppression areas (off_wrap, flags) */
  driverEvent?: { offWrap: number; flags: number };
  deviceEvent?: { offWrap: number; flags: number };
  /** why the ring could not be read */
  error?: string;
}

export interface RingsRecord {
  type: 'rings';
  t: number;
  session: number;
  rings: RingSnapshot[];
}

export type TraceRecord = MessageRecord | SessionRecord | RingsRecord;

/** What the session has set up for one queue, as far as the messages say. */
export interface QueueState {
  index: number;
  size?: number;
  addr?: VringAddr;
  base?: number;
  /** SET_VRING_KICK seen, no GET_VRING_BASE since: the backend is serving it */
  started: boolean;
  enabled?: boolean;
}

/** What a session negotiated so far. */
export class SessionState {
  offeredFeatures: bigint | null = null;
  features: bigint | null = null;
  offeredProtocolFeatures: bigint | null = null;
  protocolFeatures: bigint | null = null;
  readonly queues = new Map<number, QueueState>();
  /** requests waiting for their reply, per channel, oldest first */
  private readonly pending: Record<Channel, Array<{ request: number; t: number }>> = { main: [], backend: [] };

  constructor(public deviceType: ProbeType = 'unknown') {}

  get packed(): boolean {
    return this.features !== null && has(this.features, VIRTIO_F_RING_PACKED);
  }

  get eventIdx(): boolean {
    return this.features !== null && has(this.features, VIRTIO_RING_F_EVENT_IDX);
  }

  queue(index: number): QueueState {
    let q = this.queues.get(index);
    if (q === undefined) {
      q = { index, started: false };
      this.queues.set(index, q);
    }
    return q;
  }

  /** Device feature names for this session's device type. */
  featureWords(f: bigint): string[] {
    return featureNames(f, this.deviceType === 'net' ? netFeatureNames : this.deviceType === 'blk' ? blkFeatureNames : {});
  }

  expectReply(channel: Channel, request: number, t: number): void {
    this.pending[channel].push({ request, t });
  }

  /** The oldest pending request of this id on the channel, taken off the list. */
  replied(channel: Channel, request: number): { request: number; t: number } | undefined {
    const list = this.pending[channel];
    const i = list.findIndex((p) => p.request === request);
    return i < 0 ? undefined : list.splice(i, 1)[0];
  }
}

const hex = (x: bigint | number): string => `0x${x.toString(16)}`;

function bytesHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** A decoded value as JSON: bigints and byte arrays as hex strings. */
export function toJson(v: unknown): Json {
  if (typeof v === 'bigint') return hex(v);
  if (v instanceof Uint8Array) return bytesHex(v);
  if (Array.isArray(v)) return v.map(toJson);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]));
  if (v === undefined) return null;
  return v as Json;
}

function statusWords(s: number): string[] {
  const names = Object.entries(DeviceStatus)
    .filter(([, b]) => (s & b) !== 0)
    .map(([n]) => n);
  return s === 0 ? ['RESET'] : names;
}

/** Name of a request on a channel. */
export function requestName(channel: Channel, request: number): string {
  if (channel === 'backend') return BackendReq[request] !== undefined ? `BACKEND_${BackendReq[request]}` : `backend request ${request}`;
  return Req[request] ?? `request ${request}`;
}

/** VRING_HOST_NOTIFIER_MSG: struct VhostUserVringArea (u64 index and no-fd flag, u64 size, u64 offset). */
const vringArea: Layout<{ index: number; noFd: boolean; size: bigint; offset: bigint }> = {
  name: 'vring area',
  size: 24,
  encode: () => new Uint8Array(24),
  decode(p, what = 'vring area') {
    if (p.length < 24) throw ProtocolError.mismatch(what, `payload of ${p.length} bytes`, 'expected 24');
    const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
    const f = vringFile.decode(p.subarray(0, 8), what);
    return { index: f.index, noFd: f.noFd, size: v.getBigUint64(8, true), offset: v.getBigUint64(16, true) };
  },
};

/** Backend -> frontend requests: their payload and fds. */
const BACKEND_REQUESTS: Record<number, { body: Layout<unknown>; fds: [number, number] }> = {
  [BackendReq.IOTLB_MSG]: { body: iotlbMsg as Layout<unknown>, fds: [0, 0] },
  [BackendReq.CONFIG_CHANGE_MSG]: { body: none as Layout<unknown>, fds: [0, 0] },
  [BackendReq.VRING_HOST_NOTIFIER_MSG]: { body: vringArea as Layout<unknown>, fds: [0, 1] },
};

/** The vring state of SET/GET_VRING_BASE in words: packed rings carry wrap counters in it. */
function ringBase(state: SessionState, s: { index: number; num: number }): Json {
  if (!state.packed) return { index: s.index, base: s.num };
  return { index: s.index, base: s.num, availIdx: s.num & 0x7fff, availWrap: (s.num >> 15) & 1, usedIdx: (s.num >>> 16) & 0x7fff, usedWrap: (s.num >>> 31) & 1 };
}

function configJson(state: SessionState, c: { offset: number; size: number; flags: number; data: Uint8Array }): Json {
  const out: { [k: string]: Json } = { offset: c.offset, size: c.size, flags: c.flags, data: bytesHex(c.data) };
  if (c.flags & 1) out.migration = true;
  // Config fields in words when the access starts at 0 (QEMU reads the whole space).
  if (c.offset === 0 && c.data.length > 0 && c.data.some((b) => b !== 0)) {
    if (state.deviceType === 'net') out.net = toJson(decodeNetConfig(c.data));
    else if (state.deviceType === 'blk') out.blk = toJson(decodeBlkConfig(c.data));
  }
  return out;
}

/** A frontend request's body in words; also updates what the session negotiated. */
function requestBody(state: SessionState, request: CodedRequest, body: unknown): Json {
  switch (request) {
    case Req.SET_FEATURES: {
      const f = body as bigint;
      state.features = f;
      const out: { [k: string]: Json } = { features: hex(f), names: state.featureWords(f) };
      if (state.offeredFeatures !== null && f & ~state.offeredFeatures) out.notOffered = state.featureWords(f & ~state.offeredFeatures);
      return out;
    }
    case Req.SET_PROTOCOL_FEATURES: {
      const f = body as bigint;
      state.protocolFeatures = f;
      return { protocolFeatures: hex(f), names: protocolFeatureNames(f) };
    }
    case Req.SET_STATUS: {
      const s = Number(body as bigint);
      return { status: s, names: statusWords(s) };
    }
    case Req.NET_SET_MTU:
      return { mtu: Number(body as bigint) };
    case Req.SET_VRING_NUM: {
      const s = body as { index: number; num: number };
      state.queue(s.index).size = s.num;
      return { index: s.index, num: s.num };
    }
    case Req.SET_VRING_BASE: {
      const s = body as { index: number; num: number };
      state.queue(s.index).base = s.num;
      return ringBase(state, s);
    }
    case Req.GET_VRING_BASE:
      return { index: (body as { index: number }).index };
    case Req.SET_VRING_ENABLE: {
      const s = body as { index: number; num: number };
      state.queue(s.index).enabled = s.num !== 0;
      return { index: s.index, enable: s.num };
    }
    case Req.SET_VRING_ENDIAN: {
      const s = body as { index: number; num: number };
      return { index: s.index, endian: s.num === 1 ? 'big' : s.num === 0 ? 'little' : s.num };
    }
    case Req.SET_VRING_ADDR: {
      const a = body as VringAddr;
      state.queue(a.index).addr = a;
      const names = state.packed ? { desc: 'desc', avail: 'driverArea', used: 'deviceArea' } : { desc: 'desc', avail: 'avail', used: 'used' };
      return {
        index: a.index,
        flags: a.flags,
        ...(a.flags & VRING_F_LOG ? { log: true } : {}),
        [names.desc]: hex(a.desc),
        [names.avail]: hex(a.avail),
        [names.used]: hex(a.used),
        logAddr: hex(a.log),
      };
    }
    case Req.SET_VRING_KICK: {
      const f = body as { index: number; noFd: boolean };
      state.queue(f.index).started = true;
      return { index: f.index, ...(f.noFd ? { noFd: true, polling: true } : {}) };
    }
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR: {
      const f = body as { index: number; noFd: boolean };
      return { index: f.index, ...(f.noFd ? { noFd: true } : {}) };
    }
    case Req.RESET_OWNER:
    case Req.RESET_DEVICE:
      for (const q of state.queues.values()) q.started = false;
      return null;
    case Req.SEND_RARP:
      return { mac: Array.from(body as Uint8Array, (x) => x.toString(16).padStart(2, '0')).join(':') };
    case Req.GET_CONFIG:
    case Req.SET_CONFIG:
      return configJson(state, body as { offset: number; size: number; flags: number; data: Uint8Array });
    case Req.SET_MEM_TABLE:
      return { regions: toJson(body) };
    case Req.ADD_MEM_REG:
    case Req.REM_MEM_REG:
      return { region: toJson(body) };
    default:
      return body === null ? null : toJson(body);
  }
}

/** A backend reply's body in words; also updates what the session knows. */
function replyBody(state: SessionState, request: CodedRequest, body: unknown, hasOwnReply: boolean): Json {
  if (!hasOwnReply) {
    const v = body as bigint;
    return { ack: toJson(v), ok: v === 0n };
  }
  switch (request) {
    case Req.GET_FEATURES: {
      const f = body as bigint;
      state.offeredFeatures = f;
      if (state.deviceType === 'unknown') state.deviceType = guessType(f);
      return { features: hex(f), names: state.featureWords(f), deviceType: state.deviceType };
    }
    case Req.GET_PROTOCOL_FEATURES: {
      const f = body as bigint;
      state.offeredProtocolFeatures = f;
      return { protocolFeatures: hex(f), names: protocolFeatureNames(f) };
    }
    case Req.GET_QUEUE_NUM:
      return { queues: Number(body as bigint) };
    case Req.GET_MAX_MEM_SLOTS:
      return { slots: Number(body as bigint) };
    case Req.GET_STATUS: {
      const s = Number(body as bigint);
      return { status: s, names: statusWords(s) };
    }
    case Req.GET_VRING_BASE: {
      const s = body as { index: number; num: number };
      state.queue(s.index).started = false;
      return ringBase(state, s);
    }
    case Req.GET_CONFIG:
      return configJson(state, body as { offset: number; size: number; flags: number; data: Uint8Array });
    default:
      return toJson(body);
  }
}

function baseRecord(session: number, channel: Channel, from: Side, m: Message, fds: FdInfo[], t: number): MessageRecord {
  return {
    type: 'message',
    t,
    session,
    channel,
    from,
    request: m.request,
    name: requestName(channel, m.request),
    flags: m.flags,
    reply: (m.flags & FLAG_REPLY) !== 0,
    needReply: (m.flags & FLAG_NEED_REPLY) !== 0,
    size: m.payload.length,
    payload: bytesHex(m.payload),
    fds,
  };
}

/**
 * Decodes one message. Requests: from the frontend on the main channel, from the backend on
 * the backend channel; replies the other way. `fds` describes m.fds (describeFd), taken
 * before they were passed on.
 */
export function decodeMessage(state: SessionState, session: number, channel: Channel, from: Side, m: Message, fds: FdInfo[], t = nowMs()): MessageRecord {
  const rec = baseRecord(session, channel, from, m, fds, t);
  const isRequest = (channel === 'main') === (from === 'frontend');
  try {
    if ((m.flags & FLAG_VERSION_MASK) !== VERSION) throw ProtocolError.mismatch(rec.name, `header version ${m.flags & FLAG_VERSION_MASK}`, `expected ${VERSION}`);
    if (isRequest) {
      if (rec.reply) throw ProtocolError.mismatch('', `${rec.name} from the ${from} carries the reply flag (flags 0x${m.flags.toString(16)})`, 'expected a request');
      if (channel === 'main') {
        const s = checkRequest(m);
        // Its reply comes: the request's own reply, or REPLY_ACK when NEED_REPLY is set.
        if (s.reply !== undefined || rec.needReply) state.expectReply(channel, m.request, t);
        const body = s.body.decode(m.payload, rec.name);
        s.verify?.(body, m);
        rec.body = requestBody(state, m.request as CodedRequest, body);
      } else {
        const s = BACKEND_REQUESTS[m.request];
        if (s === undefined) throw ProtocolError.mismatch('', `unknown ${rec.name}`, 'expected IOTLB_MSG, CONFIG_CHANGE_MSG or VRING_HOST_NOTIFIER_MSG');
        if (rec.needReply) state.expectReply(channel, m.request, t);
        if (m.fds.length < s.fds[0] || m.fds.length > s.fds[1]) throw ProtocolError.mismatch(rec.name, `${m.fds.length} file descriptors`, `expected ${s.fds[0]}..${s.fds[1]}`);
        const body = s.body.decode(m.payload, rec.name);
        rec.body = body === null ? null : toJson(body);
      }
    } else {
      if (!rec.reply) throw ProtocolError.mismatch('', `${rec.name} from the ${from} without the reply flag (flags 0x${m.flags.toString(16)})`, 'expected a reply');
      const p = state.replied(channel, m.request);
      if (p !== undefined) rec.latencyMs = Math.round((t - p.t) * 1000) / 1000;
      if (channel === 'main') {
        const s = requestSpec(m.request);
        if (s === undefined) throw ProtocolError.mismatch('', `reply to unknown ${rec.name}`, 'expected a reply to a known request');
        const body = decodeReply(m.request as CodedRequest, m);
        rec.body = replyBody(state, m.request as CodedRequest, body, s.reply !== undefined);
      } else {
        const v = u64.decode(m.payload, `${rec.name} reply`);
        rec.body = { ack: hex(v), ok: v === 0n };
      }
      if (p === undefined) rec.error = `a reply to ${rec.name} that no request of the ${from === 'backend' ? 'frontend' : 'backend'} waits for`;
    }
  } catch (e) {
    rec.error = e instanceof ProtocolError ? e.message : `decoding failed: ${(e as Error).message}`;
  }
  return rec;
}

/** Now, in ms since the epoch with microseconds. */
export function nowMs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000) / 1000;
}
