// Ring position records: a file per vhost-user socket that outlives the backend process,
// so a packed-ring net port survives `kill -9`.
//
// After its backend died, QEMU (7.2, and later versions for net) cannot restore a packed
// ring's position: it has no GET_VRING_BASE answer, finds nothing to read back in guest
// memory (unlike a split ring's used index), and sends the SET_VRING_BASE of the last
// start again. The restarted backend would look for descriptors where the driver made
// them available long ago and wait forever. vhost-user's inflight area (GET_INFLIGHT_FD)
// would carry the position, but QEMU only offers it to vhost-user-blk (and friends), not
// to net. So the backend keeps the position itself: each packed queue's record (native
// PackedRing: the used position, written once per push burst, with a write-ahead of the
// burst) lives in this file, mapped shared, keyed by the socket path QEMU reconnects to.
import { closeSync, ftruncateSync, fstatSync, mkdirSync, openSync, unlinkSync, constants as fsc } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GuestMemory } from '../native/guest-memory.js';
import { ringRecordBytes } from '../native/virtqueue.js';
import { MAX_QUEUE_SIZE } from './session.js';

/** Bytes reserved per queue: a record for the largest queue, page-aligned (the file is sparse). */
export function ringRecordStride(): number {
  return Math.ceil(ringRecordBytes(MAX_QUEUE_SIZE) / 4096) * 4096; // a function: session.ts imports this module
}

/**
 * Where `vhostkit run` and `vhostkit switch` keep ring records unless told otherwise:
 * /run/vhostkit for root, else $XDG_RUNTIME_DIR/vhostkit, else <tmpdir>/vhostkit-<uid>.
 */
export function defaultStateDir(): string {
  const uid = process.getuid?.() ?? -1;
  if (uid === 0) return '/run/vhostkit';
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'vhostkit');
  return join(tmpdir(), `vhostkit-${uid}`);
}

/** The record file of the vhost-user socket `socket` inside `stateDir`. */
export function ringRecordPath(stateDir: string, socket: string): string {
  return join(stateDir, `${encodeURIComponent(resolve(socket))}.rings`);
}

/** The mapped record file of one session: one area per queue. */
export class RingRecordFile {
  private constructor(
    readonly path: string,
    readonly memory: GuestMemory,
    readonly numQueues: number,
  ) {}

  /** Opens (or creates, mode 0600, its directory 0700) and maps the file for `numQueues` queues. */
  static open(path: string, numQueues: number): RingRecordFile {
    mkdirSync(resolve(path, '..'), { recursive: true, mode: 0o700 });
    const fd = openSync(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error(`${path} is not a regular file`);
      const size = numQueues * ringRecordStride();
      if (st.size < size) ftruncateSync(fd, size); // sparse: a page per queue in use
      const memory = GuestMemory.map([{ fd, gpa: 0n, size: BigInt(size), uva: 0n, mmapOffset: 0n }]);
      return new RingRecordFile(path, memory, numQueues);
    } finally {
      closeSync(fd); // the mapping keeps the file
    }
  }

  /** Queue `index`'s area: offset and length inside `memory`. */
  area(index: number): { offset: number; len: number } {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) throw new RangeError(`ring record: queue ${index} of ${this.numQueues}`);
    const stride = ringRecordStride();
    return { offset: index * stride, len: stride };
  }

  close(): void {
    this.memory.close();
  }

  /** Removes the file (nothing left to restart from). */
  static remove(path: string): void {
    try {
      unlinkSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
}
