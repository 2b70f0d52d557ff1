// The EVPN neighbor handler (RFC 7432 §10), loaded on the switch's data-plane thread and given
// the frames of EvpnControl's flows:
//   - snooping: for each sender (MAC, IPv4) of an ARP frame, and (MAC, IPv6) of an IPv6
//     neighbor solicitation/advertisement, not seen before, it posts { mac, ip, vlan, port }
//     on the `channel` BroadcastChannel, which EvpnControl listens to on the main thread; the
//     flows that only snoop switch the frames as usual (normal), the handler sends nothing;
//   - suppression (ARP suppression, ND proxy): EvpnControl posts the fabric's MAC+IP routes on
//     the `table` channel ({ vlan, ip, mac }, mac null when withdrawn) and adds a flow per
//     address that gives this handler alone the ARP requests (and neighbor solicitations) for
//     it from local ports. The handler answers each out of the port it came in on, with the
//     remote MAC, and nothing goes to the fabric. A request it has no answer for (the flow
//     came before the route's message; a solicitation for another address with the same
//     solicited-node group; a gratuitous ARP or an ARP probe) is dropped: the host asks again.
import { BroadcastChannel } from 'node:worker_threads';
import type { HandlerContext, HandlerFrame, PacketHandler } from '../switch/handlers.js';
import { arpReply, arpRequest, arpSender, ndAdvertisement, ndSender, ndSolicitation } from './neigh.js';

export { arpSender } from './neigh.js';

export interface ArpSighting {
  mac: string;
  ip: string;
  vlan: number;
  port: string;
}

/** A remote MAC+IP for suppression (mac null: withdrawn). */
export interface SuppressEntry {
  vlan: number;
  ip: string;
  mac: string | null;
}

/** How many sightings the handler remembers (the oldest forgotten first). */
const MAX_SEEN = 65536;
/**
 * A sighting is posted again after this long: EvpnControl forgets the addresses of a MAC that
 * ages out, and learns them again from the host's next ARP/ND when it comes back.
 */
const REPOST_MS = 20_000;

/**
 * The handler: options.channel names the sightings' BroadcastChannel, options.table the
 * suppression table's; arp / nd: whether ARP / neighbor discovery senders are posted (the
 * frames of the suppression flows are read only for their questions otherwise).
 */
export default function neighSnoop(options: { channel: string; table?: string; arp?: boolean; nd?: boolean }): PacketHandler {
  const ch = new BroadcastChannel(options.channel);
  (ch as unknown as { unref?: () => void }).unref?.();
  const seen = new Map<string, number>();
  const answers = new Map<string, string>();
  if (options.table !== undefined) {
    const t = new BroadcastChannel(options.table);
    (t as unknown as { unref?: () => void }).unref?.();
    t.onmessage = (ev: unknown) => {
      const e = (ev as { data: SuppressEntry }).data;
      if (e.mac === null) answers.delete(`${e.vlan}/${e.ip}`);
      else answers.set(`${e.vlan}/${e.ip}`, e.mac);
    };
  }
  const snoop = (fr: HandlerFrame, now: number) => {
    const s = (options.arp ? arpSender(fr.data) : null) ?? (options.nd ? ndSender(fr.data) : null);
    if (!s) return;
    const key = `${fr.vlan}/${s.mac}/${s.ip}`;
    const at = seen.get(key);
    if (at !== undefined && now - at < REPOST_MS) return;
    seen.delete(key);
    if (seen.size >= MAX_SEEN) seen.delete(seen.keys().next().value as string);
    seen.set(key, now);
    const msg: ArpSighting = { mac: s.mac, ip: s.ip, vlan: fr.vlan, port: fr.inPort };
    ch.postMessage(msg);
  };
  const answer = (fr: HandlerFrame, ctx: HandlerContext) => {
    const a = arpRequest(fr.data);
    // A gratuitous ARP (sender = target: a host claiming the address) is not answered, as
    // Linux's neigh_suppress does not answer it: snooping takes it, the claim goes no further.
    if (a && a.ip !== a.target) {
      const mac = answers.get(`${fr.vlan}/${a.target}`);
      if (mac !== undefined) ctx.send(fr.inPort, arpReply(fr.data, mac, a.target));
      return;
    }
    const n = ndSolicitation(fr.data);
    if (n) {
      const mac = answers.get(`${fr.vlan}/${n.target}`);
      if (mac !== undefined) ctx.send(fr.inPort, ndAdvertisement(fr.data, mac, n.target));
    }
  };
  return (frames: readonly HandlerFrame[], ctx: HandlerContext) => {
    for (const fr of frames) {
      snoop(fr, ctx.now);
      if (options.table !== undefined) answer(fr, ctx);
    }
  };
}
