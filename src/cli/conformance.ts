// `vhostkit conformance SOCKET`: checks any vhost-user backend against the spec and against
// hostile input (src/conformance/), prints a table (or --json), exits 1 on a crash, hang,
// leak or spec failure.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { CASES } from '../conformance/cases.js';
import { GROUPS } from '../conformance/case.js';
import { exitCodeOf, runConformance } from '../conformance/runner.js';
import { reportJson, reportTable, resultLine } from '../conformance/report.js';

export const conformanceUsage = `vhostkit conformance SOCKET [--type net|blk] [--spawn CMD] [--json] [--only GROUP]

  SOCKET          the backend's vhost-user socket (it listens, we connect)
  --type net|blk  the device type (default blk)
  --spawn CMD     start the backend with this shell command (it must listen on SOCKET), and
                  start it again after a crash; crashes then show with their signal, and
                  fds are counted on the process we started
  --only LIST     only these groups or cases (comma-separated; repeatable)
  --list          print the cases and what the spec says, run nothing
  --json          one JSON document on stdout: {backend, cases: [{name, group, status, detail}]}
  --timeout MS    ms for the data check after each case (default 5000)

After every case a fresh, correct connection must move data (net: frames sent and received;
blk: a 4 KiB write read back at sector 8, the old contents written back: use a scratch disk).
Each case is passed, rejected (refused cleanly), failed (answered against the spec), crashed,
hung or leaked (fds). Exit status 1 on any failed, crashed, hung or leaked case.
Groups: ${GROUPS.join(', ')}.`;

export async function cmdConformance(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      type: { type: 'string', default: 'blk' },
      spawn: { type: 'string' },
      only: { type: 'string', multiple: true },
      list: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      timeout: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(conformanceUsage + '\n');
    return 0;
  }
  const type = values.type;
  if (type !== 'net' && type !== 'blk') throw new Error(`--type ${type}: expected net or blk`);
  const only = (values.only ?? []).flatMap((s) => s.split(',')).filter((s) => s !== '');
  const known = new Set<string>([...GROUPS, ...CASES.map((c) => c.name)]);
  const unknown = only.filter((s) => !known.has(s));
  if (unknown.length) throw new Error(`--only ${unknown.join(',')}: no such group or case (groups: ${GROUPS.join(', ')})`);
  if (values.list) {
    for (const c of CASES) if ((c.types ?? ['net', 'blk']).includes(type)) process.stdout.write(`${c.group}/${c.name}\n    ${c.spec}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new Error('conformance: expected one socket path');
  const timeout = values.timeout === undefined ? 5000 : Number(values.timeout);
  if (!Number.isInteger(timeout) || timeout < 100 || timeout > 600000) throw new Error(`--timeout ${values.timeout}: expected 100..600000 ms`);
  const report = await runConformance(CASES, {
    socket: resolve(positionals[0]),
    type,
    spawn: values.spawn,
    only,
    trafficTimeoutMs: timeout,
    onResult: values.json ? undefined : (r) => process.stderr.write(resultLine(r) + '\n'),
  });
  process.stdout.write(values.json ? reportJson(report) : reportTable(report));
  return exitCodeOf(report);
}
