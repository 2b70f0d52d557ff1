// A small device made for tests of the protocol layer: each queue answers every chain by
// writing its readable bytes, reversed, into its writable buffers. It has a 16-byte config
// space whose last 8 bytes are writable, and it records what the session told it.
import { VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../../src/virtio/features.js';
import { ProtocolFeature } from '../../src/vhost-user/protocol.js';
import type { QueueContext, VhostUserDevice } from '../../src/vhost-user/device.js';
import type { GuestMemory } from '../../src/native/guest-memory.js';

export interface EchoEvent {
  what: 'start' | 'stop' | 'reset' | 'memory' | 'mtu' | 'rarp' | 'features' | 'config';
  queue?: number;
  value?: unknown;
}

export class EchoDevice implements VhostUserDevice {
  readonly kind = 'echo';
  readonly deviceId = 0x7e57;
  readonly features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_F_RING_PACKED);
  readonly protocolFeatures = bit(ProtocolFeature.MTU) | bit(ProtocolFeature.RARP) | bit(ProtocolFeature.INFLIGHT_SHMFD);
  readonly maxQueueSize = 1024;
  readonly completesInOrder = true;
  readonly events: EchoEvent[] = [];
  readonly config = new Uint8Array(16).map((_, i) => i);
  served = 0;
  mtu = 1500;
  /** Hold chains instead of completing them (to test draining on stop). */
  hold = false;
  private held = new Map<number, Array<{ id: number; len: number }>>();

  constructor(readonly numQueues = 2) {}

  configSpace(): Uint8Array {
    return this.config;
  }

  setConfig(offset: number, data: Uint8Array): boolean {
    if (offset < 8 || offset + data.length > 16) return false; // bytes 0..7 are read-only
    this.config.set(data, offset);
    this.events.push({ what: 'config', value: offset });
    return true;
  }

  featuresNegotiated(f: bigint): void {
    this.events.push({ what: 'features', value: f });
  }

  queueStart(q: QueueContext): void {
    this.events.push({ what: 'start', queue: q.index, value: q.layout });
  }

  queueKick(q: QueueContext): void {
    for (;;) {
      const n = q.vq.pop();
      if (n < 0) {
        q.fail(q.vq.error!);
        return;
      }
      if (n === 0) return;
      const b = q.vq.b;
      for (let i = 0; i < n; i++) {
        const views = q.vq.views(i);
        const readable: number[] = [];
        let s = b.firstSeg[i];
        for (const v of views) {
          if (!(b.segFlags[s++] & 1)) for (const x of v) readable.push(x);
        }
        readable.reverse();
        let at = 0;
        s = b.firstSeg[i];
        for (const v of views) {
          if (b.segFlags[s++] & 1) {
            const m = Math.min(v.length, readable.length - at);
            if (m > 0) v.set(readable.slice(at, at + m));
            at += Math.max(m, 0);
          }
        }
        b.usedId[i] = b.head[i];
        b.usedLen[i] = at;
      }
      if (this.hold) {
        const list = this.held.get(q.index) ?? [];
        for (let i = 0; i < n; i++) list.push({ id: b.usedId[i], len: b.usedLen[i] });
        this.held.set(q.index, list);
      } else {
        q.vq.push(n);
      }
      this.served += n;
    }
  }

  /** Completes held chains (a device draining in-flight work). */
  release(q: QueueContext): void {
    const list = this.held.get(q.index) ?? [];
    this.held.delete(q.index);
    for (let i = 0; i < list.length; i += q.vq.burst) {
      const part = list.slice(i, i + q.vq.burst);
      part.forEach((e, k) => {
        q.vq.b.usedId[k] = e.id;
        q.vq.b.usedLen[k] = e.len;
      });
      q.vq.push(part.length);
    }
  }

  async queueStop(q: QueueContext): Promise<void> {
    // Drain: everything popped is completed before the ring state is handed back.
    await new Promise((r) => setImmediate(r));
    this.release(q);
    this.events.push({ what: 'stop', queue: q.index });
  }

  memoryChanged(_m: GuestMemory): void {
    this.events.push({ what: 'memory' });
  }

  reset(): void {
    this.held.clear();
    this.events.push({ what: 'reset' });
  }

  setMtu(mtu: number): boolean {
    if (mtu < 68 || mtu > 9000) return false;
    this.mtu = mtu;
    this.events.push({ what: 'mtu', value: mtu });
    return true;
  }

  sendRarp(mac: Uint8Array): void {
    this.events.push({ what: 'rarp', value: Array.from(mac) });
  }
}
