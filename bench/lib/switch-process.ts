// The switch of the switch-flows case (bench/cases/switch-flows.ts): what
// `vhostkit switch --port a=SOCK_A --port b=SOCK_B --poll busy` runs (a Switch, its data
// plane on a worker thread, vhost-user ports in server mode), with --flows N flows added to
// its table first (lib/flow-table.ts: N of the 5-tuples testpmd's flowgen sends,
// actions=normal). Both sides of the case run this, with 1000 flows and with none, so that
// the table is all that differs.
//
//   node dist/bench/lib/switch-process.js --port a=SOCK_A --port b=SOCK_B --flows 1000 [--poll busy]
//
// Prints one JSON line {"ready":true,...} once the flows are in and every socket listens.
// A line "dump" on stdin answers one JSON line {"flows":[{match,packets,bytes}...]}
// (Switch.dumpFlows). SIGTERM closes the switch and exits.
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { POLL_MODES, type PollMode } from '../../src/dataplane/poller.js';
import { Switch } from '../../src/switch/switch.js';
import { defaultStateDir } from '../../src/vhost-user/ring-record.js';
import { flowgenFlows } from './flow-table.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', multiple: true, default: [] },
    flows: { type: 'string', default: '0' },
    poll: { type: 'string', default: 'busy' },
  },
  strict: true,
});
if (!POLL_MODES.includes(values.poll as PollMode)) throw new Error(`--poll ${values.poll}: expected ${POLL_MODES.join(', ')}`);
const flows = flowgenFlows(Number(values.flows));
const sw = await Switch.create({ agingSeconds: 300, dataplane: 'worker', poll: values.poll as PollMode, stateDir: defaultStateDir() });
const t0 = Date.now();
for (const f of flows) await sw.addFlow(f);
const addMs = Date.now() - t0;
let i = 0;
for (const spec of values.port ?? []) {
  const eq = spec.indexOf('=');
  if (eq <= 0) throw new Error(`--port ${spec}: expected NAME=SOCKET`);
  // The MACs `vhostkit switch` gives its ports.
  await sw.addVhostPort({ name: spec.slice(0, eq), socket: resolve(spec.slice(eq + 1)), mac: `52:54:00:12:34:${(0x56 + i++).toString(16).padStart(2, '0')}` });
}
const out = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');
out({ ready: true, pid: process.pid, flows: flows.length, addMs });
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'dump') return;
  sw.dumpFlows().then(
    (d) => out({ flows: d.map((f) => ({ match: f.match, packets: f.packets, bytes: f.bytes })) }),
    (e: unknown) => out({ error: String(e) }),
  );
});
process.once('SIGTERM', () => {
  void sw.close().then(() => process.exit(0));
});
