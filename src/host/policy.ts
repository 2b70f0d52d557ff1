// What a management-API client may make vhostkit touch on the host. The configuration file
// and the command line are the operator's: what they name is served as named. A request
// through the API is anyone's who can reach it, so the files it names are held to the
// directories the configuration allows, and checked for what they really are (symlinks
// followed, `..` resolved) before anything is opened.
import { realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, relative, resolve } from 'node:path';
import { HostError } from './host.js';

export interface AccessPolicyOptions {
  /** where `capture start` may write pcap files; none: captures through the API are off */
  captureDir?: string | null;
  /** directories whose image files disks added through the API may serve; none: file disks through the API are off */
  imageDirs?: readonly string[];
  /** disks added through the API may serve block devices (inside imageDirs) */
  allowBlockDevices?: boolean;
  /** directories where ports and disks added through the API may create their vhost-user sockets; none: such sockets are refused */
  socketDirs?: readonly string[];
  /** TAP and VXLAN ports may be added through the API (they reach host interfaces and UDP ports) */
  allowHostPorts?: boolean;
}

/** Whether `path` (real, absolute) is `dir` or inside it. */
function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

function real(path: string, what: string): string {
  try {
    return realpathSync(path);
  } catch (e) {
    throw new HostError(400, `${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export class AccessPolicy {
  readonly captureDir: string | null;
  readonly imageDirs: readonly string[];
  readonly allowBlockDevices: boolean;
  readonly socketDirs: readonly string[];
  readonly allowHostPorts: boolean;

  constructor(o: AccessPolicyOptions = {}) {
    this.captureDir = o.captureDir ? resolve(o.captureDir) : null;
    this.imageDirs = (o.imageDirs ?? []).map((d) => resolve(d));
    this.allowBlockDevices = o.allowBlockDevices === true;
    this.socketDirs = (o.socketDirs ?? []).map((d) => resolve(d));
    this.allowHostPorts = o.allowHostPorts === true;
  }

  /**
   * Checks the socket path a port or disk added through the API would create or connect
   * to: its directory, symlinks resolved, must be one of the socket directories (not below
   * one: a socket directory is where the operator expects vhost-user sockets). Returns the
   * path with that directory resolved.
   */
  socket(path: string, what: string): string {
    if (this.socketDirs.length === 0) throw new HostError(403, `${what} socket ${path}: sockets through the API are off: start vhostkit run with --socket-dir DIR (socketDirs in the configuration)`);
    const parent = real(dirname(resolve(path)), `${what} socket directory`);
    const dirs = this.socketDirs.map((d) => {
      try {
        return realpathSync(d);
      } catch {
        return d;
      }
    });
    if (!dirs.includes(parent)) throw new HostError(403, `${what} socket ${path}: not in a socket directory (${dirs.join(', ')})`);
    return resolve(parent, basename(path));
  }

  /** Checks that a TAP or VXLAN port may be added through the API. */
  hostPort(kind: 'tap' | 'vxlan', name: string): void {
    if (!this.allowHostPorts) throw new HostError(403, `${kind} port ${name}: TAP and VXLAN ports through the API are off (--allow-host-ports, allowHostPorts in the configuration)`);
  }

  /**
   * The path a capture through the API writes: `file` (absolute, or relative to the capture
   * directory) must lie in the capture directory once its directory's symlinks are resolved.
   * The file itself is then created with O_EXCL | O_NOFOLLOW (capture.ts): never an
   * existing file, never through a symlink.
   */
  captureFile(file: string): string {
    if (!this.captureDir) throw new HostError(403, 'captures through the API are off: start vhostkit run with --capture-dir DIR (captureDir in the configuration)');
    const dir = real(this.captureDir, 'capture directory');
    const want = resolve(dir, file);
    const parent = real(dirname(want), 'capture file directory');
    const path = resolve(parent, basename(want));
    if (!inside(dir, parent) || path === dir) throw new HostError(403, `capture file ${file}: outside the capture directory ${dir}`);
    return path;
  }

  /** Checks an image a disk added through the API would serve; returns its real path. */
  image(file: string): string {
    if (this.imageDirs.length === 0)
      throw new HostError(403, `disk image ${file}: disks with a file are off through the API: start vhostkit run with --image-dir DIR (imageDirs in the configuration)`);
    const path = real(file, 'disk image');
    const dirs = this.imageDirs.map((d) => {
      try {
        return realpathSync(d);
      } catch {
        return d;
      }
    });
    if (!dirs.some((d) => inside(d, path) && d !== path)) throw new HostError(403, `disk image ${file}: not under an image directory (${dirs.join(', ')})`);
    const st = statSync(path);
    if (st.isBlockDevice()) {
      if (!this.allowBlockDevices) throw new HostError(403, `disk image ${file}: a block device, and block devices are off through the API (--allow-block-devices, allowBlockDevices)`);
    } else if (!st.isFile()) {
      throw new HostError(403, `disk image ${file}: not a regular file or block device`);
    }
    return path;
  }
}
