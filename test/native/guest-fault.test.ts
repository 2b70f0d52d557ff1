// A frontend that truncates the file under its guest memory (an unsealed memfd, or a plain
// file as QEMU's memory-backend-file) while we serve it: the access that follows raises
// SIGBUS. Only that session may end (a log line naming the region); every other port and
// disk keeps serving; nothing of the session stays open or mapped; the socket serves the
// next frontend. Each case runs in a child process (guest-fault-child.ts): without the
// guard (native/memory/guest_fault.h) the child dies of SIGBUS and the case fails here
// instead of taking mocha with it. Under `npm test` this file runs twice, the second time
// against the ASan + UBSan build (the child inherits VHOSTKIT_NATIVE, LD_PRELOAD and
// ASAN_OPTIONS).
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const child = join(dirname(fileURLToPath(import.meta.url)), 'guest-fault-child.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  stderr: string;
}

function run(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code, signal) => {
      const last = stdout.trim().split('\n').pop() ?? '';
      let out = {};
      try {
        out = JSON.parse(last);
      } catch {
        // no result line: the child died
      }
      resolve({ code, signal, out, stderr });
    });
  });
}

/** The child finished (did not die of the truncation) and printed its result. */
function survived(r: Run): Record<string, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  expect(r.signal, `child died of ${r.signal}; stderr:\n${r.stderr.slice(-3000)}`).to.equal(null);
  expect(r.code, `child exited ${r.code}; stderr:\n${r.stderr.slice(-3000)}`).to.equal(0);
  return r.out;
}

describe('guest memory truncated by its frontend (SIGBUS guard)', function () {
  this.timeout(90_000);

  it('mappings of unsealed fds are guarded; a lost page reads as zeros, marks its region, and is unmapped with it', async () => {
    const o = survived(await run('unit'));
    expect(o.guard.installed, o.guard.error).to.equal(true);
    expect(o.sealed).to.deep.equal({ sealed: true, guarded: false });
    for (const kind of ['memfd', 'file']) {
      const k = o[kind];
      expect(k.guarded, kind).to.deep.equal([true, true]);
      expect(k.low, `${kind}: the first region kept its bytes`).to.deep.equal([1, 2, 3]);
      expect(k.highKept, `${kind}: bytes below the new end kept`).to.deep.equal([4, 5, 6]);
      expect(k.lostBefore, `${kind}: nothing lost before the access`).to.deep.equal([]);
      expect(k.gone, `${kind}: a lost page reads as zeros`).to.deep.equal([0, 0, 0, 0]);
      expect(k.lost, `${kind}: only the region past the new end`).to.deep.equal([1]);
      expect(k.epochDelta, kind).to.be.at.least(1);
      expect(k.mapsAfterClose, `${kind}: mapping released`).to.equal(0);
    }
  });

  it('a SIGBUS that is not a guest memory fault still kills the process', async () => {
    const r = await run('kill');
    expect(r.out, 'the child went on').to.deep.equal({});
    // SIGBUS by default; under AddressSanitizer its handler reports and aborts.
    expect(r.signal ?? `exit ${r.code}`).to.be.oneOf(['SIGBUS', 'SIGABRT']);
  });

  for (const [dataplane, layout] of [
    ['worker', 'split'],
    ['inline', 'packed'],
  ] as const) {
    it(`switch (${dataplane} data plane, ${layout}): A's memory file truncated under traffic A→B, B↔C; A's session ends, B↔C lose nothing, A's socket serves again`, async () => {
      const o = survived(await run('net', dataplane, layout));
      expect(o.errors, 'B↔C and A→B before the truncation: in order, nothing missing').to.deep.equal([]);
      expect(o.bc.receivedInOrder).to.equal(o.bc.sent);
      expect(o.cb.receivedInOrder).to.equal(o.cb.sent);
      expect(o.bc.sent).to.equal(40 * 16);
      expect(o.aFramesAtB, 'A→B before the truncation').to.be.at.least(10 * 16);
      expect(o.sessionEnded, "A's session ended").to.equal(true);
      expect(o.lostLine, 'the log line').to.not.equal(null);
      expect(o.lostLine.gpa).to.equal('0');
      expect(o.lostLine.size).to.equal(String(16 << 20));
      expect(o.lostLine.file).to.match(/a\.mem$/);
      expect(o.disconnectReason).to.equal('guest memory file truncated');
      expect(o.fds.after, "A's fds released").to.equal(o.fds.before);
      expect(o.fds.toMemFile).to.equal(0);
      expect(o.mapsOfMemFile, "A's mappings released").to.equal(0);
      expect(o.newSession, "a new frontend on A's socket").to.equal(true);
      expect(o.newFrontendErrors).to.deep.equal([]);
    });
  }

  it("live migration: the frontend's dirty log file truncated; the session ends at the next mark, nothing left open", async () => {
    const o = survived(await run('dirtylog'));
    expect(o.before).to.equal(0);
    expect(o.sessionEnded).to.equal(true);
    expect(o.lostLine, 'the log line names the dirty log').to.equal('dirty log');
    expect(o.disconnectReason).to.equal('guest memory file truncated');
    expect(o.fds.after).to.equal(o.fds.before);
    expect(o.mapsOfLog).to.equal(0);
  });

  for (const kind of ['file', 'ram'] as const) {
    it(`virtio-blk (${kind}): the memory file truncated under 24 MiB of writes in flight; that session ends, the disk beside it keeps its data and serves`, async () => {
      const o = survived(await run('blk', kind));
      expect(o.sessionEnded, 'the session ended').to.equal(true);
      expect(o.lostLine, 'the log line').to.not.equal(null);
      expect(o.lostLine.file).to.match(/v\.mem$/);
      expect(o.disconnectReason).to.equal('guest memory file truncated');
      // Requests whose buffers were lost fail with IOERR, counted as guestMemoryLost (a
      // failed write may have written part of its sectors, as any failed write may).
      expect(o.victimEngine.inFlight).to.equal(0);
      expect(o.victimEngine.ioerr).to.equal(o.victimEngine.guestMemoryLost);
      expect(o.victimEngine.io, 'not taken for disk errors').to.equal(0);
      expect(o.other.errors).to.deep.equal([]);
      expect(o.other.intact).to.equal(64);
      expect(o.fds.after, 'fds released').to.equal(o.fds.before);
      expect(o.fds.toMemFile).to.equal(0);
      expect(o.mapsOfMemFile, 'mappings released').to.equal(0);
      expect(o.newFrontend).to.deep.equal({ write: 0, read: 0, same: true });
    });
  }
});
