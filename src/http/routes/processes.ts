/** Processes and their memory: the "syscalls" of shared/spec/API.md. */
import { Buffer } from 'node:buffer';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Service } from '../../service.js';
import { ADVICES, MAX_ACCESS_BYTES, type Advice } from '../../kernel/syscalls.js';
import { Address, Empty, Length, PidParams, ProtList, decodeBase64, parseAddress, protBits, protNames } from '../schemas.js';
import type { Process } from '../../kernel/kernel.js';
import { R, list } from '../replies.js';
import { access, guardOf, type Guard } from '../auth.js';
import { DevmirrorError } from '../../errors.js';

/** Creating a process: a `*` grant, or a name the token grants (the new process is then its). */
function mayCreate(req: { body: unknown }, g: Guard): void {
  if (g.all) return;
  const name = (req.body as { name?: string } | undefined)?.name;
  if (name === undefined || !g.grant!.names.has(name)) {
    throw new DevmirrorError('DM_ERR_FORBIDDEN', 'creating a process needs a token granted * or the name of the new process');
  }
}

/** mmap: the process, and for a file mapping the whole machine (files are shared between processes). */
function mayMap(req: { body: unknown; params: unknown }, g: Guard): void {
  g.process((req.params as { pid: number }).pid);
  if ((req.body as { file?: unknown } | undefined)?.file !== undefined) g.machine('a file mapping');
}

export function processSummary(p: Process): Record<string, unknown> {
  return {
    pid: p.pid,
    name: p.name,
    parent: p.parent,
    state: p.state,
    rss: p.mm.rss,
    swapEntries: p.mm.swapEntries,
    vmas: p.mm.vmas.length,
    subscriptions: p.mm.notifier.subscriberCount,
    invalidateSeq: p.mm.notifier.invalidateSeq,
    counters: { ...p.mm.counters },
  };
}

export function processRoutes(app: FastifyInstance, svc: Service): void {
  const k = svc.kernel;
  const proc = (pid: number): Process => k.process(pid);

  app.post(
    '/v1/processes',
    { config: access(mayCreate), schema: { body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' })) }, { additionalProperties: false }), response: { 201: R.Pid } } },
    async (req, reply) => {
      const p = k.createProcess((req.body as { name?: string }).name);
      reply.status(201);
      return { pid: p.pid, name: p.name };
    },
  );
  app.get('/v1/processes', { config: access('token'), schema: { response: { 200: list(R.Process) } } }, async (req) => {
    const g = guardOf(svc, req);
    return { items: k.liveProcesses().filter((p) => g.pid(p.pid)).map(processSummary) };
  });
  app.get('/v1/processes/:pid', { config: access('process'), schema: { params: PidParams, response: { 200: R.Process } } }, async (req) => processSummary(proc((req.params as PidParams).pid)));
  app.delete('/v1/processes/:pid', { config: access('process'), schema: { params: PidParams, response: { 200: R.Ok } } }, async (req) => {
    const p = proc((req.params as PidParams).pid);
    await k.exit(p.pid);
    return { pid: p.pid, exited: true };
  });
  app.post('/v1/processes/:pid/fork', { config: access('process'), schema: { params: PidParams, response: { 201: R.Pid } } }, async (req, reply) => {
    const child = await k.fork((req.params as PidParams).pid);
    reply.status(201);
    return { pid: child.pid, name: child.name };
  });
  app.get('/v1/processes/:pid/maps', { config: access('process'), schema: { params: PidParams, response: { 200: R.Maps } } }, async (req) => {
    const p = proc((req.params as PidParams).pid);
    return {
      items: p.mm.vmas.items.map((v) => ({
        start: v.start,
        end: v.end,
        prot: protNames(v.prot),
        flags: {
          shared: v.shared,
          anonymous: v.file === null || v.file.kind === 'shmem',
          hugepage: v.huge === 'hugepage',
          nohugepage: v.huge === 'nohugepage',
          mergeable: v.mergeable,
          softDirty: v.softDirty,
          dontFork: v.dontFork,
        },
        file: v.file && v.file.kind === 'file' ? { id: v.file.id, offset: v.pgoff * 4096 } : null,
        name: v.name,
      })),
    };
  });
  app.get(
    '/v1/processes/:pid/pagemap',
    { config: access('process'), schema: { params: PidParams, querystring: Type.Object({ addr: Type.String(), pages: Type.Optional(Type.String()) }), response: { 200: R.Pagemap } } },
    async (req) => {
      const q = req.query as { addr: string; pages?: string };
      const addr = parseAddress('addr', q.addr);
      const pages = parseAddress('pages', q.pages, 1);
      // More than MAX_PAGEMAP_PAGES is the kernel's DM_ERR_TOO_LARGE (it was an empty list).
      return { items: k.pagemap((req.params as PidParams).pid, addr, pages) };
    },
  );
  app.post(
    '/v1/processes/:pid/mmap',
    {
      config: access(mayMap),
      schema: {
        params: PidParams,
        body: Type.Object(
          {
            addr: Type.Optional(Address),
            length: Length,
            prot: ProtList,
            shared: Type.Optional(Type.Boolean()),
            fixed: Type.Optional(Type.Boolean()),
            populate: Type.Optional(Type.Boolean()),
            hugepage: Type.Optional(Type.Boolean()),
            file: Type.Optional(Type.Object({ id: Type.Integer({ minimum: 0 }), offset: Type.Optional(Length) }, { additionalProperties: false })),
            name: Type.Optional(Type.String({ maxLength: 64 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: R.Addr },
      },
    },
    async (req) => {
      const b = req.body as { addr?: number; length: number; prot: ('read' | 'write' | 'exec')[]; shared?: boolean; fixed?: boolean; populate?: boolean; hugepage?: boolean; file?: { id: number; offset?: number }; name?: string };
      const addr = await k.mmap((req.params as PidParams).pid, { ...b, prot: protBits(b.prot) });
      return { addr };
    },
  );
  const AddrLen = Type.Object({ addr: Address, length: Length }, { additionalProperties: false });
  app.post('/v1/processes/:pid/munmap', { config: access('process'), schema: { params: PidParams, body: AddrLen, response: { 200: R.Ok } } }, async (req) => {
    const b = req.body as { addr: number; length: number };
    await k.munmap((req.params as PidParams).pid, b.addr, b.length);
    return {};
  });
  app.post(
    '/v1/processes/:pid/mremap',
    {
      config: access('process'),
      schema: {
        params: PidParams,
        body: Type.Object(
          {
            addr: Address,
            length: Length,
            newLength: Length,
            maymove: Type.Optional(Type.Boolean()),
            fixed: Type.Optional(Type.Boolean()),
            dontunmap: Type.Optional(Type.Boolean()),
            newAddr: Type.Optional(Address),
          },
          { additionalProperties: false },
        ),
        response: { 200: R.Addr },
      },
    },
    async (req) => ({ addr: await k.mremap((req.params as PidParams).pid, req.body as never) }),
  );
  app.post(
    '/v1/processes/:pid/mprotect',
    { config: access('process'), schema: { params: PidParams, body: Type.Object({ addr: Address, length: Length, prot: ProtList }, { additionalProperties: false }), response: { 200: R.Ok } } },
    async (req) => {
      const b = req.body as { addr: number; length: number; prot: ('read' | 'write' | 'exec')[] };
      await k.mprotect((req.params as PidParams).pid, b.addr, b.length, protBits(b.prot));
      return {};
    },
  );
  app.post(
    '/v1/processes/:pid/madvise',
    {
      config: access('process'),
      schema: {
        params: PidParams,
        body: Type.Object(
          { addr: Address, length: Length, advice: Type.Union(ADVICES.map((a) => Type.Literal(a))) },
          { additionalProperties: false },
        ),
        response: { 200: R.Activity },
      },
    },
    async (req) => {
      const b = req.body as { addr: number; length: number; advice: Advice };
      return k.madvise((req.params as PidParams).pid, b.addr, b.length, b.advice);
    },
  );
  app.post(
    '/v1/processes/:pid/clear_refs',
    { config: access('process'), schema: { params: PidParams, body: Type.Object({ mode: Type.Union([Type.Literal('soft-dirty'), Type.Literal('referenced')]) }, { additionalProperties: false }), response: { 200: R.Ok } } },
    async (req) => {
      await k.clearRefs((req.params as PidParams).pid, (req.body as { mode: 'soft-dirty' | 'referenced' }).mode);
      return {};
    },
  );
  app.post('/v1/processes/:pid/brk', { config: access('process'), schema: { params: PidParams, body: Type.Object({ addr: Address }, { additionalProperties: false }), response: { 200: R.Addr } } }, async (req) => ({
    addr: await k.brk((req.params as PidParams).pid, (req.body as { addr: number }).addr),
  }));
  app.post('/v1/processes/:pid/msync', { config: access('process'), schema: { params: PidParams, body: AddrLen, response: { 200: R.Activity } } }, async (req) => {
    const b = req.body as { addr: number; length: number };
    return k.msync((req.params as PidParams).pid, b.addr, b.length);
  });
  app.post(
    '/v1/processes/:pid/memory/read',
    { config: access('process'), schema: { params: PidParams, body: Type.Object({ addr: Address, length: Type.Integer({ minimum: 0, maximum: MAX_ACCESS_BYTES }) }, { additionalProperties: false }), response: { 200: R.Data } } },
    async (req) => {
      const b = req.body as { addr: number; length: number };
      const data = await k.read((req.params as PidParams).pid, b.addr, b.length);
      return { data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
    },
  );
  app.post(
    '/v1/processes/:pid/memory/write',
    { config: access('process'), schema: { params: PidParams, body: Type.Object({ addr: Address, data: Type.String({ maxLength: Math.ceil(MAX_ACCESS_BYTES / 3) * 4 }) }, { additionalProperties: false }), response: { 200: R.Written } } },
    async (req) => {
      const b = req.body as { addr: number; data: string };
      const bytes = decodeBase64('data', b.data);
      await k.write((req.params as PidParams).pid, b.addr, bytes);
      return { written: bytes.length };
    },
  );
  app.post('/v1/files', { config: access('machine'), schema: { body: Type.Object({ size: Type.Integer({ minimum: 0, maximum: 1 << 30 }) }, { additionalProperties: false }), response: { 201: R.File } } }, async (req, reply) => {
    const f = k.createFile((req.body as { size: number }).size);
    reply.status(201);
    return { id: f.id, size: f.size };
  });
  void Empty;
}
