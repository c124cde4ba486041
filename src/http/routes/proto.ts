/** GET /v1/proto: the notifier channel's .proto files (the public contract for external clients). */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { access } from '../auth.js';

const PROTO = 'proto/devmirror/v1/notifier.proto';

/** The project root: two levels up from src/http/routes in the sources, three from dist/. */
function protoText(): string {
  for (const up of ['../../../', '../../../../']) {
    const f = fileURLToPath(new URL(up + PROTO, import.meta.url));
    if (existsSync(f)) return readFileSync(f, 'utf8');
  }
  throw new Error(`${PROTO} not found`);
}

export function protoRoutes(app: FastifyInstance): void {
  const text = protoText();
  // The schema is one file: /v1/proto returns it as is (save it as notifier.proto), and it is
  // also served under its path in the repository.
  for (const path of ['/v1/proto', `/v1/proto/${PROTO}`]) {
    // The public contract for client authors: no token.
    app.get(path, { config: access('public') }, async (_req, reply) => {
      reply.type('text/plain; charset=utf-8');
      reply.header('content-disposition', 'inline; filename="notifier.proto"');
      return text;
    });
  }
}
