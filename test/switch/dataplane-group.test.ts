// The group's placement and call order, over fake threads that record what they are asked:
// a guest's queue pairs spread over the threads, a pair the guest turned off counts for
// nothing, a release reaches every thread that has the guest's memory, and a port's calls
// are posted in order without waiting for each other's answers.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { createGroup } from '../../src/switch/dataplane-group.js';
import type { Dataplane } from '../../src/switch/dataplane.js';
import type { QueueStartSpec } from '../../src/switch/engine.js';
import { GuestMemory, createMemfd } from '../../src/native/guest-memory.js';
import { closeFd } from '../../src/native/unix-socket.js';
import { newCounters } from '../../src/switch/counters.js';

interface Call {
  thread: number;
  call: string;
  port: number;
  arg?: number;
}

/**
 * n fake threads; `slow` delays a thread's answers to setMemory; a thread in `dead` refuses
 * every call from the first queue start on, as a worker that exited does (claiming nothing).
 */
async function group(n: number, slow: Record<number, number> = {}, dead = new Set<number>()) {
  let started = false;
  const calls: Call[] = [];
  const threads: Dataplane[] = [];
  const dp = await createGroup(
    n,
    (k) => {
      const answer = () => Promise.resolve();
      const d = new Proxy({} as Record<string, unknown>, {
        get: (_t, name: string) => {
          if (name === 'then') return undefined;
          if (name === 'threadCount') return 1;
          return (port: number | QueueStartSpec, arg?: unknown) => {
            const p = typeof port === 'object' ? port.port : port;
            calls.push({ thread: k, call: name, port: p, arg: typeof port === 'object' ? port.index : typeof arg === 'number' ? arg : undefined });
            if (name === 'startQueue') started = true;
            if (started && dead.has(k)) return Promise.reject(new Error(`data-plane thread ${k} exited with code 1`));
            if (name === 'setMemory') {
              GuestMemory.claim(arg as number).close(); // as a thread does, then lets it go
              return new Promise((r) => setTimeout(r, slow[k] ?? 0));
            }
            return answer();
          };
        },
      }) as unknown as Dataplane;
      threads.push(d);
      return Promise.resolve(d);
    },
    () => undefined,
  );
  return { dp, calls };
}

const MiB = 1 << 20;
const mapped = (name: string) =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${name} `)).length;

/** A guest's memory, parked as a device hands it over; the fd closed (the mapping holds it). */
function parked(name: string): number {
  const fd = createMemfd(name, MiB);
  const m = GuestMemory.map([{ fd, gpa: 0n, size: BigInt(MiB), uva: 0n, mmapOffset: 0n }]);
  closeFd(fd);
  const token = m.park();
  m.close();
  return token;
}

const spec = (port: number, index: number): QueueStartSpec => ({
  port,
  index,
  layout: 'split',
  size: 256,
  token: 0,
  kickFd: -1,
  hdrLen: 12,
  mergeable: true,
  rxOffloads: 0,
  txOffloads: false,
  mtu: 0,
});
const where = (calls: Call[], port: number) =>
  calls
    .filter((c) => c.call === 'startQueue' && c.port === port)
    .map((c) => `${c.arg}@${c.thread}`)
    .join(' ');

describe('switch data plane on several threads: the group', () => {
  it("spreads a guest's queue pairs; a pair the guest turned off counts for nothing", async () => {
    const { dp, calls } = await group(2);
    try {
      await dp.addPort(1, 'a', { mode: 'access', vid: 1 }, newCounters(2)); // owner: thread 0
      await dp.addPort(2, 'b', { mode: 'access', vid: 1 }, newCounters(2)); // owner: thread 1
      await dp.setMemory(1, parked('vk-grp-a'));
      for (let i = 0; i < 4; i++) await dp.startQueue(spec(1, i));
      expect(where(calls, 1), "a's pair 0 on its owner, pair 1 on the other thread").to.equal('0@0 1@0 2@1 3@1');
      // The guest turns its second pair off (ethtool -L 1): thread 1 serves nothing running,
      // so b's session stays there, where it would otherwise move to thread 0.
      await dp.stopQueue(1, 2);
      await dp.stopQueue(1, 3);
      await dp.setMemory(2, parked('vk-grp-b'));
      for (let i = 0; i < 2; i++) await dp.startQueue(spec(2, i));
      expect(where(calls, 2)).to.equal('0@1 1@1');
      expect(calls.filter((c) => c.call === 'setOwner')).to.deep.equal([]);
      // a's release reaches both threads that have its memory; then nothing maps it.
      await dp.releaseMemory(1);
      expect(calls.filter((c) => c.call === 'releaseMemory' && c.port === 1).map((c) => c.thread)).to.deep.equal([0, 1]);
      expect(mapped('vk-grp-a'), "a's memory unmapped").to.equal(0);
      expect(mapped('vk-grp-b'), "b's memory held (here, for the threads to come)").to.equal(1);
    } finally {
      await dp.close();
    }
    expect(mapped('vk-grp-b'), 'closed: nothing mapped').to.equal(0);
  });

  it("posts a port's calls in order without waiting for a thread's answers", async () => {
    const { dp, calls } = await group(2, { 0: 200 });
    try {
      await dp.addPort(1, 'a', { mode: 'access', vid: 1 }, newCounters(2));
      let answered = false;
      const memory = dp.setMemory(1, parked('vk-grp-c')).then(() => (answered = true));
      const queues = [0, 1].map((i) => dp.startQueue(spec(1, i)));
      await new Promise((r) => setTimeout(r, 50));
      expect(answered, 'thread 0 has not answered the memory yet').to.equal(false);
      expect(
        calls.filter((c) => c.thread === 0).map((c) => (c.call === 'startQueue' ? `${c.call}${c.arg}` : c.call)),
        'the queues posted after the memory, before its answer',
      ).to.deep.equal(['addPort', 'setMemory', 'startQueue0', 'startQueue1']);
      await Promise.all([memory, ...queues]);
      expect(answered).to.equal(true);
    } finally {
      await dp.close();
    }
  });

  it("a thread that died before it claimed the guest's memory does not keep it mapped", async () => {
    const { dp, calls } = await group(2, {}, new Set([1]));
    try {
      await dp.addPort(1, 'a', { mode: 'access', vid: 1 }, newCounters(2));
      await dp.addPort(2, 'b', { mode: 'access', vid: 1 }, newCounters(2));
      await dp.setMemory(1, parked('vk-grp-d'));
      await dp.startQueue(spec(1, 0));
      await dp.startQueue(spec(1, 1));
      // Pair 1 goes to thread 1, which is handed the memory and refuses it.
      const failed = await Promise.allSettled([dp.startQueue(spec(1, 2)), dp.startQueue(spec(1, 3))]);
      expect(failed.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
      expect(calls.filter((c) => c.call === 'setMemory' && c.thread === 1).length, 'thread 1 was handed the memory').to.equal(1);
      await Promise.allSettled([dp.releaseMemory(1)]);
      expect(mapped('vk-grp-d'), "a's memory unmapped: the token thread 1 never claimed is dropped").to.equal(0);
    } finally {
      await dp.close();
    }
  });
});
