// The flow table of the switch-flows case (bench/cases/switch-flows.ts): flows on the
// 5-tuples of the frames testpmd's flowgen mode sends, so that the traffic runs through the
// table rather than past it, and the check that it did.
//
// testpmd flowgen (DPDK app/test-pmd/flowgen.c, 22.11 as in Debian 12) sends UDP/IPv4
// frames from 10.254.0.0 port 1000 to 10.253.0.0 + k port 1001, k cycling through
// 0 .. --flowgen-flows - 1 (1024 by default), one k per frame: 60 B and the FCS with
// --txpkts=64, no UDP checksum.

/** The 5-tuple of flowgen's frames, but for the destination address: 10.253.0.0 + k. */
export const FLOWGEN = { proto: 'udp', nwSrc: '10.254.0.0', nwDstBase: (10 << 24) | (253 << 16), tpSrc: 1000, tpDst: 1001, flows: 1024 } as const;

/** The priority of the case's flows (above the table's default, priority=0,actions=normal). */
export const FLOW_PRIORITY = 100;

function ipString(a: number): string {
  return [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
}

/** flowgen's k-th destination address. */
export function flowgenDst(k: number): string {
  return ipString((FLOWGEN.nwDstBase + k) >>> 0);
}

/**
 * `n` flows in ovs-ofctl syntax, one per 5-tuple of flowgen's first `n` destinations, each
 * `actions=normal`: delivery stays the learning switch's, every frame of those flows is
 * looked up and counted. With n = 1000 and flowgen's 1024, 1000 of every 1024 frames match
 * one flow; the other 24 match none (and are switched as by the default flow).
 */
export function flowgenFlows(n: number): string[] {
  if (!Number.isInteger(n) || n < 0 || n > FLOWGEN.flows) throw new RangeError(`flows: 0..${FLOWGEN.flows} (flowgen's destinations), not ${n}`);
  return Array.from(
    { length: n },
    (_, k) => `priority=${FLOW_PRIORITY},${FLOWGEN.proto},nw_src=${FLOWGEN.nwSrc},nw_dst=${flowgenDst(k)},tp_src=${FLOWGEN.tpSrc},tp_dst=${FLOWGEN.tpDst},actions=normal`,
  );
}

function mac(s: string): number[] {
  return s.split(':').map((x) => parseInt(x, 16));
}

/** The frame flowgen sends for destination k (60 B, as with --txpkts=64), from `src` to `dst` MAC. */
export function flowgenFrame(k: number, dst: string, src: string): Uint8Array {
  const f = new Uint8Array(60);
  const v = new DataView(f.buffer);
  f.set(mac(dst), 0);
  f.set(mac(src), 6);
  v.setUint16(12, 0x0800);
  const ip = 14;
  f[ip] = 0x45;
  v.setUint16(ip + 2, f.length - 14);
  f[ip + 8] = 64; // TTL
  f[ip + 9] = 17; // UDP
  v.setUint32(ip + 12, (10 << 24) | (254 << 16));
  v.setUint32(ip + 16, (FLOWGEN.nwDstBase + k) >>> 0);
  let sum = 0;
  for (let i = ip; i < ip + 20; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(ip + 10, ~sum & 0xffff);
  const udp = ip + 20;
  v.setUint16(udp, FLOWGEN.tpSrc);
  v.setUint16(udp + 2, FLOWGEN.tpDst);
  v.setUint16(udp + 4, f.length - udp);
  return f;
}

/** A flow of Switch.dumpFlows(), as much of it as the check reads. */
export interface DumpedFlow {
  match: string;
  packets: number;
}

export interface FlowHits {
  /** flows in the table */
  flows: number;
  /** flows whose n_packets > 0 */
  hit: number;
  /** the n_packets of every flow, summed */
  packets: number;
  /** the matches of flows that counted nothing (the first few) */
  unused: string[];
}

export function flowHits(dump: readonly DumpedFlow[]): FlowHits {
  const unused = dump.filter((f) => !(f.packets > 0)).map((f) => f.match);
  return { flows: dump.length, hit: dump.length - unused.length, packets: dump.reduce((s, f) => s + f.packets, 0), unused: unused.slice(0, 5) };
}

/**
 * Throws unless the table holds `expected` flows and every one of them counted frames: the
 * traffic went through the table (a figure measured past an unused table says nothing).
 */
export function checkFlowHits(h: FlowHits, expected: number, where: string): void {
  if (h.flows !== expected) throw new Error(`${where}: the switch holds ${h.flows} flows, not ${expected}`);
  if (h.hit !== expected) throw new Error(`${where}: ${expected - h.hit} of ${expected} flows counted no frame (e.g. ${h.unused.join('; ')}): the traffic did not run through the table`);
}
