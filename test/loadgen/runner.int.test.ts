/** devmirror bench: a short mixed run reports every event with latencies, and correct devices stay clean. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBench, DEFAULT_BENCH, validateBench } from '../../src/loadgen/runner.js';
import { parseBenchArgs, summary } from '../../src/loadgen/cli.js';

describe('devmirror bench', () => {
  it('runs the mixed workload over one device of each kind and reports per event and device kind', async () => {
    const progress: number[] = [];
    const r = await runBench({ ...DEFAULT_BENCH, durationMs: undefined, ops: 16, areaPages: 128, rangePages: 8, dmaRate: 500 }, (d) => progress.push(d.ops));
    expect(r.ops).toBe(16);
    expect(r.invalidations).toBeGreaterThan(16);
    const events = r.events.map((e) => e.event);
    for (const e of ['UNMAP', 'PROTECTION_VMA', 'CLEAR', 'SOFT_DIRTY', 'PROTECTION_PAGE']) expect(events, e).toContain(e);
    const kinds = new Set(r.byEventAndKind.map((x) => x.deviceKind));
    expect([...kinds].sort()).toEqual(['dmirror', 'gpu', 'kvm', 'rdma']);
    for (const x of r.byEventAndKind) {
      expect(x.ack.n).toBeGreaterThan(0);
      expect(x.round.p50).toBeGreaterThanOrEqual(0);
      expect(x.round.max).toBeGreaterThanOrEqual(x.round.p99);
    }
    expect(r.devices.map((d) => d.state)).toEqual(['running', 'running', 'running', 'running']);
    expect(r.totals.checked).toBeGreaterThan(0);
    expect(r.totals.findings).toBe(0);
    expect(r.totals.evictions).toBe(0);
    expect(r.machine).toHaveProperty('cpus');
    expect(summary(r)).toContain('accesses checked');
    // Every refaulted page is attributed to the invalidation that took it (EVENT:origin).
    expect(r.totals.refaults).toBeGreaterThan(0);
    for (const d of r.devices) {
      expect(Object.values(d.refaultCauses).reduce((a, n) => a + n, 0), d.name).toBe(d.refaults);
      for (const cause of Object.keys(d.refaultCauses)) expect(cause).toMatch(/^(unknown|[A-Z_]+:[a-z_?]+)$/);
      // Faults that refaulted: at least one per device that refaulted, at most one per page.
      expect(d.refaultFaults, d.name).toBeLessThanOrEqual(d.refaults);
      expect(d.refaultFaults > 0, d.name).toBe(d.refaults > 0);
    }
    expect(r.totals.refaultFaults).toBe(r.devices.reduce((a, d) => a + d.refaultFaults, 0));
    expect(summary(r)).toContain('refaulted pages by the invalidation that took them');
  });

  it('runs the OOM reaper against a refusing rdma device from a YAML scenario: refused starts are reported', async () => {
    const { options } = parseBenchArgs(['--scenario', 'bench/scenarios/oom-reaper-refusing.yaml', '--ops', '2']);
    expect(options).toMatchObject({ workload: 'oom-reaper', devices: { rdma: 1, kvm: 1, dmirror: 1 }, ops: 2 });
    const r = await runBench({ ...options, devices: { rdma: 1 } });
    const unmap = r.events.find((e) => e.event === 'UNMAP')!;
    expect(unmap.refused).toBeGreaterThan(0); // mlx5 refuses non-blockable ranges; the reaper retries
    expect(r.totals.findings).toBe(0);
  });

  it('parses scenarios and command-line overrides, and refuses bad options', () => {
    const a = parseBenchArgs(['--scenario', 'bench/scenarios/munmap-storm.json', '--devices', 'gpu=2', '--duration', '2s', '--policy', 'aware']);
    expect(a.options).toMatchObject({ workload: 'munmap', devices: { gpu: 2 }, durationMs: 2000, policy: 'aware', rangePages: 16 });
    const b = parseBenchArgs(['--devices', '3', '--ops', '10']);
    expect(b.options.devices).toEqual({ gpu: 3, rdma: 3, kvm: 3, dmirror: 3 });
    expect(b.options.ops).toBe(10);
    expect(b.options.durationMs).toBeUndefined();
    expect(() => parseBenchArgs(['--duration', 'soon'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseBenchArgs(['--policy', 'lazy'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseBenchArgs(['--bogus'])).toThrow();
  });

  it('takes device options per kind from the command line and scenario files, checked as POST /v1/devices checks them', async () => {
    const a = parseBenchArgs(['--device-option', 'gpu.granularityPages=16', '--device-option', 'gpu.xnack=false', '--device-option', 'rdma.implicit=true', '--ops', '4']);
    expect(a.options.deviceOptions).toEqual({ gpu: { granularityPages: 16, xnack: false }, rdma: { implicit: true } });
    for (const bad of [['gpu.granularity=16'], ['gpu.granularityPages=0'], ['gpu.xnack=maybe'], ['kvm.memslots=1'], ['granularityPages=16']]) {
      expect(() => validateBench(parseBenchArgs(['--device-option', bad[0], '--ops', '1']).options), bad[0]).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    }
    expect(() => parseBenchArgs(['--target', 'http://h:1', '--process', 'p', '--device-option', 'gpu.xnack=true'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    // The replay's DMA target: on the command line, or over a scenario's replay; nothing to aim without one.
    expect(parseBenchArgs(['--replay', 'x.strace', '--dma-target', 'window']).options.replay).toMatchObject({ file: 'x.strace', dmaTarget: 'window' });
    expect(parseBenchArgs(['--scenario', 'bench/scenarios/replay-boehm-read-only.json', '--dma-target', 'window']).options.replay).toMatchObject({ timeScale: 10, dmaTarget: 'window' });
    expect(() => parseBenchArgs(['--dma-target', 'window'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    expect(() => parseBenchArgs(['--replay', 'x.strace', '--dma-target', 'near'])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    // The option reaches the device the run creates (and the report says what each device had).
    const dir = mkdtempSync(join(tmpdir(), 'devmirror-scenario-'));
    const file = join(dir, 'gran.json');
    writeFileSync(file, JSON.stringify({ workload: 'madvise', devices: { gpu: 1 }, deviceOptions: { gpu: { granularityPages: 16 } }, ops: 1, areaPages: 32, rangePages: 32, dmaRate: 0 }));
    const { options } = parseBenchArgs(['--scenario', file]);
    expect(options.deviceOptions).toEqual({ gpu: { granularityPages: 16 } });
    const r = await runBench(options);
    expect(r.devices[0]).toMatchObject({ kind: 'gpu', options: { granularityPages: 16 }, findings: 0 });
  });

  it('takes a scenario file\'s sweep, baselines and operation count, and refuses unknown keys', () => {
    const r = parseBenchArgs(['--scenario', 'bench/scenarios/range-sweep.json']);
    expect(r.sweep).toEqual({ dimension: 'range', values: [1, 16, 512, 2048, 8192] });
    expect(r.baselines).toBe(true);
    expect(r.options.ops).toBe(200);
    expect(r.options.durationMs).toBeUndefined(); // the default duration does not cut the count short
    expect(r.options.areaPages * 4096).toBeGreaterThan(2 * 2 ** 20 * 8); // ranges beyond 2 MiB fit
    // The command line still wins over the file.
    expect(parseBenchArgs(['--scenario', 'bench/scenarios/range-sweep.json', '--sweep', 'devices=1,2']).sweep).toEqual({ dimension: 'devices', values: [1, 2] });
    const dir = mkdtempSync(join(tmpdir(), 'devmirror-scenario-'));
    const bad = join(dir, 'typo.json');
    writeFileSync(bad, JSON.stringify({ workload: 'munmap', rangPages: 16 }));
    expect(() => parseBenchArgs(['--scenario', bad])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION', message: expect.stringContaining('rangPages') }));
    writeFileSync(bad, '[1, 2]');
    expect(() => parseBenchArgs(['--scenario', bad])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
  });

  it('runs ranges beyond 2 MiB (the huge-ranges scenario, shortened), sanitizer-clean', async () => {
    const { options } = parseBenchArgs(['--scenario', 'bench/scenarios/huge-ranges.json', '--ops', '6', '--dma-rate', '200']);
    expect(options.rangePages * 4096).toBe(8 * 2 ** 20);
    const r = await runBench(options);
    expect(r.ops).toBe(6);
    const clear = r.events.find((e) => e.event === 'CLEAR')!;
    expect(clear.invalidations).toBeGreaterThanOrEqual(6);
    expect(r.totals.findings).toBe(0);
    expect(r.devices.every((d) => d.state === 'running')).toBe(true);
  });
});
