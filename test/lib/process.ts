// Child processes for tests and benchmarks: spawn a real peer, read its output, wait for it
// to become ready, stop it, and never leave it behind.
//
// - Output (stdout and stderr, interleaved in arrival order) is split into lines and kept
//   in a bounded in-memory log (the last ~1 MiB by default).
// - Every wait (`waitForLine`, `waitForPath`, `waitFor`) rejects with an Error carrying the
//   command line and the tail of the log when the process exits first or the time runs out.
// - `stop()` sends a signal, waits, escalates to SIGKILL, and resolves with {code, signal}.
// - Live children are SIGKILLed when Node exits (one `process.on('exit')` hook), and also when
//   Node is killed by SIGINT / SIGTERM / SIGHUP while nothing else listens for that signal
//   (the children are killed, then the signal is re-raised with its default action).
//   Callbacks registered with `registerExitCleanup` (temp dirs, for instance) run there too.
//
// stdin is an open pipe that is never written by default: some programs (dpdk-testpmd among
// them) exit as soon as stdin is at EOF.

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';

/** How a process ended. `error` is set when it could not be started at all. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

export type OutputStream = 'stdout' | 'stderr';
export type LineListener = (line: string, stream: OutputStream) => void;

export interface ManagedProcessOptions {
  /** Variables for the child. Merged over `process.env` unless `inheritEnv` is false. */
  env?: Record<string, string | undefined>;
  /** Default true. */
  inheritEnv?: boolean;
  cwd?: string;
  /** Bound of the in-memory log, in characters (default 1 MiB). Oldest lines are dropped. */
  maxLogBytes?: number;
  /** Called for every complete line of output (without the line terminator). */
  onLine?: LineListener;
  /** 'pipe' (default): an open pipe never written to; 'ignore': /dev/null (EOF at once). */
  stdin?: 'pipe' | 'ignore';
  /** A short name used in error messages (default: basename of argv[0]). */
  name?: string;
}

export interface WaitForLineOptions {
  /**
   * Absolute line number (see `lineCount`) from which lines count. Default 0: lines already
   * in the log match too, so a line printed before the call is not missed. Pass
   * `proc.lineCount` to wait for a new line only.
   */
  fromLine?: number;
}

export interface WaitForOptions {
  /** What is awaited, for the error message ("the socket /x to appear"). */
  what: string;
  timeoutMs: number;
  /** Re-evaluate the probe at this interval too (default 20 ms); 0: only on each new line. */
  pollMs?: number;
}

/** Rejection of a wait, or of a start: carries the command line and the tail of the log. */
export class ManagedProcessError extends Error {
  constructor(
    message: string,
    readonly commandLine: string,
    readonly logTail: string,
    readonly exitStatus: ExitStatus | null,
  ) {
    super(`${message}\ncommand: ${commandLine}\n--- last output ---\n${logTail || '(no output)'}\n--- end of output ---`);
    this.name = 'ManagedProcessError';
  }
}

const DEFAULT_MAX_LOG = 1024 * 1024;
const TAIL_CHARS = 4000;

// ---------------------------------------------------------------------------
// Process-wide registry of live children and exit cleanups
// ---------------------------------------------------------------------------

const liveProcesses = new Set<ManagedProcess>();
const exitCleanups = new Set<() => void>();
let hooksInstalled = false;

function runExitCleanup(): void {
  for (const p of liveProcesses) p.killNow('SIGKILL');
  liveProcesses.clear();
  for (const fn of exitCleanups) {
    try {
      fn();
    } catch {
      // Best effort: Node is exiting.
    }
  }
  exitCleanups.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', runExitCleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      // Someone else handles this signal: they decide whether Node exits (and if it does,
      // the 'exit' hook above cleans up). Otherwise do what the default action would have
      // done, after cleaning up: die by the same signal.
      if (process.listenerCount(sig) > 1) return;
      runExitCleanup();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

/**
 * Runs `fn` (synchronously) when Node exits, unless the returned function is called first
 * to unregister it. Used for temp dirs and other files that must not be left behind.
 */
export function registerExitCleanup(fn: () => void): () => void {
  installHooks();
  exitCleanups.add(fn);
  return () => {
    exitCleanups.delete(fn);
  };
}

/** The ManagedProcesses still running in this Node process. */
export function liveManagedProcesses(): ManagedProcess[] {
  return [...liveProcesses];
}

// ---------------------------------------------------------------------------
// PATH lookup
// ---------------------------------------------------------------------------

function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Full path of the executable `name` found on PATH (or `name` itself if it contains '/'), else null. */
export function whichOrNull(name: string): string | null {
  if (name.length === 0) return null;
  if (name.includes('/')) return isExecutableFile(name) ? name : null;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir.length === 0) continue;
    const candidate = join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return null;
}

/** True when `name` is an executable on PATH (or an executable path). */
export function commandExists(name: string): boolean {
  return whichOrNull(name) !== null;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** Quotes one argument for display as a POSIX shell word. */
export function shellQuote(arg: string): string {
  if (arg.length > 0 && /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

function withoutStatefulFlags(re: RegExp): RegExp {
  return re.global || re.sticky ? new RegExp(re.source, re.flags.replace(/[gy]/g, '')) : re;
}

function describeExit(s: ExitStatus): string {
  if (s.error) return `failed to start (${s.error.message})`;
  if (s.signal) return `was killed by ${s.signal}`;
  return `exited with code ${s.code}`;
}

// ---------------------------------------------------------------------------
// ManagedProcess
// ---------------------------------------------------------------------------

/** One spawned child process, its output, and its lifetime. */
export class ManagedProcess {
  readonly argv: readonly string[];
  readonly name: string;
  /** Undefined only when the spawn failed (then `exited` resolves with `error`). */
  readonly pid: number | undefined;
  /** Resolves (never rejects) once the process has exited and its output has been read. */
  readonly exited: Promise<ExitStatus>;
  /** Resolves when the process has started; rejects with a ManagedProcessError if it could not be. */
  readonly spawned: Promise<void>;

  private readonly child: ChildProcess;
  private readonly maxLog: number;
  private readonly lines: string[] = [];
  private logChars = 0;
  private firstLineNo = 0;
  private totalLines = 0;
  private readonly listeners = new Set<LineListener>();
  private readonly partial: Record<OutputStream, string> = { stdout: '', stderr: '' };
  private status: ExitStatus | null = null;
  private stopping: Promise<ExitStatus> | null = null;

  /** Spawns `argv[0]` with arguments `argv.slice(1)`. Prefer `await ManagedProcess.start(...)`. */
  constructor(argv: readonly string[], opts: ManagedProcessOptions = {}) {
    if (argv.length === 0) throw new Error('ManagedProcess: empty argv');
    this.argv = [...argv];
    this.name = opts.name ?? argv[0].split('/').pop() ?? argv[0];
    this.maxLog = opts.maxLogBytes ?? DEFAULT_MAX_LOG;
    if (opts.onLine) this.listeners.add(opts.onLine);

    const env = opts.inheritEnv === false ? { ...opts.env } : { ...process.env, ...opts.env };
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];

    installHooks();
    this.child = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd,
      env: env as NodeJS.ProcessEnv,
      stdio: [opts.stdin ?? 'pipe', 'pipe', 'pipe'],
    });
    this.pid = this.child.pid;
    if (this.pid !== undefined) liveProcesses.add(this);

    // A pipe to a child that has exited raises EPIPE on write; we never write, but be safe.
    this.child.stdin?.on('error', () => {});

    let exitResolve!: (s: ExitStatus) => void;
    this.exited = new Promise<ExitStatus>((resolve) => {
      exitResolve = resolve;
    });

    let spawnResolve!: () => void;
    let spawnReject!: (e: Error) => void;
    this.spawned = new Promise<void>((resolve, reject) => {
      spawnResolve = resolve;
      spawnReject = reject;
    });
    // A rejected `spawned` that nobody awaits must not become an unhandled rejection.
    this.spawned.catch(() => {});

    for (const stream of ['stdout', 'stderr'] as const) {
      const decoder = new StringDecoder('utf8');
      const readable = this.child[stream];
      readable?.on('data', (chunk: Buffer) => this.onData(stream, decoder.write(chunk)));
      readable?.on('end', () => {
        const rest = decoder.end();
        if (rest) this.onData(stream, rest);
        this.flushPartial(stream);
      });
    }

    let exitStatus: ExitStatus | null = null;
    let closeTimer: NodeJS.Timeout | null = null;
    const finish = (): void => {
      if (this.status || !exitStatus) return;
      if (closeTimer) clearTimeout(closeTimer);
      this.flushPartial('stdout');
      this.flushPartial('stderr');
      this.status = exitStatus;
      liveProcesses.delete(this);
      exitResolve(exitStatus);
    };

    this.child.on('spawn', () => spawnResolve());
    this.child.on('error', (err) => {
      // Either the spawn failed (no 'exit' will follow) or a kill failed (ignored).
      if (this.pid === undefined) {
        exitStatus = { code: null, signal: null, error: err };
        spawnReject(new ManagedProcessError(`${this.name}: could not start: ${err.message}`, this.commandLine, '', exitStatus));
        finish();
      }
    });
    this.child.on('exit', (code, signal) => {
      exitStatus = { code, signal };
      liveProcesses.delete(this);
      // Output may still be in the pipes: wait for 'close', but not forever (a grandchild
      // that inherited the pipes would hold them open).
      closeTimer = setTimeout(finish, 1000);
      closeTimer.unref();
    });
    this.child.on('close', (code, signal) => {
      exitStatus ??= { code, signal };
      finish();
    });
  }

  /** Spawns and waits until the process has started (rejects if the executable cannot be run). */
  static async start(argv: readonly string[], opts: ManagedProcessOptions = {}): Promise<ManagedProcess> {
    const p = new ManagedProcess(argv, opts);
    await p.spawned;
    return p;
  }

  /** The command line, shell-quoted, for messages and logs. */
  get commandLine(): string {
    return this.argv.map(shellQuote).join(' ');
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.status === null && this.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** How it exited, or null while it runs. */
  get exitStatus(): ExitStatus | null {
    return this.status;
  }

  /** Number of lines seen so far (including lines dropped from the bounded log). */
  get lineCount(): number {
    return this.totalLines;
  }

  /** The retained log as text (lines joined with '\n'). */
  log(): string {
    return this.lines.join('\n');
  }

  /** Retained lines with absolute line number >= fromLine. */
  linesSince(fromLine = 0): string[] {
    return this.lines.slice(Math.max(0, fromLine - this.firstLineNo));
  }

  /** The last `maxChars` characters of the log. */
  tail(maxChars = TAIL_CHARS): string {
    const out: string[] = [];
    let n = 0;
    for (let i = this.lines.length - 1; i >= 0 && n < maxChars; i--) {
      out.push(this.lines[i]);
      n += this.lines[i].length + 1;
    }
    const text = out.reverse().join('\n');
    return text.length > maxChars ? text.slice(text.length - maxChars) : text;
  }

  /** Adds a line listener; returns a function that removes it. */
  onLine(listener: LineListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Sends a signal now if the process runs; returns whether it was sent. */
  killNow(signal: NodeJS.Signals = 'SIGKILL'): boolean {
    if (!this.running) return false;
    try {
      return this.child.kill(signal);
    } catch {
      return false;
    }
  }

  /** An Error with the command line and log tail. */
  error(message: string): ManagedProcessError {
    return new ManagedProcessError(`${this.name}: ${message}`, this.commandLine, this.tail(), this.status);
  }

  /**
   * Resolves with the first non-undefined/null/false value of `probe`, evaluated now, after
   * each new line of output and every `pollMs`. Rejects (ManagedProcessError) when the
   * process exits first or `timeoutMs` passes, or with the probe's own error if it throws.
   */
  waitFor<T>(probe: () => T | null | undefined | false | Promise<T | null | undefined | false>, opts: WaitForOptions): Promise<T> {
    const pollMs = opts.pollMs ?? 20;
    return new Promise<T>((resolve, reject) => {
      let done = false;
      let evaluating = false;
      let again = false;
      const timers: NodeJS.Timeout[] = [];
      let unsubscribe: (() => void) | null = null;
      const settle = (fn: () => void): void => {
        if (done) return;
        done = true;
        for (const t of timers) clearTimeout(t);
        unsubscribe?.();
        fn();
      };
      const evaluate = (): void => {
        if (done) return;
        if (evaluating) {
          again = true;
          return;
        }
        evaluating = true;
        let result: T | null | undefined | false | Promise<T | null | undefined | false>;
        try {
          result = probe();
        } catch (e) {
          settle(() => reject(e));
          return;
        }
        Promise.resolve(result).then(
          (v) => {
            evaluating = false;
            if (v !== undefined && v !== null && v !== false) settle(() => resolve(v));
            else if (again) {
              again = false;
              evaluate();
            } else if (this.status) {
              const st = this.status;
              settle(() => reject(this.error(`${describeExit(st)} before ${opts.what}`)));
            }
          },
          (e) => {
            evaluating = false;
            settle(() => reject(e));
          },
        );
      };
      unsubscribe = this.onLine(() => evaluate());
      timers.push(setTimeout(() => settle(() => reject(this.error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`))), opts.timeoutMs));
      if (pollMs > 0) timers.push(setInterval(evaluate, pollMs));
      // After exit, evaluate once more (lines flushed at exit may satisfy the probe), then fail.
      void this.exited.then(() => evaluate());
      evaluate();
    });
  }

  /**
   * Resolves with the match of the first line (from `opts.fromLine`, default: the start of
   * the retained log) that matches `regex`. Rejects if the process exits first or after
   * `timeoutMs`, with the command line and the tail of the log in the message.
   */
  waitForLine(regex: RegExp, timeoutMs: number, opts: WaitForLineOptions = {}): Promise<RegExpMatchArray> {
    const re = withoutStatefulFlags(regex);
    let next = opts.fromLine ?? 0;
    return this.waitFor<RegExpMatchArray>(
      () => {
        const lines = this.linesSince(next);
        next = this.totalLines;
        for (const line of lines) {
          const m = line.match(re);
          if (m) return m;
        }
        return undefined;
      },
      { what: `a line matching ${regex}`, timeoutMs, pollMs: 0 },
    );
  }

  /** Resolves once `path` exists (by default any file type; `socket: true` requires a socket). */
  waitForPath(path: string, timeoutMs: number, opts: { socket?: boolean } = {}): Promise<void> {
    return this.waitFor<true>(
      () => {
        try {
          const st = statSync(path);
          return opts.socket ? st.isSocket() : true;
        } catch {
          return false;
        }
      },
      { what: `${opts.socket ? 'the socket' : 'the path'} ${path} to appear`, timeoutMs },
    ).then(() => undefined);
  }

  /**
   * Sends `signal`, waits up to `graceMs` for the process to exit, then sends SIGKILL.
   * Resolves with how it exited (immediately if it already had). Rejects only if the
   * process survives 10 s after SIGKILL (uninterruptible sleep).
   */
  stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<ExitStatus> {
    if (this.status) return Promise.resolve(this.status);
    this.stopping ??= (async () => {
      this.killNow(signal);
      const first = await raceTimeout(this.exited, graceMs);
      if (first) return first;
      this.killNow('SIGKILL');
      const second = await raceTimeout(this.exited, 10_000);
      if (second) return second;
      throw this.error(`still alive 10 s after SIGKILL`);
    })();
    return this.stopping;
  }

  // -------------------------------------------------------------------------

  private onData(stream: OutputStream, text: string): void {
    if (!text) return;
    const buf = this.partial[stream] + text;
    const parts = buf.split('\n');
    this.partial[stream] = parts.pop() ?? '';
    for (const p of parts) this.addLine(p.endsWith('\r') ? p.slice(0, -1) : p, stream);
    // A line with no end must not grow without bound.
    if (this.partial[stream].length > this.maxLog) {
      const long = this.partial[stream];
      this.partial[stream] = '';
      this.addLine(long.slice(long.length - this.maxLog), stream);
    }
  }

  private flushPartial(stream: OutputStream): void {
    const rest = this.partial[stream];
    if (rest.length > 0) {
      this.partial[stream] = '';
      this.addLine(rest.endsWith('\r') ? rest.slice(0, -1) : rest, stream);
    }
  }

  private addLine(line: string, stream: OutputStream): void {
    this.lines.push(line);
    this.logChars += line.length + 1;
    this.totalLines++;
    while (this.logChars > this.maxLog && this.lines.length > 1) {
      this.logChars -= (this.lines.shift() as string).length + 1;
      this.firstLineNo++;
    }
    for (const l of [...this.listeners]) {
      try {
        l(line, stream);
      } catch {
        // A listener's bug must not break output capture.
      }
    }
  }
}

function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | null> {
  return new Promise<T | null>((resolve) => {
    const t = setTimeout(() => resolve(null), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      () => {
        clearTimeout(t);
        resolve(null);
      },
    );
  });
}
