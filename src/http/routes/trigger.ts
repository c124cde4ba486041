/**
 * POST /v1/kernel/trigger: produce one invalidation origin on purpose, on a chosen range
 * (src/kernel/trigger.ts), and answer with what was done and the invalidations it caused.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Service } from '../../service.js';
import { Address, Length } from '../schemas.js';
import { End } from '../replies.js';
import { access, guardOf } from '../auth.js';
import { ORIGINS, type Origin } from '../../notifier/range.js';
import { trigger, triggerFamily } from '../../kernel/trigger.js';

const TriggerBody = Type.Object(
  {
    origin: Type.Union(ORIGINS.map((o) => Type.Literal(o)), { description: 'the origin to produce (src/notifier/range.ts ORIGINS)' }),
    pid: Type.Integer({ minimum: 0 }),
    addr: Address,
    length: Length,
    node: Type.Optional(Type.Integer({ minimum: 0, maximum: 63, description: 'migration: the target node; numa_balancing: the node of the CPU that takes the hinting fault' })),
  },
  { additionalProperties: false },
);

const TriggerReply = Type.Object(
  {
    origin: Type.String(),
    pid: Type.Integer(),
    start: Type.Integer(),
    end: Type.Integer(),
    did: Type.String(),
    result: Type.Object({}, { additionalProperties: true }),
    events: Type.Array(
      Type.Object(
        { id: Type.Integer(), pid: Type.Integer(), event: Type.String(), start: Type.Integer(), end: End, origin: Type.String(), blockable: Type.Boolean(), owner: Type.Union([Type.Integer(), Type.Null()]), result: Type.String() },
        { additionalProperties: true },
      ),
      { description: 'the invalidations recorded in /v1/events while the operation ran, of the origins it produces (its own, and THP splits or setup steps it needs)' },
    ),
    note: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

export function triggerRoutes(app: FastifyInstance, svc: Service): void {
  app.post(
    '/v1/kernel/trigger',
    { config: access('process'), schema: { body: TriggerBody, response: { 200: TriggerReply } } },
    async (req) => {
      const b = req.body as { origin: Origin; pid: number; addr: number; length: number; node?: number };
      const before = svc.events.nextId;
      const mm = svc.kernel.findProcess(b.pid)?.mm;
      const subscribed = mm !== undefined && (mm.notifier.subscriberCount > 0 || mm.notifier.hasItree);
      const res = await trigger(svc.kernel, b);
      // The window between the ids also holds what ran concurrently (daemons, other requests):
      // keep the origins this trigger produces. Under concurrent load of the same origin the list
      // may include invalidations it did not cause.
      const family = new Set<string>(triggerFamily(b.origin));
      // Pages shared with other processes (a fork child) are unmapped there too: shown only as far
      // as the token's grant reaches, as in /v1/events.
      const g = guardOf(svc, req);
      const last = svc.events.nextId - 1;
      const events =
        last >= before
          ? svc.events
              .query({ since: before - 1, limit: Math.min(10_000, last - before + 1), filter: (e) => family.has(e.origin) && (g.all || g.pid(e.pid)) })
              .items.map((e) => ({ id: e.id, pid: e.pid, event: e.event, start: e.start, end: e.end, origin: e.origin, blockable: e.blockable, owner: e.owner, result: e.result }))
          : [];
      const note = subscribed ? undefined : 'the process had no notifier subscriber: the kernel skips the notifier calls (mm_has_notifiers), so no invalidation was recorded';
      return { ...res, events, ...(note ? { note } : {}) };
    },
  );
}
