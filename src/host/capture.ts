// A port's capture written to a pcap file (the classic libpcap format: tcpdump -r and
// Wireshark read it). The data plane builds the per-packet records; this writes the file
// header once and appends record buffers as they come.
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import type { Switch } from '../switch/switch.js';
import type { CaptureSpec } from '../switch/capture.js';

export type CaptureOptions = CaptureSpec;

export interface CaptureInfo {
  port: string;
  file: string;
  snaplen: number;
  /** frames written so far */
  packets: number;
  /** stop after this many (0: no limit) */
  count: number;
  running: boolean;
}

const LINKTYPE_ETHERNET = 1;

/** The 24-byte pcap file header (microsecond timestamps, little endian). */
export function pcapHeader(snaplen: number): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(0xa1b2c3d4, 0);
  h.writeUInt16LE(2, 4);
  h.writeUInt16LE(4, 6);
  h.writeInt32LE(0, 8);
  h.writeUInt32LE(0, 12);
  h.writeUInt32LE(snaplen, 16);
  h.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  return h;
}

export class Capture {
  private fd: number;
  private packets = 0;
  private running = true;
  private readonly finished: Promise<void>;
  private finish!: () => void;

  private constructor(
    private readonly sw: Switch,
    readonly port: string,
    readonly file: string,
    private readonly snaplen: number,
    private readonly count: number,
    private readonly onDone: () => void,
  ) {
    // Always a new file: never one that exists (it is not ours to overwrite), never through a symlink.
    this.fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    writeSync(this.fd, pcapHeader(snaplen));
    this.finished = new Promise((r) => (this.finish = r));
  }

  static async start(sw: Switch, port: string, file: string, opts: CaptureOptions, onDone: () => void): Promise<Capture> {
    const snaplen = Math.max(64, Math.min(opts.snaplen ?? 65535, 65535));
    const c = new Capture(sw, port, file, snaplen, opts.count ?? 0, onDone);
    try {
      await sw.startCapture(port, { snaplen, count: opts.count }, (records, packets, done) => c.write(records, packets, done));
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  private write(records: Uint8Array, packets: number, done: boolean): void {
    if (this.fd >= 0 && records.length > 0) {
      let at = 0;
      while (at < records.length) at += writeSync(this.fd, records, at, records.length - at);
      this.packets += packets;
    }
    if (done) this.close();
  }

  private close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    if (this.running) {
      this.running = false;
      this.onDone();
      this.finish();
    }
  }

  /** Stops capturing; resolves once the last records are in the file and it is closed. */
  async stop(): Promise<void> {
    if (!this.running) return;
    await this.sw.stopCapture(this.port).catch(() => this.close()); // the port may be gone: close anyway
    await this.finished;
  }

  /** Resolves when the capture ends (count reached or stopped). */
  done(): Promise<void> {
    return this.finished;
  }

  info(): CaptureInfo {
    return { port: this.port, file: this.file, snaplen: this.snaplen, packets: this.packets, count: this.count, running: this.running };
  }
}
