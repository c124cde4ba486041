/** The fastify control plane. */
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Logger } from 'pino';
import type { Service } from '../service.js';
import { installErrorHandling } from './errors.js';
import { installAuth } from './auth.js';
import { kernelRoutes } from './routes/kernel.js';
import { triggerRoutes } from './routes/trigger.js';
import { fidelityRoutes } from './routes/fidelity.js';
import { observeRoutes } from './routes/observe.js';
import { processRoutes } from './routes/processes.js';
import { deviceRoutes } from './routes/devices.js';
import { protoRoutes } from './routes/proto.js';
import { installMetrics } from './metrics.js';
import { installReplySchemas } from './replies.js';
import { streamRoutes } from './routes/stream.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { traceRoutes } from './routes/trace.js';

export interface ServerOptions {
  logger?: Logger | boolean;
  /** Largest request body (page data travels as base64). */
  bodyLimit?: number;
}

export async function buildServer(svc: Service, opts: ServerOptions = {}): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: (typeof opts.logger === 'object' ? opts.logger : undefined) as FastifyInstance['log'] | undefined,
    logger: typeof opts.logger === 'boolean' ? opts.logger : undefined,
    bodyLimit: opts.bodyLimit ?? 96 * 1024 * 1024,
    ajv: { customOptions: { removeAdditional: false, allErrors: false } },
    // Paths the router refuses before any route (a bad percent-escape, a parameter longer than
    // maxParamLength) are bad path parameters: answered in the catalogue's shape like any other,
    // not with fastify's own FST_ERR_* body.
    frameworkErrors: (err, _req, reply) => {
      void (reply as FastifyReply).status(400).send({ code: 'DM_ERR_VALIDATION', message: err.message });
    },
  });
  installErrorHandling(app);
  // First: every route registered from here on declares its access (src/http/auth.ts).
  installAuth(app, svc, svc.apiAuth);
  // OpenAPI from the routes' TypeBox schemas (registered before the routes: it collects them as
  // they are added), with the UI at /docs and the document at /docs/json.
  await app.register(swagger, {
    openapi: {
      info: { title: 'devmirror control plane', version: '1', description: 'Drive and watch the emulated kernel, its devices and the notifier channel (see docs/ and shared/spec/API.md).' },
      // Required when DEVMIRROR_API_AUTH is on (docs/control-plane.md, Security).
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a token of DEVMIRROR_TOKENS' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  installReplySchemas(app);
  observeRoutes(app, svc);
  processRoutes(app, svc);
  kernelRoutes(app, svc);
  triggerRoutes(app, svc);
  fidelityRoutes(app);
  deviceRoutes(app, svc);
  protoRoutes(app);
  installMetrics(app, svc);
  streamRoutes(app, svc);
  dashboardRoutes(app);
  traceRoutes(app, svc);
  svc.attach(app.server);
  return app;
}
