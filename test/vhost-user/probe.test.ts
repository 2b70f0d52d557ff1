// vhostkit probe on things that are not vhost-user backends: each failure said in plain words.
import { expect } from 'chai';
import { createServer as createHttp } from 'node:http';
import { createServer as createNet } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probe } from '../../src/vhost-user/probe.js';
import { listenUnix, closeFd } from '../../src/native/unix-socket.js';

describe('vhostkit probe: what is not a vhost-user backend', function () {
  this.timeout(20000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vk-probe-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const why = (p: Promise<unknown>) =>
    p.then(
      () => 'probed',
      (e: Error) => e.message,
    );

  it('says why in plain words: no file, not a socket, nobody listening, HTTP, silence', async () => {
    mkdirSync(join(dir, 'd'));
    writeFileSync(join(dir, 'f'), 'x');
    const stale = listenUnix(join(dir, 'stale.sock'));
    closeFd(stale);
    const http = createHttp((_q, r) => r.end('hello'));
    await new Promise<void>((r) => http.listen(join(dir, 'http.sock'), r));
    const silent = createNet(() => undefined);
    await new Promise<void>((r) => silent.listen(join(dir, 'silent.sock'), r));
    try {
      expect(await why(probe(join(dir, 'nope.sock')))).to.equal('no such file');
      expect(await why(probe(join(dir, 'd')))).to.equal('not a socket (it is a directory)');
      expect(await why(probe(join(dir, 'f')))).to.equal('not a socket (it is a regular file)');
      expect(await why(probe(join(dir, 'stale.sock')))).to.match(/^nothing listens on this socket/);
      expect(await why(probe(join(dir, 'http.sock')))).to.equal('not a vhost-user backend: it answered HTTP');
      expect(await why(probe(join(dir, 'silent.sock'), { timeoutMs: 300 }))).to.match(/^no answer within 300 ms: not a vhost-user backend/);
    } finally {
      http.close();
      silent.close();
    }
  });
});
