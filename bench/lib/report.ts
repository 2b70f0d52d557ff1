// Medians, ratios and the Markdown tables of `npm run bench`, and which rows its charts show
// (the charts themselves: chart.ts).
import type { Chart } from './chart.js';

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** One measured configuration: the subject(s) and the reference, each with its samples. */
export interface Row {
  config: string;
  unit: string;
  /** name -> samples (one per round); the first entry is the subject, `reference` names the reference */
  samples: Record<string, number[]>;
  reference: string;
  subject: string;
  /** extra columns (medians of other measures, e.g. latency), name -> value */
  extra?: Record<string, string>;
}

export interface CaseReport {
  id: string;
  title: string;
  /** how to read it, what the reference is */
  notes: string[];
  rows: Row[];
  /** shell commands that reproduce one measurement of each side */
  commands: string[];
  /**
   * A target from the issue for the rows it names: a floor for the ratio subject / reference
   * (`ratio`), a ceiling for it when lower is better (`maxRatio`), or a ceiling for the
   * subject's own median (`maxSubject`).
   */
  target?: { ratio?: number; maxRatio?: number; maxSubject?: number; rows: (row: Row) => boolean; what: string };
  charts?: Chart[];
}

export function ratio(r: Row): number {
  return median(r.samples[r.subject]) / median(r.samples[r.reference]);
}

/**
 * The median of the per-round ratios subject[i] / reference[i]. Each round measures the two
 * next to each other, so on a machine whose speed shifts during a run (these do, between two
 * regimes) a round's pair shares one regime; the ratio of medians can mix regimes.
 */
export function pairedRatio(r: Row): number {
  const s = r.samples[r.subject];
  const ref = r.samples[r.reference];
  const n = Math.min(s.length, ref.length);
  return median(Array.from({ length: n }, (_, i) => s[i] / ref[i]).filter(Number.isFinite));
}

function fmt(v: number, unit: string): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (unit === 'Mpps') return v.toFixed(2);
  if (unit === 'IOPS') return v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
  return v.toPrecision(3);
}

export function markdownTable(c: CaseReport): string {
  if (c.rows.length === 0) return '_no rows_\n';
  const names = Object.keys(c.rows[0].samples);
  const extras = Object.keys(c.rows[0].extra ?? {});
  const head = ['configuration', ...names.map((n) => `${n} (${c.rows[0].unit}, median)`), `ratio ${c.rows[0].subject} / ${c.rows[0].reference}`, 'median of round ratios', ...extras];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of c.rows) {
    // The header names the first row's unit; a row in another unit says so in its values.
    const value = (v: number) => (r.unit === c.rows[0].unit ? fmt(v, r.unit) : `${fmt(v, r.unit)} ${r.unit}`);
    const cells = [r.config, ...names.map((n) => value(median(r.samples[n]))), ratio(r).toFixed(2), pairedRatio(r).toFixed(2), ...extras.map((e) => r.extra?.[e] ?? '')];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n') + '\n';
}

/**
 * A chart of `rows`: one group of bars per row, labelled by `label` (the row's configuration
 * unless given), one bar per name in the rows' samples, from all of its samples.
 */
export function rowsChart(rows: Row[], c: { file: string; title: string; yLabel: string; label?: (r: Row) => string }): Chart {
  return {
    file: c.file,
    title: c.title,
    yLabel: c.yLabel,
    categories: rows.map(c.label ?? ((r) => r.config)),
    series: Object.keys(rows[0]?.samples ?? {}).map((name) => ({ name, samples: rows.map((r) => r.samples[name] ?? []) })),
  };
}

/** Whether the target's rows meet it, and the figure checked for each. */
export function checkTarget(c: CaseReport): { ok: boolean; figures: string[] } | null {
  const t = c.target;
  if (!t) return null;
  const rows = c.rows.filter(t.rows);
  const figures: string[] = [];
  let ok = rows.length > 0;
  for (const r of rows) {
    if (t.maxSubject !== undefined) {
      const v = median(r.samples[r.subject]);
      figures.push(`${fmt(v, r.unit)} ${r.unit}`);
      ok &&= v <= t.maxSubject;
    } else {
      // Both estimates must meet it: the ratio of medians and the median of round ratios.
      const x = ratio(r);
      const p = pairedRatio(r);
      figures.push(`${x.toFixed(2)} / ${p.toFixed(2)}`);
      if (t.ratio !== undefined) ok &&= x >= t.ratio && p >= t.ratio;
      if (t.maxRatio !== undefined) ok &&= x <= t.maxRatio && p <= t.maxRatio;
    }
  }
  return { ok, figures };
}
