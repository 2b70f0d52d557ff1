// Loads the native addon (native/, built by binding.gyp) and declares its raw surface.
// Only files under src/native/ import this; everything else uses the typed wrappers.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function findRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`vhostkit: cannot find the package root above ${start}`);
    dir = up;
  }
}

/** Which build of the addon to load: the normal one, or the ASan/UBSan one (VHOSTKIT_NATIVE=asan). */
export const nativeFlavor = process.env.VHOSTKIT_NATIVE === 'asan' ? 'asan' : 'release';

function load(): unknown {
  const root = findRoot(here);
  const require = createRequire(import.meta.url);
  if (nativeFlavor === 'asan') {
    const file = join(root, 'build-asan', 'vring.node');
    if (!existsSync(file)) throw new Error(`vhostkit: native addon ${file} is missing; run "npm run build:asan"`);
    return require(file);
  }
  // build/Release (built here from source) or else prebuilds/<platform>-<arch> (shipped in
  // the package): node-gyp-build picks the one that matches this Node and platform.
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  try {
    return nodeGypBuild(root);
  } catch (e) {
    throw new Error(`vhostkit: no native addon for this platform in ${root} (${(e as Error).message}); run "npm rebuild vhostkit" with a C++ compiler, make and python3 installed`);
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const addon: any = load();
