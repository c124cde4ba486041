/**
 * GET /v1/trace end to end: a service on an ephemeral port, a process mirrored by two worker
 * devices (gpu with its DMA engine running, dmirror), syscalls, device faults, reclaim and
 * khugepaged; the downloaded trace is checked against docs/trace.schema.json and for its tracks,
 * nesting and contents.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import type { ChromeEvent, ChromeTrace } from '../../src/trace/chrome-export.js';
import { schemaErrors, structureErrors, threadNames } from './check-trace.js';
import { eventually } from '../helpers/eventually.js';
import { traceMain } from '../../src/trace/cli.js';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PAGE = 4096;
const MiB = 1024 * 1024;
let svc: Service;
let app: FastifyInstance;
let base = '';

async function call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(base + path, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const j = (await r.json()) as T;
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 64 * MiB, deviceMemoryBytes: 8 * MiB }, deadlineMs: 60_000, traceEvents: 50_000 });
  app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  await svc.start();
  const a = app.server.address();
  base = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
});
afterAll(async () => {
  await svc?.stop();
  await app?.close();
});

describe('GET /v1/trace', () => {
  let trace: ChromeTrace;
  let pid = 0;
  let addr = 0;
  let since = 0;

  it('records a run with syscalls, device faults and DMA, reclaim and khugepaged, and serves it as a download', async () => {
    ({ pid } = await call<{ pid: number }>('POST', '/v1/processes', { name: 'app' }));
    // Small pages first (not THP-eligible yet); a mapping of whole 2 MiB is 2 MiB aligned.
    ({ addr } = await call<{ addr: number }>('POST', `/v1/processes/${pid}/mmap`, { length: 4 * MiB, prot: ['read', 'write'] }));
    expect(addr % (2 * MiB)).toBe(0);
    await call('POST', `/v1/processes/${pid}/memory/write`, { addr, data: Buffer.alloc(64 * PAGE, 7).toString('base64') });
    const gpu = await call<{ id: number }>('POST', '/v1/devices', { kind: 'gpu', pid, name: 'gpu0', options: { xnack: true, dma: { rate: 500, start: addr, end: addr + 64 * PAGE } } });
    const dm = await call<{ id: number }>('POST', '/v1/devices', { kind: 'dmirror', pid, name: 'dm0' });
    await call('POST', `/v1/devices/${gpu.id}/dma`, { addr, length: 32 * PAGE, write: true });
    await call('POST', `/v1/devices/${dm.id}/dmirror/read`, { addr, npages: 16 });
    await call('POST', `/v1/processes/${pid}/mprotect`, { addr, length: 8 * PAGE, prot: ['read'] });
    await call('POST', `/v1/processes/${pid}/munmap`, { addr: addr + 60 * PAGE, length: 2 * PAGE });
    await call('POST', '/v1/kernel/reclaim', { pages: 64 });
    // Reclaim of one range (MADV_PAGEOUT, a madvise on the process track).
    await call('POST', '/v1/kernel/reclaim', { pid, addr: addr + 16 * PAGE, length: 8 * PAGE });
    // khugepaged collapses the second 2 MiB once it is populated and THP-eligible again.
    await call('POST', `/v1/processes/${pid}/memory/write`, { addr: addr + 2 * MiB, data: Buffer.alloc(2 * MiB, 9).toString('base64') });
    await call('POST', `/v1/processes/${pid}/madvise`, { addr: addr + 2 * MiB, length: 2 * MiB, advice: 'hugepage' });
    await call('POST', '/v1/kernel/khugepaged', { pid, addr: addr + 2 * MiB });
    // The gpu's DMA engine reports its totals every 200 ms: wait for a sample with bytes moved.
    await eventually(() => expect(svc.trace!.query({ filter: (e) => e.kind === 'counter' && e.values.bytes > 0 }).entries.length).toBeGreaterThan(0), 10_000);

    const r = await fetch(`${base}/v1/trace`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.headers.get('content-disposition')).toBe(`attachment; filename="devmirror-trace-${svc.bootId}.json"`);
    trace = (await r.json()) as ChromeTrace;
    expect(schemaErrors(trace)).toEqual([]);
    expect(structureErrors(trace)).toEqual([]);
    expect(trace.metadata).toMatchObject({ exporter: 'devmirror', bootId: svc.bootId, dropped: 0 });
    since = trace.metadata.nextSince as number;
  });

  it('has one track per device, per kernel activity used and per process', () => {
    const names = [...threadNames(trace).keys()].filter((n) => !/ #\d+$/.test(n));
    expect(names).toEqual(expect.arrayContaining(['notifier (invalidations)', 'reclaim', 'khugepaged', 'gpu0 (worker)', 'dm0 (worker)', `pid ${pid} app`]));
    const t = threadNames(trace);
    expect([t.get('reclaim')!.pid, t.get('gpu0 (worker)')!.pid, t.get(`pid ${pid} app`)!.pid]).toEqual([1, 2, 3]);
  });

  const on = (track: string, ph = 'X'): ChromeEvent[] => {
    const names = threadNames(trace);
    const tids = new Set([...names].filter(([n]) => n === track || n.startsWith(`${track} #`)).map(([, v]) => v.tid));
    return trace.traceEvents.filter((e) => e.ph === ph && tids.has(e.tid));
  };

  it('shows each invalidation on the kernel track and, start to acknowledgement, on every subscriber device inside it', () => {
    const kernel = on('notifier (invalidations)').filter((e) => e.name !== 'wait for acks');
    const byId = new Map(kernel.map((e) => [e.args!.id as number, e]));
    const origins = new Set(kernel.map((e) => e.args!.origin));
    for (const o of ['mprotect', 'munmap', 'khugepaged']) expect(origins, o).toContain(o);
    let checked = 0;
    for (const dev of ['gpu0 (worker)', 'dm0 (worker)']) {
      const spans = on(dev).filter((e) => e.cat === 'invalidation');
      expect(spans.length, dev).toBeGreaterThan(0);
      for (const s of spans) {
        const k = byId.get(s.args!.id as number)!;
        expect(k, `kernel span of ${s.args!.id}`).toBeDefined();
        expect(s.args).toMatchObject({ pid, event: k.args!.event, origin: k.args!.origin, start: k.args!.start, end: k.args!.end, blockable: true });
        expect(s.ts! >= k.ts! && s.ts! + s.dur! <= k.ts! + k.dur! + 1e-6, `ack of ${s.args!.id} within start..end`).toBe(true);
        checked++;
      }
      expect(on(dev, 'i').some((e) => e.name.startsWith('end '))).toBe(true);
    }
    expect(checked).toBeGreaterThan(4);
    // A flow from the kernel span to each device span.
    const devTids = new Set([...on('gpu0 (worker)'), ...on('dm0 (worker)')].map((e) => e.tid));
    expect(trace.traceEvents.filter((e) => e.ph === 'f' && devTids.has(e.tid)).length).toBe(checked);
  });

  it('has the syscalls on the process track around their invalidations, the activities on theirs, and the device requests and DMA', () => {
    const sys = on(`pid ${pid} app`);
    expect(new Set(sys.map((e) => e.name))).toEqual(new Set(['mmap', 'madvise', 'cpu write', 'mprotect', 'munmap']));
    const munmap = sys.find((e) => e.name === 'munmap')!;
    expect(munmap.args).toMatchObject({ addr: '0x' + (addr + 60 * PAGE).toString(16), length: 2 * PAGE });
    const unmapInv = on('notifier (invalidations)').find((e) => e.args?.origin === 'munmap')!;
    expect(unmapInv.ts! >= munmap.ts! && unmapInv.ts! + unmapInv.dur! <= munmap.ts! + munmap.dur! + 1e-6).toBe(true);
    expect(on('reclaim').find((e) => e.name === 'shrink')!.args).toMatchObject({ by: 'request', pages: 64 });
    expect(on('khugepaged').find((e) => e.name === 'collapse')).toBeDefined();
    const faults = [...on('gpu0 (worker)'), ...on('dm0 (worker)')].filter((e) => e.name.startsWith('hmm_range_fault'));
    expect(faults.length).toBeGreaterThan(0);
    expect(faults[0].args).toMatchObject({ start: expect.stringMatching(/^0x/), result: expect.any(Number) });
    const dma = trace.traceEvents.filter((e) => e.ph === 'C' && e.name === 'gpu0 (worker) dma');
    expect(dma.some((e) => (e.args!.bytes as number) > 0)).toBe(true);
  });

  it('pages with since, filters by pid and limits', async () => {
    await call('POST', `/v1/processes/${pid}/mprotect`, { addr, length: PAGE, prot: ['read', 'write'] });
    const next = await call<ChromeTrace>('GET', `/v1/trace?since=${since}`);
    expect(schemaErrors(next)).toEqual([]);
    const spans = next.traceEvents.filter((e) => e.ph === 'X');
    expect(spans.some((e) => e.name === 'mprotect')).toBe(true);
    expect(spans.some((e) => e.name === 'munmap')).toBe(false);
    const other = await call<{ pid: number }>('POST', '/v1/processes', { name: 'other' });
    await call('POST', `/v1/processes/${other.pid}/mmap`, { length: PAGE, prot: [] });
    const mine = await call<ChromeTrace>('GET', `/v1/trace?pid=${pid}`);
    expect([...threadNames(mine).keys()]).not.toContain(`pid ${other.pid} other`);
    const one = await call<ChromeTrace>('GET', '/v1/trace?limit=1');
    expect(one.metadata.entries).toBe(1);
    const bad = await fetch(`${base}/v1/trace?limit=abc`);
    expect([bad.status, ((await bad.json()) as { code: string }).code]).toEqual([400, 'DM_ERR_BAD_ADDRESS']);
  });

  it('devmirror trace downloads it into a file', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'dm-trace-')), 't.json');
    let said = '';
    expect(await traceMain(['--url', base, '--out', file, '--pid', String(pid)], (s) => (said += s))).toBe(file);
    expect(said).toMatch(/written to .*t\.json; open it in https:\/\/ui\.perfetto\.dev/);
    const t = JSON.parse(readFileSync(file, 'utf8')) as ChromeTrace;
    expect(schemaErrors(t)).toEqual([]);
    await expect(traceMain(['--url', base, '--limit', 'x'], () => undefined)).rejects.toMatchObject({ code: 'DM_ERR_VALIDATION' });
  });
});
