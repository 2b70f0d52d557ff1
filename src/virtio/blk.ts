// virtio-blk constants (virtio 1.2 §5.2).
export const BlkFeature = {
  BARRIER: 0,
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  SCSI: 7,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
  LIFETIME: 15,
  SECURE_ERASE: 16,
  ZONED: 17,
} as const;

export const blkFeatureNames: Record<number, string> = Object.fromEntries(Object.entries(BlkFeature).map(([k, v]) => [v, k]));

/** struct virtio_blk_config up to write_zeroes_may_unmap and its padding (60 bytes). */
export const BLK_CONFIG_SIZE = 60;

export interface BlkConfig {
  capacity: bigint;
  sizeMax: number;
  segMax: number;
  geometry: { cylinders: number; heads: number; sectors: number };
  blkSize: number;
  physicalBlockExp: number;
  alignmentOffset: number;
  minIoSize: number;
  optIoSize: number;
  writeback: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
}

export function decodeBlkConfig(b: Uint8Array): Partial<BlkConfig> {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: Partial<BlkConfig> = {};
  if (b.length >= 8) out.capacity = v.getBigUint64(0, true);
  if (b.length >= 16) {
    out.sizeMax = v.getUint32(8, true);
    out.segMax = v.getUint32(12, true);
  }
  if (b.length >= 20) out.geometry = { cylinders: v.getUint16(16, true), heads: b[18], sectors: b[19] };
  if (b.length >= 24) out.blkSize = v.getUint32(20, true);
  if (b.length >= 32) {
    out.physicalBlockExp = b[24];
    out.alignmentOffset = b[25];
    out.minIoSize = v.getUint16(26, true);
    out.optIoSize = v.getUint32(28, true);
  }
  if (b.length >= 36) {
    out.writeback = b[32];
    out.numQueues = v.getUint16(34, true);
  }
  if (b.length >= 57) {
    out.maxDiscardSectors = v.getUint32(36, true);
    out.maxDiscardSeg = v.getUint32(40, true);
    out.discardSectorAlignment = v.getUint32(44, true);
    out.maxWriteZeroesSectors = v.getUint32(48, true);
    out.maxWriteZeroesSeg = v.getUint32(52, true);
    out.writeZeroesMayUnmap = b[56];
  }
  return out;
}
