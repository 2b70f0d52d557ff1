// Virtqueue constants and layout math from the virtio 1.2 specification.
//
//   §2.7  Split virtqueues:  descriptor table, available ring, used ring.
//   §2.8  Packed virtqueues: descriptor ring, driver and device event suppression areas.
//
// Everything here is pure arithmetic on numbers: no memory access, no native code.
// Guest-physical addresses are plain JS numbers (exact up to 2^53, which covers
// every address a test can actually back with memory).

// ---------------------------------------------------------------------------
// Descriptor flags
// ---------------------------------------------------------------------------

/** The buffer continues via the `next` field (split) / in the next ring slot (packed). */
export const VIRTQ_DESC_F_NEXT = 1;
/** The buffer is device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** The buffer contains a table of descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Packed ring only (§2.8.1): set to the driver's wrap counter when made available. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Packed ring only (§2.8.1): set to the inverse of the driver's wrap counter when made available. */
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Split descriptor (`struct virtq_desc`) flag bits. */
export const SplitDescFlags = {
  NEXT: VIRTQ_DESC_F_NEXT,
  WRITE: VIRTQ_DESC_F_WRITE,
  INDIRECT: VIRTQ_DESC_F_INDIRECT,
} as const;

/** Packed descriptor (`struct pvirtq_desc`) flag bits. */
export const PackedDescFlags = {
  NEXT: VIRTQ_DESC_F_NEXT,
  WRITE: VIRTQ_DESC_F_WRITE,
  INDIRECT: VIRTQ_DESC_F_INDIRECT,
  AVAIL: VIRTQ_DESC_F_AVAIL,
  USED: VIRTQ_DESC_F_USED,
} as const;

// ---------------------------------------------------------------------------
// Split ring notification suppression (§2.7.7, §2.7.10)
// ---------------------------------------------------------------------------

/** avail->flags: the driver does not want used-buffer notifications (interrupts). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** used->flags: the device does not want available-buffer notifications (kicks). */
export const VRING_USED_F_NO_NOTIFY = 1;

// ---------------------------------------------------------------------------
// Packed ring event suppression (§2.8.10, §2.8.14)
// ---------------------------------------------------------------------------

export const RING_EVENT_FLAGS_ENABLE = 0x0;
export const RING_EVENT_FLAGS_DISABLE = 0x1;
/** Only valid if VIRTIO_F_RING_EVENT_IDX was negotiated. */
export const RING_EVENT_FLAGS_DESC = 0x2;
/** Bit of the `off_wrap` (desc) field that holds the wrap counter; bits 0..14 are the offset. */
export const VRING_PACKED_EVENT_F_WRAP_CTR = 15;

export const PackedEventFlags = {
  ENABLE: RING_EVENT_FLAGS_ENABLE,
  DISABLE: RING_EVENT_FLAGS_DISABLE,
  DESC: RING_EVENT_FLAGS_DESC,
} as const;

// ---------------------------------------------------------------------------
// Sizes, alignments and field offsets
// ---------------------------------------------------------------------------

/** Largest queue size for either ring format (2^15). */
export const MAX_QUEUE_SIZE = 32768;

/** sizeof(struct virtq_desc): le64 addr, le32 len, le16 flags, le16 next. */
export const SPLIT_DESC_SIZE = 16;
/** sizeof(struct virtq_used_elem): le32 id, le32 len. */
export const SPLIT_USED_ELEM_SIZE = 8;
/** sizeof(struct pvirtq_desc): le64 addr, le32 len, le16 id, le16 flags. */
export const PACKED_DESC_SIZE = 16;
/** sizeof(struct pvirtq_event_suppress): le16 off_wrap, le16 flags. */
export const PACKED_EVENT_SUPPRESS_SIZE = 4;

/** Minimum alignments (bytes) from the §2.7 table. */
export const SPLIT_DESC_ALIGN = 16;
export const SPLIT_AVAIL_ALIGN = 2;
export const SPLIT_USED_ALIGN = 4;
/** Minimum alignments (bytes) from the §2.8 table. */
export const PACKED_DESC_ALIGN = 16;
export const PACKED_EVENT_ALIGN = 4;

/** Field offsets inside `struct virtq_desc`. */
export const SplitDescOffset = { addr: 0, len: 8, flags: 12, next: 14 } as const;
/** Field offsets inside `struct virtq_avail` (ring[] starts at `ring`; used_event follows ring[size]). */
export const AvailOffset = { flags: 0, idx: 2, ring: 4 } as const;
/** Field offsets inside `struct virtq_used` (ring[] starts at `ring`; avail_event follows ring[size]). */
export const UsedOffset = { flags: 0, idx: 2, ring: 4 } as const;
/** Field offsets inside `struct virtq_used_elem`. */
export const UsedElemOffset = { id: 0, len: 4 } as const;
/** Field offsets inside `struct pvirtq_desc`. */
export const PackedDescOffset = { addr: 0, len: 8, id: 12, flags: 14 } as const;
/** Field offsets inside `struct pvirtq_event_suppress`. */
export const EventSuppressOffset = { offWrap: 0, flags: 2 } as const;

/** Bytes of the split descriptor table: 16 * N. */
export function splitDescTableSize(size: number): number {
  return SPLIT_DESC_SIZE * size;
}
/** Bytes of the split available ring: 6 + 2 * N (flags, idx, ring[N], used_event). */
export function splitAvailSize(size: number): number {
  return 6 + 2 * size;
}
/** Bytes of the split used ring: 6 + 8 * N (flags, idx, ring[N], avail_event). */
export function splitUsedSize(size: number): number {
  return 6 + SPLIT_USED_ELEM_SIZE * size;
}
/** Bytes of the packed descriptor ring: 16 * N. */
export function packedDescRingSize(size: number): number {
  return PACKED_DESC_SIZE * size;
}

/** Offset of `used_event` inside the available ring (right after ring[size]). */
export function usedEventOffset(size: number): number {
  return AvailOffset.ring + 2 * size;
}
/** Offset of `avail_event` inside the used ring (right after ring[size]). */
export function availEventOffset(size: number): number {
  return UsedOffset.ring + SPLIT_USED_ELEM_SIZE * size;
}

// ---------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/** Split rings: power of two, 1..32768. */
export function isValidSplitSize(size: number): boolean {
  return isPowerOfTwo(size) && size <= MAX_QUEUE_SIZE;
}

/** Packed rings: any integer 1..32768. */
export function isValidPackedSize(size: number): boolean {
  return Number.isInteger(size) && size >= 1 && size <= MAX_QUEUE_SIZE;
}

/**
 * Round `value` up to a multiple of `align` (a power of two). Uses arithmetic rather
 * than bit operations so it stays exact for addresses above 2^32.
 */
export function alignUp(value: number, align: number): number {
  if (!isPowerOfTwo(align)) throw new RangeError(`alignment ${align} is not a power of two`);
  return Math.ceil(value / align) * align;
}

export function isAligned(value: number, align: number): boolean {
  return value % align === 0;
}

function checkBase(base: number): void {
  if (!Number.isSafeInteger(base) || base < 0) throw new RangeError(`base ${base} is not a non-negative safe integer`);
}

// ---------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------

export interface SplitLayout {
  size: number;
  /** Descriptor table (Descriptor Area), 16-aligned. */
  descAddr: number;
  /** Available ring (Driver Area), 2-aligned. */
  availAddr: number;
  /** Used ring (Device Area), 4-aligned. */
  usedAddr: number;
  /** gpa of used_event (le16 after avail->ring[size]). */
  usedEventAddr: number;
  /** gpa of avail_event (le16 after used->ring[size]). */
  availEventAddr: number;
  /** First byte after the used ring. */
  end: number;
  /** end - base: bytes needed from `base`, including any leading alignment padding. */
  totalBytes: number;
}

/**
 * Contiguous split-ring layout starting at (or after, once aligned) `base`:
 * desc table (16*N, align 16), then avail ring (6+2*N, align 2), then used ring (6+8*N, align 4).
 * `size` must be a power of two in 1..32768.
 */
export function layoutSplit(size: number, base = 0): SplitLayout {
  if (!isValidSplitSize(size)) throw new RangeError(`split queue size ${size} must be a power of two in 1..${MAX_QUEUE_SIZE}`);
  checkBase(base);
  const descAddr = alignUp(base, SPLIT_DESC_ALIGN);
  const availAddr = alignUp(descAddr + splitDescTableSize(size), SPLIT_AVAIL_ALIGN);
  const usedAddr = alignUp(availAddr + splitAvailSize(size), SPLIT_USED_ALIGN);
  const end = usedAddr + splitUsedSize(size);
  return {
    size,
    descAddr,
    availAddr,
    usedAddr,
    usedEventAddr: availAddr + usedEventOffset(size),
    availEventAddr: usedAddr + availEventOffset(size),
    end,
    totalBytes: end - base,
  };
}

export interface PackedLayout {
  size: number;
  /** Descriptor ring (Descriptor Area), 16-aligned. */
  descAddr: number;
  /** Driver Event Suppression (Driver Area): written by the driver, read by the device. 4-aligned. */
  driverEventAddr: number;
  /** Device Event Suppression (Device Area): written by the device, read by the driver. 4-aligned. */
  deviceEventAddr: number;
  end: number;
  totalBytes: number;
}

/**
 * Contiguous packed-ring layout starting at (or after, once aligned) `base`:
 * desc ring (16*N, align 16), then driver event suppression (4, align 4),
 * then device event suppression (4, align 4). `size` is any integer in 1..32768.
 */
export function layoutPacked(size: number, base = 0): PackedLayout {
  if (!isValidPackedSize(size)) throw new RangeError(`packed queue size ${size} must be an integer in 1..${MAX_QUEUE_SIZE}`);
  checkBase(base);
  const descAddr = alignUp(base, PACKED_DESC_ALIGN);
  const driverEventAddr = alignUp(descAddr + packedDescRingSize(size), PACKED_EVENT_ALIGN);
  const deviceEventAddr = alignUp(driverEventAddr + PACKED_EVENT_SUPPRESS_SIZE, PACKED_EVENT_ALIGN);
  const end = deviceEventAddr + PACKED_EVENT_SUPPRESS_SIZE;
  return { size, descAddr, driverEventAddr, deviceEventAddr, end, totalBytes: end - base };
}

// ---------------------------------------------------------------------------
// Event index arithmetic
// ---------------------------------------------------------------------------

/**
 * §2.7.10 / Linux `vring_need_event`: true if `eventIdx` lies in the half-open window
 * (oldIdx, newIdx] — i.e. moving the index from `oldIdx` to `newIdx` crossed the
 * event index. All arithmetic is modulo 2^16.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Build a packed event suppression `off_wrap` value: bits 0..14 offset, bit 15 wrap counter. */
export function packOffWrap(offset: number, wrap: number | boolean): number {
  if (!Number.isInteger(offset) || offset < 0 || offset > 0x7fff) throw new RangeError(`event offset ${offset} does not fit in 15 bits`);
  return offset | ((wrap ? 1 : 0) << VRING_PACKED_EVENT_F_WRAP_CTR);
}

/** Split a packed event suppression `off_wrap` value into offset and wrap counter (0/1). */
export function unpackOffWrap(offWrap: number): { offset: number; wrap: number } {
  return { offset: offWrap & 0x7fff, wrap: (offWrap >> VRING_PACKED_EVENT_F_WRAP_CTR) & 1 };
}
