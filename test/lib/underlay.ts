// An underlay for fabric tests: a Linux bridge in a namespace of its own, and each host a
// namespace joined to it by a veth, with one address on a /24. Made and removed by the test.
import { Netns } from './netns.js';

export class Underlay {
  readonly bridge: Netns;
  readonly hosts: Netns[] = [];

  /** `prefix` is the first three octets of the underlay's /24, e.g. "10.200.0". */
  constructor(
    readonly tag: string,
    readonly prefix: string,
  ) {
    this.bridge = new Netns(`${tag}u`);
    this.bridge.ip('link', 'add', 'br0', 'type', 'bridge');
    this.bridge.ip('link', 'set', 'br0', 'up');
  }

  /** Host `i` (1..254): namespace TAG+i with eth0 = PREFIX.i/24 on the bridge. */
  addHost(i: number, mtu = 1600): Netns {
    const ns = new Netns(`${this.tag}${i}`);
    this.bridge.ip('link', 'add', `u${i}`, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', ns.name);
    this.bridge.ip('link', 'set', `u${i}`, 'master', 'br0', 'up');
    ns.ip('addr', 'add', `${this.address(i)}/24`, 'dev', 'eth0');
    ns.ip('link', 'set', 'eth0', 'up');
    this.hosts.push(ns);
    return ns;
  }

  address(i: number): string {
    return `${this.prefix}.${i}`;
  }

  /** Cuts host i off the underlay (its bridge port down), or joins it again. */
  setLink(i: number, up: boolean): void {
    this.bridge.ip('link', 'set', `u${i}`, up ? 'up' : 'down');
  }

  delete(): void {
    for (const h of this.hosts.splice(0)) h.delete();
    this.bridge.delete();
  }
}
