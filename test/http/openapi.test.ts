import { describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';

describe('OpenAPI', () => {
  it('serves the document at /docs/json with the API routes and their schemas, and the UI at /docs', async () => {
    const svc = new Service();
    const app = await buildServer(svc, { logger: false });
    try {
      await app.ready();
      const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
      expect(doc.openapi).toMatch(/^3\./);
      for (const p of ['/v1/processes', '/v1/processes/{pid}/mmap', '/v1/devices', '/v1/devices/{id}/faults', '/v1/devices/{id}/dmirror/read', '/v1/events']) {
        expect(doc.paths, p).toHaveProperty([p]);
      }
      const create = doc.paths['/v1/devices'].post.requestBody.content['application/json'].schema;
      expect(create.properties.kind).toBeDefined();
      expect(create.additionalProperties).toBe(false);
      const ui = await app.inject({ method: 'GET', url: '/docs' });
      expect([200, 302]).toContain(ui.statusCode);
    } finally {
      await svc.stop();
      await app.close();
    }
  });
});
