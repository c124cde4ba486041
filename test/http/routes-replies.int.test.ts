/**
 * Every route of the control plane answers with its documented reply shape (the reply schemas
 * serialise it: a schema that dropped or coerced data would show here), and every error is
 * `{ code, message }` with a 4xx status.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { MmuNotifier } from '../../src/notifier/subscriptions.js';

const PAGE = 4096;
let svc: Service;
let app: FastifyInstance;
let pid = 0;
let addr = 0;
beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024 } });
  app = await buildServer(svc, { logger: false });
  pid = (await app.inject({ method: 'POST', url: '/v1/processes', payload: { name: 'r' } })).json().pid;
  addr = (await app.inject({ method: 'POST', url: `/v1/processes/${pid}/mmap`, payload: { length: 64 * PAGE, prot: ['read', 'write'], populate: true } })).json().addr;
});
afterAll(async () => {
  await svc.stop();
  await app.close();
});

const post = async (url: string, payload?: object) => {
  const r = await app.inject({ method: 'POST', url, payload });
  return { status: r.statusCode, body: r.json() };
};

describe('reply shapes', () => {
  it('kernel activities report what they did', async () => {
    const runs: Array<[string, object | undefined]> = [
      ['/v1/kernel/reclaim', { pages: 8 }],
      ['/v1/kernel/compact', {}],
      ['/v1/kernel/migrate', { pid, addr, length: 4 * PAGE, node: 1 }],
      ['/v1/kernel/numa-balance', { pid }],
      ['/v1/kernel/ksm', {}],
      ['/v1/kernel/khugepaged', {}],
      ['/v1/kernel/writeback', {}],
    ];
    for (const [url, body] of runs) {
      const r = await post(url, body);
      expect(r.status, url).toBe(200);
      expect(typeof r.body, url).toBe('object');
      expect(Object.keys(r.body).length, `${url} reported nothing: ${JSON.stringify(r.body)}`).toBeGreaterThan(0);
    }
  });

  it('syscalls and reads keep every documented field', async () => {
    const pm = (await app.inject({ method: 'GET', url: `/v1/processes/${pid}/pagemap?addr=${addr}&pages=2` })).json();
    expect(Object.keys(pm.items[0]).sort()).toEqual(
      ['addr', 'devicePrivate', 'dirty', 'exclusive', 'huge', 'kind', 'migration', 'node', 'pfn', 'present', 'protnone', 'softDirty', 'swapSlot', 'swapped', 'write', 'young', 'zeroPage'].sort(),
    );
    // A subscriber, so that the kernel sends (and records) the invalidation.
    svc.kernel.process(pid).mm.notifier.register(new MmuNotifier({}, { label: 'test' }));
    const madv = await post(`/v1/processes/${pid}/madvise`, { addr, length: PAGE, advice: 'dontneed' });
    expect(madv.status).toBe(200);
    const ev = (await app.inject({ method: 'GET', url: '/v1/events?limit=5' })).json();
    expect(ev.items.at(-1)).toMatchObject({ pid, event: 'CLEAR', origin: 'madvise', blockable: true, owner: null });
    const stats = (await app.inject({ method: 'GET', url: '/v1/kernel/stats' })).json();
    expect(stats.stats.faults).toBeGreaterThan(0);
    const nf = (await app.inject({ method: 'GET', url: '/v1/notifier' })).json();
    expect(nf.items[0]).toHaveProperty('subscriptions');
  });

  it('errors are { code, message } with a 4xx status everywhere', async () => {
    const bad = [
      await app.inject({ method: 'POST', url: `/v1/processes/${pid}/mmap`, payload: { length: 'x' } }),
      await app.inject({ method: 'POST', url: '/v1/kernel/migrate', payload: { pid } }),
      await app.inject({ method: 'GET', url: '/v1/devices/999' }),
      await app.inject({ method: 'POST', url: '/v1/devices/999/dmirror/read', payload: { addr: 0, npages: 1 } }),
      await app.inject({ method: 'GET', url: '/v1/nope' }),
      await app.inject({ method: 'POST', url: `/v1/processes/${pid}/munmap`, payload: { addr: addr + 1, length: PAGE } }),
    ];
    for (const r of bad) {
      expect(r.statusCode).toBeGreaterThanOrEqual(400);
      expect(r.statusCode).toBeLessThan(500);
      expect(Object.keys(r.json())).toEqual(expect.arrayContaining(['code', 'message']));
    }
  });
});
