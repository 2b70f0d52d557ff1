// Rebuilds the addon (node-gyp rebuild) when a native source or binding.gyp is newer than
// build/Release/vring.node: `npm test` and `npm run bench` in a clone updated by git pull
// would otherwise run against the addon npm ci built from older sources.
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'vring.node');

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

const sources = Math.max(
  ...readdirSync(join(root, 'native'), { withFileTypes: true })
    .filter((e) => e.isDirectory() && e.name !== 'fuzz')
    .map((e) => newest(join(root, 'native', e.name))),
  statSync(join(root, 'binding.gyp')).mtimeMs,
);
if (!existsSync(addon) || statSync(addon).mtimeMs < sources) {
  process.stdout.write('native sources are newer than build/Release/vring.node: rebuilding the addon\n');
  execFileSync('npm', ['run', 'build:native'], { cwd: root, stdio: 'inherit' });
}
