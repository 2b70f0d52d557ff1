// The README's and docs/dataplane.md's lists of flow match fields name every field the flow
// parser (src/switch/flows.ts) accepts: the parser's own list is the one in its error for an
// unknown field, and each of those fields is shown to parse before the docs are read.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { parseFlow } from '../../src/switch/flows.js';

const root = new URL('../../../', import.meta.url);
/** Not match fields: a flow's priority and timeouts (documented with them elsewhere). */
const NOT_MATCHES = new Set(['priority', 'idle_timeout', 'hard_timeout']);

function acceptedFields(): string[] {
  let message = '';
  try {
    parseFlow('no_such_field=1,actions=drop', () => 1);
  } catch (e) {
    message = (e as Error).message;
  }
  const list = /unknown field \(([^)]+)\)/.exec(message);
  expect(list, message).to.not.equal(null);
  return list![1].split(', ').filter((f) => !NOT_MATCHES.has(f));
}

describe('docs: the flow match fields', () => {
  it('the parser accepts what its error lists (ICMP and ARP fields too)', () => {
    const fields = acceptedFields();
    expect(fields).to.include.members(['icmp_type', 'icmp_code', 'icmpv6_type', 'icmpv6_code', 'arp_spa', 'arp_tpa', 'arp_op']);
    const port = () => 1;
    expect(parseFlow('icmp,icmp_type=8,icmp_code=0,actions=drop', port)).to.be.an('object');
    expect(parseFlow('icmp6,icmpv6_type=135,icmpv6_code=0,actions=drop', port)).to.be.an('object');
    expect(parseFlow('arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/24,arp_op=1,actions=drop', port)).to.be.an('object');
  });

  for (const doc of ['README.md', 'docs/dataplane.md'])
    it(`${doc} names every match field`, () => {
      const text = readFileSync(new URL(doc, root), 'utf8');
      const missing = acceptedFields().filter((f) => !text.includes(`\`${f}\``));
      expect(missing, `${doc} does not name these match fields`).to.deep.equal([]);
    });
});
