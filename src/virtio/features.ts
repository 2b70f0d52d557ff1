// Feature bits shared by every virtio device (virtio 1.2 §6) and the vhost feature
// bits that vhost-user reuses. Device-specific bits live with their device.

export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** vhost-user: the backend speaks GET/SET_PROTOCOL_FEATURES (reuses reserved bit 30). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;
/** vhost: log all writes to guest memory (live migration). */
export const VHOST_F_LOG_ALL = 26;

export const bit = (n: number): bigint => 1n << BigInt(n);
export const has = (features: bigint, n: number): boolean => (features & bit(n)) !== 0n;

/** Names of the transport feature bits, for logs and `vhostkit probe`. */
export const transportFeatureNames: Record<number, string> = {
  [VIRTIO_F_NOTIFY_ON_EMPTY]: 'NOTIFY_ON_EMPTY',
  [VHOST_F_LOG_ALL]: 'LOG_ALL',
  [VIRTIO_F_ANY_LAYOUT]: 'ANY_LAYOUT',
  [VIRTIO_RING_F_INDIRECT_DESC]: 'RING_INDIRECT_DESC',
  [VIRTIO_RING_F_EVENT_IDX]: 'RING_EVENT_IDX',
  [VHOST_USER_F_PROTOCOL_FEATURES]: 'PROTOCOL_FEATURES',
  [VIRTIO_F_VERSION_1]: 'VERSION_1',
  [VIRTIO_F_ACCESS_PLATFORM]: 'ACCESS_PLATFORM',
  [VIRTIO_F_RING_PACKED]: 'RING_PACKED',
  [VIRTIO_F_IN_ORDER]: 'IN_ORDER',
  [VIRTIO_F_ORDER_PLATFORM]: 'ORDER_PLATFORM',
  [VIRTIO_F_SR_IOV]: 'SR_IOV',
  [VIRTIO_F_NOTIFICATION_DATA]: 'NOTIFICATION_DATA',
  [VIRTIO_F_RING_RESET]: 'RING_RESET',
};

/** Decodes a feature mask into names (device bits first from `deviceNames`), unknown bits as "bit N". */
export function featureNames(features: bigint, deviceNames: Record<number, string> = {}): string[] {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) {
    if (!has(features, i)) continue;
    out.push(deviceNames[i] ?? transportFeatureNames[i] ?? `bit ${i}`);
  }
  return out;
}

/** Device status bits (virtio 1.2 §2.1). */
export const DeviceStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Virtio device ids (virtio 1.2 §5). */
export const VirtioDeviceId = { NET: 1, BLOCK: 2, CONSOLE: 3, RNG: 4, VSOCK: 19, FS: 26 } as const;
