// A switch with its data plane on a worker thread (its poll mode event by default), and
// NetGuests attached to its ports: the set-up the fault and hostile-guest tests share.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Switch } from '../../src/switch/switch.js';
import { NetGuest } from '../../src/loadgen/net-guest.js';
import { setLogSink, type LogRecord } from '../../src/log.js';
import type { PollMode } from '../../src/dataplane/poller.js';
import type { SwitchOptions } from '../../src/switch/switch.js';

export async function until(f: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export class SwitchRig {
  dir = '';
  sw!: Switch;
  readonly logs: LogRecord[] = [];
  private guests: NetGuest[] = [];
  private oldSink: ReturnType<typeof setLogSink> | null = null;

  constructor(
    private readonly prefix: string,
    private readonly poll: PollMode = 'event',
    private readonly opts: SwitchOptions = {},
  ) {}

  async setUp(): Promise<void> {
    this.oldSink = setLogSink((r) => this.logs.push(r));
    this.logs.length = 0;
    this.dir = mkdtempSync(join(tmpdir(), this.prefix));
    this.sw = await Switch.create({ dataplane: 'worker', poll: this.poll, ...this.opts });
  }

  async tearDown(): Promise<void> {
    for (const g of this.guests) g.close();
    this.guests = [];
    await this.sw.close();
    rmSync(this.dir, { recursive: true, force: true });
    if (this.oldSink) setLogSink(this.oldSink);
  }

  socket(name: string): string {
    return join(this.dir, `${name}.sock`);
  }

  /** A port `name` and a guest on it, negotiated. */
  async attach(name: string, packed: boolean): Promise<NetGuest> {
    await this.sw.addVhostPort({ name, socket: this.socket(name) });
    const g = await NetGuest.connect(this.socket(name), { packed });
    this.guests.push(g);
    await this.sw.backend(name).nextSession();
    await this.served(name);
    return g;
  }

  /** Waits until the data plane serves both queues of port `name` (they start there after the session is up). */
  async served(name: string, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      const queues = (await this.sw.dataplane.threads()).flatMap((t) => t.queues).filter((q) => q.port === name);
      if (queues.length === 2) return;
      if (Date.now() > end) throw new Error(`the data plane serves ${queues.length} queues of ${name}, not 2`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** A guest connected to an existing port (a new driver), closed at tear-down. */
  async reconnect(name: string, packed: boolean): Promise<NetGuest> {
    const g = await NetGuest.connect(this.socket(name), { packed });
    this.guests.push(g);
    return g;
  }

  /** Closes a guest now (it is not closed again at tear-down). */
  close(g: NetGuest): void {
    g.close();
    this.guests = this.guests.filter((x) => x !== g);
  }
}
