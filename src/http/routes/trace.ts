/** GET /v1/trace: the trace recorder's ring as a Chrome trace / Perfetto JSON file (docs/trace.md). */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Service } from '../../service.js';
import { DevmirrorError } from '../../errors.js';
import { parseAddress } from '../schemas.js';
import { access, guardOf } from '../auth.js';
import { exportTrace, DEFAULT_EXPORT_LIMIT } from '../../trace/service-trace.js';

const open = { additionalProperties: true } as const;
/** The reply's core, for the OpenAPI document; docs/trace.schema.json describes every event. */
const ChromeTraceReply = Type.Object(
  {
    traceEvents: Type.Array(
      Type.Object(
        { name: Type.String(), ph: Type.String({ description: 'X span, i instant, M metadata, C counter, s/f flow' }), pid: Type.Integer(), tid: Type.Integer(), ts: Type.Optional(Type.Number({ description: 'microseconds' })) },
        open,
      ),
    ),
    displayTimeUnit: Type.String(),
    metadata: Type.Object({ bootId: Type.Integer(), nextSince: Type.Integer(), dropped: Type.Integer(), entries: Type.Integer() }, open),
  },
  { ...open, description: 'Chrome trace event format (JSON object form): open it in https://ui.perfetto.dev' },
);

/** Entries one GET /v1/trace exports at most (page with since= for more). */
export const MAX_EXPORT_ENTRIES = 50_000;

export function traceRoutes(app: FastifyInstance, svc: Service): void {
  app.get(
    '/v1/trace',
    {
      // As /v1/events: any token, and the entries of the processes its grant covers.
      config: access('token'),
      schema: {
        description: 'The recorded invalidations (start, each subscriber acknowledgement, end), device range faults, DMA, kernel activities and syscalls as a Chrome trace. `since`: entries after this sequence number (metadata.nextSince of a previous export); `limit`: at most this many entries, the newest without `since` (default 10000); `pid`: one process (and the machine-wide activities).',
        querystring: Type.Object({ pid: Type.Optional(Type.String()), since: Type.Optional(Type.String()), limit: Type.Optional(Type.String()) }, { additionalProperties: false }),
        response: { 200: ChromeTraceReply },
      },
    },
    async (req, reply) => {
      const q = req.query as { pid?: string; since?: string; limit?: string };
      const rec = svc.trace;
      const limit = parseAddress('limit', q.limit, DEFAULT_EXPORT_LIMIT);
      const since = q.since === undefined ? undefined : parseAddress('since', q.since);
      const pid = q.pid === undefined ? undefined : parseAddress('pid', q.pid);
      const g = guardOf(svc, req);
      if (pid !== undefined) g.process(pid);
      if (!rec) throw new DevmirrorError('DM_ERR_CONFLICT', 'tracing is off: start the service with DEVMIRROR_TRACE_EVENTS=50000 (the ring size) to record a trace');
      const trace = exportTrace(svc.kernel, rec, {
        since,
        pid,
        // Bounded whatever the ring's size: the export is built and serialised on the thread that
        // serves the channel, and a long stall there delays every device's acknowledgement.
        limit: Math.min(Math.max(limit, 1), rec.capacity, MAX_EXPORT_ENTRIES),
        visible: g.all ? undefined : (p) => g.pid(p),
        bootId: svc.bootId,
      });
      // Serialised here: a trace can hold a few hundred thousand events, which the compiled reply
      // serialiser would walk once more for nothing (a string payload is sent as it is).
      return reply
        .type('application/json; charset=utf-8')
        .header('content-disposition', `attachment; filename="devmirror-trace-${svc.bootId}.json"`)
        .send(JSON.stringify(trace));
    },
  );
}
