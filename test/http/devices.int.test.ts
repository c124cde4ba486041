/**
 * The device routes of shared/spec/API.md, through fastify's inject: create, list, inspect, fault
 * injection, DMA and the dmirror commands, with bad input for each.
 */
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';

const PAGE = 4096;
let svc: Service;
let app: FastifyInstance;
beforeEach(async () => {
  svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 }, deadlineMs: 60_000 });
  app = await buildServer(svc, { logger: false });
});
afterEach(async () => {
  await svc.stop();
  await app.close();
});

async function call(method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) {
  const r = await app.inject({ method, url, payload: payload as object });
  return { status: r.statusCode, body: r.headers['content-type']?.includes('json') ? r.json() : r.body };
}

async function demo() {
  const { body: p } = await call('POST', '/v1/processes', { name: 'demo' });
  const { body: m } = await call('POST', `/v1/processes/${p.pid}/mmap`, { length: 16 * PAGE, prot: ['read', 'write'] });
  await call('POST', `/v1/processes/${p.pid}/memory/write`, { addr: m.addr, data: Buffer.alloc(16 * PAGE, 0x33).toString('base64') });
  return { pid: p.pid as number, addr: m.addr as number };
}

describe('device routes', () => {
  it('creates a dmirror by process name, runs test_hmm commands, and reports sanitizer figures', async () => {
    const { addr } = await demo();
    const c = await call('POST', '/v1/devices', { kind: 'dmirror', process: 'demo', name: 'dm0' });
    expect(c.status).toBe(201);
    const id = c.body.id;
    const r = await call('POST', `/v1/devices/${id}/dmirror/read`, { addr, npages: 4 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ cpages: 4, faults: 1 });
    expect(Buffer.from(r.body.data, 'base64').every((b: number) => b === 0x33)).toBe(true);
    const snap = await call('POST', `/v1/devices/${id}/dmirror/snapshot`, { addr, npages: 2 });
    expect([...Buffer.from(snap.body.data, 'base64')]).toEqual([2, 2]); // WRITE
    const bad = await call('POST', `/v1/devices/${id}/dmirror/read`, { addr: addr + 1, npages: 1 });
    expect(bad.status).toBe(422);
    expect(bad.body.code).toBe('EINVAL');
    const list = await call('GET', '/v1/devices');
    expect(list.body.items).toEqual([expect.objectContaining({ id, name: 'dm0', kind: 'dmirror', transport: 'worker', state: 'running' })]);
    const one = await call('GET', `/v1/devices/${id}`);
    expect(one.body.sanitizer.checked).toBe(4);
    expect(one.body.sanitizer.findings).toEqual([]);
    expect(one.body.mirror.pages).toBeGreaterThanOrEqual(4);
    const del = await call('DELETE', `/v1/devices/${id}`);
    expect(del.body.state).toBe('stopped');
    expect((await call('GET', `/v1/devices/${id}`)).status).toBe(404);
  });

  it('device DMA faults in through the mirror; fault injection sets a bug mode', async () => {
    const { pid, addr } = await demo();
    const { body } = await call('POST', '/v1/devices', { kind: 'gpu', pid, policy: 'aware' });
    const d = await call('POST', `/v1/devices/${body.id}/dma`, { addr: addr + 10, length: 2 * PAGE, write: true });
    expect(d.body).toEqual({ ok: 3, failed: 0, faults: 1 });
    const f = await call('POST', `/v1/devices/${body.id}/faults`, { bug: 'skip-seq-retry', ackDelayUs: 10 });
    expect(f.status).toBe(200);
    expect((await call('POST', `/v1/devices/${body.id}/faults`, { bug: 'ignore-event:NOPE' })).status).toBe(400);
    expect((await call('POST', `/v1/devices/${body.id}/faults`, { disconnect: true })).status).toBe(400);
    expect((await call('POST', `/v1/devices/${body.id}/dmirror/read`, { addr, npages: 1 })).status).toBe(409);
  });

  it('rejects bad input with typed 4xx errors and creates nothing', async () => {
    await demo();
    const cases: Array<[unknown, number, string]> = [
      [{ kind: 'fpga', process: 'demo' }, 400, 'DM_ERR_VALIDATION'],
      [{ kind: 'gpu' }, 400, 'DM_ERR_VALIDATION'],
      [{ kind: 'gpu', process: 'demo', policy: 'lazy' }, 400, 'DM_ERR_VALIDATION'],
      [{ kind: 'gpu', process: 'demo', extra: 1 }, 400, 'DM_ERR_VALIDATION'],
      [{ kind: 'gpu', pid: 99999 }, 404, 'DM_ERR_NO_SUCH_PROCESS'],
      [{ kind: 'gpu', process: 'nobody' }, 404, 'DM_ERR_NO_SUCH_PROCESS'],
    ];
    for (const [body, status, code] of cases) {
      const r = await call('POST', '/v1/devices', body);
      expect([r.status, r.body.code], JSON.stringify(body)).toEqual([status, code]);
    }
    expect((await call('GET', '/v1/devices')).body.items).toEqual([]);
    expect((await call('GET', '/v1/devices/77')).status).toBe(404);
    expect((await call('POST', '/v1/devices/77/dma', { addr: 0, length: 1 })).status).toBe(404);
  });

  it('serves the .proto', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/proto' });
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain('package devmirror.v1;');
    expect(r.body).toContain('message InvalidateStart');
  });
});
