/**
 * GET /v1/stream: server-sent events for the live dashboard.
 *   event: invalidations  data: [EventEntry...]  (batched every 250 ms, at most 500 per batch;
 *                                                 `dropped` counts what a batch skipped)
 *   event: devices        data: [device summary...] (every second; counters as of the last stats)
 *   event: processes      data: [process summary...] (every second)
 * A slow reader is not buffered without bound: while the socket is not drained, batches are skipped
 * (and counted in the next batch's `dropped`).
 */
import type { FastifyInstance } from 'fastify';
import type { Service } from '../../service.js';
import { deviceSummaries } from './devices.js';
import { processSummary } from './processes.js';
import { access, guardOf } from '../auth.js';

export function streamRoutes(app: FastifyInstance, svc: Service): void {
  const open = new Set<() => void>();
  app.addHook('onClose', async () => {
    for (const end of [...open]) end();
  });
  app.get('/v1/stream', { config: access('token') }, (req, reply) => {
    // What the token covers: its processes' invalidations, devices and processes.
    const g = guardOf(svc, req);
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    reply.hijack();
    let since = Math.max(0, svc.events.nextId - 1);
    let dropped = 0;
    const send = (event: string, data: unknown): void => {
      if (res.writableNeedDrain) {
        dropped++;
        return;
      }
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const tickEvents = (): void => {
      const page = svc.events.query({ since, limit: 500, filter: g.all ? undefined : (e) => g.pid(e.pid) });
      if (page.items.length === 0) return;
      since = page.nextSince;
      send('invalidations', { items: page.items, dropped: page.dropped + dropped });
      dropped = 0;
    };
    const tickState = (): void => {
      send('devices', deviceSummaries(svc, g));
      send('processes', svc.kernel.liveProcesses().filter((p) => g.pid(p.pid)).map(processSummary));
    };
    tickState();
    const t1 = setInterval(tickEvents, 250);
    const t2 = setInterval(tickState, 1000);
    const end = (): void => {
      clearInterval(t1);
      clearInterval(t2);
      open.delete(end);
      res.end();
    };
    open.add(end);
    req.raw.on('close', end);
  });
}
