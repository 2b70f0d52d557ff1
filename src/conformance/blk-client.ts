// Driver-side virtio-blk requests (virtio 1.2 §5.2.6) over a FrontendQueue: a header
// { le32 type; le32 reserved; le64 sector }, the data buffers, and a status byte the
// device writes. For tests, benchmarks and conformance checks of any vhost-user-blk backend.
import type { FrontendQueue } from '../vhost-user/frontend.js';

export const BlkReqType = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13 } as const;
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
export const SECTOR = 512;

function header(type: number, sector: bigint): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  v.setBigUint64(8, sector, true);
  return b;
}

export interface BlkResult {
  status: number;
  /** bytes the device reported writing (used len) */
  len: number;
  /** IN / GET_ID: the data read */
  data?: Uint8Array;
}

export class BlkClient {
  constructor(readonly q: FrontendQueue) {}

  /** Queues one request without waiting; returns its chain id. */
  submit(type: number, sector: bigint, o: { data?: Uint8Array; readLen?: number; indirect?: boolean } = {}): number {
    const segs = [{ len: 16, writable: false, data: header(type, sector) }];
    if (o.data) segs.push({ len: o.data.length, writable: false, data: o.data });
    if (o.readLen) segs.push({ len: o.readLen, writable: true } as (typeof segs)[0]);
    segs.push({ len: 1, writable: true, data: Uint8Array.of(0xff) } as (typeof segs)[0]);
    return this.q.driver.add(segs, { indirect: o.indirect });
  }

  /** Reads back what the device wrote for a completed chain. */
  result(id: number, len: number, readLen = 0): BlkResult {
    const bufs = this.q.driver.chainBuffers(id);
    const status = this.q.driver.read(bufs[bufs.length - 1].addr, 1)[0];
    const r: BlkResult = { status, len };
    if (readLen) {
      const d = bufs.find((b) => b.writable && b.len === readLen && b !== bufs[bufs.length - 1]);
      if (d) r.data = this.q.driver.read(d.addr, readLen);
    }
    return r;
  }

  async request(type: number, sector: bigint, o: { data?: Uint8Array; readLen?: number; indirect?: boolean; timeoutMs?: number } = {}): Promise<BlkResult> {
    const id = this.submit(type, sector, o);
    this.q.publishAndKick();
    const used = await this.q.waitUsed(1, o.timeoutMs ?? 5000);
    if (used[0].id !== id) throw new Error(`completed chain ${used[0].id}, expected ${id}`);
    return this.result(id, used[0].len, o.readLen ?? 0);
  }

  write(sector: bigint, data: Uint8Array): Promise<BlkResult> {
    return this.request(BlkReqType.OUT, sector, { data });
  }

  read(sector: bigint, len: number): Promise<BlkResult> {
    return this.request(BlkReqType.IN, sector, { readLen: len });
  }

  flush(): Promise<BlkResult> {
    return this.request(BlkReqType.FLUSH, 0n);
  }
}
