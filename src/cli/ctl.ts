// `vhostkit ctl`: the management API's command-line client (as ovs-appctl is to OVS).
import { parseArgs } from 'node:util';
import { defaultApiAddress, readTokenFile } from '../host/api.js';
import { apiRequest, table, type Row } from './api-client.js';
import { top } from './top.js';

export { apiRequest, type ApiReply } from './api-client.js';
import { mergeFlags, diskSpecToRaw } from './run.js';

export const ctlUsage = `vhostkit ctl [--api ADDR] [--token-file FILE] [--json] <command> [args]

  status                         version, uptime, what is served
  qemu                           the QEMU arguments for every port and disk
  switches                       switches, their ports and data-plane threads
  switch-add NAME [--poll MODE]  a switch (no ports)
  switch-del NAME
  ports [SWITCH]                 ports with their counters
  port-add SWITCH [NAME=]SOCKET[,OPTION...]     a vhost-user port (options as "vhostkit switch --port")
  tap-add SWITCH IFNAME[,vlan=VID]
  vxlan-add SWITCH remote=ADDR,vni=N[,...]
  port-del PORT
  vlan PORT VID | trunk:VID[:VID...][,native=VID]
  fdb SWITCH                     the forwarding database (MAC, VLAN, port, age; remote VTEP)
  queues SWITCH                  per queue packets, bytes, notifications, ring fill
  flow add SWITCH FLOW           a flow in ovs-ofctl syntax, e.g. "priority=100,tcp,tp_dst=80,actions=drop"
                                 or "in_port=vm1,dl_dst=52:54:00:00:00:02,actions=output:vm3"
  flow del SWITCH [MATCH] [--strict]   the flows a match names (none: all; --strict: that priority)
  flow dump SWITCH               the flows with n_packets= and n_bytes=, as ovs-ofctl dump-flows
  handlers SWITCH                its packet handlers: frames, runs, sent, errors
  disks                          disks
  disk PORT                      one disk, with its request counters
  disk-add [NAME=]SOCKET,file=IMAGE|ram=SIZE[,readonly][,shared][,serial=ID][,queues=N]
           [,engine=auto|io_uring|threads][,poll-us=N]
  disk-del NAME                  (in-flight requests finish first)
  disk-resize NAME [SIZE]        grow a disk to SIZE (bytes, or 512M, 10G...); without SIZE,
                                 re-read its file's size (after truncate -s); the guest is told
  capture start PORT FILE [--count N] [--snaplen N]   pcap of both directions (tcpdump -r reads it)
  capture stop PORT
  captures                       captures and their packet counts
  evpn                           BGP EVPN: neighbors and their state, routes in and out, VTEPs per VNI
  metrics                        the Prometheus text /metrics serves
  log-level [LEVEL]              the log level, or set it (debug, info, warn, error) at run time
  top [--interval S] [--count N] live packets and bits per second, drops per second per port and
                                 per queue, refreshed in place (Ctrl-C ends it)

--api: unix:/path or HOST:PORT (default: VHOSTKIT_API, else ${defaultApiAddress()}).
--token-file: the API's bearer token (default: VHOSTKIT_API_TOKEN_FILE, else none).
capture start FILE: a name in, or a path under, the capture directory vhostkit run was given.`;

interface EvpnView {
  asn: number;
  routerId: string;
  vtep: string;
  api: string;
  neighbors: Row[];
  routesIn: Array<{ route: string; neighbor: string }>;
  routesOut: string[];
  vnis: Array<{ vni: number; switch: string; port: string; vlan: number; floodVteps: string[]; localMacs: Row[]; remoteMacs: Row[]; suppressed?: Row[] }>;
}

/** `ctl evpn`: the speaker, its neighbors, routes in and out, and per VNI its VTEPs and MACs. */
function evpnText(b: EvpnView): string {
  const out = [`AS ${b.asn}, router id ${b.routerId}, VTEP ${b.vtep} (GoBGP at ${b.api})`, '', 'Neighbors:'];
  out.push(
    table(b.neighbors, [
      ['NEIGHBOR', (r) => r.address],
      ['AS', (r) => r.asn],
      ['STATE', (r) => r.state],
      ['SINCE', (r) => (r.since === null ? '' : `${String(r.since)}s`)],
    ]).trimEnd(),
  );
  out.push('', `Routes in (${b.routesIn.length}):`, ...b.routesIn.map((r) => `  ${r.route} from ${r.neighbor}`));
  out.push('', `Routes out (${b.routesOut.length}):`, ...b.routesOut.map((r) => `  ${r}`));
  for (const v of b.vnis) {
    out.push('', `VNI ${v.vni}: switch ${v.switch}, port ${v.port}, VLAN ${v.vlan}`, `  flood VTEPs: ${v.floodVteps.join(' ') || '(none)'}`);
    for (const m of v.localMacs) {
      // Its addresses from ARP/ND snooping, advertised as MAC+IP routes.
      const ips = Array.isArray(m.ips) ? (m.ips as unknown[]).map(String) : [];
      out.push(`  local  ${String(m.mac)} seq ${String(m.seq)}${ips.length ? ` ip ${ips.join(' ')}` : ''}`);
    }
    for (const m of v.remoteMacs) out.push(`  remote ${String(m.mac)} via ${String(m.vtep)} seq ${String(m.seq)}`);
    // ARP suppression / ND proxy: the remote addresses answered here.
    for (const a of v.suppressed ?? []) out.push(`  answers ${String(a.ip)} with ${String(a.mac)}`);
  }
  return out.join('\n') + '\n';
}

/** "port vm3 removed" from the API's {removed: name}. */
const removed = (what: string) => (b: unknown) => `${what} ${(b as { removed: string }).removed} removed\n`;

function vlanText(v: Row | undefined): string {
  if (!v) return '';
  return v.mode === 'access' ? `access ${v.vid}` : `trunk ${((v.allowed as number[]) ?? []).join(',') || 'all'}${v.native ? ` native ${v.native}` : ''}`;
}

/** "10" or "trunk:10:20,native=1" -> the API's VLAN body. */
export function vlanArg(s: string): unknown {
  if (/^\d+$/.test(s)) return Number(s);
  const m = /^trunk(?::([\d:]+))?(?:,native=(\d+))?$/.exec(s);
  if (!m) throw new Error(`vlan ${s}: expected VID or trunk:VID[:VID...][,native=VID]`);
  return { mode: 'trunk', allowed: m[1] ? m[1].split(':').map(Number) : undefined, native: m[2] ? Number(m[2]) : undefined };
}

export async function cmdCtl(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      api: { type: 'string' },
      'token-file': { type: 'string' },
      json: { type: 'boolean', default: false },
      poll: { type: 'string' },
      count: { type: 'string' },
      snaplen: { type: 'string' },
      interval: { type: 'string' },
      strict: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  const [cmd, ...args] = positionals;
  if (values.help || !cmd) {
    process.stdout.write(ctlUsage + '\n');
    return cmd || values.help ? 0 : 2;
  }
  const api = values.api ?? defaultApiAddress();
  const need = (n: number, what: string) => {
    if (args.length < n) throw new Error(`ctl ${cmd}: expected ${what}`);
  };
  const tokenFile = values['token-file'] ?? process.env.VHOSTKIT_API_TOKEN_FILE;
  const token = tokenFile ? readTokenFile(tokenFile) : undefined;
  if (cmd === 'top') {
    const interval = Number(values.interval ?? '1');
    if (!(interval >= 0.1 && interval <= 3600)) throw new Error(`--interval ${values.interval}: expected seconds in 0.1..3600`);
    const count = Number(values.count ?? '0');
    if (!Number.isInteger(count) || count < 0) throw new Error(`--count ${values.count}: expected a whole number (0: until Ctrl-C)`);
    return top({ api, token, interval, count, out: process.stdout });
  }
  const enc = encodeURIComponent;
  let method = 'GET';
  let path: string;
  let body: unknown;
  let show: ((b: unknown) => string) | null = null;
  switch (cmd) {
    case 'status':
      path = '/v1/status';
      break;
    case 'qemu':
      path = '/v1/qemu';
      show = (b) => {
        const q = b as { memory: string; devices: Array<{ name: string; args: string }> };
        return `every guest: ${q.memory}\n` + q.devices.map((d) => `${d.name}: ${d.args}\n`).join('');
      };
      break;
    case 'switches':
      path = '/v1/switches';
      show = (b) =>
        table(b as Row[], [
          ['SWITCH', (r) => r.name],
          ['POLL', (r) => r.poll],
          ['PORTS', (r) => (r.ports as string[]).join(',')],
          ['THREADS', (r) => (r.threads as Row[]).map((t) => `${t.thread}${(t.cpus as number[]).length ? `@${(t.cpus as number[]).join(',')}` : ''}`).join(' ')],
        ]);
      break;
    case 'switch-add':
      need(1, 'NAME');
      method = 'POST';
      path = '/v1/switches';
      body = { name: args[0], ...(values.poll ? { poll: values.poll } : {}) };
      show = (b) => `switch ${(b as Row).name} added (poll ${(b as Row).poll})\n`;
      break;
    case 'switch-del':
      need(1, 'NAME');
      method = 'DELETE';
      path = `/v1/switches/${enc(args[0])}`;
      show = removed('switch');
      break;
    case 'ports':
      path = args[0] ? `/v1/ports?switch=${enc(args[0])}` : '/v1/ports';
      show = (b) =>
        table(b as Row[], [
          ['PORT', (r) => r.name],
          ['SWITCH', (r) => r.switch],
          ['KIND', (r) => r.kind],
          ['WHERE', (r) => r.socket],
          ['UP', (r) => (r.connected ? 'yes' : 'no')],
          ['VLAN', (r) => vlanText(r.vlan as Row)],
          ['RX PKTS', (r) => (r.counters as Row).rx_packets],
          ['TX PKTS', (r) => (r.counters as Row).tx_packets],
          ['DROPS', (r) => Object.entries(r.counters as Row).reduce((n, [k, v]) => n + (k.startsWith('drop_') ? (v as number) : 0), 0)],
        ]);
      break;
    case 'port-add':
    case 'tap-add':
    case 'vxlan-add': {
      need(2, 'SWITCH SPEC');
      const flag = cmd === 'port-add' ? 'port' : cmd === 'tap-add' ? 'tap' : 'vxlan';
      const merged = mergeFlags({}, { [flag]: [args[1]] });
      const port = ((merged.switches as Row[])[0].ports as Row[])[0];
      method = 'POST';
      path = '/v1/ports';
      body = { switch: args[0], ...port };
      show = (b) => {
        const p = b as Row;
        return `port ${p.name} added to switch ${p.switch}: ${p.kind} ${p.socket}, VLAN ${vlanText(p.vlan as Row)}\n`;
      };
      break;
    }
    case 'port-del':
      need(1, 'PORT');
      method = 'DELETE';
      path = `/v1/ports/${enc(args[0])}`;
      show = removed('port');
      break;
    case 'vlan':
      need(2, 'PORT VLAN');
      method = 'PUT';
      path = `/v1/ports/${enc(args[0])}/vlan`;
      body = vlanArg(args[1]);
      show = (b) => `port ${(b as Row).name}: VLAN ${vlanText((b as Row).vlan as Row)}\n`;
      break;
    case 'fdb':
      need(1, 'SWITCH');
      path = `/v1/switches/${enc(args[0])}/fdb`;
      show = (b) =>
        table(b as Row[], [
          ['MAC', (r) => r.mac],
          ['VLAN', (r) => r.vlan],
          ['PORT', (r) => r.portName],
          // An installed (EVPN) entry never ages: no AGE, the remote VTEP it goes to instead.
          ['AGE', (r) => (r.vtep !== undefined ? '-' : `${Math.round((r.age as number) / 1000)}s`)],
          ['VTEP', (r) => r.vtep ?? ''],
        ]);
      break;
    case 'flow': {
      need(2, 'add SWITCH FLOW | del SWITCH [MATCH] | dump SWITCH');
      const [sub, sw, text] = args;
      path = `/v1/switches/${enc(sw)}/flows`;
      const dump = (b: unknown) => (b as Array<{ line: string }>).map((f) => `${f.line}\n`).join('');
      if (sub === 'add') {
        if (text === undefined) throw new Error('ctl flow add: expected SWITCH FLOW');
        method = 'POST';
        body = { flow: text };
        show = () => `flow added to ${sw}\n`;
      } else if (sub === 'del') {
        method = 'DELETE';
        body = { match: text ?? '', strict: values.strict };
        show = (b) => `${(b as { removed: number }).removed} flow(s) removed from ${sw}\n`;
      } else if (sub === 'dump') {
        show = dump;
      } else {
        throw new Error(`ctl flow ${sub}: expected add, del or dump`);
      }
      break;
    }
    case 'handlers':
      need(1, 'SWITCH');
      path = `/v1/switches/${enc(args[0])}/handlers`;
      show = (b) =>
        table(b as Row[], [
          ['HANDLER', (r) => r.name],
          ['FRAMES', (r) => r.frames],
          ['RUNS', (r) => r.runs],
          ['SENT', (r) => r.sent],
          ['ERRORS', (r) => r.errors],
          ['LOST', (r) => r.lost],
          ['LAST ERROR', (r) => r.lastError],
        ]);
      break;
    case 'queues':
      need(1, 'SWITCH');
      path = `/v1/switches/${enc(args[0])}/queues`;
      show = (b) =>
        table(b as Row[], [
          ['PORT', (r) => r.port],
          ['QUEUE', (r) => `${r.index} ${(r.index as number) % 2 === 0 ? 'rx' : 'tx'}`],
          ['PACKETS', (r) => r.packets],
          ['BYTES', (r) => r.bytes],
          ['NOTIFIED', (r) => r.notifySent],
          ['SUPPRESSED', (r) => r.notifySuppressed],
          ['FILL', (r) => `${r.ringFill}/${r.size}`],
          ['THREAD', (r) => r.thread],
        ]);
      break;
    case 'disks':
      path = '/v1/disks';
      show = (b) =>
        table(b as Row[], [
          ['DISK', (r) => r.name],
          ['SOCKET', (r) => r.socket],
          ['UP', (r) => (r.connected ? 'yes' : 'no')],
          ['BACKING', (r) => r.backing],
          ['BYTES', (r) => r.sizeBytes],
          ['RO', (r) => (r.readOnly ? 'yes' : 'no')],
          ['QUEUES', (r) => r.queues],
          ['ENGINE', (r) => r.engine],
        ]);
      break;
    case 'disk':
      need(1, 'NAME');
      path = `/v1/disks/${enc(args[0])}`;
      break;
    case 'disk-add':
      need(1, 'SPEC');
      method = 'POST';
      path = '/v1/disks';
      body = JSON.parse(JSON.stringify(diskSpecToRaw(args[0])));
      show = (b) => {
        const d = b as Row;
        return `disk ${d.name} added: ${d.socket}, ${d.backing}, ${d.sizeBytes} bytes${d.readOnly ? ', read-only' : ''}\n`;
      };
      break;
    case 'disk-resize':
      need(1, 'NAME [SIZE]');
      method = 'POST';
      path = `/v1/disks/${enc(args[0])}/resize`;
      body = args[1] === undefined ? {} : { size: args[1] };
      show = (b) => {
        const d = b as Row;
        const told = d.notified ? 'the guest was told' : d.connected ? 'the frontend could not be told (see the log)' : 'no guest connected';
        return `disk ${d.name}: ${d.oldSizeBytes} -> ${d.sizeBytes} bytes; ${told}\n`;
      };
      break;
    case 'disk-del':
      need(1, 'NAME');
      method = 'DELETE';
      path = `/v1/disks/${enc(args[0])}`;
      show = removed('disk');
      break;
    case 'capture': {
      need(2, 'start PORT FILE | stop PORT');
      const [sub, port, file] = args;
      if (sub === 'start') {
        if (!file) throw new Error('ctl capture start: expected PORT FILE');
        method = 'POST';
        path = `/v1/ports/${enc(port)}/capture`;
        const num = (v: string | undefined, what: string) => {
          if (v === undefined) return undefined;
          const n = Number(v);
          if (!Number.isInteger(n) || n < 1) throw new Error(`--${what} ${v}: expected a positive integer`);
          return n;
        };
        body = { file, count: num(values.count, 'count'), snaplen: num(values.snaplen, 'snaplen') };
      } else if (sub === 'stop') {
        method = 'DELETE';
        path = `/v1/ports/${enc(port)}/capture`;
      } else {
        throw new Error(`ctl capture ${sub}: expected start or stop`);
      }
      show = (b) => {
        const c = b as Row;
        return `capture of ${c.port} into ${c.file}: ${c.packets} packet(s)${c.running ? ', running' : ', stopped'}\n`;
      };
      break;
    }
    case 'captures':
      path = '/v1/captures';
      show = (b) =>
        table(b as Row[], [
          ['PORT', (r) => r.port],
          ['FILE', (r) => r.file],
          ['PACKETS', (r) => r.packets],
          ['COUNT', (r) => r.count || ''],
          ['RUNNING', (r) => (r.running ? 'yes' : 'no')],
        ]);
      break;
    case 'evpn':
      path = '/v1/evpn';
      show = (b) => evpnText(b as EvpnView);
      break;
    case 'metrics':
      path = '/metrics';
      show = (b) => String(b);
      break;
    case 'log-level':
      path = '/v1/log';
      if (args[0] !== undefined) {
        method = 'PUT';
        body = { level: args[0] };
      }
      show = (b) => `log level ${(b as { level: string }).level}\n`;
      break;
    default:
      throw new Error(`ctl: unknown command ${cmd} (see vhostkit ctl --help)`);
  }
  const r = await apiRequest(api, method, path, body, token);
  if (r.status >= 400) {
    const err = (r.body as { error?: string })?.error ?? r.text;
    process.stderr.write(`vhostkit ctl ${cmd}: ${err}\n`);
    return 1;
  }
  if (values.json || !show) process.stdout.write(typeof r.body === 'string' ? r.body : JSON.stringify(r.body, null, 2) + '\n');
  else process.stdout.write(show(r.body));
  return 0;
}
