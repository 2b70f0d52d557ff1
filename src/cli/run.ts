// `vhostkit run`: one process for a host. Switches, ports and disks from a configuration
// file and/or command-line flags, a management API, the QEMU arguments for every device,
// and a clean stop on SIGTERM / SIGINT.
import { parseArgs } from 'node:util';
import { dirname, resolve } from 'node:path';
import { ConfigError, loadConfig, parseConfig, readConfigFile, type HostConfig } from '../host/config.js';
import { Host, QEMU_MEMORY_ARGS } from '../host/host.js';
import { ApiServer, defaultApiAddress, readTokenFile } from '../host/api.js';
import { AccessPolicy } from '../host/policy.js';
import { resolveGroup } from '../native/socket-files.js';
import { checkImage } from '../backends/blk/disk.js';
import { parsePortSpec, parseVxlanSpec } from './switch.js';
import { untilSignal } from './signals.js';
import { defaultStateDir } from '../vhost-user/ring-record.js';

export const runUsage = `vhostkit run [--config FILE] [--port ...] [--tap ...] [--vxlan ...] [--disk ...] [options]

  --config FILE        switches, ports and disks (JSON, or YAML for .yaml / .yml; see README)
  --port [NAME=]SOCKET[,OPTION...]   a vhost-user net port on switch sw0 (options as "vhostkit switch")
  --tap IFNAME[,vlan=VID]            a TAP port on switch sw0
  --vxlan remote=ADDR,vni=N[,...]    a VXLAN port on switch sw0
  --disk [NAME=]SOCKET,file=IMAGE|ram=SIZE[,readonly][,shared][,serial=ID][,queues=N][,threads=N]
         [,engine=auto|io_uring|threads][,poll-us=N]
                       a vhost-user-blk disk (poll-us: io_uring polls its ring up to N µs
                       after a kick, 0..1000, default 0)
  --evpn asn=N,router-id=ADDR[,vtep=ADDR][,listen=ADDR][,gobgp-dir=DIR][,gobgp=unix:PATH|HOST:PORT][,arp-snooping][,nd-snooping][,arp-suppression]
                       BGP EVPN for the --vxlan ports of sw0, each its own VNI (docs/evpn.md):
                       starts gobgpd (its files in gobgp-dir), or uses the one gobgp= names
  --evpn-neighbor ADDR[,asn=N]       a BGP neighbor (repeatable; asn default: ours)
  --poll MODE          poll mode of switch sw0 (busy, event, adaptive; default event)
  --api ADDR           management API: unix:/path (default ${defaultApiAddress()}), HOST:PORT, or none
  --api-token-file FILE  the API's bearer token (first line, 16+ characters); required for
                       an API on a non-loopback TCP address
  --capture-dir DIR    where captures asked through the API may write (default: refused)
  --image-dir DIR      a directory whose images disks added through the API may serve
                       (repeatable; default: file disks through the API are refused)
  --allow-block-devices  disks added through the API may serve block devices in those dirs
  --socket-dir DIR     a directory where ports and disks added through the API may have
                       their sockets (repeatable; default: the directories of the sockets
                       given here or in the configuration)
  --allow-host-ports   TAP and VXLAN ports may be added through the API (default: refused)
  --socket-mode MODE   permission bits of the sockets it creates (default 0600)
  --socket-group GROUP group of the sockets it creates
  --state-dir DIR      where net ports keep their ring records, so packed rings survive a
                       restart of vhostkit, kill -9 included (default ${defaultStateDir()}), or none
  --check              check the configuration, print what would be served, and exit

Runs until SIGTERM or SIGINT: then stops accepting, lets in-flight block requests finish,
closes the sessions and removes its sockets (exit 0). A second signal exits at once.`;

function kvs(spec: string, from: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of spec.split(',').slice(from)) {
    const i = part.indexOf('=');
    m.set(i < 0 ? part : part.slice(0, i), i < 0 ? '' : part.slice(i + 1));
  }
  return m;
}

/** A number option's value as a number, or as the string given when it is none (the schema then quotes it). */
export function numberOr(v: string): number | string {
  const n = Number(v);
  return v.trim() !== '' && Number.isFinite(n) ? n : v;
}

/** --disk [NAME=]SOCKET,file=...|ram=...,... -> a raw disk object (checked by parseConfig). */
export function diskSpecToRaw(spec: string): Record<string, unknown> {
  const first = spec.split(',')[0];
  const eq = first.indexOf('=');
  const named = eq > 0 && !first.startsWith('/') && !first.startsWith('.');
  const o: Record<string, unknown> = named ? { name: first.slice(0, eq), socket: resolve(first.slice(eq + 1)) } : { socket: resolve(first) };
  for (const [k, v] of kvs(spec, 1)) {
    if (k === 'file') o.file = resolve(v);
    else if (k === 'ram') o.ram = v;
    else if (k === 'readonly' || k === 'read-only') o.readOnly = v !== 'off';
    else if (k === 'direct') o.direct = v !== 'off';
    else if (k === 'shared') o.shared = v !== 'off';
    else if (k === 'format') o.format = v;
    else if (k === 'serial') o.serial = v;
    else if (k === 'queues' || k === 'threads') o[k] = numberOr(v);
    else if (k === 'engine') o.engine = v;
    else if (k === 'poll-us') o.pollUs = numberOr(v);
    else if (k === 'mode') o.mode = v;
    else if (k === 'packed') o.packed = v !== 'off';
    else throw new Error(`--disk ${spec}: unknown option ${k} (file, ram, readonly, direct, shared, format, serial, queues, threads, engine, poll-us, mode, packed)`);
  }
  return o;
}

/** The flags of `vhostkit run` that describe what it serves. */
export interface ServeFlags {
  port?: string[];
  tap?: string[];
  vxlan?: string[];
  disk?: string[];
  poll?: string;
  evpn?: string;
  'evpn-neighbor'?: string[];
}

/**
 * --evpn and --evpn-neighbor -> a raw evpn section (checked by parseConfig): the VNIs are
 * those of the VXLAN ports given with --vxlan, on switch sw0.
 */
function evpnFlags(v: ServeFlags, vxlanPorts: Array<{ name?: string; vni: number }>): Record<string, unknown> | undefined {
  if (v.evpn === undefined) {
    if (v['evpn-neighbor']?.length) throw new Error('--evpn-neighbor needs --evpn');
    return undefined;
  }
  const m = kvs(v.evpn, 0);
  const o: Record<string, unknown> = {};
  for (const [k, x] of m) {
    if (k === 'asn') o.asn = Number(x);
    else if (k === 'router-id') o.routerId = x;
    else if (k === 'vtep') o.vtep = x;
    else if (k === 'gobgp') o.gobgp = x;
    else if (k === 'listen') o.listenAddress = x;
    else if (k === 'gobgp-dir') o.gobgpDir = resolve(x);
    else if (k === 'arp-snooping') o.arpSnooping = x !== 'off';
    else if (k === 'nd-snooping') o.ndSnooping = x !== 'off';
    else if (k === 'arp-suppression') o.arpSuppression = x !== 'off';
    else throw new Error(`--evpn ${v.evpn}: unknown option ${k} (asn, router-id, vtep, gobgp, gobgp-dir, listen, arp-snooping, nd-snooping, arp-suppression)`);
  }
  o.neighbors = (v['evpn-neighbor'] ?? []).map((n) => {
    const address = n.split(',')[0];
    const nm = kvs(n, 1);
    for (const k of nm.keys()) if (k !== 'asn') throw new Error(`--evpn-neighbor ${n}: unknown option ${k} (asn)`);
    return nm.has('asn') ? { address, asn: Number(nm.get('asn')) } : { address };
  });
  if (vxlanPorts.length === 0) throw new Error('--evpn: no --vxlan port to carry a VNI');
  o.vnis = vxlanPorts.map((p) => ({ vni: p.vni, switch: 'sw0', port: p.name ?? `vxlan${p.vni}` }));
  return o;
}

/** Flags for switch sw0, disks and EVPN, merged into a configuration (the file's, or an empty one). */
export function mergeFlags(raw: Record<string, unknown>, v: ServeFlags): Record<string, unknown> {
  const ports: Record<string, unknown>[] = [];
  for (const p of v.port ?? []) {
    const o = parsePortSpec(p);
    ports.push({ name: o.name, socket: o.socket, mode: o.mode, mac: o.mac, queues: o.queuePairs, mtu: o.mtu, packed: o.packed, vlan: o.vlan });
  }
  for (const t of v.tap ?? []) {
    const m = kvs(t, 1);
    ports.push({ kind: 'tap', ifname: t.split(',')[0], vlan: m.has('vlan') ? Number(m.get('vlan')) : undefined, offloads: m.get('offloads') === 'off' ? false : undefined });
  }
  const vxlanPorts: Array<{ name?: string; vni: number }> = [];
  for (const x of v.vxlan ?? []) {
    const o = parseVxlanSpec(x);
    ports.push({ kind: 'vxlan', name: o.name, remote: o.remote, vni: o.vni, local: o.local, dstport: o.dstport, vlan: o.vlan });
    vxlanPorts.push({ name: o.name, vni: o.vni });
  }
  const out = { ...raw };
  const evpn = evpnFlags(v, vxlanPorts);
  if (evpn) {
    if (out.evpn !== undefined) throw new Error('--evpn: the configuration file has an evpn section already (give one or the other)');
    out.evpn = evpn;
  }
  if (ports.length > 0 || v.poll !== undefined) {
    const switches = Array.isArray(out.switches) ? [...(out.switches as Record<string, unknown>[])] : [];
    let sw0 = switches.find((s) => s && s.name === 'sw0');
    if (!sw0) {
      sw0 = { name: 'sw0', ports: [] };
      switches.push(sw0);
    } else {
      sw0 = { ...sw0, ports: [...((sw0.ports as unknown[]) ?? [])] };
      switches[switches.findIndex((s) => s && s.name === 'sw0')] = sw0;
    }
    (sw0.ports as unknown[]).push(...ports.map((p) => JSON.parse(JSON.stringify(p)) as unknown));
    if (v.poll !== undefined) sw0.poll = v.poll;
    out.switches = switches;
  }
  if (v.disk?.length) out.disks = [...(Array.isArray(out.disks) ? out.disks : []), ...v.disk.map(diskSpecToRaw)];
  return out;
}

/** What the process serves, and how QEMU attaches to each device. */
export function describe(host: Host, api: string | null): string {
  const lines: string[] = [];
  for (const p of host.ports()) lines.push(`port ${p.name} (switch ${p.switch}): ${p.kind === 'vhost-user' ? `${p.socket} (${p.mode})` : `${p.kind.toUpperCase()} ${p.socket}`}`);
  for (const d of host.diskList()) lines.push(`disk ${d.name}: ${d.socket} (${d.mode}), ${d.backing}, ${d.sizeBytes} bytes${d.readOnly ? ', read-only' : ''}`);
  lines.push(`management API: ${api ?? 'off'}`);
  const q = host.qemuLines();
  if (q.length > 0) {
    lines.push('', 'QEMU: every guest needs its RAM shared:', `  ${QEMU_MEMORY_ARGS}`);
    for (const x of q) lines.push(`${x.name}:`, `  ${x.args}`);
    if (q.some((x) => x.kind === 'net')) lines.push('(without KVM, under TCG, QEMU 7.2 needs vectors=0 on virtio-net-pci: it crashes with MSI-X there)');
  }
  return lines.join('\n') + '\n';
}

/** Serves until a signal; resolves after the clean stop. */
export async function serve(cfg: HostConfig, opts: { check?: boolean } = {}): Promise<void> {
  if (opts.check) {
    // The images too: a missing, unusable or non-raw image is a configuration error.
    const problems = cfg.disks.flatMap((d) => (d.file === undefined ? [] : [checkImage(d.file, d.readOnly, d.format)].filter((p): p is string => p !== null).map((p) => `disk ${d.name}: ${p}`)));
    if (problems.length > 0) throw new ConfigError(problems);
    process.stdout.write(
      `configuration OK: ${cfg.switches.length} switch(es) with ${cfg.switches.reduce((n, s) => n + s.ports.length, 0)} port(s) and ${cfg.switches.reduce((n, s) => n + (s.flows?.length ?? 0), 0)} flow(s), ${cfg.disks.length} disk(s); API ${cfg.api ?? 'off'}\n`,
    );
    return;
  }
  const host = await Host.start(cfg);
  let api: ApiServer | null = null;
  try {
    if (cfg.api) {
      api = await ApiServer.listen(host, cfg.api, {
        socketMode: cfg.socketMode,
        socketGroup: cfg.socketGroup === undefined ? undefined : resolveGroup(cfg.socketGroup),
        token: cfg.apiTokenFile ? readTokenFile(cfg.apiTokenFile) : undefined,
        policy: new AccessPolicy({
          captureDir: cfg.captureDir,
          imageDirs: cfg.imageDirs,
          allowBlockDevices: cfg.allowBlockDevices,
          socketDirs: cfg.socketDirs,
          allowHostPorts: cfg.allowHostPorts,
        }),
      });
    }
  } catch (e) {
    await host.close();
    throw new Error(`management API on ${cfg.api}: ${(e as Error).message}`);
  }
  // Signals are handled before the lines that say we serve: whoever reads them may signal at once.
  const stopped = untilSignal(async () => {
    await api?.close();
    await host.close();
  });
  process.stdout.write(`vhostkit: serving\n${describe(host, api?.address ?? null)}`);
  await stopped;
}

export async function cmdRun(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      port: { type: 'string', multiple: true },
      tap: { type: 'string', multiple: true },
      vxlan: { type: 'string', multiple: true },
      disk: { type: 'string', multiple: true },
      poll: { type: 'string' },
      evpn: { type: 'string' },
      'evpn-neighbor': { type: 'string', multiple: true },
      api: { type: 'string' },
      'api-token-file': { type: 'string' },
      'capture-dir': { type: 'string' },
      'image-dir': { type: 'string', multiple: true },
      'allow-block-devices': { type: 'boolean' },
      'socket-dir': { type: 'string', multiple: true },
      'allow-host-ports': { type: 'boolean' },
      'socket-mode': { type: 'string' },
      'socket-group': { type: 'string' },
      'state-dir': { type: 'string' },
      check: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(runUsage + '\n');
    return;
  }
  const hasFlags = !!(values.port || values.tap || values.vxlan || values.disk || values.poll !== undefined || values.evpn || values['evpn-neighbor']);
  let cfg: HostConfig;
  if (values.config && !hasFlags) {
    cfg = await loadConfig(values.config);
  } else {
    const fileRaw = values.config ? await readConfigFile(values.config) : {};
    if (typeof fileRaw !== 'object' || fileRaw === null || Array.isArray(fileRaw)) throw new ConfigError([`${values.config}: expected an object at the top level`]);
    cfg = parseConfig(mergeFlags(fileRaw as Record<string, unknown>, values), values.config ? dirname(resolve(values.config)) : process.cwd());
  }
  if (values.api !== undefined) cfg.api = values.api === 'none' ? null : values.api;
  else if (cfg.api === undefined) cfg.api = defaultApiAddress();
  if (values['socket-mode'] !== undefined) {
    if (!/^0?[0-7]{3}$/.test(values['socket-mode'])) throw new ConfigError([`--socket-mode ${values['socket-mode']}: expected an octal mode like 0660`]);
    cfg.socketMode = parseInt(values['socket-mode'], 8);
  }
  if (values['socket-group'] !== undefined) cfg.socketGroup = values['socket-group'];
  if (values['api-token-file'] !== undefined) cfg.apiTokenFile = resolve(values['api-token-file']);
  if (cfg.apiTokenFile !== undefined) readTokenFile(cfg.apiTokenFile); // unreadable or short: a config error, before anything starts
  if (values['capture-dir'] !== undefined) cfg.captureDir = resolve(values['capture-dir']);
  if (values['image-dir'] !== undefined) cfg.imageDirs = [...cfg.imageDirs, ...values['image-dir'].map((d) => resolve(d))];
  if (values['allow-block-devices'] !== undefined) cfg.allowBlockDevices = values['allow-block-devices'];
  if (values['socket-dir'] !== undefined) cfg.socketDirs = [...cfg.socketDirs, ...values['socket-dir'].map((d) => resolve(d))];
  // By default the API may put sockets where the operator put them: the configured sockets' directories.
  if (cfg.socketDirs.length === 0)
    cfg.socketDirs = [...new Set([...cfg.switches.flatMap((s) => s.ports.flatMap((p) => (p.kind === 'vhost-user' ? [dirname(p.socket)] : []))), ...cfg.disks.map((d) => dirname(d.socket))])];
  if (values['allow-host-ports'] !== undefined) cfg.allowHostPorts = values['allow-host-ports'];
  if (values['state-dir'] !== undefined) cfg.stateDir = values['state-dir'] === 'none' ? null : resolve(values['state-dir']);
  else if (cfg.stateDir === undefined) cfg.stateDir = defaultStateDir();
  if (cfg.socketGroup !== undefined) resolveGroup(cfg.socketGroup); // an unknown group is a config error, before anything starts
  if (cfg.switches.length === 0 && cfg.disks.length === 0 && !cfg.api) throw new ConfigError(['nothing to serve: give --config, --port, --disk, or an API to add them through']);
  await serve(cfg, { check: values.check });
}
