// An L4 load balancer between VMs on a switch, as flows plus a packet handler: clients
// connect to a virtual address (VIP:port); each new TCP connection goes to the next backend
// in turn. Only a connection's first frame reaches TypeScript: the handler picks the backend
// and adds two flows (client -> backend: destination MAC and address rewritten; backend ->
// client: source rewritten back to the VIP), then injects the frame, which the new flow
// takes. The rest of the connection is switched in native code, checksums updated there.
// The handler also answers ARP for the VIP.
//
//   const sw = await Switch.create();
//   ... ports client, web1, web2 ...
//   await installBalancer(sw, { vip: '10.0.0.100', vipMac: '02:00:00:00:01:00', tcpPort: 80,
//     backends: [{ port: 'web1', ip: '10.0.0.2', mac: '52:54:00:00:00:02' }, ...] },
//     'dist/examples/l4-balancer.js');
//
// Connections are kept (and their flows) until the handler is removed: a real balancer
// would also watch FIN/RST (a tcp_flags flow to the handler) and age idle ones.
import type { HandlerContext, HandlerFrame, PacketHandler, Switch } from 'vhostkit';

export interface Backend {
  /** the switch port it is on */
  port: string;
  ip: string;
  mac: string;
}

export interface BalancerOptions {
  vip: string;
  vipMac: string;
  tcpPort: number;
  backends: Backend[];
}

const be16 = (d: Uint8Array, o: number) => (d[o] << 8) | d[o + 1];
const ipAt = (d: Uint8Array, o: number) => `${d[o]}.${d[o + 1]}.${d[o + 2]}.${d[o + 3]}`;
const bytes = (s: string, sep: string, radix: number) => s.split(sep).map((x) => parseInt(x, radix));

/** The handler: ARP replies for the VIP, a backend per new connection. */
export function balancer(o: BalancerOptions): PacketHandler {
  if (o.backends.length === 0) throw new RangeError('a balancer needs backends');
  const conns = new Map<string, Backend>();
  let next = 0;

  function arpReply(f: HandlerFrame, ctx: HandlerContext): void {
    const d = f.data;
    // An ARP request (Ethernet, IPv4) for the VIP: "VIP is at vipMac", to the asker.
    if (d.length < 42 || be16(d, 14) !== 1 || be16(d, 16) !== 0x0800 || be16(d, 20) !== 1 || ipAt(d, 38) !== o.vip) return;
    const r = new Uint8Array(42);
    const mac = bytes(o.vipMac, ':', 16);
    r.set(d.subarray(6, 12), 0);
    r.set(mac, 6);
    r.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2], 12);
    r.set(mac, 22);
    r.set(bytes(o.vip, '.', 10), 28);
    r.set(d.subarray(22, 32), 32); // the asker's MAC and address
    ctx.send(f.inPort, r);
  }

  return (frames, ctx) => {
    for (const f of frames) {
      const d = f.data;
      if (be16(d, 12) === 0x0806) {
        arpReply(f, ctx);
        continue;
      }
      if (be16(d, 12) !== 0x0800 || d[23] !== 6) continue;
      const l4 = 14 + (d[14] & 15) * 4;
      const client = ipAt(d, 26);
      const cport = be16(d, l4);
      const key = `${f.inPort} ${client}:${cport}`;
      if (!conns.has(key)) {
        const b = o.backends[next++ % o.backends.length];
        conns.set(key, b);
        const toBackend = `tcp,in_port=${f.inPort},nw_src=${client},tp_src=${cport},nw_dst=${o.vip},tp_dst=${o.tcpPort}`;
        const toClient = `tcp,in_port=${b.port},nw_src=${b.ip},tp_src=${o.tcpPort},nw_dst=${client},tp_dst=${cport}`;
        ctx.addFlow(`priority=250,${toBackend},actions=mod_dl_dst:${b.mac},mod_nw_dst:${b.ip},output:${b.port}`);
        ctx.addFlow(`priority=250,${toClient},actions=mod_dl_src:${o.vipMac},mod_nw_src:${o.vip},output:${f.inPort}`);
      }
      // The connection's flow takes it now (a retransmitted SYN as well).
      ctx.inject(f.inPort, d, f.offload ?? undefined);
    }
  };
}

/**
 * Adds the balancer to a switch: the handler (loaded from `module`, this file compiled) and
 * the flows that bring it ARP and the first frames of connections to the VIP.
 */
export async function installBalancer(sw: Switch, o: BalancerOptions, module: string, name = 'lb'): Promise<void> {
  await sw.addHandler(name, { module, export: 'balancer', options: o });
  await sw.addFlow(`priority=300,arp,actions=handler:${name},NORMAL`);
  await sw.addFlow(`priority=200,tcp,nw_dst=${o.vip},tp_dst=${o.tcpPort},actions=handler:${name}`);
}
