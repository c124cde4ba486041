import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DeviceManager } from '../../src/devices/device-manager.js';
import type { WorkerDevice } from '../../src/devices/worker-device.js';
import { OOM_REAPER } from '../../src/kernel/activity/oom.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
const RW = PROT.READ | PROT.WRITE;
let mgr: DeviceManager | null = null;
afterEach(async () => {
  await mgr?.stopAll();
  mgr = null;
});

async function setup(memMiB = 64): Promise<{ k: Kernel; pid: number; m: DeviceManager }> {
  const k = new Kernel({ memoryBytes: memMiB * MiB, deviceMemoryBytes: 16 * MiB });
  const p = k.createProcess('app');
  mgr = new DeviceManager(k, { deadlineMs: 60_000 });
  return { k, pid: p.pid, m: mgr };
}

async function dma(d: WorkerDevice, addr: number, write: boolean): Promise<boolean> {
  return d.command<boolean>('dma-access', { addr, write });
}

describe('gpu (amdgpu SVM)', () => {
  it('creates granularity-aligned SVM ranges on retry faults, splits them on UNMAP, and counts faults', async () => {
    const { k, pid, m } = await setup();
    const a = await k.mmap(pid, { length: 4 * MiB, prot: RW });
    await k.write(pid, a, new Uint8Array(4 * MiB).fill(1));
    const gpu = await m.create({ kind: 'gpu', pid });
    expect(await dma(gpu, a + 5 * PAGE, false)).toBe(true);
    expect(await dma(gpu, a + 3 * MiB, true)).toBe(true);
    await gpu.refresh();
    expect(gpu.counters.faults).toBe(2);
    expect(gpu.mirror.objects).toBe(2);
    expect(gpu.mirror.pages).toBe(1024); // two 2 MiB ranges fully validated
    await k.munmap(pid, a + MiB, PAGE);
    // the first range is split around the hole by deferred work
    await eventually(async () => expect((await gpu.refresh()).mirror.objects).toBe(3));
    // Splitting the VMA around the hole sent CLEAR over its aligned 2 MiB (split_huge_pmd_address),
    // which evicted the whole first range; the second range keeps its 512 pages.
    expect(gpu.mirror.pages).toBe(512);
    expect(gpu.sanitizer.checked).toBe(2);
    expect(gpu.sanitizer.findings).toBe(0);
  });

  it('with XNACK off, an eviction stops every queue and restores them after the delay', async () => {
    const { k, pid, m } = await setup();
    const a = await k.mmap(pid, { length: 2 * MiB, prot: RW });
    await k.write(pid, a, new Uint8Array(2 * MiB).fill(1));
    const gpu = await m.create({ kind: 'gpu', pid, options: { xnack: false } });
    expect(await dma(gpu, a, false)).toBe(true);
    await k.madvise(pid, a + PAGE, PAGE, 'dontneed'); // CLEAR: evicts the range
    expect(await dma(gpu, a + 8 * PAGE, true)).toBe(true); // waits for the restore
    await gpu.refresh();
    expect(gpu.counters.evicted_ms).toBeGreaterThanOrEqual(0);
    expect(gpu.sanitizer.findings).toBe(0);
  });
});

describe('rdma (mlx5 ODP)', () => {
  it('registers an MR (mapping what is present), faults, zaps on every event, refuses non-blockable ranges', async () => {
    const { k, pid, m } = await setup();
    const a = await k.mmap(pid, { length: 64 * PAGE, prot: RW });
    await k.write(pid, a, new Uint8Array(16 * PAGE).fill(2)); // 16 present pages
    const nic = await m.create({ kind: 'rdma', pid, options: { mrs: [{ addr: a, length: 64 * PAGE }] } });
    await nic.refresh();
    expect(nic.mirror.pages).toBe(16);
    expect(nic.counters.page_faults).toBe(0);
    expect(await dma(nic, a + 40 * PAGE, true)).toBe(true);
    await nic.refresh();
    expect(nic.counters.page_faults).toBe(1);
    await k.mprotect(pid, a, 64 * PAGE, PROT.READ);
    await nic.refresh();
    expect(nic.counters.page_invalidations).toBe(17);
    expect(nic.mirror.pages).toBe(0);
    // The OOM reaper's non-blockable UNMAP is refused: PTEs stay.
    OOM_REAPER.retryDelayMs = 1;
    const saved = OOM_REAPER.maxRetries;
    OOM_REAPER.maxRetries = 2;
    try {
      const r = await k.oomReap(pid);
      expect(r.complete).toBe(false);
    } finally {
      OOM_REAPER.maxRetries = saved;
      OOM_REAPER.retryDelayMs = 100;
    }
    expect(k.pagemap(pid, a, 1)[0].present).toBe(true);
  });

  it('implicit ODP creates 1 GiB children lazily and prefetches with the three advice modes', async () => {
    const { k, pid, m } = await setup();
    const a = await k.mmap(pid, { length: 32 * PAGE, prot: RW });
    await k.write(pid, a, new Uint8Array(4 * PAGE).fill(3));
    const nic = await m.create({ kind: 'rdma', pid, options: { implicit: true } });
    expect((await nic.command<unknown[]>('mrs')).length).toBe(0);
    expect((await nic.command<{ pages: number }>('advise', { addr: a, length: 32 * PAGE, advice: 'PREFETCH_NO_FAULT' })).pages).toBe(4);
    expect((await nic.command<unknown[]>('mrs')).length).toBe(1);
    expect((await nic.command<{ pages: number }>('advise', { addr: a, length: 32 * PAGE, advice: 'PREFETCH' })).pages).toBe(32);
    expect(await dma(nic, a + 20 * PAGE, true)).toBe(true); // needs a write fault: mapped read-only
    await nic.refresh();
    expect(nic.counters.page_prefetch).toBe(36);
    expect(nic.counters.page_faults).toBe(1);
    await k.munmap(pid, a, 32 * PAGE);
    // the empty child is destroyed by deferred work
    await eventually(async () => expect((await nic.command<unknown[]>('mrs')).length).toBe(0));
  });
});

describe('kvm', () => {
  it('maps guest frames through memslots, zaps SPTEs with one widened range, ages through young callbacks, flushes on release', async () => {
    const { k, pid, m } = await setup();
    const a = await k.mmap(pid, { length: 64 * PAGE, prot: RW });
    const vm = await m.create({ kind: 'kvm', pid, options: { memslots: [{ id: 0, baseGfn: 0x100, npages: 64, hva: a }] } });
    for (let i = 0; i < 8; i++) expect(await dma(vm, a + i * PAGE, true)).toBe(true);
    await vm.refresh();
    expect([vm.counters.pf_taken, vm.counters.pf_fixed]).toEqual([8, 8]);
    await k.madvise(pid, a, 4 * PAGE, 'dontneed');
    await vm.refresh();
    expect(vm.counters.mmu_shadow_zapped).toBe(4);
    expect(vm.counters.remote_tlb_flush).toBe(1);
    expect(vm.counters.mmu_invalidate_seq).toBe(1);
    expect(vm.counters.mmu_invalidate_in_progress).toBe(0);
    // Reclaim ages pages: the guest used them (young SPTEs), so they stay.
    await k.clearRefs(pid, 'referenced');
    const before = k.pagemap(pid, a + 4 * PAGE, 4).filter((e) => e.present).length;
    await k.reclaim(64);
    expect(k.pagemap(pid, a + 4 * PAGE, 4).filter((e) => e.present).length).toBe(before);
    await k.exit(pid);
    await vm.refresh();
    expect(vm.mirror.pages).toBe(0);
    expect(vm.sanitizer.checked).toBe(8);
    expect(vm.sanitizer.findings).toBe(0);
  });
});
