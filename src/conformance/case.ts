// What a conformance case is, what it may use while it runs, and what it reports. The case
// table is cases-*.ts; the runner (runner.ts) gives each case a CaseContext, whose resources
// (connections, memfds, eventfds, files) it closes after the case whatever happened.
import { unlinkSync } from 'node:fs';
import { createMemfd } from '../native/guest-memory.js';
import { EventFd } from '../native/eventfd.js';
import { closeFd } from '../native/unix-socket.js';
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { RawFrontend } from './raw-frontend.js';
import type { DeviceType } from './traffic.js';
import { retryEagain } from './connect.js';

export const STATUSES = ['passed', 'rejected', 'failed', 'crashed', 'hung', 'leaked'] as const;
/**
 * passed: the backend did what the spec says (or took hostile input and kept serving);
 * rejected: it refused the input cleanly (closed the connection or answered a failure);
 * failed: it answered against the spec; crashed: the process died (or its socket went);
 * hung: no answer within the case's time, or no data moved after it; leaked: it kept fds.
 */
export type Status = (typeof STATUSES)[number];

/** What a case itself concludes; the runner may override it with crashed, hung or leaked. */
export interface Outcome {
  status: 'passed' | 'rejected' | 'failed';
  detail: string;
}

export const GROUPS = ['negotiation', 'messages', 'memory', 'rings', 'config', 'data', 'hostile-headers', 'hostile-memory', 'hostile-rings', 'hostile-descriptors', 'connections'] as const;
export type Group = (typeof GROUPS)[number];

export interface ConformanceCase {
  name: string;
  group: Group;
  /** what the spec says should happen (vhost-user.rst or virtio 1.2, with the section) */
  spec: string;
  /** device types it applies to (default both) */
  types?: DeviceType[];
  /** ms before the case counts as hung (default 5000) */
  timeoutMs?: number;
  run(ctx: CaseContext): Promise<Outcome>;
}

/** What the backend offered on a first, plain connection (GET_FEATURES etc.). */
export interface Offer {
  features: bigint;
  protocolFeatures: bigint;
  queueNum: number;
}

/** The resources of one case; all closed by dispose(). */
export class CaseContext {
  private readonly frontends: VhostUserFrontend[] = [];
  private readonly raws: RawFrontend[] = [];
  private readonly fds: number[] = [];
  private readonly events: EventFd[] = [];
  private readonly files: string[] = [];
  private readonly cleanups: Array<() => void> = [];
  private disposed = false;

  constructor(
    readonly socket: string,
    readonly type: DeviceType,
    readonly offer: Offer,
    /** ms a single reply may take inside the case */
    readonly replyMs = 2000,
  ) {}

  /** Queues of the device: net has a receive and a transmit queue, blk one request queue. */
  get dataQueue(): number {
    return this.type === 'net' ? 1 : 0;
  }

  async frontend(): Promise<VhostUserFrontend> {
    this.check();
    const fe = await retryEagain(() => VhostUserFrontend.connect(this.socket, { timeoutMs: this.replyMs }));
    this.frontends.push(fe);
    return fe;
  }

  async raw(): Promise<RawFrontend> {
    this.check();
    const r = await retryEagain(() => new RawFrontend(this.socket));
    this.raws.push(r);
    return r;
  }

  memfd(size: number | bigint): number {
    const fd = createMemfd('vk-conformance', size);
    this.fds.push(fd);
    return fd;
  }

  eventfd(): EventFd {
    const e = new EventFd();
    this.events.push(e);
    return e;
  }

  /** A file (fd) of the case, closed and removed after it. */
  file(path: string, fd: number): void {
    this.files.push(path);
    this.fds.push(fd);
  }

  onDispose(f: () => void): void {
    this.cleanups.push(f);
  }

  /** True once the case is over (done or timed out): loops of a case that outlived its timeout stop. */
  get over(): boolean {
    return this.disposed;
  }

  /** Throws once the case is over, so that a case still running after its timeout does nothing more. */
  check(): void {
    if (this.disposed) throw new Error('the case is over');
  }

  dispose(): void {
    this.disposed = true;
    for (const f of this.cleanups.splice(0)) tryDo(f);
    for (const fe of this.frontends.splice(0)) tryDo(() => fe.close());
    for (const r of this.raws.splice(0)) tryDo(() => r.close());
    for (const e of this.events.splice(0)) tryDo(() => e.close());
    for (const fd of this.fds.splice(0)) tryDo(() => closeFd(fd));
    for (const p of this.files.splice(0)) tryDo(() => unlinkSync(p));
  }
}

function tryDo(f: () => void): void {
  try {
    f();
  } catch {
    // already closed
  }
}

export const passed = (detail: string): Outcome => ({ status: 'passed', detail });
export const rejected = (detail: string): Outcome => ({ status: 'rejected', detail });
export const failed = (detail: string): Outcome => ({ status: 'failed', detail });
