// Public API of vhostkit.
export { GuestMemory, MAX_REGIONS, createMemfd } from './native/guest-memory.js';
export type { RegionSpec, RegionInfo, Translation } from './native/guest-memory.js';
export { Virtqueue, VringError, VringErrorCode, MAX_CHAIN_SEGS } from './native/virtqueue.js';
export type { BurstArrays, RingLayout, VirtqueueOptions, VringErrorName } from './native/virtqueue.js';
export { EventFd } from './native/eventfd.js';
export { FdWatcher } from './native/unix-socket.js';
export { VhostUserBackend, prepareSocketPath } from './vhost-user/backend.js';
export type { BackendOptions } from './vhost-user/backend.js';
export { Session, SESSION_PROTOCOL_FEATURES } from './vhost-user/session.js';
export type { VhostUserDevice, QueueContext } from './vhost-user/device.js';
export { VhostUserFrontend, FrontendQueue } from './vhost-user/frontend.js';
export { probe, formatProbe } from './vhost-user/probe.js';
export { Logger, log, setLogSink, setLogLevel } from './log.js';
export type { LogRecord, LogSink, Level } from './log.js';
