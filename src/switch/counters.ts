// Per-port counters, in a SharedArrayBuffer: the data plane adds, anyone reads, no message.

export const PortCounter = {
  /** frames the port received (from its guest / host side) */
  RX_PACKETS: 0,
  RX_BYTES: 1,
  /** frames the port delivered (to its guest / host side) */
  TX_PACKETS: 2,
  TX_BYTES: 3,
  /** dropped on the way out: no RX buffers at the receiver */
  DROP_NO_BUFFERS: 4,
  /** dropped: too large for the receiver's buffers (or over 64 KiB) */
  DROP_TOO_BIG: 5,
  /** dropped: malformed (shorter than an Ethernet header, empty RX buffers) */
  DROP_BAD: 6,
  /** dropped at ingress or egress: VLAN not allowed on the port */
  DROP_VLAN: 7,
  /** dropped by the dataplane hook */
  DROP_HOOK: 8,
  /** dropped: the destination port has no running queue */
  DROP_NO_QUEUE: 9,
  /** frames this port received that were flooded */
  FLOODED: 10,
  /** queues of this port the driver broke */
  QUEUE_ERRORS: 11,
  /** dropped at egress: the host side would block (TAP/UDP full) */
  DROP_HOST_BUSY: 12,
  /**
   * frames from the host side (VXLAN) with a partial TCP/UDP checksum (a same-host Linux
   * VTEP leaves them partial; host-io.ts recvUdp): completed, or for TCP frames over an MTU
   * of 1500 handed on with a TSO header (segmented for receivers without TSO)
   */
  RX_CSUM_COMPLETED: 13,
} as const;
export type PortCounterName = keyof typeof PortCounter;
export const PORT_COUNTERS = 16;

export type PortCounters = Record<Lowercase<PortCounterName>, number>;

export function newCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(PORT_COUNTERS * 8));
}

export function readCounters(c: Float64Array): PortCounters {
  const out = {} as PortCounters;
  for (const [k, i] of Object.entries(PortCounter)) out[k.toLowerCase() as Lowercase<PortCounterName>] = c[i];
  return out;
}
