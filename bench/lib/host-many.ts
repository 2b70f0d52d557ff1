// One vhostkit process serving many idle devices, for the memory case (bench/cases/memory.ts):
// a switch with --ports vhost-user net ports and --disks RAM disks, every socket listening,
// nothing connected. Prints one JSON line {"ready":true,"pid":N} when all are listening,
// then waits for SIGTERM.
//
//   node dist/bench/lib/host-many.js --dir DIR --ports 64 --disks 8 [--disk-size 64M]
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Switch } from '../../src/switch/switch.js';
import { VhostUserBackend } from '../../src/vhost-user/backend.js';
import { openDisk, parseSize } from '../../src/backends/blk/disk.js';
import { log } from '../../src/log.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    ports: { type: 'string', default: '64' },
    disks: { type: 'string', default: '8' },
    'disk-size': { type: 'string', default: '64M' },
  },
  strict: true,
});
if (!values.dir) throw new Error('--dir is required');
const dir = values.dir;
const ports = Number(values.ports);
const disks = Number(values.disks);
const quiet = log.child({ bench: 'host-many' });
const sw = await Switch.create({ log: quiet });
for (let i = 0; i < ports; i++) await sw.addVhostPort({ socket: join(dir, `p${i}.sock`) });
const backends: VhostUserBackend[] = [];
for (let i = 0; i < disks; i++) {
  const disk = openDisk({ ramBytes: parseSize(values['disk-size']), threads: 1, numQueues: 1 });
  const be = new VhostUserBackend(disk.device, { socket: join(dir, `d${i}.sock`), mode: 'server', log: quiet });
  await be.start();
  backends.push(be);
}
process.stdout.write(JSON.stringify({ ready: true, pid: process.pid, ports, disks }) + '\n');
process.once('SIGTERM', () => {
  void (async () => {
    for (const b of backends) await b.stop();
    await sw.close();
    process.exit(0);
  })();
});
