// The backend under test, seen from outside: a socket, and when we know it, the process
// behind it. With --spawn we start that process ourselves (through `sh -c`, in its own
// process group), see it die and with which signal, and start it again; without, we find
// the process that listens on the socket (SO_PEERCRED of a connection) to count its fds,
// and a crash shows as the socket that no longer accepts.
import { spawn, type ChildProcess } from 'node:child_process';
import { lstatSync, readdirSync, unlinkSync } from 'node:fs';
import { closeFd, connectUnix, peerCredentials } from '../native/unix-socket.js';
import { isEagain } from './connect.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How a spawned backend ended. */
export interface BackendExit {
  code: number | null;
  /** the signal that killed it (from the shell's 128+N when it did not exec) */
  signal: string | null;
}

/** Whether something listens on `socket` now: a connect() succeeds (closed at once) or finds the backlog full. */
export function canConnect(socket: string): boolean {
  try {
    closeFd(connectUnix(socket));
    return true;
  } catch (e) {
    return isEagain(e);
  }
}

/** The pid of the process that listens on `socket` (it made the listening socket), or null. */
export function listenerPid(socket: string): number | null {
  let fd: number;
  try {
    fd = connectUnix(socket);
  } catch {
    return null;
  }
  try {
    const pid = peerCredentials(fd).pid;
    return pid > 0 ? pid : null;
  } catch {
    return null;
  } finally {
    closeFd(fd);
  }
}

/** Open fds of process `pid` (from /proc/PID/fd), or null if it cannot be read. */
export function fdCountOf(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

const SIGNALS: Record<number, string> = {
  1: 'SIGHUP',
  2: 'SIGINT',
  3: 'SIGQUIT',
  4: 'SIGILL',
  5: 'SIGTRAP',
  6: 'SIGABRT',
  7: 'SIGBUS',
  8: 'SIGFPE',
  9: 'SIGKILL',
  11: 'SIGSEGV',
  13: 'SIGPIPE',
  15: 'SIGTERM',
};

export interface BackendProcessOptions {
  socket: string;
  /** a shell command that starts the backend listening on `socket` (--spawn) */
  spawn?: string;
  /** ms to wait for a spawned backend's socket to accept (default 20000) */
  readyTimeoutMs?: number;
  /** each line of the spawned backend's output (default: dropped) */
  onOutput?: (line: string) => void;
}

export class BackendProcess {
  private child: ChildProcess | null = null;
  private exitInfo: BackendExit | null = null;
  private pidCache: number | null = null;
  /** times the backend was started (spawn) */
  starts = 0;
  /** the last lines the spawned backend printed */
  private tail: string[] = [];

  constructor(readonly o: BackendProcessOptions) {}

  get spawned(): boolean {
    return this.o.spawn !== undefined;
  }

  /** Starts the spawned backend (no-op without --spawn) and waits until its socket accepts. */
  async start(): Promise<void> {
    if (this.o.spawn === undefined) {
      if (!canConnect(this.o.socket)) throw new Error(`${this.o.socket}: nothing accepts connections there (give --spawn CMD to start the backend)`);
      // A full backlog (EAGAIN) hides the listener for a moment: ask again for up to 1 s.
      const deadline = Date.now() + 1000;
      while ((this.pidCache = listenerPid(this.o.socket)) === null && Date.now() < deadline) await sleep(20);
      return;
    }
    this.removeStaleSocket();
    this.exitInfo = null;
    this.tail = [];
    const child = spawn('/bin/sh', ['-c', this.o.spawn], { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.starts++;
    const lines = (d: Buffer): void => {
      for (const l of d.toString().split('\n')) {
        if (!l) continue;
        this.tail.push(l);
        if (this.tail.length > 5) this.tail.shift();
        this.o.onOutput?.(l);
      }
    };
    child.stdout?.on('data', lines);
    child.stderr?.on('data', lines);
    child.on('error', () => undefined);
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      const sig = signal ?? (code !== null && code > 128 && SIGNALS[code - 128] ? SIGNALS[code - 128] : null);
      this.exitInfo = { code: signal ? null : code, signal: sig };
    });
    const deadline = Date.now() + (this.o.readyTimeoutMs ?? 20000);
    while (!canConnect(this.o.socket)) {
      if (this.exitInfo) throw new Error(`the backend exited before it listened on ${this.o.socket} (${describeExit(this.exitInfo)})`);
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`the backend did not listen on ${this.o.socket} within ${this.o.readyTimeoutMs ?? 20000} ms`);
      }
      await sleep(20);
    }
    this.pidCache = listenerPid(this.o.socket) ?? child.pid ?? null;
  }

  /** A stale socket file (nothing accepts on it) is removed before a restart: some backends refuse to bind over one. */
  private removeStaleSocket(): void {
    try {
      if (lstatSync(this.o.socket).isSocket() && !canConnect(this.o.socket)) unlinkSync(this.o.socket);
    } catch {
      // no file
    }
  }

  /** The backend's pid, when known (spawned, or found through the socket). */
  get pid(): number | null {
    return this.pidCache;
  }

  /** Open fds of the backend, or null when they cannot be counted. */
  fdCount(): number | null {
    return this.pidCache === null ? null : fdCountOf(this.pidCache);
  }

  /**
   * Whether the backend is gone: the spawned child exited, or (not spawned) the process
   * that listened has gone or the socket refuses. Returns how, or null if it is alive.
   */
  dead(): string | null {
    if (this.spawned) {
      if (this.exitInfo) return describeExit(this.exitInfo);
      if (!canConnect(this.o.socket)) return 'its socket refuses connections';
      return null;
    }
    if (this.pidCache !== null && fdCountOf(this.pidCache) === null) return `process ${this.pidCache} has gone`;
    if (!canConnect(this.o.socket)) return 'its socket refuses connections';
    return null;
  }

  /**
   * dead(), waiting up to `ms` for a spawned backend that stopped accepting to exit, so that
   * its signal is known; with the last line it printed.
   */
  async deathCause(ms = 1000): Promise<string | null> {
    let d = this.dead();
    if (d === null) return null;
    const deadline = Date.now() + ms;
    while (this.spawned && this.exitInfo === null && Date.now() < deadline) {
      await sleep(20);
      d = this.dead();
    }
    if (d === null) return null;
    const last = this.tail.at(-1);
    return last ? `${d}; it printed: ${last.slice(0, 200)}` : d;
  }

  /** After a crash: kill what is left of the spawned backend and start it again (spawn only). */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stops a spawned backend: SIGTERM to its process group, SIGKILL after 3 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.pid === undefined) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      killGroup(child.pid, 'SIGTERM');
      const t = setTimeout(() => killGroup(child.pid!, 'SIGKILL'), 3000);
      await gone;
      clearTimeout(t);
    }
    killGroup(child.pid, 'SIGKILL'); // whatever the shell left in the group
    child.stdin?.destroy();
    child.stdout?.destroy();
    child.stderr?.destroy();
  }
}

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // already gone
  }
}

export function describeExit(e: BackendExit): string {
  return e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`;
}
