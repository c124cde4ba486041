/** GET /v1/fidelity: the fidelity manifest (src/fidelity.ts), as JSON and as docs/fidelity.md. */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { access } from '../auth.js';
import { FIDELITY, KERNEL_VERSION, fidelityMarkdown } from '../../fidelity.js';

const Reply = Type.Object(
  {
    kernelVersion: Type.String(),
    markdown: Type.String({ description: 'docs/fidelity.md' }),
    items: Type.Array(
      Type.Object(
        {
          kind: Type.Union(['event', 'syscall', 'activity', 'personality', 'mechanism'].map((k) => Type.Literal(k))),
          name: Type.String(),
          fidelity: Type.Union(['exact', 'approximate', 'not-modelled'].map((k) => Type.Literal(k))),
          how: Type.String(),
          kernelVersion: Type.String(),
          origin: Type.Optional(Type.String()),
          daemon: Type.Optional(Type.String()),
          code: Type.String(),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

export function fidelityRoutes(app: FastifyInstance): void {
  const body = { kernelVersion: KERNEL_VERSION, markdown: fidelityMarkdown(), items: FIDELITY };
  // Documentation of the emulator, like /docs: no data of any process.
  app.get('/v1/fidelity', { config: access('public'), schema: { response: { 200: Reply } } }, async () => body);
}
