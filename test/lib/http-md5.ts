// An 8 MiB TCP transfer each way between two test namespaces, checked by md5: a node HTTP
// server in one (GET /f serves random bytes, POST /up answers the md5 and length of what it
// got) and a node client in the other.
import { spawn } from 'node:child_process';
import type { Netns } from './netns.js';

export const MIB8 = 8 << 20;

/** In `ns`: node serving 8 MiB at GET /f and answering POST /up with md5:length; resolves with the served md5 once listening. */
export function server(ns: Netns): Promise<{ md5: string; kill: () => void }> {
  const code = `import { createServer } from 'node:http'; import { createHash, randomBytes } from 'node:crypto';
    const data = randomBytes(${MIB8});
    createServer((req, res) => {
      if (req.method === 'GET') { res.writeHead(200, { 'content-length': data.length }); res.end(data); return; }
      const h = createHash('md5'); let n = 0;
      req.on('data', (c) => { h.update(c); n += c.length; });
      req.on('end', () => { const r = h.digest('hex') + ':' + n; res.writeHead(200, { 'content-length': r.length }); res.end(r); });
    }).listen(8080, () => console.log('ready ' + createHash('md5').update(data).digest('hex')));`;
  const c = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    c.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready ([0-9a-f]{32})/.exec(out);
      if (m) resolve({ md5: m[1], kill: () => c.kill() });
    });
    c.on('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
}

/** From `ns`: 8 MiB down and 8 MiB up to http://HOST:8080, md5s of both. */
export function client(ns: Netns, host: string): Promise<{ down: string; up: string; sent: string }> {
  const code = `const { createHash, randomBytes } = await import('node:crypto');
    const down = Buffer.from(await (await fetch('http://${host}:8080/f', { signal: AbortSignal.timeout(40000) })).arrayBuffer());
    const up = randomBytes(${MIB8});
    const r = await (await fetch('http://${host}:8080/up', { method: 'POST', body: up, signal: AbortSignal.timeout(40000) })).text();
    console.log(JSON.stringify({ down: createHash('md5').update(down).digest('hex') + ':' + down.length, up: r, sent: createHash('md5').update(up).digest('hex') + ':' + up.length }));`;
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let o = '';
    let e = '';
    c.stdout!.on('data', (d: Buffer) => (o += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (e += d.toString()));
    c.on('exit', (code) => (code === 0 ? resolve(JSON.parse(o) as { down: string; up: string; sent: string }) : reject(new Error(`client failed (${code}): ${e.slice(-1500)}`))));
  });
}
