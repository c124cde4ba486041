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

  // Found by the soak: test_hmm skips its own MIGRATE without setSeq; the kernel's copy of the
  // subscription's seq had moved and the device's had not, so every later fault retried until EBUSY.
  it('faults other pages normally after migrating some to the device (own MIGRATE skipped)', async () => {
    const k = new Kernel({ memoryBytes: 32 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 });
    const p = k.createProcess('t');
    mgr = new DeviceManager(k, { deadlineMs: 30_000 });
    const dev = await mgr.create({ kind: 'dmirror', pid: p.pid });
    const addr = await k.mmap(p.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, addr, new Uint8Array(64 * PAGE).fill(3));
    expect((await dev.command<{ cpages: number }>('migrate-to-device', { addr, npages: 16 })).cpages).toBe(16);
    const r = await dev.command<{ cpages: number; data: Uint8Array }>('read', { addr: addr + 16 * PAGE, npages: 4 });
    expect(r.cpages).toBe(4);
    expect(r.data.every((b) => b === 3)).toBe(true);
    await dev.refresh();
    expect(dev.sanitizer.findings).toBe(0);
  });

  // Found by the soak: the grants of pages migrated into holes (never touched, or the zero page)
  // were dated inside the holes' MIGRATE window, so the device's read-back looked stale.
  it('migrates untouched and zero-page memory to the device without sanitizer findings', async () => {
    const k = new Kernel({ memoryBytes: 32 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 });
    const p = k.createProcess('t');
    mgr = new DeviceManager(k, { deadlineMs: 30_000 });
    const dev = await mgr.create({ kind: 'dmirror', pid: p.pid });
    const addr = await k.mmap(p.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.read(p.pid, addr + 32 * PAGE, 16 * PAGE); // zero pages
    for (const off of [0, 32]) {
      const r = await dev.command<{ cpages: number; data: Uint8Array }>('migrate-to-device', { addr: addr + off * PAGE, npages: 16 });
      expect(r.cpages).toBe(16);
      expect(r.data.every((b) => b === 0)).toBe(true);
    }
    expect(k.pagemap(p.pid, addr, 16).every((e) => e.devicePrivate === dev.id)).toBe(true);
    await dev.refresh();
    expect(dev.sanitizer.checked).toBeGreaterThanOrEqual(32);
    expect(dev.sanitizer.findings).toBe(0);
  });

  // Found by the soak: a device outlived its process (and kept its worker thread) forever.
  it('stops when its process exits, as the file of a process closes at exit', async () => {
    const k = new Kernel({ memoryBytes: 32 * 1024 * 1024 });
    const p = k.createProcess('t');
    mgr = new DeviceManager(k, { deadlineMs: 30_000 });
    const dev = await mgr.create({ kind: 'dmirror', pid: p.pid });
    const other = await mgr.create({ kind: 'dmirror', pid: k.createProcess('u').pid });
    const addr = await k.mmap(p.pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE });
    await dev.command('read', { addr, npages: 4 });
    await k.exit(p.pid);
    for (let i = 0; i < 200 && dev.alive; i++) await new Promise((res) => setTimeout(res, 10));
    expect(dev.state).toBe('stopped');
    expect(other.state).toBe('running');
    expect(k.audit().problems).toEqual([]);
  });
});
