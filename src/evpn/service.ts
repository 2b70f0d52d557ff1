// EVPN for a whole host (`evpn:` in the configuration, docs/evpn.md): one BGP speaker
// (a gobgpd vhostkit starts, or one already running) and an EvpnControl for each switch
// that has VNIs. Started after the switches, closed before them.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log } from '../log.js';
import type { Switch } from '../switch/switch.js';
import { EvpnControl, type EvpnStatus } from './control.js';
import { GoBgp, type NeighborStatus } from './gobgp.js';

export interface EvpnServiceOptions {
  asn: number;
  routerId: string;
  vtep?: string;
  neighbors: Array<{ address: string; asn?: number }>;
  vnis: Array<{ vni: number; switch: string; port: string; rd?: string; routeTargets?: string[] }>;
  /** a running gobgpd's API ("unix:PATH" or "HOST:PORT"); none: one is started */
  gobgp?: string;
  /** where a started gobgpd keeps its config, socket and log */
  gobgpDir?: string;
  listenAddress?: string;
  pollMs: number;
  /** advertise local MACs with their IPv4 address too (control.ts arpSnooping) */
  arpSnooping?: boolean;
  /** the same for IPv6, from neighbor discovery (control.ts ndSnooping) */
  ndSnooping?: boolean;
  /** answer ARP/NS for the fabric's MAC+IP addresses locally (control.ts arpSuppression) */
  arpSuppression?: boolean;
  /** the switches' aging time in seconds, by switch */
  aging?: Record<string, number>;
}

/** What `GET /v1/evpn` and `vhostkit ctl evpn` show. */
export interface EvpnServiceStatus {
  asn: number;
  routerId: string;
  vtep: string;
  api: string;
  neighbors: NeighborStatus[];
  routesIn: EvpnStatus['routesIn'];
  routesOut: string[];
  vnis: Array<EvpnStatus['vnis'][number] & { switch: string }>;
}

export class EvpnService {
  private constructor(
    private readonly o: EvpnServiceOptions,
    private readonly bgp: GoBgp,
    private readonly controls: Map<string, EvpnControl>,
  ) {}

  static async start(o: EvpnServiceOptions, switchOf: (name: string) => Switch): Promise<EvpnService> {
    const bgp =
      o.gobgp !== undefined
        ? await GoBgp.connect(o.gobgp)
        : await GoBgp.start({
            dir: o.gobgpDir ?? mkdtempSync(join(tmpdir(), 'vhostkit-gobgp-')),
            asn: o.asn,
            routerId: o.routerId,
            listenAddress: o.listenAddress,
            neighbors: o.neighbors.map((n) => ({ address: n.address, asn: n.asn ?? o.asn })),
          });
    const controls = new Map<string, EvpnControl>();
    const s = new EvpnService(o, bgp, controls);
    try {
      for (const swName of new Set(o.vnis.map((v) => v.switch))) {
        const c = new EvpnControl(bgp, switchOf(swName), {
          asn: o.asn,
          routerId: o.routerId,
          vtep: o.vtep,
          vnis: o.vnis.filter((v) => v.switch === swName),
          pollMs: o.pollMs,
          arpSnooping: o.arpSnooping,
          ndSnooping: o.ndSnooping,
          arpSuppression: o.arpSuppression,
          agingSeconds: o.aging?.[swName],
        });
        controls.set(swName, c);
        await c.start();
      }
    } catch (e) {
      await s.close();
      throw e;
    }
    log.child({ component: 'evpn' }).info('evpn up', { api: bgp.api, switches: [...controls.keys()].join(',') });
    return s;
  }

  async status(): Promise<EvpnServiceStatus> {
    const per = await Promise.all([...this.controls].map(async ([sw, c]) => ({ sw, st: await c.status() })));
    const first = per[0]?.st;
    return {
      asn: this.o.asn,
      routerId: this.o.routerId,
      vtep: this.o.vtep ?? this.o.routerId,
      api: this.bgp.api,
      neighbors: first?.neighbors ?? (await this.bgp.neighbors()),
      routesIn: first?.routesIn ?? [],
      routesOut: first?.routesOut ?? [],
      vnis: per.flatMap(({ sw, st }) => st.vnis.map((v) => ({ ...v, switch: sw }))),
    };
  }

  async close(): Promise<void> {
    for (const c of this.controls.values()) await c.close();
    await this.bgp.close();
  }
}
