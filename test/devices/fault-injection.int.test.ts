/** A device that is slow, hangs, crashes or refuses never hangs the kernel. */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DeviceManager } from '../../src/devices/device-manager.js';
import { OOM_REAPER } from '../../src/kernel/activity/oom.js';
import { FF } from '../../src/kernel/layout.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
const RW = PROT.READ | PROT.WRITE;
let mgr: DeviceManager | null = null;
afterEach(async () => {
  await mgr?.stopAll();
  mgr = null;
});

async function setup(deadlineMs = 60_000, options: Record<string, unknown> = {}) {
  const k = new Kernel({ memoryBytes: 32 * MiB });
  const p = k.createProcess('app');
  mgr = new DeviceManager(k, { deadlineMs });
  const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: RW });
  await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(1));
  const dev = await mgr.create({ kind: 'dmirror', pid: p.pid, options });
  await dev.command('read', { addr: a, npages: 16 });
  return { k, pid: p.pid, a, dev };
}

describe('fault injection', () => {
  it('an acknowledgement delay delays the invalidation, nothing else', async () => {
    const { k, pid, a, dev } = await setup();
    await dev.inject({ ackDelayUs: 40_000 });
    const t = performance.now();
    await k.munmap(pid, a, 16 * PAGE);
    expect(performance.now() - t).toBeGreaterThanOrEqual(35);
    expect(dev.state).toBe('running');
  });

  it('a device that hangs mid-handshake is evicted after the deadline; its worker exits before the PTEs change', async () => {
    const { k, pid, a, dev } = await setup(300);
    await dev.inject({ hang: true });
    const t = performance.now();
    await k.munmap(pid, a, 16 * PAGE);
    const done = performance.now();
    expect(done - t).toBeGreaterThanOrEqual(250);
    expect(dev.state).toBe('evicted');
    expect(dev.exitedAt).toBeGreaterThan(0);
    expect(dev.exitedAt).toBeLessThanOrEqual(done);
    expect(k.process(pid).mm.notifier.subscriberCount).toBe(0);
    expect(dev.handshake.evictions).toBe(1);
    // The kernel goes on: more invalidations complete at once.
    const b = await k.mmap(pid, { length: PAGE, prot: RW });
    await k.write(pid, b, new Uint8Array([1]));
    await k.munmap(pid, b, PAGE);
    expect(k.audit().problems).toEqual([]);
  });

  it('a gpu is called only over what it mirrors: hung before its first fault it goes unnoticed; hung after it, it is evicted', async () => {
    // The soak's hang fault relies on this: a fresh gpu has no svm range (amdgpu makes them at
    // its first fault), so no invalidation reaches it until it has touched a page.
    const k = new Kernel({ memoryBytes: 32 * MiB });
    const p = k.createProcess('app');
    mgr = new DeviceManager(k, { deadlineMs: 300 });
    const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: RW });
    await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(1));
    const dev = await mgr.create({ kind: 'gpu', pid: p.pid });
    await dev.inject({ hang: true });
    await k.clearRefs(p.pid, 'soft-dirty');
    expect(dev.state).toBe('running');
    expect(dev.handshake.evictions).toBe(0);
    await dev.inject({ hang: false });
    const before = k.process(p.pid).mm.notifier.subscriberCount;
    expect(await dev.command('dma-access', { addr: a, write: false })).toBeTruthy();
    expect(k.process(p.pid).mm.notifier.subscriberCount).toBeGreaterThan(before);
    await dev.inject({ hang: true });
    const t = performance.now();
    await k.clearRefs(p.pid, 'soft-dirty');
    expect(performance.now() - t).toBeGreaterThanOrEqual(250);
    expect(dev.state).toBe('evicted');
    expect(dev.handshake.evictions).toBe(1);
  });

  it('a crashed device is torn down and the kernel carries on', async () => {
    const { k, pid, a, dev } = await setup();
    await dev.inject({ crash: true });
    for (let i = 0; i < 100 && dev.state === 'running'; i++) await new Promise((r) => setTimeout(r, 10));
    expect(dev.state).toBe('crashed');
    await k.munmap(pid, a, 16 * PAGE);
    expect(k.process(pid).mm.notifier.subscriberCount).toBe(0);
  });

  it('refusing non-blockable invalidations leaves the OOM reaper unable to reap, PTEs untouched', async () => {
    const { k, pid, a, dev } = await setup();
    await dev.inject({ refuseNonblock: true });
    OOM_REAPER.retryDelayMs = 1;
    OOM_REAPER.maxRetries = 3;
    try {
      const r = await k.oomReap(pid);
      expect(r.complete).toBe(false);
    } finally {
      OOM_REAPER.retryDelayMs = 100;
      OOM_REAPER.maxRetries = 10;
    }
    expect(k.pagemap(pid, a, 16).every((e) => e.present)).toBe(true);
    expect(dev.handshake.refused).toBeGreaterThanOrEqual(3);
  });

  it('a device that cannot be stopped gets its frames quarantined, never reused', async () => {
    const { k, pid, a, dev } = await setup(200, { simulateUnstoppable: true });
    await dev.inject({ hang: true });
    const pfns = k.pagemap(pid, a, 16).map((e) => e.pfn as number);
    expect(pfns.every((x) => x !== null)).toBe(true);
    await k.munmap(pid, a, 16 * PAGE);
    expect(dev.state).toBe('evicted');
    expect(k.mem.quarantinedFrames()).toBe(16);
    for (const pfn of pfns) {
      expect(k.mem.hasFlag(pfn, FF.QUARANTINED)).toBe(true);
      expect(k.mem.hasFlag(pfn, FF.FREE)).toBe(false);
    }
    // Draining every free frame never hands out a quarantined one.
    const b = await k.mmap(pid, { length: 64 * PAGE, prot: RW });
    await k.write(pid, b, new Uint8Array(64 * PAGE).fill(2));
    const reused = k.pagemap(pid, b, 64).filter((e) => pfns.includes(e.pfn as number));
    expect(reused).toEqual([]);
    expect(k.audit().problems).toEqual([]);
  });

  it("a device's own write fault on the zero page invalidates its own range while it waits, and completes", async () => {
    const k = new Kernel({ memoryBytes: 32 * MiB });
    const p = k.createProcess('app');
    mgr = new DeviceManager(k, { deadlineMs: 60_000 });
    const a = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
    await k.read(p.pid, a, 4 * PAGE); // zero pages
    const gpu = await mgr.create({ kind: 'gpu', pid: p.pid, options: { granularityPages: 4 } });
    expect(await gpu.command('dma-access', { addr: a, write: true })).toBe(true);
    await gpu.refresh();
    expect(gpu.counters.invalidations).toBeGreaterThanOrEqual(1); // its own COW CLEARs
    expect(gpu.sanitizer.findings).toBe(0);
  });
});
