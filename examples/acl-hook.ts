// A custom dataplane step on the switch's burst hook: a port ACL. Frames that enter port
// "guest" may only be ARP or IPv4; anything else is dropped there (and counted as
// drop_hook on the port). The hook runs on the data-plane thread, once per burst, on the
// first 64 bytes of each frame (b.heads) -- no copy of the frames, no allocation.
//
//   vhostkit switch --port guest=/tmp/guest.sock --port up=/tmp/up.sock --hook dist/examples/acl-hook.js
import { Verdict, type PacketBurst } from 'vhostkit';

const ALLOWED = new Set([0x0806 /* ARP */, 0x0800 /* IPv4 */]);

export default function acl(b: PacketBurst): void {
  if (b.portName !== 'guest') return;
  for (let i = 0; i < b.n; i++) {
    const o = i * 64;
    let type = (b.heads[o + 12] << 8) | b.heads[o + 13];
    if (type === 0x8100) type = (b.heads[o + 16] << 8) | b.heads[o + 17]; // behind a VLAN tag
    if (!ALLOWED.has(type)) b.verdict[i] = Verdict.DROP;
  }
}
