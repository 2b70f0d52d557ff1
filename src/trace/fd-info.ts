// What a file descriptor that came with a vhost-user message is: a memfd (guest memory, the
// dirty log, the inflight area) with its name and size, an eventfd (kick, call, err) with
// its counter, a socket (the backend request channel), a plain file, or another anonymous
// inode (userfaultfd). Read from /proc/self/fd and /proc/self/fdinfo, and fstat.
import { fstatSync, readFileSync, readlinkSync } from 'node:fs';

export type FdKind = 'memfd' | 'eventfd' | 'socket' | 'file' | 'anon' | 'other';

export interface FdInfo {
  kind: FdKind;
  /** memfd name, file path, or the anonymous inode's type (e.g. "userfaultfd") */
  name?: string;
  /** bytes (memfd and files) */
  size?: number;
  /** device and inode: the same object passed twice has the same pair */
  dev: number;
  ino: number;
  /** eventfd counter when the fd was passed */
  count?: number;
  /** set when the fd could not be examined */
  error?: string;
}

/** Describes an open fd of this process (never throws: an fd it cannot examine says why). */
export function describeFd(fd: number): FdInfo {
  let target = '';
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    return { kind: 'other', dev: 0, ino: 0, error: (e as Error).message };
  }
  let st;
  try {
    st = fstatSync(fd);
  } catch (e) {
    return { kind: 'other', name: target, dev: 0, ino: 0, error: (e as Error).message };
  }
  const base = { dev: st.dev, ino: st.ino };
  const memfd = /^\/memfd:(.*?)(?: \(deleted\))?$/.exec(target);
  if (memfd) return { kind: 'memfd', name: memfd[1], size: st.size, ...base };
  if (target === 'anon_inode:[eventfd]') {
    const count = /^eventfd-count:\s*([0-9a-f]+)/m.exec(fdinfo(fd));
    return { kind: 'eventfd', ...base, ...(count ? { count: parseInt(count[1], 16) } : {}) };
  }
  if (st.isSocket()) return { kind: 'socket', ...base };
  if (st.isFile()) return { kind: 'file', name: target.replace(/ \(deleted\)$/, ''), size: st.size, ...base };
  const anon = /^anon_inode:\[?([^\]]*)\]?$/.exec(target);
  if (anon) return { kind: 'anon', name: anon[1], ...base };
  return { kind: 'other', name: target, ...base };
}

function fdinfo(fd: number): string {
  try {
    return readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch {
    return ''; // gone already: the description goes without the counter
  }
}

/** 268435456 -> "256 MiB", 4096 -> "4 KiB", 100 -> "100 B". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = n;
  while (v >= 1024 && u < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    u++;
  }
  return `${v} ${units[u]}`;
}

/** One fd for people: `memfd "memory-backend-memfd" 256 MiB`, `eventfd (count 0)`, `socket`. */
export function formatFd(f: FdInfo): string {
  const parts: string[] = [f.kind];
  if (f.name !== undefined) parts.push(JSON.stringify(f.name));
  if (f.size !== undefined) parts.push(formatBytes(f.size));
  if (f.count !== undefined && f.count !== 0) parts.push(`(count ${f.count})`);
  if (f.error !== undefined) parts.push(`(${f.error})`);
  return parts.join(' ');
}
