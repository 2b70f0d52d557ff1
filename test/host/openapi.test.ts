// GET /v1/openapi.json describes exactly the routes the server has: each route has its entry,
// each entry a route that answers (not "no such resource"), and the document is OpenAPI 3.1.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Host } from '../../src/host/host.js';
import { ApiServer } from '../../src/host/api.js';
import { OPERATIONS } from '../../src/host/openapi.js';
import { parseConfig } from '../../src/host/config.js';
import { apiRequest } from '../../src/cli/ctl.js';
import { setLogSink } from '../../src/log.js';

describe('management API: the OpenAPI document', function () {
  this.timeout(20000);

  it('lists every route, and every listed operation is routed', async () => {
    const old = setLogSink(() => undefined);
    const dir = mkdtempSync(join(tmpdir(), 'vk-oa-'));
    const host = await Host.start(parseConfig({}, dir));
    const api = await ApiServer.listen(host, `unix:${join(dir, 'api.sock')}`);
    try {
      const r = await apiRequest(api.address, 'GET', '/v1/openapi.json');
      expect(r.status).to.equal(200);
      const doc = r.body as { openapi: string; info: { version: string }; paths: Record<string, Record<string, { summary: string; responses: object }>> };
      expect(doc.openapi).to.equal('3.1.0');
      const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{([a-z]+)\}/g, ':$1')}`));
      const routed = api.routeList().map((x) => `${x.method} ${x.path}`);
      expect(documented.sort()).to.deep.equal(routed.sort());
      expect(Object.keys(OPERATIONS).sort(), 'no description without a route').to.deep.equal(routed.sort());
      for (const [p, ops] of Object.entries(doc.paths)) for (const [m, op] of Object.entries(ops)) expect(op.summary, `${m} ${p}`).to.be.a('string').and.not.equal('');
      // Each documented operation reaches a handler: a made-up name gets 404 "no X", never "no such resource" or 405.
      for (const key of documented) {
        const [method, path] = key.split(' ');
        const concrete = path.replace(/:[a-z]+/g, 'nosuchthing');
        const res = await apiRequest(api.address, method, concrete, method === 'GET' || method === 'DELETE' ? undefined : {});
        expect(res.status, key).to.not.equal(405);
        expect(JSON.stringify(res.body), key).to.not.include('no such resource');
      }
    } finally {
      await api.close();
      await host.close();
      rmSync(dir, { recursive: true, force: true });
      setLogSink(old);
    }
  });
});
