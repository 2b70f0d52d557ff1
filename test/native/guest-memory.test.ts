import { expect } from 'chai';
import { closeSync, readdirSync } from 'node:fs';
import { GuestMemory, MAX_REGIONS, createMemfd, type RegionSpec } from '../../src/native/guest-memory.js';

const MiB = 1024 * 1024;

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

function region(fd: number, gpa: number | bigint, size: number | bigint, uva?: bigint, mmapOffset = 0n): RegionSpec {
  return { fd, gpa: BigInt(gpa), size: BigInt(size), uva: uva ?? 0x7f0000000000n + BigInt(gpa), mmapOffset };
}

describe('GuestMemory (native memory table)', () => {
  it('maps a memfd region and translates guest-physical addresses in bounds', () => {
    const fd = createMemfd('t', MiB);
    const mem = GuestMemory.map([region(fd, 0x100000, MiB)]);
    closeSync(fd); // the mapping does not need the fd
    expect(mem.translate(0x100000n, 16)).to.deep.equal({ region: 0, offset: 0, contiguous: 16 });
    expect(mem.translate(0x100000n + BigInt(MiB) - 1n, 1)).to.deep.equal({ region: 0, offset: MiB - 1, contiguous: 1 });
    expect(mem.translate(0x100000n + BigInt(MiB) - 1n, 2), 'one byte past the end').to.equal(null);
    expect(mem.translate(0xfffffn, 1), 'one byte before').to.equal(null);
    expect(mem.translate(0xffffffffffffffffn, 2), 'u64 wrap').to.equal(null);
    mem.write(0x100010n, Uint8Array.of(1, 2, 3));
    expect(Array.from(mem.view(0).subarray(0x10, 0x13))).to.deep.equal([1, 2, 3]);
    expect(Array.from(mem.read(0x100010n, 3))).to.deep.equal([1, 2, 3]);
    mem.close();
  });

  it('sees the same bytes through two tables mapping one memfd (shared mapping)', () => {
    const fd = createMemfd('t', MiB);
    const a = GuestMemory.map([region(fd, 0, MiB)]);
    const b = GuestMemory.map([region(fd, 0x40000000, MiB - 4096, undefined, 4096n)]);
    closeSync(fd);
    a.write(4096n + 7n, Uint8Array.of(0xab));
    expect(b.read(0x40000000n + 7n, 1)[0]).to.equal(0xab);
    a.close();
    b.close();
  });

  it('splits a range across adjacent regions and refuses one with a hole', () => {
    const f1 = createMemfd('a', MiB);
    const f2 = createMemfd('b', MiB);
    const mem = GuestMemory.map([region(f1, 0, MiB), region(f2, MiB, MiB, 0x600000000000n)]);
    const t = mem.translate(BigInt(MiB - 8), 16);
    expect(t).to.deep.equal({ region: 0, offset: MiB - 8, contiguous: 8 });
    mem.write(BigInt(MiB - 4), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    expect(Array.from(mem.read(BigInt(MiB - 4), 8))).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(Array.from(mem.view(1).subarray(0, 4))).to.deep.equal([5, 6, 7, 8]);
    const holey = GuestMemory.map([region(f1, 0, MiB), region(f2, MiB + 4096, MiB, 0x600000000000n)]);
    expect(holey.translate(BigInt(MiB - 8), 16)).to.equal(null);
    closeSync(f1);
    closeSync(f2);
    mem.close();
    holey.close();
  });

  it('refuses regions past the end of the file (would SIGBUS), overlapping, wrapping or too many', () => {
    const fd = createMemfd('t', MiB);
    const bad = (regions: RegionSpec[], code: string, re: RegExp) => {
      let err: (Error & { code?: string }) | undefined;
      try {
        GuestMemory.map(regions).close();
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err, `expected ${code}`).to.be.instanceOf(Error);
      expect(err!.code).to.equal(code);
      expect(err!.message).to.match(re);
    };
    bad([region(fd, 0, 2 * MiB)], 'REGION_MAP', /needs 2097152 bytes of its fd, the file has 1048576/);
    bad([region(fd, 0, MiB, undefined, 4096n)], 'REGION_MAP', /the file has/);
    bad([region(fd, 0, 0)], 'REGION_MAP', /empty/);
    bad([region(fd, 0, MiB, undefined, 0xfffffffffffff000n)], 'REGION_MAP', /too large/);
    bad([region(fd, 0, MiB), region(fd, MiB / 2, MiB / 2, 0x500000000000n)], 'MEM_TABLE', /overlap in guest-physical/);
    bad([region(fd, 0, MiB, 0x1000n), region(fd, 4 * MiB, MiB / 2, 0x1000n)], 'MEM_TABLE', /overlap in frontend-virtual/);
    bad([region(fd, 0xfffffffffff00000n, MiB, 0x1000n)], 'MEM_TABLE', /wraps/);
    bad([region(fd, 0x1000, MiB, 0xfffffffffff80000n)], 'MEM_TABLE', /wraps/);
    const many = Array.from({ length: MAX_REGIONS + 1 }, (_, i) => region(fd, i * MiB, 4096, BigInt(i) * 0x100000000n));
    expect(() => GuestMemory.map(many)).to.throw(RangeError, /at most 64/);
    expect(() => GuestMemory.map([{ ...region(fd, 0, MiB), gpa: -1n }])).to.throw(RangeError);
    closeSync(fd);
  });

  it('rejects an fd that is not a file (a pipe) and a closed fd', () => {
    expect(() => GuestMemory.map([region(987654, 0, 4096)])).to.throw(/fstat/);
  });

  it('translates frontend-virtual addresses only inside one region', () => {
    const fd = createMemfd('t', MiB);
    const mem = GuestMemory.map([region(fd, 0, MiB, 0x7f0000000000n)]);
    expect(mem.translateUva(0x7f0000000100n, 64)).to.deep.equal({ region: 0, offset: 0x100 });
    expect(mem.translateUva(0x7f0000000000n + BigInt(MiB) - 8n, 16)).to.equal(null);
    expect(mem.translateUva(0x100n, 1)).to.equal(null);
    closeSync(fd);
    mem.close();
  });

  it('builds new tables with withRegion / withoutRegion that share mappings', () => {
    const f1 = createMemfd('a', MiB);
    const f2 = createMemfd('b', MiB);
    const one = GuestMemory.map([region(f1, 0, MiB)]);
    const two = one.withRegion(region(f2, 4 * MiB, MiB));
    expect(two.regions.map((r) => r.gpa)).to.deep.equal([0n, BigInt(4 * MiB)]);
    one.write(5n, Uint8Array.of(9));
    expect(two.read(5n, 1)[0]).to.equal(9);
    one.close(); // two still holds the first mapping
    expect(two.read(5n, 1)[0]).to.equal(9);
    const back = two.withoutRegion(0n, BigInt(MiB), 0x7f0000000000n);
    expect(back.regions.map((r) => r.gpa)).to.deep.equal([BigInt(4 * MiB)]);
    expect(() => two.withoutRegion(0n, 4096n, 0x7f0000000000n)).to.throw(/no region/);
    expect(() => two.withRegion(region(f2, 4 * MiB + 4096, 4096, 0x100n))).to.throw(/overlap/);
    two.close();
    back.close();
    closeSync(f1);
    closeSync(f2);
  });

  it('unmaps tables made by withRegion / withoutRegion as soon as they are closed, not at a garbage collection', () => {
    const f1 = createMemfd('derived-a', MiB);
    const f2 = createMemfd('derived-b', MiB);
    const one = GuestMemory.map([region(f1, 0, MiB)]);
    const two = one.withRegion(region(f2, 4 * MiB, MiB));
    const back = two.withoutRegion(0n, BigInt(MiB), 0x7f0000000000n);
    expect(memfdMaps('derived-a') + memfdMaps('derived-b')).to.equal(2);
    for (const t of [one, two, back]) t.close();
    // Each derived table is handed to its wrapper inside an External; a copy left there kept
    // the mappings until the External was collected.
    expect(memfdMaps('derived-a') + memfdMaps('derived-b')).to.equal(0);
    closeSync(f1);
    closeSync(f2);
  });

  it('detaches every view on close, so JavaScript can no longer reach the memory, and unmaps it at once', () => {
    const fd = createMemfd('detach', MiB);
    const mem = GuestMemory.map([region(fd, 0, MiB)]);
    closeSync(fd);
    const v = mem.view(0);
    expect(v.byteLength).to.equal(MiB);
    mem.close();
    // The view is still reachable here: its mapping must not wait for it to be collected
    // (a guest's memory would stay allocated after the guest is gone).
    expect(memfdMaps('detach')).to.equal(0);
    expect(v.byteLength).to.equal(0);
    expect(v[0]).to.equal(undefined);
    expect(() => mem.view(0)).to.throw(/closed/);
    expect(() => mem.translate(0n, 1)).to.throw(/closed/);
  });

  it('reports whether the fd is sealed against shrinking', () => {
    const fd = createMemfd('t', MiB);
    const mem = GuestMemory.map([region(fd, 0, MiB)]);
    expect(mem.regions[0].sealed).to.equal(true);
    mem.close();
    closeSync(fd);
  });

  it('leaks no fd and no mapping across 500 map/close cycles', () => {
    const before = fdCount();
    for (let i = 0; i < 500; i++) {
      const fd = createMemfd('cycle', 64 * 1024);
      const mem = GuestMemory.map([region(fd, 0, 64 * 1024)]);
      closeSync(fd);
      mem.view(0)[0] = i & 0xff;
      mem.close();
    }
    expect(fdCount()).to.equal(before);
    // Each cycle handed out a view: its mapping went with close(), not at a collection.
    expect(memfdMaps('cycle')).to.equal(0);
  });
});

import { readFileSync } from 'node:fs';
function readFileSyncSafe(p: string): string {
  return readFileSync(p, 'utf8');
}
/** How many mappings of memfds named `name` this process has. */
function memfdMaps(name: string): number {
  return readFileSyncSafe('/proc/self/maps')
    .split('\n')
    .filter((l) => l.includes(`memfd:${name} `)).length;
}
