// The no-uring wrapper (no-uring.c): a command run under it finds io_uring_setup refused
// with EPERM, as in a container under Docker's default seccomp profile.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TempDir } from './peers.js';

const source = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'lib', 'no-uring.c');

/** Builds the wrapper into dir (with the C compiler the addon is built with) and returns its path. */
export function buildNoUring(dir: TempDir): string {
  const out = dir.join('no-uring');
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', out, source], { stdio: 'pipe' });
  return out;
}
