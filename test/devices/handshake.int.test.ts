/**
 * The mailbox handshake's wake-up protocol (docs/handshake.md): calls and ends published by their
 * slot's SEQ, a device rung only when parked, the kernel woken only when parked. A lost wake-up
 * does not lose data (the timeouts bound it), so these tests count the late wakes the timeouts
 * caught instead: zero in a correct run.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT, type Process } from '../../src/kernel/kernel.js';
import { DeviceManager, type DeviceManagerOptions } from '../../src/devices/device-manager.js';
import type { WorkerDevice } from '../../src/devices/worker-device.js';
import { MB } from '../../src/kernel/layout.js';
import { MmuNotifierEvent } from '../../src/notifier/range.js';

const PAGE = 4096;
const WINDOW = 32;
let mgr: DeviceManager | null = null;
afterEach(async () => {
  await mgr?.stopAll();
  mgr = null;
});

async function setup(n: number, opts: DeviceManagerOptions): Promise<{ k: Kernel; p: Process; a: number; devs: WorkerDevice[] }> {
  const k = new Kernel({ memoryBytes: 32 * 1024 * 1024 });
  const p = k.createProcess('t');
  mgr = new DeviceManager(k, { deadlineMs: 30_000, ...opts });
  const a = await k.mmap(p.pid, { length: WINDOW * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(WINDOW * PAGE).map((_, i) => (i >> 12) & 0xff));
  const devs: WorkerDevice[] = [];
  for (let i = 0; i < n; i++) devs.push(await mgr.create({ kind: 'dmirror', pid: p.pid }));
  for (const d of devs) await d.command('read', { addr: a, npages: WINDOW });
  return { k, p, a, devs };
}

/** One invalidation round of one page (CLEAR, as madvise's), start and end. */
async function round(k: Kernel, p: Process, a: number, i: number): Promise<void> {
  const va = a + (i % WINDOW) * PAGE;
  const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, va, va + PAGE, 'madvise');
  k.notifyEnd(p.mm, r);
}

/** The device read the window back: every page as the CPU wrote it. */
async function readsBack(d: WorkerDevice, a: number): Promise<void> {
  const r = await d.command<{ cpages: number; data: Uint8Array }>('read', { addr: a, npages: WINDOW });
  expect(r.cpages).toBe(WINDOW);
  for (let pg = 0; pg < WINDOW; pg++) expect(r.data[pg * PAGE]).toBe(pg & 0xff);
}

const mailbox = (d: WorkerDevice): Int32Array => (d as unknown as { mailbox: Int32Array }).mailbox;
const heads = (d: WorkerDevice): { callHead: number; endHead: number } => d as unknown as { callHead: number; endHead: number };

describe('mailbox handshake wake-ups', () => {
  it('completes every round through both park paths without a lost wake-up', async () => {
    // No spinning on either side: every call wakes a parked device and every answer a parked
    // kernel, so each round goes through both Dekker pairs.
    const { k, p, a, devs } = await setup(2, { workerSpinUs: 0, kernelSpinUs: 0 });
    // Widen both race windows: a call landing between a device's last check and its PARKED
    // store, an answer landing between the kernel's re-poll and its wait. The other side of each
    // Dekker pair must catch them (without it, most rounds here lose a wake).
    for (const d of devs) await d.command('inject', { parkRaceUs: 20 });
    mgr!.group.parkRaceUs = 20;
    const ROUNDS = 1500;
    for (let i = 0; i < ROUNDS; i++) {
      await round(k, p, a, i);
      // Messages and range faults interleaved with the rounds (a reply rings the same doorbell).
      if (i % 250 === 249) for (const d of devs) await readsBack(d, a);
      // Now and then let the devices park with only ends unread (rung late, on purpose).
      if (i % 100 === 50) await new Promise((r) => setTimeout(r, 3));
    }
    const g = mgr!.group;
    // Back to back, a device often has not parked yet when the next call comes; a good share of
    // the rounds still goes through both parks (about 40% in runs on 2 vCPUs).
    expect(g.parks).toBeGreaterThan(ROUNDS / 10);
    expect(g.deviceWakes).toBeGreaterThan(ROUNDS / 10);
    expect(g.lateWakes).toBe(0);
    for (const d of devs) {
      await d.refresh();
      expect(d.handshake.answered).toBeGreaterThanOrEqual(ROUNDS);
      expect(d.counters.late_wakes ?? 0).toBe(0);
      expect(d.sanitizer.findings).toBe(0);
      expect(d.state).toBe('running');
    }
  }, 120_000);

  it('wakes the kernel for a set parked while an earlier set still waits', async () => {
    // Set A waits for two slow devices; set B, parked later, needs one answer from a fast device.
    // B's answer must wake the kernel although A's wake point (WAKE_AT: two answers away) was set
    // for A.
    const k = new Kernel({ memoryBytes: 32 * 1024 * 1024 });
    mgr = new DeviceManager(k, { deadlineMs: 30_000, kernelSpinUs: 0 });
    const sides = [];
    for (const [name, n] of [['slow', 2], ['fast', 1]] as const) {
      const p = k.createProcess(name);
      const a = await k.mmap(p.pid, { length: WINDOW * PAGE, prot: PROT.READ | PROT.WRITE });
      await k.write(p.pid, a, new Uint8Array(WINDOW * PAGE).fill(1));
      const ds = [];
      for (let i = 0; i < n; i++) {
        const d = await mgr.create({ kind: 'dmirror', pid: p.pid });
        await d.command('read', { addr: a, npages: WINDOW });
        ds.push(d);
      }
      sides.push({ p, a, ds });
    }
    const [slow, fast] = sides;
    for (const d of slow.ds) await d.command('inject', { ackDelayUs: 400_000 });
    // The fast device answers after 2 ms, so every B round parks (the kernel does not spin here).
    await fast.ds[0].command('inject', { ackDelayUs: 2_000 });
    const order: string[] = [];
    const a = (async () => {
      const r = await k.notify(slow.p.mm, MmuNotifierEvent.CLEAR, slow.a, slow.a + PAGE, 'madvise');
      order.push('A');
      k.notifyEnd(slow.p.mm, r);
    })();
    await new Promise((r) => setTimeout(r, 20)); // A is parked
    for (let i = 0; i < 5; i++) {
      const r = await k.notify(fast.p.mm, MmuNotifierEvent.CLEAR, fast.a + i * PAGE, fast.a + (i + 1) * PAGE, 'madvise');
      order.push(`B${i}`);
      k.notifyEnd(fast.p.mm, r);
    }
    await a;
    // Every B round completed while A waited, each woken by the fast device's answer, not by the
    // kernel's 50 ms timeout.
    expect(order).toEqual(['B0', 'B1', 'B2', 'B3', 'B4', 'A']);
    expect(mgr.group.parks).toBe(6);
    expect(mgr.group.lateWakes).toBe(0);
  }, 60_000);

  it('takes the ends of a parked device that gets no further call', async () => {
    const { k, p, a, devs } = await setup(1, { workerSpinUs: 0 });
    for (let i = 0; i < 5; i++) await round(k, p, a, i);
    const d = devs[0];
    // The group rings for unread ends after END_RING_DELAY_MS (1 ms); give it generous time.
    const deadline = Date.now() + 5000;
    while (Atomics.load(mailbox(d), MB.END_TAIL) !== heads(d).endHead && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(Atomics.load(mailbox(d), MB.END_TAIL)).toBe(heads(d).endHead);
    expect(d.endsUnread()).toBe(false);
  }, 30_000);

  it('holds an end back until the next call, a message or the next check phase carries it, in order', async () => {
    const { k, p, a, devs } = await setup(1, {});
    const d = devs[0];
    const va = (i: number): number => a + i * PAGE;
    const e0 = heads(d).endHead;
    const r1 = await k.notify(p.mm, MmuNotifierEvent.CLEAR, va(0), va(1), 'madvise');
    k.notifyEnd(p.mm, r1);
    // Held: the kernel went on without writing the end slot (WorkerDevice.pendingRange).
    expect(heads(d).endHead).toBe(e0);
    // The next call carries it: written right after the call's own SEQ store.
    const c0 = heads(d).callHead;
    const x = k.notify(p.mm, MmuNotifierEvent.CLEAR, va(1), va(2), 'madvise');
    expect(heads(d).callHead).toBe(c0 + 1);
    expect(heads(d).endHead).toBe(e0 + 1);
    const r2 = await x;
    k.notifyEnd(p.mm, r2);
    expect(heads(d).endHead).toBe(e0 + 1);
    // No call follows: the group's immediate writes it within one event-loop turn.
    await new Promise((r) => setImmediate(r));
    expect(heads(d).endHead).toBe(e0 + 2);
    // A message never overtakes a held end: sending one writes the end first.
    const r3 = await k.notify(p.mm, MmuNotifierEvent.CLEAR, va(2), va(3), 'madvise');
    k.notifyEnd(p.mm, r3);
    expect(heads(d).endHead).toBe(e0 + 2);
    const stats = d.refresh();
    expect(heads(d).endHead).toBe(e0 + 3);
    await stats;
    // The device took every end (its pump runs before it handles the message) and the sanitizer
    // closed every window without a finding; the pages fault back as the CPU wrote them.
    expect(Atomics.load(mailbox(d), MB.END_TAIL)).toBe(e0 + 3);
    expect(d.sanitizer.findings).toBe(0);
    await readsBack(d, a);
  }, 30_000);

  // Ring positions are int32 on both sides and wrap; a slot is found by `position & 63`.
  for (const [label, start] of [
    ['2^31 (int32 overflow)', 2 ** 31 - 100],
    ['2^32 (-1 to 0)', -10],
  ] as const) {
    it(`crosses the ring position wrap at ${label} on the fast and the parked paths`, async () => {
      const { k, p, a, devs } = await setup(1, { ringStart: start });
      const d = devs[0];
      const ROUNDS = 300;
      for (let i = 0; i < ROUNDS; i++) {
        await round(k, p, a, i);
        if (i % 60 === 59) await new Promise((r) => setTimeout(r, 3)); // park with ends unread
      }
      // Both heads crossed the wrap (int32: past 2^31 - 1 they are negative, past -1 positive).
      for (const h of [heads(d).callHead, heads(d).endHead]) {
        if (start > 0) expect(h).toBeLessThan(0);
        else expect(h).toBeGreaterThan(0);
      }
      await readsBack(d, a);
      const deadline = Date.now() + 5000;
      while (Atomics.load(mailbox(d), MB.END_TAIL) !== heads(d).endHead && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      expect(Atomics.load(mailbox(d), MB.END_TAIL)).toBe(heads(d).endHead);
      await d.refresh();
      expect(d.handshake.answered).toBeGreaterThanOrEqual(ROUNDS);
      expect(d.counters.invalidations).toBeGreaterThanOrEqual(ROUNDS);
      expect(d.sanitizer.findings).toBe(0);
      expect(d.state).toBe('running');
    }, 60_000);
  }
});
