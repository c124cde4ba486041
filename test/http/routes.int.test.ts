/**
 * Every route of the control plane, through fastify's inject: a valid request succeeds, and bad
 * input for it is refused with a typed 4xx `{ code, message }` that leaves the state unchanged.
 * The list of routes comes from the OpenAPI document, so a route added without a case here fails.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';

const PAGE = 4096;
let svc: Service;
let app: FastifyInstance;
let pid = 0;
let addr = 0;
let dm = 0;

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
interface Case {
  /** A valid request: [url, body?, expected 2xx status]. */
  good?: () => Promise<[string, unknown?, number?]> | [string, unknown?, number?];
  /** Bad requests: [url, body, status, code]. */
  bad: () => Array<[string, unknown, number, string]>;
  /** Why a route has no valid case here (tested elsewhere). */
  skipGood?: string;
}

const P = () => `/v1/processes/${pid}`;
const D = () => `/v1/devices/${dm}`;
const NOPE = 999_999;

const CASES: Record<string, Case> = {
  'GET /healthz': { good: () => ['/healthz'], bad: () => [] },
  'GET /readyz': { good: () => ['/readyz'], bad: () => [] },
  'GET /v1/events': { good: () => ['/v1/events?limit=5'], bad: () => [['/v1/events?limit=abc', undefined, 400, 'DM_ERR_BAD_ADDRESS']] },
  'GET /v1/trace': { good: () => ['/v1/trace?limit=5'], bad: () => [['/v1/trace?since=abc', undefined, 400, 'DM_ERR_BAD_ADDRESS'], [`/v1/trace?pid=${NOPE}&x=1`, undefined, 400, 'DM_ERR_VALIDATION']] },
  'GET /v1/notifier': { good: () => ['/v1/notifier'], bad: () => [] },
  'POST /v1/processes': {
    good: () => ['/v1/processes', { name: 'other' }, 201],
    bad: () => [
      ['/v1/processes', { name: { a: 1 } }, 400, 'DM_ERR_VALIDATION'],
      ['/v1/processes', { name: 'bad name!' }, 400, 'DM_ERR_VALIDATION'],
      ['/v1/processes', { name: 'app' }, 409, 'DM_ERR_NAME_TAKEN'],
    ],
  },
  'GET /v1/processes': { good: () => ['/v1/processes'], bad: () => [] },
  'GET /v1/processes/{pid}': { good: () => [P()], bad: () => [['/v1/processes/abc', undefined, 400, 'DM_ERR_VALIDATION'], [`/v1/processes/${NOPE}`, undefined, 404, 'DM_ERR_NO_SUCH_PROCESS']] },
  'DELETE /v1/processes/{pid}': {
    good: async () => {
      const r = await app.inject({ method: 'POST', url: '/v1/processes', payload: {} });
      return [`/v1/processes/${r.json().pid}`];
    },
    bad: () => [[`/v1/processes/${NOPE}`, undefined, 404, 'DM_ERR_NO_SUCH_PROCESS']],
  },
  'POST /v1/processes/{pid}/fork': { good: () => [`${P()}/fork`, undefined, 201], bad: () => [[`/v1/processes/${NOPE}/fork`, undefined, 404, 'DM_ERR_NO_SUCH_PROCESS']] },
  'GET /v1/processes/{pid}/maps': { good: () => [`${P()}/maps`], bad: () => [[`/v1/processes/${NOPE}/maps`, undefined, 404, 'DM_ERR_NO_SUCH_PROCESS']] },
  'GET /v1/processes/{pid}/pagemap': { good: () => [`${P()}/pagemap?addr=${addr}&pages=4`], bad: () => [[`${P()}/pagemap?addr=zz`, undefined, 400, 'DM_ERR_BAD_ADDRESS']] },
  'POST /v1/processes/{pid}/mmap': {
    good: () => [`${P()}/mmap`, { length: 4 * PAGE, prot: ['read'] }],
    bad: () => [
      [`${P()}/mmap`, { length: 4 * PAGE, prot: ['fly'] }, 400, 'DM_ERR_VALIDATION'],
      [`${P()}/mmap`, { length: 0, prot: ['read'] }, 422, 'EINVAL'],
      [`${P()}/mmap`, { length: 4 * PAGE, prot: [], bogus: 1 }, 400, 'DM_ERR_VALIDATION'],
    ],
  },
  'POST /v1/processes/{pid}/munmap': {
    good: () => [`${P()}/munmap`, { addr: addr + 60 * PAGE, length: PAGE }],
    bad: () => [[`${P()}/munmap`, { addr: addr + 1, length: PAGE }, 422, 'EINVAL'], [`${P()}/munmap`, { addr }, 400, 'DM_ERR_VALIDATION']],
  },
  'POST /v1/processes/{pid}/mremap': {
    good: () => [`${P()}/mremap`, { addr: addr + 40 * PAGE, length: PAGE, newLength: PAGE }],
    bad: () => [[`${P()}/mremap`, { addr: addr + 1, length: PAGE, newLength: PAGE }, 422, 'EINVAL']],
  },
  'POST /v1/processes/{pid}/mprotect': {
    good: () => [`${P()}/mprotect`, { addr: addr + 50 * PAGE, length: PAGE, prot: ['read'] }],
    bad: () => [[`${P()}/mprotect`, { addr, length: PAGE, prot: 'rw' }, 400, 'DM_ERR_VALIDATION']],
  },
  'POST /v1/processes/{pid}/madvise': {
    good: () => [`${P()}/madvise`, { addr: addr + 51 * PAGE, length: PAGE, advice: 'dontneed' }],
    bad: () => [[`${P()}/madvise`, { addr, length: PAGE, advice: 'forget' }, 400, 'DM_ERR_VALIDATION']],
  },
  'POST /v1/processes/{pid}/clear_refs': { good: () => [`${P()}/clear_refs`, { mode: 'soft-dirty' }], bad: () => [[`${P()}/clear_refs`, { mode: 'all' }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/processes/{pid}/brk': { good: () => [`${P()}/brk`, { addr: 0 }], bad: () => [[`${P()}/brk`, { addr: -1 }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/processes/{pid}/msync': { good: () => [`${P()}/msync`, { addr, length: PAGE }], bad: () => [[`${P()}/msync`, { addr: addr + 1, length: PAGE }, 422, 'EINVAL']] },
  'POST /v1/processes/{pid}/memory/read': {
    good: () => [`${P()}/memory/read`, { addr, length: 16 }],
    bad: () => [[`${P()}/memory/read`, { addr, length: 1 << 30 }, 400, 'DM_ERR_VALIDATION']],
  },
  'POST /v1/processes/{pid}/memory/write': {
    good: () => [`${P()}/memory/write`, { addr, data: Buffer.from('hello').toString('base64') }],
    bad: () => [[`${P()}/memory/write`, { addr, data: '***' }, 400, 'DM_ERR_VALIDATION']],
  },
  'POST /v1/files': { good: () => ['/v1/files', { size: PAGE }, 201], bad: () => [['/v1/files', { size: -1 }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/reclaim': { good: () => ['/v1/kernel/reclaim', { pages: 4 }], bad: () => [['/v1/kernel/reclaim', { pages: 0 }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/compact': { good: () => ['/v1/kernel/compact', {}], bad: () => [['/v1/kernel/compact', { node: 99 }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/migrate': {
    good: () => ['/v1/kernel/migrate', { pid, addr, length: PAGE, node: 1 }],
    bad: () => [['/v1/kernel/migrate', { pid, addr }, 400, 'DM_ERR_VALIDATION']],
  },
  'POST /v1/kernel/numa-balance': { good: () => ['/v1/kernel/numa-balance', { pid }], bad: () => [['/v1/kernel/numa-balance', { pid: 'x' }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/ksm': { good: () => ['/v1/kernel/ksm', {}], bad: () => [['/v1/kernel/ksm', { x: 1 }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/khugepaged': { good: () => ['/v1/kernel/khugepaged', {}], bad: () => [['/v1/kernel/khugepaged', { max: 0 }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/thp-split': { good: () => ['/v1/kernel/thp-split', { pid, addr }], bad: () => [['/v1/kernel/thp-split', { pid }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/trigger': {
    good: () => ['/v1/kernel/trigger', { origin: 'mprotect', pid, addr, length: 4096 }],
    bad: () => [
      ['/v1/kernel/trigger', { origin: 'teleport', pid, addr, length: 4096 }, 400, 'DM_ERR_VALIDATION'],
      ['/v1/kernel/trigger', { origin: 'mprotect', pid: NOPE, addr, length: 4096 }, 404, 'DM_ERR_NO_SUCH_PROCESS'],
    ],
  },
  'GET /v1/fidelity': { good: () => ['/v1/fidelity'], bad: () => [] },
  'POST /v1/kernel/writeback': { good: () => ['/v1/kernel/writeback', {}], bad: () => [['/v1/kernel/writeback', { x: 1 }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/kernel/oom-reap': {
    good: async () => {
      const r = await app.inject({ method: 'POST', url: '/v1/processes', payload: {} });
      return ['/v1/kernel/oom-reap', { pid: r.json().pid }];
    },
    bad: () => [['/v1/kernel/oom-reap', { pid: 'x' }, 400, 'DM_ERR_VALIDATION']],
  },
  'GET /v1/kernel/daemons': { good: () => ['/v1/kernel/daemons'], bad: () => [] },
  'PUT /v1/kernel/daemons': { good: () => ['/v1/kernel/daemons', { kswapd: 0 }], bad: () => [['/v1/kernel/daemons', { nope: 1 }, 400, 'DM_ERR_VALIDATION']] },
  'GET /v1/kernel/stats': { good: () => ['/v1/kernel/stats'], bad: () => [] },
  'GET /v1/kernel/audit': { good: () => ['/v1/kernel/audit'], bad: () => [] },
  'GET /v1/progress': { good: () => ['/v1/progress'], bad: () => [] },
  'GET /v1/devices': { good: () => ['/v1/devices'], bad: () => [] },
  'POST /v1/devices': { skipGood: 'creates a worker: test/http/devices.int.test.ts', bad: () => [['/v1/devices', { kind: 'fpga', pid }, 400, 'DM_ERR_VALIDATION']] },
  'GET /v1/devices/{id}': { good: () => [D()], bad: () => [[`/v1/devices/${NOPE}`, undefined, 404, 'DM_ERR_NO_SUCH_DEVICE']] },
  'DELETE /v1/devices/{id}': { skipGood: 'stops the device: test/http/devices.int.test.ts', bad: () => [[`/v1/devices/${NOPE}`, undefined, 404, 'DM_ERR_NO_SUCH_DEVICE']] },
  'POST /v1/devices/{id}/faults': { good: () => [`${D()}/faults`, { ackDelayUs: 0 }], bad: () => [[`${D()}/faults`, { hang: 'yes' }, 400, 'DM_ERR_VALIDATION']] },
  'POST /v1/devices/{id}/dma': { good: () => [`${D()}/dma`, { addr, length: PAGE }], bad: () => [[`${D()}/dma`, { addr, length: 0 }, 400, 'DM_ERR_VALIDATION']] },
  'GET /v1/devices/{id}/mirror': { good: () => [`${D()}/mirror?addr=${addr}&pages=4`], bad: () => [[`${D()}/mirror?addr=${addr + 1}`, undefined, 400, 'DM_ERR_VALIDATION']] },
  'GET /v1/proto': { good: () => ['/v1/proto'], bad: () => [] },
  'GET /v1/proto/proto/devmirror/v1/notifier.proto': { good: () => ['/v1/proto/proto/devmirror/v1/notifier.proto'], bad: () => [] },
  'GET /metrics': { good: () => ['/metrics'], bad: () => [] },
  'GET /v1/stream': { skipGood: 'an endless event stream: test/http/dashboard.browser.int.test.ts', bad: () => [] },
};
for (const c of ['read', 'write', 'migrate-to-device', 'migrate-to-system', 'snapshot', 'exclusive', 'check-exclusive', 'release']) {
  CASES[`POST /v1/devices/{id}/dmirror/${c}`] = {
    good: c === 'read' || c === 'snapshot' ? () => [`${D()}/dmirror/${c}`, { addr, npages: 2 }] : undefined,
    skipGood: c === 'read' || c === 'snapshot' ? undefined : 'the hmm-tests port covers it through the same command path',
    bad: () => [
      [`${D()}/dmirror/${c}`, { addr, npages: -1 }, 400, 'DM_ERR_VALIDATION'],
      [`/v1/devices/${NOPE}/dmirror/${c}`, { addr, npages: 1 }, 404, 'DM_ERR_NO_SUCH_DEVICE'],
    ],
  };
}

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 }, deadlineMs: 60_000, traceEvents: 50_000 });
  app = await buildServer(svc, { logger: false });
  await app.ready();
  await svc.start();
  pid = (await app.inject({ method: 'POST', url: '/v1/processes', payload: { name: 'app' } })).json().pid;
  addr = (await app.inject({ method: 'POST', url: `${P()}/mmap`, payload: { length: 64 * PAGE, prot: ['read', 'write'], populate: true } })).json().addr;
  dm = (await app.inject({ method: 'POST', url: '/v1/devices', payload: { kind: 'dmirror', pid } })).json().id;
}, 60_000);
afterAll(async () => {
  await svc.stop();
  await app.close();
});

/** What a bad request must not change. */
async function state(): Promise<string> {
  const maps = (await app.inject({ method: 'GET', url: `${P()}/maps` })).body;
  const procs = (await app.inject({ method: 'GET', url: '/v1/processes' })).json().items.map((p: { pid: number; vmas: number; rss: number }) => [p.pid, p.vmas, p.rss]);
  const pm = (await app.inject({ method: 'GET', url: `${P()}/pagemap?addr=${addr}&pages=64` })).body;
  return JSON.stringify([maps, procs, pm, svc.kernel.audit().problems]);
}

describe('every route', () => {
  it('has a case here for every route of the OpenAPI document', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
    const routes = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
    expect(routes.filter((r) => !CASES[r])).toEqual([]);
  });

  for (const [route, c] of Object.entries(CASES)) {
    const method = route.split(' ')[0] as Method;
    it(route, async () => {
      for (const [url, body, status, code] of c.bad()) {
        const before = await state();
        const r = await app.inject({ method, url, payload: body as object | undefined });
        expect([r.statusCode, r.json().code], `${method} ${url} ${JSON.stringify(body)}`).toEqual([status, code]);
        expect(typeof r.json().message).toBe('string');
        expect(await state(), `${method} ${url} changed the state`).toBe(before);
      }
      if (c.good) {
        const [url, body, status] = await c.good();
        const r = await app.inject({ method, url, payload: body as object | undefined });
        expect(r.statusCode, `${method} ${url}: ${r.body.slice(0, 200)}`).toBe(status ?? 200);
      } else expect(c.skipGood).toBeTruthy();
    });
  }
});

describe('madvise DONTFORK over HTTP', () => {
  it('marks the range in maps (dontFork), and the child of a fork has no mapping there', async () => {
    const a = (await app.inject({ method: 'POST', url: `${P()}/mmap`, payload: { length: 4 * PAGE, prot: ['read', 'write'], populate: true } })).json().addr;
    const r = await app.inject({ method: 'POST', url: `${P()}/madvise`, payload: { addr: a + PAGE, length: 2 * PAGE, advice: 'dontfork' } });
    expect(r.statusCode, r.body).toBe(200);
    type Item = { start: number; end: number; flags: { dontFork: boolean } };
    const maps = async (path: string): Promise<Item[]> => ((await app.inject({ method: 'GET', url: `${path}/maps` })).json().items as Item[]).filter((v) => v.end > a && v.start < a + 4 * PAGE);
    expect((await maps(P())).map((v) => [v.start - a, v.end - a, v.flags.dontFork])).toEqual([
      [0, PAGE, false],
      [PAGE, 3 * PAGE, true],
      [3 * PAGE, 4 * PAGE, false],
    ]);
    const child = (await app.inject({ method: 'POST', url: `${P()}/fork` })).json().pid;
    try {
      expect((await maps(`/v1/processes/${child}`)).map((v) => [v.start - a, v.end - a])).toEqual([
        [0, PAGE],
        [3 * PAGE, 4 * PAGE],
      ]);
    } finally {
      await app.inject({ method: 'DELETE', url: `/v1/processes/${child}` });
      await app.inject({ method: 'POST', url: `${P()}/munmap`, payload: { addr: a, length: 4 * PAGE } });
    }
  });
});
