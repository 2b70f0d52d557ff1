// `vhostkit trace replay`: plays the frontend's side of a recorded session (JSON lines of
// `vhostkit trace --out`) against a backend, without the VM. Each request goes out with
// the recorded header flags and payload; the fds it carried are made again from their
// descriptions: a memfd of the recorded size for each memfd or file (guest memory, the
// dirty log, the inflight area; one per recorded inode, so a region passed twice is the
// same memory twice), an eventfd for each eventfd, a socket pair for the backend request
// channel (whose requests are answered with a zero REPLY_ACK when they ask for one), and
// the fd a reply of the backend carried where the recording passed that one back
// (GET_INFLIGHT_FD, then SET_INFLIGHT_FD). Where the recording has a reply, the replay waits
// for the backend's and compares it with the recorded one. Guest memory is all zeros: rings
// start empty, which is enough to reproduce a negotiation.
import { readFileSync } from 'node:fs';
import { createMemfd } from '../native/guest-memory.js';
import { EventFd } from '../native/eventfd.js';
import { closeFd, connectUnix, socketPair } from '../native/unix-socket.js';
import { MessageChannel, closeFds } from '../vhost-user/channel.js';
import { FLAG_NEED_REPLY, FLAG_REPLY, u64, type Message } from '../vhost-user/protocol.js';
import type { FdInfo } from './fd-info.js';
import type { MessageRecord, TraceRecord } from './decode.js';
import { parseJsonLine } from './render.js';

/** One request to replay and the reply it got when recorded (if any). */
export interface ReplayStep {
  request: MessageRecord;
  reply: MessageRecord | null;
}

/** Reads a trace file: its records, in order. Throws naming the line that is not a record. */
export function readTrace(path: string): TraceRecord[] {
  const out: TraceRecord[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      try {
        out.push(parseJsonLine(line));
      } catch (e) {
        throw new Error(`${path}:${i + 1}: ${(e as Error).message}`);
      }
    });
  return out;
}

/** The sessions of a trace that have frontend requests, by id. */
export function tracedSessions(records: readonly TraceRecord[]): number[] {
  return [...new Set(records.filter((r) => r.type === 'message' && r.channel === 'main' && r.from === 'frontend').map((r) => r.session))];
}

/**
 * The frontend's requests of one session on the main channel, each paired with the reply
 * the backend gave it (the next reply with the same request id).
 */
export function replaySteps(records: readonly TraceRecord[], session: number): ReplayStep[] {
  const steps: ReplayStep[] = [];
  const waiting: ReplayStep[] = [];
  for (const r of records) {
    if (r.type !== 'message' || r.session !== session || r.channel !== 'main') continue;
    if (r.from === 'frontend') {
      const s = { request: r, reply: null };
      steps.push(s);
      if (!r.reply) waiting.push(s);
    } else {
      const i = waiting.findIndex((s) => s.request.request === r.request);
      if (i >= 0) waiting.splice(i, 1)[0].reply = r;
    }
  }
  return steps;
}

export interface ReplayOptions {
  /** ms to wait for each reply (default 5000) */
  timeoutMs?: number;
  /** called for each step once done */
  onStep?: (r: StepResult) => void;
}

export interface StepResult {
  step: number;
  name: string;
  /** what the backend answered (hex payload), if a reply was expected */
  reply?: string;
  recordedReply?: string;
  /** the reply differs from the recorded one */
  differs: boolean;
  error?: string;
}

export interface ReplayResult {
  steps: StepResult[];
  sent: number;
  replies: number;
  differing: number;
  /** set when the replay stopped early (the backend closed, a reply timed out) */
  error?: string;
}

const fromHex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));

/** A connection replaying one recorded session; close() ends it (the backend's state goes with it). */
export class Replay {
  private readonly ch: MessageChannel;
  private waiter: { request: number; resolve: (m: Message) => void; reject: (e: Error) => void } | null = null;
  private closedReason: string | null = null;
  /** fds made for recorded ones, by the recorded dev:ino */
  private readonly made = new Map<string, number>();
  private readonly eventfds: EventFd[] = [];
  private readonly backendChannels: MessageChannel[] = [];

  constructor(socket: string) {
    this.ch = new MessageChannel(connectUnix(socket), {
      message: (m) => this.onMessage(m),
      closed: (reason, err) => {
        this.closedReason = err ? `${reason}: ${err.message}` : reason;
        this.waiter?.reject(new Error(`the backend closed the connection (${this.closedReason})`));
        this.waiter = null;
      },
    });
  }

  get closed(): boolean {
    return this.ch.closed;
  }

  private onMessage(m: Message): void {
    const w = this.waiter;
    if (w === null || !(m.flags & FLAG_REPLY) || m.request !== w.request) {
      closeFds(m.fds);
      this.ch.close(`unexpected message ${m.request} (flags 0x${m.flags.toString(16)}) from the backend`);
      return;
    }
    this.waiter = null;
    w.resolve(m);
  }

  /** The fd standing for a recorded one: made once per recorded inode. */
  private fdFor(f: FdInfo): number {
    const key = `${f.dev}:${f.ino}`;
    const have = this.made.get(key);
    if (have !== undefined) return have;
    let fd: number;
    if (f.kind === 'memfd' || f.kind === 'file') {
      fd = createMemfd(`vhostkit-replay-${f.name ?? 'memory'}`, f.size ?? 0);
    } else if (f.kind === 'eventfd') {
      const e = new EventFd();
      this.eventfds.push(e);
      fd = e.fd;
    } else if (f.kind === 'socket') {
      const [ours, theirs] = socketPair();
      this.backendChannels.push(this.answerBackendRequests(ours));
      fd = theirs;
    } else {
      throw new Error(`cannot make an fd like the recorded ${f.kind}${f.name ? ` ${f.name}` : ''}`);
    }
    this.made.set(key, fd);
    return fd;
  }

  /** The backend request channel: every request that asks for a reply gets REPLY_ACK 0. */
  private answerBackendRequests(fd: number): MessageChannel {
    const ch: MessageChannel = new MessageChannel(fd, {
      message: (m) => {
        closeFds(m.fds);
        if (m.flags & FLAG_NEED_REPLY && !ch.closed) ch.send(m.request, FLAG_REPLY, u64.encode(0n));
      },
      closed: () => undefined,
    });
    return ch;
  }

  private send(r: MessageRecord, expectReply: boolean, timeoutMs: number): Promise<Message | null> {
    if (this.ch.closed) return Promise.reject(new Error(`the backend closed the connection (${this.closedReason})`));
    const fds = r.fds.map((f) => this.fdFor(f));
    const p = expectReply
      ? new Promise<Message>((resolve, reject) => {
          const timer = setTimeout(() => {
            this.waiter = null;
            reject(new Error(`no reply to ${r.name} within ${timeoutMs} ms`));
          }, timeoutMs);
          this.waiter = {
            request: r.request,
            resolve: (m) => {
              clearTimeout(timer);
              resolve(m);
            },
            reject: (e) => {
              clearTimeout(timer);
              reject(e);
            },
          };
        })
      : Promise.resolve(null);
    this.ch.send(r.request, r.flags, fromHex(r.payload), fds);
    return p;
  }

  /** Plays the steps in order; stops at the first that fails. */
  async run(steps: readonly ReplayStep[], opts: ReplayOptions = {}): Promise<ReplayResult> {
    const res: ReplayResult = { steps: [], sent: 0, replies: 0, differing: 0 };
    for (let i = 0; i < steps.length; i++) {
      const { request, reply } = steps[i];
      const sr: StepResult = { step: i + 1, name: request.name, differs: false };
      try {
        const got = await this.send(request, reply !== null, opts.timeoutMs ?? 5000);
        res.sent++;
        if (got !== null && reply !== null) {
          res.replies++;
          sr.reply = Buffer.from(got.payload).toString('hex');
          sr.recordedReply = reply.payload;
          sr.differs = sr.reply !== reply.payload;
          if (sr.differs) res.differing++;
          // A reply's fd (GET_INFLIGHT_FD's area) stands for the recorded one from now on.
          got.fds.forEach((fd, k) => {
            const f = reply.fds[k];
            if (f !== undefined && fd >= 0) {
              this.made.set(`${f.dev}:${f.ino}`, fd);
              got.fds[k] = -1;
            }
          });
          closeFds(got.fds);
        }
      } catch (e) {
        sr.error = (e as Error).message;
        res.error = `step ${i + 1} (${request.name}): ${sr.error}`;
      }
      res.steps.push(sr);
      opts.onStep?.(sr);
      if (sr.error !== undefined) break;
    }
    return res;
  }

  /** Closes the connection and every fd made for the replay. */
  close(): void {
    this.ch.close('replay finished');
    for (const c of this.backendChannels) c.close();
    const eventfdNumbers = new Set(this.eventfds.map((e) => e.fd));
    for (const e of this.eventfds) e.close();
    for (const fd of this.made.values()) {
      if (eventfdNumbers.has(fd)) continue;
      try {
        closeFd(fd);
      } catch {
        // already closed with its channel
      }
    }
    this.made.clear();
  }
}
