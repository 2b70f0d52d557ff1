// Word layouts shared with the native addon: declared once in C++ (native/switch/switch_layout.h, native/io/io_layout.h)
// and exported by the addon with their offsets. Each TypeScript module names the words it
// uses; layout() checks at load that the addon has exactly those names (no word missing,
// none unknown) and takes the offsets from the addon, so the two sides cannot drift apart.
import { addon } from './binding.js';

export type Layout<K extends string> = { readonly [k in K]: number } & { readonly WORDS: number };

/**
 * The addon's layout `name` from the group `group` (e.g. addon.switchLayouts), checked
 * to name exactly `keys` (plus WORDS, its size in words). Throws if they differ.
 */
export function checkLayout<K extends string>(exported: Record<string, unknown> | undefined, name: string, keys: readonly K[]): Layout<K> {
  if (!exported || typeof exported !== 'object') throw new Error(`vhostkit: the native addon exports no layout ${name}: rebuild it (npm run build:native)`);
  const have = Object.keys(exported).filter((k) => k !== 'WORDS');
  const missing = keys.filter((k) => !have.includes(k));
  const extra = have.filter((k) => !(keys as readonly string[]).includes(k));
  if (missing.length > 0 || extra.length > 0 || typeof exported.WORDS !== 'number') {
    const what = [missing.length ? `missing in the addon: ${missing.join(', ')}` : '', extra.length ? `unknown here: ${extra.join(', ')}` : ''].filter(Boolean).join('; ');
    throw new Error(`vhostkit: layout ${name} differs between the addon and this module (${what || 'no WORDS'}): rebuild the addon or update the module`);
  }
  for (const k of [...keys, 'WORDS']) {
    const v = exported[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Error(`vhostkit: layout ${name}.${k} is not a word offset (${String(v)})`);
  }
  return Object.freeze({ ...(exported as Record<string, number>) }) as Layout<K>;
}

/** The addon's layout `name` among its switch layouts (native/switch/switch_layout.h). */
export function switchLayout<K extends string>(name: string, keys: readonly K[]): Layout<K> {
  return checkLayout((addon.switchLayouts as Record<string, Record<string, unknown>> | undefined)?.[name], name, keys);
}

/** The addon's layout `name` among the counters of its per-burst I/O calls (native/io/io_layout.h). */
export function ioLayout<K extends string>(name: string, keys: readonly K[]): Layout<K> {
  return checkLayout((addon.ioLayouts as Record<string, Record<string, unknown>> | undefined)?.[name], name, keys);
}
