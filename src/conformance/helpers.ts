// What the cases share: a running queue set up the way a guest driver does it, a way to ask
// "did the backend take that, refuse it, or close?", and the spec's names.
import { ProtocolFeature, Req, FLAG_NEED_REPLY, FLAG_REPLY, VERSION, u64 } from '../vhost-user/protocol.js';
import type { FrontendQueue, VhostUserFrontend } from '../vhost-user/frontend.js';
import { VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../virtio/features.js';
import { NetFeature } from '../virtio/net.js';
import { isEof, type RawFrontend } from './raw-frontend.js';
import { passed, rejected, type CaseContext, type Outcome } from './case.js';
import { STATUS_DRIVER_OK } from './traffic.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const hex = (x: bigint | number): string => `0x${x.toString(16)}`;

/** A case waited for an answer that never came: the runner reports it as hung. */
export class NoAnswer extends Error {}

export const hasProto = (ctx: CaseContext, f: ProtocolFeature): boolean => (ctx.offer.protocolFeatures & bit(f)) !== 0n;
export const offers = (ctx: CaseContext, f: number): boolean => (ctx.offer.features & bit(f)) !== 0n;

export interface Running {
  fe: VhostUserFrontend;
  /** the queue the device reads from: net transmit (1), blk requests (0) */
  q: FrontendQueue;
}

/**
 * A frontend with every queue the device needs started (net: receive 0 and transmit 1; blk:
 * queue 0) on split rings of 64 in 1 MiB of memory, DRIVER_OK sent where STATUS is offered.
 * `features`: extra bits to ask for (EVENT_IDX, INDIRECT_DESC...), masked by the offer.
 * Mergeable receive buffers are left out: a frame always has one buffer.
 */
export async function runningQueue(ctx: CaseContext, o: { features?: bigint; packed?: boolean; memoryBytes?: number } = {}): Promise<Running> {
  const fe = await ctx.frontend();
  const optional = bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_F_RING_PACKED) | bit(NetFeature.MRG_RXBUF);
  const want = ~optional | (o.features ?? 0n) | (o.packed ? bit(VIRTIO_F_RING_PACKED) : 0n);
  await fe.negotiate({ features: want });
  await fe.setupMemory(o.memoryBytes ?? 1 << 20);
  let q: FrontendQueue;
  if (ctx.type === 'net') {
    await fe.startQueue(0, { size: 64 });
    q = await fe.startQueue(1, { size: 64 });
  } else {
    q = await fe.startQueue(0, { size: 64 });
  }
  if (fe.protocolFeatures & bit(ProtocolFeature.STATUS)) await fe.setStatus(STATUS_DRIVER_OK);
  return { fe, q };
}

/** A chain the device reads and completes: a transmit frame (net) or a 512-byte read (blk). */
export function addWork(ctx: CaseContext, q: FrontendQueue, o: { indirect?: boolean } = {}): number {
  if (ctx.type === 'net') {
    const frame = new Uint8Array(12 + 60);
    frame.fill(0xff, 12, 18);
    frame.set([2, 0, 0, 0xc0, 0x0f, 2, 0x88, 0xb5], 18);
    return q.driver.add([{ len: frame.length, writable: false, data: frame }], o);
  }
  const hdr = new Uint8Array(16); // type 0 (IN), sector 0
  return q.driver.add(
    [
      { len: 16, writable: false, data: hdr },
      { len: 512, writable: true },
      { len: 1, writable: true },
    ],
    o,
  );
}

/** Polls the driver's used ring until `n` chains are back, at most ms; returns how many came. */
export async function usedWithin(q: FrontendQueue, n: number, ms: number): Promise<number> {
  let got = 0;
  const deadline = Date.now() + ms;
  for (;;) {
    got += q.driver.used().length;
    if (got >= n || Date.now() > deadline) return got;
    await sleep(5);
  }
}

/**
 * After hostile input on a raw connection: sends GET_FEATURES and reads until its reply or
 * the end. The backend closed the connection or acked a failure: rejected; it answered
 * GET_FEATURES (having taken or ignored the input): passed; neither within ms: NoAnswer.
 */
export async function afterHostile(raw: RawFrontend, what: string, ms = 2000): Promise<Outcome> {
  await raw.send(Req.GET_FEATURES, VERSION);
  const deadline = Date.now() + ms;
  const acks: bigint[] = [];
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new NoAnswer(`${what}: neither an answer nor a close within ${ms} ms`);
    let m;
    try {
      m = await raw.next(left);
    } catch {
      throw new NoAnswer(`${what}: neither an answer nor a close within ${ms} ms`);
    }
    if (isEof(m)) return rejected(`${what}: the backend closed the connection${acks.some((a) => a !== 0n) ? ' after a failure ack' : ''}`);
    if (!(m.flags & FLAG_REPLY)) return rejected(`${what}: the backend sent a request (${m.request}) instead of an answer`);
    if (m.request === Req.GET_FEATURES) {
      const nack = acks.find((a) => a !== 0n);
      return nack !== undefined ? rejected(`${what}: refused with REPLY_ACK ${nack}, the connection still answers`) : passed(`${what}: taken or ignored, the connection still answers`);
    }
    if (m.payload.length === 8) acks.push(u64.decode(m.payload));
  }
}

/** Header flags of a request with NEED_REPLY. */
export const NEED_REPLY = VERSION | FLAG_NEED_REPLY;

/**
 * Runs `f` on a frontend; when it throws because the backend refused (a failure ack) or
 * closed, the case is rejected with that; otherwise `f`'s own outcome stands.
 */
export async function refusedOr(f: () => Promise<Outcome>): Promise<Outcome> {
  try {
    return await f();
  } catch (e) {
    const msg = (e as Error).message;
    if (/failed: the backend answered|connection closed/.test(msg)) return rejected(msg);
    if (/no reply to .* within/.test(msg)) throw new NoAnswer(msg);
    throw e;
  }
}
