// `vhostkit switch`: a software L2 switch joining QEMU guests over vhost-user (and, with
// --tap / --vxlan, the host and other hosts). A thin layer over the Switch class.
import { POLL_MODES, type PollMode } from '../dataplane/poller.js';
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { Switch, type VhostPortOptions, type VxlanPortOptions } from '../switch/switch.js';
import type { VlanConfig } from '../switch/engine.js';
import { parseCpuList } from '../native/affinity.js';
import { qemuNetArgs } from '../host/host.js';
import { untilSignal } from './signals.js';
import { defaultStateDir } from '../vhost-user/ring-record.js';
import { parseConfig } from '../host/config.js';
import { mergeFlags } from './run.js';

export const switchUsage = `vhostkit switch --port [NAME=]SOCKET[,OPTION...] [--port ...] [options]

  --port [NAME=]SOCKET[,mode=server|client][,queues=N][,mac=MAC][,vlan=VID][,trunk=VID:VID...][,native=VID]
                       a vhost-user virtio-net port (name: the socket's basename)
  --tap IFNAME[,vlan=VID][,offloads=off]
                       a TAP port to the host's network stack (created if needed)
  --vxlan remote=ADDR,vni=N[,local=ADDR][,dstport=P][,vlan=VID]
                       a VXLAN port (RFC 7348, UDP 4789 by default) to a Linux vxlan device or OVS
  --aging SECONDS      MAC aging time (default 300)
  --inline             forward on the main thread (default: a data-plane worker thread)
  --poll MODE          busy: spin on the guests' rings (one CPU); event: sleep on kicks;
                       adaptive: spin while traffic flows, sleep after 200 us idle (default event)
  --cpus LIST          data-plane threads, one pinned to each CPU of LIST (e.g. 1, or 2-3: two)
  --threads N          data-plane threads (default: one per CPU of --cpus, else 1); a
                       guest's queue pairs are spread over them, frames for a port that a
                       thread serves no RX queue of are handed to the port's owner
  --hook FILE[:EXPORT] a dataplane hook module run on the data-plane thread
  --state-dir DIR      where ports keep their ring records, so packed rings survive a
                       restart of the switch, kill -9 included (default ${defaultStateDir()}), or none

Runs until SIGINT or SIGTERM. Prints, for each port, the QEMU arguments that attach to it.`;

export function parsePortSpec(spec: string): VhostPortOptions {
  const [first, ...opts] = spec.split(',');
  const eq = first.indexOf('=');
  const o: VhostPortOptions = eq > 0 && !first.startsWith('/') && !first.startsWith('.') ? { name: first.slice(0, eq), socket: resolve(first.slice(eq + 1)) } : { socket: resolve(first) };
  if (!o.socket) throw new Error(`--port ${spec}: no socket path`);
  let trunk: number[] | null = null;
  let native: number | undefined;
  let vid: number | undefined;
  for (const kv of opts) {
    const [k, v] = kv.split('=');
    if (v === undefined) throw new Error(`--port ${spec}: "${kv}" is not key=value`);
    const num = () => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--port ${spec}: ${k}=${v} is not a positive integer`);
      return n;
    };
    if (k === 'mode') {
      if (v !== 'server' && v !== 'client') throw new Error(`--port ${spec}: mode must be server or client`);
      o.mode = v;
    } else if (k === 'queues') o.queuePairs = num();
    else if (k === 'mac') o.mac = v;
    else if (k === 'mtu') o.mtu = num();
    else if (k === 'vlan') vid = num();
    else if (k === 'native') native = num();
    else if (k === 'trunk') trunk = v.split(':').map((x) => Number(x));
    else if (k === 'packed') o.packed = v !== 'off' && v !== '0';
    else throw new Error(`--port ${spec}: unknown option ${k}`);
  }
  let vlan: VlanConfig | undefined;
  if (trunk) vlan = { mode: 'trunk', allowed: trunk, native };
  else if (vid !== undefined) vlan = { mode: 'access', vid };
  if (vlan) o.vlan = vlan;
  return o;
}

function kv(spec: string, first: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of spec.split(',').slice(first)) {
    const i = part.indexOf('=');
    if (i <= 0) throw new Error(`"${part}" in "${spec}" is not key=value`);
    m.set(part.slice(0, i), part.slice(i + 1));
  }
  return m;
}

export function parseVxlanSpec(spec: string): VxlanPortOptions {
  const m = kv(spec, 0);
  const remote = m.get('remote');
  const vni = Number(m.get('vni'));
  if (!remote) throw new Error(`--vxlan ${spec}: remote= is required`);
  if (!Number.isInteger(vni) || vni < 0 || vni >= 1 << 24) throw new Error(`--vxlan ${spec}: vni= must be 0..16777215`);
  const o: VxlanPortOptions = { remote, vni };
  for (const [k, v] of m) {
    if (k === 'remote' || k === 'vni') continue;
    if (k === 'local') o.local = v;
    else if (k === 'dstport') o.dstport = Number(v);
    else if (k === 'name') o.name = v;
    else if (k === 'vlan') o.vlan = { mode: 'access', vid: Number(v) };
    else throw new Error(`--vxlan ${spec}: unknown option ${k}`);
  }
  return o;
}

/** The QEMU arguments that attach a guest to a port. */
export function qemuArgs(p: { name: string; socket: string; mode: 'server' | 'client'; mac?: string; queuePairs?: number }, idx: number): string {
  return qemuNetArgs(p, idx);
}

export async function cmdSwitch(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', multiple: true, default: [] },
      tap: { type: 'string', multiple: true, default: [] },
      vxlan: { type: 'string', multiple: true, default: [] },
      aging: { type: 'string' },
      inline: { type: 'boolean', default: false },
      poll: { type: 'string', default: 'event' },
      cpus: { type: 'string' },
      threads: { type: 'string' },
      hook: { type: 'string' },
      'state-dir': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(switchUsage + '\n');
    return;
  }
  const ports = (values.port ?? []).map(parsePortSpec);
  const vxlans = (values.vxlan ?? []).map(parseVxlanSpec);
  if (ports.length + (values.tap ?? []).length + vxlans.length === 0) throw new Error('switch: give at least one --port, --tap or --vxlan');
  // The same checks as a configuration file's (MACs, VLANs, names and sockets used twice),
  // all before anything is created.
  parseConfig(mergeFlags({}, { port: values.port, tap: values.tap, vxlan: values.vxlan }));
  const aging = values.aging === undefined ? 300 : Number(values.aging);
  if (!(aging > 0)) throw new Error(`--aging ${values.aging}: expected seconds > 0`);
  let hook;
  if (values.hook) {
    const [file, exp] = values.hook.split(':');
    hook = { module: resolve(file), export: exp };
  }
  if (!POLL_MODES.includes(values.poll as PollMode)) throw new Error(`--poll ${values.poll}: expected ${POLL_MODES.join(', ')}`);
  const cpus = values.cpus === undefined ? undefined : parseCpuList(values.cpus);
  if (cpus && values.inline) throw new Error('--cpus pins the data-plane thread: not with --inline');
  const threads = values.threads === undefined ? Math.max(1, cpus?.length ?? 1) : Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new Error(`--threads ${values.threads}: expected 1..64`);
  if (threads > 1 && values.inline) throw new Error('--threads: several data-plane threads need the worker data plane, not --inline');
  const sd = values['state-dir'];
  const stateDir = sd === 'none' ? undefined : sd !== undefined ? resolve(sd) : defaultStateDir();
  const sw = await Switch.create({ agingSeconds: aging, dataplane: values.inline ? 'inline' : 'worker', hook, poll: values.poll as PollMode, cpus, threads, stateDir });
  let i = 0;
  const lines = [];
  for (const p of ports) {
    const mac = p.mac ?? `52:54:00:12:34:${(0x56 + i).toString(16).padStart(2, '0')}`;
    const info = await sw.addVhostPort({ ...p, mac });
    lines.push(`port ${info.name}: ${info.socket} (${info.mode})\n  qemu ... ${qemuArgs({ ...info, mac, queuePairs: p.queuePairs }, i)}`);
    i++;
  }
  for (const t of values.tap ?? []) {
    const m = kv(t, 1);
    const vid = m.get('vlan');
    const info = await sw.addTapPort({ ifname: t.split(',')[0], offloads: m.get('offloads') !== 'off', vlan: vid ? { mode: 'access', vid: Number(vid) } : undefined });
    lines.push(`port ${info.name}: TAP ${info.socket}`);
  }
  for (const v of vxlans) {
    const info = await sw.addVxlanPort(v);
    lines.push(`port ${info.name}: VXLAN ${info.socket}`);
  }
  const stopped = untilSignal(() => sw.close());
  process.stdout.write(
    `vhostkit switch: ${lines.length} port(s); data plane: ${values.inline ? 'the main thread' : `${threads === 1 ? 'one worker thread' : `${threads} worker threads`}${cpus ? ` on CPU ${cpus.join(',')}` : ''}`}, poll ${values.poll}. Guests also need shareable memory:\n` +
      `  -object memory-backend-memfd,id=mem,size=<RAM>,share=on -numa node,memdev=mem\n` +
      lines.join('\n') +
      '\n',
  );
  await stopped;
}
