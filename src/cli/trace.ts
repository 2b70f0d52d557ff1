// `vhostkit trace`: a vhost-user proxy that prints every message both ways (text on stdout,
// JSON lines to --out), and `vhostkit trace replay`, which plays a recorded session's
// frontend side against a backend.
import { closeSync, openSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { TraceProxy } from '../trace/proxy.js';
import { toJsonLine, toText } from '../trace/render.js';
import { Replay, readTrace, replaySteps, tracedSessions } from '../trace/replay.js';
import type { TraceRecord } from '../trace/decode.js';
import { untilSignal } from './signals.js';

export const traceUsage = `usage: vhostkit trace --listen FRONT.sock --connect BACK.sock [--out trace.jsonl] [--rings] [--interval MS]
                      [--type net|blk] [--quiet] [--socket-mode MODE]
       vhostkit trace replay trace.jsonl --connect BACK.sock [--session N] [--timeout MS] [--hold S]

A proxy between a vhost-user frontend (QEMU connects to FRONT.sock) and its backend
(listening on BACK.sock): every message both ways, decoded (names, payloads, features in
words, the fds with what they are), with timestamps, as text on stdout and, with --out, as
JSON lines in a file. A backend or frontend that disconnects ends the session on the other
side too, so QEMU's reconnect=1 goes through the proxy to the restarted backend.
  --rings         snapshot each started ring's indices from the mapped guest memory
  --interval MS   how often (default 1000); a snapshot is printed when an index moved
  --type net|blk  device type for feature names (default: guessed from GET_FEATURES)
  --quiet         no text on stdout (the file only)

replay: connects to BACK.sock and sends the recorded frontend requests of one session
(default: the first) with memory and eventfds made anew, compares each reply with the
recorded one, prints what differs; --hold S keeps the connection (and the backend's state)
S seconds before closing. Exits 1 if the backend closed or did not answer.
`;

function fail(msg: string): never {
  process.stderr.write(`vhostkit trace: ${msg}\n`);
  process.exit(2);
}

function num(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} ${v}: expected an integer in ${min}..${max}`);
  return n;
}

export async function cmdTrace(argv: string[]): Promise<number> {
  if (argv[0] === 'replay') return cmdReplay(argv.slice(1));
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string' },
      connect: { type: 'string' },
      out: { type: 'string' },
      rings: { type: 'boolean', default: false },
      interval: { type: 'string' },
      type: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      'socket-mode': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(traceUsage);
    return 0;
  }
  if (positionals.length > 0) fail(`unexpected argument ${positionals[0]} (did you mean "vhostkit trace replay"?)`);
  if (values.listen === undefined || values.connect === undefined) fail('--listen FRONT.sock and --connect BACK.sock are both required');
  const type = values.type;
  if (type !== undefined && type !== 'net' && type !== 'blk') fail(`--type ${type}: expected net or blk`);
  const mode = values['socket-mode'];
  if (mode !== undefined && !/^0?[0-7]{3}$/.test(mode)) fail(`--socket-mode ${mode}: expected octal permission bits like 0660`);
  const intervalMs = num(values.interval, 'interval', 1000, 10, 3_600_000);
  let out = -1;
  if (values.out !== undefined) {
    try {
      out = openSync(values.out, 'w', 0o644);
    } catch (e) {
      fail(`--out ${values.out}: ${(e as Error).message}`);
    }
  }
  const quiet = values.quiet;
  const onRecord = (r: TraceRecord): void => {
    if (out >= 0) writeSync(out, toJsonLine(r) + '\n');
    if (!quiet) process.stdout.write(toText(r));
  };
  const proxy = new TraceProxy({
    listen: values.listen,
    connect: values.connect,
    onRecord,
    rings: values.rings ? { intervalMs } : undefined,
    deviceType: type as 'net' | 'blk' | undefined,
    socketMode: mode !== undefined ? parseInt(mode, 8) : undefined,
  });
  await proxy.start();
  await untilSignal(async () => {
    await proxy.stop();
    if (out >= 0) closeSync(out);
  });
  return 0;
}

async function cmdReplay(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      connect: { type: 'string' },
      session: { type: 'string' },
      timeout: { type: 'string' },
      hold: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(traceUsage);
    return 0;
  }
  if (positionals.length !== 1) fail('replay: expected one trace file');
  if (values.connect === undefined) fail('replay: --connect BACK.sock is required');
  let records;
  try {
    records = readTrace(positionals[0]);
  } catch (e) {
    fail(`replay: ${(e as Error).message}`);
  }
  const sessions = tracedSessions(records);
  if (sessions.length === 0) fail(`replay: ${positionals[0]} has no frontend request to replay`);
  const session = num(values.session, 'session', sessions[0], 1, 2 ** 31);
  if (!sessions.includes(session)) fail(`--session ${session}: the trace has sessions ${sessions.join(', ')}`);
  const steps = replaySteps(records, session);
  const holdS = Number(values.hold ?? '0');
  if (!(holdS >= 0 && holdS <= 86400)) fail(`--hold ${values.hold}: expected 0..86400 seconds`);
  let replay: Replay;
  try {
    replay = new Replay(values.connect);
  } catch (e) {
    process.stderr.write(`vhostkit trace replay: ${values.connect}: ${(e as Error).message}\n`);
    return 1;
  }
  const res = await replay.run(steps, {
    timeoutMs: num(values.timeout, 'timeout', 5000, 10, 600_000),
    onStep: (s) => {
      let line = `${String(s.step).padStart(4)} ${s.name}`;
      if (s.error !== undefined) line += `: ${s.error}`;
      else if (s.reply !== undefined) line += s.differs ? ` reply ${s.reply || '(empty)'} differs (recorded ${s.recordedReply || '(empty)'})` : ' reply as recorded';
      process.stdout.write(line + '\n');
    },
  });
  process.stdout.write(
    `session ${session}: ${res.sent} of ${steps.length} requests replayed, ${res.replies} replies, ${res.differing} differ from the recording${res.error ? `; stopped at ${res.error}` : ''}\n`,
  );
  if (holdS > 0 && !res.error) await new Promise((r) => setTimeout(r, holdS * 1000));
  replay.close();
  return res.error ? 1 : 0;
}
