// bench/lib/report.ts: medians, the two ratios, and the Markdown table (a row in a unit
// other than the header's carries its unit in its values).
import { expect } from 'chai';
import { markdownTable, median, pairedRatio, ratio, type CaseReport, type Row } from '../../bench/lib/report.js';

const row = (config: string, unit: string, a: number[], b: number[]): Row => ({ config, unit, samples: { a, b }, subject: 'a', reference: 'b' });

describe('bench report', () => {
  it('medians and the two ratios', () => {
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(Number.isNaN(median([]))).to.equal(true);
    const r = row('x', 'Mpps', [2, 8, 4], [4, 4, 16]);
    expect(ratio(r)).to.equal(1); // 4 / 4
    expect(pairedRatio(r)).to.equal(0.5); // median of 0.5, 2, 0.25
  });

  it("names the first row's unit in the header and the unit of any other row in its cells", () => {
    const c: CaseReport = {
      id: 'memory',
      title: 't',
      notes: [],
      commands: [],
      rows: [row('16 ports', 'MiB RSS', [63.4], [247]), row('one more port', 'KiB RSS', [25], [0.5])],
    };
    const lines = markdownTable(c).trim().split('\n');
    expect(lines[0]).to.equal('| configuration | a (MiB RSS, median) | b (MiB RSS, median) | ratio a / b | median of round ratios |');
    expect(lines[2]).to.equal('| 16 ports | 63.4 | 247 | 0.26 | 0.26 |');
    expect(lines[3]).to.equal('| one more port | 25.0 KiB RSS | 0.500 KiB RSS | 50.00 | 50.00 |');
  });
});
