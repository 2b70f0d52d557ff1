// Property tests of the vhost-user message codec (src/vhost-user/protocol.ts): the request
// table, the payload layouts and the MessageReader that cuts a byte stream into messages.
//
// - every well-formed message of every request the codec knows, and every reply, round-trips
//   (encode -> bytes cut into random pieces -> reader -> decode gives back what was encoded);
// - random bytes and mutated messages (truncated, wrong or huge size fields, flipped flags,
//   wrong fd counts) only ever throw ProtocolError, whose message says what was found and
//   what was expected; the reader never allocates more than its max payload, whatever the
//   size field says.
import { expect } from 'chai';
import fc from 'fast-check';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  HEADER_SIZE,
  MAX_CONFIG_SIZE,
  MAX_FDS,
  MAX_MEM_TABLE_REGIONS,
  MAX_PAYLOAD,
  MessageReader,
  ProtocolError,
  REQUESTS,
  Req,
  VERSION,
  codedRequests,
  configSpace,
  decodeBody,
  decodeReply,
  decodeRequest,
  encodeBody,
  encodeMessage,
  encodeRequest,
  inflightArea,
  none,
  requestSpec,
  u64 as u64Layout,
  vringState as vringStateLayout,
  type BodyOf,
  type CodedRequest,
  type Layout,
  type MemRegion,
  type Message,
} from '../../src/vhost-user/protocol.js';
import { fcParams, timeoutFor } from '../lib/fuzz-runs.js';
import { concat } from '../native/ring-rig.js';

// ---- arbitraries ---------------------------------------------------------------

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });
const region: fc.Arbitrary<MemRegion> = fc.record({ gpa: u64, size: u64, uva: u64, mmapOffset: u64 });
const vringState = fc.record({ index: u32, num: u32 });
const vringFile = fc.record({ index: u8, noFd: fc.boolean() });
const config = fc
  .record({ offset: fc.integer({ min: 0, max: MAX_CONFIG_SIZE }), flags: u32 })
  .chain(({ offset, flags }) => fc.uint8Array({ minLength: 0, maxLength: MAX_CONFIG_SIZE - offset }).map((data) => ({ offset, size: data.length, flags, data })));
const inflight = fc.record({ mmapSize: u64, mmapOffset: u64, numQueues: u16, queueSize: u16 });

/** A well-formed body for every request the codec knows (the type makes a missing one a compile error). */
const bodies: { [R in CodedRequest]: fc.Arbitrary<BodyOf<R>> } = {
  [Req.GET_FEATURES]: fc.constant(null),
  [Req.SET_FEATURES]: u64,
  [Req.SET_OWNER]: fc.constant(null),
  [Req.RESET_OWNER]: fc.constant(null),
  [Req.SET_MEM_TABLE]: fc.array(region, { minLength: 1, maxLength: MAX_MEM_TABLE_REGIONS }),
  [Req.SET_LOG_BASE]: fc.record({ size: u64, offset: u64 }),
  [Req.SET_LOG_FD]: fc.constant(null),
  [Req.SET_VRING_NUM]: vringState,
  [Req.SET_VRING_ADDR]: fc.record({ index: u32, flags: u32, desc: u64, used: u64, avail: u64, log: u64 }),
  [Req.SET_VRING_BASE]: vringState,
  [Req.GET_VRING_BASE]: vringState,
  [Req.SET_VRING_KICK]: vringFile,
  [Req.SET_VRING_CALL]: vringFile,
  [Req.SET_VRING_ERR]: vringFile,
  [Req.GET_PROTOCOL_FEATURES]: fc.constant(null),
  [Req.SET_PROTOCOL_FEATURES]: u64,
  [Req.GET_QUEUE_NUM]: fc.constant(null),
  [Req.SET_VRING_ENABLE]: vringState,
  [Req.SEND_RARP]: fc.uint8Array({ minLength: 6, maxLength: 6 }),
  [Req.NET_SET_MTU]: u64,
  [Req.SET_BACKEND_REQ_FD]: fc.constant(null),
  [Req.IOTLB_MSG]: fc.record({ iova: u64, size: u64, uaddr: u64, perm: u8, type: u8 }),
  [Req.SET_VRING_ENDIAN]: vringState,
  [Req.GET_CONFIG]: config,
  [Req.SET_CONFIG]: config,
  [Req.CLOSE_CRYPTO_SESSION]: u64,
  [Req.POSTCOPY_ADVISE]: fc.constant(null),
  [Req.POSTCOPY_LISTEN]: fc.constant(null),
  [Req.POSTCOPY_END]: fc.constant(null),
  [Req.GET_INFLIGHT_FD]: inflight,
  [Req.SET_INFLIGHT_FD]: inflight,
  [Req.GPU_SET_SOCKET]: fc.constant(null),
  [Req.RESET_DEVICE]: fc.constant(null),
  [Req.VRING_KICK]: vringState,
  [Req.GET_MAX_MEM_SLOTS]: fc.constant(null),
  [Req.ADD_MEM_REG]: region,
  [Req.REM_MEM_REG]: region,
  [Req.SET_STATUS]: u64,
  [Req.GET_STATUS]: fc.constant(null),
};

/** The fds a well-formed request carries, as the spec's cross-checks want them. */
function fdCountFor(request: CodedRequest, body: unknown): fc.Arbitrary<number> {
  if (request === Req.SET_MEM_TABLE) return fc.constant((body as MemRegion[]).length);
  if (request === Req.SET_VRING_KICK || request === Req.SET_VRING_CALL || request === Req.SET_VRING_ERR) return fc.constant((body as { noFd: boolean }).noFd ? 0 : 1);
  const [lo, hi] = REQUESTS[request].fds;
  return fc.integer({ min: lo, max: hi });
}

/** Fake fd numbers: the codec only counts and carries them. */
const fakeFds = (n: number, base = 1000): number[] => Array.from({ length: n }, (_, i) => base + i);

interface Wire {
  request: CodedRequest;
  body: unknown;
  flags: number;
  bytes: Uint8Array;
  fds: number[];
}

/** A well-formed request message of a given id (or of any id the codec knows). */
function wellFormed(only?: CodedRequest): fc.Arbitrary<Wire> {
  const req = only === undefined ? fc.constantFrom(...codedRequests) : fc.constant(only);
  return req.chain((request) =>
    (bodies[request] as fc.Arbitrary<unknown>).chain((body) =>
      fc.record({ n: fdCountFor(request, body), needReply: fc.boolean() }).map(({ n, needReply }) => {
        const flags = VERSION | (needReply ? FLAG_NEED_REPLY : 0);
        return { request, body, flags, bytes: encodeRequest(request, body as never, flags), fds: fakeFds(n) };
      }),
    ),
  );
}

/** How a stream is cut into the pieces the reader receives (sizes cycle). */
const cuts = fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 16 });

// ---- a reader that records its allocations --------------------------------------

class Fed {
  readonly allocations: number[] = [];
  readonly reader: MessageReader;
  constructor(readonly maxPayload = MAX_PAYLOAD) {
    this.reader = new MessageReader(maxPayload, (n) => {
      this.allocations.push(n);
      return new Uint8Array(n);
    });
  }

  /**
   * Feeds `bytes` in pieces (each at most what target() asks for); `fdsAt` maps a byte
   * offset to the fds sent with the piece that starts there (a piece never spans two
   * such offsets, as a sendmsg's fds come with its first byte). Returns the messages and
   * the error that ended the stream, if any.
   */
  feed(bytes: Uint8Array, sizes: number[], fdsAt: Map<number, number[]> = new Map()): { messages: Message[]; error: unknown } {
    const messages: Message[] = [];
    const marks = [...fdsAt.keys()].sort((a, b) => a - b);
    let off = 0;
    let k = 0;
    try {
      while (off < bytes.length) {
        const target = this.reader.target();
        const nextMark = marks.find((m) => m > off) ?? bytes.length;
        const n = Math.min(sizes[k++ % sizes.length], target.length, nextMark - off);
        target.set(bytes.subarray(off, off + n));
        const m = this.reader.received(n, fdsAt.get(off) ?? []);
        off += n;
        if (m) messages.push(m);
      }
    } catch (e) {
      return { messages, error: e };
    }
    return { messages, error: null };
  }
}

/** The error is a ProtocolError that says what it found and what it expected. */
function expectExplained(e: unknown, context: string): asserts e is ProtocolError {
  expect(e, `${context}: ${String(e)}`).to.be.instanceOf(ProtocolError);
  const pe = e as ProtocolError;
  expect(pe.found, `${context}: 'found' of "${pe.message}"`).to.be.a('string').and.not.equal('');
  expect(pe.expected, `${context}: 'expected' of "${pe.message}"`).to.match(/^(expected|at most) \S/);
  expect(pe.message, context).to.include(pe.found!);
  expect(pe.message, context).to.include(pe.expected!);
}

/** Decodes, re-encodes and decodes again: a decoded body is a fixed point. */
function stable(request: CodedRequest, m: Message): void {
  const body = decodeBody(request, m);
  const again = decodeBody(request, { ...m, payload: encodeBody(request, body as never) });
  expect(again, `${Req[request]} re-encoded`).to.deep.equal(body);
}

describe('vhost-user codec: properties', function () {
  this.timeout(timeoutFor(100, 200));

  it('knows every request of the spec but CREATE_CRYPTO_SESSION, and every layout states its size', () => {
    const all = Object.values(Req).filter((v): v is Req => typeof v === 'number');
    expect(all.filter((r) => requestSpec(r) === undefined).map((r) => Req[r])).to.deep.equal(['CREATE_CRYPTO_SESSION']);
    for (const r of codedRequests) {
      const s = REQUESTS[r] as { body: Layout<unknown>; fds: readonly [number, number] };
      const [lo, hi] = typeof s.body.size === 'number' ? [s.body.size, s.body.size] : s.body.size;
      expect(lo, Req[r]).to.be.at.most(hi);
      expect(hi, Req[r]).to.be.at.most(MAX_PAYLOAD);
      expect(s.fds[1], Req[r]).to.be.at.most(MAX_FDS);
    }
  });

  for (const request of codedRequests) {
    it(`${Req[request]}: a well-formed request round-trips, through the reader in random pieces`, () => {
      fc.assert(
        fc.property(wellFormed(request), cuts, (w, sizes) => {
          const fed = new Fed();
          const { messages, error } = fed.feed(w.bytes, sizes, new Map([[0, w.fds]]));
          expect(error).to.equal(null);
          expect(messages).to.have.length(1);
          const m = messages[0];
          expect({ request: m.request, flags: m.flags, fds: m.fds }).to.deep.equal({ request: w.request, flags: w.flags, fds: w.fds });
          expect(decodeRequest(m)).to.deep.equal({ request: w.request, body: w.body });
          expect(fed.allocations.every((n) => n <= MAX_PAYLOAD)).to.equal(true);
        }),
        fcParams(100),
      );
    });
  }

  it('every reply round-trips (the reply layout, or REPLY_ACK u64 for requests without one)', () => {
    const replyBodies = new Map<Layout<unknown>, fc.Arbitrary<unknown>>([
      [u64Layout, u64],
      [vringStateLayout, vringState],
      [configSpace, config],
      [inflightArea, inflight],
      [none, fc.constant(null)],
    ]);
    const replies = fc.constantFrom(...codedRequests).chain((request) => {
      const s = REQUESTS[request] as { reply?: Layout<unknown>; replyFds?: number };
      const layout = s.reply ?? (u64Layout as Layout<unknown>);
      const body = replyBodies.get(layout);
      if (body === undefined) throw new Error(`no arbitrary for the reply layout ${layout.name} of ${Req[request]}`);
      return body.map((b) => ({ request, body: b, layout, fds: s.reply ? (s.replyFds ?? 0) : 0 }));
    });
    fc.assert(
      fc.property(replies, cuts, (r, sizes) => {
        const payload = r.layout.encode(r.body);
        const fed = new Fed();
        const { messages, error } = fed.feed(encodeMessage(r.request, FLAG_REPLY, payload), sizes, new Map([[0, fakeFds(r.fds)]]));
        expect(error).to.equal(null);
        expect(messages).to.have.length(1);
        expect(decodeReply(r.request, messages[0])).to.deep.equal(r.body);
      }),
      fcParams(1000),
    );
  });

  it('a stream of well-formed messages, cut anywhere, gives back the same messages in order', () => {
    fc.assert(
      fc.property(fc.array(wellFormed(), { minLength: 1, maxLength: 12 }), cuts, (ws, sizes) => {
        const starts: number[] = [];
        let at = 0;
        for (const w of ws) {
          starts.push(at);
          at += w.bytes.length;
        }
        const fdsAt = new Map(ws.map((w, i) => [starts[i], w.fds] as [number, number[]]));
        const { messages, error } = new Fed().feed(concat(ws.map((w) => w.bytes)), sizes, fdsAt);
        expect(error).to.equal(null);
        expect(messages.map((m) => decodeRequest(m))).to.deep.equal(ws.map((w) => ({ request: w.request, body: w.body })));
        expect(messages.map((m) => m.fds)).to.deep.equal(ws.map((w) => w.fds));
      }),
      fcParams(300),
    );
  });

  it('random bytes: only ProtocolErrors that explain themselves, no allocation past the max payload', () => {
    // Headers are often plausible (a known request, the right version) so the payload
    // checks get exercised too, not only the header's.
    const header = fc
      .record({
        request: fc.oneof(fc.constantFrom(...codedRequests), u32),
        flags: fc.oneof(fc.constant(VERSION), fc.constant(VERSION | FLAG_NEED_REPLY), u32),
        size: fc.oneof(fc.integer({ min: 0, max: 300 }), u32),
      })
      .map(({ request, flags, size }) => {
        const b = new Uint8Array(HEADER_SIZE);
        const v = new DataView(b.buffer);
        v.setUint32(0, request >>> 0, true);
        v.setUint32(4, flags >>> 0, true);
        v.setUint32(8, size >>> 0, true);
        return b;
      });
    const chunk = fc.oneof(header, fc.uint8Array({ minLength: 0, maxLength: 300 }));
    const maxPayload = fc.oneof(fc.constant(MAX_PAYLOAD), fc.integer({ min: 0, max: 512 }));
    fc.assert(
      fc.property(
        fc.array(chunk, { minLength: 1, maxLength: 12 }),
        cuts,
        maxPayload,
        fc.array(fc.tuple(fc.nat(4000), fc.integer({ min: 0, max: 10 })), { maxLength: 4 }),
        (chunks, sizes, max, fdSpots) => {
          const bytes = concat(chunks);
          const fdsAt = new Map<number, number[]>();
          fdSpots.forEach(([at, n], i) => fdsAt.set(at % Math.max(1, bytes.length), fakeFds(n, 2000 + 100 * i)));
          const fed = new Fed(max);
          const { messages, error } = fed.feed(bytes, sizes, fdsAt);
          expect(Math.max(0, ...fed.allocations), 'largest allocation').to.be.at.most(max);
          if (error !== null) expectExplained(error, 'reader');
          for (const m of messages) {
            expect(m.payload.length).to.be.at.most(max);
            expect(m.fds.length).to.be.at.most(MAX_FDS);
            try {
              const d = decodeRequest(m);
              stable(d.request, m);
            } catch (e) {
              expectExplained(e, `decode of ${Req[m.request] ?? m.request}`);
            }
          }
        },
      ),
      fcParams(2000),
    );
  });

  describe('mutated well-formed messages', () => {
    /** Feeds one message (its fds with the first byte) and decodes what comes out. */
    function run(bytes: Uint8Array, fds: number[], sizes: number[], max = MAX_PAYLOAD): { error: unknown; messages: Message[]; fed: Fed } {
      const fed = new Fed(max);
      const { messages, error } = fed.feed(bytes, sizes, new Map([[0, fds]]));
      expect(Math.max(0, ...fed.allocations)).to.be.at.most(max);
      if (error !== null) return { error, messages, fed };
      for (const m of messages) {
        try {
          decodeRequest(m);
        } catch (e) {
          return { error: e, messages, fed };
        }
      }
      return { error: null, messages, fed };
    }

    const withSize = (bytes: Uint8Array, size: number): Uint8Array => {
      const b = bytes.slice();
      new DataView(b.buffer).setUint32(8, size >>> 0, true);
      return b;
    };

    it('a truncated or extended payload (size field kept consistent): an explained error, or a body that re-encodes to itself', () => {
      fc.assert(
        fc.property(wellFormed(), fc.integer({ min: -300, max: 300 }), u8, cuts, (w, delta, fill, sizes) => {
          const len = Math.max(0, w.bytes.length - HEADER_SIZE + delta);
          const payload = new Uint8Array(len).fill(fill);
          payload.set(w.bytes.subarray(HEADER_SIZE, HEADER_SIZE + len));
          const { error, messages } = run(encodeMessage(w.request, w.flags, payload), w.fds, sizes);
          if (error !== null) {
            expectExplained(error, `${Req[w.request]} with ${len} payload bytes`);
          } else {
            expect(messages).to.have.length(1);
            stable(w.request, messages[0]);
          }
        }),
        fcParams(2000),
      );
    });

    it('random payload bytes of a size the request allows: an explained error, or a body that re-encodes to itself', () => {
      const mutated = wellFormed().chain((w) => {
        const s = REQUESTS[w.request].body.size;
        const [lo, hi] = typeof s === 'number' ? [s, s] : s;
        return fc.uint8Array({ minLength: lo, maxLength: hi }).map((payload) => ({ w, payload }));
      });
      fc.assert(
        fc.property(mutated, cuts, ({ w, payload }, sizes) => {
          const { error, messages } = run(encodeMessage(w.request, w.flags, payload), w.fds, sizes);
          if (error !== null) {
            expectExplained(error, `${Req[w.request]} with random payload`);
          } else {
            expect(messages).to.have.length(1);
            stable(w.request, messages[0]);
          }
        }),
        fcParams(2000),
      );
    });

    it('a wrong size field (the stream is read as it says): explained errors only, no allocation past the max', () => {
      fc.assert(
        fc.property(fc.array(wellFormed(), { minLength: 1, maxLength: 4 }), fc.nat(3), fc.integer({ min: 0, max: 400 }), cuts, (ws, which, size, sizes) => {
          const i = which % ws.length;
          const bytes = concat(ws.map((w, k) => (k === i ? withSize(w.bytes, size) : w.bytes)));
          const fed = new Fed();
          const { messages, error } = fed.feed(bytes, sizes);
          expect(Math.max(0, ...fed.allocations)).to.be.at.most(MAX_PAYLOAD);
          if (error !== null) expectExplained(error, 'reader');
          for (const m of messages) {
            try {
              decodeRequest(m);
            } catch (e) {
              expectExplained(e, `decode of ${Req[m.request] ?? m.request}`);
            }
          }
        }),
        fcParams(2000),
      );
    });

    it('a huge size field: refused from the header alone, naming the size and the max, nothing allocated', () => {
      const max = fc.oneof(fc.constant(MAX_PAYLOAD), fc.integer({ min: 0, max: MAX_PAYLOAD }));
      fc.assert(
        fc.property(wellFormed(), max, fc.integer({ min: 1, max: 0xffffffff }), cuts, (w, maxPayload, over, sizes) => {
          const size = Math.min(0xffffffff, maxPayload + over);
          const { error, fed } = run(withSize(w.bytes, size), w.fds, sizes, maxPayload);
          expectExplained(error, 'huge size');
          expect(error.found).to.equal(`payload size ${size}`);
          expect(error.expected).to.equal(`at most ${maxPayload}`);
          expect(fed.allocations, 'allocations').to.deep.equal([]);
        }),
        fcParams(1000),
      );
    });

    it('flipped flag bits: a wrong version or the reply flag is refused and explained; NEED_REPLY and unknown bits are carried', () => {
      fc.assert(
        fc.property(wellFormed(), u32, cuts, (w, flip, sizes) => {
          const flags = (w.flags ^ flip) >>> 0;
          const b = w.bytes.slice();
          new DataView(b.buffer).setUint32(4, flags, true);
          const { error, messages } = run(b, w.fds, sizes);
          if ((flags & FLAG_VERSION_MASK) !== VERSION) {
            expectExplained(error, 'version');
            expect(error.found).to.equal(`header version ${flags & FLAG_VERSION_MASK}`);
            expect(error.expected).to.equal(`expected ${VERSION}`);
          } else if (flags & FLAG_REPLY) {
            expectExplained(error, 'reply flag');
            expect(error.message).to.include('carries the reply flag');
          } else {
            expect(error).to.equal(null);
            expect(messages[0].flags).to.equal(flags);
            expect(decodeRequest(messages[0]).body).to.deep.equal(w.body);
          }
        }),
        fcParams(1000),
      );
    });

    it("wrong fd counts: refused and explained, whether outside the request's range or inconsistent with its body", () => {
      fc.assert(
        fc.property(wellFormed(), fc.integer({ min: 0, max: MAX_FDS + 4 }), cuts, (w, n, sizes) => {
          fc.pre(n !== w.fds.length);
          const { error } = run(w.bytes, fakeFds(n), sizes);
          const [lo, hi] = REQUESTS[w.request].fds;
          if (n > MAX_FDS) {
            expectExplained(error, 'too many fds');
            expect(error.found).to.equal(`more than ${MAX_FDS} file descriptors in one message`);
          } else if (n < lo || n > hi) {
            expectExplained(error, 'fd range');
            expect(error.found).to.equal(`${n} file descriptors`);
          } else if (w.request === Req.SET_MEM_TABLE || w.request === Req.SET_VRING_KICK || w.request === Req.SET_VRING_CALL || w.request === Req.SET_VRING_ERR) {
            expectExplained(error, 'fds against the body');
          } else {
            expect(error, `${Req[w.request]} with ${n} fds (allowed ${lo}..${hi})`).to.equal(null);
          }
        }),
        fcParams(1000),
      );
    });

    it('fds that arrive with the payload instead of the header: refused and explained', () => {
      fc.assert(
        fc.property(
          wellFormed().filter((w) => w.bytes.length > HEADER_SIZE),
          fc.integer({ min: 1, max: 3 }),
          fc.nat(),
          cuts,
          (w, n, where, sizes) => {
            const at = HEADER_SIZE + (where % (w.bytes.length - HEADER_SIZE));
            const fed = new Fed();
            const { error } = fed.feed(
              w.bytes,
              sizes,
              new Map([
                [0, []],
                [at, fakeFds(n)],
              ]),
            );
            expectExplained(error, 'fds in the payload');
            expect(error.found).to.equal(`file descriptors arrived in the payload of VHOST_USER_${Req[w.request]}`);
          },
        ),
        fcParams(500),
      );
    });
  });
});
