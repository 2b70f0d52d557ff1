// Calls into a data-plane thread, typed by the class that serves them. A "calls" class (the
// switch's DataplaneCalls, the load generator's NetLaneCalls) is written once; the caller
// gets a Remote of it either way it runs:
//   - on a worker thread: each call is a message {id, op, args} answered with
//     {id, ok, value | error} (serveCalls on the worker side, WorkerRpc here); anything
//     else the worker posts is an event for the owner; if the thread dies, every pending
//     and later call fails with why;
//   - on the calling thread (localCalls): the same methods, run at once, answered through
//     promises as a worker's would be.
import { Worker, type MessagePort } from 'node:worker_threads';

type Method = (...args: never[]) => unknown;

/** The caller's view of a calls class: every method, answered through a promise. */
export type Remote<C> = {
  [K in keyof C as C[K] extends Method ? K : never]: C[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never;
};

/** The methods of a calls class: its prototype's own functions, the constructor aside. */
export function methodNames(cls: { prototype: object }): string[] {
  return Object.getOwnPropertyNames(cls.prototype).filter((n) => n !== 'constructor' && typeof (cls.prototype as Record<string, unknown>)[n] === 'function');
}

function remoteOf<C>(names: readonly string[], call: (op: string, args: unknown[]) => Promise<unknown>): Remote<C> {
  const r: Record<string, (...args: unknown[]) => Promise<unknown>> = {};
  for (const n of names) r[n] = (...args: unknown[]) => call(n, args);
  return r as Remote<C>;
}

/** The calls of an object on this thread, as a Remote: each runs at once; a throw becomes a rejection. */
export function localCalls<C extends object>(calls: C, cls: { prototype: object }): Remote<C> {
  const target = calls as unknown as Record<string, (...args: unknown[]) => unknown>;
  return remoteOf<C>(methodNames(cls), (op, args) => {
    try {
      return Promise.resolve(target[op](...args));
    } catch (e) {
      return Promise.reject(e);
    }
  });
}

/** The worker side: answers each call message on `port` with the method of `calls` it names. */
export function serveCalls(port: MessagePort, calls: object, cls: { prototype: object }, what: string): void {
  const names = new Set(methodNames(cls));
  const target = calls as Record<string, (...args: unknown[]) => unknown>;
  port.on('message', async (m: { id: number; op: string; args: unknown[] }) => {
    try {
      if (!names.has(m.op)) throw new Error(`unknown ${what} call ${m.op}`);
      const value = await target[m.op](...m.args);
      port.postMessage({ id: m.id, ok: true, value });
    } catch (e) {
      port.postMessage({ id: m.id, ok: false, error: (e as Error).message });
    }
  });
}

export class WorkerRpc<C, Event> {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;
  /** The worker's calls, typed by the class it serves (serveCalls). */
  readonly remote: Remote<C>;

  constructor(
    file: string,
    workerData: unknown,
    cls: { prototype: object },
    name: string,
    onEvent: (e: Event) => void,
    private readonly onDeath: (e: Error) => void = () => undefined,
  ) {
    this.remote = remoteOf<C>(methodNames(cls), (op, args) => this.call(op, args));
    this.worker = new Worker(file, { workerData });
    this.worker.on('message', (m: { id?: number; ok?: boolean; value?: unknown; error?: string }) => {
      if (m.id === undefined) {
        onEvent(m as Event);
        return;
      }
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(m.error));
    });
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`${name} exited with code ${code}`)));
  }

  get isDead(): boolean {
    return this.dead !== null;
  }

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    this.onDeath(e);
  }

  private call(op: string, args: unknown[]): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args });
    });
  }

  /** Calls `close` on the worker (if alive and the class has one), then terminates it. */
  async close(): Promise<void> {
    const close = (this.remote as Record<string, (() => Promise<unknown>) | undefined>).close;
    if (!this.dead && close) {
      await close().catch((e: Error) => {
        // The worker exited before it answered (every call then rejects with why): it is
        // terminated below all the same. Any other failure of its close is the caller's.
        if (!this.dead) throw e;
      });
    }
    await this.worker.terminate();
  }
}
