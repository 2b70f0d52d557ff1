// The switch's native surface (native/addon/bind_switch.cc): the forwarding table, the data
// path (Forwarder), and the word layouts they share with TypeScript, checked at load.
import { addon } from './binding.js';
import { switchLayout } from './layouts.js';

/** Per-port counters (Float64, shared): what each word counts is said in switch_layout.h. */
export const PortCounter = switchLayout('PortCounter', [
  'RX_PACKETS',
  'RX_BYTES',
  'TX_PACKETS',
  'TX_BYTES',
  'DROP_NO_BUFFERS',
  'DROP_TOO_BIG',
  'DROP_BAD',
  'DROP_VLAN',
  'DROP_HOOK',
  'DROP_NO_QUEUE',
  'FLOODED',
  'QUEUE_ERRORS',
  'DROP_HOST_BUSY',
  'RX_CSUM_COMPLETED',
  'CAPTURE_LOST',
  'DROP_FLOW',
] as const);

/** A port's configuration as the Forwarder takes it (Int32); ALLOWED starts the 128-word VLAN bitmap. */
export const PortWord = switchLayout('PortWord', ['KIND', 'HDR_LEN', 'MERGEABLE', 'RX_OFFLOADS', 'MAX_FRAME', 'TX_OFFLOADS', 'HOST_FD', 'HOST_OFFLOADS', 'VNI', 'OWNER', 'ACCESS', 'VID', 'NATIVE', 'ALL_ALLOWED', 'ALLOWED'] as const);
export const PortKind = { GUEST: 0, TAP: 1, VXLAN: 2 } as const;

/** Per guest queue (Float64): frames, bytes, bursts after which the driver was notified / had asked not to be. */
export const QueueStat = switchLayout('QueueStat', ['PACKETS', 'BYTES', 'NOTIFY', 'SUPPRESSED'] as const);

/** A capture's state (Float64): staged bytes and records, records in all and lost, done, snaplen, count. */
export const CaptureWord = switchLayout('CaptureWord', ['AT', 'PENDING', 'PACKETS', 'LOST', 'DONE', 'SNAPLEN', 'LIMIT'] as const);

/** What classify() writes after dest, vid and tagged (Int32). */
export const ClassifyCount = switchLayout('ClassifyCount', ['BAD', 'HOOK', 'VLAN', 'FLOODED'] as const);

/** One flow as the Forwarder takes it (Int32; native/switch/switch_layout.h says what each word is). */
export const FlowWord = switchLayout('FlowWord', [
  'PRIORITY',
  'FIELDS',
  'IN_PORT',
  'DL_SRC_HI',
  'DL_SRC_LO',
  'DL_DST_HI',
  'DL_DST_LO',
  'DL_VLAN',
  'DL_TYPE',
  'NW_SRC',
  'NW_SRC_MASK',
  'NW_DST',
  'NW_DST_MASK',
  'NW_PROTO',
  'NW_TTL',
  'TP_SRC',
  'TP_DST',
  'TCP_FLAGS',
  'TCP_FLAGS_MASK',
  'IPV6_SRC_0',
  'IPV6_SRC_1',
  'IPV6_SRC_2',
  'IPV6_SRC_3',
  'IPV6_SRC_LEN',
  'IPV6_DST_0',
  'IPV6_DST_1',
  'IPV6_DST_2',
  'IPV6_DST_3',
  'IPV6_DST_LEN',
  'IDLE_TIMEOUT',
  'HARD_TIMEOUT',
  'ID',
  'N_ACTIONS',
] as const);
/** The match fields: bit FlowField.X of a flow's FIELDS word says X is matched. */
export const FlowField = switchLayout('FlowField', ['IN_PORT', 'DL_SRC', 'DL_DST', 'DL_VLAN', 'DL_TYPE', 'NW_SRC', 'NW_DST', 'NW_PROTO', 'NW_TTL', 'TP_SRC', 'TP_DST', 'TCP_FLAGS', 'IPV6_SRC', 'IPV6_DST'] as const);
/** One action after a flow's words (Int32): its op and arguments. */
export const FlowAction = switchLayout('FlowAction', ['OP', 'A', 'B', 'C', 'D'] as const);
/** The action ops (native/switch/switch_layout.h: edits first, then outputs). */
export const FlowOp = switchLayout('FlowOp', [
  'OUTPUT',
  'FLOOD',
  'NORMAL',
  'HANDLER',
  'STRIP_VLAN',
  'SET_VLAN_VID',
  'SET_VLAN_PCP',
  'SET_DL_SRC',
  'SET_DL_DST',
  'SET_NW_SRC',
  'SET_NW_DST',
  'SET_IPV6_SRC',
  'SET_IPV6_DST',
  'SET_TP_SRC',
  'SET_TP_DST',
  'DEC_TTL',
] as const);
/** The handler staging's first words (Int32): bytes used, records, frames lost. */
export const HandlerWord = switchLayout('HandlerWord', ['AT', 'FRAMES', 'LOST', 'RESERVED'] as const);
/** One staged record's header (Int32), then LEN frame bytes; records 8-byte aligned. */
export const HandlerRecord = switchLayout('HandlerRecord', ['HANDLER', 'IN_PORT', 'LEN', 'VLAN', 'FLAGS', 'GSO_TYPE', 'HDR_LEN', 'GSO_SIZE', 'CSUM_START', 'CSUM_OFFSET'] as const);
/** Per flow (Float64), in flowStats(): its ID, packets and bytes matched, ms since its last match (or since added) and since added. */
export const FlowStat = switchLayout('FlowStat', ['ID', 'PACKETS', 'BYTES', 'IDLE_MS', 'AGE_MS'] as const);

export interface FdbStats {
  learned: number;
  moved: number;
  aged: number;
  /** learning refused because the table is full */
  full: number;
}

export interface NativeSwitchFdb {
  learn(mac: number, vlan: number, port: number, now: number): boolean;
  lookup(mac: number, vlan: number, now: number, agingMs: number): number;
  age(now: number, agingMs: number): number;
  flushPort(port: number): number;
  /** [mac, vlan, port, seen, remote] per entry (remote 0: learned; else installed, and seen means nothing). */
  dump(): Float64Array;
  /** An entry a control plane installs (EVPN): mac in vlan behind remote VTEP `remote` (>= 1) of VXLAN port `port`; never aged, never moved by that port's frames. False if the table is full. */
  setRemote(mac: number, vlan: number, port: number, remote: number): boolean;
  /** Removes that installed entry if it is still there; true if removed. */
  removeRemote(mac: number, vlan: number, port: number, remote: number): boolean;
  /** The remote VTEP of mac's installed entry in vlan, or 0. */
  remoteOf(mac: number, vlan: number): number;
  /** [mac, vlan, port, remote] per installed entry. */
  dumpRemote(): Float64Array;
  stats(): FdbStats;
  classify(
    port: number,
    portWords: Int32Array,
    heads: Uint8Array,
    offsets: Uint32Array | null,
    stride: number,
    cap: number,
    lens: Uint32Array,
    n: number,
    now: number,
    agingMs: number,
    verdict: Int32Array | null,
    out: Int32Array,
  ): number;
  readonly size: number;
}

export interface NativeForwarder {
  setPort(
    id: number,
    words: Int32Array,
    counters: Float64Array,
    rxSlots: Uint32Array,
    rxStats: Float64Array,
    vxlanDest: Uint8Array | null,
    capture: Uint8Array | null,
    captureState: Float64Array | null,
  ): void;
  removePort(id: number): void;
  forward(txSlot: number, port: number, now: number, agingMs: number, txStats: Float64Array): number;
  forwardPopped(txSlot: number, port: number, n: number, now: number, agingMs: number, verdict: Int32Array | null, txStats: Float64Array): number;
  /** The guests' TX queues forwardAll serves: queue i has slot slots[i], belongs to port ports[i], counts into stats[i]. */
  setTxQueues(slots: Uint32Array, ports: Int32Array, stats: Float64Array[]): void;
  /**
   * Passes over the queues of setTxQueues, a burst of each as forward() does, in one call:
   * up to maxPasses passes, fewer if a pass finds no work; it returns early after a burst
   * that left events or frames for handlers (after every burst with eachBurst), or when a
   * queue's pop fails: failed = [its index in the list, -VqError], else failed[0] = -1.
   * Returns the frames taken.
   */
  forwardAll(now: number, agingMs: number, maxPasses: number, eachBurst: boolean, failed: Int32Array): number;
  forwardFlat(port: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null, n: number, now: number, agingMs: number): void;
  serviceHost(port: number, now: number, agingMs: number): number;
  /** now: ms, the clock of the calls' now (Date.now()) */
  addFlow(words: Int32Array, now: number): void;
  removeFlows(words: Int32Array, strict: boolean): number;
  flowStats(now: number): Float64Array;
  /** Removes the flows whose idle or hard timeout has passed at now; returns how many. */
  expireFlows(now: number): number;
  /** Where frames for handlers are staged (HandlerWord words, then HandlerRecord records). */
  setHandlerStage(buf: Uint8Array): void;
  /** Frames sent out of `port` as they are; false if there is no such port. */
  output(port: number, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null, n: number): boolean;
  /**
   * Remote VTEP `remote` (1..4096) of VXLAN port `port` (dest: a sockaddr, or null: none);
   * flood: it gets a copy of broadcast, multicast and unknown unicast. From the first call
   * the port sends by this table instead of to its one remote.
   */
  setVtep(port: number, remote: number, dest: Uint8Array | null, flood: boolean): void;
  /**
   * Frames the switch's other data-plane threads handed to this one, sent on to their ports
   * (up to maxFrames; readWake: the wake-up fd fired). Returns how many.
   */
  drainHandoff(maxFrames: number, readWake: boolean): number;
  /** The eventfd that turns readable when another thread hands this one frames (-1: one thread). */
  wakeFd(): number;
}

const raw = addon as {
  SwitchFdb: new (maxEntries: number, shared?: number) => NativeSwitchFdb;
  Forwarder: new (fdb: NativeSwitchFdb, burst: number, events: Int32Array, thread?: number) => NativeForwarder;
  switchShared(threads: number, maxEntries: number, ringBytes: number): number;
  releaseSwitchShared(token: number): void;
};

/** A table of its own, or (shared: a switchShared token) the one a switch's threads share. */
export function nativeSwitchFdb(maxEntries: number, shared?: number): NativeSwitchFdb {
  return new raw.SwitchFdb(maxEntries, shared);
}

/**
 * The data path over a table. After every call `events` holds [queues broken B, captures
 * done C, B (port, queue slot) pairs, C ports]; it needs 2 + 3 words per RX queue and port.
 * thread: which of the threads of a shared table's switch this one is.
 */
export function nativeForwarder(fdb: NativeSwitchFdb, burst: number, events: Int32Array, thread?: number): NativeForwarder {
  return new raw.Forwarder(fdb, burst, events, thread);
}

/**
 * What the data-plane threads of one switch share (its forwarding table, the rings that hand
 * frames to a port's owner thread), found by the returned token; releaseSwitchShared when
 * the switch closes (the state lives while a thread's table holds it).
 */
export function switchShared(threads: number, maxEntries: number, ringBytes: number): number {
  return raw.switchShared(threads, maxEntries, ringBytes);
}

export function releaseSwitchShared(token: number): void {
  raw.releaseSwitchShared(token);
}

export const CLASSIFY_DROP = -1;
export const CLASSIFY_FLOOD = -3;
