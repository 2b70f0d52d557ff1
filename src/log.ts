// The one logger library code writes through. A line per event: level, time, message,
// and the bound context (session, port, queue...). The default sink writes to stderr: lines
// for people on a terminal ("12:00:01.234 INFO  switch: port added port=vm1 vlan=access:1"),
// JSON lines (pino's format, which pino-pretty and log shippers read) otherwise, or as
// chosen with setLogFormat / VHOSTKIT_LOG_FORMAT. The sink can be replaced (tests capture
// it; an embedder may send records to its own logger).
import { isatty } from 'node:tty';
import { writeSync } from 'node:fs';
import { pino, type Logger as PinoLogger } from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];
const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
export type LogFormat = 'pretty' | 'json';

export interface LogRecord {
  level: Level;
  time: number;
  msg: string;
  [key: string]: unknown;
}
export type LogSink = (rec: LogRecord) => void;

let out: PinoLogger | null = null;

/** pino on stderr: {"level":"info","time":<ms>,<context and fields>,"msg":"..."}; bigints as hex strings. */
function jsonSink(rec: LogRecord): void {
  out ??= pino({ level: 'debug', base: undefined, timestamp: pino.stdTimeFunctions.epochTime, formatters: { level: (label) => ({ level: label }) } }, pino.destination({ dest: 2, sync: true }));
  const { level, time: _time, msg, ...fields } = rec;
  for (const k of Object.keys(fields)) if (typeof fields[k] === 'bigint') fields[k] = `0x${(fields[k] as bigint).toString(16)}`;
  out[level](fields, msg);
}

function showValue(v: unknown): string {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (typeof v === 'string') return v === '' || /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  if (v !== null && typeof v === 'object') return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x));
  return String(v);
}

/** One line for people: time (local), level, component, message, then key=value pairs. */
export function formatPretty(rec: LogRecord): string {
  const { level, time, msg, component, ...fields } = rec;
  const d = new Date(time);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const when = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const kv = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${showValue(v)}`)
    .join(' ');
  return `${when} ${level.toUpperCase().padEnd(5)} ${component ? `${String(component)}: ` : ''}${msg}${kv ? ` ${kv}` : ''}\n`;
}

function prettySink(rec: LogRecord): void {
  try {
    writeSync(2, formatPretty(rec));
  } catch {
    // stderr closed: nowhere to say it
  }
}

function formatFromEnv(): LogFormat {
  const f = process.env.VHOSTKIT_LOG_FORMAT;
  if (f === 'json' || f === 'pretty') return f;
  return isatty(2) ? 'pretty' : 'json';
}

let format: LogFormat = formatFromEnv();
const defaultSink: LogSink = (rec) => (format === 'json' ? jsonSink(rec) : prettySink(rec));
let sink: LogSink = defaultSink;
let threshold: number = rank[(process.env.VHOSTKIT_LOG as Level | undefined) ?? 'info'] ?? rank.info;

/** Replaces where log records go; returns the previous sink. */
export function setLogSink(s: LogSink): LogSink {
  const old = sink;
  sink = s;
  return old;
}

/**
 * How the default sink writes: lines for people or JSON. Also exported to the environment,
 * so that data-plane worker threads started afterwards write the same way.
 */
export function setLogFormat(f: LogFormat): void {
  format = f;
  process.env.VHOSTKIT_LOG_FORMAT = f;
}

export function logFormat(): LogFormat {
  return format;
}

export function logLevel(): Level {
  return LEVELS.find((l) => rank[l] === threshold) ?? 'info';
}

/**
 * Sets the lowest level written (default from VHOSTKIT_LOG, else info); exported to the
 * environment for worker threads started afterwards.
 */
export function setLogLevel(level: Level): void {
  if (!(level in rank)) throw new RangeError(`log level ${String(level)}: expected one of ${LEVELS.join(', ')}`);
  threshold = rank[level];
  process.env.VHOSTKIT_LOG = level;
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
    const rec = { level, time: Date.now(), msg, ...this.bound, ...fields };
    try {
      sink(rec);
    } catch (e) {
      // A sink that throws must not end what was logging (a session, a queue): the record
      // goes to stderr instead, with why.
      defaultSink(rec);
      defaultSink({ level: 'error', time: Date.now(), msg: 'log sink threw', error: e instanceof Error ? e.message : String(e) });
    }
  }
}

export const log = new Logger();
