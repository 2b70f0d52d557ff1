// An IPv4 router between VLANs on a switch, as flows plus a packet handler. Each interface
// is a VLAN, an address and prefix on it, and the switch's access ports of that VLAN; hosts
// use the interface's address as their gateway (its MAC is the router's one MAC on every
// VLAN). Forwarding is flows: once the router knows a next hop's MAC (ARP), it adds a flow
// per neighbor (nw_dst=HOST) and per static route (nw_dst=PREFIX, through its gateway) that
// decrements the TTL, rewrites both MACs, moves the frame to the egress VLAN and outputs it;
// the switch's access port sends it untagged. What reaches TypeScript:
//
// - ARP on the interfaces' VLANs: requests for the router's addresses are answered; senders
//   on a connected subnet are learned as neighbors (and get their flows at once);
// - IPv4 to the router's MAC that no forwarding flow took: to the router's own addresses
//   (ICMP echo -> echo reply, UDP -> port unreachable), to a next hop whose MAC is not known
//   yet (queued, up to 32 frames a next hop, while the router ARPs for it; injected once the
//   reply came and the flow is in), to nowhere (ICMP destination unreachable, net);
// - a next hop that did not answer 3 ARP requests, a second apart: its frames' sources get
//   ICMP host unreachable, and so do new frames to it for 3 s, after which it is tried again.
//   A handler runs only when frames come, so these retries and expiries happen on the next
//   frame the handler gets, not on a timer;
// - TTL 0 or 1 (flows that outrank the forwarding ones): ICMP time exceeded.
//
// ICMP errors carry the offending IP header and its first 8 bytes of payload, come from the
// ingress interface's address and go back to the previous hop (the frame's source MAC, out of
// its port). Flow priorities make the longest prefix win: 200 + the prefix length.
//
//   const sw = await Switch.create();
//   await sw.addVhostPort({ name: 'h1', socket: ..., vlan: { mode: 'access', vid: 10 } });
//   await sw.addVhostPort({ name: 'h2', socket: ..., vlan: { mode: 'access', vid: 20 } });
//   await installRouter(sw, { mac: '02:00:00:00:0a:fe', interfaces: [
//       { vlan: 10, ip: '10.0.1.254', prefixLen: 24, ports: ['h1'] },
//       { vlan: 20, ip: '10.0.2.254', prefixLen: 24, ports: ['h2'] }] },
//     'dist/examples/l3-router.js');
//
// Limits of the example: access ports only (the ARP requests the router sends out of an
// interface's ports are untagged); neighbors never age (a host that changes MAC or port is updated
// by its next ARP); no fragments to the router's own addresses; no IPv6.
import type { FrameOffload, HandlerContext, HandlerFrame, PacketHandler, Switch } from 'vhostkit';

export interface RouterInterface {
  /** the VLAN this interface is on */
  vlan: number;
  /** the router's address on it, and the subnet's prefix length */
  ip: string;
  prefixLen: number;
  /** the switch's access ports of the VLAN (where ARP requests go) */
  ports: string[];
}

export interface StaticRoute {
  /** "10.0.3.0/24" ("0.0.0.0/0": a default route) */
  prefix: string;
  /** the gateway, on a connected subnet */
  via: string;
}

export interface RouterOptions {
  /** the router's MAC, on every interface */
  mac: string;
  interfaces: RouterInterface[];
  routes?: StaticRoute[];
}

/** Next hops' queues: frames and ARP attempts. */
const QUEUE_FRAMES = 32;
const ARP_TRIES = 3;
const ARP_RETRY_MS = 1000;
const FAILED_HOLD_MS = 3000;
/** Flow priorities: the longest prefix wins among forwarding flows (200 + its length). */
const PRIO_ROUTE = 200;
const PRIO_NO_ROUTE = 199;
const PRIO_OWN = 290;
const PRIO_TTL = 300;
const PRIO_ARP = 400;

const be16 = (d: Uint8Array, o: number) => (d[o] << 8) | d[o + 1];
const ipAt = (d: Uint8Array, o: number) => ((d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]) >>> 0;
const put32 = (d: Uint8Array, o: number, v: number) => d.set([v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255], o);
const put16 = (d: Uint8Array, o: number, v: number) => d.set([v >>> 8, v & 255], o);
const ipStr = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
const macStr = (d: Uint8Array, o: number) => Array.from(d.subarray(o, o + 6), (b) => b.toString(16).padStart(2, '0')).join(':');
const maskOf = (len: number) => (len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0);

function parseIp(s: string): number {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  const p = m ? m.slice(1).map(Number) : [];
  if (!m || p.some((x) => x > 255)) throw new RangeError(`${s}: not an IPv4 address`);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

function parseMac(s: string): Uint8Array {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(s)) throw new RangeError(`${s}: not a MAC address`);
  return Uint8Array.from(s.split(':'), (x) => parseInt(x, 16));
}

/** The Internet checksum (RFC 1071) of d[from, to). */
function checksum(d: Uint8Array, from: number, to: number): number {
  let s = 0;
  for (let i = from; i + 1 < to; i += 2) s += (d[i] << 8) | d[i + 1];
  if ((to - from) & 1) s += d[to - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

interface Iface {
  vlan: number;
  ip: number;
  net: number;
  mask: number;
  len: number;
  ports: string[];
}

interface Route {
  net: number;
  mask: number;
  len: number;
  /** the gateway, or null for a connected subnet (the destination is the next hop) */
  via: number | null;
  iface: Iface;
}

interface Neighbor {
  mac: string;
  port: string;
  iface: Iface;
}

interface Queued {
  data: Uint8Array;
  offload: FrameOffload | undefined;
  inPort: string;
  inVlan: number;
}

interface Pending {
  iface: Iface;
  frames: Queued[];
  tries: number;
  lastArp: number;
}

/** A route's nw_dst match ("" for a default route). */
const dstMatch = (net: number, len: number) => (len === 0 ? '' : `,nw_dst=${ipStr(net)}${len === 32 ? '' : `/${len}`}`);

function compile(o: RouterOptions) {
  const mac = parseMac(o.mac);
  const ifaces: Iface[] = o.interfaces.map((i) => {
    if (!(i.prefixLen >= 1 && i.prefixLen <= 30)) throw new RangeError(`interface ${i.ip}: prefix length ${i.prefixLen} (1..30)`);
    const ip = parseIp(i.ip);
    const mask = maskOf(i.prefixLen);
    return { vlan: i.vlan, ip, net: (ip & mask) >>> 0, mask, len: i.prefixLen, ports: i.ports };
  });
  if (new Set(ifaces.map((i) => i.vlan)).size !== ifaces.length) throw new RangeError('one interface per VLAN');
  const routes: Route[] = ifaces.map((i) => ({ net: i.net, mask: i.mask, len: i.len, via: null, iface: i }));
  for (const r of o.routes ?? []) {
    const [p, l = '32'] = r.prefix.split('/');
    const len = Number(l);
    if (!(Number.isInteger(len) && len >= 0 && len <= 32)) throw new RangeError(`route ${r.prefix}: bad prefix length`);
    const mask = maskOf(len);
    const via = parseIp(r.via);
    const iface = ifaces.find((i) => (via & i.mask) >>> 0 === i.net);
    if (!iface) throw new RangeError(`route ${r.prefix}: gateway ${r.via} is on no connected subnet`);
    routes.push({ net: (parseIp(p) & mask) >>> 0, mask, len, via, iface });
  }
  routes.sort((a, b) => b.len - a.len); // longest prefix first
  return { mac, ifaces, routes };
}

/** The handler: ARP, the router's own addresses, next hops to resolve, ICMP errors. */
export function router(o: RouterOptions): PacketHandler {
  const { mac, ifaces, routes } = compile(o);
  const byVlan = new Map(ifaces.map((i) => [i.vlan, i]));
  const own = new Set(ifaces.map((i) => i.ip));
  const neighbors = new Map<number, Neighbor>();
  const pending = new Map<number, Pending>();
  /** next hops that did not answer, until when */
  const failed = new Map<number, number>();

  const lookup = (dst: number) => routes.find((r) => (dst & r.mask) >>> 0 === r.net);
  const forwardActions = (n: Neighbor) => `dec_ttl,mod_dl_src:${o.mac},mod_dl_dst:${n.mac},mod_vlan_vid:${n.iface.vlan},output:${n.port}`;

  /** A frame back to the previous hop (f's source), the same tagging, carrying `ip`. */
  function replyFrame(f: HandlerFrame, l2: number, ip: Uint8Array): Uint8Array {
    const r = new Uint8Array(l2 + ip.length);
    r.set(f.data.subarray(6, 12), 0);
    r.set(mac, 6);
    r.set(f.data.subarray(12, l2), 12);
    r.set(ip, l2);
    return r;
  }

  function ipHeader(p: Uint8Array, tos: number, proto: number, src: number, dst: number): void {
    p.set([0x45, tos], 0);
    put16(p, 2, p.length);
    p.set([0, 0, 0, 0, 64, proto, 0, 0], 4); // id 0, no fragment, TTL 64
    put32(p, 12, src);
    put32(p, 16, dst);
    put16(p, 10, checksum(p, 0, 20));
  }

  /**
   * An ICMP error about the IP packet at f.data[l2] (RFC 1812 4.3.2.7: none about ICMP errors,
   * fragments after the first, or from addresses that are not a single host's).
   */
  function icmpError(f: HandlerFrame, l2: number, iface: Iface, type: number, code: number, ctx: HandlerContext): void {
    const d = f.data;
    const src = ipAt(d, l2 + 12);
    const ihl = (d[l2] & 15) * 4;
    if (src === 0 || src >>> 28 >= 14 || own.has(src) || (be16(d, l2 + 6) & 0x1fff) !== 0) return;
    if (d[l2 + 9] === 1 && [3, 4, 5, 11, 12].includes(d[l2 + ihl])) return;
    const quote = d.subarray(l2, Math.min(l2 + ihl + 8, l2 + be16(d, l2 + 2), d.length));
    const p = new Uint8Array(28 + quote.length);
    p.set([type, code], 20);
    p.set(quote, 28);
    put16(p, 22, checksum(p, 20, p.length));
    ipHeader(p, 0xc0, 1, iface.ip, src);
    ctx.send(f.inPort, replyFrame(f, l2, p));
  }

  /** An IP packet to one of the router's addresses. */
  function local(f: HandlerFrame, l2: number, ctx: HandlerContext): void {
    const d = f.data;
    const ihl = (d[l2] & 15) * 4;
    const total = be16(d, l2 + 2);
    if ((be16(d, l2 + 6) & 0x3fff) !== 0 || l2 + total > d.length) return; // a fragment: no reassembly here
    const proto = d[l2 + 9];
    if (proto === 1 && d[l2 + ihl] === 8 && total >= ihl + 8) {
      // Echo request -> echo reply: the same ICMP body, type 0, from the address pinged.
      const p = new Uint8Array(20 + total - ihl);
      p.set(d.subarray(l2 + ihl, l2 + total), 20);
      p.set([0, 0, 0, 0], 20);
      put16(p, 22, checksum(p, 20, p.length));
      ipHeader(p, d[l2 + 1], 1, ipAt(d, l2 + 16), ipAt(d, l2 + 12));
      ctx.send(f.inPort, replyFrame(f, l2, p));
    } else if (proto === 17) {
      const iface = byVlan.get(f.vlan);
      if (iface) icmpError(f, l2, iface, 3, 3, ctx); // port unreachable
    }
  }

  /** Learns (or updates) a neighbor: its flows, then the frames that waited for it. */
  function learn(ip: number, hw: string, port: string, iface: Iface, ctx: HandlerContext): void {
    const old = neighbors.get(ip);
    if (old && old.mac === hw && old.port === port) return;
    const n: Neighbor = { mac: hw, port, iface };
    ctx.addFlow(`priority=${PRIO_ROUTE + 32},ip,dl_dst=${o.mac},nw_dst=${ipStr(ip)},actions=${forwardActions(n)}`);
    for (const r of routes) {
      if (r.via === ip) ctx.addFlow(`priority=${PRIO_ROUTE + r.len},ip,dl_dst=${o.mac}${dstMatch(r.net, r.len)},actions=${forwardActions(n)}`);
    }
    // Known only once its flows are in: frames to a known next hop are injected for them.
    neighbors.set(ip, n);
    failed.delete(ip);
    const q = pending.get(ip);
    if (!q) return;
    pending.delete(ip);
    // Their flow is in now: it takes them, as if they had just come in.
    for (const x of q.frames) ctx.inject(x.inPort, x.data, x.offload);
  }

  function arpRequest(target: number, iface: Iface, ctx: HandlerContext): void {
    const r = new Uint8Array(42);
    r.fill(0xff, 0, 6);
    r.set(mac, 6);
    r.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1], 12);
    r.set(mac, 22);
    put32(r, 28, iface.ip);
    put32(r, 38, target);
    for (const port of iface.ports) ctx.send(port, r);
  }

  function arp(f: HandlerFrame, l2: number, iface: Iface, ctx: HandlerContext): void {
    const d = f.data;
    const a = l2; // the ARP header
    if (d.length < a + 28 || be16(d, a) !== 1 || be16(d, a + 2) !== 0x0800 || d[a + 4] !== 6 || d[a + 5] !== 4) return;
    const op = be16(d, a + 6);
    const spa = ipAt(d, a + 14);
    const tpa = ipAt(d, a + 24);
    if (spa !== 0 && !own.has(spa) && (spa & iface.mask) >>> 0 === iface.net && (spa & ~iface.mask) >>> 0 !== ~iface.mask >>> 0) {
      learn(spa, macStr(d, a + 8), f.inPort, iface, ctx);
    }
    if (op !== 1 || tpa !== iface.ip) return;
    // "tpa is at the router's MAC", to the asker, tagged as the request was.
    const r = new Uint8Array(a + 28);
    r.set(d.subarray(6, 12), 0);
    r.set(mac, 6);
    r.set(d.subarray(12, a), 12);
    r.set([0, 1, 0x08, 0, 6, 4, 0, 2], a);
    r.set(mac, a + 8);
    put32(r, a + 14, tpa);
    r.set(d.subarray(a + 8, a + 18), a + 18); // the asker's MAC and address
    ctx.send(f.inPort, r);
  }

  /** Next hops that never answered: their frames' sources hear "host unreachable". */
  function expire(ctx: HandlerContext): void {
    for (const [nh, q] of pending) {
      if (ctx.now - q.lastArp < ARP_RETRY_MS) continue;
      if (q.tries < ARP_TRIES) {
        q.tries++;
        q.lastArp = ctx.now;
        arpRequest(nh, q.iface, ctx);
        continue;
      }
      pending.delete(nh);
      failed.set(nh, ctx.now + FAILED_HOLD_MS);
      for (const x of q.frames) {
        const iface = byVlan.get(x.inVlan);
        const l2 = be16(x.data, 12) === 0x8100 ? 18 : 14;
        if (iface) icmpError({ data: x.data, inPort: x.inPort, inPortId: -1, vlan: x.inVlan, offload: null }, l2, iface, 3, 1, ctx);
      }
    }
  }

  return (frames, ctx) => {
    if (pending.size > 0) expire(ctx);
    for (const f of frames) {
      const iface = byVlan.get(f.vlan);
      if (!iface) continue; // not one of the router's VLANs
      const d = f.data;
      let l2 = 14;
      let type = be16(d, 12);
      if (type === 0x8100) {
        type = be16(d, 16);
        l2 = 18;
      }
      if (type === 0x0806) {
        arp(f, l2, iface, ctx);
        continue;
      }
      if (type !== 0x0800 || d.length < l2 + 20 || d[l2] >> 4 !== 4 || (d[l2] & 15) < 5) continue;
      const dst = ipAt(d, l2 + 16);
      if (own.has(dst)) {
        local(f, l2, ctx);
        continue;
      }
      const route = lookup(dst);
      if (!route) {
        icmpError(f, l2, iface, 3, 0, ctx); // net unreachable
        continue;
      }
      if (d[l2 + 8] <= 1) {
        icmpError(f, l2, iface, 11, 0, ctx); // time to live exceeded in transit
        continue;
      }
      const nh = route.via ?? dst;
      if (neighbors.has(nh)) {
        // Its flow came in after this frame was staged: the flow takes it now.
        ctx.inject(f.inPort, d, f.offload ?? undefined);
        continue;
      }
      const until = failed.get(nh);
      if (until !== undefined && ctx.now < until) {
        icmpError(f, l2, iface, 3, 1, ctx); // host unreachable
        continue;
      }
      let q = pending.get(nh);
      if (!q) {
        failed.delete(nh);
        q = { iface: route.iface, frames: [], tries: 1, lastArp: ctx.now };
        pending.set(nh, q);
        arpRequest(nh, route.iface, ctx);
      }
      if (q.frames.length < QUEUE_FRAMES) q.frames.push({ data: d.slice(), offload: f.offload ?? undefined, inPort: f.inPort, inVlan: f.vlan });
    }
  };
}

/**
 * Adds the router to a switch: the handler (loaded from `module`, this file compiled) and the
 * flows that bring it ARP, TTL expiry and what no forwarding flow takes yet.
 */
export async function installRouter(sw: Switch, o: RouterOptions, module: string, name = 'router'): Promise<void> {
  const { ifaces, routes } = compile(o);
  const h = `handler:${name}`;
  await sw.addHandler(name, { module, export: 'router', options: o });
  for (const i of ifaces) {
    await sw.addFlow(`priority=${PRIO_ARP + 1},arp,dl_vlan=${i.vlan},dl_dst=${o.mac},actions=${h}`);
    await sw.addFlow(`priority=${PRIO_ARP},arp,dl_vlan=${i.vlan},actions=${h},NORMAL`);
    await sw.addFlow(`priority=${PRIO_OWN},ip,dl_dst=${o.mac},nw_dst=${ipStr(i.ip)},actions=${h}`);
  }
  for (const ttl of [0, 1]) await sw.addFlow(`priority=${PRIO_TTL},ip,dl_dst=${o.mac},nw_ttl=${ttl},actions=${h}`);
  // Until a next hop is known, its frames come to the handler (which ARPs for it); the
  // forwarding flows replace these (same priority and match) for gateways.
  for (const r of routes) await sw.addFlow(`priority=${PRIO_ROUTE + r.len},ip,dl_dst=${o.mac}${dstMatch(r.net, r.len)},actions=${h}`);
  await sw.addFlow(`priority=${PRIO_NO_ROUTE},ip,dl_dst=${o.mac},actions=${h}`);
}
