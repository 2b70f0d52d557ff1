// Writes docs/config.schema.json: the JSON Schema of `vhostkit run --config` files, from the
// schema the configuration is checked with (src/host/schema.ts), for editors ("$schema" in
// a JSON file, or yaml-language-server's "# yaml-language-server: $schema=..." line).
// test/host/schema.test.ts fails when the file is not up to date.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { configJsonSchema } = await import(join(root, 'dist', 'src', 'host', 'schema.js'));
const file = join(root, 'docs', 'config.schema.json');
writeFileSync(file, `${JSON.stringify(configJsonSchema(), null, 2)}\n`);
console.log(`wrote ${file}`);
