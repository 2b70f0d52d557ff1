// `vhostkit trace` in front of qemu-storage-daemon's vhost-user-blk export: a QEMU guest
// writes 1 MiB with O_DIRECT through the proxy and reads it back, md5 checked in the guest
// and in the image; the trace holds the blk negotiation in words (features, the config
// space decoded). Then `vhostkit trace replay` plays the recorded session against the same
// daemon with no VM: every request is answered, and the replies that do not depend on the
// guest (features, protocol features, queue number, config space) are the recorded ones.
// And vhostkit's own blk behind the proxy, killed and started again between a guest's write
// and its read: QEMU reconnects through the proxy, the data is there, and the trace shows the
// inflight area (GET_INFLIGHT_FD's memfd) handed back to the new backend as the same object.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { createRawImage, makeTempDir, startStorageDaemon, startVhostkitBlk, vhostkitCli, type StorageDaemon, type TempDir } from '../lib/peers.js';
import { findBusybox, findGuestKernel, runScript, startGuest } from '../lib/guest.js';
import { ManagedProcess } from '../lib/process.js';
import { readTrace } from '../../src/trace/replay.js';
import type { MessageRecord, SessionRecord } from '../../src/trace/decode.js';

const MiB = 1 << 20;

const script = `
[ -b /dev/vda ] || vk_fail "no /dev/vda"
vk_result sectors=$(cat /sys/block/vda/size)
awk 'BEGIN { for (i = 0; i < 16384; i++) printf "vhostkit trace %08d 0123456789abcdefghijklmnopqrstuvwxyzABC\\n", i }' > /tmp/pat
dd if=/tmp/pat of=/dev/vda bs=65536 seek=16 oflag=direct 2>/dev/null || vk_fail "dd write"
sync
dd if=/dev/vda of=/tmp/back bs=65536 skip=16 count=16 iflag=direct 2>/dev/null || vk_fail "dd read"
vk_result written=$(md5sum < /tmp/pat | cut -d' ' -f1) back=$(md5sum < /tmp/back | cut -d' ' -f1)
`;

const readBack = `
dd if=/dev/vda of=/tmp/back bs=65536 skip=16 count=16 iflag=direct 2>/dev/null || vk_fail "dd read"
vk_result back=$(md5sum < /tmp/back | cut -d' ' -f1)
`;

const writeWaitRead = `
awk 'BEGIN { for (i = 0; i < 16384; i++) printf "vhostkit trace %08d 0123456789abcdefghijklmnopqrstuvwxyzABC\\n", i }' > /tmp/pat
dd if=/tmp/pat of=/dev/vda bs=65536 seek=16 oflag=direct 2>/dev/null || vk_fail "dd write"
sync
vk_result written=$(md5sum < /tmp/pat | cut -d' ' -f1)
echo "phase=written"
sleep 4
dd if=/dev/vda of=/tmp/back bs=65536 skip=16 count=16 iflag=direct 2>/dev/null || vk_fail "dd read"
vk_result back=$(md5sum < /tmp/back | cut -d' ' -f1)
`;

function pattern(): Buffer {
  let s = '';
  for (let i = 0; i < 16384; i++) s += `vhostkit trace ${String(i).padStart(8, '0')} 0123456789abcdefghijklmnopqrstuvwxyzABC\n`;
  return Buffer.from(s, 'latin1');
}

function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, argv, { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

describe('e2e: vhostkit trace in front of blk backends (qemu-storage-daemon, vhostkit blk)', function () {
  this.timeout(240_000);
  let tmp: TempDir;
  let qsd: StorageDaemon | null = null;
  let proxy: ManagedProcess | null = null;

  before(() => {
    findGuestKernel();
    findBusybox();
  });
  beforeEach(() => {
    tmp = makeTempDir('vk-e2e-trb-');
  });
  afterEach(async () => {
    await proxy?.stop('SIGTERM', 3000);
    proxy = null;
    await qsd?.stop();
    qsd = null;
    tmp.cleanup();
  });

  it('a guest writes and reads back 1 MiB through the proxy (md5), a second guest reads it again; the trace decodes the blk session; replay gets the same answers', async () => {
    const img = tmp.join('disk.img');
    createRawImage(img, 64 * MiB);
    qsd = await startStorageDaemon({ image: img, socket: tmp.join('back.sock') });
    const out = tmp.join('trace.jsonl');
    proxy = await ManagedProcess.start([process.execPath, vhostkitCli, 'trace', '--listen', tmp.join('front.sock'), '--connect', tmp.join('back.sock'), '--out', out], { name: 'vhostkit-trace' });
    await proxy.waitForPath(tmp.join('front.sock'), 10_000, { socket: true });
    const r = await runScript(script, [{ type: 'vhost-user-blk', socket: tmp.join('front.sock') }], 120_000);
    const md5 = createHash('md5').update(pattern()).digest('hex');
    expect(r.results.sectors).to.equal(String((64 * MiB) / 512));
    expect(r.results.written).to.equal(md5);
    expect(r.results.back, 'read back through the proxy').to.equal(md5);
    const fd = openSync(img, 'r');
    try {
      const b = Buffer.alloc(MiB);
      readSync(fd, b, 0, MiB, MiB);
      expect(b.equals(pattern()), 'the image holds what the guest wrote').to.equal(true);
    } finally {
      closeSync(fd);
    }
    // A second QEMU, booted after the first powered off: a new session through the proxy
    // (the frontend side reconnecting), reading back what the first one wrote.
    const again = await runScript(readBack, [{ type: 'vhost-user-blk', socket: tmp.join('front.sock') }], 120_000);
    expect(again.results.back, 'read back by a second guest').to.equal(md5);
    await proxy.stop('SIGTERM', 3000);
    const text = proxy.log();
    proxy = null;

    const records = readTrace(out);
    const sessions = records.filter((x): x is SessionRecord => x.type === 'session');
    expect(sessions.map((x) => `${x.session} ${x.event}${x.side ? ` by ${x.side}` : ''}`)).to.deep.equal(['1 open', '1 close by frontend', '2 open', '2 close by frontend']);
    const msgs = records.filter((x): x is MessageRecord => x.type === 'message');
    expect(msgs.filter((m) => m.error !== undefined).map((m) => `${m.name}: ${m.error}`)).to.deep.equal([]);
    const offered = msgs.find((m) => m.name === 'GET_FEATURES' && m.reply)!;
    expect(offered.body).to.deep.include({ deviceType: 'blk' });
    expect((offered.body as { names: string[] }).names).to.include.members(['SEG_MAX', 'BLK_SIZE', 'FLUSH', 'VERSION_1']);
    const cfg = msgs.find((m) => m.name === 'GET_CONFIG' && m.reply)!;
    expect((cfg.body as { blk: { capacity: string } }).blk.capacity).to.equal(`0x${((64 * MiB) / 512).toString(16)}`);
    const names = msgs.filter((m) => m.from === 'frontend').map((m) => m.name);
    for (const n of ['GET_FEATURES', 'SET_FEATURES', 'ADD_MEM_REG', 'SET_VRING_ADDR', 'SET_VRING_KICK']) expect(names, n).to.include(n);
    // qemu-storage-daemon offers CONFIGURE_MEM_SLOTS: QEMU shares its RAM region by region.
    const regions = msgs.filter((m) => m.name === 'ADD_MEM_REG' && m.from === 'frontend');
    expect(regions.flatMap((m) => m.fds).some((f) => f.kind === 'memfd' && f.size === 256 * MiB)).to.equal(true);
    expect(text).to.match(/B->F GET_CONFIG reply .*blk=\{capacity=0x20000/);

    // Replay against the same daemon (free again: the guest is gone), no VM.
    const rp = await run([vhostkitCli, 'trace', 'replay', out, '--connect', tmp.join('back.sock')]);
    expect(rp.code, `${rp.stdout}${rp.stderr}`).to.equal(0);
    const steps = msgs.filter((m) => m.from === 'frontend' && m.session === msgs[0].session).length;
    expect(rp.stdout).to.match(new RegExp(`session \\d+: ${steps} of ${steps} requests replayed`));
    for (const n of ['GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'GET_CONFIG']) {
      expect(rp.stdout, n).to.match(new RegExp(`^ +\\d+ ${n} reply as recorded$`, 'm'));
    }
  });

  it('vhostkit blk behind the proxy, killed (-9) and started again between the write and the read: QEMU follows, the inflight area keeps its identity', async () => {
    const img = tmp.join('disk.img');
    createRawImage(img, 64 * MiB);
    qsd = await startVhostkitBlk({ file: img, socket: tmp.join('back.sock') });
    const out = tmp.join('trace.jsonl');
    proxy = await ManagedProcess.start([process.execPath, vhostkitCli, 'trace', '--listen', tmp.join('front.sock'), '--connect', tmp.join('back.sock'), '--out', out], { name: 'vhostkit-trace' });
    await proxy.waitForPath(tmp.join('front.sock'), 10_000, { socket: true });
    const guest = await startGuest({ script: writeWaitRead, devices: [{ type: 'vhost-user-blk', socket: tmp.join('front.sock'), reconnect: true }] });
    try {
      await guest.waitFor(/phase=written/, 120_000);
      await qsd.stop('SIGKILL', 1000);
      qsd = await startVhostkitBlk({ file: img, socket: tmp.join('back.sock') });
      const exit = await Promise.race([guest.exited, new Promise<null>((r) => setTimeout(() => r(null), 120_000))]);
      if (exit === null || exit.scriptExitCode !== 0) throw new Error(`guest did not finish: ${exit ? `script exit ${exit.scriptExitCode}` : 'timeout'}\n${guest.log().slice(-3000)}`);
    } finally {
      await guest.kill();
    }
    const md5 = createHash('md5').update(pattern()).digest('hex');
    const r = guest.results();
    expect(r.written).to.equal(md5);
    expect(r.back, 'read back after the backend restart').to.equal(md5);
    await proxy.stop('SIGTERM', 3000);
    proxy = null;

    const records = readTrace(out);
    const msgs = records.filter((x): x is MessageRecord => x.type === 'message');
    expect(msgs.filter((m) => m.error !== undefined).map((m) => `${m.name}: ${m.error}`)).to.deep.equal([]);
    const closed = records.filter((x): x is SessionRecord => x.type === 'session' && x.event === 'close');
    expect(closed[0].side, 'the first session ends with the backend').to.equal('backend');
    // vhostkit offers INFLIGHT_SHMFD: the area comes back in GET_INFLIGHT_FD's reply (a memfd),
    // and after the restart QEMU hands the same object to the new backend (SET_INFLIGHT_FD).
    // (QEMU frees the area when the guest resets the device and asks for a new one at the
    // next start: the area in use at the restart is the last one given.)
    const given = msgs.filter((m) => m.name === 'GET_INFLIGHT_FD' && m.reply && m.session === closed[0].session).pop()!;
    expect(given.fds.map((f) => f.kind)).to.deep.equal(['memfd']);
    const passed = msgs.filter((m) => m.name === 'SET_INFLIGHT_FD' && m.from === 'frontend');
    const later = passed.filter((m) => m.session > given.session);
    expect(later.length, 'SET_INFLIGHT_FD after the restart').to.be.greaterThan(0);
    expect(later.map((m) => `${m.fds[0].dev}:${m.fds[0].ino}`)).to.include(`${given.fds[0].dev}:${given.fds[0].ino}`);
  });
});
