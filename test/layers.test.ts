// The layers of src/ only point down: a module imports its own unit or a unit of a lower
// layer, never one beside or above it, and never anything outside src/ but packages.
// docs/architecture.md describes the layers; this list is the one the code is held to.
import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

/** Layer of each unit (a folder of src/, backends/* one unit each, or a top-level file); lower is further down. */
const LAYER: Record<string, number> = {
  native: 0,
  'log.ts': 0,
  virtio: 1,
  'vhost-user': 2,
  dataplane: 2,
  'backends/net': 3,
  'backends/blk': 3,
  switch: 4,
  loadgen: 4,
  trace: 4,
  evpn: 4.5,
  host: 5,
  conformance: 5,
  cli: 6,
  'index.ts': 7,
};

function unitOf(relPath: string): string {
  const parts = relPath.split(sep);
  return parts[0] === 'backends' ? `backends/${parts[1]}` : parts[0];
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : n.endsWith('.ts') ? [p] : [];
  });
}

/** Relative import specifiers of a module (static, dynamic and type-only). */
export function relativeImports(text: string): string[] {
  return [...text.matchAll(/(?:\bfrom|\bimport)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]);
}

describe('layers of src/', () => {
  const files = sources(SRC);

  it('every unit of src/ has a layer', () => {
    const units = new Set(files.map((f) => unitOf(relative(SRC, f))));
    expect(
      [...units].filter((u) => !(u in LAYER)),
      'units without a layer (add them to LAYER)',
    ).to.deep.equal([]);
  });

  it('no import points beside or up, or out of src/', () => {
    const bad: string[] = [];
    for (const f of files) {
      const from = unitOf(relative(SRC, f));
      for (const spec of relativeImports(readFileSync(f, 'utf8'))) {
        const target = relative(SRC, normalize(join(dirname(f), spec.replace(/\.js$/, '.ts'))));
        const where = `${relative(SRC, f)} imports ${spec}`;
        if (target.startsWith('..')) {
          bad.push(`${where}: outside src/`);
          continue;
        }
        const to = unitOf(target);
        if (to !== from && !(LAYER[to] < LAYER[from])) bad.push(`${where}: ${to} (layer ${LAYER[to]}) is not below ${from} (layer ${LAYER[from]})`);
      }
    }
    expect(bad).to.deep.equal([]);
  });

  it('finds static, dynamic and type-only imports (the check can see what it checks)', () => {
    const text = `import { a } from '../x/a.js';\nimport type { B } from "./b.js";\nconst c = await import('../../c.js');\nexport { d } from './d.js';\nimport 'node:fs';`;
    expect(relativeImports(text)).to.deep.equal(['../x/a.js', './b.js', '../../c.js', './d.js']);
  });
});
