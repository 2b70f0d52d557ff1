// A disk ready to serve: the backend (file or RAM), its native engine and the virtio-blk
// device, with the engine's limits matching what the config space announces.
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { BlkEngine } from '../../native/blk.js';
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
  /** GET_ID answer (up to 20 bytes) */
  serial?: string;
  /** I/O threads (default 2) */
  threads?: number;
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

export function openDisk(o: DiskOptions): Disk {
  const limits = { maxDiscardSectors: 32768, maxDiscardSeg: 1, maxWriteZeroesSectors: 32768, maxWriteZeroesSeg: 1 };
  let engine: BlkEngine;
  if (o.ramBytes !== undefined) {
    const bytes = BigInt(o.ramBytes);
    if (bytes <= 0n || bytes % 512n !== 0n) throw new Error(`RAM disk of ${bytes} bytes: must be a positive multiple of 512`);
    engine = BlkEngine.inRam(bytes / 512n, { readOnly: o.readOnly, serial: o.serial, threads: o.threads, ...limits });
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
      engine = BlkEngine.forFile(fd, { readOnly: o.readOnly, serial: o.serial, threads: o.threads, direct: o.direct, ...limits });
      void fstatSync(fd);
    } finally {
      closeSync(fd); // the engine keeps its own duplicate
    }
  } else {
    throw new Error('a disk needs a file or a RAM size');
  }
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
