// bench/lib/chart.ts: in the SVG it writes, no text overlaps other text, a legend key, a bar or
// an error bar, and everything lies inside the picture, for charts made to crowd it (long
// category labels, many series with long names, a long title); each bar reaches the median
// of its samples and its error bar spans their min..max, read back from the drawing against
// the grid lines' values. Text boxes are measured with the same font metrics the layout uses
// (textWidth, ASCENT, DESCENT): what is checked is the layout, not the font.
import { expect } from 'chai';
import { ASCENT, DESCENT, barChartSvg, textWidth, wrap, type Chart } from '../../bench/lib/chart.js';
import { median, rowsChart, type Row } from '../../bench/lib/report.js';

interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  what: string;
}

interface El {
  tag: string;
  attrs: Record<string, string>;
  text: string;
}

function unescape(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&amp;/g, '&');
}

/** The rect, line and text elements of an SVG document this generator wrote. */
function elements(svg: string): El[] {
  const out: El[] = [];
  for (const m of svg.matchAll(/<(rect|line|text)\b([^>]*?)\/?>(?:([^<]*)<\/text>)?/g)) {
    const attrs: Record<string, string> = {};
    for (const a of m[2].matchAll(/([\w-]+)="([^"]*)"/g)) attrs[a[1]] = a[2];
    out.push({ tag: m[1], attrs, text: unescape(m[3] ?? '') });
  }
  return out;
}

const num = (e: El, a: string) => Number(e.attrs[a]);

function textBox(e: El): Box {
  const fs = num(e, 'font-size');
  const w = textWidth(e.text, fs);
  const x = num(e, 'x');
  const y = num(e, 'y');
  const anchor = e.attrs['text-anchor'] ?? 'start';
  const what = `text "${e.text}"`;
  const rot = /rotate\(-90 ([\d.]+) ([\d.]+)\)/.exec(e.attrs.transform ?? '');
  if (rot) {
    // Turned a quarter left about (x, y): the line runs upwards, its glyphs' tops face left.
    expect([Number(rot[1]), Number(rot[2]), anchor]).to.deep.equal([x, y, 'middle']);
    return { x0: x - ASCENT * fs, x1: x + DESCENT * fs, y0: y - w / 2, y1: y + w / 2, what };
  }
  expect(e.attrs.transform, what).to.equal(undefined);
  const x0 = anchor === 'middle' ? x - w / 2 : anchor === 'end' ? x - w : x;
  return { x0, x1: x0 + w, y0: y - ASCENT * fs, y1: y + DESCENT * fs, what };
}

function shapeBox(e: El): Box {
  const what = `${e.attrs.class} ${e.tag} ${e.attrs['data-series'] ?? ''}/${e.attrs['data-category'] ?? ''}`;
  if (e.tag === 'rect') return { x0: num(e, 'x'), y0: num(e, 'y'), x1: num(e, 'x') + num(e, 'width'), y1: num(e, 'y') + num(e, 'height'), what };
  return { x0: Math.min(num(e, 'x1'), num(e, 'x2')), x1: Math.max(num(e, 'x1'), num(e, 'x2')), y0: Math.min(num(e, 'y1'), num(e, 'y2')), y1: Math.max(num(e, 'y1'), num(e, 'y2')), what };
}

const overlap = (a: Box, b: Box) => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;

/** Every overlap of a text with another text, a legend key, a bar or an error bar; every box outside the picture. */
function collisions(svg: string): string[] {
  const els = elements(svg);
  const [, , W, H] = /viewBox="([^"]+)"/.exec(svg)![1].split(' ').map(Number);
  const texts = els.filter((e) => e.tag === 'text').map(textBox);
  const shapes = els.filter((e) => ['key', 'bar', 'err', 'err-cap'].includes(e.attrs.class)).map(shapeBox);
  const found: string[] = [];
  texts.forEach((t, i) => {
    for (const u of [...texts.slice(i + 1), ...shapes]) if (overlap(t, u)) found.push(`${t.what} overlaps ${u.what}`);
  });
  const keys = shapes.filter((s) => s.what.startsWith('key'));
  keys.forEach((k, i) => keys.slice(i + 1).forEach((l) => overlap(k, l) && found.push(`${k.what} overlaps ${l.what}`)));
  for (const b of [...texts, ...shapes]) if (b.x0 < 0 || b.y0 < 0 || b.x1 > W || b.y1 > H) found.push(`${b.what} outside 0 0 ${W} ${H}`);
  return found;
}

/** The drawing's y -> value mapping, from the grid lines and the values they carry. */
function scale(svg: string): (y: number) => number {
  const grid = elements(svg).filter((e) => e.attrs.class === 'grid');
  expect(grid.length).to.be.at.least(2);
  const [a, b] = [grid[0], grid[grid.length - 1]];
  const [ya, yb, va, vb] = [num(a, 'y1'), num(b, 'y1'), num(a, 'data-value'), num(b, 'data-value')];
  return (y) => va + ((y - ya) / (yb - ya)) * (vb - va);
}

/** Samples m*(1 - s), m, m*(1 + 1.5 s), in a round order that is not sorted. */
const spread = (m: number, s: number) => [m, m * (1 + 1.5 * s), m * (1 - s)];

const blkLike: Chart = {
  file: 'blk',
  title: 'virtio-blk 4 KiB random I/O: IOPS by queue depth and queues',
  yLabel: 'IOPS',
  categories: ['randread', 'randwrite'].flatMap((rw) => ['QD 1, 1 queue', 'QD 32, 1 queue', 'QD 1, 2 queues', 'QD 32, 2 queues'].map((c) => `${rw} ${c}`)),
  series: ['qemu-storage-daemon', 'vhostkit', 'vhostkit --ram'].map((name, j) => ({ name, samples: Array.from({ length: 8 }, (_, i) => spread((1 + j) * (i % 2 ? 90_000 : 4000), 0.1 * (j + 1))) })),
};

const manySeries: Chart = {
  file: 'many',
  title: 'six series whose names are long enough that the legend cannot hold them on one row',
  yLabel: 'Mpps',
  categories: ['split, 64 B', 'split, 512 B', 'split, 1500 B', 'packed, 64 B', 'packed, 512 B', 'packed, 1500 B'],
  series: Array.from({ length: 6 }, (_, j) => ({ name: `backend number ${j + 1} (a long description)`, samples: Array.from({ length: 6 }, (_, i) => spread(5 + i + j, 0.2)) })),
};

const longTitleAndWords: Chart = {
  file: 'long',
  title: `${'a title far too long for one line of the chart, '.repeat(4)}end`,
  yLabel: 'requests per second',
  categories: ['configuration-with-a-very-long-unbreakable-name', 'another-long-unbreakable-configuration-name', 'short'],
  series: [
    { name: 'subject', samples: [[1], [2, 3, 2.5], [0.5, 0.25]] },
    { name: 'reference', samples: [[1.5, 1.2, 1.4, 1.1], [], [NaN, 0.75]] },
  ],
};

describe('bench charts', () => {
  for (const ch of [blkLike, manySeries, longTitleAndWords]) {
    it(`${ch.file}: no text overlaps text, a key, a bar or an error bar, and all is inside the picture`, () => {
      expect(collisions(barChartSvg(ch))).to.deep.equal([]);
    });

    it(`${ch.file}: bars at the medians, error bars from min to max of each point's samples`, () => {
      const svg = barChartSvg(ch);
      const value = scale(svg);
      const els = elements(svg);
      const at = (cls: string, j: number, i: number) => els.filter((e) => e.attrs.class === cls && e.attrs['data-series'] === String(j) && e.attrs['data-category'] === String(i));
      const px = value(0) - value(1); // value units per pixel; coordinates are written to 0.1 px
      ch.series.forEach((s, j) =>
        s.samples.forEach((raw, i) => {
          const xs = raw.filter(Number.isFinite);
          const bar = at('bar', j, i);
          const err = at('err', j, i);
          expect(bar.length, `bar ${j}/${i}`).to.equal(xs.length ? 1 : 0);
          expect(err.length, `error bar ${j}/${i}`).to.equal(xs.length > 1 ? 1 : 0);
          if (!xs.length) return;
          expect(value(num(bar[0], 'y')), `bar top ${j}/${i}`).to.be.closeTo(median(xs), 0.06 * px);
          expect(value(num(bar[0], 'y') + num(bar[0], 'height')), `bar bottom ${j}/${i}`).to.be.closeTo(0, 0.06 * px);
          if (xs.length < 2) return;
          const e = err[0];
          const ends = [value(num(e, 'y1')), value(num(e, 'y2'))].sort((a, b) => a - b);
          expect(ends[0], `error bar low ${j}/${i}`).to.be.closeTo(Math.min(...xs), 0.06 * px);
          expect(ends[1], `error bar high ${j}/${i}`).to.be.closeTo(Math.max(...xs), 0.06 * px);
          expect(num(e, 'x1')).to.equal(num(e, 'x2'));
          expect(num(e, 'x1')).to.be.within(num(bar[0], 'x'), num(bar[0], 'x') + num(bar[0], 'width'));
        }),
      );
    });
  }

  it('the crowded charts do need the wrapping: their labels and legends take more than one line', () => {
    const lines = (svg: string, cls: string) =>
      new Set(
        elements(svg)
          .filter((e) => e.attrs.class === cls)
          .map((e) => e.attrs.y),
      ).size;
    expect(lines(barChartSvg(blkLike), 'category')).to.be.above(1);
    expect(lines(barChartSvg(manySeries), 'legend')).to.be.above(1);
    expect(lines(barChartSvg(longTitleAndWords), 'title')).to.be.above(1);
  });

  it('wrap: breaks at "\\n", then at spaces within the width, keeping a wider word whole', () => {
    expect(wrap('randread\nQD 32', 1000, 12)).to.deep.equal(['randread', 'QD 32']);
    const label = 'split, 64 B, A <-> B unicast';
    const w = textWidth('split, 64 B', 12);
    const lines = wrap(label, w, 12);
    expect(lines.length).to.be.above(1);
    expect(lines.join(' ')).to.equal(label);
    for (const l of lines) expect(textWidth(l, 12), l).to.be.at.most(w);
    expect(wrap('unbreakable-word', 10, 12)).to.deep.equal(['unbreakable-word']);
    expect(textWidth('iii', 12)).to.be.below(textWidth('MMM', 12));
  });

  it('rowsChart: one group per row, one series per sample name, with every sample of the row', () => {
    const rows: Row[] = [
      { config: 'split, 64 B', unit: 'Mpps', subject: 'a', reference: 'b', samples: { a: [1, 2, 3], b: [4, 5, 6] } },
      { config: 'packed, 64 B', unit: 'Mpps', subject: 'a', reference: 'b', samples: { a: [7, 8, 9], b: [10, 11, 12] } },
    ];
    const ch = rowsChart(rows, { file: 'f', title: 't', yLabel: 'Mpps', label: (r) => r.config.toUpperCase() });
    expect(ch.categories).to.deep.equal(['SPLIT, 64 B', 'PACKED, 64 B']);
    expect(ch.series).to.deep.equal([
      {
        name: 'a',
        samples: [
          [1, 2, 3],
          [7, 8, 9],
        ],
      },
      {
        name: 'b',
        samples: [
          [4, 5, 6],
          [10, 11, 12],
        ],
      },
    ]);
  });
});
