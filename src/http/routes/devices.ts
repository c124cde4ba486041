/**
 * Devices (shared/spec/API.md "Devices"): worker devices the kernel spawns, and external clients of
 * the notifier channel, listed together (`transport`). Commands go to the device's personality
 * over its transport; errno refusals come back as 422 with the command's partial results.
 */
import { Buffer } from 'node:buffer';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { FastifyInstance } from 'fastify';
import type { Service } from '../../service.js';
import { DevmirrorError } from '../../errors.js';
import { DEVICE_KINDS, EVENT_POLICIES, MAX_GRANULARITY_PAGES, type DeviceKind, type EventPolicy, type FaultInjection } from '../../devices/protocol.js';
import type { WorkerDevice } from '../../devices/worker-device.js';
import type { ExternalDevice } from '../../channel/external-device.js';
import { CLOSE } from '../../channel/close-codes.js';
import { PAGE_SIZE } from '../../kernel/layout.js';
import { Address, decodeBase64, parseAddress } from '../schemas.js';
import { R, list } from '../replies.js';
import { access, guardOf, type Guard } from '../auth.js';

const IdParams = Type.Object({ id: Type.Integer({ minimum: 0 }) });
type IdParams = Static<typeof IdParams>;

/**
 * The personalities' options (typed here: the worker reads them as they come, and a wrong type
 * made it exit while starting, a 500). Other properties pass through untouched (test hooks).
 */
const Bytes = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
const DmaOptions = Type.Object(
  {
    rate: Type.Optional(Type.Number({ minimum: 0, maximum: 1_000_000 })),
    pattern: Type.Optional(Type.Union([Type.Literal('sequential'), Type.Literal('random'), Type.Literal('hotset')])),
    writeMix: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    start: Type.Optional(Address),
    end: Type.Optional(Address),
    pages: Type.Optional(Type.Array(Address, { maxItems: 4096, description: 'only these pages of the window (addresses, rounded down to the page); [] lifts the restriction' })),
    transferUs: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })),
    bytes: Type.Optional(Type.Integer({ minimum: 1, maximum: PAGE_SIZE })),
  },
  { additionalProperties: true },
);
const DeviceOptions = Type.Object(
  {
    xnack: Type.Optional(Type.Boolean()),
    granularityPages: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_GRANULARITY_PAGES })),
    mrs: Type.Optional(
      Type.Array(Type.Object({ addr: Address, length: Bytes, write: Type.Optional(Type.Boolean()) }, { additionalProperties: false }), { maxItems: 256 }),
    ),
    implicit: Type.Optional(Type.Boolean()),
    write: Type.Optional(Type.Boolean()),
    memslots: Type.Optional(
      Type.Array(
        Type.Object(
          { id: Type.Integer({ minimum: 0, maximum: 0x7fff_ffff }), baseGfn: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }), npages: Type.Integer({ minimum: 0, maximum: 2 ** 35 }), hva: Address },
          { additionalProperties: false },
        ),
        { maxItems: 256 },
      ),
    ),
    dma: Type.Optional(DmaOptions),
  },
  { additionalProperties: true, description: 'per kind: gpu { xnack, granularityPages }, rdma { mrs, implicit }, kvm { memslots }; any kind { dma }' },
);

const CreateBody = Type.Object(
  {
    kind: Type.Union(DEVICE_KINDS.map((k) => Type.Literal(k))),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' })),
    pid: Type.Optional(Type.Integer({ minimum: 0 })),
    process: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    policy: Type.Optional(Type.Union(EVENT_POLICIES.map((p) => Type.Literal(p)))),
    options: Type.Optional(DeviceOptions),
    deadlineMs: Type.Optional(Type.Integer({ minimum: 10, maximum: 600_000 })),
  },
  { additionalProperties: false },
);

const BUG = Type.String({ pattern: '^(ack-before-quiesce|skip-seq-retry|lock-across-fault|ignore-event:(UNMAP|CLEAR|PROTECTION_VMA|PROTECTION_PAGE|SOFT_DIRTY|RELEASE|MIGRATE|EXCLUSIVE))$' });
const FaultsBody = Type.Object(
  {
    ackDelayUs: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000_000 })),
    hang: Type.Optional(Type.Boolean()),
    crash: Type.Optional(Type.Boolean()),
    refuseNonblock: Type.Optional(Type.Boolean()),
    disconnect: Type.Optional(Type.Boolean()),
    bug: Type.Optional(Type.Union([BUG, Type.Null()])),
  },
  { additionalProperties: false },
);

const DmaBody = Type.Object(
  {
    addr: Address,
    length: Type.Integer({ minimum: 1, maximum: 64 * 1024 * 1024 }),
    write: Type.Optional(Type.Boolean()),
    holdUs: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000, description: 'each access holds its translation this long before its data moves (in flight)' })),
  },
  { additionalProperties: false },
);

const DmirrorBody = Type.Object(
  { addr: Address, npages: Type.Integer({ minimum: 0, maximum: 16384 }), data: Type.Optional(Type.String({ description: 'base64' })) },
  { additionalProperties: false },
);
const DMIRROR_COMMANDS = ['read', 'write', 'migrate-to-device', 'migrate-to-system', 'snapshot', 'exclusive', 'check-exclusive', 'release'] as const;

type AnyDevice = { transport: 'worker'; dev: WorkerDevice } | { transport: 'external'; dev: ExternalDevice };

/** Every device of both transports the guard covers, summarised (the list route and the dashboard stream). */
export function deviceSummaries(svc: Service, g?: Guard): Array<Record<string, unknown>> {
  const all = [...svc.devices.list().map((dev) => summary({ transport: 'worker', dev })), ...svc.channel.list().map((dev) => summary({ transport: 'external', dev }))];
  return g && !g.all ? all.filter((d) => g.deviceVisible(d.id as number)) : all;
}

function summary(d: AnyDevice): Record<string, unknown> {
  if (d.transport === 'worker') {
    const w = d.dev;
    return {
      id: w.id,
      name: w.name,
      kind: w.kind,
      transport: 'worker',
      pid: w.pid,
      policy: w.policy,
      state: w.state,
      stateReason: w.stateReason || undefined,
      counters: w.counters,
      mirror: w.mirror,
      handshake: w.handshake,
      sanitizer: { checked: w.sanitizer?.checked ?? 0, findings: w.sanitizer?.findings ?? 0 },
    };
  }
  const e = d.dev;
  return {
    id: e.id,
    name: e.name,
    kind: e.kind,
    transport: 'external',
    pids: [...new Set([...e.subs.values()].map((s) => s.pid))],
    state: e.state,
    stateReason: e.stateReason || undefined,
    counters: e.counters,
    mirror: { ...e.mirror, shadow: e.sanitizer.shadow() },
    handshake: e.handshake,
    sanitizer: { checked: e.sanitizer.stats.checked, findings: e.sanitizer.stats.findings },
  };
}

/** Encodes Uint8Array values of a command reply as base64. */
function jsonable(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
  if (Array.isArray(v)) return v.map(jsonable);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonable(x)]));
  return v;
}

export function deviceRoutes(app: FastifyInstance, svc: Service): void {
  const find = (id: number): AnyDevice => {
    const w = svc.devices.devices.get(id);
    if (w) return { transport: 'worker', dev: w };
    const e = svc.channel.devices.get(id);
    if (e) return { transport: 'external', dev: e };
    throw new DevmirrorError('DM_ERR_NO_SUCH_DEVICE', `no device ${id}`);
  };
  const command = <T>(d: AnyDevice, name: string, args: Record<string, unknown>): Promise<T> => d.dev.command<T>(name, args, 60_000);
  /** A command's value, checked against the reply schema: an external device may answer anything,
   * and a value of the wrong shape made the reply serializer throw (a 500). */
  const checked = <T>(d: AnyDevice, name: string, schema: TSchema, v: unknown): T => {
    if (!Value.Check(schema, v)) throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `device ${d.dev.id} answered ${name} with a value of the wrong shape`);
    return v as T;
  };

  app.get('/v1/devices', { config: access('token'), schema: { response: { 200: list(R.Device) } } }, async (req) => ({ items: deviceSummaries(svc, guardOf(svc, req)) }));

  app.post('/v1/devices', { config: access('process'), schema: { body: CreateBody, response: { 201: R.Created } } }, async (req, reply) => {
    const b = req.body as Static<typeof CreateBody>;
    if (b.pid === undefined && b.process === undefined) throw new DevmirrorError('DM_ERR_VALIDATION', 'pid or process is required');
    const { dma, ...options } = (b.options ?? {}) as Record<string, unknown> & { dma?: Record<string, unknown> };
    const dev = await svc.devices.create({
      kind: b.kind as DeviceKind,
      name: b.name,
      pid: b.pid,
      process: b.process,
      policy: b.policy as EventPolicy | undefined,
      options,
      deadlineMs: b.deadlineMs,
    });
    if (dma && typeof dma === 'object') await dev.command('dma', dma, 10_000);
    reply.status(201);
    return { id: dev.id, name: dev.name };
  });

  app.get('/v1/devices/:id', { config: access('device'), schema: { params: IdParams, response: { 200: R.Device } } }, async (req) => {
    const d = find((req.params as IdParams).id);
    if (d.transport === 'worker') {
      if (d.dev.alive) await d.dev.refresh().catch(() => undefined);
      return { ...summary(d), sanitizer: { checked: d.dev.sanitizer?.checked ?? 0, findings: d.dev.findings.slice(-100) } };
    }
    return { ...summary(d), sanitizer: { checked: d.dev.sanitizer.stats.checked, findings: d.dev.findings.slice(-100) } };
  });

  app.delete('/v1/devices/:id', { config: access('device'), schema: { params: IdParams, response: { 200: R.Ok } } }, async (req) => {
    const d = find((req.params as IdParams).id);
    if (d.transport === 'worker') await svc.devices.remove(d.dev.id);
    else {
      const s = [...svc.channel.sessions].find((x) => x.device === d.dev);
      s?.close(CLOSE.NORMAL, 'removed by the control plane');
      await d.dev.gone('closed', 'removed by the control plane');
    }
    return { id: d.dev.id, state: d.dev.state };
  });

  app.post('/v1/devices/:id/faults', { config: access('device'), schema: { params: IdParams, body: FaultsBody, response: { 200: R.Ok } } }, async (req) => {
    const d = find((req.params as IdParams).id);
    const f = req.body as FaultInjection;
    if (!d.dev.alive) throw new DevmirrorError('DM_ERR_CONFLICT', `device ${d.dev.id} is ${d.dev.state}`);
    if (d.transport === 'worker') {
      if (f.disconnect) throw new DevmirrorError('DM_ERR_VALIDATION', 'disconnect applies to external clients only');
      if (f.bug !== undefined) await d.dev.command('bug', { bug: f.bug }, 10_000);
      const { bug: _bug, ...rest } = f;
      if (Object.keys(rest).length) await d.dev.inject(rest);
    } else {
      if (f.disconnect) {
        [...svc.channel.sessions].find((x) => x.device === d.dev)?.close(CLOSE.NORMAL, 'disconnected by fault injection');
      } else {
        if (f.bug !== undefined) await d.dev.command('bug', { bug: f.bug });
        const { bug: _bug, ...rest } = f;
        if (Object.keys(rest).length) await d.dev.command('inject', rest as Record<string, unknown>);
      }
    }
    return { id: d.dev.id, faults: f };
  });

  app.post('/v1/devices/:id/dma', { config: access('device'), schema: { params: IdParams, body: DmaBody, response: { 200: R.Sweep } } }, async (req) => {
    const d = find((req.params as IdParams).id);
    const b = req.body as Static<typeof DmaBody>;
    const first = b.addr - (b.addr % PAGE_SIZE);
    const npages = Math.ceil((b.addr + b.length - first) / PAGE_SIZE);
    return checked<{ ok: number; failed: number; faults: number }>(d, 'dma-sweep', R.Sweep, await command(d, 'dma-sweep', { addr: first, npages, write: b.write ?? false, ...(b.holdUs !== undefined ? { holdUs: b.holdUs } : {}) }));
  });

  app.get(
    '/v1/devices/:id/mirror',
    { config: access('device'), schema: { params: IdParams, querystring: Type.Object({ addr: Type.String(), pages: Type.Optional(Type.Integer({ minimum: 1, maximum: 4096 })) }), response: { 200: R.Mirror } } },
    async (req) => {
      const d = find((req.params as IdParams).id);
      const q = req.query as { addr: string; pages?: number };
      const addr = parseAddress('addr', q.addr);
      if (addr % PAGE_SIZE) throw new DevmirrorError('DM_ERR_VALIDATION', 'addr must be page aligned');
      if (!d.dev.alive) throw new DevmirrorError('DM_ERR_CONFLICT', `device ${d.dev.id} is ${d.dev.state}`);
      const pfns = checked<number[]>(d, 'mirror-map', R.Mirror.properties.pfns, await command(d, 'mirror-map', { addr, npages: q.pages ?? 64 }));
      return { id: d.dev.id, addr, pfns };
    },
  );

  for (const name of DMIRROR_COMMANDS) {
    app.post(`/v1/devices/:id/dmirror/${name}`, { config: access('device'), schema: { params: IdParams, body: DmirrorBody, response: { 200: R.Dmirror } } }, async (req) => {
      const d = find((req.params as IdParams).id);
      if (d.dev.kind !== 'dmirror') throw new DevmirrorError('DM_ERR_CONFLICT', `device ${d.dev.id} is a ${d.dev.kind}, not a dmirror`);
      const b = req.body as Static<typeof DmirrorBody>;
      const data = b.data !== undefined ? decodeBase64('data', b.data) : undefined;
      if (name === 'write' && data && data.length !== b.npages * PAGE_SIZE) {
        throw new DevmirrorError('DM_ERR_VALIDATION', `data must hold npages * ${PAGE_SIZE} bytes`);
      }
      return checked(d, name, R.Dmirror, jsonable(await command(d, name, { addr: b.addr, npages: b.npages, ...(data ? { data } : {}) })));
    });
  }
}
