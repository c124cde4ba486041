/** Maps every failure to the catalogue's `{ code, message }` shape. */
import type { FastifyError, FastifyInstance } from 'fastify';
import { DevmirrorError } from '../errors.js';

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | DevmirrorError | Error, req, reply) => {
    if (err instanceof DevmirrorError) {
      if (err.statusCode >= 500) req.log.error({ err }, 'internal error');
      return reply.status(err.statusCode).send(err.toJSON());
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      return reply.status(400).send({ code: 'DM_ERR_VALIDATION', message: fe.message });
    }
    if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.status(413).send({ code: 'DM_ERR_TOO_LARGE', message: fe.message });
    }
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.status(fe.statusCode).send({ code: 'DM_ERR_VALIDATION', message: fe.message });
    }
    req.log.error({ err }, 'unhandled error');
    return reply.status(500).send({ code: 'DM_ERR_INTERNAL', message: 'internal error (see the server log)' });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send({ code: 'DM_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url}` });
  });
}
