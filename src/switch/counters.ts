// Per-port counters, in a SharedArrayBuffer: the data plane adds, anyone reads, no message.
// The words are declared once, in native/switch/switch_layout.h (what each counts is said
// there); the forwarder writes them, this module names them.
import { PortCounter } from '../native/switch.js';

export { PortCounter };
export type PortCounterName = Exclude<keyof typeof PortCounter, 'WORDS'>;
export const PORT_COUNTERS = PortCounter.WORDS;

export type PortCounters = Record<Lowercase<PortCounterName>, number>;

export function newCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(PORT_COUNTERS * 8));
}

export function readCounters(c: Float64Array): PortCounters {
  const out = {} as PortCounters;
  for (const [k, i] of Object.entries(PortCounter)) if (k !== 'WORDS') out[k.toLowerCase() as Lowercase<PortCounterName>] = c[i];
  return out;
}
