// The two shapes of a conformance report: a summary table for people, and one JSON document
// for CI ({backend, cases: [{name, group, status, detail}]}, plus spec and ms per case).
import type { ConformanceReport, CaseResult } from './runner.js';
import { STATUSES } from './case.js';

export function reportJson(r: ConformanceReport): string {
  return JSON.stringify({ backend: r.backend, cases: r.cases.map(({ name, group, status, detail, spec, ms }) => ({ name, group, status, detail, spec, ms })), notRun: r.notRun }, null, 2) + '\n';
}

/** One line per case as it finishes (for a terminal while the run goes on). */
export function resultLine(c: CaseResult): string {
  return `${c.status.padEnd(8)} ${c.group}/${c.name}${c.status === 'passed' ? '' : `: ${c.detail}`}`;
}

function cut(s: string, n: number): string {
  return s.length <= n ? s : s.slice(0, n - 1) + '…';
}

/** The summary table: each case's status and detail, then the counts by status. */
export function reportTable(r: ConformanceReport): string {
  const w = Math.min(48, Math.max(4, ...r.cases.map((c) => `${c.group}/${c.name}`.length)));
  const lines = [
    `backend: ${r.backend.spawn ?? r.backend.socket} (${r.backend.type}, socket ${r.backend.socket}${r.backend.pid ? `, pid ${r.backend.pid}` : ''}${r.backend.restarts ? `, restarted ${r.backend.restarts}x` : ''})`,
    `features ${r.backend.features}, protocol features ${r.backend.protocolFeatures}`,
    '',
    `${'case'.padEnd(w)}  ${'status'.padEnd(8)}  detail`,
    `${'-'.repeat(w)}  ${'-'.repeat(8)}  ${'-'.repeat(40)}`,
  ];
  for (const c of r.cases) lines.push(`${cut(`${c.group}/${c.name}`, w).padEnd(w)}  ${c.status.padEnd(8)}  ${cut(c.detail, 110)}`);
  lines.push('');
  const counts = STATUSES.map((s) => [s, r.cases.filter((c) => c.status === s).length] as const).filter(([, n]) => n > 0);
  lines.push(`${r.cases.length} cases: ${counts.map(([s, n]) => `${n} ${s}`).join(', ')}${r.notRun.length ? `; ${r.notRun.length} not run (the backend died and was not started by us)` : ''}`);
  return lines.join('\n') + '\n';
}
