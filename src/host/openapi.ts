// The management API described for clients and tools: an OpenAPI 3.1 document, served at
// /v1/openapi.json. Every route the server defines must have its entry here (the document
// is built from the server's route list and refuses a route without one), and every entry a
// route (test/host/openapi.test.ts).

import { apiBodies, diskSchema, inputJsonSchema, portBodySchema, switchSchema, vlanSchema } from './schema.js';

type Schema = Record<string, unknown>;

interface Operation {
  summary: string;
  body?: Schema;
  /** what a success returns */
  returns: string;
}

// Request bodies: the schemas the server checks them with (schema.ts), as JSON Schema.
const body = (s: Parameters<typeof inputJsonSchema>[0]): Schema => {
  const { $schema: _drop, ...rest } = inputJsonSchema(s);
  void _drop;
  return rest;
};
/** "METHOD /path/:param" -> what it does. */
export const OPERATIONS: Record<string, Operation> = {
  'GET /v1/status': { summary: 'Version, pid, uptime and what the process serves', returns: 'status' },
  'GET /v1/qemu': { summary: 'The QEMU arguments that attach a guest to each port and disk', returns: 'QEMU arguments' },
  'GET /v1/switches': { summary: 'Switches, their ports and data-plane threads', returns: 'a list of switches' },
  'POST /v1/switches': {
    summary: 'Add a switch (no ports)',
    body: body(switchSchema),
    returns: 'the switch',
  },
  'GET /v1/switches/:sw': { summary: 'One switch', returns: 'the switch' },
  'DELETE /v1/switches/:sw': { summary: 'Remove a switch and its ports', returns: '{removed}' },
  'GET /v1/switches/:sw/fdb': { summary: 'The forwarding database: MAC, VLAN, port, age', returns: 'a list of entries' },
  'GET /v1/switches/:sw/queues': { summary: 'Per queue packets, bytes, notifications and ring fill', returns: 'a list of queues' },
  'GET /v1/switches/:sw/handlers': { summary: "The switch's packet handlers: frames given, runs, frames sent, errors (the last one), frames lost", returns: 'a list of handlers' },
  'GET /v1/switches/:sw/flows': { summary: "The flow table, as ovs-ofctl dump-flows lists it, with each flow's counters", returns: 'a list of flows' },
  'POST /v1/switches/:sw/flows': { summary: 'Add a flow in ovs-ofctl syntax (or replace the one of its priority and match)', body: body(apiBodies.flowAdd), returns: 'the flow table' },
  'DELETE /v1/switches/:sw/flows': { summary: 'Remove the flows a match names (none: all; strict: the one of its priority)', body: body(apiBodies.flowDel), returns: '{removed}' },
  'GET /v1/ports': { summary: 'Ports with their counters (?switch=NAME for one switch)', returns: 'a list of ports' },
  'POST /v1/ports': { summary: 'Add a vhost-user, TAP or VXLAN port to a switch', body: body(portBodySchema), returns: 'the port' },
  'GET /v1/ports/:name': { summary: 'One port', returns: 'the port' },
  'DELETE /v1/ports/:name': { summary: 'Remove a port (its session ends)', returns: '{removed}' },
  'PUT /v1/ports/:name/vlan': { summary: 'Set the port access VLAN or trunk', body: body(vlanSchema), returns: 'the port' },
  'POST /v1/ports/:name/capture': {
    summary: 'Capture both directions into a new pcap file in the capture directory',
    body: body(apiBodies.capture),
    returns: 'the capture',
  },
  'DELETE /v1/ports/:name/capture': { summary: 'Stop a capture', returns: 'the capture' },
  'GET /v1/captures': { summary: 'Captures and their packet counts', returns: 'a list of captures' },
  'GET /v1/evpn': { summary: 'BGP EVPN: neighbors and their state, routes in and out, flood VTEPs and MACs per VNI (404 without an evpn section)', returns: 'the EVPN status' },
  'GET /v1/log': { summary: 'The log level and format', returns: '{level, format}' },
  'PUT /v1/log': {
    summary: 'Set the log level at run time',
    body: body(apiBodies.logLevel),
    returns: '{level, format}',
  },
  'GET /v1/disks': { summary: 'Disks', returns: 'a list of disks' },
  'POST /v1/disks': { summary: 'Add a disk: a RAM disk, or an image under the configured imageDirs', body: body(diskSchema), returns: 'the disk' },
  'GET /v1/disks/:name': { summary: 'One disk, with its request counters', returns: 'the disk' },
  'DELETE /v1/disks/:name': { summary: 'Remove a disk (in-flight requests finish first)', returns: '{removed}' },
  'POST /v1/disks/:name/resize': {
    summary: 'Grow a disk (no size: re-read its file); the guest is told',
    body: body(apiBodies.resize),
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
