// The one logger library code writes through. A line per event: level, time, message,
// and the bound context (session, port, queue...). The sink defaults to stderr as JSON
// lines and can be replaced (tests capture it; the daemon may send it elsewhere).

export type Level = 'debug' | 'info' | 'warn' | 'error';
const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogRecord {
  level: Level;
  time: number;
  msg: string;
  [key: string]: unknown;
}
export type LogSink = (rec: LogRecord) => void;

function stderrSink(rec: LogRecord): void {
  process.stderr.write(JSON.stringify(rec, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v)) + '\n');
}

let sink: LogSink = stderrSink;
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
