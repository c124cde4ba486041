/**
 * Tokens on the HTTP API (issue #8), for every route of the fastify route table:
 * - without a token (or with an unknown one) every route but the public ones is 401
 *   DM_ERR_UNAUTHORIZED; the public ones (probes, metrics, the dashboard page, the API document, the
 *   .proto) answer;
 * - a token granted `*` is never refused (401/403);
 * - a token granted some processes is served on its processes and their devices, refused with 403
 *   DM_ERR_FORBIDDEN (changing nothing) on the others and on machine-wide operations, and its lists
 *   (processes, devices, events, notifier state, the stream) show only what it grants;
 * - with the embedded local default (no DEVMIRROR_TOKENS) no token is asked for.
 * The route table comes from src/http/auth.ts (every route registered declares its access), so a
 * route added without a case here fails the first test.
 */
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { routeAccess } from '../../src/http/auth.js';
import { DeviceClient } from '../../src/client/device-client.js';
import { PROT } from '../../src/kernel/kernel.js';

const PAGE = 4096;
const ALPHA = 'alpha-api-token';
const OMEGA = 'omega-api-token';
const PIDTOK = 'pid-api-token';
/** pids are handed out from 100: mine, theirs, bypid. */
const TOKENS = `${ALPHA}=mine,mine-scratch,mine-new;${OMEGA}=*;${PIDTOK}=102`;

interface Target {
  pid: number;
  addr: number;
  /** A worker device mirroring the process. */
  dev: number;
  /** A fresh process (for routes that end one) this target's token would be granted. */
  scratchPid(): Promise<number>;
  /** A fresh worker device of the process (for routes that remove one). */
  scratchDev(): Promise<number>;
}
type Req = [url: string, body?: unknown];
type Kind = 'public' | 'token' | 'process' | 'device' | 'machine' | 'create';
interface Route {
  kind: Kind;
  req: (t: Target) => Req | Promise<Req>;
  /** An endless reply: checked over HTTP, headers only. */
  stream?: boolean;
}

let svc: Service;
let app: FastifyInstance;
let base = '';
let mine: Target;
let theirs: Target;
let bypid = 0;
let extAlpha: DeviceClient;
let extOmega: DeviceClient;
let scratchN = 0;

const R = (kind: Kind, req: Route['req'], stream = false): Route => ({ kind, req, stream });
const P = (t: Target): string => `/v1/processes/${t.pid}`;
const D = (t: Target): string => `/v1/devices/${t.dev}`;

const ROUTES: Record<string, Route> = {
  'GET /healthz': R('public', () => ['/healthz']),
  'GET /readyz': R('public', () => ['/readyz']),
  'GET /metrics': R('public', () => ['/metrics']),
  'GET /': R('public', () => ['/']),
  'GET /v1/proto': R('public', () => ['/v1/proto']),
  'GET /v1/proto/proto/devmirror/v1/notifier.proto': R('public', () => ['/v1/proto/proto/devmirror/v1/notifier.proto']),
  'GET /docs': R('public', () => ['/docs']),
  'GET /docs/json': R('public', () => ['/docs/json']),
  'GET /docs/yaml': R('public', () => ['/docs/yaml']),
  'GET /docs/static/index.html': R('public', () => ['/docs/static/index.html']),
  'GET /docs/static/swagger-initializer.js': R('public', () => ['/docs/static/swagger-initializer.js']),
  'GET /docs/static/*': R('public', () => ['/docs/static/swagger-ui.css']),
  'GET /v1/events': R('token', () => ['/v1/events?limit=5']),
  'GET /v1/trace': R('token', () => ['/v1/trace?limit=5']),
  'GET /v1/notifier': R('token', () => ['/v1/notifier']),
  'GET /v1/processes': R('token', () => ['/v1/processes']),
  'GET /v1/devices': R('token', () => ['/v1/devices']),
  'GET /v1/kernel/daemons': R('token', () => ['/v1/kernel/daemons']),
  'GET /v1/kernel/stats': R('token', () => ['/v1/kernel/stats']),
  'GET /v1/stream': R('token', () => ['/v1/stream'], true),
  // A name the restricted token is granted (gone again before each call, so that each creates it).
  'POST /v1/processes': R('create', async () => {
    const old = svc.kernel.findProcess('mine-new');
    if (old) await svc.kernel.exit(old.pid);
    return ['/v1/processes', { name: 'mine-new' }];
  }),
  'GET /v1/processes/:pid': R('process', (t) => [P(t)]),
  'DELETE /v1/processes/:pid': R('process', async (t) => [`/v1/processes/${await t.scratchPid()}`]),
  'POST /v1/processes/:pid/fork': R('process', (t) => [`${P(t)}/fork`]),
  'GET /v1/processes/:pid/maps': R('process', (t) => [`${P(t)}/maps`]),
  'GET /v1/processes/:pid/pagemap': R('process', (t) => [`${P(t)}/pagemap?addr=${t.addr}&pages=4`]),
  'POST /v1/processes/:pid/mmap': R('process', (t) => [`${P(t)}/mmap`, { length: 4 * PAGE, prot: ['read'] }]),
  'POST /v1/processes/:pid/munmap': R('process', (t) => [`${P(t)}/munmap`, { addr: t.addr + 60 * PAGE, length: PAGE }]),
  'POST /v1/processes/:pid/mremap': R('process', (t) => [`${P(t)}/mremap`, { addr: t.addr + 40 * PAGE, length: PAGE, newLength: PAGE }]),
  'POST /v1/processes/:pid/mprotect': R('process', (t) => [`${P(t)}/mprotect`, { addr: t.addr + 50 * PAGE, length: PAGE, prot: ['read'] }]),
  'POST /v1/processes/:pid/madvise': R('process', (t) => [`${P(t)}/madvise`, { addr: t.addr + 51 * PAGE, length: PAGE, advice: 'dontneed' }]),
  'POST /v1/processes/:pid/clear_refs': R('process', (t) => [`${P(t)}/clear_refs`, { mode: 'soft-dirty' }]),
  'POST /v1/processes/:pid/brk': R('process', (t) => [`${P(t)}/brk`, { addr: 0 }]),
  'POST /v1/processes/:pid/msync': R('process', (t) => [`${P(t)}/msync`, { addr: t.addr, length: PAGE }]),
  'POST /v1/processes/:pid/memory/read': R('process', (t) => [`${P(t)}/memory/read`, { addr: t.addr, length: 16 }]),
  'POST /v1/processes/:pid/memory/write': R('process', (t) => [`${P(t)}/memory/write`, { addr: t.addr + 52 * PAGE, data: Buffer.from('hello').toString('base64') }]),
  'POST /v1/files': R('machine', () => ['/v1/files', { size: PAGE }]),
  'POST /v1/kernel/reclaim': R('process', (t) => ['/v1/kernel/reclaim', { pid: t.pid, addr: t.addr + 53 * PAGE, length: PAGE }]),
  'POST /v1/kernel/compact': R('machine', () => ['/v1/kernel/compact', {}]),
  'POST /v1/kernel/migrate': R('process', (t) => ['/v1/kernel/migrate', { pid: t.pid, addr: t.addr + 54 * PAGE, length: PAGE, node: 1 }]),
  'POST /v1/kernel/numa-balance': R('process', (t) => ['/v1/kernel/numa-balance', { pid: t.pid }]),
  'POST /v1/kernel/ksm': R('machine', () => ['/v1/kernel/ksm', {}]),
  'POST /v1/kernel/khugepaged': R('process', (t) => ['/v1/kernel/khugepaged', { pid: t.pid, addr: t.addr }]),
  'POST /v1/kernel/thp-split': R('process', (t) => ['/v1/kernel/thp-split', { pid: t.pid, addr: t.addr }]),
  'POST /v1/kernel/writeback': R('machine', () => ['/v1/kernel/writeback', {}]),
  'POST /v1/kernel/oom-reap': R('process', async (t) => ['/v1/kernel/oom-reap', { pid: await t.scratchPid() }]),
  'POST /v1/kernel/trigger': R('process', (t) => ['/v1/kernel/trigger', { origin: 'madvise', pid: t.pid, addr: t.addr + 51 * PAGE, length: PAGE }]),
  'GET /v1/fidelity': R('public', () => ['/v1/fidelity']),
  'PUT /v1/kernel/daemons': R('machine', () => ['/v1/kernel/daemons', { kswapd: 0 }]),
  'GET /v1/kernel/audit': R('machine', () => ['/v1/kernel/audit']),
  'GET /v1/progress': R('machine', () => ['/v1/progress']),
  'POST /v1/devices': R('process', (t) => ['/v1/devices', { kind: 'dmirror', pid: t.pid }]),
  'GET /v1/devices/:id': R('device', (t) => [D(t)]),
  'DELETE /v1/devices/:id': R('device', async (t) => [`/v1/devices/${await t.scratchDev()}`]),
  'POST /v1/devices/:id/faults': R('device', (t) => [`${D(t)}/faults`, { ackDelayUs: 0 }]),
  'POST /v1/devices/:id/dma': R('device', (t) => [`${D(t)}/dma`, { addr: t.addr, length: PAGE }]),
  'GET /v1/devices/:id/mirror': R('device', (t) => [`${D(t)}/mirror?addr=${t.addr}&pages=4`]),
};
for (const c of ['read', 'write', 'migrate-to-device', 'migrate-to-system', 'snapshot', 'exclusive', 'check-exclusive', 'release']) {
  ROUTES[`POST /v1/devices/:id/dmirror/${c}`] = R('device', (t) => [`${D(t)}/dmirror/${c}`, { addr: t.addr + 8 * PAGE, npages: 1 }]);
}

const auth = (token?: string): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});

interface Res {
  status: number;
  code?: string;
  headers: Record<string, unknown>;
}

async function call(route: string, token: string | undefined, t: Target, a: FastifyInstance = app): Promise<Res> {
  return send(route, token, await ROUTES[route].req(t), a);
}

async function send(route: string, token: string | undefined, [url, body]: Req, a: FastifyInstance = app): Promise<Res> {
  const r = ROUTES[route];
  const method = route.split(' ')[0] as 'GET';
  if (r.stream) {
    const ac = new AbortController();
    const res = await fetch(`${base}${url}`, { headers: auth(token), signal: ac.signal });
    const out = { status: res.status, code: res.status >= 400 ? ((await res.json()) as { code: string }).code : undefined, headers: Object.fromEntries(res.headers) };
    ac.abort();
    return out;
  }
  const res: LightMyRequestResponse = await a.inject({ method, url, headers: auth(token), ...(body !== undefined ? { payload: body as object } : {}) });
  let code: string | undefined;
  try {
    code = res.statusCode >= 400 ? (res.json() as { code?: string }).code : undefined;
  } catch {
    code = undefined;
  }
  return { status: res.statusCode, code, headers: res.headers };
}

/** What a refused request must leave as it was: the other tenant's process, memory and devices. */
async function theirState(): Promise<string> {
  const k = svc.kernel;
  const p = k.findProcess(theirs.pid);
  return JSON.stringify([
    k.liveProcesses().map((x) => [x.pid, x.name, x.mm.vmas.length, x.mm.rss]),
    p ? k.pagemap(theirs.pid, theirs.addr, 64).map((e) => [e.pfn, e.write, e.dirty, e.softDirty, e.devicePrivate]) : null,
    Buffer.from(await k.read(theirs.pid, theirs.addr + 52 * PAGE, 8)).toString('hex'),
    svc.devices.list().map((d) => [d.id, d.state]),
    svc.channel.list().map((d) => [d.id, d.state]),
    svc.kernel.daemons.list(),
  ]);
}

async function target(name: string, scratchName: () => string): Promise<Target> {
  const k = svc.kernel;
  const p = k.createProcess(name);
  const addr = await k.mmap(p.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE, populate: true, name: 'heap' });
  const dev = (await svc.devices.create({ kind: 'dmirror', pid: p.pid, name: `${name}-dm` })).id;
  return {
    pid: p.pid,
    addr,
    dev,
    async scratchPid() {
      const s = k.findProcess(scratchName()) ?? k.createProcess(scratchName());
      await k.mmap(s.pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
      return s.pid;
    },
    async scratchDev() {
      return (await svc.devices.create({ kind: 'dmirror', pid: p.pid })).id;
    },
  };
}

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 }, deadlineMs: 60_000, tokens: TOKENS, traceEvents: 50_000 });
  app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  await svc.start();
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  mine = await target('mine', () => 'mine-scratch');
  theirs = await target('theirs', () => `theirs-scratch-${scratchN++}`);
  bypid = svc.kernel.createProcess('bypid').pid;
  expect([mine.pid, theirs.pid, bypid]).toEqual([100, 101, 102]); // PIDTOK grants 102
  // External clients of both tokens, each mirroring a process its token grants.
  const ws = `${base.replace('http', 'ws')}/v1/notifier/ws`;
  extAlpha = new DeviceClient({ url: ws, token: ALPHA, name: 'ext-alpha', kind: 'gpu' });
  extOmega = new DeviceClient({ url: ws, token: OMEGA, name: 'ext-omega', kind: 'gpu' });
  await extAlpha.connect();
  await extOmega.connect();
  await extAlpha.subscribeInterval({ pid: mine.pid, start: mine.addr, length: 64 * PAGE });
  await extOmega.subscribeInterval({ pid: theirs.pid, start: theirs.addr, length: 64 * PAGE });
  // Something in the event log of each process.
  await svc.kernel.madvise(mine.pid, mine.addr + 62 * PAGE, PAGE, 'dontneed');
  await svc.kernel.madvise(theirs.pid, theirs.addr + 62 * PAGE, PAGE, 'dontneed');
}, 60_000);
afterAll(async () => {
  await extAlpha?.close();
  await extOmega?.close();
  await svc?.stop();
  await app?.close();
});

describe('the route table', () => {
  it('has a case here for every route (from the access declarations) and every route of the OpenAPI document', async () => {
    const table = routeAccess(app).filter((r) => r.method !== 'HEAD');
    const keys = table.map((r) => `${r.method} ${r.url}`);
    expect(keys.filter((k) => !ROUTES[k])).toEqual([]);
    expect(Object.keys(ROUTES).filter((k) => !keys.includes(k))).toEqual([]);
    const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json() as { paths: Record<string, Record<string, { security?: unknown[] }>> };
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops)) {
        const key = `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`;
        expect(ROUTES[key], key).toBeDefined();
        // The document says which routes need the token.
        expect(op.security, key).toEqual(ROUTES[key].kind === 'public' ? [] : [{ bearer: [] }]);
      }
    }
  });
});

describe('without a valid token', () => {
  for (const [route, r] of Object.entries(ROUTES)) {
    it(route, async () => {
      for (const token of [undefined, 'not-a-known-token', `worker:1:${'0'.repeat(32)}`, ALPHA.toUpperCase()]) {
        const req = await r.req(theirs);
        const before = await theirState();
        const res = await send(route, token, req);
        if (r.kind === 'public') {
          expect(res.status, `${token}`).toBeLessThan(400);
          continue;
        }
        expect([res.status, res.code], `${token}`).toEqual([401, 'DM_ERR_UNAUTHORIZED']);
        expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
        expect(await theirState()).toBe(before);
      }
      // HEAD of a GET route too.
      if (route.startsWith('GET ') && r.kind !== 'public' && !r.stream) {
        const [url] = await r.req(theirs);
        expect((await app.inject({ method: 'HEAD', url })).statusCode).toBe(401);
      }
    });
  }

  it('an unknown route is 401 too (nothing is answered before the token)', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nothing-here' });
    expect(res.statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/v1/nothing-here', headers: auth(OMEGA) })).statusCode).toBe(404);
  });
});

describe('a token granted *', () => {
  for (const route of Object.keys(ROUTES)) {
    it(route, async () => {
      for (const t of [theirs, mine]) {
        const res = await call(route, OMEGA, t);
        expect(res.status, `${route} on pid ${t.pid}: ${res.code}`).not.toBe(401);
        expect(res.status).not.toBe(403);
        expect(res.status).toBeLessThan(500);
      }
    });
  }
});

describe('a token granted some processes', () => {
  for (const [route, r] of Object.entries(ROUTES)) {
    it(route, async () => {
      if (r.kind === 'public') return expect((await call(route, ALPHA, mine)).status).toBeLessThan(400);
      // Its own process (and its devices): served.
      if (r.kind !== 'machine') {
        const res = await call(route, ALPHA, mine);
        expect(res.status, `${route} on its own process: ${res.code}`).not.toBe(401);
        expect(res.status).not.toBe(403);
        expect(res.status).toBeLessThan(500);
      }
      if (r.kind === 'token') return;
      // Another process, its devices, or the whole machine: 403, and nothing changes.
      if (r.kind === 'create') {
        // A name it is not granted, or none.
        const before = await theirState();
        for (const body of [{ name: 'someone-else' }, {}]) {
          const c = await app.inject({ method: 'POST', url: '/v1/processes', headers: auth(ALPHA), payload: body });
          expect([c.statusCode, c.json().code]).toEqual([403, 'DM_ERR_FORBIDDEN']);
        }
        expect(await theirState()).toBe(before);
        return;
      }
      const req = await r.req(theirs);
      const before = await theirState();
      const res = await send(route, ALPHA, req);
      expect([res.status, res.code]).toEqual([403, 'DM_ERR_FORBIDDEN']);
      expect(await theirState()).toBe(before);
    });
  }

  it('is refused the machine-wide forms of the routes that take a process, and file mappings', async () => {
    const before = await theirState();
    for (const [url, body] of [
      ['/v1/kernel/reclaim', { pages: 4 }],
      ['/v1/kernel/reclaim', { pid: mine.pid, pages: 4 }], // no range: the LRU of the machine
      ['/v1/kernel/khugepaged', {}],
      ['/v1/kernel/khugepaged', { pid: mine.pid }],
      ['/v1/kernel/oom-reap', {}],
      [`${P(mine)}/mmap`, { length: PAGE, prot: ['read'], file: { id: 1 } }],
    ] as Array<[string, unknown]>) {
      const res = await app.inject({ method: 'POST', url, headers: auth(ALPHA), payload: body as object });
      expect([res.statusCode, res.json().code], `${url} ${JSON.stringify(body)}`).toEqual([403, 'DM_ERR_FORBIDDEN']);
    }
    expect(await theirState()).toBe(before);
  });

  it('gets the same 403 for a process or device that does not exist (no probing); * gets 404', async () => {
    for (const url of ['/v1/processes/99999', '/v1/devices/99999']) {
      const a = await app.inject({ method: 'GET', url, headers: auth(ALPHA) });
      expect([a.statusCode, a.json().code]).toEqual([403, 'DM_ERR_FORBIDDEN']);
      expect((await app.inject({ method: 'GET', url, headers: auth(OMEGA) })).statusCode).toBe(404);
    }
    const byName = await app.inject({ method: 'POST', url: '/v1/devices', headers: auth(ALPHA), payload: { kind: 'dmirror', process: 'nobody' } });
    expect(byName.statusCode).toBe(403);
  });

  it('by pid: a token granted a pid is served on it only', async () => {
    expect((await app.inject({ method: 'GET', url: `/v1/processes/${bypid}`, headers: auth(PIDTOK) })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: P(mine), headers: auth(PIDTOK) })).statusCode).toBe(403);
    const list = (await app.inject({ method: 'GET', url: '/v1/processes', headers: auth(PIDTOK) })).json() as { items: Array<{ pid: number }> };
    expect(list.items.map((p) => p.pid)).toEqual([bypid]);
  });

  it('lists only what it grants: processes, devices, events, notifier state', async () => {
    const get = async (url: string, token: string) => (await app.inject({ method: 'GET', url, headers: auth(token) })).json();
    const procs = (await get('/v1/processes', ALPHA)).items as Array<{ pid: number; name: string }>;
    expect(procs.length).toBeGreaterThan(0);
    expect(procs.every((p) => ['mine', 'mine-scratch', 'mine-new'].includes(p.name))).toBe(true);
    expect(((await get('/v1/processes', OMEGA)).items as Array<{ name: string }>).map((p) => p.name)).toEqual(expect.arrayContaining(['mine', 'theirs', 'bypid']));

    const devs = (await get('/v1/devices', ALPHA)).items as Array<{ id: number; name: string; pid?: number; transport: string }>;
    expect(devs.map((d) => d.id)).toEqual(expect.arrayContaining([mine.dev, extAlpha.clientId]));
    expect(devs.map((d) => d.id)).not.toContain(theirs.dev);
    expect(devs.map((d) => d.id)).not.toContain(extOmega.clientId);
    for (const d of devs) if (d.transport === 'worker') expect(d.pid).toBe(mine.pid);
    const all = (await get('/v1/devices', OMEGA)).items as Array<{ id: number }>;
    expect(all.map((d) => d.id)).toEqual(expect.arrayContaining([mine.dev, theirs.dev, extAlpha.clientId, extOmega.clientId]));
    // An external client goes with the token it connected with.
    expect((await app.inject({ method: 'GET', url: `/v1/devices/${extOmega.clientId}`, headers: auth(ALPHA) })).statusCode).toBe(403);
    expect((await app.inject({ method: 'GET', url: `/v1/devices/${extAlpha.clientId}`, headers: auth(ALPHA) })).statusCode).toBe(200);

    const events = (await get('/v1/events?limit=1000', ALPHA)).items as Array<{ pid: number }>;
    expect(events.length).toBeGreaterThan(0);
    expect(new Set(events.map((e) => e.pid))).not.toContain(theirs.pid);
    expect(((await get('/v1/events?limit=1000', OMEGA)).items as Array<{ pid: number }>).some((e) => e.pid === theirs.pid)).toBe(true);
    const one = await app.inject({ method: 'GET', url: `/v1/events?pid=${theirs.pid}`, headers: auth(ALPHA) });
    expect(one.statusCode).toBe(403);
    // The trace, as the events: the entries of granted processes (and the machine-wide activities).
    const tracePids = (t: { traceEvents: Array<{ args?: { pid?: number } }> }) => new Set(t.traceEvents.map((e) => e.args?.pid).filter((p) => p !== undefined));
    expect(tracePids(await get('/v1/trace', ALPHA))).not.toContain(theirs.pid);
    expect(tracePids(await get('/v1/trace', OMEGA))).toContain(theirs.pid);
    expect((await app.inject({ method: 'GET', url: `/v1/trace?pid=${theirs.pid}`, headers: auth(ALPHA) })).statusCode).toBe(403);

    const notifier = (await get('/v1/notifier', ALPHA)).items as Array<{ pid: number }>;
    expect(notifier.map((n) => n.pid)).toContain(mine.pid);
    expect(notifier.map((n) => n.pid)).not.toContain(theirs.pid);
  });

  it('streams only what it grants', async () => {
    const ac = new AbortController();
    const res = await fetch(`${base}/v1/stream`, { headers: auth(ALPHA), signal: ac.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    // The first tick sends devices and processes; an invalidation of each process follows.
    void (async () => {
      await new Promise((r) => setTimeout(r, 100));
      await svc.kernel.madvise(theirs.pid, theirs.addr + 61 * PAGE, PAGE, 'dontneed');
      await svc.kernel.madvise(mine.pid, mine.addr + 61 * PAGE, PAGE, 'dontneed');
    })();
    const deadline = Date.now() + 10_000;
    while (!/event: invalidations/.test(text) && Date.now() < deadline) text += (await reader.read()).value ?? '';
    ac.abort();
    const blocks = text.split('\n\n').filter(Boolean).map((b) => ({ event: /event: (\w+)/.exec(b)?.[1], data: JSON.parse(/data: (.*)/.exec(b)![1]) }));
    const procs = blocks.find((b) => b.event === 'processes')!.data as Array<{ name: string }>;
    expect(procs.map((p) => p.name)).toContain('mine');
    expect(procs.map((p) => p.name)).not.toContain('theirs');
    const devs = blocks.find((b) => b.event === 'devices')!.data as Array<{ id: number }>;
    expect(devs.map((d) => d.id)).toContain(mine.dev);
    expect(devs.map((d) => d.id)).not.toContain(theirs.dev);
    const inv = blocks.filter((b) => b.event === 'invalidations').flatMap((b) => (b.data as { items: Array<{ pid: number }> }).items);
    expect(inv.map((e) => e.pid)).toContain(mine.pid);
    expect(inv.map((e) => e.pid)).not.toContain(theirs.pid);
  });

  it('metrics need no token and name no process', async () => {
    const m = await app.inject({ method: 'GET', url: '/metrics' });
    expect(m.statusCode).toBe(200);
    expect(m.body).toContain('devmirror_invalidations_total');
    for (const name of ['mine', 'theirs', 'bypid', 'ext-alpha', 'theirs-dm']) expect(m.body).not.toContain(`"${name}"`);
    expect(m.body).not.toMatch(/pid="/);
  });
});

describe('without DEVMIRROR_TOKENS (the embedded local default)', () => {
  it('asks for no token on any route; DEVMIRROR_API_AUTH=off does the same with tokens', async () => {
    for (const opts of [{}, { tokens: TOKENS, apiAuth: false }]) {
      const s = new Service({ kernel: { memoryBytes: 16 * 1024 * 1024 }, deadlineMs: 60_000, ...opts });
      const a = await buildServer(s, { logger: false });
      try {
        await a.ready();
        expect(s.apiAuth).toBe(false);
        const p = s.kernel.createProcess('mine');
        const addr = await s.kernel.mmap(p.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
        const dev = (await s.devices.create({ kind: 'dmirror', pid: p.pid })).id;
        const t: Target = {
          pid: p.pid,
          addr,
          dev,
          scratchPid: async () => s.kernel.createProcess().pid,
          scratchDev: async () => (await s.devices.create({ kind: 'dmirror', pid: p.pid })).id,
        };
        for (const [route, r] of Object.entries(ROUTES)) {
          if (r.stream) continue; // an endless reply (tested with a server above)
          const res = await call(route, undefined, t, a);
          expect(res.status, `${route}: ${res.code}`).not.toBe(401);
          expect(res.status, route).not.toBe(403);
        }
      } finally {
        await s.stop();
        await a.close();
      }
    }
  });

  it('on by default once DEVMIRROR_TOKENS is set, and on with the local default when asked', async () => {
    for (const [opts, on] of [[{ tokens: TOKENS }, true], [{}, false], [{ apiAuth: true }, true]] as const) {
      const s = new Service({ kernel: { memoryBytes: 16 * 1024 * 1024 }, ...opts });
      expect(s.apiAuth).toBe(on);
      await s.stop();
    }
  });
});
