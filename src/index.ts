// Public API of vhostkit.
export { GuestMemory, MAX_REGIONS, createMemfd } from './native/guest-memory.js';
export type { RegionSpec, RegionInfo, Translation } from './native/guest-memory.js';
export { Virtqueue, VringError, VringErrorCode, MAX_CHAIN_SEGS } from './native/virtqueue.js';
export type { BurstArrays, RingLayout, VirtqueueOptions, VringErrorName } from './native/virtqueue.js';
