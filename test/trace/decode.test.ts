// The trace decoder: every request of the codec's table, and its reply, decode without an
// error, named, with a body in words and the fds described by what they are (memfd with its
// name and size, eventfd, socket); the backend channel's requests too; malformed messages
// and random bytes give an `error` that says why and never a throw.
import { expect } from 'chai';
import fc from 'fast-check';
import { closeSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMemfd } from '../../src/native/guest-memory.js';
import { EventFd } from '../../src/native/eventfd.js';
import { closeFd, socketPair } from '../../src/native/unix-socket.js';
import {
  BackendReq,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  REQUESTS,
  Req,
  VERSION,
  codedRequests,
  configSpace,
  inflightArea,
  iotlbMsg,
  logArea,
  memTable,
  none,
  noneOrU64,
  rarpMac,
  singleRegion,
  u64,
  vringAddr,
  vringFileBody,
  vringState,
  type Layout,
  type Message,
  type RequestSpec,
} from '../../src/vhost-user/protocol.js';
import { SessionState, decodeMessage } from '../../src/trace/decode.js';
import { describeFd, formatFd, type FdInfo } from '../../src/trace/fd-info.js';
import { toText } from '../../src/trace/render.js';
import { fcParams } from '../lib/fuzz-runs.js';

const region = { gpa: 0x100000n, size: 0x200000n, uva: 0x7f0000100000n, mmapOffset: 0n };

/** A valid body for each payload layout of the table. */
function sampleBody(l: Layout<unknown>): unknown {
  const samples = new Map<unknown, unknown>([
    [none, null],
    [noneOrU64, null],
    [u64, 0x100000000n | 1n],
    [vringState, { index: 1, num: 256 }],
    [vringAddr, { index: 1, flags: 0, desc: 0x7f0000001000n, used: 0x7f0000003000n, avail: 0x7f0000002000n, log: 0x3000n }],
    [vringFileBody, { index: 1, noFd: false }],
    [memTable, [region]],
    [singleRegion, region],
    [logArea, { size: 4096n, offset: 0n }],
    [configSpace, { offset: 0, size: 8, flags: 0, data: Uint8Array.of(0x52, 0x54, 0, 0, 0, 1, 1, 0) }],
    [inflightArea, { mmapSize: 8192n, mmapOffset: 0n, numQueues: 1, queueSize: 128 }],
    [rarpMac, Uint8Array.of(0x52, 0x54, 0, 0, 0, 1)],
    [iotlbMsg, { iova: 0x1000n, size: 0x1000n, uaddr: 0x7f0000001000n, perm: 3, type: 2 }],
  ]);
  if (!samples.has(l)) throw new Error(`no sample for layout ${l.name}`);
  return samples.get(l);
}

/** Fds of the kind each request passes. */
function sampleFds(request: number, n: number, open: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let fd: number;
    if ([Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR].includes(request)) fd = new EventFd().fd;
    else if (request === Req.SET_BACKEND_REQ_FD || request === Req.GPU_SET_SOCKET) {
      const [a, b] = socketPair();
      open.push(b);
      fd = a;
    } else fd = createMemfd(`sample-${request}`, 0x200000);
    open.push(fd);
    out.push(fd);
  }
  return out;
}

const msg = (request: number, flags: number, payload: Uint8Array, fds: number[] = []): Message => ({ request, flags: flags | VERSION, payload, fds });

describe('trace decoder', () => {
  const open: number[] = [];
  afterEach(() => {
    for (const fd of open.splice(0)) closeFd(fd);
  });

  for (const id of codedRequests) {
    const spec = REQUESTS[id] as RequestSpec<unknown, unknown>;
    it(`${Req[id]}: the request and its reply decode, with fds described`, () => {
      const state = new SessionState('net');
      state.features = 0n;
      const fds = sampleFds(id, spec.body === vringFileBody ? 1 : spec.fds[0], open); // a vring file without the no-fd flag carries its fd
      const infos = fds.map(describeFd);
      const flags = spec.reply ? 0 : FLAG_NEED_REPLY;
      const rq = decodeMessage(state, 1, 'main', 'frontend', msg(id, flags, spec.body.encode(sampleBody(spec.body)), fds), infos, 1000);
      expect(rq.error, `request ${Req[id]}`).to.equal(undefined);
      expect(rq).to.include({ name: Req[id], from: 'frontend', channel: 'main', reply: false, needReply: !spec.reply, session: 1 });
      expect(rq.body).to.not.equal(undefined);
      for (const f of rq.fds) expect(['memfd', 'eventfd', 'socket']).to.include(f.kind);
      if (rq.fds.length > 0 && (spec.body === memTable || spec.body === singleRegion)) expect(rq.fds[0]).to.include({ kind: 'memfd', name: `sample-${id}`, size: 0x200000 });
      const replyLayout = spec.reply ?? (u64 as Layout<unknown>);
      const replyFds = sampleFds(Req.GET_INFLIGHT_FD, spec.reply ? (spec.replyFds ?? 0) : 0, open);
      const rp = decodeMessage(state, 1, 'main', 'backend', msg(id, FLAG_REPLY, spec.reply ? replyLayout.encode(sampleBody(replyLayout)) : u64.encode(0n), replyFds), replyFds.map(describeFd), 1000.5);
      expect(rp.error, `reply to ${Req[id]}`).to.equal(undefined);
      expect(rp).to.include({ name: Req[id], from: 'backend', reply: true, latencyMs: 0.5 });
      if (!spec.reply) expect(rp.body).to.deep.equal({ ack: '0x0', ok: true });
      expect(toText(rq)).to.contain(` F->B ${Req[id]}`);
      expect(toText(rp)).to.contain(` B->F ${Req[id]} reply`);
    });
  }

  it('the backend channel: IOTLB_MSG, CONFIG_CHANGE_MSG, VRING_HOST_NOTIFIER_MSG and their REPLY_ACKs', () => {
    const state = new SessionState('net');
    const area = new Uint8Array(24);
    new DataView(area.buffer).setBigUint64(8, 4096n, true);
    const fd = createMemfd('notifier', 4096);
    open.push(fd);
    const cases: Array<[number, Uint8Array, number[]]> = [
      [BackendReq.IOTLB_MSG, iotlbMsg.encode({ iova: 1n, size: 2n, uaddr: 3n, perm: 1, type: 1 }), []],
      [BackendReq.CONFIG_CHANGE_MSG, new Uint8Array(0), []],
      [BackendReq.VRING_HOST_NOTIFIER_MSG, area, [fd]],
    ];
    for (const [id, payload, fds] of cases) {
      const rq = decodeMessage(state, 1, 'backend', 'backend', msg(id, FLAG_NEED_REPLY, payload, fds), fds.map(describeFd));
      expect(rq.error, rq.name).to.equal(undefined);
      expect(rq.name).to.equal(`BACKEND_${BackendReq[id]}`);
      const rp = decodeMessage(state, 1, 'backend', 'frontend', msg(id, FLAG_REPLY, u64.encode(0n)), []);
      expect(rp.error).to.equal(undefined);
      expect(rp.body).to.deep.equal({ ack: '0x0', ok: true });
    }
  });

  it('features in words for the device type, guessed from GET_FEATURES; packed ring bases with their wrap counters', () => {
    const state = new SessionState();
    decodeMessage(state, 1, 'main', 'frontend', msg(Req.GET_FEATURES, 0, new Uint8Array(0)), []);
    // MRG_RXBUF (15), MAC (5), VERSION_1 (32), RING_PACKED (34)
    const f = (1n << 15n) | (1n << 5n) | (1n << 32n) | (1n << 34n);
    const r = decodeMessage(state, 1, 'main', 'backend', msg(Req.GET_FEATURES, FLAG_REPLY, u64.encode(f)), []);
    expect(r.body).to.deep.equal({ features: '0x500008020', names: ['MAC', 'MRG_RXBUF', 'VERSION_1', 'RING_PACKED'], deviceType: 'net' });
    const s = decodeMessage(state, 1, 'main', 'frontend', msg(Req.SET_FEATURES, 0, u64.encode(f | (1n << 0n) | (1n << 29n))), []);
    expect(s.body).to.deep.equal({ features: '0x520008021', names: ['CSUM', 'MAC', 'MRG_RXBUF', 'RING_EVENT_IDX', 'VERSION_1', 'RING_PACKED'], notOffered: ['CSUM', 'RING_EVENT_IDX'] });
    expect(toText(s)).to.contain('not offered by the backend: CSUM RING_EVENT_IDX');
    const b = decodeMessage(state, 1, 'main', 'frontend', msg(Req.SET_VRING_BASE, 0, vringState.encode({ index: 0, num: 0x80058003 })), []);
    expect(b.body).to.deep.equal({ index: 0, base: 0x80058003, availIdx: 3, availWrap: 1, usedIdx: 5, usedWrap: 1 });
    const st = decodeMessage(state, 1, 'main', 'frontend', msg(Req.SET_STATUS, 0, u64.encode(15n)), []);
    expect(st.body).to.deep.equal({ status: 15, names: ['ACKNOWLEDGE', 'DRIVER', 'DRIVER_OK', 'FEATURES_OK'] });
  });

  it('malformed messages get an error saying why, and still their raw payload', () => {
    const state = new SessionState('blk');
    const cases: Array<[Message, RegExp]> = [
      [msg(Req.SET_FEATURES, 0, new Uint8Array(4)), /^VHOST_USER_SET_FEATURES: payload of 4 bytes, expected 8$/],
      [msg(99, 0, new Uint8Array(0)), /^unknown request 99, expected a request id in 1\.\.40 other than 26$/],
      [msg(Req.GET_FEATURES, FLAG_REPLY, new Uint8Array(0)), /^GET_FEATURES from the frontend carries the reply flag \(flags 0x5\), expected a request$/],
      [msg(Req.SET_MEM_TABLE, 0, memTable.encode([region, region]), []), /^VHOST_USER_SET_MEM_TABLE: 0 file descriptors, expected 1\.\.8$/],
      [msg(Req.SET_VRING_KICK, 0, u64.encode(0x200n)), /^SET_VRING_KICK: reserved bits set in 0x200/],
      [{ request: Req.GET_FEATURES, flags: 2, payload: new Uint8Array(0), fds: [] }, /^GET_FEATURES: header version 2, expected 1$/],
    ];
    for (const [m, re] of cases) {
      const r = decodeMessage(state, 1, 'main', 'frontend', m, []);
      expect(r.error, r.name).to.match(re);
      expect(r.payload).to.equal(Buffer.from(m.payload).toString('hex'));
    }
    // A reply nobody waits for, and a request from the backend on the main socket.
    const r1 = decodeMessage(state, 1, 'main', 'backend', msg(Req.GET_QUEUE_NUM, FLAG_REPLY, u64.encode(1n)), []);
    expect(r1.error).to.equal('a reply to GET_QUEUE_NUM that no request of the frontend waits for');
    const r2 = decodeMessage(state, 1, 'main', 'backend', msg(Req.GET_QUEUE_NUM, 0, u64.encode(1n)), []);
    expect(r2.error).to.equal('GET_QUEUE_NUM from the backend without the reply flag (flags 0x1), expected a reply');
  });

  it('random messages either way never throw: a record with a name, or an error', () => {
    const state = new SessionState();
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 45 }),
        fc.integer({ min: 0, max: 15 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.constantFrom('main', 'backend'),
        fc.constantFrom('frontend', 'backend'),
        (request, flags, payload, channel, from) => {
          const r = decodeMessage(state, 1, channel as 'main' | 'backend', from as 'frontend' | 'backend', { request, flags, payload, fds: [] }, []);
          expect(r.name).to.be.a('string');
          expect(r.error === undefined || r.error.length > 0).to.equal(true);
          expect(() => toText(r)).to.not.throw();
          expect(() => JSON.stringify(r)).to.not.throw();
        },
      ),
      fcParams(2000),
    );
  });
});

describe('fd descriptions', () => {
  it('memfd (name, size), eventfd (counter), socket, file', () => {
    const dir = join(tmpdir(), `vk-fdinfo-${process.pid}`);
    const mem = createMemfd('guest-ram', 1 << 20);
    const ev = new EventFd({ initval: 3 });
    const [a, b] = socketPair();
    writeFileSync(dir, 'x'.repeat(100));
    const file = openSync(dir, 'r');
    try {
      const infos: FdInfo[] = [mem, ev.fd, a, file].map(describeFd);
      expect(infos[0]).to.include({ kind: 'memfd', name: 'guest-ram', size: 1 << 20 });
      expect(infos[1]).to.include({ kind: 'eventfd', count: 3 });
      expect(infos[2].kind).to.equal('socket');
      expect(infos[3]).to.include({ kind: 'file', name: dir, size: 100 });
      expect(infos.map(formatFd)).to.deep.equal(['memfd "guest-ram" 1 MiB', 'eventfd (count 3)', 'socket', `file "${dir}" 100 B`]);
      expect(describeFd(mem).ino, 'the same object twice: the same inode').to.equal(infos[0].ino);
      const gone = describeFd(100000);
      expect(gone.kind).to.equal('other');
      expect(gone.error).to.match(/ENOENT/);
    } finally {
      closeFd(mem);
      ev.close();
      closeFd(a);
      closeFd(b);
      closeSync(file);
      rmSync(dir, { force: true });
    }
  });
});
