/** Event policies: what the event context buys (faithful, aware, blind). */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DeviceManager } from '../../src/devices/device-manager.js';
import type { WorkerDevice } from '../../src/devices/worker-device.js';
import type { EventPolicy } from '../../src/devices/protocol.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
const RW = PROT.READ | PROT.WRITE;
const PAGES = 16;
let mgr: DeviceManager | null = null;
afterEach(async () => {
  await mgr?.stopAll();
  mgr = null;
});

async function setup(policies: EventPolicy[], kind: 'gpu' | 'dmirror' = 'gpu') {
  const k = new Kernel({ memoryBytes: 32 * MiB, deviceMemoryBytes: 8 * MiB });
  const p = k.createProcess('app');
  mgr = new DeviceManager(k, { deadlineMs: 60_000 });
  const a = await k.mmap(p.pid, { length: PAGES * PAGE, prot: RW });
  await k.write(p.pid, a, new Uint8Array(PAGES * PAGE).fill(9));
  const devs: WorkerDevice[] = [];
  for (const policy of policies) devs.push(await mgr.create({ kind, pid: p.pid, policy, options: { granularityPages: PAGES } }));
  return { k, pid: p.pid, a, devs };
}

async function readAll(d: WorkerDevice, a: number): Promise<void> {
  for (let i = 0; i < PAGES; i++) expect(await d.command('dma-access', { addr: a + i * PAGE, write: false })).toBe(true);
}
const faults = async (d: WorkerDevice): Promise<number> => (await d.refresh()).counters.faults;

describe('event policies', () => {
  it('after mprotect to read-only an aware gpu keeps serving reads without refaulting, a blind one refaults', async () => {
    const { k, pid, a, devs } = await setup(['aware', 'blind', 'faithful']);
    for (const d of devs) await readAll(d, a);
    const before = await Promise.all(devs.map(faults));
    await k.mprotect(pid, a, PAGES * PAGE, PROT.READ);
    for (const d of devs) await readAll(d, a);
    const after = await Promise.all(devs.map(faults));
    expect(after[0] - before[0]).toBe(0); // aware: downgraded, still mapped for reads
    expect(after[1] - before[1]).toBeGreaterThan(0); // blind: everything was dropped
    expect(after[2] - before[2]).toBeGreaterThan(0); // faithful amdgpu: evicts on PROTECTION_VMA
    for (const d of devs) expect((await d.refresh()).sanitizer.findings).toBe(0);
  });

  it('refaults count pages a device lost, not pages an aware gpu kept and re-mapped with its range', async () => {
    const { k, pid, a, devs } = await setup(['aware', 'blind']);
    for (const d of devs) await readAll(d, a);
    await k.mprotect(pid, a, PAGES * PAGE, PROT.READ); // aware: downgrade, keeps every page
    await k.madvise(pid, a, PAGE, 'dontneed'); // CLEAR of page 0: both lose it
    for (const d of devs) await readAll(d, a); // the gpu faults page 0 in with its whole range
    const [aware, blind] = await Promise.all(devs.map((d) => d.refresh()));
    expect(aware.sanitizer.refaults).toBe(1);
    expect(aware.sanitizer.refaultCauses).toEqual({ 'CLEAR:madvise': 1 });
    expect(blind.sanitizer.refaults).toBe(PAGES);
    expect(blind.sanitizer.refaultCauses).toEqual({ 'PROTECTION_VMA:mprotect': PAGES });
    for (const d of [aware, blind]) expect(d.sanitizer.findings).toBe(0);
  });

  it('UNMAP drops the tracking structure, CLEAR keeps it', async () => {
    const { k, pid, a, devs } = await setup(['aware']);
    const [gpu] = devs;
    await readAll(gpu, a);
    expect((await gpu.refresh()).mirror.objects).toBe(1);
    await k.madvise(pid, a, PAGES * PAGE, 'dontneed'); // CLEAR
    await gpu.refresh(); // a device takes its ends before any message: the CLEAR window is closed
    expect(gpu.mirror.objects).toBe(1);
    expect(gpu.mirror.pages).toBe(0);
    await k.munmap(pid, a, PAGES * PAGE); // UNMAP
    await eventually(async () => expect((await gpu.refresh()).mirror.objects).toBe(0));
  });

  for (const policy of ['aware', 'faithful'] as EventPolicy[]) {
    it(`after clear_refs a device write makes the page soft-dirty again (${policy})`, async () => {
      const { k, pid, a, devs } = await setup([policy]);
      const [gpu] = devs;
      await gpu.command('dma-access', { addr: a, write: true });
      await k.clearRefs(pid, 'soft-dirty');
      expect(k.pagemap(pid, a, 1)[0].softDirty).toBe(false);
      expect(await gpu.command('dma-access', { addr: a, write: true })).toBe(true);
      expect(k.pagemap(pid, a, 1)[0].softDirty).toBe(true);
      expect((await gpu.refresh()).sanitizer.findings).toBe(0);
    });
  }

  it('after fork (PROTECTION_PAGE) an aware device re-reads the CPU page table when the window closes', async () => {
    const { k, pid, a, devs } = await setup(['aware', 'blind']);
    const [aware, blind] = devs;
    for (const d of devs) await readAll(d, a);
    const before = await Promise.all(devs.map(faults));
    await k.fork(pid);
    await eventually(async () => expect((await aware.refresh()).counters.rereads).toBeGreaterThanOrEqual(1));
    expect(aware.mirror.pages).toBe(PAGES);
    expect(aware.mirror.writable).toBe(0); // fork write-protected the parent
    for (const d of devs) await readAll(d, a);
    const after = await Promise.all(devs.map(faults));
    expect(after[0] - before[0]).toBe(0);
    expect(after[1] - before[1]).toBeGreaterThan(0);
    void blind;
  });

  it('a MIGRATE the device caused itself is skipped when aware; blind and faithful take it as CLEAR and survive', async () => {
    const { a, devs } = await setup(['aware', 'blind', 'faithful']);
    for (const d of devs) {
      const r = await d.command<{ migrated: number }>('prefetch', { addr: a, length: 4 * PAGE, location: 'vram' });
      expect(r.migrated).toBeGreaterThanOrEqual(0);
      await d.command('prefetch', { addr: a, length: 4 * PAGE, location: 'sys' });
    }
    const skipped = (await Promise.all(devs.map((d) => d.refresh()))).map((d) => d.counters.own_events_skipped ?? 0);
    expect(skipped[0]).toBeGreaterThan(0);
    expect(skipped[1]).toBe(0);
    expect(skipped[2]).toBe(0);
    for (const d of devs) expect(d.sanitizer.findings).toBe(0);
  });

  it('dmirror skips its own MIGRATE as test_hmm does; a blind dmirror zaps its own pages and still migrates', async () => {
    const { k, pid, a, devs } = await setup(['faithful', 'blind'], 'dmirror');
    for (const d of devs) {
      const r = await d.command<{ cpages: number }>('migrate-to-device', { addr: a, npages: 4 });
      expect(r.cpages).toBe(4);
      await d.command('migrate-to-system', { addr: a, npages: 4 });
    }
    const [faithful, blind] = await Promise.all(devs.map((d) => d.refresh()));
    expect(faithful.counters.own_events_skipped).toBeGreaterThan(0);
    expect(blind.counters.own_events_skipped ?? 0).toBe(0);
    expect([...(await k.read(pid, a, 4))]).toEqual([9, 9, 9, 9]);
  });
});
