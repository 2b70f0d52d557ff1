// `vhostkit ctl top`: live rates per port and per queue, refreshed in place on a terminal
// (as testpmd's `show port stats` or `ovs-appctl dpif-netdev/pmd-stats-show` are read):
// packets and bits per second each way, drops per second, notifications per second and
// ring fill, computed from two readings of the management API's counters.
import { apiRequest, table, type Row } from './api-client.js';

export interface TopOptions {
  api: string;
  token?: string;
  /** seconds between readings */
  interval: number;
  /** refreshes to print, then exit (0: until interrupted) */
  count: number;
  out: { write(s: string): unknown; isTTY?: boolean };
}

interface Sample {
  at: number;
  ports: Row[];
  queues: Row[];
}

async function get(o: TopOptions, path: string): Promise<unknown> {
  const r = await apiRequest(o.api, 'GET', path, undefined, o.token);
  if (r.status >= 400) throw new Error(`${path}: ${(r.body as { error?: string })?.error ?? r.text}`);
  return r.body;
}

async function sample(o: TopOptions): Promise<Sample> {
  const at = Date.now();
  const ports = (await get(o, '/v1/ports')) as Row[];
  const switches = (await get(o, '/v1/switches')) as Row[];
  const queues: Row[] = [];
  for (const s of switches) for (const q of (await get(o, `/v1/switches/${encodeURIComponent(String(s.name))}/queues`)) as Row[]) queues.push({ ...q, switch: s.name });
  return { at, ports, queues };
}

/** 1234567 -> "1.23M"; below 1000 as an integer. */
export function rate(x: number): string {
  if (!Number.isFinite(x) || x < 0) return '-';
  if (x >= 1e9) return `${(x / 1e9).toFixed(2)}G`;
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return String(Math.round(x));
}

const counters = (p: Row) => (p.counters ?? {}) as Record<string, number>;
const drops = (p: Row) => Object.entries(counters(p)).reduce((n, [k, v]) => n + (k.startsWith('drop_') ? v : 0), 0);

/** The screen for two readings. */
export function render(prev: Sample, cur: Sample): string {
  const secs = Math.max(1e-3, (cur.at - prev.at) / 1000);
  const before = new Map(prev.ports.map((p) => [p.name, p]));
  const per = (now: number, then: number | undefined) => rate((now - (then ?? now)) / secs);
  const ports = table(cur.ports, [
    ['PORT', (p) => p.name],
    ['SWITCH', (p) => p.switch],
    ['UP', (p) => (p.connected ? 'yes' : 'no')],
    ['RX pps', (p) => per(counters(p).rx_packets, before.get(p.name) && counters(before.get(p.name)!).rx_packets)],
    ['RX bps', (p) => per(counters(p).rx_bytes * 8, before.get(p.name) && counters(before.get(p.name)!).rx_bytes * 8)],
    ['TX pps', (p) => per(counters(p).tx_packets, before.get(p.name) && counters(before.get(p.name)!).tx_packets)],
    ['TX bps', (p) => per(counters(p).tx_bytes * 8, before.get(p.name) && counters(before.get(p.name)!).tx_bytes * 8)],
    ['DROPS/s', (p) => per(drops(p), before.get(p.name) && drops(before.get(p.name)!))],
    ['DROPS', (p) => drops(p)],
  ]);
  const qkey = (q: Row) => `${String(q.switch)}/${String(q.port)}/${String(q.index)}`;
  const qbefore = new Map(prev.queues.map((q) => [qkey(q), q]));
  const queues = table(cur.queues, [
    ['PORT', (q) => q.port],
    ['QUEUE', (q) => `${q.index} ${(q.index as number) % 2 === 0 ? 'rx' : 'tx'}`],
    ['pps', (q) => per(q.packets as number, qbefore.get(qkey(q))?.packets as number | undefined)],
    ['bps', (q) => per((q.bytes as number) * 8, ((qbefore.get(qkey(q))?.bytes as number | undefined) ?? (q.bytes as number)) * 8)],
    ['NOTIFY/s', (q) => per(q.notifySent as number, qbefore.get(qkey(q))?.notifySent as number | undefined)],
    ['FILL', (q) => `${q.ringFill}/${q.size}`],
  ]);
  return `vhostkit top: ${new Date(cur.at).toISOString().slice(11, 19)}, rates over ${secs.toFixed(1)} s\n\n${ports}\n${cur.queues.length ? queues : '(no running queues)\n'}`;
}

export async function top(o: TopOptions): Promise<number> {
  let prev = await sample(o);
  for (let n = 0; o.count === 0 || n < o.count; n++) {
    await new Promise((r) => setTimeout(r, o.interval * 1000));
    const cur = await sample(o);
    const screen = render(prev, cur);
    o.out.write(o.out.isTTY ? `\x1b[H\x1b[2J${screen}` : `${screen}\n`);
    prev = cur;
  }
  return 0;
}
