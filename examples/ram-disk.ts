// A RAM disk served to a QEMU guest over vhost-user-blk, as a program of its own.
//
//   node dist/examples/ram-disk.js /tmp/ram.sock 256M
import { openDisk, parseSize, qemuBlkArgs, QEMU_MEMORY_ARGS, VhostUserBackend } from 'vhostkit';

const socket = process.argv[2] ?? '/tmp/vhostkit-ram.sock';
const disk = openDisk({ ramBytes: parseSize(process.argv[3] ?? '256M'), serial: 'example-ram' });
const backend = new VhostUserBackend(disk.device, { socket });
await backend.start();
backend.on('session', () => console.log('a guest connected'));
console.log(`RAM disk of ${disk.size} bytes on ${socket}. Attach a guest with:`);
console.log(`  qemu-system-x86_64 ... ${QEMU_MEMORY_ARGS} ${qemuBlkArgs({ socket, mode: 'server', queues: 1 }, '0')}`);

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void backend.stop().then(() => disk.close()); // in-flight requests finish first
  });
}
