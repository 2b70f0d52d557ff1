// `vhostkit run` as a child process and `vhostkit ctl` against it, for the tests that use them.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
export const run = promisify(execFile);

export interface Daemon {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

export function start(args: string[]): Daemon {
  const child = spawn(process.execPath, [cli, 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

export async function until(f: () => boolean, what: string, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function ctl(api: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run(process.execPath, [cli, 'ctl', '--api', api, ...args]);
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

export function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/**
 * The QEMU arguments `vhostkit run` printed for `name` (the line under "name:"). Under TCG,
 * `vectors=0` is added to virtio-net-pci, as the printed hint says (QEMU 7.2 crashes in
 * vhost-user-net with MSI-X there: docs/peers.md).
 */
export function printedQemuArgs(out: string, name: string, accel: 'tcg' | 'kvm'): string[] {
  const lines = out.split('\n');
  const i = lines.indexOf(`${name}:`);
  if (i < 0 || !lines[i + 1]?.startsWith('  -chardev')) throw new Error(`no QEMU arguments printed for ${name}:\n${out}`);
  const args = lines[i + 1].trim().split(/ +/);
  return accel === 'tcg' ? args.map((a) => (a.startsWith('virtio-net-pci,') ? `${a},vectors=0` : a)) : args;
}
