// A stateful firewall between a switch's inside and outside ports, as flows plus a packet
// handler: inside hosts may open TCP connections to anywhere; new TCP connections from the
// outside are dropped, but the replies of connections the inside opened pass, both ways,
// until the connection closes. Only a connection's handshake and close reach TypeScript; its
// data is switched by flows in native code. IPv4 and IPv6.
//
// Static flows (installFirewall), per outside port O and inside port I:
//
//   priority=100,tcp,in_port=O,actions=drop              new inbound TCP: dropped (drop_flow)
//   priority=100,tcp6,in_port=O,actions=drop             and over IPv6
//   priority=100,ipv6,nw_proto=0,in_port=O,actions=drop  IPv6 behind an extension header (TCP
//     ... 43, 44, 51, 60, 135, 139, 140, 253, 254          could hide there: flows see the first
//                                                        next header only)
//   priority=150,tcp,in_port=O,tp_dst=22,actions=NORMAL  an allowed inbound service (stateless)
//   priority=200,tcp,in_port=I,tcp_flags=+syn-ack,actions=handler:fw    a new outbound
//   priority=200,tcp6,in_port=I,tcp_flags=+syn-ack,actions=handler:fw   connection's SYN
//
// A connection's flows (the handler adds them on its SYN, then injects the SYN, which the
// first one takes; client C:c inside, server S:s):
//
//   priority=300,tcp,nw_src=C,tp_src=c,nw_dst=S,tp_dst=s,actions=NORMAL
//   priority=300,tcp,nw_src=S,tp_src=s,nw_dst=C,tp_dst=c,actions=handler:fw,NORMAL  (NORMAL
//     once the first reply, the SYN-ACK, was seen)
//   priority=310, each direction, tcp_flags=+fin and tcp_flags=+rst: handler:fw,NORMAL
//
// The close: an RST removes the connection's six flows at once (the RST itself passes).
// FINs are followed by sequence number: once both directions sent theirs, the data flows
// send to the handler too, and when both FINs are acknowledged (the last ACK, usually
// from the side that closed first) the flows go (ctx.delFlows, strict). A connection whose
// handshake or close does not complete within `timeoutMs` is removed on a later run of the
// handler (a handler runs only when frames come: there is no timer).
//
// Choices and limits:
// - Only TCP is policed. ARP, ICMP, ICMPv6, UDP and other protocols pass (the learning
//   switch's NORMAL); so does every frame between ports that are not outside ports.
// - TCP from inside that belongs to no connection (no SYN seen) passes: the firewall guards
//   the inside from the outside, not the other way round, and the outside's replies to it
//   are dropped anyway. Inside-to-inside connections work too (tracked like any other).
// - Connection flows match the 5-tuple, not the port: a reply may come in on any outside port
//   (the handler does not know which one the server is behind), and keeping in_port out keeps
//   the table to three subtables however many connections there are. All TCP from outside
//   ports is dropped unless tracked or a service, outside-to-outside included.
// - Established connections that never close (a peer that vanished) are kept: a handler sees
//   none of a connection's data frames, and it cannot read the flows' counters, so it cannot
//   tell an idle connection from a busy one (idle aging needs flow counters or an idle
//   timeout in the flow table). `maxConnections` bounds the table; past it, new SYNs are
//   dropped.
// - Non-first IPv4 fragments of TCP from outside are dropped (they carry no ports).
// - IPv6 works as IPv4 for TCP without extension headers; an inside host's IPv6 TCP behind
//   an extension header is not tracked (the switch does not walk them), so its replies are
//   dropped: such a connection fails, closed.
//
//   const sw = await Switch.create();
//   ... ports lan (inside), wan (outside) ...
//   await installFirewall(sw, { inside: ['lan'], outside: ['wan'], services: [{ port: 22 }] },
//     'dist/examples/firewall.js');
import type { HandlerContext, HandlerFrame, PacketHandler, Switch } from 'vhostkit';

/** An inbound service: TCP to this port (on this address, if given) may come from outside. */
export interface Service {
  port: number;
  /** an IPv4 or IPv6 address of an inside host; any if absent */
  ip?: string;
}

export interface FirewallOptions {
  /** the switch ports of the protected side */
  inside: string[];
  /** the ports new inbound connections are blocked on */
  outside: string[];
  services?: Service[];
  /** the handler's name (default "fw") */
  name?: string;
  /** connections tracked at once (default 10,000: 60,000 flows) */
  maxConnections?: number;
  /** a handshake or close that has not completed in this time is dropped (default 30 s) */
  timeoutMs?: number;
}

/** IPv6 extension headers (IANA's list, ESP aside) that TCP could follow. */
const IPV6_EXTENSION_HEADERS = [0, 43, 44, 51, 60, 135, 139, 140, 253, 254];
const PRIO_BLOCK = 100;
const PRIO_SERVICE = 150;
const PRIO_SYN = 200;
const PRIO_CONN = 300;
const PRIO_WATCH = 310;

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;

/** The static flows of a firewall (see the top of this file), in the order they are added. */
export function firewallFlows(o: FirewallOptions): string[] {
  const fw = o.name ?? 'fw';
  const flows: string[] = [];
  for (const port of o.outside) {
    flows.push(`priority=${PRIO_BLOCK},tcp,in_port=${port},actions=drop`);
    flows.push(`priority=${PRIO_BLOCK},tcp6,in_port=${port},actions=drop`);
    for (const h of IPV6_EXTENSION_HEADERS) flows.push(`priority=${PRIO_BLOCK},ipv6,nw_proto=${h},in_port=${port},actions=drop`);
    for (const s of o.services ?? []) {
      if (s.ip === undefined || !s.ip.includes(':')) flows.push(`priority=${PRIO_SERVICE},tcp,in_port=${port}${s.ip ? `,nw_dst=${s.ip}` : ''},tp_dst=${s.port},actions=NORMAL`);
      if (s.ip === undefined || s.ip.includes(':')) flows.push(`priority=${PRIO_SERVICE},tcp6,in_port=${port}${s.ip ? `,ipv6_dst=${s.ip}` : ''},tp_dst=${s.port},actions=NORMAL`);
    }
  }
  for (const port of o.inside) {
    flows.push(`priority=${PRIO_SYN},tcp,in_port=${port},tcp_flags=+syn-ack,actions=handler:${fw}`);
    flows.push(`priority=${PRIO_SYN},tcp6,in_port=${port},tcp_flags=+syn-ack,actions=handler:${fw}`);
  }
  return flows;
}

/** A TCP segment's fields, from a frame. */
interface Segment {
  v6: boolean;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  flags: number;
  seq: number;
  ack: number;
  /** payload bytes */
  len: number;
}

const be16 = (d: Uint8Array, o: number) => (d[o] << 8) | d[o + 1];
const be32 = (d: Uint8Array, o: number) => ((d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]) >>> 0;
const ip4At = (d: Uint8Array, o: number) => `${d[o]}.${d[o + 1]}.${d[o + 2]}.${d[o + 3]}`;
/** Eight groups, uncompressed: what the flow parser reads (dumpFlows prints RFC 5952's form). */
const ip6At = (d: Uint8Array, o: number) => Array.from({ length: 8 }, (_, k) => be16(d, o + 2 * k).toString(16)).join(':');
/** a >= b in sequence space (RFC 1982) */
const seqGe = (a: number, b: number) => ((a - b) | 0) >= 0;

function parseSegment(d: Uint8Array): Segment | null {
  let l3 = 14;
  let type = be16(d, 12);
  if (type === 0x8100 && d.length >= 18) {
    type = be16(d, 16);
    l3 = 18;
  }
  let l4: number;
  let end: number;
  let src: string;
  let dst: string;
  if (type === 0x0800) {
    if (d.length < l3 + 20 || d[l3] >> 4 !== 4 || d[l3 + 9] !== 6 || (be16(d, l3 + 6) & 0x1fff) !== 0) return null;
    l4 = l3 + (d[l3] & 15) * 4;
    const total = be16(d, l3 + 2);
    end = total === 0 ? d.length : Math.min(d.length, l3 + total); // 0: a GSO frame may leave it
    src = ip4At(d, l3 + 12);
    dst = ip4At(d, l3 + 16);
  } else if (type === 0x86dd) {
    if (d.length < l3 + 40 || d[l3 + 6] !== 6) return null;
    l4 = l3 + 40;
    const payload = be16(d, l3 + 4);
    end = payload === 0 ? d.length : Math.min(d.length, l4 + payload);
    src = ip6At(d, l3 + 8);
    dst = ip6At(d, l3 + 24);
  } else {
    return null;
  }
  if (d.length < l4 + 20) return null;
  return {
    v6: type === 0x86dd,
    src,
    dst,
    sport: be16(d, l4),
    dport: be16(d, l4 + 2),
    flags: be16(d, l4 + 12) & 0xfff,
    seq: be32(d, l4 + 4),
    ack: be32(d, l4 + 8),
    len: Math.max(0, end - l4 - (d[l4 + 12] >> 4) * 4),
  };
}

type State = 'syn' | 'est' | 'closing';

interface Conn {
  key: string;
  /** the matches of each direction: 0 from the inside host that opened it, 1 the replies */
  match: [string, string];
  state: State;
  /** per direction, the ACK number that acknowledges its FIN (null: no FIN yet) */
  finAck: [number | null, number | null];
  finAcked: [boolean, boolean];
  /** when its handshake or close must be done (while in `pending`) */
  deadline: number;
}

/** The handler: a connection per outbound SYN, its flows added, changed and removed. */
export function firewall(o: FirewallOptions): PacketHandler {
  const fw = o.name ?? 'fw';
  const inside = new Set(o.inside);
  const maxConnections = o.maxConnections ?? 10_000;
  const timeoutMs = o.timeoutMs ?? 30_000;
  const conns = new Map<string, Conn>();
  /** connections in their handshake or close, oldest first (one timeout: insertion order is deadline order) */
  const pending = new Map<string, Conn>();

  const keyOf = (v6: boolean, a: string, ap: number, b: string, bp: number) => `${v6 ? 6 : 4} ${a} ${ap} ${b} ${bp}`;
  const matchOf = (v6: boolean, a: string, ap: number, b: string, bp: number) =>
    v6 ? `tcp6,ipv6_src=${a},tp_src=${ap},ipv6_dst=${b},tp_dst=${bp}` : `tcp,nw_src=${a},tp_src=${ap},nw_dst=${b},tp_dst=${bp}`;

  /** A direction's data flow: NORMAL, or NORMAL and a copy to the handler (handshake, close). */
  const dataFlow = (ctx: HandlerContext, c: Conn, dir: 0 | 1, watched: boolean) => ctx.addFlow(`priority=${PRIO_CONN},${c.match[dir]},actions=${watched ? `handler:${fw},` : ''}NORMAL`);

  function setPending(c: Conn, now: number): void {
    pending.delete(c.key);
    c.deadline = now + timeoutMs;
    pending.set(c.key, c);
  }

  function open(s: Segment, f: HandlerFrame, ctx: HandlerContext): void {
    if (conns.size >= maxConnections) return; // the SYN is dropped; the client will retry
    const key = keyOf(s.v6, s.src, s.sport, s.dst, s.dport);
    const c: Conn = {
      key,
      match: [matchOf(s.v6, s.src, s.sport, s.dst, s.dport), matchOf(s.v6, s.dst, s.dport, s.src, s.sport)],
      state: 'syn',
      finAck: [null, null],
      finAcked: [false, false],
      deadline: 0,
    };
    conns.set(key, c);
    setPending(c, ctx.now);
    dataFlow(ctx, c, 0, false);
    dataFlow(ctx, c, 1, true);
    for (const m of c.match) {
      ctx.addFlow(`priority=${PRIO_WATCH},${m},tcp_flags=+fin,actions=handler:${fw},NORMAL`);
      ctx.addFlow(`priority=${PRIO_WATCH},${m},tcp_flags=+rst,actions=handler:${fw},NORMAL`);
    }
    // The connection's flow takes it now.
    ctx.inject(f.inPort, f.data, f.offload ?? undefined);
  }

  function reopen(c: Conn, ctx: HandlerContext): void {
    c.state = 'syn';
    c.finAck = [null, null];
    c.finAcked = [false, false];
    setPending(c, ctx.now);
    dataFlow(ctx, c, 0, false);
    dataFlow(ctx, c, 1, true);
  }

  function close(c: Conn, ctx: HandlerContext): void {
    for (const m of c.match) {
      ctx.delFlows(`priority=${PRIO_CONN},${m}`, true);
      ctx.delFlows(`priority=${PRIO_WATCH},${m},tcp_flags=+fin`, true);
      ctx.delFlows(`priority=${PRIO_WATCH},${m},tcp_flags=+rst`, true);
    }
    conns.delete(c.key);
    pending.delete(c.key);
  }

  function segment(s: Segment, f: HandlerFrame, ctx: HandlerContext): void {
    let dir: 0 | 1 = 0;
    let c = conns.get(keyOf(s.v6, s.src, s.sport, s.dst, s.dport));
    if (!c) {
      dir = 1;
      c = conns.get(keyOf(s.v6, s.dst, s.dport, s.src, s.sport));
    }
    const syn = (s.flags & (SYN | ACK)) === SYN;
    if (!c) {
      // A new outbound connection (from the SYN flow). Anything else here belonged to a
      // connection removed earlier in this run, and its flow has already switched it.
      if (syn && inside.has(f.inPort)) open(s, f, ctx);
      return;
    }
    if (syn && dir === 0) {
      // In the handshake: a retransmitted SYN that the SYN flow took in the same run as the
      // first one, before its connection's flows were in: it has not been switched yet.
      if (c.state === 'syn') ctx.inject(f.inPort, f.data, f.offload ?? undefined);
      // In the close: the client reuses the 5-tuple (its old socket was in TIME_WAIT).
      else if (c.state === 'closing') reopen(c, ctx);
      return;
    }
    // Every other frame here came through a flow that also sent it on (NORMAL).
    if (s.flags & RST) {
      close(c, ctx);
      return;
    }
    if (c.state === 'syn' && dir === 1) {
      // The first reply (the SYN-ACK): from now on, the replies stay in native code.
      c.state = 'est';
      pending.delete(c.key);
      dataFlow(ctx, c, 1, false);
    }
    const other = dir === 0 ? 1 : 0;
    const awaited = c.finAck[other];
    if (s.flags & ACK && awaited !== null && seqGe(s.ack, awaited)) c.finAcked[other] = true;
    if (s.flags & FIN && c.finAck[dir] === null) c.finAck[dir] = (s.seq + s.len + (s.flags & SYN ? 1 : 0) + 1) >>> 0;
    if (c.finAck[0] === null || c.finAck[1] === null) return;
    if (c.finAcked[0] && c.finAcked[1]) {
      close(c, ctx);
    } else if (c.state !== 'closing') {
      // Both sides sent FIN: the last ACK is the next frame that matters, in either direction.
      c.state = 'closing';
      setPending(c, ctx.now);
      dataFlow(ctx, c, 0, true);
      dataFlow(ctx, c, 1, true);
    }
  }

  return (frames, ctx) => {
    // Handshakes and closes that did not complete in time.
    for (const c of pending.values()) {
      if (c.deadline > ctx.now) break;
      close(c, ctx);
    }
    for (const f of frames) {
      const s = parseSegment(f.data);
      if (s) segment(s, f, ctx);
    }
  };
}

/**
 * Adds a firewall to a switch: the handler (loaded from `module`, this file compiled), then
 * the flows that block new inbound TCP and bring it outbound SYNs.
 */
export async function installFirewall(sw: Switch, o: FirewallOptions, module: string): Promise<void> {
  if (o.inside.length === 0 || o.outside.length === 0) throw new RangeError('a firewall needs inside and outside ports');
  const both = o.inside.filter((p) => o.outside.includes(p));
  if (both.length > 0) throw new RangeError(`ports both inside and outside: ${both.join(', ')}`);
  await sw.addHandler(o.name ?? 'fw', { module, export: 'firewall', options: o });
  for (const f of firewallFlows(o)) await sw.addFlow(f);
}
