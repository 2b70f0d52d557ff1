// The bench report's charts: grouped bar charts as standalone SVG documents. Each bar is the
// median of a series' samples (one per round) for a category, with an error bar from the
// smallest sample to the largest. Nothing is drawn over anything else: text widths are
// estimated from the font's advance widths, a category label wraps onto lines within its
// group, the legend flows onto rows within the chart, and the margins and the chart's width
// grow to hold what they carry.
import { median } from './report.js';

export interface Chart {
  /** file name without the date and the extension */
  file: string;
  title: string;
  yLabel: string;
  /** one group of bars per category; "\n" breaks a label, and a line wider than its group wraps at spaces */
  categories: string[];
  /** samples[i]: the series' samples (one per round) for category i; no finite sample, no bar */
  series: Array<{ name: string; samples: number[][] }>;
}

/**
 * Advance widths of DejaVu Sans, in thousandths of an em, of the characters ' ' to '~'. The
 * charts ask for DejaVu Sans; where it is missing, the usual sans-serif faces (Arial,
 * Helvetica, Liberation Sans) are narrower, so a layout that fits it fits them.
 */
const ADVANCE = [
  318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636, 636, 636, 636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698, 770, 632, 575,
  775, 752, 295, 295, 656, 557, 863, 748, 787, 603, 787, 695, 635, 611, 732, 684, 989, 685, 611, 685, 390, 337, 390, 838, 500, 500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579, 278, 974,
  634, 612, 635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838,
];

/** The width in pixels of `s` drawn at `fontSize` (characters outside ' '..'~' count as one em). */
export function textWidth(s: string, fontSize: number): number {
  let w = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0)! - 32;
    w += c >= 0 && c < ADVANCE.length ? ADVANCE[c] : 1000;
  }
  return (w / 1000) * fontSize;
}

/** DejaVu Sans's ascent and descent, in ems: the vertical extent of a line of text around its baseline. */
export const ASCENT = 0.93;
export const DESCENT = 0.24;
const LINE = 1.2; // line pitch, in ems

const FONT = 12;
const TITLE_FONT = 16;
const NOTE_FONT = 11;
const MARGIN = 10;
const WIDTH = 760; // the chart's width unless its groups need more
const PLOT_H = 280;
const MIN_BAR = 18; // the narrowest bar drawn, in pixels
const MAX_BAR = 64; // and the widest
const GROUP_FILL = 0.8; // the share of a group's width its bars take
const KEY = 12; // legend key square
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** `text` on lines no wider than `width` at `fontSize`: its own "\n" first, then at spaces (a single word wider stays whole). */
export function wrap(text: string, width: number, fontSize: number): string[] {
  const lines: string[] = [];
  for (const para of text.split('\n')) {
    let line = '';
    for (const word of para.split(' ')) {
      const next = line ? `${line} ${word}` : word;
      if (line && textWidth(next, fontSize) > width) {
        lines.push(line);
        line = word;
      } else line = next;
    }
    lines.push(line);
  }
  return lines;
}

function niceStep(raw: number): number {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/** A value for an axis tick or a tooltip: 3 significant figures at most, with k or M for thousands and millions. */
function short(v: number): string {
  const r = (x: number) => String(Number(x.toPrecision(3)));
  if (v >= 1e6) return `${r(v / 1e6)}M`;
  if (v >= 1e3) return `${r(v / 1e3)}k`;
  return r(v);
}

/** Lines of text, the first baseline at `y`, anchored at `x`. */
function textLines(lines: string[], x: number, y: number, fontSize: number, anchor: string, attrs = ''): string {
  const pitch = fontSize * LINE;
  return lines.map((l, k) => `<text x="${x.toFixed(1)}" y="${(y + k * pitch).toFixed(1)}" font-size="${fontSize}" text-anchor="${anchor}"${attrs}>${esc(l)}</text>`).join('\n');
}

/** A grouped bar chart with min..max error bars, as a standalone SVG document. */
export function barChartSvg(ch: Chart): string {
  const finite = (xs: number[] | undefined) => (xs ?? []).filter(Number.isFinite);
  const all = ch.series.flatMap((s) => s.samples.flatMap(finite));
  const counts = new Set(ch.series.flatMap((s) => s.samples.map((xs) => finite(xs).length)).filter((n) => n > 0));
  const max = Math.max(1e-9, ...all);
  const step = niceStep(max / 5);
  const yMax = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let k = 0; k * step <= yMax + step * 1e-9; k++) ticks.push(k * step);
  const nCat = Math.max(1, ch.categories.length);
  const nSer = Math.max(1, ch.series.length);

  // Horizontal: the y label and the tick labels on the left; groups wide enough for their bars
  // and for the widest word of any category label.
  const tickW = Math.max(...ticks.map((v) => textWidth(short(v), FONT)));
  const left = MARGIN + FONT * (ASCENT + DESCENT) + 8 + tickW + 6;
  const right = MARGIN + 10;
  const widestWord = Math.max(0, ...ch.categories.flatMap((c) => c.split(/[\n ]/).map((w) => textWidth(w, FONT))));
  const groupW = Math.max((nSer * MIN_BAR) / GROUP_FILL, widestWord + 8, (WIDTH - left - right) / nCat);
  const plotW = groupW * nCat;
  const W = Math.ceil(left + plotW + right);

  // Vertical: title and note on top; below the plot the category labels, then the legend.
  const titleLines = wrap(ch.title, W - 2 * MARGIN, TITLE_FONT);
  const n = counts.size === 1 ? [...counts][0] : 0;
  const note = n === 1 ? 'one round per bar: no error bars' : `bars: median of ${n > 1 ? `${n} rounds` : 'the rounds'}; error bars: from the lowest round to the highest`;
  const noteLines = wrap(note, W - 2 * MARGIN, NOTE_FONT);
  const titleY = MARGIN + TITLE_FONT * ASCENT;
  const noteY = titleY + (titleLines.length - 1) * TITLE_FONT * LINE + TITLE_FONT * DESCENT + 6 + NOTE_FONT * ASCENT;
  const top = noteY + (noteLines.length - 1) * NOTE_FONT * LINE + NOTE_FONT * DESCENT + 14;
  const plotH = Math.max(PLOT_H, textWidth(ch.yLabel, FONT) + 20);
  const base = top + plotH;
  const catLines = ch.categories.map((c) => wrap(c, groupW - 6, FONT));
  const maxCatLines = Math.max(1, ...catLines.map((l) => l.length));
  const catY = base + 6 + FONT * ASCENT;
  // Legend items flow left to right from the plot's left edge, a new row when one would pass the right margin.
  const legendTop = catY + (maxCatLines - 1) * FONT * LINE + FONT * DESCENT + 14;
  const rowH = FONT * LINE + 4;
  const legend: Array<{ x: number; row: number }> = [];
  let lx = left;
  let row = 0;
  for (const s of ch.series) {
    const w = KEY + 6 + textWidth(s.name, FONT);
    if (lx > left && lx + w > W - MARGIN) {
      row++;
      lx = left;
    }
    legend.push({ x: lx, row });
    lx += w + 20;
  }
  const H = Math.ceil(legendTop + (row + 1) * rowH + MARGIN);
  const yOf = (v: number) => base - (v / yMax) * plotH;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, sans-serif" font-size="${FONT}">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(textLines(titleLines, W / 2, titleY, TITLE_FONT, 'middle', ' class="title"'));
  out.push(textLines(noteLines, W / 2, noteY, NOTE_FONT, 'middle', ' class="note" fill="#444"'));
  for (const v of ticks) {
    const y = yOf(v).toFixed(1);
    out.push(`<line class="grid" data-value="${v}" x1="${left}" y1="${y}" x2="${(left + plotW).toFixed(1)}" y2="${y}" stroke="#ddd"/>`);
    out.push(textLines([short(v)], left - 6, yOf(v) + FONT * 0.35, FONT, 'end', ' class="tick"'));
  }
  const yLabelX = MARGIN + FONT * ASCENT;
  const yLabelY = top + plotH / 2;
  out.push(
    `<text class="ylabel" x="${yLabelX.toFixed(1)}" y="${yLabelY.toFixed(1)}" font-size="${FONT}" text-anchor="middle" transform="rotate(-90 ${yLabelX.toFixed(1)} ${yLabelY.toFixed(1)})">${esc(ch.yLabel)}</text>`,
  );
  const barW = Math.min((groupW * GROUP_FILL) / nSer, MAX_BAR);
  const capW = Math.min(10, barW * 0.5);
  ch.categories.forEach((cat, i) => {
    const gx = left + (i + 0.5) * groupW - (nSer * barW) / 2;
    ch.series.forEach((s, j) => {
      const xs = finite(s.samples[i]);
      if (xs.length === 0) return;
      const med = median(xs);
      const lo = Math.min(...xs);
      const hi = Math.max(...xs);
      const x = gx + j * barW + 1;
      const cx = x + (barW - 2) / 2;
      const at = `data-series="${j}" data-category="${i}"`;
      const tip = `${s.name}, ${cat.replace(/\n/g, ' ')}: median ${short(med)}, ${xs.length} rounds ${short(lo)}..${short(hi)}`;
      out.push(
        `<rect class="bar" ${at} x="${x.toFixed(1)}" y="${yOf(med).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(base - yOf(med)).toFixed(1)}" fill="${COLORS[j % COLORS.length]}"><title>${esc(tip)}</title></rect>`,
      );
      if (xs.length > 1) {
        const [y1, y2] = [yOf(lo).toFixed(1), yOf(hi).toFixed(1)];
        const [c1, c2] = [(cx - capW / 2).toFixed(1), (cx + capW / 2).toFixed(1)];
        out.push(`<line class="err" ${at} x1="${cx.toFixed(1)}" y1="${y1}" x2="${cx.toFixed(1)}" y2="${y2}" stroke="#222" stroke-width="1.5"/>`);
        out.push(`<line class="err-cap" ${at} x1="${c1}" y1="${y1}" x2="${c2}" y2="${y1}" stroke="#222" stroke-width="1.5"/>`);
        out.push(`<line class="err-cap" ${at} x1="${c1}" y1="${y2}" x2="${c2}" y2="${y2}" stroke="#222" stroke-width="1.5"/>`);
      }
    });
    out.push(textLines(catLines[i], left + i * groupW + groupW / 2, catY, FONT, 'middle', ' class="category"'));
  });
  out.push(`<line x1="${left}" y1="${base.toFixed(1)}" x2="${(left + plotW).toFixed(1)}" y2="${base.toFixed(1)}" stroke="black"/>`);
  ch.series.forEach((s, j) => {
    const { x, row: r } = legend[j];
    const mid = legendTop + r * rowH + KEY / 2;
    out.push(`<rect class="key" x="${x.toFixed(1)}" y="${(mid - KEY / 2).toFixed(1)}" width="${KEY}" height="${KEY}" fill="${COLORS[j % COLORS.length]}"/>`);
    out.push(textLines([s.name], x + KEY + 6, mid + FONT * 0.35, FONT, 'start', ' class="legend"'));
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
