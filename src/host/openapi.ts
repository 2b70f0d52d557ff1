// The management API described for clients and tools: an OpenAPI 3.1 document, served at
// /v1/openapi.json. Every route the server defines must have its entry here (the document
// is built from the server's route list and refuses a route without one), and every entry a
// route (test/host/openapi.test.ts).

type Schema = Record<string, unknown>;

interface Operation {
  summary: string;
  body?: Schema;
  /** what a success returns */
  returns: string;
}

const name = { type: 'string', pattern: '^[A-Za-z0-9_.-]+$' };
const size = {
  oneOf: [
    { type: 'integer', minimum: 1 },
    { type: 'string', examples: ['1G', '512M'] },
  ],
};
const vlan = {
  oneOf: [
    { type: 'integer', minimum: 1, maximum: 4094 },
    { type: 'object', properties: { mode: { const: 'access' }, vid: { type: 'integer' } }, required: ['mode', 'vid'] },
    { type: 'object', properties: { mode: { const: 'trunk' }, allowed: { type: 'array', items: { type: 'integer' } }, native: { type: 'integer' } }, required: ['mode'] },
  ],
};
const port = {
  type: 'object',
  required: ['switch'],
  properties: {
    switch: name,
    kind: { enum: ['vhost-user', 'tap', 'vxlan'] },
    name,
    socket: { type: 'string', description: 'vhost-user: the socket path' },
    mode: { enum: ['server', 'client'] },
    mac: { type: 'string' },
    queues: { type: 'integer', minimum: 1 },
    mtu: { type: 'integer' },
    packed: { type: 'boolean' },
    vlan,
    ifname: { type: 'string', description: 'tap: the interface' },
    remote: { type: 'string', description: 'vxlan: the remote VTEP address' },
    vni: { type: 'integer' },
    local: { type: 'string' },
    dstport: { type: 'integer' },
  },
};
const disk = {
  type: 'object',
  required: ['socket'],
  properties: {
    name,
    socket: { type: 'string' },
    mode: { enum: ['server', 'client'] },
    file: { type: 'string', description: 'an image under one of the configured imageDirs' },
    ram: size,
    readOnly: { type: 'boolean' },
    direct: { type: 'boolean' },
    shared: { type: 'boolean', description: 'serve an image another shared disk serves too (a live migration)' },
    format: { const: 'raw' },
    serial: { type: 'string', maxLength: 20 },
    queues: { type: 'integer', minimum: 1, maximum: 64 },
    threads: { type: 'integer', minimum: 1, maximum: 64 },
    packed: { type: 'boolean' },
    maxInFlight: { type: 'integer', minimum: 1 },
  },
};

/** "METHOD /path/:param" -> what it does. */
export const OPERATIONS: Record<string, Operation> = {
  'GET /v1/status': { summary: 'Version, pid, uptime and what the process serves', returns: 'status' },
  'GET /v1/qemu': { summary: 'The QEMU arguments that attach a guest to each port and disk', returns: 'QEMU arguments' },
  'GET /v1/switches': { summary: 'Switches, their ports and data-plane threads', returns: 'a list of switches' },
  'POST /v1/switches': {
    summary: 'Add a switch (no ports)',
    body: { type: 'object', required: ['name'], properties: { name, poll: { enum: ['busy', 'event', 'adaptive'] }, cpus: { type: 'string' } } },
    returns: 'the switch',
  },
  'GET /v1/switches/:sw': { summary: 'One switch', returns: 'the switch' },
  'DELETE /v1/switches/:sw': { summary: 'Remove a switch and its ports', returns: '{removed}' },
  'GET /v1/switches/:sw/fdb': { summary: 'The forwarding database: MAC, VLAN, port, age', returns: 'a list of entries' },
  'GET /v1/switches/:sw/queues': { summary: 'Per queue packets, bytes, notifications and ring fill', returns: 'a list of queues' },
  'GET /v1/ports': { summary: 'Ports with their counters (?switch=NAME for one switch)', returns: 'a list of ports' },
  'POST /v1/ports': { summary: 'Add a vhost-user, TAP or VXLAN port to a switch', body: port, returns: 'the port' },
  'GET /v1/ports/:name': { summary: 'One port', returns: 'the port' },
  'DELETE /v1/ports/:name': { summary: 'Remove a port (its session ends)', returns: '{removed}' },
  'PUT /v1/ports/:name/vlan': { summary: 'Set the port access VLAN or trunk', body: vlan, returns: 'the port' },
  'POST /v1/ports/:name/capture': {
    summary: 'Capture both directions into a new pcap file in the capture directory',
    body: { type: 'object', required: ['file'], properties: { file: { type: 'string' }, count: { type: 'integer', minimum: 1 }, snaplen: { type: 'integer', minimum: 1, maximum: 65535 } } },
    returns: 'the capture',
  },
  'DELETE /v1/ports/:name/capture': { summary: 'Stop a capture', returns: 'the capture' },
  'GET /v1/captures': { summary: 'Captures and their packet counts', returns: 'a list of captures' },
  'GET /v1/log': { summary: 'The log level and format', returns: '{level, format}' },
  'PUT /v1/log': {
    summary: 'Set the log level at run time',
    body: { type: 'object', required: ['level'], properties: { level: { enum: ['debug', 'info', 'warn', 'error'] } } },
    returns: '{level, format}',
  },
  'GET /v1/disks': { summary: 'Disks', returns: 'a list of disks' },
  'POST /v1/disks': { summary: 'Add a disk: a RAM disk, or an image under the configured imageDirs', body: disk, returns: 'the disk' },
  'GET /v1/disks/:name': { summary: 'One disk, with its request counters', returns: 'the disk' },
  'DELETE /v1/disks/:name': { summary: 'Remove a disk (in-flight requests finish first)', returns: '{removed}' },
  'POST /v1/disks/:name/resize': {
    summary: 'Grow a disk (no size: re-read its file); the guest is told',
    body: { type: 'object', properties: { size } },
    returns: 'old and new size, whether the guest was told',
  },
  'GET /metrics': { summary: 'Prometheus text format: ports, queues, data-plane threads, disks', returns: 'text/plain' },
};

/** The OpenAPI document for these routes; throws if one has no entry in OPERATIONS. */
export function openApiDocument(routes: ReadonlyArray<{ method: string; path: string }>, version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const key = `${r.method} ${r.path}`;
    const op = OPERATIONS[key];
    if (!op) throw new Error(`route ${key} has no entry in src/host/openapi.ts`);
    const oaPath = r.path.replace(/:([a-z]+)/g, '{$1}');
    const params = [...r.path.matchAll(/:([a-z]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const text = r.path === '/metrics';
    paths[oaPath] ??= {};
    paths[oaPath][r.method.toLowerCase()] = {
      summary: op.summary,
      ...(params.length ? { parameters: params } : {}),
      ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: op.body } } } } : {}),
      responses: {
        [r.method === 'POST' ? '201' : '200']: { description: op.returns, content: { [text ? 'text/plain' : 'application/json']: {} } },
        default: {
          description: 'an error: {"error": "..."} (400, 401, 403, 404, 409, 413, 500)',
          content: { 'application/json': { schema: { type: 'object', properties: { error: { type: 'string' } } } } },
        },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'vhostkit management API', version },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'required when vhostkit run is given --api-token-file' } } },
    security: [{}, { bearer: [] }],
    paths,
  };
}
