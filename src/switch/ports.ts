// The switch's ports and guest queues on the data-plane thread, and what the native
// forwarder is told of each (PortWord layout): its kind, virtio-net settings, VLAN rule,
// RX queues with their counters, host side and capture.
import type { FdWatcher } from '../native/unix-socket.js';
import type { GuestMemory } from '../native/guest-memory.js';
import type { Virtqueue } from '../native/virtqueue.js';
import type { PollTarget } from '../dataplane/poller.js';
import { PortKind, PortWord, QueueStat, type NativeForwarder } from '../native/switch.js';
import type { CaptureTap } from './capture.js';

export type VlanConfig = { mode: 'access'; vid: number } | { mode: 'trunk'; allowed?: number[]; native?: number };

/** The host side of a TAP or VXLAN port (fds opened by the control plane). */
export type HostPortSpec = { kind: 'tap'; fd: number; offloads: boolean } | { kind: 'vxlan'; fd: number; vni: number; dest: Uint8Array };

export interface RxQueue {
  vq: Virtqueue;
  index: number;
  /** QueueStat words (a view into the port's array the forwarder writes) */
  stats: Float64Array;
}

export interface TxQueue {
  vq: Virtqueue;
  /** vq's native slot (what the forwarder names it by) */
  slot: number;
  index: number;
  stats: Float64Array;
  port: EnginePort;
  kickFd: number;
  /** what the Poller serves: one burst of this queue per call */
  target: PollTarget;
}

export interface HostPort {
  spec: HostPortSpec;
  watcher: FdWatcher;
  scheduled: boolean;
}

export interface EnginePort {
  id: number;
  name: string;
  vlan: VlanConfig;
  /** the port as the forwarder takes it (PortWord layout) */
  words: Int32Array;
  counters: Float64Array;
  host: HostPort | null;
  memory: GuestMemory | null;
  rx: RxQueue[];
  tx: Map<number, TxQueue>;
  capture: CaptureTap | null;
}

/** Writes a VLAN configuration into a port's words (ACCESS ... ALLOWED). */
export function writeVlan(w: Int32Array, v: VlanConfig): void {
  w.fill(0, PortWord.ACCESS, PortWord.WORDS);
  if (v.mode === 'access') {
    w[PortWord.ACCESS] = 1;
    w[PortWord.VID] = v.vid;
    w[PortWord.NATIVE] = -1;
    w[PortWord.ALL_ALLOWED] = 1;
  } else {
    w[PortWord.NATIVE] = v.native ?? -1;
    w[PortWord.ALL_ALLOWED] = v.allowed ? 0 : 1;
    for (const id of v.allowed ?? []) w[PortWord.ALLOWED + ((id & 0xfff) >> 5)] |= 1 << (id & 31);
  }
}

/**
 * A guest port's words: no queue yet (10/12-byte headers come with its first queue). owner:
 * the data-plane thread that serves it, of a switch with several (-1: the switch has one).
 */
export function portWords(vlan: VlanConfig, owner = -1): Int32Array {
  const w = new Int32Array(PortWord.WORDS);
  w[PortWord.KIND] = PortKind.GUEST;
  w[PortWord.HDR_LEN] = 12;
  w[PortWord.MERGEABLE] = 1;
  w[PortWord.HOST_FD] = -1;
  w[PortWord.OWNER] = owner;
  writeVlan(w, vlan);
  return w;
}

/** The host side in a port's words. */
export function writeHost(w: Int32Array, spec: HostPortSpec): void {
  w[PortWord.KIND] = spec.kind === 'tap' ? PortKind.TAP : PortKind.VXLAN;
  w[PortWord.HOST_FD] = spec.fd;
  w[PortWord.HOST_OFFLOADS] = spec.kind === 'tap' && spec.offloads ? 1 : 0;
  w[PortWord.VNI] = spec.kind === 'vxlan' ? spec.vni : 0;
  w[PortWord.TX_OFFLOADS] = 0;
}

/**
 * Tells the forwarder all of port p (after any change to its queues, VLAN, memory, host
 * side or capture). The RX queues' counters move into one array the forwarder writes,
 * each queue keeping its counts.
 */
export function syncPort(fwd: NativeForwarder, p: EnginePort): void {
  const W = QueueStat.WORDS;
  const stats = new Float64Array(Math.max(1, p.rx.length) * W);
  const slots = new Uint32Array(p.rx.length);
  p.rx.forEach((r, k) => {
    stats.set(r.stats, k * W);
    r.stats = stats.subarray(k * W, (k + 1) * W);
    slots[k] = r.vq.slot;
  });
  const dest = p.host?.spec.kind === 'vxlan' ? p.host.spec.dest : null;
  fwd.setPort(p.id, p.words, p.counters, slots, stats, dest, p.capture?.buf ?? null, p.capture?.state ?? null);
}
