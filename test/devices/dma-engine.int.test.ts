/** A device's DMA engine: the window it works on, and a page list that narrows it (the replay's "written" target). */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DeviceManager } from '../../src/devices/device-manager.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
let mgr: DeviceManager | null = null;
afterEach(async () => {
  await mgr?.stopAll();
  mgr = null;
});

describe('DMA engine', () => {
  it('with a page list touches only those pages of its window; an empty list lifts the restriction', async () => {
    const k = new Kernel({ memoryBytes: 16 * MiB });
    const p = k.createProcess('dma');
    mgr = new DeviceManager(k, { deadlineMs: 60_000 });
    const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(3));
    // dmirror faults page by page, so its mirror shows exactly which pages the engine touched.
    const dev = await mgr.create({ kind: 'dmirror', pid: p.pid });
    const only = [a + 3 * PAGE, a + 7 * PAGE + 100 /* rounded down to its page */, a + 40 * PAGE /* outside the window: ignored */];
    await dev.command('dma', { rate: 5000, pattern: 'random', writeMix: 0.5, start: a, end: a + 16 * PAGE, pages: only });
    await eventually(async () => expect((await dev.refresh()).sanitizer.checked).toBeGreaterThanOrEqual(100), 30_000);
    await dev.command('dma', { rate: 0 });
    const map = await dev.command<number[]>('mirror-map', { addr: a, npages: 16 });
    expect(map.map((v, i) => (v >= 0 ? i : -1)).filter((i) => i >= 0)).toEqual([3, 7]);
    await dev.command('dma', { rate: 5000, pages: [] });
    await eventually(async () => expect((await dev.refresh()).mirror.pages).toBeGreaterThan(2), 30_000);
    await dev.command('dma', { rate: 0 });
    expect(dev.sanitizer.findings).toBe(0);
  });
});
