// Three guests (our frontend) a, b, c on ports of those names of a switch, each learned by
// it (a broadcast from each, received by the others), so that known unicast goes to one
// port only: the set-up of the flow and handler tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Switch } from '../../src/switch/switch.js';
import { NetGuest, type NetGuestOptions } from '../../src/loadgen/net-guest.js';
import { tcpFrame } from '../lib/packets.js';

export const A = '02:00:00:00:00:0a';
export const B = '02:00:00:00:00:0b';
export const C = '02:00:00:00:00:0c';
const NAMES = ['a', 'b', 'c'] as const;

export class ThreeGuests {
  readonly guests: Record<string, NetGuest> = {};
  private constructor(readonly dir: string) {}

  static async attach(sw: Switch, options: (name: string) => NetGuestOptions = () => ({ rxBuffers: 256 })): Promise<ThreeGuests> {
    const t = new ThreeGuests(mkdtempSync(join(tmpdir(), 'vk-3g-')));
    for (const name of NAMES) {
      await sw.addVhostPort({ name, socket: join(t.dir, `${name}.sock`) });
      t.guests[name] = await NetGuest.connect(join(t.dir, `${name}.sock`), options(name));
      await sw.backend(name).nextSession();
    }
    for (const [name, mac] of [
      ['a', A],
      ['b', B],
      ['c', C],
    ] as const) {
      t.guests[name].send([tcpFrame(new Uint8Array(1), { src: mac, dst: 'ff:ff:ff:ff:ff:ff' }).frame]);
      for (const other of NAMES.filter((x) => x !== name)) await t.guests[other].receive(1, 2000);
    }
    return t;
  }

  /** Frames each guest got within `ms` (after sending). */
  async got(ms = 300): Promise<Record<string, Uint8Array[]>> {
    const out: Record<string, Uint8Array[]> = {};
    for (const name of NAMES) out[name] = (await this.guests[name].receive(1000, ms)).map((r) => r.frame);
    return out;
  }

  close(): void {
    for (const g of Object.values(this.guests)) g.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
