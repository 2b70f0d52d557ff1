// What a virtio-net device needs from the data plane that serves its queues: the narrow
// interface the switch implements for each port (switch.ts), so that this layer does not
// depend on the switch.
import type { RingLayout } from '../../native/virtqueue.js';

/** One guest queue handed to the data plane, as the device negotiated it. */
export interface NetQueueSpec {
  index: number;
  layout: RingLayout;
  size: number;
  /** the queue's parked Virtqueue (Virtqueue.park), taken over by the data-plane thread */
  token: number;
  kickFd: number;
  /** virtio_net_hdr length: 12 with VERSION_1 or MRG_RXBUF, else 10 */
  hdrLen: number;
  mergeable: boolean;
  /** RxOffload bits: what the guest takes as is */
  rxOffloads: number;
  /** whether the guest's TX headers may ask for offloads */
  txOffloads: boolean;
  /** the MTU the guest was told (VIRTIO_NET_F_MTU / NET_SET_MTU), 0 if none */
  mtu: number;
}

/** The data plane as one port's device sees it. Every call resolves once the data-plane thread has done it. */
export interface NetPortDataplane {
  /** The guest's memory table (a parked GuestMemory) for this port's queues. */
  setMemory(token: number): Promise<void>;
  /** Drops the data plane's mapping of the guest's memory (the guest left). */
  releaseMemory(): Promise<void>;
  startQueue(spec: NetQueueSpec): Promise<void>;
  /** Resolves when the data plane no longer touches the queue. */
  stopQueue(index: number): Promise<void>;
  setMtu(mtu: number): Promise<void>;
  /** Holds every queue of the data plane (a memory table change), until resume. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Sends a frame from the port into the switch, as if the guest had sent it (RARP). */
  inject(frame: Uint8Array): Promise<void>;
}
