// Medians, ratios, the Markdown report and SVG charts of `npm run bench`.

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

export interface Chart {
  file: string;
  title: string;
  yLabel: string;
  categories: string[];
  series: Array<{ name: string; values: number[] }>;
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A grouped bar chart as a standalone SVG document. */
export function barChartSvg(ch: Chart): string {
  const W = 760;
  const H = 420;
  const left = 70;
  const right = 20;
  const top = 50;
  const bottom = 90;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const max = Math.max(1e-9, ...ch.series.flatMap((s) => s.values.filter(Number.isFinite)));
  const step = niceStep(max / 5);
  const yMax = Math.ceil(max / step) * step;
  const groupW = plotW / Math.max(1, ch.categories.length);
  const barW = (groupW * 0.8) / Math.max(1, ch.series.length);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16">${esc(ch.title)}</text>`);
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    const y = top + plotH - (v / yMax) * plotH;
    out.push(`<line x1="${left}" y1="${y.toFixed(1)}" x2="${W - right}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${esc(short(v))}</text>`);
  }
  out.push(`<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(ch.yLabel)}</text>`);
  ch.categories.forEach((cat, i) => {
    const gx = left + i * groupW + groupW * 0.1;
    ch.series.forEach((s, j) => {
      const v = s.values[i];
      if (!Number.isFinite(v)) return;
      const h = (v / yMax) * plotH;
      const x = gx + j * barW;
      out.push(`<rect x="${x.toFixed(1)}" y="${(top + plotH - h).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[j % COLORS.length]}"><title>${esc(`${s.name} ${cat}: ${short(v)}`)}</title></rect>`);
    });
    out.push(`<text x="${(left + i * groupW + groupW / 2).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle">${esc(cat)}</text>`);
  });
  out.push(`<line x1="${left}" y1="${top + plotH}" x2="${W - right}" y2="${top + plotH}" stroke="black"/>`);
  ch.series.forEach((s, j) => {
    const x = left + j * 180;
    const y = H - 30;
    out.push(`<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${COLORS[j % COLORS.length]}"/>`);
    out.push(`<text x="${x + 18}" y="${y}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function niceStep(raw: number): number {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function short(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v % 1e6 ? 1 : 0)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v % 1e3 ? 1 : 0)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
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
