import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DeviceManager } from '../../src/devices/device-manager.js';
import type { WorkerDevice } from '../../src/devices/worker-device.js';
import { OOM_REAPER } from '../../src/kernel/activity/oom.js';
import { eventually } from '../helpers/eventually.js';
import type { EventPolicy } from '../../src/devices/protocol.js';
import { ERRNO, HMM_PFN } from '../../src/kernel/hmm.js';
import { Gpu } from '../../workers/gpu.js';
import { DevSub, type DeviceHost, type FaultRequest, type IntervalHandler, type VmaInfo } from '../../workers/runtime/host.js';

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


/**
 * A DeviceHost without a kernel, to call the gpu's fault handler directly (the DMA engine only
 * faults on a page it cannot use): one VMA per entry, every page present (frame = page index),
 * a write request on a read-only VMA is EPERM, every request answers after a macrotask (a round
 * trip), and range faults are counted.
 */
function fakeHost(vmas: VmaInfo[]): DeviceHost & { rangeFaults: number } {
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
  let ids = 1;
  const host = {
    deviceId: 1,
    pid: 1,
    kind: 'gpu',
    name: 'gpu-fake',
    policy: 'faithful',
    options: {},
    counters: {} as Record<string, number>,
    hotCounters<T extends Record<string, number>>(init: T): T {
      return init;
    },
    counterSnapshot() {
      return { ...this.counters };
    },
    ramFrames: 1 << 20,
    rangeFaults: 0,
    async insertInterval(start: number, length: number, handler: IntervalHandler) {
      await tick();
      return new DevSub(ids++, start, length, handler, 0);
    },
    async removeInterval() {
      await tick();
    },
    async readBegin(sub: DevSub) {
      await tick();
      return sub.seq;
    },
    async rangeFault(_sub: DevSub, _seq: number, start: number, end: number, req: FaultRequest) {
      await tick();
      host.rangeFaults++;
      const pfns = new Uint32Array((end - start) / PAGE);
      for (let i = 0; i < pfns.length; i++) {
        const va = start + i * PAGE;
        const v = vmas.find((x) => va >= x.start && va < x.end);
        if (!v) return { ret: ERRNO.EFAULT, pfns, gens: new Int32Array(pfns.length), tick: 0 };
        const w = v.prot & PROT.WRITE;
        if (req.defaultFlags & HMM_PFN.REQ_WRITE && !w) return { ret: ERRNO.EPERM, pfns, gens: new Int32Array(pfns.length), tick: 0 };
        pfns[i] = (HMM_PFN.VALID | (w ? HMM_PFN.WRITE : 0) | (va / PAGE)) >>> 0;
      }
      return { ret: 0, pfns, gens: new Int32Array(pfns.length), tick: 0 };
    },
    async vma(va: number) {
      await tick();
      return vmas.find((x) => va >= x.start && va < x.end) ?? null;
    },
    onCommand() {},
    log() {},
    sleepUs: (us: number) => new Promise<void>((r) => setTimeout(r, us / 1000)),
    holdTimers() {},
    forget() {},
  };
  return host as unknown as DeviceHost & { rangeFaults: number };
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

  it('de-duplicates retry faults as svm_range_restore_pages: concurrent faults on a range restore it once, and a fault within 2 ms of the restore does not restore again', async () => {
    const a = 0x40000000;
    const host = fakeHost([{ start: a, end: a + 16 * PAGE, prot: RW, shared: false, file: false }]);
    const gpu = new Gpu(host);
    // Two faults on one range at once: the second waits for the range's migrate_mutex, then finds
    // the range validated after it arrived ("already restored").
    expect(await Promise.all([gpu.fault(a + PAGE, false), gpu.fault(a + 9 * PAGE, true)])).toEqual([true, true]);
    expect(host.rangeFaults).toBe(1);
    expect(host.counters).toMatchObject({ faults: 2, restores: 1, faults_already_restored: 1, faults_replayed: 0 });
    // A fault on an already-valid page right after the restore: dropped, no range fault.
    expect(await gpu.fault(a + 3 * PAGE, false)).toBe(true);
    expect(host.rangeFaults).toBe(1);
    expect(host.counters).toMatchObject({ restores: 1, faults_already_restored: 2 });
    // After the window a fault restores the range again.
    await new Promise((r) => setTimeout(r, 5));
    expect(await gpu.fault(a + 3 * PAGE, false)).toBe(true);
    expect(host.rangeFaults).toBe(2);
    expect(host.counters.restores).toBe(2);
  });

  it('two concurrent DMA faults on one SVM range cause one range restore (one hmm_range_fault in the kernel)', async () => {
    const { k, pid, m } = await setup();
    const a = await k.mmap(pid, { length: 16 * PAGE, prot: RW });
    await k.write(pid, a, new Uint8Array(16 * PAGE).fill(1));
    const gpu = await m.create({ kind: 'gpu', pid, options: { granularityPages: 16 } });
    let rangeFaults = 0;
    const rangeFault = k.rangeFault.bind(k);
    k.rangeFault = (p, r) => {
      rangeFaults++;
      return rangeFault(p, r);
    };
    expect(await Promise.all([dma(gpu, a + PAGE, false), dma(gpu, a + 9 * PAGE, true)])).toEqual([true, true]);
    await gpu.refresh();
    expect(gpu.mirror.objects).toBe(1);
    expect(rangeFaults).toBe(1);
    expect(gpu.counters.restores).toBe(1);
    expect(gpu.counters.faults_already_restored).toBe(1);
    expect(gpu.counters.faults).toBe(2);
    expect(gpu.sanitizer.findings).toBe(0);
  });

  it('a fault in the read-only part of a range within 2 ms of its restore is dropped, replayed after the window, then refused', async () => {
    const a = 0x40000000;
    const vmas = [{ start: a, end: a + 16 * PAGE, prot: RW, shared: false, file: false }];
    const host = fakeHost(vmas);
    const gpu = new Gpu(host);
    expect(await gpu.fault(a, false)).toBe(true); // the range: one VMA, 16 pages, writable
    expect(gpu.summary()).toMatchObject({ objects: 1, pages: 16, writable: 16 });
    // mprotect of the tail: the VMA splits, the range does not.
    vmas.splice(0, 1, { ...vmas[0], end: a + 8 * PAGE }, { start: a + 8 * PAGE, end: a + 16 * PAGE, prot: PROT.READ, shared: false, file: false });
    await new Promise((r) => setTimeout(r, 5));
    expect(await Promise.all([gpu.fault(a, true), gpu.fault(a + 12 * PAGE, true)])).toEqual([true, false]);
    expect(host.rangeFaults).toBe(3); // the first restore, then one per VMA of the range
    expect(host.counters).toMatchObject({ restores: 2, faults_replayed: 1, faults_refused: 1 });
    expect(gpu.summary()).toMatchObject({ objects: 1, pages: 16, writable: 8 });
    expect(await gpu.fault(a + 12 * PAGE, false)).toBe(true); // a read fault there is fine
  });

  for (const [policy, roHead] of [
    ['faithful', false],
    ['faithful', true],
    ['aware', false],
    ['blind', true],
  ] as Array<[EventPolicy, boolean]>) {
    it(`maps a range spanning a read-only and a writable VMA part by part, each with its own permission (${policy}, read-only ${roHead ? 'head' : 'tail'})`, async () => {
      const { k, pid, m } = await setup();
      const a = await k.mmap(pid, { length: 16 * PAGE, prot: RW });
      await k.write(pid, a, new Uint8Array(16 * PAGE).fill(1));
      const gpu = await m.create({ kind: 'gpu', pid, policy, options: { granularityPages: 16 } });
      expect(await dma(gpu, a + 4 * PAGE, false)).toBe(true); // the range: one VMA, 16 pages
      const ro = roHead ? a : a + 8 * PAGE;
      const rw = roHead ? a + 8 * PAGE : a;
      await k.mprotect(pid, ro, 8 * PAGE, PROT.READ); // splits the VMA, not the range
      await k.madvise(pid, a, 16 * PAGE, 'dontneed'); // CLEAR: every policy drops the whole range
      for (let i = 0; i < 8; i++) expect(await dma(gpu, rw + i * PAGE, true)).toBe(true);
      for (let i = 0; i < 8; i++) expect(await dma(gpu, ro + i * PAGE, true)).toBe(false);
      for (let i = 0; i < 16; i++) expect(await dma(gpu, a + i * PAGE, false)).toBe(true);
      await gpu.refresh();
      expect(gpu.mirror.objects).toBe(1);
      expect(gpu.mirror.pages).toBe(16);
      expect(gpu.mirror.writable).toBe(8);
      expect(gpu.counters.faults_refused).toBeGreaterThan(0);
      expect(gpu.sanitizer.checked).toBeGreaterThan(0);
      expect(gpu.sanitizer.findings).toBe(0);
      // Device writes landed in the writable part only (dontneed left zero pages).
      expect((await k.read(pid, rw, PAGE))[0]).not.toBe(0);
      expect((await k.read(pid, ro, 8 * PAGE)).every((b) => b === 0)).toBe(true);
    });
  }
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
