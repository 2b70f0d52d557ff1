// The management API's HTTP client, and the plain table its commands print.
import { request } from 'node:http';
import { parseApiAddress } from '../host/api.js';

export interface ApiReply {
  status: number;
  body: unknown;
  text: string;
}

/** One request to the management API at `address`. */
export function apiRequest(address: string, method: string, path: string, body?: unknown, token?: string): Promise<ApiReply> {
  const a = parseApiAddress(address);
  const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...('path' in a ? { socketPath: a.path } : { host: a.host, port: a.port }),
        method,
        path,
        headers: data ? { ...auth, 'content-type': 'application/json', 'content-length': String(data.length) } : auth,
        timeout: 30000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          if ((res.headers['content-type'] ?? '').startsWith('application/json')) {
            try {
              parsed = JSON.parse(text);
            } catch {
              // leave the text
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${address} within 30 s`)));
    req.on('error', (e) => reject(new Error(`cannot reach the management API at ${address}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    req.end(data);
  });
}

export type Row = Record<string, unknown>;

export function table(rows: Row[], cols: Array<[string, (r: Row) => unknown]>): string {
  const cells = rows.map((r) => cols.map(([, f]) => String(f(r) ?? '')));
  const w = cols.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c
      .map((x, i) => x.padEnd(w[i]))
      .join('  ')
      .trimEnd();
  return [line(cols.map(([h]) => h)), ...cells.map(line)].join('\n') + '\n';
}
