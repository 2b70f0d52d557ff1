// Calls into a data-plane worker thread: each call is a message {id, op, args} answered in
// order with {id, ok, value | error}; anything else the worker posts is an event for the
// owner. If the thread dies, every pending and later call fails with why.
import { Worker } from 'node:worker_threads';

export class WorkerRpc<Event> {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;

  constructor(
    file: string,
    workerData: unknown,
    name: string,
    onEvent: (e: Event) => void,
    private readonly onDeath: (e: Error) => void = () => undefined,
  ) {
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

  call<T>(op: string, ...args: unknown[]): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, args });
    });
  }

  /** Asks the worker to close (if alive), then terminates it. */
  async close(): Promise<void> {
    // A rejection means the worker exited before it answered: it is terminated all the same.
    if (!this.dead) await this.call('close').catch(() => undefined);
    await this.worker.terminate();
  }
}
