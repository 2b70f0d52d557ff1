// The typed calls of a data-plane thread: one class, served on a port or run locally.
import { expect } from 'chai';
import { MessageChannel } from 'node:worker_threads';
import { localCalls, methodNames, serveCalls } from '../../src/dataplane/worker-rpc.js';

class Calls {
  readonly field = 1;
  private n = 0;
  add(a: number, b: number): number {
    return a + b;
  }
  async later(x: string): Promise<string> {
    return `${x}!`;
  }
  bump(): number {
    return ++this.n;
  }
  fail(): never {
    throw new Error('refused');
  }
}

describe('dataplane/worker-rpc: typed calls', () => {
  it('names the methods of a calls class, not its fields or constructor', () => {
    expect(methodNames(Calls).sort()).to.deep.equal(['add', 'bump', 'fail', 'later']);
  });

  it('runs local calls at once, answers through promises, and turns a throw into a rejection', async () => {
    const c = new Calls();
    const r = localCalls(c, Calls);
    const p = r.bump();
    expect((c as unknown as { n: number }).n, 'ran before the promise settled').to.equal(1);
    expect(await p).to.equal(1);
    expect(await r.add(2, 3)).to.equal(5);
    expect(await r.later('x')).to.equal('x!');
    const e = await r.fail().then(
      () => null,
      (err: Error) => err,
    );
    expect(e?.message).to.equal('refused');
  });

  it('serves calls on a port: answers by id, errors by message, unknown calls by name', async () => {
    const { port1, port2 } = new MessageChannel();
    serveCalls(port1, new Calls(), Calls, 'test');
    const replies: Array<{ id: number; ok: boolean; value?: unknown; error?: string }> = [];
    const got = new Promise<void>((resolve) => {
      port2.on('message', (m) => {
        replies.push(m);
        if (replies.length === 4) resolve();
      });
    });
    port2.postMessage({ id: 1, op: 'add', args: [1, 2] });
    port2.postMessage({ id: 2, op: 'later', args: ['y'] });
    port2.postMessage({ id: 3, op: 'fail', args: [] });
    port2.postMessage({ id: 4, op: 'constructor', args: [] });
    await got;
    port1.close();
    const byId = new Map(replies.map((r) => [r.id, r]));
    expect(byId.get(1)).to.deep.equal({ id: 1, ok: true, value: 3 });
    expect(byId.get(2)).to.deep.equal({ id: 2, ok: true, value: 'y!' });
    expect(byId.get(3)).to.deep.equal({ id: 3, ok: false, error: 'refused' });
    expect(byId.get(4)).to.deep.equal({ id: 4, ok: false, error: 'unknown test call constructor' });
  });
});
