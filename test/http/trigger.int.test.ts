/**
 * POST /v1/kernel/trigger: every origin of ORIGINS can be produced on purpose, and shows up with
 * that origin in GET /v1/events (and in an external client's InvalidateStart frames for some), in
 * the reply's `events`, and in the metrics by origin. Refusals are typed and change nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { PROT } from '../../src/kernel/kernel.js';
import { ORIGINS, type Origin } from '../../src/notifier/range.js';
import { DeviceClient, type InvalidateStartEvent } from '../../src/client/device-client.js';
import { recordingInterval, PAGE, MiB, fill } from '../helpers/recorder.js';
import { eventually } from '../helpers/eventually.js';
import { triggerMain } from '../../src/client/trigger-cli.js';

let svc: Service;
let app: FastifyInstance;
let client: DeviceClient;
const frames: InvalidateStartEvent[] = [];
const RW = PROT.READ | PROT.WRITE;
let made = 0;
let base = '';

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 64 * MiB, deviceMemoryBytes: 4 * MiB }, deadlineMs: 60_000 });
  app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  await svc.start();
  const port = (app.server.address() as { port: number }).port;
  base = `http://127.0.0.1:${port}`;
  client = new DeviceClient({ url: `ws://127.0.0.1:${port}/v1/notifier/ws`, token: 'devmirror-local', name: 'trigger-watch', kind: 'test' });
  client.onInvalidateStart((e) => {
    frames.push(e);
    return true;
  });
  await client.connect();
});
afterAll(async () => {
  await client?.close();
  await svc?.stop();
  await app?.close();
});

interface Target {
  pid: number;
  addr: number;
  length: number;
  node?: number;
}

/** A process with a recording subscriber over its whole address space, and the setup `origin` needs. */
async function target(origin: Origin): Promise<Target> {
  const k = svc.kernel;
  const p = k.createProcess(`t-${origin}-${++made}`);
  recordingInterval(p.mm.notifier, 0, 2 ** 47);
  const anon = async (pages: number, populate = true): Promise<number> => {
    const a = await k.mmap(p.pid, { length: pages * PAGE, prot: RW });
    if (populate) await k.write(p.pid, a, fill(pages * PAGE, pages + 7));
    return a;
  };
  switch (origin) {
    case 'brk': {
      const base = p.mm.brk;
      await k.brk(p.pid, base + 8 * PAGE);
      await k.write(p.pid, base, fill(8 * PAGE, 3));
      return { pid: p.pid, addr: base + 4 * PAGE, length: 4 * PAGE };
    }
    case 'msync':
    case 'writeback':
    case 'reclaim': {
      const f = k.createFile(8 * PAGE);
      const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: RW, shared: true, file: { id: f.id } });
      await k.write(p.pid, a, fill(8 * PAGE, 5));
      return { pid: p.pid, addr: a, length: 8 * PAGE };
    }
    case 'ksm': {
      const a = await anon(4, false);
      await k.write(p.pid, a, new Uint8Array(4 * PAGE).fill(0x5a));
      return { pid: p.pid, addr: a, length: 4 * PAGE };
    }
    case 'cow_fault':
      return { pid: p.pid, addr: await anon(4, false), length: 4 * PAGE };
    case 'khugepaged': {
      const a = await anon(1024, false); // 4 MiB, 2 MiB aligned (mmap aligns large anonymous mappings)
      await k.write(p.pid, a, fill(16 * PAGE, 9));
      return { pid: p.pid, addr: a, length: 2 * MiB };
    }
    case 'thp_split': {
      const a = await k.mmap(p.pid, { length: 2 * MiB, prot: RW, hugepage: true });
      await k.write(p.pid, a, fill(PAGE, 11));
      return { pid: p.pid, addr: a, length: 2 * MiB };
    }
    case 'migration':
      return { pid: p.pid, addr: await anon(4), length: 4 * PAGE, node: 1 };
    default:
      return { pid: p.pid, addr: await anon(8), length: 8 * PAGE };
  }
}

async function trigger(origin: Origin, t: Target) {
  return app.inject({ method: 'POST', url: '/v1/kernel/trigger', payload: { origin, ...t } });
}

describe('POST /v1/kernel/trigger', () => {
  it('produces every origin, seen in /v1/events and in the reply', async () => {
    const missing: string[] = [];
    for (const origin of ORIGINS) {
      const t = await target(origin);
      const since = svc.events.nextId - 1;
      const r = await trigger(origin, t);
      expect(r.statusCode, `${origin}: ${r.body}`).toBe(200);
      const body = r.json() as { origin: string; did: string; events: Array<{ id: number; origin: string; pid: number }> };
      expect(body.origin).toBe(origin);
      expect(typeof body.did).toBe('string');
      const ev = (await app.inject({ method: 'GET', url: `/v1/events?since=${since}&limit=10000` })).json() as { items: Array<{ id: number; origin: string; pid: number }> };
      const seen = ev.items.filter((e) => e.origin === origin && e.pid === t.pid);
      if (seen.length === 0) missing.push(`${origin}: ${r.body}`);
      // The reply names the invalidations it caused, by their /v1/events ids.
      const own = body.events.filter((e) => e.origin === origin);
      if (seen.length > 0) expect(own.length, origin).toBeGreaterThan(0);
      for (const e of own) expect(ev.items.some((x) => x.id === e.id && x.origin === origin), `${origin} #${e.id}`).toBe(true);
    }
    expect(missing).toEqual([]);
  }, 120_000);

  it('an external client sees the origin in its InvalidateStart frames', async () => {
    for (const origin of ['munmap', 'swap', 'ksm', 'device_migration', 'oom_reaper'] as Origin[]) {
      const t = await target(origin);
      await client.subscribeMm({ pid: t.pid });
      frames.length = 0;
      const r = await trigger(origin, t);
      expect(r.statusCode, r.body).toBe(200);
      await eventually(() => expect(frames.some((f) => f.pid === t.pid && f.origin === origin), origin).toBe(true), 5000);
      if (origin === 'oom_reaper') expect(frames.find((f) => f.origin === origin)?.blockable).toBe(false);
    }
  }, 60_000);

  it('counts invalidations by origin and event in /metrics', async () => {
    const t = await target('madvise');
    const read = async (): Promise<number> => {
      const line = (await app.inject({ method: 'GET', url: '/metrics' })).body.split('\n').find((l) => l.startsWith('devmirror_invalidations_by_origin_total{origin="madvise",event="CLEAR"}'));
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
    };
    const before = await read();
    expect((await trigger('madvise', t)).statusCode).toBe(200);
    expect(await read()).toBe(before + 1);
  });

  it('refuses an origin the range cannot produce with DM_ERR_NOT_TRIGGERABLE, changing nothing', async () => {
    const t = await target('munmap');
    const maps = async () => (await app.inject({ method: 'GET', url: `/v1/processes/${t.pid}/maps` })).body;
    const before = await maps();
    const since = svc.events.nextId;
    for (const origin of ['thp_split', 'writeback', 'msync', 'khugepaged', 'brk', 'reclaim'] as Origin[]) {
      const r = await trigger(origin, t);
      expect([r.statusCode, r.json().code], `${origin}: ${r.body}`).toEqual([409, 'DM_ERR_NOT_TRIGGERABLE']);
      expect(r.json().message).toMatch(/cannot be produced/);
    }
    const far = await trigger('munmap', { ...t, addr: t.addr + 2 ** 40 });
    expect([far.statusCode, far.json().code]).toEqual([409, 'DM_ERR_NOT_TRIGGERABLE']);
    expect(await maps()).toBe(before);
    // (Other processes' work may finish meanwhile: the OOM victim of the test before exits in the background.)
    expect(svc.events.query({ since: since - 1, pid: t.pid }).items).toEqual([]);
    expect((await trigger('munmap', { ...t, addr: t.addr + 1 })).json().code).toBe('EINVAL');
    expect((await app.inject({ method: 'POST', url: '/v1/kernel/trigger', payload: { ...t, origin: 'nope' } })).json().code).toBe('DM_ERR_VALIDATION');
    expect((await trigger('munmap', { ...t, pid: 99_999 })).json().code).toBe('DM_ERR_NO_SUCH_PROCESS');
  });

  it('devmirror trigger prints what it did and the invalidations it caused; a refusal exits 1 with its code', async () => {
    const t = await target('munmap');
    let out = '';
    let err = '';
    const run = (args: string[]) => triggerMain(args, (x) => (out += x), (x) => (err += x));
    expect(await run(['mprotect', '--url', base, '--pid', String(t.pid), '--addr', `0x${t.addr.toString(16)}`, '--length', String(t.length)])).toBe(0);
    expect(out).toContain(`mprotect on pid ${t.pid}`);
    expect(out).toMatch(new RegExp(`#\\d+ pid ${t.pid} PROTECTION_VMA \\[0x${t.addr.toString(16)}, 0x[0-9a-f]+\\) mprotect`));
    expect(await run(['thp_split', '--url', base, '--pid', String(t.pid), '--addr', String(t.addr), '--length', String(t.length)])).toBe(1);
    expect(err).toContain('DM_ERR_NOT_TRIGGERABLE');
    expect(await run(['bogus', '--url', base, '--pid', '1', '--addr', '0', '--length', '1'])).toBe(1);
    expect(err).toContain('DM_ERR_VALIDATION');
  });
});
