// An in-process ring loopback: a driver (src/virtio/driver.ts) keeps a queue full of
// chains, the native device side pops and pushes them in bursts. It measures the engine
// together with the TypeScript driver, which dominates the cost: it is a smoke test of
// the data path and a regression yardstick, not a device benchmark (bench/ has those).
import { closeSync } from 'node:fs';
import { GuestMemory, createMemfd } from '../native/guest-memory.js';
import { Virtqueue, type RingLayout } from '../native/virtqueue.js';
import { BumpAllocator, PackedDriver, SplitDriver } from '../virtio/driver.js';

export interface RingBenchOptions {
  layout: RingLayout;
  size: number;
  burst: number;
  packetBytes: number;
  seconds: number;
}

export interface RingBenchResult extends RingBenchOptions {
  chains: number;
  elapsed: number;
  chainsPerSecond: number;
}

export function ringBench(o: RingBenchOptions): RingBenchResult {
  const regionSize = 16 * 1024 * 1024;
  const base = 0x100000;
  const fd = createMemfd('ring-bench', regionSize);
  const mem = GuestMemory.map([{ fd, gpa: BigInt(base), size: BigInt(regionSize), uva: BigInt(base), mmapOffset: 0n }]);
  closeSync(fd);
  try {
    const alloc = new BumpAllocator(base, regionSize);
    const common = { mem: mem.view(0), base, size: o.size, alloc };
    const drv = o.layout === 'split' ? new SplitDriver(common) : new PackedDriver(common);
    const q = new Virtqueue({ layout: o.layout, size: o.size, burst: o.burst });
    q.setFeatures({ eventIdx: true, indirect: true });
    q.setMemory(mem);
    q.setBase(o.layout === 'split' ? 0 : 0x80008000);
    const rings = drv instanceof SplitDriver ? { desc: drv.descAddr, driver: drv.availAddr, device: drv.usedAddr } : { desc: drv.descAddr, driver: drv.driverEventAddr, device: drv.deviceEventAddr };
    q.setRings({ desc: BigInt(rings.desc), driver: BigInt(rings.driver), device: BigInt(rings.device) }, 'gpa');
    // One buffer per slot, reused for the whole run (the allocator never frees).
    const slots = Array.from({ length: o.size }, () => alloc.alloc(o.packetBytes));
    let next = 0;
    const refill = () => {
      while (drv.outstanding < o.size) {
        drv.add([{ len: o.packetBytes, writable: false, addr: slots[next] }]);
        next = (next + 1) % o.size;
      }
      drv.publish();
    };
    let chains = 0;
    const start = process.hrtime.bigint();
    const deadline = start + BigInt(Math.round(o.seconds * 1e9));
    let now = start;
    while (now < deadline) {
      refill();
      for (;;) {
        const n = q.pop();
        if (n <= 0) {
          if (n < 0) throw q.error!;
          break;
        }
        q.pushPopped(n);
        chains += n;
      }
      drv.used();
      now = process.hrtime.bigint();
    }
    const elapsed = Number(now - start) / 1e9;
    q.detach();
    return { ...o, chains, elapsed, chainsPerSecond: chains / elapsed };
  } finally {
    mem.close();
  }
}
