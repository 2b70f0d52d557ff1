// Runs the case table against one backend. For each case: count the backend's fds, run the
// case under its timeout, close everything the case opened, see whether the backend died
// (spawned child's exit signal, the listener's process gone, or the socket refusing), then
// make a fresh, correct connection move data (traffic.ts), then count the fds again. The
// verdict is the worst of: crashed, hung (the case or the fresh connection got no answer in
// time), leaked (more fds than before, after a grace period), and the case's own outcome.
// A crashed spawned backend is started again before the next case; one we did not start
// ends the run (the remaining cases are listed as not run).
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, has } from '../virtio/features.js';
import { ProtocolFeature } from '../vhost-user/protocol.js';
import { BackendProcess } from './backend-process.js';
import { CaseContext, type ConformanceCase, type Offer, type Status } from './case.js';
import { moveData, type DeviceType } from './traffic.js';
import { NoAnswer } from './helpers.js';
import { retryEagain } from './connect.js';

export interface CaseResult {
  name: string;
  group: string;
  status: Status;
  detail: string;
  /** what the spec says should happen */
  spec: string;
  ms: number;
}

export interface ConformanceReport {
  backend: { socket: string; type: DeviceType; spawn: string | null; pid: number | null; features: string; protocolFeatures: string; restarts: number };
  cases: CaseResult[];
  /** cases not run: the backend (not spawned by us) died */
  notRun: string[];
}

export interface RunOptions {
  socket: string;
  type: DeviceType;
  spawn?: string;
  /** run only the cases of these groups (or with these names) */
  only?: string[];
  /** ms for the fresh connection's data check (default 5000) */
  trafficTimeoutMs?: number;
  /** ms the backend's fd count may take to come back after a case (default 1500) */
  fdGraceMs?: number;
  /** called after each case */
  onResult?: (r: CaseResult) => void;
  onBackendOutput?: (line: string) => void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hex = (x: bigint): string => `0x${x.toString(16)}`;

class Timeout extends Error {}

/** Resolves with p, or rejects with Timeout after ms; p's late settling is ignored. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Timeout(`${what}: no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(t));
}

/** GET_FEATURES, and the protocol features and queue count when offered. */
export async function readOffer(socket: string, timeoutMs = 3000): Promise<Offer> {
  const fe = await retryEagain(() => VhostUserFrontend.connect(socket, { timeoutMs }));
  try {
    const features = await fe.getFeatures();
    let protocolFeatures = 0n;
    let queueNum = 0;
    if (has(features, VHOST_USER_F_PROTOCOL_FEATURES)) {
      protocolFeatures = await fe.getProtocolFeatures();
      if (protocolFeatures & (1n << BigInt(ProtocolFeature.MQ))) {
        await fe.setProtocolFeatures(1n << BigInt(ProtocolFeature.MQ));
        queueNum = Number(await fe.getQueueNum());
      }
    }
    return { features, protocolFeatures, queueNum };
  } finally {
    fe.close();
  }
}

/** Cases that apply to `type` and match --only (a group or a case name, each). */
export function selectCases(all: readonly ConformanceCase[], type: DeviceType, only?: string[]): ConformanceCase[] {
  return all.filter((c) => (c.types ?? ['net', 'blk']).includes(type) && (!only || only.length === 0 || only.includes(c.group) || only.includes(c.name)));
}

export async function runConformance(cases: readonly ConformanceCase[], o: RunOptions): Promise<ConformanceReport> {
  const be = new BackendProcess({ socket: o.socket, spawn: o.spawn, onOutput: o.onBackendOutput });
  const selected = selectCases(cases, o.type, o.only);
  const results: CaseResult[] = [];
  const notRun: string[] = [];
  await be.start();
  try {
    const trafficMs = o.trafficTimeoutMs ?? 5000;
    // The first data check opens whatever the backend opens lazily before fds are counted.
    await withTimeout(moveData(o.socket, o.type, { timeoutMs: trafficMs }), trafficMs + 1000, 'the first data check').catch((e: Error) => {
      throw new Error(`a correct connection does not move data before any case ran: ${e.message}`);
    });
    const offer = await readOffer(o.socket);
    const fdGraceMs = o.fdGraceMs ?? 1500;
    const fds = { baseline: await settledFdCount(be, fdGraceMs) };
    for (let i = 0; i < selected.length; i++) {
      const c = selected[i];
      const r = await runOne(c, be, offer, o, trafficMs, fds);
      results.push(r);
      o.onResult?.(r);
      if (r.status === 'crashed') {
        if (be.spawned) {
          await be.restart();
          // A restarted backend that moves no data cannot judge the cases left: they are not run.
          const moved = await withTimeout(moveData(o.socket, o.type, { timeoutMs: trafficMs }), trafficMs + 1000, 'data check after the restart').then(
            () => null,
            (e: Error) => e.message,
          );
          if (moved !== null) {
            r.detail += `; restarted, the backend moved no data (${moved}): the cases left were not run`;
            notRun.push(...selected.slice(i + 1).map((x) => x.name));
            break;
          }
          fds.baseline = await settledFdCount(be, fdGraceMs);
        } else {
          notRun.push(...selected.slice(i + 1).map((x) => x.name));
          break;
        }
      }
    }
    return {
      backend: {
        socket: o.socket,
        type: o.type,
        spawn: o.spawn ?? null,
        pid: be.pid,
        features: hex(offer.features),
        protocolFeatures: hex(offer.protocolFeatures),
        restarts: Math.max(0, be.starts - 1),
      },
      cases: results,
      notRun,
    };
  } finally {
    await be.stop();
  }
}

/** The backend's fd count once it has stopped changing (connections just closed are torn down), or null. */
async function settledFdCount(be: BackendProcess, graceMs: number): Promise<number | null> {
  let last = be.fdCount();
  const deadline = Date.now() + graceMs;
  while (last !== null && Date.now() < deadline) {
    await sleep(50);
    const n = be.fdCount();
    if (n === last) break;
    last = n;
  }
  return last;
}

async function runOne(c: ConformanceCase, be: BackendProcess, offer: Offer, o: RunOptions, trafficMs: number, fdState: { baseline: number | null }): Promise<CaseResult> {
  const t0 = Date.now();
  const fds0 = fdState.baseline;
  const ctx = new CaseContext(o.socket, o.type, offer);
  const base = { name: c.name, group: c.group, spec: c.spec };
  const timeoutMs = c.timeoutMs ?? 5000;
  let status: Status;
  let detail: string;
  try {
    const out = await withTimeout(c.run(ctx), timeoutMs, c.name);
    status = out.status;
    detail = out.detail;
  } catch (e) {
    if (e instanceof Timeout) {
      status = 'hung';
      detail = `the case got no answer within ${timeoutMs} ms`;
    } else if (e instanceof NoAnswer) {
      status = 'hung';
      detail = e.message;
    } else {
      status = 'failed';
      detail = (e as Error).message;
    }
  } finally {
    ctx.dispose();
  }
  const done = (s: Status, d: string): CaseResult => ({ ...base, status: s, detail: d, ms: Date.now() - t0 });
  // A backend that dies of what a case sent may take a moment to go.
  await sleep(20);
  let dead = await be.deathCause();
  if (dead) return done('crashed', `${dead} (${status}: ${detail})`);
  try {
    await withTimeout(moveData(o.socket, o.type, { timeoutMs: trafficMs }), trafficMs + 1000, 'a fresh connection');
  } catch (e) {
    await sleep(100);
    dead = await be.deathCause();
    if (dead) return done('crashed', `${dead} (${status}: ${detail})`);
    return done('hung', `after the case, a fresh connection did not move data: ${(e as Error).message} (case: ${status}: ${detail})`);
  }
  if (fds0 !== null) {
    const deadline = Date.now() + (o.fdGraceMs ?? 1500);
    let fds = be.fdCount();
    while (fds !== null && fds > fds0 && Date.now() < deadline) {
      await sleep(50);
      fds = be.fdCount();
    }
    fdState.baseline = fds;
    if (fds !== null && fds > fds0) return done('leaked', `the backend has ${fds - fds0} more fds open than before the case (${fds0} -> ${fds}) (case: ${status}: ${detail})`);
  }
  return done(status, detail);
}

/** Exit code for a report: 1 when any case crashed, hung, leaked or failed. */
export function exitCodeOf(r: ConformanceReport): number {
  return r.cases.some((c) => c.status === 'crashed' || c.status === 'hung' || c.status === 'leaked' || c.status === 'failed') ? 1 : 0;
}
