// The one interface a device implements to be served over vhost-user. The protocol layer
// (session.ts) never knows what a packet or a sector is; a device never sees a message.
// Modelled on rust-vmm's VhostUserBackend trait and libvhost-user's VuDevIface.
import type { GuestMemory } from '../native/guest-memory.js';
import type { RingLayout, Virtqueue, VringError } from '../native/virtqueue.js';
import type { Logger } from '../log.js';

/** A started, enabled queue as the device sees it. */
export interface QueueContext {
  readonly index: number;
  readonly layout: RingLayout;
  readonly size: number;
  /** The native ring: pop/push bursts. Push writes the call fd when the driver wants it. */
  readonly vq: Virtqueue;
  /** Guest memory the queue's buffers live in (changes on SET_MEM_TABLE / ADD/REM_MEM_REG). */
  readonly memory: GuestMemory;
  /** Negotiated virtio features. */
  readonly features: bigint;
  readonly log: Logger;
  /**
   * The kick eventfd (-1: the frontend asked for polling). Only for devices with
   * `handlesKicks`: they watch it themselves (e.g. on a data-plane thread); it stays owned
   * by the session, valid until queueStop resolves.
   */
  readonly kickFd: number;
  /**
   * The driver broke the queue (vq.pop() < 0) or sent something the device cannot accept:
   * the session stops this queue, sets DEVICE_NEEDS_RESET, signals the error fd and logs
   * why. Other queues and sessions keep running.
   */
  fail(reason: VringError | Error | string): void;
}

export interface VhostUserDevice {
  /** Short name for logs ("net", "blk", "echo"). */
  readonly kind: string;
  /** Virtio device id (1 net, 2 block, ...), for tools. */
  readonly deviceId: number;
  /** Device and transport features offered; the session adds VHOST_USER_F_PROTOCOL_FEATURES. */
  readonly features: bigint;
  /**
   * Optional protocol features the device supports on top of those the session always
   * offers (MQ, REPLY_ACK, CONFIG if configSpace exists, BACKEND_REQ, RESET_DEVICE,
   * CONFIGURE_MEM_SLOTS, STATUS, LOG_SHMFD): e.g. MTU, RARP, INFLIGHT_SHMFD.
   */
  readonly protocolFeatures: bigint;
  /** Queues the device has (GET_QUEUE_NUM). */
  readonly numQueues: number;
  /** Largest queue size accepted in SET_VRING_NUM. */
  readonly maxQueueSize: number;
  /**
   * True if the device watches kick fds itself (ctx.kickFd) instead of getting queueKick
   * calls from the session on the main thread.
   */
  readonly handlesKicks?: boolean;
  /**
   * True if the device completes every queue's chains in the order it popped them (net).
   * Such a device's packed rings can keep their position in a ring record file
   * (BackendOptions.ringRecord) and survive a backend restart the frontend cannot
   * recover from itself. A push out of order drops the record (and logs it).
   */
  readonly completesInOrder?: boolean;

  /** Current config space bytes (GET_CONFIG). Omit for devices without one. */
  configSpace?(): Uint8Array;
  /**
   * Calls `changed` whenever the device changes its own config space (a disk resized):
   * the session then notifies the frontend (CONFIG_CHANGE_MSG). Returns a function that
   * stops watching (the session calls it at teardown).
   */
  watchConfig?(changed: () => void): () => void;
  /** SET_CONFIG: return false to refuse (e.g. a read-only field). */
  setConfig?(offset: number, data: Uint8Array, flags: number): boolean;
  /** SET_FEATURES accepted these features. */
  featuresNegotiated?(features: bigint): void;

  /** A queue was started and enabled: the device may now serve it. */
  queueStart(q: QueueContext): void;
  /** The driver kicked (or the session polls a queue without a kick fd). */
  queueKick(q: QueueContext): void;
  /**
   * The queue stops (GET_VRING_BASE, disable, reset, disconnect). Resolve once no chain
   * of it is in use, so its ring state can be handed back.
   */
  queueStop(q: QueueContext): void | Promise<void>;
  /**
   * Before the session changes something under running queues (memory table, ring
   * addresses): resolve once no running queue of this device is touched, on any thread.
   * resumeQueues follows. Devices that only use queues from the main thread between
   * messages need neither.
   */
  pauseQueues?(): Promise<void>;
  resumeQueues?(): void;
  /** Guest memory was replaced while queues run; chains popped before refer to the old table. */
  memoryChanged?(memory: GuestMemory): void;
  /** The frontend went away or reset the device: forget per-session state. */
  reset?(): void;
  /**
   * NET_SET_MTU, before or after the rings started: return (or resolve) false if the MTU is
   * not acceptable. A promise holds the session's next message (and the REPLY_ACK) until it
   * resolves: the new MTU applies to the running data plane by then.
   */
  setMtu?(mtu: number): boolean | Promise<boolean>;
  /** SEND_RARP: announce this MAC (after migration). */
  sendRarp?(mac: Uint8Array): void;
}
