/** Health, readiness, notifier state and the recent invalidations. */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { R, list } from '../replies.js';
import type { Service } from '../../service.js';
import { formatEnd } from '../../notifier/range.js';
import { parseAddress } from '../schemas.js';
import { memorySummary } from './kernel.js';
import { access, guardOf } from '../auth.js';

export function observeRoutes(app: FastifyInstance, svc: Service): void {
  // Liveness and readiness probes: no token (they tell nothing about processes).
  app.get('/healthz', { config: access('public'), schema: { response: { 200: R.Health } } }, async () => ({ status: 'ok', bootId: svc.bootId, uptimeMs: Date.now() - svc.startedAt }));
  app.get('/readyz', { config: access('public'), schema: { response: { 200: R.Health, 503: R.Health } } }, async (_req, reply) => {
    if (!svc.ready) {
      reply.status(503);
      return { status: 'starting' };
    }
    return { status: 'ready', bootId: svc.bootId, memory: memorySummary(svc) };
  });
  app.get(
    '/v1/events',
    { config: access('token'), schema: { querystring: Type.Object({ pid: Type.Optional(Type.String()), since: Type.Optional(Type.String()), limit: Type.Optional(Type.String()) }), response: { 200: R.Events } } },
    async (req) => {
      const q = req.query as { pid?: string; since?: string; limit?: string };
      const limit = parseAddress('limit', q.limit, 100);
      const g = guardOf(svc, req);
      const pid = q.pid === undefined ? undefined : parseAddress('pid', q.pid);
      if (pid !== undefined) g.process(pid);
      const page = svc.events.query({
        pid,
        filter: g.all ? undefined : (e) => g.pid(e.pid),
        since: q.since === undefined ? undefined : parseAddress('since', q.since),
        limit: Math.min(Math.max(limit, 1), 10_000),
      });
      return { ...page, bootId: svc.bootId };
    },
  );
  // The progress oracle: its findings and the wait-for graph now. Both name pids, addresses and
  // devices of every process: machine-wide, as the audit.
  app.get(
    '/v1/progress',
    { config: access('machine'), schema: { response: { 200: Type.Object({ watchdogMs: Type.Integer(), retryBudget: Type.Integer(), reported: Type.Integer(), findings: Type.Array(Type.Object({}, { additionalProperties: true })), graph: Type.Object({}, { additionalProperties: true }) }) } } },
    async () => {
      const p = svc.progress;
      return { watchdogMs: p.watchdogMs, retryBudget: p.retryBudget, reported: p.reported, findings: p.findings, graph: p.graph() };
    },
  );
  app.get('/v1/notifier', { config: access('token'), schema: { response: { 200: list(Type.Object({ pid: Type.Integer(), invalidateSeq: Type.Integer(), activeRanges: Type.Integer() }, { additionalProperties: true })) } } }, async (req) => ({
    items: svc.kernel.liveProcesses().filter((p) => guardOf(svc, req).pid(p.pid)).map((p) => {
      const n = p.mm.notifier;
      return {
        pid: p.pid,
        name: p.name,
        invalidateSeq: n.invalidateSeq,
        activeRanges: n.activeInvalidateRanges,
        open: n.openRanges().map((r) => ({ id: r.id, start: r.start, end: formatEnd(r.end), event: r.event, origin: r.origin })),
        subscriptions: [
          ...n.list.map((s) => ({ kind: 'mm', label: s.info.label, deviceId: s.info.deviceId ?? null })),
          ...[...n.itree].map((s) => ({ kind: 'interval', label: s.info.label, deviceId: s.info.deviceId ?? null, start: s.start, end: formatEnd(s.end), seq: s.invalidateSeq })),
        ],
      };
    }),
  }));
}
