// A ring benchmark in twenty lines: vhostkit's own vhost-user frontend sends 64-byte frames
// to a virtio-net backend -- a vhostkit sink started here, or any other (dpdk-testpmd's
// vhost PMD, OVS) when you give its socket -- and prints what went through.
//
//   node dist/examples/ring-bench.js [SECONDS] [SOCKET]
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { ethFrame, NetGuest, NetLoadDevice, VhostUserBackend } from 'vhostkit';

const [seconds = '2', given] = process.argv.slice(2);
const socket = given ?? `/tmp/vhostkit-ring-bench-${process.pid}.sock`;
const sink = given ? null : new VhostUserBackend(await NetLoadDevice.create(), { socket });
await sink?.start();
const guest = await NetGuest.connect(socket);
const burst = Array.from({ length: 32 }, (_, i) => ethFrame('02:00:00:00:00:02', '02:00:00:00:00:01', 64, i));
let frames = 0;
const start = performance.now();
while (performance.now() - start < Number(seconds) * 1000) {
  frames += guest.send(burst);
  await yieldToLoop(); // the sink (if here) runs on this thread too
}
const s = (performance.now() - start) / 1000;
console.log(`${frames} frames of 64 B in ${s.toFixed(2)} s: ${(frames / s / 1e6).toFixed(3)} Mpps`);
guest.close();
await sink?.stop();
