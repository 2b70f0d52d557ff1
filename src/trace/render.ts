// The two renderings of a trace record: readable text, one line per message (and an
// indented line per memory region), for a terminal; and JSON lines, one object per record,
// for a file that `vhostkit trace replay` and other programs read back.
import { formatBytes, formatFd } from './fd-info.js';
import type { Json, MessageRecord, RingSnapshot, TraceRecord } from './decode.js';

/** One JSON line (no newline). */
export function toJsonLine(r: TraceRecord): string {
  return JSON.stringify(r);
}

/** Reads one JSON line back; throws with the reason when it is not a trace record. */
export function parseJsonLine(line: string): TraceRecord {
  const r = JSON.parse(line) as TraceRecord;
  if (r === null || typeof r !== 'object' || !['message', 'session', 'rings'].includes((r as { type?: string }).type ?? ''))
    throw new Error('not a trace record (expected "type": message, session or rings)');
  return r;
}

function clock(t: number): string {
  const d = new Date(Math.floor(t));
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const us = Math.round((t - Math.floor(t)) * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}${pad(us, 3)}`;
}

function isObject(v: Json | undefined): v is { [k: string]: Json } {
  return v !== null && v !== undefined && typeof v === 'object' && !Array.isArray(v);
}

function region(r: Json): string {
  if (!isObject(r)) return String(r);
  const size = typeof r.size === 'string' ? Number(BigInt(r.size)) : NaN;
  return `gpa ${String(r.gpa)} size ${Number.isSafeInteger(size) ? formatBytes(size) : String(r.size)} uva ${String(r.uva)} offset ${String(r.mmapOffset)}`;
}

function value(v: Json): string {
  if (typeof v === 'string') return v === '' || /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v.join(' ');
  return JSON.stringify(v);
}

/** The body of a message as `key=value` words; feature names as words; regions on lines of their own. */
function bodyText(m: MessageRecord): { inline: string; lines: string[] } {
  const b = m.body;
  const lines: string[] = [];
  if (!isObject(b)) return { inline: b === null || b === undefined ? '' : value(b), lines };
  const words: string[] = [];
  for (const [k, v] of Object.entries(b)) {
    if (k === 'regions' && Array.isArray(v)) {
      words.push(`${v.length} region${v.length === 1 ? '' : 's'}`);
      v.forEach((r, i) => lines.push(`region ${i}: ${region(r)}`));
    } else if (k === 'region') {
      words.push(region(v));
    } else if (k === 'names' && Array.isArray(v)) {
      lines.push(v.length ? v.join(' ') : '(none)');
    } else if (k === 'notOffered' && Array.isArray(v)) {
      lines.push(`not offered by the backend: ${v.join(' ')}`);
    } else if (isObject(v)) {
      words.push(
        `${k}={${Object.entries(v)
          .map(([kk, vv]) => `${kk}=${value(vv)}`)
          .join(' ')}}`,
      );
    } else {
      words.push(`${k}=${value(v)}`);
    }
  }
  return { inline: words.join(' '), lines };
}

function arrow(m: MessageRecord): string {
  const dir = m.from === 'frontend' ? 'F->B' : 'B->F';
  return m.channel === 'backend' ? `${dir} (backend channel)` : dir;
}

function ringText(r: RingSnapshot): string {
  if (r.error !== undefined) return `q${r.index}: ${r.error}`;
  if (r.layout === 'split') {
    let s = `q${r.index} avail ${r.avail} used ${r.used}`;
    if (r.avail !== undefined && r.used !== undefined) s += ` (${(r.avail - r.used) & 0xffff} pending)`;
    if (r.usedEvent !== undefined) s += ` used_event ${r.usedEvent} avail_event ${r.availEvent}`;
    if (r.availFlags) s += ' NO_INTERRUPT';
    if (r.usedFlags) s += ' NO_NOTIFY';
    return s;
  }
  const ev = (e?: { offWrap: number; flags: number }) => (e ? `${e.offWrap & 0x7fff}/${e.offWrap >> 15} flags ${e.flags}` : '?');
  return `q${r.index} packed driver event ${ev(r.driverEvent)} device event ${ev(r.deviceEvent)}`;
}

/** A record for people: one line, and for some messages a few indented lines after it. */
export function toText(r: TraceRecord): string {
  const head = `${clock(r.t)} #${r.session}`;
  if (r.type === 'session') {
    if (r.event === 'open') return `${head} session opened: frontend on ${r.frontend}${r.frontendPid ? ` (pid ${r.frontendPid})` : ''}, backend ${r.backend}\n`;
    if (r.event === 'refused') return `${head} session refused: ${r.reason}\n`;
    return `${head} session closed by the ${r.side}: ${r.reason}\n`;
  }
  if (r.type === 'rings') return `${head} rings: ${r.rings.map(ringText).join('; ')}\n`;
  const flags = [r.needReply ? 'need-reply' : '', r.flags & ~0xf ? `flags=0x${r.flags.toString(16)}` : ''].filter(Boolean).join(' ');
  const { inline, lines } = bodyText(r);
  let s = `${head} ${arrow(r)} ${r.name}${r.reply ? ' reply' : ''}${flags ? ` [${flags}]` : ''}${inline ? ` ${inline}` : ''}`;
  if (r.fds.length) s += ` fds: ${r.fds.map(formatFd).join(', ')}`;
  if (r.latencyMs !== undefined) s += ` (${r.latencyMs} ms)`;
  s += '\n';
  for (const l of lines) s += `    ${l}\n`;
  if (r.error !== undefined) s += `    MALFORMED (forwarded as it came): ${r.error}; payload ${r.payload || '(empty)'}\n`;
  return s;
}
