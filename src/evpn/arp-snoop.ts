// ARP snooping for EVPN (RFC 7432 §10: a type-2 route may carry the MAC's IP address, which
// remote VTEPs use for ARP suppression): a packet handler, loaded on the switch's data-plane
// thread, given the ARP frames of a flow `arp,actions=normal,handler:NAME`. For each sender
// (MAC, IPv4) it has not seen, it posts { mac, ip, vlan, port } on a BroadcastChannel, which
// EvpnControl listens to on the main thread. The frames themselves are switched as usual
// (normal); the handler sends nothing.
import { BroadcastChannel } from 'node:worker_threads';
import type { HandlerFrame, PacketHandler } from '../switch/handlers.js';

export interface ArpSighting {
  mac: string;
  ip: string;
  vlan: number;
  port: string;
}

function hex(b: Uint8Array, at: number): string {
  return Array.from(b.subarray(at, at + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The sender of an Ethernet/IPv4 ARP frame (request or reply), or null. */
export function arpSender(f: Uint8Array): { mac: string; ip: string } | null {
  let at = 12;
  if (f.length >= 18 && f[12] === 0x81 && f[13] === 0x00) at = 16;
  if (f.length < at + 2 + 28 || f[at] !== 0x08 || f[at + 1] !== 0x06) return null;
  const a = at + 2;
  // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
  if (f[a] !== 0 || f[a + 1] !== 1 || f[a + 2] !== 0x08 || f[a + 3] !== 0 || f[a + 4] !== 6 || f[a + 5] !== 4) return null;
  const ip = `${f[a + 14]}.${f[a + 15]}.${f[a + 16]}.${f[a + 17]}`;
  if (ip === '0.0.0.0' || (f[a + 8] & 1) !== 0) return null; // a probe, or a multicast sender
  return { mac: hex(f, a + 8), ip };
}

/** The handler: options.channel names the BroadcastChannel EvpnControl listens on. */
export default function arpSnoop(options: { channel: string }): PacketHandler {
  const ch = new BroadcastChannel(options.channel);
  (ch as unknown as { unref?: () => void }).unref?.();
  const seen = new Map<string, string>();
  return (frames: readonly HandlerFrame[]) => {
    for (const fr of frames) {
      const s = arpSender(fr.data);
      if (!s) continue;
      const key = `${fr.vlan}/${s.mac}`;
      if (seen.get(key) === s.ip) continue;
      seen.set(key, s.ip);
      const msg: ArpSighting = { mac: s.mac, ip: s.ip, vlan: fr.vlan, port: fr.inPort };
      ch.postMessage(msg);
    }
  };
}
