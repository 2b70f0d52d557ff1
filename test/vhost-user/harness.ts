// Shared setup for protocol tests: a backend serving an EchoDevice on a socket in a temp
// dir, and our frontend connected to it; log records captured.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend, type BackendOptions } from '../../src/vhost-user/backend.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import type { Session } from '../../src/vhost-user/session.js';
import { EchoDevice } from '../lib/echo-device.js';
import { setLogLevel, setLogSink, type Level, type LogRecord, type LogSink } from '../../src/log.js';

export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

export class Harness {
  readonly dir = mkdtempSync(join(tmpdir(), 'vhostkit-test-'));
  readonly socket = join(this.dir, 'vhost.sock');
  readonly logs: LogRecord[] = [];
  private readonly oldSink: LogSink;
  readonly dev: EchoDevice;
  be!: VhostUserBackend;
  fe: VhostUserFrontend | null = null;

  /** `dev`: an echo device of one's own (e.g. a subclass that pauses its queues) instead of a new one. */
  constructor(numQueues = 2, dev?: EchoDevice) {
    this.dev = dev ?? new EchoDevice(numQueues);
    this.oldSink = setLogSink((r) => this.logs.push(r));
  }

  async start(opts: Partial<BackendOptions> = {}): Promise<this> {
    this.be = new VhostUserBackend(this.dev, { socket: this.socket, ...opts });
    await this.be.start();
    return this;
  }

  async connect(): Promise<{ fe: VhostUserFrontend; session: Session }> {
    const fe = await VhostUserFrontend.connect(this.socket);
    this.fe = fe;
    const session = await this.be.nextSession();
    return { fe, session };
  }

  /** Waits until the current session has closed. */
  async sessionClosed(timeoutMs = 3000): Promise<string> {
    const s = this.be.session;
    if (!s) return 'no session';
    return await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('session did not close')), timeoutMs);
      s.once('closed', (reason: string) => {
        clearTimeout(t);
        resolve(reason);
      });
    });
  }

  async close(): Promise<void> {
    this.fe?.close();
    await this.be?.stop();
    setLogSink(this.oldSink);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function until(pred: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** For the enclosing describe: log records (info and up) go to `logs`; the sink and level are restored after. */
export function captureLogs(logs: LogRecord[]): void {
  let oldSink: LogSink;
  before(() => {
    oldSink = setLogSink((r) => logs.push(r));
    setLogLevel('info');
  });
  after(() => {
    setLogSink(oldSink);
    setLogLevel((process.env.VHOSTKIT_LOG as Level | undefined) ?? 'info');
  });
}
