// A disk ready to serve: the backend (file or RAM), its native engine and the virtio-blk
// device, with the engine's limits matching what the config space announces.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { BlkEngine, type BlkEngineKind } from '../../native/blk.js';
import { log } from '../../log.js';
import { lockImage } from '../../native/unix-socket.js';
import { BlkDevice, type BlkDeviceOptions } from './device.js';

export interface DiskOptions extends BlkDeviceOptions {
  /** a raw image file or block device */
  file?: string;
  /** a RAM disk of this many bytes (a multiple of 512) */
  ramBytes?: number | bigint;
  readOnly?: boolean;
  /** open the file with O_DIRECT */
  direct?: boolean;
  /**
   * Let other disks (of this process or another) serve the same image at the same time if
   * they are shared too: the source and destination of a live migration, each with its own
   * socket. Only one guest may write it at a time; that is the user's to ensure, as with
   * QEMU's share-rw. Default: an exclusive lock, a second server is refused.
   */
  shared?: boolean;
  /**
   * 'raw': the image is raw whatever its first bytes say (a guest may write a qcow2 header
   * at the start of its own disk). Default: an image that starts like qcow2, QED, VMDK, VDI
   * or VHDX is refused, with the qemu-img line to convert it.
   */
  format?: 'raw';
  /** GET_ID answer (up to 20 bytes) */
  serial?: string;
  /** I/O threads (default 2) */
  threads?: number;
  /**
   * 'threads' or 'io_uring' (see BlkEngineKind); default 'auto': io_uring where the kernel
   * allows it, else threads (logged with the reason). 'io_uring' where it is refused throws.
   */
  engine?: BlkEngineKind | 'auto';
}

export interface Disk {
  engine: BlkEngine;
  device: BlkDevice;
  /** bytes (the current capacity) */
  readonly size: bigint;
  /** Grows the disk (or re-reads a file's size with no argument): see BlkDevice.resize. */
  resize(bytes?: bigint): { oldBytes: bigint; newBytes: bigint };
  close(): void;
}

/** Parses "1G", "512M", "4096" (bytes) into bytes. */
export function parseSize(s: string): bigint {
  const m = /^(\d+)([KMGT]i?B?)?$/i.exec(s.trim());
  if (!m) throw new Error(`size ${s}: expected a number with an optional K, M, G or T suffix`);
  const unit = (m[2] ?? '').toUpperCase()[0];
  const mult = unit === 'K' ? 1n << 10n : unit === 'M' ? 1n << 20n : unit === 'G' ? 1n << 30n : unit === 'T' ? 1n << 40n : 1n;
  return BigInt(m[1]) * mult;
}

/** Image formats QEMU writes, by the magic at their start: vhostkit serves raw bytes only. */
const FORMATS: Array<[string, Buffer]> = [
  ['qcow2', Buffer.from('QFI\xfb', 'latin1')],
  ['QED', Buffer.from('QED\0', 'latin1')],
  ['VMDK', Buffer.from('KDMV', 'latin1')],
  ['VDI', Buffer.from('<<< ', 'latin1')],
  ['VHDX', Buffer.from('vhdxfile', 'latin1')],
];

/** The format an image file starts like (qcow2, VMDK...), or null for anything else (raw). */
export function imageFormat(file: string): string | null {
  const fd = openSync(file, constants.O_RDONLY);
  try {
    if (!fstatSync(fd).isFile()) return null;
    const head = Buffer.alloc(8);
    const n = readSync(fd, head, 0, 8, 0);
    for (const [name, magic] of FORMATS) if (n >= magic.length && head.subarray(0, magic.length).equals(magic)) return name;
    return null;
  } finally {
    closeSync(fd);
  }
}

/**
 * What would keep `file` from being served (missing, unreadable or unwritable, not a file or
 * block device, not raw, empty or not a whole number of sectors), or null if nothing.
 */
export function checkImage(file: string, readOnly = false, format?: 'raw'): string | null {
  let fd: number;
  try {
    fd = openSync(file, readOnly ? constants.O_RDONLY : constants.O_RDWR);
  } catch (e) {
    return `${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}${(e as NodeJS.ErrnoException).code === 'ENOENT' ? ' (no such image)' : ''}`;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) return `${file}: not a regular file or block device`;
    const found = format === 'raw' ? null : imageFormat(file);
    if (found)
      return `${file} is a ${found} image, and vhostkit serves raw images only: convert it with  qemu-img convert -O raw ${file} ${file.replace(/\.[^./]*$/, '')}.raw (or, if it is a raw disk whose guest wrote that header, declare format=raw)`;
    if (st.isFile() && (st.size === 0 || st.size % 512 !== 0)) return `${file}: ${st.size} bytes, expected a positive multiple of 512 (truncate -s SIZE)`;
    return null;
  } finally {
    closeSync(fd);
  }
}

export function openDisk(o: DiskOptions): Disk {
  const limits = { maxDiscardSectors: 32768, maxDiscardSeg: 1, maxWriteZeroesSectors: 32768, maxWriteZeroesSeg: 1 };
  let engine: BlkEngine;
  if (o.ramBytes !== undefined) {
    const bytes = BigInt(o.ramBytes);
    if (bytes <= 0n || bytes % 512n !== 0n) throw new Error(`RAM disk of ${bytes} bytes: must be a positive multiple of 512`);
    engine = BlkEngine.inRam(bytes / 512n, { readOnly: o.readOnly, serial: o.serial, threads: o.threads, engine: o.engine, ...limits });
  } else if (o.file) {
    const flags = (o.readOnly ? constants.O_RDONLY : constants.O_RDWR) | (o.direct ? constants.O_DIRECT : 0);
    const fd = openSync(o.file, flags);
    try {
      // One server per image, or only shared ones (a migration's source and destination): the
      // lock lives as long as the engine's duplicate of the fd.
      if (!lockImage(fd, o.shared === true)) {
        throw new Error(
          `${o.file} is in use: another disk or process serves this image${o.shared ? ' without `shared`' : ''} (it holds the lock)` +
            (o.shared ? '' : '; give both disks `shared` to serve it twice, as the two ends of a live migration do'),
        );
      }
      // A qcow2 (or other formatted) image served as raw bytes would hand the guest the
      // format's metadata, and its writes would corrupt the image.
      if (o.format !== 'raw' && imageFormat(o.file)) throw new Error(checkImage(o.file, true) ?? `${o.file}: not a raw image`);
      engine = BlkEngine.forFile(fd, { readOnly: o.readOnly, serial: o.serial, threads: o.threads, engine: o.engine, direct: o.direct, ...limits });
    } finally {
      closeSync(fd); // the engine keeps its own duplicate
    }
  } else {
    throw new Error('a disk needs a file or a RAM size');
  }
  if (engine.engineNote) log.warn('blk: io_uring is not available here, using the thread pool', { disk: o.file ?? 'ram', why: engine.engineNote });
  let device: BlkDevice;
  try {
    device = new BlkDevice(engine, o);
  } catch (e) {
    engine.close(); // options the device refuses (queues, in-flight cap): no engine threads left behind
    throw e;
  }
  return {
    engine,
    device,
    get size() {
      return engine.capacitySectors * 512n;
    },
    resize: (bytes?: bigint) => device.resize(bytes),
    close: () => engine.close(),
  };
}
