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
  /** seconds (0: none), as the flow was written */
  idleTimeout: number;
  hardTimeout: number;
  /** milliseconds since the flow's last match (since it was added, if none) */
  idleMs: number;
  /** milliseconds since the flow was added */
  ageMs: number;
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
    this.fwd.addFlow(words, Date.now());
    this.specs.set(id, { ...spec, words });
    this.byMatch.set(key, id);
  }

  /**
   * Removes the flows a match (FlowWord layout) names; strict: only the one of its priority.
   * `spec`: the match as parsed, which lets a strict removal forget its flow without a scan.
   */
  remove(words: Int32Array, strict: boolean, spec?: { priority: number; match: string }): number {
    const n = this.fwd.removeFlows(words, strict);
    if (n === 0) return 0;
    const key = spec && `${spec.priority} ${spec.match}`;
    const id = key === undefined ? undefined : this.byMatch.get(key);
    if (strict && key !== undefined && id !== undefined) {
      this.specs.delete(id);
      this.byMatch.delete(key);
    } else {
      this.forgetRemoved();
    }
    return n;
  }

  /** Removes the flow of this priority and match; true if it was there. */
  removeByKey(priority: number, match: string): boolean {
    const id = this.byMatch.get(`${priority} ${match}`);
    const f = id === undefined ? undefined : this.specs.get(id);
    return f !== undefined && this.remove(f.words, true, f) > 0;
  }

  /** Removes the flows whose idle or hard timeout has passed; returns how many. */
  expire(now: number): number {
    const n = this.fwd.expireFlows(now);
    if (n > 0) this.forgetRemoved();
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
    const st = this.fwd.flowStats(Date.now());
    const out: FlowEntry[] = [];
    for (let i = 0; i + FlowStat.WORDS <= st.length; i += FlowStat.WORDS) {
      const f = this.specs.get(st[i + FlowStat.ID]);
      if (!f) continue;
      const packets = st[i + FlowStat.PACKETS];
      const bytes = st[i + FlowStat.BYTES];
      const idleMs = st[i + FlowStat.IDLE_MS];
      const ageMs = st[i + FlowStat.AGE_MS];
      const { priority, match, actions, idleTimeout, hardTimeout } = f;
      out.push({ priority, match, actions, packets, bytes, idleTimeout, hardTimeout, idleMs, ageMs, line: formatFlow(f, packets, bytes, idleMs) });
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

  /** Forgets the flows the native table no longer has. */
  private forgetRemoved(): void {
    const st = this.fwd.flowStats(0);
    const left = new Set<number>();
    for (let i = 0; i + FlowStat.WORDS <= st.length; i += FlowStat.WORDS) left.add(st[i + FlowStat.ID]);
    for (const [id, f] of [...this.specs.entries()]) {
      if (left.has(id)) continue;
      this.specs.delete(id);
      this.byMatch.delete(`${f.priority} ${f.match}`);
    }
  }
}
