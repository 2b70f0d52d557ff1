// What a load generator's device asks of one of its worker threads (net-worker.ts serves
// these through serveCalls): claim the guest memory and queues the device hands over and
// serve them with a NetLoadServer. Counters go to a SharedArrayBuffer the main thread reads.
import { GuestMemory } from '../native/guest-memory.js';
import { Virtqueue, type RingLayout } from '../native/virtqueue.js';
import { NetLoadServer, type FrameSpec, type QueueSpec } from './net.js';
import type { PollMode } from '../dataplane/poller.js';

export type NetLaneEvent = { event: 'fail'; index: number; reason: string };

export class NetLaneCalls {
  private readonly server: NetLoadServer;
  private readonly queues = new Map<number, Virtqueue>();
  private memory: GuestMemory | null = null;
  // Poll counters into the shared array a few times a second (the main thread prints them).
  private readonly sync: NodeJS.Timeout;

  constructor(
    poll: PollMode,
    private readonly spec: FrameSpec,
    counters: Float64Array,
    private readonly emit: (e: NetLaneEvent) => void,
  ) {
    this.server = new NetLoadServer(poll, spec, counters);
    this.sync = setInterval(() => this.server.syncPollStats(), 250);
  }

  ready(): boolean {
    return true;
  }
  /** The guest's memory table (a parked GuestMemory): the queues' views move to it. */
  memoryTable(token: number): void {
    this.memory?.close();
    this.memory = GuestMemory.claim(token);
    for (const vq of this.queues.values()) vq.setMemoryView(this.memory);
  }
  start(q: QueueSpec, layout: RingLayout, size: number, token: number, kickFd: number): void {
    const vq = new Virtqueue({ layout, size, token, burst: this.spec.burst });
    if (this.memory) vq.setMemoryView(this.memory);
    this.queues.set(q.index, vq);
    this.server.start(q, vq, kickFd, (reason) => {
      this.queues.delete(q.index);
      this.emit({ event: 'fail', index: q.index, reason });
    });
  }
  stop(index: number): void {
    this.server.stop(index);
    this.queues.delete(index);
  }
  pause(): void {
    this.server.pause();
  }
  resume(): void {
    this.server.resume();
  }
  close(): void {
    clearInterval(this.sync);
    this.server.close();
    this.queues.clear();
    this.memory?.close();
    this.memory = null;
  }
}
