// Ring snapshots for `vhostkit trace --rings`: the proxy maps the guest memory the frontend
// shares (the fds of SET_MEM_TABLE / ADD_MEM_REG, mapped shared and read only by us) and
// reads each started ring's indices where SET_VRING_ADDR says the rings are, in frontend
// addresses: split rings (virtio 1.2 §2.7) avail->flags/idx, used->flags/idx and, with
// EVENT_IDX, used_event and avail_event; packed rings (§2.8) keep no index in memory, so
// their driver and device event suppression areas (§2.8.10) are what is read.
import { GuestMemory, type RegionSpec } from '../native/guest-memory.js';
import type { MemRegion } from '../vhost-user/protocol.js';
import type { RingSnapshot, SessionState } from './decode.js';

export class RingReader {
  private mem: GuestMemory | null = null;

  /** SET_MEM_TABLE: maps `fds` (one per region; the caller keeps and closes them). */
  setTable(regions: MemRegion[], fds: number[]): void {
    const specs: RegionSpec[] = regions.map((r, i) => ({ fd: fds[i], ...r }));
    const next = GuestMemory.map(specs);
    this.mem?.close();
    this.mem = next;
  }

  /** ADD_MEM_REG. */
  addRegion(r: MemRegion, fd: number): void {
    const spec = { fd, ...r };
    const next = this.mem === null ? GuestMemory.map([spec]) : this.mem.withRegion(spec);
    this.mem?.close();
    this.mem = next;
  }

  /** REM_MEM_REG. */
  removeRegion(r: MemRegion): void {
    if (this.mem === null) return;
    const next = this.mem.withoutRegion(r.gpa, r.size, r.uva);
    this.mem.close();
    this.mem = next;
  }

  get mapped(): boolean {
    return this.mem !== null;
  }

  private u16(uva: bigint): number | null {
    const t = this.mem!.translateUva(uva, 2);
    if (t === null) return null;
    const v = this.mem!.view(t.region);
    return v[t.offset] | (v[t.offset + 1] << 8);
  }

  /** The indices of every started ring of `state`. */
  snapshot(state: SessionState): RingSnapshot[] {
    const out: RingSnapshot[] = [];
    const queues = [...state.queues.values()].filter((q) => q.started).sort((a, b) => a.index - b.index);
    for (const q of queues) {
      const layout = state.packed ? 'packed' : 'split';
      const size = q.size ?? 0;
      if (this.mem === null || q.addr === undefined || size === 0) {
        out.push({ index: q.index, layout, size, error: this.mem === null ? 'no memory table' : 'no ring address' });
        continue;
      }
      const { avail, used } = q.addr;
      if (layout === 'split') {
        const r: RingSnapshot = { index: q.index, layout, size };
        const fields: Array<[keyof RingSnapshot, bigint]> = [
          ['availFlags', avail],
          ['avail', avail + 2n],
          ['usedFlags', used],
          ['used', used + 2n],
        ];
        if (state.eventIdx) fields.push(['usedEvent', avail + 4n + 2n * BigInt(size)], ['availEvent', used + 4n + 8n * BigInt(size)]);
        for (const [k, at] of fields) {
          const v = this.u16(at);
          if (v === null) {
            r.error = `ring address 0x${at.toString(16)} is not in guest memory`;
            break;
          }
          (r as unknown as Record<string, number>)[k] = v;
        }
        out.push(r);
      } else {
        const ev = (at: bigint) => {
          const offWrap = this.u16(at);
          const flags = this.u16(at + 2n);
          return offWrap === null || flags === null ? undefined : { offWrap, flags };
        };
        const driverEvent = ev(avail);
        const deviceEvent = ev(used);
        out.push(driverEvent && deviceEvent ? { index: q.index, layout, size, driverEvent, deviceEvent } : { index: q.index, layout, size, error: 'event areas not in guest memory' });
      }
    }
    return out;
  }

  close(): void {
    this.mem?.close();
    this.mem = null;
  }
}
