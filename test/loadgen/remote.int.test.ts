/** devmirror bench --target: load a running service through its HTTP API (the compose loadgen). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { PROT } from '../../src/kernel/kernel.js';
import { runRemote, type RemoteOptions } from '../../src/loadgen/remote.js';
import { parseBenchArgs } from '../../src/loadgen/cli.js';

let svc: Service;
let close: () => Promise<void>;
let target = '';

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024 }, deadlineMs: 60_000 });
  const app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  await svc.start();
  close = () => app.close();
  target = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const k = svc.kernel;
  const p = k.createProcess('target');
  const a = await k.mmap(p.pid, { length: 64 * 4096, prot: PROT.READ | PROT.WRITE, populate: true, name: 'heap' });
  const dev = await svc.devices.create({ kind: 'dmirror', pid: p.pid });
  await dev.command('read', { addr: a, npages: 64 });
});
afterAll(async () => {
  await svc.stop();
  await close();
});

const base = (): RemoteOptions => ({ target, process: 'target', window: 'heap', workload: 'mixed', ops: 24, rangePages: 4, areaPages: 32, seed: 1, concurrency: 2 });

describe('bench --target', () => {
  it('drives every operation through the API and reports each device\'s calls, answers and findings', async () => {
    const r = await runRemote(base());
    expect(r.ops).toBe(24);
    expect(r.errors).toEqual({});
    expect(r.area.source).toBe('mapping heap');
    expect(r.latency.map((l) => l.op).sort()).toEqual(['clear_refs soft-dirty', 'madvise DONTNEED', 'mprotect RO', 'mprotect RW']);
    for (const l of r.latency) expect(l.us.p50).toBeGreaterThan(0);
    const d = r.devices.find((x) => x.kind === 'dmirror')!;
    expect(d.calls).toBeGreaterThanOrEqual(24); // every operation invalidates the mirrored heap
    expect(d.answered + d.refused).toBe(d.calls);
    expect(r.totals.findings).toBe(0);
    expect(r.findings).toEqual([]);
  });

  it('munmap storms run on a scratch mapping it unmaps at the end', async () => {
    const before = (await (await fetch(`${target}/v1/processes`)).json()) as { items: Array<{ pid: number; name: string }> };
    const pid = before.items.find((p) => p.name === 'target')!.pid;
    const r = await runRemote({ ...base(), workload: 'munmap', ops: 6 });
    expect(r.area.source).toBe('scratch mapping loadgen');
    expect(r.latency.map((l) => l.op).sort()).toEqual(['mmap (fixed, populate)', 'munmap']);
    const maps = (await (await fetch(`${target}/v1/processes/${pid}/maps`)).json()) as { items: Array<{ name: string | null }> };
    expect(maps.items.some((m) => m.name === 'loadgen')).toBe(false);
  });

  it('refuses what it cannot load, with typed errors', async () => {
    await expect(runRemote({ ...base(), process: 'nobody' })).rejects.toMatchObject({ code: 'DM_ERR_NO_SUCH_PROCESS' });
    await expect(runRemote({ ...base(), window: 'nowhere' })).rejects.toMatchObject({ code: 'DM_ERR_NO_SUCH_PROCESS' });
    await expect(runRemote({ ...base(), target: 'http://127.0.0.1:1' })).rejects.toMatchObject({ code: 'DM_ERR_UNREACHABLE' });
    expect(() => parseBenchArgs(['--target', 'notaurl', '--process', 'x'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseBenchArgs(['--target', 'http://h:1'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseBenchArgs(['--window', 'heap'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseBenchArgs(['--target', 'http://h:1', '--process', 'x', '--workload', 'fork'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(parseBenchArgs(['--target', 'http://h:1/x', '--process', 'demo', '--window', 'heap', '--ops', '5', '--concurrency', '3']).remote).toMatchObject({
      target: 'http://h:1',
      process: 'demo',
      window: 'heap',
      ops: 5,
      concurrency: 3,
    });
  });
});
