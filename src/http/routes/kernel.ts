/** Kernel activity on demand: POST /v1/kernel/{activity}. */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { R } from '../replies.js';
import type { Service } from '../../service.js';
import { Address, Length } from '../schemas.js';
import { DAEMON_NAMES, MAX_DAEMON_RATE, type DaemonName } from '../../kernel/activity/daemons.js';
import { access, type Guard } from '../auth.js';

type Body = { pid?: number; addr?: number; length?: number; kill?: boolean };
const body = (req: FastifyRequest): Body => (req.body ?? {}) as Body;
/** The activity acts on one process's range when the body names it all, else on the machine. */
const processOr = (needs: (b: Body) => boolean, what: string) => (req: FastifyRequest, g: Guard): void => {
  const b = body(req);
  if (needs(b)) g.process(b.pid!);
  else g.machine(what);
};

const Pid = Type.Integer({ minimum: 0 });

export function kernelRoutes(app: FastifyInstance, svc: Service): void {
  const k = svc.kernel;
  app.post(
    '/v1/kernel/reclaim',
    {
      // With pid, addr and length: MADV_PAGEOUT of that range; otherwise the machine's LRU.
      config: access(processOr((b) => b.pid !== undefined && b.addr !== undefined && b.length !== undefined, 'reclaim of the LRU')),
      schema: { response: { 200: R.Activity },
        body: Type.Object(
          { pages: Type.Optional(Type.Integer({ minimum: 1, maximum: 1 << 20 })), pid: Type.Optional(Pid), addr: Type.Optional(Address), length: Type.Optional(Length) },
          { additionalProperties: false },
        ),
      },
    },
    async (req) => {
      const b = req.body as { pages?: number; pid?: number; addr?: number; length?: number };
      if (b.pid !== undefined && b.addr !== undefined && b.length !== undefined) {
        return k.madvise(b.pid, b.addr, b.length, 'pageout');
      }
      return k.reclaim(b.pages ?? 32);
    },
  );
  app.post('/v1/kernel/compact', { config: access('machine'), schema: { response: { 200: R.Activity }, body: Type.Object({ node: Type.Optional(Type.Integer({ minimum: 0, maximum: 63 })) }, { additionalProperties: false }) } }, async (req) =>
    k.compact((req.body as { node?: number }).node ?? 0),
  );
  app.post(
    '/v1/kernel/migrate',
    { config: access('process'), schema: { response: { 200: R.Activity }, body: Type.Object({ pid: Pid, addr: Address, length: Length, node: Type.Integer({ minimum: 0, maximum: 63 }) }, { additionalProperties: false }) } },
    async (req) => {
      const b = req.body as { pid: number; addr: number; length: number; node: number };
      return k.migrate(b.pid, b.addr, b.length, b.node);
    },
  );
  app.post(
    '/v1/kernel/numa-balance',
    { config: access('process'), schema: { response: { 200: R.Activity }, body: Type.Object({ pid: Pid, bytes: Type.Optional(Type.Integer({ minimum: 4096 })) }, { additionalProperties: false }) } },
    async (req) => {
      const b = req.body as { pid: number; bytes?: number };
      return k.numaBalance(b.pid, b.bytes);
    },
  );
  app.post('/v1/kernel/ksm', { config: access('machine'), schema: { response: { 200: R.Activity }, body: Type.Optional(Type.Object({}, { additionalProperties: false })) } }, async () => k.ksm());
  app.post(
    '/v1/kernel/khugepaged',
    { config: access(processOr((b) => b.pid !== undefined && b.addr !== undefined, 'a khugepaged pass')), schema: { response: { 200: R.Activity }, body: Type.Optional(Type.Object({ pid: Type.Optional(Pid), addr: Type.Optional(Address), max: Type.Optional(Type.Integer({ minimum: 1 })) }, { additionalProperties: false })) } },
    async (req) => {
      const b = (req.body ?? {}) as { pid?: number; addr?: number; max?: number };
      if (b.pid !== undefined && b.addr !== undefined) return { result: await k.collapse(b.pid, b.addr) };
      return k.khugepaged(b.max);
    },
  );
  app.post('/v1/kernel/thp-split', { config: access('process'), schema: { response: { 200: R.Activity }, body: Type.Object({ pid: Pid, addr: Address }, { additionalProperties: false }) } }, async (req) => {
    const b = req.body as { pid: number; addr: number };
    return { split: await k.splitThp(b.pid, b.addr) };
  });
  app.post('/v1/kernel/writeback', { config: access('machine'), schema: { response: { 200: R.Activity }, body: Type.Optional(Type.Object({}, { additionalProperties: false })) } }, async () => k.writeback());
  app.post(
    '/v1/kernel/oom-reap',
    // With a pid, that process; without, the OOM killer picks a victim among all.
    { config: access(processOr((b) => b.pid !== undefined, 'the OOM killer choosing its victim')), schema: { response: { 200: R.Activity }, body: Type.Optional(Type.Object({ pid: Type.Optional(Pid), kill: Type.Optional(Type.Boolean()) }, { additionalProperties: false })) } },
    async (req) => {
      const b = (req.body ?? {}) as { pid?: number; kill?: boolean };
      if (b.kill === false && b.pid !== undefined) return k.oomReap(b.pid);
      return { killed: await k.oomKill(b.pid) };
    },
  );
  app.get('/v1/kernel/daemons', { config: access('token'), schema: { response: { 200: R.Activity } } }, async () => ({ items: k.daemons.list() }));
  app.put(
    '/v1/kernel/daemons',
    {
      config: access('machine'),
      schema: { response: { 200: R.Activity },
        body: Type.Object(
          Object.fromEntries(DAEMON_NAMES.map((n) => [n, Type.Optional(Type.Number({ minimum: 0, maximum: MAX_DAEMON_RATE }))])),
          { additionalProperties: false, description: 'runs per second for each daemon; 0 turns it off' },
        ),
      },
    },
    async (req) => {
      for (const [name, rate] of Object.entries(req.body as Record<string, number>)) k.daemons.set(name as DaemonName, rate);
      return { items: k.daemons.list() };
    },
  );
  // Machine-wide counters, as in /metrics: any token.
  app.get('/v1/kernel/stats', { config: access('token'), schema: { response: { 200: R.Activity } } }, async () => ({ stats: { ...k.stats }, memory: memorySummary(svc) }));
  // The audit's problems name pids and addresses of every process.
  app.get('/v1/kernel/audit', { config: access('machine'), schema: { response: { 200: R.Activity } } }, async () => k.audit());
}

export function memorySummary(svc: Service): Record<string, number> {
  const m = svc.kernel.mem;
  return {
    ramFrames: m.ramFrames,
    freeFrames: m.freeFrames(),
    deviceFrames: m.deviceFrames,
    freeDeviceFrames: m.freeDeviceFrames(),
    swapSlots: svc.kernel.swap.slots,
    freeSwapSlots: svc.kernel.swap.free(),
    numaNodes: m.numaNodes,
  };
}
