// The word layouts shared by TypeScript and the addon: declared once in C++
// (native/switch/switch_layout.h, io_layout.h), exported by the addon, checked by name at load.
import { expect } from 'chai';
import { checkLayout } from '../../src/native/layouts.js';
import { CaptureWord, ClassifyCount, FlowField, FlowStat, FlowWord, PortCounter, PortWord, QueueStat } from '../../src/native/switch.js';
import { DeliverStat } from '../../src/native/net.js';
import { ReadStat, RecvStat, TxStat } from '../../src/native/host-io.js';

describe('shared word layouts', () => {
  it('refuses a layout whose names differ from the addon', () => {
    const exported = { A: 0, B: 1, WORDS: 2 };
    expect(checkLayout(exported, 'T', ['A', 'B'] as const)).to.deep.equal(exported);
    expect(() => checkLayout(exported, 'T', ['A', 'B', 'C'] as const)).to.throw(/layout T differs.*missing in the addon: C/);
    expect(() => checkLayout(exported, 'T', ['A'] as const)).to.throw(/layout T differs.*unknown here: B/);
    expect(() => checkLayout({ A: 0 }, 'T', ['A'] as const)).to.throw(/no WORDS/);
    expect(() => checkLayout({ A: -1, WORDS: 1 }, 'T', ['A'] as const)).to.throw(/T\.A is not a word offset/);
    expect(() => checkLayout(undefined, 'T', ['A'] as const)).to.throw(/exports no layout T/);
  });

  it('takes every layout from the addon: distinct offsets inside WORDS', () => {
    for (const [name, l] of Object.entries({ PortCounter, PortWord, QueueStat, CaptureWord, ClassifyCount, FlowWord, FlowField, FlowStat, DeliverStat, TxStat, ReadStat, RecvStat })) {
      const offsets = Object.entries(l)
        .filter(([k]) => k !== 'WORDS')
        .map(([, v]) => v);
      expect(new Set(offsets).size, `${name}: distinct offsets`).to.equal(offsets.length);
      expect(Math.max(...offsets), `${name}: inside WORDS`).to.be.lessThan(l.WORDS);
    }
    // The VLAN bitmap is the last field of a port's words and takes 4096 bits.
    expect(PortWord.WORDS - PortWord.ALLOWED).to.equal(128);
  });
});
