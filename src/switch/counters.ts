// Per-port counters, in a SharedArrayBuffer: the data plane adds, anyone reads, no message.
// Each data-plane thread of the switch counts in a block of its own (no word has two writers).
// The words are declared once, in native/switch/switch_layout.h (what each counts is said
// there); the forwarder writes them, this module names them.
import { PortCounter } from '../native/switch.js';

export { PortCounter };
export type PortCounterName = Exclude<keyof typeof PortCounter, 'WORDS'>;
export const PORT_COUNTERS = PortCounter.WORDS;

export type PortCounters = Record<Lowercase<PortCounterName>, number>;

/** A port's counters: a block of words for each data-plane thread that may count for it. */
export function newCounters(threads = 1): Float64Array {
  return new Float64Array(new SharedArrayBuffer(PORT_COUNTERS * threads * 8));
}

/** A port's counters, the blocks of all threads added up. */
export function readCounters(c: Float64Array): PortCounters {
  const out = {} as PortCounters;
  for (const [k, i] of Object.entries(PortCounter)) {
    if (k === 'WORDS') continue;
    let v = 0;
    for (let at = 0; at + PORT_COUNTERS <= c.length; at += PORT_COUNTERS) v += c[at + i];
    out[k.toLowerCase() as Lowercase<PortCounterName>] = v;
  }
  return out;
}
