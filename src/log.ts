// The one logger library code writes through. A line per event: level, time, message,
// and the bound context (session, port, queue...). The default sink is pino writing JSON
// lines to stderr (pino-pretty and pino's transports read them); the sink can be replaced
// (tests capture it; an embedder may send records to its own logger).
import { pino, type Logger as PinoLogger } from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogRecord {
  level: Level;
  time: number;
  msg: string;
  [key: string]: unknown;
}
export type LogSink = (rec: LogRecord) => void;

let out: PinoLogger | null = null;

/** pino on stderr: {"level":"info","time":<ms>,<context and fields>,"msg":"..."}; bigints as hex strings. */
function pinoSink(rec: LogRecord): void {
  out ??= pino(
    { level: 'debug', base: undefined, timestamp: pino.stdTimeFunctions.epochTime, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ dest: 2, sync: true }),
  );
  const { level, time: _time, msg, ...fields } = rec;
  for (const k of Object.keys(fields)) if (typeof fields[k] === 'bigint') fields[k] = `0x${(fields[k] as bigint).toString(16)}`;
  out[level](fields, msg);
}

let sink: LogSink = pinoSink;
let threshold: number = rank[(process.env.VHOSTKIT_LOG as Level | undefined) ?? 'info'] ?? rank.info;

/** Replaces where log records go; returns the previous sink. */
export function setLogSink(s: LogSink): LogSink {
  const old = sink;
  sink = s;
  return old;
}

/** Sets the lowest level written (default from VHOSTKIT_LOG, else info). */
export function setLogLevel(level: Level): void {
  threshold = rank[level];
}

export class Logger {
  constructor(private readonly bound: Record<string, unknown> = {}) {}

  child(fields: Record<string, unknown>): Logger {
    return new Logger({ ...this.bound, ...fields });
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.write('error', msg, fields);
  }

  private write(level: Level, msg: string, fields?: Record<string, unknown>): void {
    if (rank[level] < threshold) return;
    sink({ level, time: Date.now(), msg, ...this.bound, ...fields });
  }
}

export const log = new Logger();
