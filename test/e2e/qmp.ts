// A QMP client (QEMU Machine Protocol: JSON lines over a Unix socket, docs/interop/qmp-spec)
// for tests that drive a QEMU guest from outside: live migration, pmemsave, stop/cont.
//
//   guest started with extraArgs ['-qmp', `unix:${path},server=on,wait=off`]
//   const q = await Qmp.connect(path);
//   await q.execute('migrate', { uri: 'unix:/tmp/mig.sock' });
//   await q.waitFor(async () => (await q.execute('query-migrate')).status === 'completed');
import { connect, type Socket } from 'node:net';

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

type Reply = { return?: unknown; error?: { class: string; desc: string } };

export class Qmp {
  /** Every asynchronous event received so far, in order. */
  readonly events: QmpEvent[] = [];
  private buf = '';
  private readonly pending: Array<{ command: string; resolve: (r: Reply) => void; reject: (e: Error) => void }> = [];
  private closedError: Error | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    const end = (e?: Error) => {
      this.closedError ??= e ?? new Error('QMP connection closed');
      for (const p of this.pending.splice(0)) p.reject(this.closedError);
    };
    sock.on('error', end);
    sock.on('close', () => end());
  }

  /** Connects (retrying until QEMU has created the socket), reads the greeting, leaves capabilities negotiation mode. */
  static async connect(path: string, timeoutMs = 20_000): Promise<Qmp> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await q.greeting();
        await q.execute('qmp_capabilities');
        return q;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > until) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private greetingWaiter: ((ok: boolean) => void) | null = null;
  private greeted = false;

  private greeting(): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no QMP greeting within 10 s')), 10_000);
      this.greetingWaiter = (ok) => {
        clearTimeout(t);
        if (ok) resolve();
        else reject(this.closedError ?? new Error('QMP closed before its greeting'));
      };
    });
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if ('QMP' in msg) {
        this.greeted = true;
        this.greetingWaiter?.(true);
      } else if ('event' in msg) {
        this.events.push(msg as unknown as QmpEvent);
      } else {
        this.pending.shift()?.resolve(msg as Reply);
      }
    }
  }

  /** Runs a command; resolves with its `return` value, rejects with a QmpError. */
  execute<T = Record<string, unknown>>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise<Reply>((resolve, reject) => {
      this.pending.push({ command, resolve, reject });
      this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    }).then((r) => {
      if (r.error) throw new QmpError(command, r.error.class, r.error.desc);
      return r.return as T;
    });
  }

  /** Runs a human monitor command (e.g. "info status"); resolves with its text. */
  hmp(commandLine: string): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine });
  }

  /** Resolves when an event named `name` has arrived (one received earlier counts). */
  async waitEvent(name: string, timeoutMs: number): Promise<QmpEvent> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.find((x) => x.event === name);
      if (e) return e;
      if (this.closedError) throw this.closedError;
      if (Date.now() > until) throw new Error(`no QMP event ${name} within ${timeoutMs} ms (got ${this.events.map((x) => x.event).join(', ') || 'none'})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
