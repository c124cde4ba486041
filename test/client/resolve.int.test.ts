/** devmirror device --process/--window: names looked up through the kernel's HTTP API. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { PROT } from '../../src/kernel/kernel.js';
import { apiBase, resolveTarget, windowOptions } from '../../src/client/resolve.js';

let svc: Service;
let close: () => Promise<void>;
let ws = '';
let heap = 0;
let pid = 0;

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 16 * 1024 * 1024 }, deadlineMs: 60_000 });
  const app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  close = () => app.close();
  ws = `ws://127.0.0.1:${(app.server.address() as { port: number }).port}/v1/notifier/ws`;
  const p = svc.kernel.createProcess('named');
  pid = p.pid;
  heap = await svc.kernel.mmap(p.pid, { length: 8 * 4096, prot: PROT.READ | PROT.WRITE, name: 'heap' });
});
afterAll(async () => {
  await svc.stop();
  await close();
});

describe('resolveTarget', () => {
  it('finds the process and the mapping by name', async () => {
    expect(apiBase(ws)).toBe(ws.replace('ws://', 'http://').replace('/v1/notifier/ws', ''));
    expect(await resolveTarget(ws, 'named')).toEqual({ pid });
    expect(await resolveTarget(ws, 'named', 'heap')).toEqual({ pid, window: { start: heap, end: heap + 8 * 4096 } });
  });

  it('refuses unknown names and unreachable services with typed errors', async () => {
    await expect(resolveTarget(ws, 'nobody')).rejects.toMatchObject({ code: 'DM_ERR_NO_SUCH_PROCESS' });
    await expect(resolveTarget(ws, 'named', 'stack')).rejects.toMatchObject({ code: 'DM_ERR_NO_SUCH_PROCESS' });
    await expect(resolveTarget('ws://127.0.0.1:1/v1/notifier/ws', 'named')).rejects.toMatchObject({ code: 'DM_ERR_UNREACHABLE' });
  });

  it('turns a mapping into the rdma MR and the kvm memslot', () => {
    const w = { start: 0x10000, end: 0x30000 };
    expect(windowOptions('rdma', w)).toEqual({ mrs: [{ addr: 0x10000, length: 0x20000 }] });
    expect(windowOptions('kvm', w)).toEqual({ memslots: [{ id: 0, baseGfn: 0x100000, npages: 32, hva: 0x10000 }] });
    expect(windowOptions('gpu', w)).toEqual({});
  });
});
