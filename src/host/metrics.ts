// /metrics in the Prometheus text exposition format (version 0.0.4): per port and per
// queue, per disk, per data-plane thread, then the standard process and Node.js metrics.
// Ours are read from the host's state at each scrape and written here; the standard ones
// (CPU, memory, fds, event-loop lag, GC, heap) come from prom-client, which every Node
// exporter uses and which measures them the way dashboards expect.
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Host } from './host.js';

let processMetrics: Registry | null = null;

/** The standard metrics, started on the first scrape (a library user without /metrics pays nothing). */
function standardMetrics(): Registry {
  if (processMetrics === null) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}

type Labels = Record<string, string | number>;

class Exposition {
  private readonly out: string[] = [];
  private readonly seen = new Set<string>();

  /** One sample; the HELP/TYPE header is written before the first sample of each metric. */
  add(name: string, type: 'counter' | 'gauge' | 'histogram', help: string, labels: Labels, value: number, suffix = ''): void {
    if (!this.seen.has(name)) {
      this.seen.add(name);
      this.out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    }
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
      .join(',');
    this.out.push(`${name}${suffix}${l ? `{${l}}` : ''} ${Number.isFinite(value) ? value : 0}`);
  }

  text(): string {
    return this.out.join('\n') + '\n';
  }
}

const DROP_REASONS: Array<[string, 'drop_no_buffers' | 'drop_too_big' | 'drop_bad' | 'drop_vlan' | 'drop_hook' | 'drop_no_queue' | 'drop_host_busy']> = [
  ['no_buffers', 'drop_no_buffers'],
  ['too_big', 'drop_too_big'],
  ['bad', 'drop_bad'],
  ['vlan', 'drop_vlan'],
  ['hook', 'drop_hook'],
  ['no_queue', 'drop_no_queue'],
  ['host_busy', 'drop_host_busy'],
];

export async function renderMetrics(host: Host): Promise<string> {
  const e = new Exposition();
  const started = process.uptime();
  e.add('vhostkit_uptime_seconds', 'gauge', 'Seconds since the process started.', {}, Math.round(started * 1000) / 1000);
  for (const p of host.ports()) {
    const l = { switch: p.switch, port: p.name, kind: p.kind };
    const c = p.counters;
    e.add('vhostkit_port_connected', 'gauge', 'Whether a frontend is connected (host ports: 1).', l, p.connected ? 1 : 0);
    e.add('vhostkit_port_rx_packets_total', 'counter', 'Frames the port received from its guest or host side.', l, c.rx_packets);
    e.add('vhostkit_port_rx_bytes_total', 'counter', 'Bytes the port received from its guest or host side.', l, c.rx_bytes);
    e.add('vhostkit_port_tx_packets_total', 'counter', 'Frames the port delivered to its guest or host side.', l, c.tx_packets);
    e.add('vhostkit_port_tx_bytes_total', 'counter', 'Bytes the port delivered to its guest or host side.', l, c.tx_bytes);
    for (const [reason, key] of DROP_REASONS) e.add('vhostkit_port_drops_total', 'counter', 'Frames dropped, by reason.', { ...l, reason }, c[key]);
    e.add('vhostkit_port_flooded_total', 'counter', 'Frames received by the port that were flooded.', l, c.flooded);
    e.add('vhostkit_port_queue_errors_total', 'counter', 'Queues of the port its guest broke.', l, c.queue_errors);
    e.add(
      'vhostkit_port_rx_csum_completed_total',
      'counter',
      'Frames from a VXLAN port with a partial TCP/UDP checksum (left by a same-host VTEP): completed, or over an MTU of 1500 handed on as TSO.',
      l,
      c.rx_csum_completed,
    );
  }
  for (const s of await host.switchList()) {
    for (const q of await host.queueStats(s.name)) {
      const l = { switch: s.name, port: q.port, queue: q.index, direction: q.index % 2 === 0 ? 'rx' : 'tx' };
      e.add('vhostkit_queue_packets_total', 'counter', 'Frames through the queue (rx: delivered to the guest; tx: taken from it).', l, q.packets);
      e.add('vhostkit_queue_bytes_total', 'counter', 'Bytes through the queue.', l, q.bytes);
      e.add('vhostkit_queue_notifications_total', 'counter', 'Used-buffer notifications (interrupts) after a burst: sent, or suppressed by the guest.', { ...l, result: 'sent' }, q.notifySent);
      e.add(
        'vhostkit_queue_notifications_total',
        'counter',
        'Used-buffer notifications (interrupts) after a burst: sent, or suppressed by the guest.',
        { ...l, result: 'suppressed' },
        q.notifySuppressed,
      );
      e.add('vhostkit_queue_ring_fill', 'gauge', 'Descriptors the guest made available that the device has not taken yet.', l, q.ringFill);
      e.add('vhostkit_queue_size', 'gauge', 'Queue size (descriptors).', l, q.size);
    }
    for (const t of s.threads) {
      const l = { switch: s.name, thread: t.thread, poll: t.poll };
      e.add('vhostkit_dataplane_busy_seconds_total', 'counter', 'Time a data-plane thread spent serving queues that had work.', l, t.busySeconds);
      e.add('vhostkit_dataplane_idle_seconds_total', 'counter', 'Time a data-plane thread spent polling empty queues or asleep.', l, t.idleSeconds);
      e.add('vhostkit_dataplane_queues', 'gauge', 'Queues a data-plane thread serves.', l, t.queues.length);
    }
  }
  for (const d of host.diskList()) {
    const st = host.diskStats(d.name);
    const l = { disk: d.name };
    e.add('vhostkit_disk_connected', 'gauge', 'Whether a frontend is connected.', l, d.connected ? 1 : 0);
    e.add('vhostkit_disk_size_bytes', 'gauge', 'Disk capacity.', l, d.sizeBytes);
    for (const [type, n] of Object.entries(st.requests)) e.add('vhostkit_disk_requests_total', 'counter', 'Requests, by type.', { ...l, type }, n);
    e.add('vhostkit_disk_read_bytes_total', 'counter', 'Bytes read for the guest.', l, st.bytesRead);
    e.add('vhostkit_disk_written_bytes_total', 'counter', 'Bytes written for the guest.', l, st.bytesWritten);
    e.add('vhostkit_disk_errors_total', 'counter', 'Requests completed with an error status.', { ...l, status: 'ioerr' }, st.ioerr);
    e.add('vhostkit_disk_errors_total', 'counter', 'Requests completed with an error status.', { ...l, status: 'unsupp' }, st.unsupp);
    e.add('vhostkit_disk_in_flight', 'gauge', 'Requests submitted and not yet completed.', l, st.executing);
    e.add('vhostkit_disk_polls_total', 'counter', 'Polls of the rings after a kick (pollUs), by whether a request came.', { ...l, result: 'hit' }, st.pollHits);
    e.add('vhostkit_disk_polls_total', 'counter', 'Polls of the rings after a kick (pollUs), by whether a request came.', { ...l, result: 'timeout' }, st.polls - st.pollHits);
    e.add('vhostkit_disk_held_back_total', 'counter', 'Times chains were left in a ring at the in-flight cap (maxInFlight).', l, st.heldBack);
    // Latency: bucket k counts [2^k, 2^(k+1)) us; bucket 0 under 2 us. Cumulative, in seconds.
    let cum = 0;
    let sum = 0;
    st.latencyUs.forEach((n, k) => {
      cum += n;
      sum += n * (k === 0 ? 1 : 1.5 * 2 ** k); // bucket midpoints: the sum is an estimate
      e.add('vhostkit_disk_request_latency_seconds', 'histogram', 'Submit-to-completion latency of requests.', { ...l, le: (2 ** (k + 1) / 1e6).toString() }, cum, '_bucket');
    });
    e.add('vhostkit_disk_request_latency_seconds', 'histogram', '', { ...l, le: '+Inf' }, cum, '_bucket');
    e.add('vhostkit_disk_request_latency_seconds', 'histogram', '', l, sum / 1e6, '_sum');
    e.add('vhostkit_disk_request_latency_seconds', 'histogram', '', l, cum, '_count');
  }
  const ev = await host.evpnStatus().catch(() => null);
  if (ev) {
    for (const n of ev.neighbors) {
      e.add('vhostkit_evpn_neighbor_up', 'gauge', 'Whether a BGP EVPN session is established.', { neighbor: n.address, asn: n.asn, state: n.state }, n.state === 'established' ? 1 : 0);
    }
    e.add('vhostkit_evpn_routes_in', 'gauge', 'EVPN best paths from neighbors.', {}, ev.routesIn.length);
    e.add('vhostkit_evpn_routes_out', 'gauge', 'EVPN routes this host advertises.', {}, ev.routesOut.length);
    for (const v of ev.vnis) {
      const l = { switch: v.switch, vni: v.vni, port: v.port };
      e.add('vhostkit_evpn_flood_vteps', 'gauge', 'Remote VTEPs that get BUM traffic of a VNI (type-3 routes).', l, v.floodVteps.length);
      e.add('vhostkit_evpn_local_macs', 'gauge', 'MACs learned on local ports and advertised (type-2).', l, v.localMacs.length);
      e.add('vhostkit_evpn_remote_macs', 'gauge', 'MACs installed behind remote VTEPs (type-2 routes).', l, v.remoteMacs.length);
      const snooped = v.localMacs.reduce((n, m) => n + (m.ips?.length ?? 0), 0);
      e.add('vhostkit_evpn_local_addresses', 'gauge', 'Addresses of local MACs seen by ARP/ND snooping and advertised with them (type-2 MAC+IP).', l, snooped);
      if (v.suppressed) {
        e.add('vhostkit_evpn_suppressed_addresses', 'gauge', "Remote addresses answered here (ARP suppression / ND proxy) from the fabric's MAC+IP routes.", l, v.suppressed.length);
      }
    }
  }
  return e.text() + (await standardMetrics().metrics());
}
