/** GET /metrics: Prometheus text with invalidation histograms by event and device kind and per-kind device figures. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { PROT } from '../../src/kernel/kernel.js';
import { MmuNotifierEvent, ORIGINS } from '../../src/notifier/range.js';
import { MmuNotifier } from '../../src/notifier/subscriptions.js';

let svc: Service | null = null;
let close: (() => Promise<void>) | null = null;
afterEach(async () => {
  await svc?.stop();
  await close?.();
  svc = null;
});

/** The value of one sample line, e.g. metric{a="b"} 3. */
function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || (labels === '' && l.startsWith(`${name} `)));
  if (!line) throw new Error(`no sample ${name}{${labels}}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** A service with one process, one mapped page, and a synchronous subscriber without a device. */
async function withInKernelSubscriber() {
  svc = new Service({ kernel: { memoryBytes: 16 * 1024 * 1024 } });
  const app = await buildServer(svc, { logger: false });
  close = () => app.close();
  const k = svc.kernel;
  const p = k.createProcess('m');
  const a = await k.mmap(p.pid, { length: 4096, prot: PROT.READ | PROT.WRITE });
  p.mm.notifier.register(new MmuNotifier({ invalidateRangeStart: () => 0 }, { label: 'in-kernel' }));
  return { app, k, p, a };
}

describe('metrics', () => {
  it('exports invalidation latency by event and device kind, device figures by kind, frames and clients', async () => {
    svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024 }, deadlineMs: 60_000 });
    const app = await buildServer(svc, { logger: false });
    close = () => app.close();
    const k = svc.kernel;
    const p = k.createProcess('m');
    const a = await k.mmap(p.pid, { length: 8 * 4096, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(8 * 4096).fill(1));
    const dev = await svc.devices.create({ kind: 'dmirror', pid: p.pid });
    await dev.command('read', { addr: a, npages: 4 });
    await k.mprotect(p.pid, a, 8 * 4096, PROT.READ); // a faithful dmirror zaps: the next read refaults
    await dev.command('read', { addr: a, npages: 4 });
    await k.munmap(p.pid, a, 8 * 4096);
    await dev.refresh();
    const r = await app.inject({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toContain('text/plain');
    const t = r.body;
    expect(sample(t, 'devmirror_invalidation_ack_seconds_count', 'event="UNMAP",device_kind="dmirror"')).toBe(1);
    expect(sample(t, 'devmirror_invalidations_total', 'event="UNMAP",result="ok"')).toBe(1);
    // By origin too: ORIGINS is a fixed list, so the label stays bounded.
    expect(sample(t, 'devmirror_invalidations_by_origin_total', 'origin="munmap",event="UNMAP"')).toBe(1);
    expect(sample(t, 'devmirror_invalidations_by_origin_total', 'origin="mprotect",event="PROTECTION_VMA"')).toBe(1);
    expect([...t.matchAll(/devmirror_invalidations_by_origin_total\{origin="([^"]+)"/g)].every((m) => (ORIGINS as readonly string[]).includes(m[1]))).toBe(true);
    expect(sample(t, 'devmirror_devices', 'device_kind="dmirror"')).toBe(1);
    expect(sample(t, 'devmirror_sanitizer_checked', 'device_kind="dmirror"')).toBe(8);
    expect(sample(t, 'devmirror_device_refaults', 'device_kind="dmirror"')).toBe(4);
    // The four pages came back in one read: one range fault (test_hmm faults up to 64 pages at once).
    expect(sample(t, 'devmirror_device_refault_faults', 'device_kind="dmirror"')).toBe(1);
    expect(sample(t, 'devmirror_invalidation_ack_seconds_count', 'event="PROTECTION_VMA",device_kind="dmirror"')).toBe(1);
    expect(sample(t, 'devmirror_sanitizer_findings', 'device_kind="dmirror"')).toBe(0);
    expect(sample(t, 'devmirror_page_faults_total', '')).toBeGreaterThanOrEqual(8);
    expect(sample(t, 'devmirror_frames_total', '')).toBe(k.mem.ramFrames);
    expect(sample(t, 'devmirror_channel_clients', '')).toBe(0);
    // Labels stay bounded: no device names or ids.
    expect(t).not.toMatch(/device_id=|device_name=/);
  });

  it('labels an origin outside ORIGINS as other, an unnamed event as UNKNOWN and a subscriber without a device as kernel, one series each', async () => {
    const { app, k, p, a } = await withInKernelSubscriber();
    // Two unknown origins and two unnamed event numbers: each pair lands in one series.
    for (const [event, origin] of [[1, 'no-such-origin'], [1, 'another-one'], [9, 'munmap'], [60, 'munmap']] as const) {
      const r = await k.notify(p.mm, event as never, a, a + 4096, origin as never);
      k.notifyEnd(p.mm, r);
    }
    const t = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(sample(t, 'devmirror_invalidations_by_origin_total', 'origin="other",event="CLEAR"')).toBe(2);
    expect(sample(t, 'devmirror_invalidations_by_origin_total', 'origin="munmap",event="UNKNOWN"')).toBe(2);
    expect(sample(t, 'devmirror_invalidations_total', 'event="UNKNOWN",result="ok"')).toBe(2);
    expect(sample(t, 'devmirror_invalidation_seconds_count', 'event="UNKNOWN"')).toBe(2);
    expect(sample(t, 'devmirror_invalidation_ack_seconds_count', 'event="CLEAR",device_kind="kernel"')).toBe(2);
    expect(t.match(/^devmirror_invalidations_by_origin_total\{origin="munmap",event="UNKNOWN"\}/gm)).toHaveLength(1);
  });

  it('a scrape counts the invalidations the deferred observers have not taken yet', async () => {
    const { app, k, p, a } = await withInKernelSubscriber();
    const count = async (): Promise<number> => sample((await app.inject({ method: 'GET', url: '/metrics' })).body, 'devmirror_invalidations_total', 'event="SOFT_DIRTY",result="ok"');
    const pending = (): number => (k as unknown as { deferredRecords: unknown[] }).deferredRecords.length;
    // The observers take records on a 10 ms timer (Kernel.flushObservers): with the timer held,
    // only the scrape's own flush can count these.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await k.notify(p.mm, MmuNotifierEvent.SOFT_DIRTY, a, a + 4096, 'clear_refs');
        k.notifyEnd(p.mm, r);
      }
      expect(pending()).toBe(3);
      expect(await count()).toBe(3);
      expect(pending()).toBe(0);
      const r = await k.notify(p.mm, MmuNotifierEvent.SOFT_DIRTY, a, a + 4096, 'clear_refs');
      k.notifyEnd(p.mm, r);
      expect(await count()).toBe(4);
    } finally {
      vi.useRealTimers();
    }
  });
});
