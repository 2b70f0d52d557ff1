// virtio-net constants (virtio 1.2 §5.1).
export const NetFeature = {
  CSUM: 0,
  GUEST_CSUM: 1,
  CTRL_GUEST_OFFLOADS: 2,
  MTU: 3,
  MAC: 5,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  GUEST_UFO: 10,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  HOST_UFO: 14,
  MRG_RXBUF: 15,
  STATUS: 16,
  CTRL_VQ: 17,
  CTRL_RX: 18,
  CTRL_VLAN: 19,
  CTRL_RX_EXTRA: 20,
  GUEST_ANNOUNCE: 21,
  MQ: 22,
  CTRL_MAC_ADDR: 23,
  GUEST_USO4: 54,
  GUEST_USO6: 55,
  HOST_USO: 56,
  HASH_REPORT: 57,
  GUEST_HDRLEN: 59,
  RSS: 60,
  RSC_EXT: 61,
  STANDBY: 62,
  SPEED_DUPLEX: 63,
} as const;

export const netFeatureNames: Record<number, string> = Object.fromEntries(Object.entries(NetFeature).map(([k, v]) => [v, k]));

/** struct virtio_net_config, the fields up to mtu (12 bytes). */
export const NET_CONFIG_SIZE = 12;

export interface NetConfig {
  mac: string;
  status: number;
  maxVirtqueuePairs: number;
  mtu: number;
}

export function decodeNetConfig(b: Uint8Array): Partial<NetConfig> {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: Partial<NetConfig> = {};
  if (b.length >= 6) out.mac = Array.from(b.subarray(0, 6), (x) => x.toString(16).padStart(2, '0')).join(':');
  if (b.length >= 8) out.status = v.getUint16(6, true);
  if (b.length >= 10) out.maxVirtqueuePairs = v.getUint16(8, true);
  if (b.length >= 12) out.mtu = v.getUint16(10, true);
  return out;
}
