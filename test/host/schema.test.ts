// The one schema of the configuration (src/host/schema.ts): the JSON Schema editors use is
// the one the checks use, and the API's OpenAPI bodies come from it.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configJsonSchema, hostSchema, inputJsonSchema, apiBodies } from '../../src/host/schema.js';
import { openApiDocument, OPERATIONS } from '../../src/host/openapi.js';
import { parseConfig } from '../../src/host/config.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

describe('configuration schema', () => {
  it('docs/config.schema.json is the schema the configuration is checked with (npm run schema writes it)', () => {
    const file = JSON.parse(readFileSync(join(root, 'docs', 'config.schema.json'), 'utf8')) as unknown;
    expect(file).to.deep.equal(JSON.parse(JSON.stringify(configJsonSchema())));
  });

  it('names every top-level key, every port kind and every disk key, and refuses others', () => {
    const s = configJsonSchema() as { properties: Record<string, { items?: { properties?: Record<string, unknown>; anyOf?: unknown[] } }>; additionalProperties: boolean };
    expect(Object.keys(s.properties)).to.have.members(Object.keys(hostSchema.shape));
    expect(s.additionalProperties).to.equal(false);
    const ports = (s.properties.switches.items!.properties!.ports as { items: { anyOf: Array<{ properties: { kind: { const: string } } }> } }).items.anyOf;
    expect(ports.map((p) => p.properties.kind.const)).to.deep.equal(['vhost-user', 'tap', 'vxlan']);
    expect(Object.keys(s.properties.disks.items!.properties!)).to.include.members(['socket', 'file', 'ram', 'readOnly', 'maxInFlight']);
    // What the schema declares is what the check does: a key it does not name is refused.
    expect(() => parseConfig({ disks: [{ socket: '/d.sock', ram: '1M', colour: 'red' }] })).to.throw(/disks\[0\]\.colour: unknown key/);
  });

  it('gives the OpenAPI document its request bodies', () => {
    const doc = openApiDocument(
      Object.keys(OPERATIONS).map((k) => ({ method: k.split(' ')[0], path: k.split(' ')[1] })),
      '0.0.0',
    ) as { paths: Record<string, Record<string, { requestBody?: { content: { 'application/json': { schema: unknown } } } }>> };
    const capture = doc.paths['/v1/ports/{name}/capture'].post.requestBody!.content['application/json'].schema;
    const { $schema: _drop, ...want } = inputJsonSchema(apiBodies.capture);
    void _drop;
    expect(capture).to.deep.equal(want);
    const port = doc.paths['/v1/ports'].post.requestBody!.content['application/json'].schema as { anyOf: Array<{ required: string[] }> };
    for (const v of port.anyOf) expect(v.required, 'every port kind names its switch').to.include('switch');
  });
});
