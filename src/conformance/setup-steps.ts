// A frontend's setup cut into steps, QEMU's order, so that any prefix of it can be sent and
// the connection dropped there: the guest memory and rings built by hand (PartialGuest), and
// the messages one by one (setupSteps). `vhostkit conformance` disconnects after each step;
// test/vhost-user/faults.test.ts does the same against vhostkit's own devices.
import { GuestMemory, createMemfd } from '../native/guest-memory.js';
import { EventFd } from '../native/eventfd.js';
import { closeFd } from '../native/unix-socket.js';
import { BumpAllocator, PackedDriver, SplitDriver } from '../virtio/driver.js';
import { DeviceStatus, bit } from '../virtio/features.js';
import { FRONTEND_UVA_BASE, type VhostUserFrontend } from '../vhost-user/frontend.js';
import { ProtocolFeature, Req, memTable, vringAddr, vringFile, vringState } from '../vhost-user/protocol.js';

export type Layout = 'split' | 'packed';

/** Bytes of guest memory a PartialGuest has (one memfd region at gpa 0). */
export const PARTIAL_GUEST_BYTES = 4 << 20;

/** A frontend's guest memory and rings, built by hand so that any prefix of the setup can be sent. */
export class PartialGuest {
  readonly memfd = createMemfd('vk-partial-guest', PARTIAL_GUEST_BYTES);
  readonly mem = GuestMemory.map([{ fd: this.memfd, gpa: 0n, size: BigInt(PARTIAL_GUEST_BYTES), uva: FRONTEND_UVA_BASE, mmapOffset: 0n }]);
  readonly alloc = new BumpAllocator(0, PARTIAL_GUEST_BYTES);
  readonly drivers: Array<SplitDriver | PackedDriver>;
  readonly kicks: EventFd[];
  readonly calls: EventFd[];

  constructor(
    readonly layout: Layout,
    queues: number,
    readonly size = 64,
  ) {
    const o = { mem: this.mem.view(0), base: 0, size, alloc: this.alloc };
    this.drivers = Array.from({ length: queues }, () => (layout === 'split' ? new SplitDriver(o) : new PackedDriver(o)));
    this.kicks = this.drivers.map(() => new EventFd());
    this.calls = this.drivers.map(() => new EventFd());
  }

  /** SET_VRING_ADDR's payload for queue `q` (frontend-virtual addresses). */
  addr(q: number): Uint8Array {
    const d = this.drivers[q];
    const [desc, avail, used] = d instanceof SplitDriver ? [d.descAddr, d.availAddr, d.usedAddr] : [d.descAddr, d.driverEventAddr, d.deviceEventAddr];
    const uva = (gpa: number): bigint => FRONTEND_UVA_BASE + BigInt(gpa);
    return vringAddr.encode({ index: q, flags: 0, desc: uva(desc), used: uva(used), avail: uva(avail), log: 0n });
  }

  close(): void {
    this.mem.close();
    closeFd(this.memfd);
    for (const e of [...this.kicks, ...this.calls]) e.close();
  }
}

export type Step = [string, (fe: VhostUserFrontend, g: PartialGuest) => Promise<unknown>];

/** What setupSteps acks of the protocol features unless told otherwise. */
export const SETUP_PROTOCOL_FEATURES = bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.MQ) | bit(ProtocolFeature.CONFIG) | bit(ProtocolFeature.STATUS);

/**
 * The usual opening, SET_MEM_TABLE, then every queue's rings, as QEMU sends them, and
 * SET_STATUS DRIVER_OK. `protocol`: the protocol features to ack (only those the backend
 * offers: the caller masks them); GET_QUEUE_NUM is sent with MQ, SET_STATUS with STATUS.
 */
export function setupSteps(features: bigint, queues: number, layout: Layout, protocol = SETUP_PROTOCOL_FEATURES): Step[] {
  const ack = { ack: true };
  const steps: Step[] = [
    ['GET_FEATURES', (fe) => fe.getFeatures()],
    ['GET_PROTOCOL_FEATURES', (fe) => fe.getProtocolFeatures()],
    ['SET_PROTOCOL_FEATURES', (fe) => fe.setProtocolFeatures(protocol)],
  ];
  if (protocol & bit(ProtocolFeature.MQ)) steps.push(['GET_QUEUE_NUM', (fe) => fe.getQueueNum()]);
  steps.push(
    ['SET_OWNER', (fe) => fe.setOwner()],
    ['SET_FEATURES', (fe) => fe.setFeatures(features)],
    [
      'SET_MEM_TABLE',
      (fe, g) => fe.request(Req.SET_MEM_TABLE, memTable.encode([{ gpa: 0n, size: BigInt(PARTIAL_GUEST_BYTES), uva: FRONTEND_UVA_BASE, mmapOffset: 0n }]), { fds: [g.memfd], ack: true }),
    ],
  );
  for (let q = 0; q < queues; q++) {
    steps.push(
      [`SET_VRING_NUM ${q}`, (fe, g) => fe.request(Req.SET_VRING_NUM, vringState.encode({ index: q, num: g.size }), ack)],
      [`SET_VRING_BASE ${q}`, (fe) => fe.request(Req.SET_VRING_BASE, vringState.encode({ index: q, num: layout === 'packed' ? 0x80008000 : 0 }), ack)],
      [`SET_VRING_ADDR ${q}`, (fe, g) => fe.request(Req.SET_VRING_ADDR, g.addr(q), ack)],
      [`SET_VRING_CALL ${q}`, (fe, g) => fe.request(Req.SET_VRING_CALL, vringFile.encode(q, false), { fds: [g.calls[q].fd], ack: true })],
      [`SET_VRING_KICK ${q}`, (fe, g) => fe.request(Req.SET_VRING_KICK, vringFile.encode(q, false), { fds: [g.kicks[q].fd], ack: true })],
      [`SET_VRING_ENABLE ${q}`, (fe) => fe.request(Req.SET_VRING_ENABLE, vringState.encode({ index: q, num: 1 }), ack)],
    );
  }
  if (protocol & bit(ProtocolFeature.STATUS)) {
    steps.push(['SET_STATUS DRIVER_OK', (fe) => fe.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK)]);
  }
  return steps;
}
