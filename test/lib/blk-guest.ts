// What the QEMU-guest tests of vhostkit's virtio-blk (test/e2e/blk-guests.test.ts,
// blk-uring.test.ts) share: the guest's test pattern and its checksum, a disk served for the
// life of one guest, and the check that the image holds what the guest wrote.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, truncateSync, writeFileSync } from 'node:fs';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { openDisk, type DiskOptions } from '../../src/backends/blk/disk.js';
import type { BlkEngineKind, BlkEngineStats } from '../../src/native/blk.js';
import { setLogSink } from '../../src/log.js';
import { findBusybox, findGuestKernel, runScript, type RunScriptOptions } from './guest.js';
import type { TempDir } from './peers.js';

export const MiB = 1 << 20;

/** Guest shell: writes the pattern, 1 MiB of numbered lines, to /tmp/pat. */
export const WRITE_PATTERN = `awk 'BEGIN { for (i = 0; i < 16384; i++) printf "vhostkit line %08d 0123456789abcdefghijklmnopqrstuvwxyzABCD\\n", i }' > /tmp/pat`;

/** The bytes WRITE_PATTERN writes. */
export function patternBytes(): Buffer {
  let s = '';
  for (let i = 0; i < 16384; i++) s += `vhostkit line ${String(i).padStart(8, '0')} 0123456789abcdefghijklmnopqrstuvwxyzABCD\n`;
  return Buffer.from(s, 'latin1');
}

/** md5 (hex) of the pattern, as the guest's md5sum prints it. */
export function patternMd5(): string {
  return createHash('md5').update(patternBytes()).digest('hex');
}

/** The hooks of a guest test: its prerequisites found first (a missing one fails), vhostkit's logs silenced. */
export function guestTestHooks(): void {
  let old: ReturnType<typeof setLogSink>;
  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    old = setLogSink(() => undefined);
  });
  afterEach(() => {
    setLogSink(old);
  });
}

/** A sparse image file of `bytes` in dir. */
export function makeImage(dir: TempDir, bytes = 64 * MiB): string {
  const img = dir.join('disk.img');
  writeFileSync(img, new Uint8Array(0));
  truncateSync(img, bytes);
  return img;
}

export interface GuestOnDisk {
  /** the guest's vk_result values */
  results: Record<string, string>;
  /** the engine's counters once the guest is gone */
  stats: BlkEngineStats;
  /** the device's polls (pollUs): started, and those that found a chain */
  polls: { started: number; hits: number };
}

/**
 * Serves a disk (openDisk options; `engine` required, and checked to be the one serving) on a
 * socket in dir for one guest running `script` with it as /dev/vda; stops and closes it after.
 */
export async function runGuestOnDisk(dir: TempDir, disk: DiskOptions & { engine: BlkEngineKind }, script: string, o: { packed: boolean; queues?: number } & RunScriptOptions): Promise<GuestOnDisk> {
  const { packed, queues, ...runOpts } = o;
  const d = openDisk(disk);
  let be: VhostUserBackend | undefined;
  try {
    expect(d.engine.engine, 'the engine serving the disk').to.equal(disk.engine);
    be = new VhostUserBackend(d.device, { socket: dir.join('blk.sock') });
    await be.start();
    const r = await runScript(script, [{ type: 'vhost-user-blk', socket: dir.join('blk.sock'), packed, ...(queues !== undefined ? { numQueues: queues } : {}) }], 100_000, runOpts);
    return { results: r.results, stats: d.engine.stats(), polls: { started: d.device.polls, hits: d.device.pollHits } };
  } finally {
    await be?.stop();
    d.close();
  }
}

/** Checks that the image holds the pattern at each of these offsets (MiB). */
export function expectImageHoldsPattern(img: string, atMiB: readonly number[]): void {
  const want = patternBytes();
  const fd = openSync(img, 'r');
  try {
    for (const at of atMiB) {
      const b = Buffer.alloc(MiB);
      readSync(fd, b, 0, MiB, at * MiB);
      expect(b.equals(want), `the image holds the guest's bytes at ${at} MiB`).to.equal(true);
    }
  } finally {
    closeSync(fd);
  }
}
