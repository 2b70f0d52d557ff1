// `vhostkit probe`: what does the backend on this socket offer? Connects as a frontend,
// asks, and closes without setting anything up (SET_OWNER is the only state change, as
// every frontend sends it first).
import { lstatSync } from 'node:fs';
import { NET_CONFIG_SIZE, decodeNetConfig, netFeatureNames, NetFeature } from '../virtio/net.js';
import { BLK_CONFIG_SIZE, BlkFeature, blkFeatureNames, decodeBlkConfig } from '../virtio/blk.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, featureNames, has } from '../virtio/features.js';
import { VhostUserFrontend } from './frontend.js';
import { ProtocolFeature, protocolFeatureNames } from './protocol.js';

export type ProbeType = 'net' | 'blk' | 'unknown';

export interface ProbeResult {
  socket: string;
  type: ProbeType;
  features: bigint;
  featureNames: string[];
  protocolFeatures: bigint | null;
  protocolFeatureNames: string[];
  queueNum: number | null;
  maxMemSlots: number | null;
  config: Record<string, unknown> | null;
  configBytes: number[] | null;
}

/** Guesses the device type from its feature bits (device bits overlap between types). */
export function guessType(features: bigint): ProbeType {
  const net = [NetFeature.MRG_RXBUF, NetFeature.MTU, NetFeature.GUEST_TSO6, NetFeature.CTRL_VQ, NetFeature.GUEST_ANNOUNCE].some((b) => has(features, b));
  const blk = [BlkFeature.BLK_SIZE, BlkFeature.GEOMETRY, BlkFeature.SEG_MAX, BlkFeature.FLUSH].some((b) => has(features, b));
  if (net && !blk) return 'net';
  if (blk && !net) return 'blk';
  if (net && blk) return has(features, NetFeature.MRG_RXBUF) ? 'net' : 'blk';
  return 'unknown';
}

/** Why `socket` could not be probed, in plain words. */
export function explainProbeFailure(socket: string, e: Error, timeoutMs: number): string {
  let st;
  try {
    st = lstatSync(socket);
  } catch (le) {
    if ((le as NodeJS.ErrnoException).code === 'ENOENT') return 'no such file';
  }
  if (st && !st.isSocket()) return `not a socket (it is ${st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : st.isSymbolicLink() ? 'a symlink' : 'not a socket file'})`;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'nothing listens on this socket (a stale socket file: its server has gone)';
  if (code === 'EACCES') return 'permission denied: this user may not connect to the socket';
  const m = /request (\d+): header version/.exec(e.message);
  if (m) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(Number(m[1]) >>> 0);
    const text = b.toString('latin1');
    return /^HTTP$/.test(text) ? 'not a vhost-user backend: it answered HTTP' : `not a vhost-user backend: its answer is not a vhost-user message (it starts with ${JSON.stringify(text)})`;
  }
  if (/timed out|no reply|timeout/i.test(e.message)) return `no answer within ${timeoutMs} ms: not a vhost-user backend, or one busy with another frontend`;
  if (/closed/.test(e.message)) return 'the other end closed the connection without answering: not a vhost-user backend, or one that serves another frontend already';
  return e.message;
}

export async function probe(socket: string, opts: { type?: ProbeType; timeoutMs?: number } = {}): Promise<ProbeResult> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  try {
    return await probeOnce(socket, opts.type, timeoutMs);
  } catch (e) {
    throw new Error(explainProbeFailure(socket, e as Error, timeoutMs));
  }
}

async function probeOnce(socket: string, want: ProbeType | undefined, timeoutMs: number): Promise<ProbeResult> {
  const opts = { type: want };
  const fe = await VhostUserFrontend.connect(socket, { timeoutMs });
  try {
    const features = await fe.getFeatures();
    const type = opts.type && opts.type !== 'unknown' ? opts.type : guessType(features);
    const names = type === 'net' ? netFeatureNames : type === 'blk' ? blkFeatureNames : {};
    const r: ProbeResult = {
      socket,
      type,
      features,
      featureNames: featureNames(features, names),
      protocolFeatures: null,
      protocolFeatureNames: [],
      queueNum: null,
      maxMemSlots: null,
      config: null,
      configBytes: null,
    };
    if (!has(features, VHOST_USER_F_PROTOCOL_FEATURES)) return r;
    const pf = await fe.getProtocolFeatures();
    r.protocolFeatures = pf;
    r.protocolFeatureNames = protocolFeatureNames(pf);
    await fe.setProtocolFeatures(pf);
    await fe.setOwner();
    if (pf & (1n << BigInt(ProtocolFeature.MQ))) r.queueNum = Number(await fe.getQueueNum());
    if (pf & (1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS))) r.maxMemSlots = Number(await fe.getMaxMemSlots());
    if (pf & (1n << BigInt(ProtocolFeature.CONFIG)) && type !== 'unknown') {
      const size = type === 'net' ? NET_CONFIG_SIZE : BLK_CONFIG_SIZE;
      const bytes = await fe.getConfig(0, size);
      if (bytes !== null) {
        r.configBytes = Array.from(bytes);
        r.config = type === 'net' ? { ...decodeNetConfig(bytes) } : { ...decodeBlkConfig(bytes) };
      }
    }
    return r;
  } finally {
    fe.close();
  }
}

/** The human-readable report `vhostkit probe` prints. */
export function formatProbe(r: ProbeResult): string {
  const hex = (x: bigint) => `0x${x.toString(16)}`;
  const lines = [
    `socket:             ${r.socket}`,
    `device type:        ${r.type === 'unknown' ? 'unknown (pass --type net|blk to decode device bits)' : `virtio-${r.type} (guessed from the feature bits)`}`,
    `features:           ${hex(r.features)}`,
    ...wrap(r.featureNames, '                    '),
    `protocol features:  ${r.protocolFeatures === null ? 'none (no VHOST_USER_F_PROTOCOL_FEATURES)' : hex(r.protocolFeatures)}`,
    ...wrap(r.protocolFeatureNames, '                    '),
    `queues:             ${r.queueNum ?? 'not reported (no MQ protocol feature)'}`,
  ];
  if (r.maxMemSlots !== null) lines.push(`memory slots:       ${r.maxMemSlots}`);
  if (r.config) {
    lines.push('config space:');
    for (const [k, v] of Object.entries(r.config)) lines.push(`  ${k.padEnd(22)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  } else {
    lines.push('config space:       not available');
  }
  return lines.join('\n') + '\n';
}

function wrap(words: string[], indent: string): string[] {
  const out: string[] = [];
  let line = '';
  for (const w of words) {
    if (line.length + w.length + 1 > 72) {
      out.push(indent + line.trimEnd());
      line = '';
    }
    line += w + ' ';
  }
  if (line) out.push(indent + line.trimEnd());
  return out;
}
