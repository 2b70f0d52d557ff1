// A real peer that truncates guest memory: a QEMU guest (TCG, busybox) whose RAM is a
// memory-backend-file on a switch port; the test cuts the file to 0 bytes while the guest
// sends (ARP requests of its pings) and B floods broadcasts to it. QEMU may die of its own
// SIGBUS; the switch process must not, and B↔C must lose nothing. QEMU is stopped around
// the cut (see the child) so the switch meets the lost pages first. The switch runs in a
// child process (test/native/guest-fault-child.ts, case qemu), so a SIGBUS there fails
// this case instead of killing mocha.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { findBusybox, findGuestKernel } from '../lib/guest.js';

const child = join(dirname(fileURLToPath(import.meta.url)), '..', 'native', 'guest-fault-child.js');

describe('e2e: a QEMU guest whose memory-backend-file is truncated under the switch', function () {
  this.timeout(300_000);
  before(() => {
    findGuestKernel();
    findBusybox();
  });

  it("the switch process and its other ports survive; the guest's session ends and leaves nothing open or mapped", async () => {
    const r = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [child, 'qemu'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      p.on('error', reject);
      p.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
    expect(r.signal, `the switch process died of ${r.signal}; stderr:\n${r.stderr.slice(-3000)}`).to.equal(null);
    expect(r.code, `the switch process exited ${r.code}; stderr:\n${r.stderr.slice(-3000)}`).to.equal(0);
    const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
    console.log(`      QEMU: ${JSON.stringify(o.qemuExit)}; session ended by ${o.disconnectReason}${o.lostLine ? ' (guard log line)' : ''}; faults recovered in the switch process: ${o.epoch}`);
    expect(o.sessionAtStart).to.equal(true);
    expect(o.guestFramesAtB, 'the guest was heard before the cut').to.be.at.least(3);
    expect(o.errors).to.deep.equal([]);
    expect(o.bc.receivedInOrder).to.equal(o.bc.sent);
    expect(o.cb.receivedInOrder).to.equal(o.cb.sent);
    expect(o.sessionEnded).to.equal(true);
    expect(o.epoch, 'the switch met the lost pages').to.be.at.least(1);
    expect(o.disconnectReason).to.equal('guest memory file truncated');
    expect(o.lostLine.file).to.match(/guest\.ram$/);
    expect(o.fdsToMemFile).to.equal(0);
    expect(o.mapsOfMemFile).to.equal(0);
  });
});
