/** Sweeps, baselines and the HTML report of devmirror bench. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_BENCH } from '../../src/loadgen/runner.js';
import { parseSweep, runSweep } from '../../src/loadgen/sweep.js';
import { measureBaselines } from '../../src/loadgen/baselines.js';
import { renderHtml } from '../../src/loadgen/report-html.js';

describe('bench sweeps and reports', () => {
  it('sweeps the device count: one run per value, devices spread over the kinds', async () => {
    // gpu makes SVM ranges only when it touches memory (no DMA here): sweep the others.
    const base = { ...DEFAULT_BENCH, devices: { dmirror: 1, kvm: 1, rdma: 1 }, workload: 'madvise' as const, durationMs: undefined, ops: 12, areaPages: 64, rangePages: 4, dmaRate: 0 };
    const s = await runSweep(base, 'devices', [1, 3]);
    expect(s.runs.map((r) => r.devices.length)).toEqual([1, 3]);
    expect(s.runs[1].devices.map((d) => d.kind).sort()).toEqual(['dmirror', 'kvm', 'rdma']);
    for (const r of s.runs) {
      expect(r.ops).toBe(12);
      expect(r.events.find((e) => e.event === 'CLEAR')!.invalidations).toBeGreaterThanOrEqual(12);
      expect(r.totals.findings).toBe(0);
      expect(r.histograms['round|CLEAR'].reduce((a, b) => a + b, 0)).toBe(r.events.find((e) => e.event === 'CLEAR')!.invalidations);
    }
    const html = renderHtml(s);
    expect(html).toContain('<svg');
    expect(html).toContain('Sweep of devices = 1, 3');
    expect(html).not.toContain('<script');
  });

  it('runs external client processes next to the workers; their acknowledgements are reported and checked', async () => {
    const { runBench } = await import('../../src/loadgen/runner.js');
    const r = await runBench({ ...DEFAULT_BENCH, devices: { dmirror: 1 }, clients: 3, workload: 'madvise', durationMs: undefined, ops: 10, areaPages: 64, rangePages: 4, dmaRate: 0 });
    const ext = r.devices.filter((d) => d.kind === 'bench');
    expect(ext).toHaveLength(3);
    expect(ext.every((d) => d.state === 'running' && d.invalidations >= 10 && d.findings === 0)).toBe(true);
    const row = r.byEventAndKind.find((x) => x.event === 'CLEAR' && x.deviceKind === 'bench')!;
    expect(row.ack.n).toBeGreaterThanOrEqual(30); // 3 clients x 10 madvise
    expect(r.totals.findings).toBe(0);
  });

  it('measures the same-run baselines at the run\'s worker count', async () => {
    const b = await measureBaselines(2, 200);
    expect(b.workers).toBe(2);
    for (const p of [b.atomicsBlocking, b.atomicsSpin, b.atomicsWaitAsync, b.postMessage]) {
      expect(p.n).toBe(200);
      expect(p.p50).toBeGreaterThan(0);
      expect(p.max).toBeGreaterThanOrEqual(p.p99);
    }
  });

  it('parses sweeps and refuses unknown dimensions and bad values', () => {
    expect(parseSweep('range=1,16,512')).toEqual({ dimension: 'range', values: [1, 16, 512] });
    expect(parseSweep('clients=1,10')).toEqual({ dimension: 'clients', values: [1, 10] });
    expect(parseSweep('policy=blind,aware')).toEqual({ dimension: 'policy', values: ['blind', 'aware'] });
    expect(() => parseSweep('threads=1,2')).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseSweep('policy=lazy')).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseSweep('devices=0')).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
  });
});
