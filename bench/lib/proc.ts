// Running one measurement: a command (usually pinned with taskset) whose last stdout line
// is a JSON object.
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { registerExitCleanup } from '../../test/lib/process.js';

export function shellQuote(a: string): string {
  return /^[A-Za-z0-9_./:=@,+-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(argv: string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** Runs argv, resolves with the JSON object on its last stdout line. */
export function runJson<T>(argv: string[], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${commandLine(argv)}: ${err.message}\n${String(stderr).slice(-2000)}`));
        return;
      }
      const lines = String(stdout).trim().split('\n');
      try {
        resolve(JSON.parse(lines[lines.length - 1]) as T);
      } catch {
        reject(new Error(`${commandLine(argv)}: no JSON result in its output:\n${String(stdout).slice(-2000)}`));
      }
    });
  });
}

/** Progress on stderr, one line per step. */
export function progress(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Stops a child with SIGTERM (if it still runs) and waits for it to exit. */
export async function stopChild(p: ChildProcess | null): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await exited;
}

/**
 * Spawns argv as a child that does not outlive the bench: if the bench exits first (an
 * error, Ctrl-C), the child is killed with SIGKILL, which also ends it if it is stopped.
 */
export function spawnOwned(argv: string[], opts: SpawnOptions = { stdio: ['ignore', 'ignore', 'ignore'] }): ChildProcess {
  const p = spawn(argv[0], argv.slice(1), opts);
  const unregister = registerExitCleanup(() => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });
  p.once('exit', unregister);
  return p;
}
