// The frontend's dirty page log (SET_LOG_BASE), mapped for the rings to mark writes in.
import { addon } from '../native/binding.js';

interface RawDirtyLog {
  close(): void;
  mark(gpa: bigint, len: bigint): void;
  lost(): boolean;
}
const raw = addon as { DirtyLog: new (fd: number, size: bigint, offset: bigint) => RawDirtyLog };

export class DirtyLog {
  private constructor(
    /** @internal */ readonly raw: RawDirtyLog,
    readonly size: bigint,
  ) {}

  /** Maps `size` bytes of the log at `offset` of fd (the fd may be closed afterwards). */
  static map(fd: number, size: bigint, offset: bigint): DirtyLog {
    return new DirtyLog(new raw.DirtyLog(fd, size, offset), size);
  }

  /** Marks the pages of [gpa, gpa+len) dirty (writes a device makes outside a ring push). */
  mark(gpa: bigint, len: number): void {
    this.raw.mark(gpa, BigInt(len));
  }

  /** The frontend truncated the log's file under the mapping (the SIGBUS guard kept us alive). */
  get lost(): boolean {
    return this.raw.lost();
  }

  close(): void {
    this.raw.close();
  }
}
