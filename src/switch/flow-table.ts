// A switch's flow table on its data-plane thread: the native table (switch_flows.cc) and each
// flow as it was written, by the id the native table counts it under. The control plane
// (Switch) and handlers (handlers.ts) both change it here, so a dump shows every flow
// whoever added it.
import { FlowAction, FlowOp, FlowStat, FlowWord, type NativeForwarder } from '../native/switch.js';
import { formatFlow, type FlowSpec } from './flows.js';

/** One flow of a dump, with its counters and its line as ovs-ofctl dump-flows prints it. */
export interface FlowEntry {
  priority: number;
  match: string;
  actions: string;
  packets: number;
  bytes: number;
  line: string;
}

export class FlowTable {
  private readonly specs = new Map<number, FlowSpec>();
  /** id by "priority match": a flow of the same priority and match is replaced */
  private readonly byMatch = new Map<string, number>();
  private nextId = 1;

  constructor(private readonly fwd: NativeForwarder) {}

  /** Adds a flow, or replaces the one of the same priority and match (its counters kept). */
  add(spec: FlowSpec): void {
    const key = `${spec.priority} ${spec.match}`;
    const id = this.byMatch.get(key) ?? this.nextId++;
    const words = spec.words.slice();
    words[FlowWord.ID] = id;
    this.fwd.addFlow(words);
    this.specs.set(id, { ...spec, words });
    this.byMatch.set(key, id);
  }

  /** Removes the flows a match (FlowWord layout) names; strict: only the one of its priority. */
  remove(words: Int32Array, strict: boolean): number {
    const n = this.fwd.removeFlows(words, strict);
    if (n === 0) return 0;
    const left = new Set(this.ids(this.fwd.flowStats()));
    for (const [id, f] of [...this.specs.entries()]) {
      if (left.has(id)) continue;
      this.specs.delete(id);
      this.byMatch.delete(`${f.priority} ${f.match}`);
    }
    return n;
  }

  /** Removes every flow that sends to handler `id`; returns how many. */
  removeSendingTo(handler: number): number {
    let n = 0;
    for (const f of [...this.specs.values()]) {
      if (this.sendsTo(f.words, handler)) n += this.remove(f.words, true);
    }
    return n;
  }

  dump(): FlowEntry[] {
    const st = this.fwd.flowStats();
    const out: FlowEntry[] = [];
    for (let i = 0; i + FlowStat.WORDS <= st.length; i += FlowStat.WORDS) {
      const f = this.specs.get(st[i + FlowStat.ID]);
      if (!f) continue;
      const packets = st[i + FlowStat.PACKETS];
      const bytes = st[i + FlowStat.BYTES];
      out.push({ priority: f.priority, match: f.match, actions: f.actions, packets, bytes, line: formatFlow(f, packets, bytes) });
    }
    return out;
  }

  get size(): number {
    return this.specs.size;
  }

  private sendsTo(words: Int32Array, handler: number): boolean {
    const n = words[FlowWord.N_ACTIONS];
    for (let a = 0; a < n; a++) {
      const at = FlowWord.WORDS + a * FlowAction.WORDS;
      if (words[at + FlowAction.OP] === FlowOp.HANDLER && words[at + FlowAction.A] === handler) return true;
    }
    return false;
  }

  private ids(st: Float64Array): number[] {
    const ids = [];
    for (let i = 0; i + FlowStat.WORDS <= st.length; i += FlowStat.WORDS) ids.push(st[i + FlowStat.ID]);
    return ids;
  }
}
