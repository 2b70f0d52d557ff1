// tcpdump in a test's namespace, for what a test must see (or not see) on an underlay.
import { spawn } from 'node:child_process';
import type { Netns } from './netns.js';
import { until } from './wait.js';

/** In `ns`: tcpdump on eth0 of what `filter` takes (it decodes VXLAN on port 4789): what it printed so far, until stop() (which resolves with all of it). */
export async function capture(ns: Netns, filter: string): Promise<{ text: () => string; stop: () => Promise<string> }> {
  const c = spawn('ip', ['netns', 'exec', ns.name, 'tcpdump', '-l', '--immediate-mode', '-n', '-i', 'eth0', filter], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await until('tcpdump listening', 10_000, () => (err.includes('listening on') ? true : undefined));
  return {
    text: () => out,
    stop: () =>
      new Promise((resolve) => {
        c.on('exit', () => resolve(out));
        c.kill('SIGINT');
      }),
  };
}
