/**
 * Acknowledge-first (IntervalHandler.ackFirst, WorkerHost.handleCall): a quiet device answers a
 * blockable invalidation before its handler runs, and zaps right after, before any access. These
 * tests check that it is taken when it is sound, never when it is not (DMA in flight, an injected
 * ack delay or hang, a non-blockable call), and that the mirror and the sanitizer see the same
 * outcome either way.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT, type Process } from '../../../src/kernel/kernel.js';
import { DeviceManager } from '../../../src/devices/device-manager.js';
import type { WorkerDevice } from '../../../src/devices/worker-device.js';
import { MmuNotifierEvent } from '../../../src/notifier/range.js';

const PAGE = 4096;
const WINDOW = 8;
let mgr: DeviceManager | null = null;
afterEach(async () => {
  await mgr?.stopAll();
  mgr = null;
});

async function setup(kind: 'dmirror' | 'rdma' = 'dmirror'): Promise<{ k: Kernel; p: Process; a: number; dev: WorkerDevice }> {
  const k = new Kernel({ memoryBytes: 32 * 1024 * 1024 });
  const p = k.createProcess('t');
  mgr = new DeviceManager(k, { deadlineMs: 30_000 });
  const a = await k.mmap(p.pid, { length: WINDOW * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(WINDOW * PAGE).fill(5));
  const dev = await mgr.create({ kind, pid: p.pid, ...(kind === 'rdma' ? { options: { mrs: [{ addr: a, length: WINDOW * PAGE }] } } : {}) });
  return { k, p, a, dev };
}

async function acksFirst(dev: WorkerDevice): Promise<number> {
  await dev.refresh();
  return dev.counters.acks_first ?? 0;
}

describe('acknowledge-first', () => {
  it('answers a quiet dmirror first, and its mirror is zapped all the same', async () => {
    const { k, p, a, dev } = await setup();
    await dev.command('read', { addr: a, npages: WINDOW });
    expect((await dev.refresh(), dev.mirror.pages)).toBe(WINDOW);
    const before = await acksFirst(dev);
    for (let i = 0; i < WINDOW; i++) {
      const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a + i * PAGE, a + (i + 1) * PAGE, 'madvise');
      k.notifyEnd(p.mm, r);
    }
    expect((await acksFirst(dev)) - before).toBe(WINDOW);
    await dev.refresh();
    expect(dev.mirror.pages).toBe(0);
    // Faults back in and reads what the CPU wrote, with every access checked.
    const back = await dev.command<{ cpages: number; data: Uint8Array }>('read', { addr: a, npages: WINDOW });
    expect(back.cpages).toBe(WINDOW);
    expect(back.data[3 * PAGE]).toBe(5);
    await dev.refresh();
    expect(dev.sanitizer.checked).toBeGreaterThanOrEqual(2 * WINDOW);
    expect(dev.sanitizer.findings).toBe(0);
    expect(dev.counters.ack_first_broken ?? 0).toBe(0);
  });

  it('is taken by rdma (umem mutex free) too', async () => {
    const { k, p, a, dev } = await setup('rdma');
    const before = await acksFirst(dev);
    const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    k.notifyEnd(p.mm, r);
    expect((await acksFirst(dev)) - before).toBe(1);
  });

  it('is not taken while DMA is in flight: the answer waits for the transfer', async () => {
    const { k, p, a, dev } = await setup();
    await dev.command('read', { addr: a, npages: 1 });
    const before = await acksFirst(dev);
    // One access that holds its translation for 400 ms before its data moves.
    const sweep = dev.command<{ ok: number }>('dma-sweep', { addr: a, npages: 1, write: false, holdUs: 400_000 });
    await new Promise((r) => setTimeout(r, 100));
    let swept = false;
    void sweep.then(() => (swept = true));
    const r = await k.notify(p.mm, MmuNotifierEvent.UNMAP, a, a + PAGE, 'munmap');
    // The device answered only after its transfer drained.
    expect(swept || (await Promise.race([sweep.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), 1000))]))).toBe(true);
    k.notifyEnd(p.mm, r);
    expect((await sweep).ok).toBe(1);
    expect((await acksFirst(dev)) - before).toBe(0);
    await dev.refresh();
    expect(dev.sanitizer.findings).toBe(0);
  });

  it('is not taken with an injected ack delay, nor for a non-blockable call', async () => {
    const { k, p, a, dev } = await setup();
    const before = await acksFirst(dev);
    await dev.inject({ ackDelayUs: 20_000 });
    const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    k.notifyEnd(p.mm, r);
    expect((await acksFirst(dev)) - before).toBe(0);
    await dev.inject({ ackDelayUs: 0 });
    // The OOM reaper's non-blockable start (the device may refuse it, so it answers after its handler).
    const range = { pid: p.pid, start: a, end: a + PAGE, event: MmuNotifierEvent.UNMAP, flags: 0, owner: null, origin: 'oom_reaper' as const, id: 0 };
    const ret = await p.mm.notifier.invalidateRangeStart(range, false);
    if (ret === 0) p.mm.notifier.invalidateRangeEnd(range);
    expect((await acksFirst(dev)) - before).toBe(0);
    // And the next blockable one is answered first again.
    const r2 = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    k.notifyEnd(p.mm, r2);
    expect((await acksFirst(dev)) - before).toBe(1);
  });
});
