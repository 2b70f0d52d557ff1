import { expect } from 'chai';
import { closeSync, fstatSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { EventFd } from '../../src/native/eventfd.js';
import {
  acceptUnix,
  closeFd,
  connectUnix,
  FdWatcher,
  listenUnix,
  MAX_FDS_PER_MESSAGE,
  peerCredentials,
  recvMessage,
  sendMessage,
  socketPair,
} from '../../src/native/unix-socket.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const openFdCount = (): number => readdirSync('/proc/self/fd').length;
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array, n: number): string => new TextDecoder().decode(b.subarray(0, n));
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function expectErrno(fn: () => unknown, code: string, syscall: string): NodeJS.ErrnoException {
  try {
    fn();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    expect(e.code, e.message).to.equal(code);
    expect(e.errno).to.equal(-(constants.errno as Record<string, number>)[code]);
    expect(e.syscall).to.equal(syscall);
    expect(e.message).to.contain(code).and.contain(syscall);
    return e;
  }
  return expect.fail(`expected ${code} from ${syscall}`);
}

describe('unix sockets', () => {
  let dir: string;
  const fds: number[] = [];
  function track(fd: number): number;
  function track<T extends number[]>(list: T): T;
  function track(x: number | number[]): number | number[] {
    if (typeof x === 'number') fds.push(x);
    else fds.push(...x);
    return x;
  }
  /** Stops tracking fds the test closes (or hands over) itself. */
  const untrack = (...closed: number[]): void => {
    for (const fd of closed) fds.splice(fds.indexOf(fd), 1);
  };
  const watchers: FdWatcher[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vhostkit-uds-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  afterEach(() => {
    for (const w of watchers.splice(0)) w.close();
    for (const fd of fds.splice(0)) {
      try {
        closeFd(fd);
      } catch {
        // closed by the test itself
      }
    }
  });

  /** n temp files with distinct contents, opened read-only. */
  function openFiles(n: number, tag: string): { fds: number[]; contents: string[] } {
    const contents: string[] = [];
    const opened: number[] = [];
    for (let i = 0; i < n; i++) {
      const path = join(dir, `${tag}-${i}`);
      contents.push(`file ${tag} #${i}`);
      writeFileSync(path, contents[i]);
      opened.push(openSync(path, 'r'));
    }
    return { fds: opened, contents };
  }

  describe('socketPair / sendMessage / recvMessage', () => {
    it('moves bytes both ways and returns null (EAGAIN) on an empty socket', () => {
      const [a, b] = track(socketPair());
      const buf = new Uint8Array(64);
      expect(recvMessage(b, buf, 0)).to.equal(null);
      expect(sendMessage(a, bytes('ping'))).to.equal(4);
      expect(recvMessage(b, buf, 0)).to.deep.equal({ bytes: 4, fds: [], fdsTruncated: false });
      expect(text(buf, 4)).to.equal('ping');
      expect(recvMessage(b, buf, 4)).to.equal(null);
      expect(sendMessage(b, bytes('pong'))).to.equal(4);
      expect(recvMessage(a, buf, 0)?.bytes).to.equal(4);
      expect(text(buf, 4)).to.equal('pong');
    });

    it('receives into a subarray at its offset only', () => {
      const [a, b] = track(socketPair());
      const backing = new Uint8Array(16).fill(0xee);
      sendMessage(a, bytes('abcdefgh'));
      const r = recvMessage(b, backing.subarray(4, 8), 0);
      expect(r?.bytes).to.equal(4);
      expect([...backing]).to.deep.equal([
        0xee, 0xee, 0xee, 0xee, 0x61, 0x62, 0x63, 0x64, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
      ]);
      expect(recvMessage(b, backing, 0)?.bytes).to.equal(4); // the rest stays queued
    });

    for (let n = 1; n <= 8; n++) {
      it(`passes ${n} file fd(s) that refer to the same files`, () => {
        const [a, b] = track(socketPair());
        const files = openFiles(n, `pass${n}`);
        track(files.fds);
        const before = openFdCount();
        expect(sendMessage(a, bytes('msg'), files.fds)).to.equal(3);
        const buf = new Uint8Array(16);
        const r = recvMessage(b, buf, 8);
        expect(r).to.not.equal(null);
        const got = track(r!.fds);
        expect(r!.bytes).to.equal(3);
        expect(r!.fdsTruncated).to.equal(false);
        expect(got).to.have.length(n);
        expect(openFdCount()).to.equal(before + n);
        for (let i = 0; i < n; i++) {
          expect(files.fds).to.not.include(got[i]);
          const want = fstatSync(files.fds[i]);
          const have = fstatSync(got[i]);
          expect([have.dev, have.ino]).to.deep.equal([want.dev, want.ino]);
          const data = Buffer.alloc(64);
          const len = readSync(got[i], data, 0, data.length, 0);
          expect(data.toString('utf8', 0, len)).to.equal(files.contents[i]);
        }
      });
    }

    it('passes eventfds and sockets: the received fds are live duplicates', () => {
      const [a, b] = track(socketPair());
      const [c, d] = track(socketPair());
      const kick = new EventFd();
      try {
        sendMessage(a, bytes('x'), [kick.fd, c]);
        const r = recvMessage(b, new Uint8Array(4), 2)!;
        expect(r.fds).to.have.length(2);
        const [kick2, c2] = track(r.fds);
        const adopted = EventFd.adopt(kick2);
        untrack(kick2); // owned by `adopted` now
        adopted.write(5n);
        expect(kick.read()).to.equal(5n);
        adopted.close();
        sendMessage(c2, bytes('via dup'));
        const buf = new Uint8Array(16);
        expect(recvMessage(d, buf, 0)?.bytes).to.equal(7);
        expect(text(buf, 7)).to.equal('via dup');
      } finally {
        kick.close();
      }
    });

    for (const [sent, maxFds] of [
      [5, 2],
      [2, 1], // CMSG_SPACE(1 fd) has room for 2: the native side closes the extra
      [3, 1],
      [3, 0], // no control buffer at all
      [MAX_FDS_PER_MESSAGE, 7],
    ] as const) {
      it(`sending ${sent} fds to a receiver taking ${maxFds}: truncated, extras not leaked`, () => {
        const [a, b] = track(socketPair());
        const files = openFiles(sent, `trunc${sent}-${maxFds}`);
        track(files.fds);
        const before = openFdCount();
        sendMessage(a, bytes('hdr'), files.fds);
        sendMessage(a, bytes('next'));
        const buf = new Uint8Array(3);
        const r = recvMessage(b, buf, maxFds)!;
        track(r.fds);
        expect(r.bytes).to.equal(3);
        expect(r.fdsTruncated).to.equal(true);
        expect(r.fds).to.have.length(maxFds);
        expect(openFdCount()).to.equal(before + maxFds);
        for (let i = 0; i < maxFds; i++) {
          expect(fstatSync(r.fds[i]).ino).to.equal(fstatSync(files.fds[i]).ino);
        }
        // The stream stays aligned: the next message follows, with no fds.
        const r2 = recvMessage(b, new Uint8Array(8), 8)!;
        expect(r2).to.deep.equal({ bytes: 4, fds: [], fdsTruncated: false });
        for (const fd of r.fds) closeFd(fd);
        untrack(...r.fds);
        expect(openFdCount()).to.equal(before);
      });
    }

    it('fds that arrive with a message the receiver rejects are closed and do not leak', () => {
      const [a, b] = track(socketPair());
      const files = openFiles(4, 'reject');
      track(files.fds);
      const before = openFdCount();
      // A toy reader: accepts 'OK' messages, rejects anything else and closes its fds.
      const readOne = (): { ok: boolean; fds: number[] } => {
        const buf = new Uint8Array(2);
        const r = recvMessage(b, buf, 8)!;
        const ok = r.bytes === 2 && text(buf, 2) === 'OK' && !r.fdsTruncated;
        if (!ok) for (const fd of r.fds) closeFd(fd);
        return { ok, fds: ok ? r.fds : [] };
      };
      sendMessage(a, bytes('NO'), files.fds);
      expect(readOne().ok).to.equal(false);
      expect(openFdCount()).to.equal(before);
      sendMessage(a, bytes('OK'), files.fds.slice(0, 2));
      const good = readOne();
      expect(good.ok).to.equal(true);
      expect(good.fds).to.have.length(2);
      expect(openFdCount()).to.equal(before + 2);
      for (const fd of good.fds) closeFd(fd);
      expect(openFdCount()).to.equal(before);
    });

    it('fds still in flight when both ends close are released', () => {
      const files = openFiles(3, 'inflight');
      track(files.fds);
      const before = openFdCount();
      const [a, b] = socketPair();
      sendMessage(a, bytes('unread'), files.fds);
      closeFd(a);
      closeFd(b);
      expect(openFdCount()).to.equal(before);
    });

    it('reports a peer close as 0 bytes', () => {
      const [a, b] = track(socketPair());
      sendMessage(a, bytes('last'));
      closeFd(a);
      untrack(a);
      const buf = new Uint8Array(8);
      expect(recvMessage(b, buf, 4)?.bytes).to.equal(4);
      expect(recvMessage(b, buf, 4)).to.deep.equal({ bytes: 0, fds: [], fdsTruncated: false });
      expect(recvMessage(b, buf, 4)?.bytes).to.equal(0);
    });

    it('returns null (EAGAIN) when the send buffer is full, and EPIPE without SIGPIPE after a close', () => {
      const [a, b] = track(socketPair());
      const chunk = new Uint8Array(65536);
      let total = 0;
      for (let i = 0; i < 10000; i++) {
        const n = sendMessage(a, chunk);
        if (n === null) break;
        total += n;
      }
      expect(total).to.be.greaterThan(0);
      expect(sendMessage(a, chunk)).to.equal(null);
      closeFd(b);
      untrack(b);
      expectErrno(() => sendMessage(a, chunk), 'EPIPE', 'sendmsg');
    });

    it('validates arguments before any syscall', () => {
      const [a, b] = track(socketPair());
      const many = Array.from({ length: MAX_FDS_PER_MESSAGE + 1 }, () => a);
      expect(MAX_FDS_PER_MESSAGE).to.equal(32);
      expect(() => sendMessage(a, bytes('x'), many)).to.throw(RangeError, /at most 32/);
      expect(() => sendMessage(a, new Uint8Array(0), [a])).to.throw(RangeError);
      expect(() => sendMessage(a, bytes('x'), [-1])).to.throw(TypeError);
      expect(() => recvMessage(b, new Uint8Array(0), 1)).to.throw(RangeError);
      expect(() => recvMessage(b, new Uint8Array(1), 33)).to.throw(RangeError);
      expect(() => recvMessage(b, new Uint8Array(1), -1)).to.throw(RangeError);
      expect(recvMessage(b, new Uint8Array(1), 1)).to.equal(null); // nothing was sent
      expectErrno(() => recvMessage(1 << 30, new Uint8Array(1), 0), 'EBADF', 'recvmsg');
    });

    it('reports the peer credentials', () => {
      const [a, b] = track(socketPair());
      const cred = peerCredentials(a);
      expect(cred).to.deep.equal({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
      expect(peerCredentials(b).pid).to.equal(process.pid);
    });

    it('leaks no fd over 1000 socketpair/send/recv/close cycles', () => {
      const files = openFiles(2, 'cycle');
      track(files.fds);
      const before = openFdCount();
      const buf = new Uint8Array(8);
      for (let i = 0; i < 1000; i++) {
        const [a, b] = socketPair();
        expect(sendMessage(a, bytes('cycle'), i % 3 === 0 ? [] : files.fds)).to.equal(5);
        const r = recvMessage(b, buf, i % 2)!; // odd cycles take 1 fd, even cycles none
        expect(r.bytes).to.equal(5);
        expect(r.fdsTruncated).to.equal(i % 3 !== 0);
        for (const fd of r.fds) closeFd(fd);
        if (i % 5 === 0) sendMessage(b, bytes('unread'), files.fds); // left in flight
        closeFd(a);
        closeFd(b);
      }
      expect(openFdCount()).to.equal(before);
    });
  });

  describe('listenUnix / connectUnix / acceptUnix', () => {
    it('round-trips a connection through a socket path', () => {
      const path = join(dir, 'rt.sock');
      const server = track(listenUnix(path));
      expect(acceptUnix(server)).to.equal(null);
      const client = track(connectUnix(path));
      const conn = track(acceptUnix(server)!);
      expect(conn).to.be.a('number');
      expect(acceptUnix(server)).to.equal(null);
      const files = openFiles(1, 'rt');
      track(files.fds);
      sendMessage(client, bytes('hello'), files.fds);
      const buf = new Uint8Array(8);
      const r = recvMessage(conn, buf, 1)!;
      track(r.fds);
      expect(text(buf, r.bytes)).to.equal('hello');
      expect(fstatSync(r.fds[0]).ino).to.equal(fstatSync(files.fds[0]).ino);
      expect(peerCredentials(conn).pid).to.equal(process.pid);
    });

    it('does not unlink an existing path: EADDRINUSE', () => {
      const path = join(dir, 'busy.sock');
      track(listenUnix(path));
      expectErrno(() => listenUnix(path), 'EADDRINUSE', 'listen');
      const file = join(dir, 'plain-file');
      writeFileSync(file, 'keep me');
      expectErrno(() => listenUnix(file), 'EADDRINUSE', 'listen');
      expect(readdirSync(dir)).to.include('plain-file');
    });

    it('throws ENOENT with code, errno, syscall and path for a missing path', () => {
      const path = join(dir, 'missing', 'nothing.sock');
      const e = expectErrno(() => connectUnix(path), 'ENOENT', 'connect');
      expect(e.path).to.equal(path);
      expect(e.message).to.equal(`ENOENT: no such file or directory, connect '${path}'`);
    });

    it('throws ECONNREFUSED when nobody listens on the path', () => {
      const path = join(dir, 'stale.sock');
      const server = listenUnix(path);
      closeFd(server); // the socket file stays behind
      expectErrno(() => connectUnix(path), 'ECONNREFUSED', 'connect');
    });

    it('rejects paths sun_path cannot hold, and bad paths', () => {
      expectErrno(() => listenUnix(join(dir, 'x'.repeat(120))), 'ENAMETOOLONG', 'listen');
      expectErrno(() => connectUnix('/tmp/' + 'y'.repeat(103)), 'ENAMETOOLONG', 'connect');
      expectErrno(() => connectUnix(''), 'EINVAL', 'connect');
      expectErrno(() => connectUnix('/tmp/a\0b'), 'EINVAL', 'connect');
    });
  });

  describe('FdWatcher', () => {
    function watch(fd: number, callback: (r: boolean, w: boolean, e: number) => void): FdWatcher {
      const w = new FdWatcher(fd, callback);
      watchers.push(w);
      return w;
    }

    it('fires when the fd becomes readable, and not after stop()', async () => {
      const [a, b] = track(socketPair());
      const events: Array<[boolean, boolean, number]> = [];
      const w = watch(b, (r, wr, e) => events.push([r, wr, e]));
      w.start(true, false);
      expect(w.active).to.equal(true);
      await sleep(20);
      expect(events).to.deep.equal([]);
      sendMessage(a, bytes('wake'));
      for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
      expect(events[0]).to.deep.equal([true, false, 0]);
      w.stop();
      expect(w.active).to.equal(false);
      const seen = events.length;
      await sleep(30); // data is still unread: a live level-triggered watcher would fire again
      expect(events.length).to.equal(seen);
      w.start(true, false);
      for (let i = 0; i < 100 && events.length === seen; i++) await sleep(5);
      expect(events.length).to.be.greaterThan(seen);
      w.close();
      w.close();
      expect(w.active).to.equal(false);
      expect(() => w.start(true, false)).to.throw(/after close/);
    });

    it('reports writability', async () => {
      const [a] = track(socketPair());
      const events: Array<[boolean, boolean]> = [];
      const w = watch(a, (r, wr) => {
        events.push([r, wr]);
        w.stop();
      });
      w.start(false, true);
      for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
      expect(events).to.deep.equal([[false, true]]);
    });

    it('can be closed inside its own callback', async () => {
      const [a, b] = track(socketPair());
      let calls = 0;
      const w = watch(b, () => {
        calls++;
        w.close();
        w.close();
        expect(w.active).to.equal(false);
        gc(); // nothing the native side still needs may be collected here
      });
      w.start(true, false);
      sendMessage(a, bytes('x')); // never read: would fire on every loop turn if still polled
      for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
      await sleep(30);
      for (let i = 0; i < 5; i++) await turn();
      expect(calls).to.equal(1);
    });

    it('keeps firing while started even when nothing references it, until closed', async () => {
      const [a, b] = track(socketPair());
      let calls = 0;
      let drained = 0;
      let self: FdWatcher | undefined;
      (() => {
        const w = new FdWatcher(b, () => {
          calls++;
          const r = recvMessage(b, new Uint8Array(64), 0);
          drained += r?.bytes ?? 0;
          if (drained >= 6) {
            self = w;
            w.close();
          }
        });
        w.start(true, false);
      })();
      for (let i = 0; i < 3; i++) {
        gc();
        await turn();
      }
      sendMessage(a, bytes('abc'));
      for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
      expect(calls).to.be.greaterThan(0);
      gc();
      sendMessage(a, bytes('def'));
      for (let i = 0; i < 100 && self === undefined; i++) await sleep(5);
      expect(drained).to.equal(6);
      expect(self?.active).to.equal(false);
    });

    it('lets a stopped, unreferenced watcher be collected even if its callback captures it', async () => {
      const [, b] = track(socketPair());
      let collected = 0;
      const registry = new FinalizationRegistry<number>(() => {
        collected++;
      });
      (() => {
        for (let i = 0; i < 10; i++) {
          const w: FdWatcher = new FdWatcher(b, () => w.stop());
          w.start(true, false);
          w.stop();
          registry.register(w, i);
        }
      })();
      for (let i = 0; i < 50 && collected < 10; i++) {
        gc();
        await sleep(2);
      }
      expect(collected).to.equal(10);
    });

    it('survives collection of stopped, never-closed watchers', async () => {
      const [, b] = track(socketPair());
      for (let i = 0; i < 200; i++) {
        const w = new FdWatcher(b, () => undefined);
        if (i % 2 === 0) {
          w.start(true, true);
          w.stop();
        }
      }
      for (let i = 0; i < 5; i++) {
        gc();
        await turn();
      }
      // The loop is healthy and the fd is still watchable afterwards.
      let fired = false;
      watch(b, () => {
        fired = true;
      }).start(false, true);
      for (let i = 0; i < 100 && !fired; i++) await sleep(5);
      expect(fired).to.equal(true);
    });

    it('reports a poll error (peer reset) once and stops itself', async () => {
      const [a, b] = track(socketPair());
      sendMessage(a, bytes('never read by b'));
      const events: Array<[boolean, boolean, number]> = [];
      const w = watch(a, (r, wr, e) => events.push([r, wr, e]));
      w.start(true, false);
      closeFd(b); // b closes with unread data: a gets ECONNRESET (EPOLLERR)
      untrack(b);
      for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
      await sleep(20);
      expect(events).to.have.length(1);
      expect(events[0][0]).to.equal(true);
      expect(events[0][2]).to.be.greaterThan(0);
      expect(w.active).to.equal(false);
      expectErrno(() => recvMessage(a, new Uint8Array(4), 0), 'ECONNRESET', 'recvmsg');
    });

    it('lets a worker thread exit with watchers still open (async cleanup hook)', function () {
      this.timeout(20000);
      // In a child process whose main thread never loads the addon, so that the worker's exit
      // really unloads it: libuv must not call into the addon after that.
      const moduleUrl = new URL('../../src/native/unix-socket.js', import.meta.url).href;
      const workerCode = `
        import(${JSON.stringify(moduleUrl)}).then(({ socketPair, sendMessage, FdWatcher }) => {
          const keep = [];
          for (let i = 0; i < 20; i++) {
            const [a, b] = socketPair();
            const w = new FdWatcher(b, () => {});
            if (i % 2) w.start(true, true); // active ones fire on every loop turn
            sendMessage(a, new Uint8Array([i]));
            keep.push(w);
          }
          setTimeout(() => process.exit(0), 10);
        });`;
      const mainCode = `
        import { Worker } from 'node:worker_threads';
        for (let i = 0; i < 3; i++) {
          const w = new Worker(${JSON.stringify(workerCode)}, { eval: true });
          const code = await new Promise((resolve) => w.on('exit', resolve));
          if (code !== 0) throw new Error('worker exit code ' + code);
        }
        console.log('done');`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', mainCode], {
        cwd: fileURLToPath(new URL('.', import.meta.url)),
        encoding: 'utf8',
        timeout: 15000,
      });
      expect({ status: r.status, signal: r.signal, stdout: r.stdout.trim() }, r.stderr).to.deep.equal({
        status: 0,
        signal: null,
        stdout: 'done',
      });
    });

    it('refuses fds epoll cannot watch, with a system error', () => {
      const file = join(dir, 'regular');
      writeFileSync(file, '');
      const fd = openSync(file, 'r');
      try {
        expectErrno(() => new FdWatcher(fd, () => undefined), 'EPERM', 'uv_poll_init');
      } finally {
        closeSync(fd);
      }
      expect(() => new FdWatcher(-1, () => undefined)).to.throw(RangeError);
    });
  });
});
