// Network namespaces for tests: the project's own test hosts, made and removed by the test
// run. Traffic stays inside them (and on loopback); nothing leaves the machine.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { recvMessage, socketPair, closeFd } from '../../src/native/unix-socket.js';

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** Why these tests cannot run here, or null. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync('/dev/net/tun')) return 'no /dev/net/tun';
  try {
    ip('-V');
  } catch {
    return 'no iproute2 (apt-get install iproute2)';
  }
  return null;
}

export class Netns {
  constructor(readonly name: string) {
    try {
      ip('netns', 'del', name);
    } catch {
      // not there
    }
    ip('netns', 'add', name);
    ip('-n', name, 'link', 'set', 'lo', 'up');
  }

  ip(...args: string[]): string {
    return ip('-n', this.name, ...args);
  }

  exec(...cmd: string[]): string {
    return ip('netns', 'exec', this.name, ...cmd);
  }

  /**
   * A UDP socket bound inside this namespace (made by a child process, passed back with
   * SCM_RIGHTS): a socket keeps the namespace it was made in.
   */
  udpSocket(address: string, port: number): number {
    const [mine, theirs] = socketPair();
    try {
      const hostIo = new URL('../../src/native/host-io.js', import.meta.url).href;
      const unix = new URL('../../src/native/unix-socket.js', import.meta.url).href;
      const code = `import { udpSocket } from '${hostIo}'; import { sendMessage } from '${unix}';
        const s = udpSocket({ address: '${address}', port: ${port}, reuseAddr: true });
        if (sendMessage(3, Uint8Array.of(1), [s.fd]) !== 1) process.exit(3);`;
      const r = spawnSync('ip', ['netns', 'exec', this.name, process.execPath, '--input-type=module', '-e', code], { env: process.env, stdio: ['ignore', 'pipe', 'pipe', theirs], timeout: 10000 });
      if (r.status !== 0) throw new Error(`socket in ${this.name} failed (${r.status}): ${r.stderr.toString()}`);
      const msg = recvMessage(mine, new Uint8Array(8), 1);
      if (msg === null || msg.fds.length !== 1) throw new Error(`socket in ${this.name}: nothing received`);
      return msg.fds[0];
    } finally {
      closeFd(mine);
      closeFd(theirs);
    }
  }

  delete(): void {
    try {
      ip('netns', 'del', this.name);
    } catch {
      // already gone
    }
  }
}

/** Replies busybox ping got in `ns` from `count` echo requests to addr (2 s each at most). */
export function pingCount(ns: Netns, addr: string, count: number): number {
  try {
    return Number(/(\d+) packets received/.exec(ns.exec('busybox', 'ping', '-c', String(count), '-A', '-W', '2', addr))?.[1] ?? 0);
  } catch (e) {
    return Number(/(\d+) packets received/.exec(String((e as { stdout?: Buffer }).stdout ?? ''))?.[1] ?? 0);
  }
}
