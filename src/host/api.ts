// The management API: HTTP + JSON on a Unix socket (default) or a TCP address. Lists,
// adds and removes switches, ports and disks, dumps forwarding databases, sets VLANs,
// reads counters and queue state, and serves /metrics (Prometheus text format).
//
//   GET    /v1/openapi.json                   this list as an OpenAPI 3.1 document (src/host/openapi.ts)
//   GET    /v1/status                         process, version, what it serves
//   GET    /v1/qemu                           the QEMU arguments for every port and disk
//   GET    /v1/switches                       POST /v1/switches {name, poll, ...}
//   GET    /v1/switches/:sw                   DELETE /v1/switches/:sw
//   GET    /v1/switches/:sw/fdb               the forwarding database (EVPN's installed MACs with their VTEP)
//   GET    /v1/switches/:sw/queues            per queue counters, ring fill and thread
//   GET    /v1/switches/:sw/flows             POST {flow} / DELETE {match, strict?}: the flow table
//   GET    /v1/switches/:sw/handlers          each packet handler's frames, runs and errors
//   GET    /v1/ports[?switch=sw]              POST /v1/ports {switch, kind, name, socket, ...}
//   GET    /v1/ports/:name                    DELETE /v1/ports/:name
//   PUT    /v1/ports/:name/vlan               body: a VLAN id or {mode, vid} / {mode, allowed, native}
//   POST   /v1/ports/:name/capture            {file, count?, snaplen?}: pcap of both directions
//   DELETE /v1/ports/:name/capture            GET /v1/captures
//   GET    /v1/disks                          POST /v1/disks {name, socket, file | ram, ...}
//   GET    /v1/disks/:name                    DELETE /v1/disks/:name (in-flight requests finish first)
//   POST   /v1/disks/:name/resize             {size?: bytes | "10G"}: grow (no size: re-read the file); the guest is told
//   GET    /v1/evpn                           BGP EVPN: neighbors, routes in and out, VTEPs and MACs per VNI
//   GET    /v1/log                            {level, format}     PUT /v1/log {level}: at run time
//   GET    /metrics
// Errors: {"error": "..."} with 400 (bad request), 401 (no or a wrong token), 403 (a file or
// device the configuration does not allow), 404 (no such thing), 409 (exists), 500.
//
// Who may use it: on a Unix socket, whoever the socket's mode and group let in (0600 by
// default). On TCP, a non-loopback address needs a bearer token (ApiOptions.token, from
// --api-token-file); loopback may go without one, and says so. With a token, every request
// (/metrics too) must carry "Authorization: Bearer <token>". Files a request names are held
// to the directories the configuration allows (AccessPolicy).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { log as rootLog, logFormat, logLevel, setLogLevel, type Logger } from '../log.js';
import { prepareSocketPath } from '../vhost-user/backend.js';
import { ConfigError, parseBody, parseDiskConfig, parsePortConfig, parseSwitchConfig, parseVlanConfig, type PortConfig } from './config.js';
import { apiBodies } from './schema.js';
import { Host, HostError } from './host.js';
import { renderMetrics } from './metrics.js';
import { bindSocketFile, removeSocketFile } from '../native/socket-files.js';
import { AccessPolicy } from './policy.js';
import type { FdbEntry } from '../switch/fdb.js';
import { openApiDocument } from './openapi.js';

const VERSION = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

const MAX_BODY = 64 * 1024;

/**
 * A switch's fdb as the API lists it: learned entries, and the ones EVPN installed (on the
 * VXLAN port, age 0: they never age) with the address of the remote VTEP they go to.
 */
async function fdbListing(h: Host, sw: string): Promise<Array<Omit<FdbEntry, 'remote'> & { portName: string; vtep?: string }>> {
  const entries = await h.fdb(sw);
  const vteps = new Map<string, string>();
  if (entries.some((e) => e.remote !== undefined)) for (const r of await h.switch(sw).remoteMacs()) vteps.set(`${r.vlan}/${r.mac}`, r.vtep);
  // (An entry removed between the two reads keeps its VTEP's number.)
  return entries.map(({ remote, ...e }) => (remote === undefined ? e : { ...e, vtep: vteps.get(`${e.vlan}/${e.mac}`) ?? `#${remote}` }));
}

/** "unix:/path" -> { path }; "HOST:PORT" / "[V6]:PORT" -> { host, port }. */
export function parseApiAddress(a: string): { path: string } | { host: string; port: number } {
  if (a.startsWith('unix:')) {
    const path = a.slice(5);
    if (!path) throw new Error(`API address ${a}: no socket path`);
    return { path };
  }
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(a);
  if (!m || Number(m[2]) > 65535) throw new Error(`API address ${a}: expected unix:/path or HOST:PORT`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

/** The API address used when none is given: VHOSTKIT_API, else a socket in the runtime directory. */
export function defaultApiAddress(): string {
  if (process.env.VHOSTKIT_API) return process.env.VHOSTKIT_API;
  const dir = process.getuid?.() === 0 ? '/run' : (process.env.XDG_RUNTIME_DIR ?? '/tmp');
  return `unix:${dir}/vhostkit.sock`;
}

export interface ApiOptions {
  log?: Logger;
  /** permission bits and group of a Unix socket (default 0600, the process's group) */
  socketMode?: number;
  socketGroup?: number;
  /** bearer token every request must carry; required on a non-loopback TCP address */
  token?: string;
  /** the files and devices requests may name (default: none) */
  policy?: AccessPolicy;
}

/** Whether a TCP listen address is loopback only (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '0:0:0:0:0:0:0:1' || /^::ffff:127\./i.test(host);
}

/** Reads a token file: the first line, at least 16 characters. */
export function readTokenFile(path: string): string {
  const token = readFileSync(path, 'utf8').split('\n')[0].trim();
  if (token.length < 16) throw new Error(`API token file ${path}: the token (its first line) must have at least 16 characters`);
  return token;
}

type Handler = (req: IncomingMessage, params: string[], body: unknown, url: URL) => Promise<unknown>;

interface Route {
  method: string;
  /** as written: /v1/ports/:name */
  path: string;
  re: RegExp;
  handler: Handler;
}

export class ApiServer {
  readonly log: Logger;
  private readonly server: Server;
  private readonly routes: Route[] = [];
  private socket: { path: string; ino: number } | null = null;
  /** where it listens: "unix:/path" or "host:port" */
  address = '';

  private readonly token: Buffer | null;
  private readonly policy: AccessPolicy;

  private constructor(
    private readonly host: Host,
    opts: ApiOptions,
  ) {
    this.log = opts.log ?? rootLog.child({ component: 'api' });
    this.token = opts.token ? Buffer.from(`Bearer ${opts.token}`) : null;
    this.policy = opts.policy ?? new AccessPolicy();
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
    this.defineRoutes();
  }

  /** Listens on `address` (see parseApiAddress); Unix sockets get mode `socketMode` (default 0600). */
  static async listen(host: Host, address: string, opts: ApiOptions = {}): Promise<ApiServer> {
    const a = parseApiAddress(address);
    if ('host' in a && !opts.token) {
      if (!isLoopback(a.host)) {
        throw new Error(
          `API on ${address} without a token: anyone who can reach that address could add disks and ports as this process's user. Give --api-token-file FILE (apiTokenFile), or listen on loopback or a Unix socket`,
        );
      }
    }
    const api = new ApiServer(host, opts);
    if ('host' in a && !opts.token) api.log.warn('management API on loopback TCP without a token: every local user can use it (--api-token-file to require one)', { address });
    await new Promise<void>((resolve, reject) => {
      api.server.once('error', reject);
      if ('path' in a) {
        prepareSocketPath(a.path);
        const b = bindSocketFile(
          a.path,
          () => api.server.listen(a.path, () => resolve()),
          opts.socketMode,
          opts.socketGroup,
          (srv) => srv.close(),
        );
        api.socket = { path: a.path, ino: b.ino };
        api.address = `unix:${a.path}`;
      } else {
        api.server.listen(a.port, a.host, () => {
          const addr = api.server.address();
          api.address = typeof addr === 'object' && addr ? `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` : address;
          resolve();
        });
      }
    });
    api.server.on('error', (e) => api.log.error('API server error', { error: e.message }));
    api.log.info('management API listening', { address: api.address });
    return api;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    if (this.socket) removeSocketFile(this.socket.path, this.socket.ino);
    this.socket = null;
  }

  /** A port added through the API, held to the access policy (socket directories, host ports). */
  private allowedPort(p: PortConfig): PortConfig {
    if (p.kind === 'vhost-user') return { ...p, socket: this.policy.socket(p.socket, `port ${p.name}`) };
    this.policy.hostPort(p.kind, p.name);
    return p;
  }

  private route(method: string, path: string, handler: Handler): void {
    const re = new RegExp(`^${path.replace(/:[a-z]+/g, '([^/]+)')}$`);
    this.routes.push({ method, path, re, handler });
  }

  private defineRoutes(): void {
    const h = this.host;
    const name = (s: string) => decodeURIComponent(s);
    this.route('GET', '/v1/openapi.json', async () => this.openApi());
    this.route('GET', '/v1/status', async () => ({
      version: VERSION,
      pid: process.pid,
      uptimeSeconds: Math.round(process.uptime()),
      switches: (await h.switchList()).map((s) => s.name),
      ports: h.ports().length,
      disks: h.diskList().length,
    }));
    this.route('GET', '/v1/qemu', async () => ({ memory: '-object memory-backend-memfd,id=mem,size=<RAM>,share=on -numa node,memdev=mem', devices: h.qemuLines() }));
    this.route('GET', '/v1/switches', async () => h.switchList());
    this.route('GET', '/v1/evpn', async () => h.evpnStatus());
    this.route('POST', '/v1/switches', async (_r, _p, body) => {
      const cfg = parseSwitchConfig(body);
      // A hook is code the data plane imports: only the operator's configuration names one.
      if (cfg.hook) throw new HostError(403, `switch ${cfg.name}: a hook module through the API is refused; name it in the configuration`);
      if (cfg.handlers?.length) throw new HostError(403, `switch ${cfg.name}: handler modules through the API are refused; name them in the configuration`);
      cfg.ports = cfg.ports.map((p) => this.allowedPort(p));
      return h.addSwitch(cfg);
    });
    this.route('GET', '/v1/switches/:sw', async (_r, p) => h.switchInfo(name(p[0])));
    this.route('DELETE', '/v1/switches/:sw', async (_r, p) => {
      await h.removeSwitch(name(p[0]));
      return { removed: name(p[0]) };
    });
    this.route('GET', '/v1/switches/:sw/fdb', async (_r, p) => fdbListing(h, name(p[0])));
    this.route('GET', '/v1/switches/:sw/queues', async (_r, p) => h.queueStats(name(p[0])));
    this.route('GET', '/v1/switches/:sw/handlers', async (_r, p) => h.handlers(name(p[0])));
    this.route('GET', '/v1/switches/:sw/flows', async (_r, p) => h.flows(name(p[0])));
    this.route('POST', '/v1/switches/:sw/flows', async (_r, p, body) => h.addFlow(name(p[0]), parseBody(apiBodies.flowAdd, body).flow));
    this.route('DELETE', '/v1/switches/:sw/flows', async (_r, p, body) => {
      const b = parseBody(apiBodies.flowDel, body);
      return h.delFlows(name(p[0]), b.match ?? '', b.strict ?? false);
    });
    this.route('GET', '/v1/ports', async (_r, _p, _b, url) => h.ports(url.searchParams.get('switch') ?? undefined));
    this.route('POST', '/v1/ports', async (_r, _p, body) => {
      const b = (body ?? {}) as Record<string, unknown>;
      if (typeof b.switch !== 'string') throw new HostError(400, 'switch: required (the switch to add the port to)');
      const { switch: sw, ...rest } = b;
      return h.addPort(sw as string, this.allowedPort(parsePortConfig(rest)));
    });
    this.route('GET', '/v1/ports/:name', async (_r, p) => h.port(name(p[0])));
    this.route('DELETE', '/v1/ports/:name', async (_r, p) => {
      await h.removePort(name(p[0]));
      return { removed: name(p[0]) };
    });
    this.route('GET', '/v1/captures', async () => h.captureList());
    this.route('POST', '/v1/ports/:name/capture', async (_r, p, body) => {
      const b = parseBody(apiBodies.capture, body);
      return h.startCapture(name(p[0]), this.policy.captureFile(b.file), { count: b.count, snaplen: b.snaplen });
    });
    this.route('DELETE', '/v1/ports/:name/capture', async (_r, p) => h.stopCapture(name(p[0])));
    this.route('PUT', '/v1/ports/:name/vlan', async (_r, p, body) => h.setVlan(name(p[0]), parseVlanConfig(body)));
    this.route('GET', '/v1/log', async () => ({ level: logLevel(), format: logFormat() }));
    this.route('PUT', '/v1/log', async (_r, _p, body) => {
      setLogLevel(parseBody(apiBodies.logLevel, body).level);
      return { level: logLevel(), format: logFormat() };
    });
    this.route('GET', '/v1/disks', async () => h.diskList());
    this.route('POST', '/v1/disks', async (_r, _p, body) => {
      const cfg = parseDiskConfig(body);
      cfg.socket = this.policy.socket(cfg.socket, `disk ${cfg.name}`);
      if (cfg.file !== undefined) cfg.file = this.policy.image(cfg.file);
      return h.addDisk(cfg);
    });
    this.route('GET', '/v1/disks/:name', async (_r, p) => ({ ...h.diskInfo(name(p[0])), stats: h.diskStats(name(p[0])) }));
    this.route('POST', '/v1/disks/:name/resize', async (_r, p, body) => h.resizeDisk(name(p[0]), parseBody(apiBodies.resize, body).size));
    this.route('DELETE', '/v1/disks/:name', async (_r, p) => {
      await h.removeDisk(name(p[0]));
      return { removed: name(p[0]) };
    });
  }

  /** Every route as (method, path), /metrics included. */
  routeList(): Array<{ method: string; path: string }> {
    return [...this.routes.filter((r) => r.path !== '/v1/openapi.json').map(({ method, path }) => ({ method, path })), { method: 'GET', path: '/metrics' }];
  }

  private openApi(): Record<string, unknown> {
    return openApiDocument(this.routeList(), VERSION);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://vhostkit');
    try {
      if (this.token) {
        const got = Buffer.from(req.headers.authorization ?? '');
        if (got.length !== this.token.length || !timingSafeEqual(got, this.token)) {
          this.log.warn('API request without the right token', { method: req.method, path: url.pathname, from: req.socket.remoteAddress ?? 'unix socket' });
          res.setHeader('www-authenticate', 'Bearer');
          throw new HostError(401, req.headers.authorization ? 'unauthorized: wrong token' : 'unauthorized: this API needs "Authorization: Bearer <token>" (vhostkit ctl --token-file FILE)');
        }
      }
      if (url.pathname === '/metrics') {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new HostError(405, `${req.method} /metrics: only GET`);
        const text = await renderMetrics(this.host);
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(text) });
        res.end(req.method === 'HEAD' ? undefined : text);
        return;
      }
      let allowed = false;
      for (const r of this.routes) {
        const m = r.re.exec(url.pathname);
        if (!m) continue;
        allowed = true;
        if (r.method !== req.method) continue;
        const body = await readBody(req);
        const value = await r.handler(req, m.slice(1), body, url);
        send(res, req.method === 'POST' ? 201 : 200, value);
        if (req.method !== 'GET') this.log.info('API change', { method: req.method, path: url.pathname });
        return;
      }
      throw new HostError(allowed ? 405 : 404, allowed ? `${req.method} ${url.pathname}: method not allowed` : `${url.pathname}: no such resource`);
    } catch (e) {
      // A change that fails on what it was given (a missing image, a socket in use) is the
      // request's fault; a read that fails is ours.
      const status = e instanceof HostError ? e.status : e instanceof ConfigError || e instanceof SyntaxError || e instanceof RangeError || req.method !== 'GET' ? 400 : 500;
      const message = e instanceof ConfigError ? e.problems.join('; ') : (e as Error).message;
      if (status >= 500) this.log.error('API request failed', { method: req.method, path: url.pathname, error: message });
      send(res, status, { error: message });
    }
  }
}

function send(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new HostError(413, `request body over ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new HostError(400, `request body is not JSON: ${(e as Error).message}`);
  }
}
