// Socket files we create: mode 0600 unless told otherwise, an optional group, never
// following a symlink, never replacing anything but a stale socket.
import { chmodSync, lchownSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

/** A group name or numeric gid -> gid (names from /etc/group). */
export function resolveGroup(g: string | number): number {
  if (typeof g === 'number' || /^\d+$/.test(g)) return Number(g);
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    // no group file: only numeric gids
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === g && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new Error(`socket group ${g}: no such group`);
}

/**
 * Binds through `bind` with a umask that leaves the new socket file 0600 (no window in
 * which it is more open), then gives it `mode` and `gid` if asked: lstat first, so a
 * path swapped for a symlink or anything but our socket is refused, not followed.
 * Returns the socket file's inode (to remove only our own file later).
 */
export function bindSocketFile<T>(path: string, bind: () => T, mode = 0o600, gid?: number, undo?: (result: T) => void): { result: T; ino: number } {
  let result: T;
  if (isMainThread) {
    const old = process.umask(0o177);
    try {
      result = bind();
    } finally {
      process.umask(old);
    }
  } else {
    result = bind(); // workers cannot set the umask: the mode below closes it right after
    mode = mode === 0o600 ? 0o600 | 0o1000 : mode; // force the chmod
  }
  try {
    const st = lstatSync(path);
    if (!st.isSocket()) throw new Error(`${path} is not the socket just bound (replaced?); refusing to change its mode`);
    if (gid !== undefined) lchownSync(path, -1, gid);
    if (mode !== 0o600) chmodSync(path, mode & 0o777);
    return { result, ino: st.ino };
  } catch (e) {
    undo?.(result); // the listening socket is not kept
    throw e;
  }
}

/** Removes the socket file if it is still the one we bound (same inode, still a socket). */
export function removeSocketFile(path: string, ino: number): void {
  try {
    const st = lstatSync(path);
    if (st.isSocket() && st.ino === ino) unlinkSync(path);
  } catch {
    // already gone
  }
}
