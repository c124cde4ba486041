/** GET /: the live dashboard (one static page; data from /v1/stream and the API). */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { access } from '../auth.js';

function page(): string {
  // From src/http/routes (sources) or dist/src/http/routes (compiled): the page stays in src/.
  for (const rel of ['../dashboard/index.html', '../../../../src/http/dashboard/index.html']) {
    const f = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(f)) return readFileSync(f, 'utf8');
  }
  throw new Error('src/http/dashboard/index.html not found');
}

export function dashboardRoutes(app: FastifyInstance): void {
  const html = page();
  // The page itself holds no data (it asks the API, with the token it is given): no token.
  app.get('/', { config: access('public'), schema: { hide: true } }, async (_req, reply) => {
    reply.type('text/html; charset=utf-8');
    reply.header('cache-control', 'no-cache');
    return html;
  });
}
