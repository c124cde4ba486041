import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DeviceManager } from '../../src/devices/device-manager.js';

const PAGE = 4096;
let mgr: DeviceManager | null = null;
afterEach(async () => {
  await mgr?.stopAll();
  mgr = null;
});

describe('dmirror worker', () => {
  it('reads what the CPU wrote, faulting in, with the sanitizer checking every page', async () => {
    const k = new Kernel({ memoryBytes: 32 * 1024 * 1024 });
    const p = k.createProcess('t');
    mgr = new DeviceManager(k, { deadlineMs: 30_000 });
    const dev = await mgr.create({ kind: 'dmirror', pid: p.pid });
    const addr = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE });
    const data = new Uint8Array(16 * PAGE).map((_, i) => i & 0xff);
    await k.write(p.pid, addr, data);
    const r = await dev.command<{ cpages: number; faults: number; data: Uint8Array }>('read', { addr, npages: 16 });
    expect(r.cpages).toBe(16);
    expect(r.faults).toBe(1);
    expect(Buffer.from(r.data).equals(Buffer.from(data))).toBe(true);
    // munmap: the device gets UNMAP through the mailbox and drops its pages.
    await k.munmap(p.pid, addr, 16 * PAGE);
    await new Promise((res) => setTimeout(res, 300));
    expect(dev.sanitizer.checked).toBe(16);
    expect(dev.sanitizer.findings).toBe(0);
    expect(dev.handshake.calls).toBeGreaterThan(0);
    expect(dev.mirror.pages).toBe(0);
  });
});
