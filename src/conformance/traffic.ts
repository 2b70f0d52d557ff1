// "Does it still move data?": the check the runner makes after every case, with a fresh
// connection that does everything right, as a guest's driver would. virtio-net: frames
// sent on the transmit queue must come back as used buffers, and frames must arrive in the
// receive buffers (the backend must send: a switch port with a peer, testpmd forwarding
// back, vhostkit net-load --gen). virtio-blk: a 4 KiB write, a read that returns it, and
// the old contents written back (sector 8, so the disk is left as it was).
import { NetGuest } from '../loadgen/net-guest.js';
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { ProtocolFeature } from '../vhost-user/protocol.js';
import { DeviceStatus, VIRTIO_F_RING_PACKED, bit } from '../virtio/features.js';
import { ethFrame } from '../virtio/net-frames.js';
import { BlkClient, BlkStatus } from './blk-client.js';
import { retryEagain } from './connect.js';

export type DeviceType = 'net' | 'blk';

export interface TrafficOptions {
  packed?: boolean;
  /** ms for the whole check (default 5000) */
  timeoutMs?: number;
  /** extra feature bits to negotiate (masked by what the backend offers) */
  extraFeatures?: bigint;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** DRIVER_OK and the bits before it, for SET_STATUS. */
export const STATUS_DRIVER_OK = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK;

/** Throws with what did not happen; resolves once data moved both ways. */
export function moveData(socket: string, type: DeviceType, o: TrafficOptions = {}): Promise<string> {
  return type === 'net' ? netMovesData(socket, o) : blkMovesData(socket, o);
}

let seq = 0;

export async function netMovesData(socket: string, o: TrafficOptions = {}): Promise<string> {
  const timeoutMs = o.timeoutMs ?? 5000;
  const deadline = Date.now() + timeoutMs;
  const g = await retryEagain(() => NetGuest.connect(socket, { packed: o.packed ?? false, memoryBytes: 2 << 20, rxBuffers: 64, queueSize: 256, maxFrame: 1514, extraFeatures: o.extraFeatures }));
  try {
    const frames = Array.from({ length: 4 }, () => ethFrame('ff:ff:ff:ff:ff:ff', '02:00:00:c0:0f:01', 64, ++seq));
    const sent = g.send(frames);
    if (sent !== frames.length) throw new Error(`only ${sent} of ${frames.length} frames fit in the transmit queue`);
    let done = 0;
    while ((done += g.reapTx()) < sent) {
      if (Date.now() > deadline) throw new Error(`transmit queue: ${done} of ${sent} frames returned as used within ${timeoutMs} ms`);
      await sleep(5);
    }
    const rx = await g.receive(1, Math.max(1, deadline - Date.now()));
    if (rx.length === 0) throw new Error(`receive queue: no frame within ${timeoutMs} ms (the backend must send: a peer port, forwarding back, or a generator)`);
    return `${sent} frames sent, ${rx.length} received`;
  } finally {
    g.close();
  }
}

export async function blkMovesData(socket: string, o: TrafficOptions = {}): Promise<string> {
  const fe = await retryEagain(() => VhostUserFrontend.connect(socket, { timeoutMs: o.timeoutMs ?? 5000 }));
  try {
    await fe.negotiate({ features: o.packed ? ~0n : ~bit(VIRTIO_F_RING_PACKED) });
    if (o.packed && !(fe.features & bit(VIRTIO_F_RING_PACKED))) throw new Error('the backend does not offer RING_PACKED');
    await fe.setupMemory(1 << 20);
    const q = await fe.startQueue(0, { size: 64 });
    if (fe.protocolFeatures & bit(ProtocolFeature.STATUS)) await fe.setStatus(STATUS_DRIVER_OK);
    const blk = new BlkClient(q);
    const timeoutMs = o.timeoutMs ?? 5000;
    const sector = 8n;
    const old = await blk.request(0, sector, { readLen: 4096, timeoutMs });
    if (old.status !== BlkStatus.OK || !old.data) throw new Error(`read of sector ${sector}: status ${old.status}`);
    const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + ++seq) & 0xff);
    const w = await blk.request(1, sector, { data, timeoutMs });
    if (w.status !== BlkStatus.OK) throw new Error(`write of sector ${sector}: status ${w.status}`);
    const r = await blk.request(0, sector, { readLen: 4096, timeoutMs });
    if (r.status !== BlkStatus.OK || !r.data) throw new Error(`read back of sector ${sector}: status ${r.status}`);
    if (!Buffer.from(r.data).equals(Buffer.from(data))) throw new Error(`read back of sector ${sector}: not what was written`);
    const back = await blk.request(1, sector, { data: old.data, timeoutMs });
    if (back.status !== BlkStatus.OK) throw new Error(`restoring sector ${sector}: status ${back.status}`);
    return `4 KiB written and read back (${q.layout} ring)`;
  } finally {
    fe.close();
  }
}
