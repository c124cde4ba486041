/**
 * The chaos soak, short: every device kind as a worker and as a client process, random syscalls,
 * kernel activity and injected faults, checked for lost writes, stale accesses, deadline overruns,
 * leaked frames and subscriptions; and a deliberately buggy device is caught, pointed at in the
 * record, and caught again by `replay`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSoak } from '../../src/soak/soak.js';
import { readRecord } from '../../src/soak/record.js';
import { replaySoak } from '../../src/soak/replay.js';

const dir = mkdtempSync(join(tmpdir(), 'devmirror-soak-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('chaos soak', () => {
  it('runs every kind over both transports through faults and kernel activity with nothing lost or leaked', async () => {
    const record = join(dir, 'clean.jsonl');
    const r = await runSoak({ durationMs: 25_000, seed: 20261126, checkEveryMs: 8_000, faultEvery: 25, record, deadlineMs: 3000 });
    if (!r.ok) console.error(r.problems.slice(0, 10));
    expect(r.problemsByCategory).toEqual({});
    expect(r.ok).toBe(true);
    expect(r.operations).toBeGreaterThan(50);
    expect(r.invalidations).toBeGreaterThan(r.operations);
    expect(Object.keys(r.invalidationsByEvent)).toEqual(expect.arrayContaining(['UNMAP', 'CLEAR', 'MIGRATE', 'SOFT_DIRTY']));
    expect(Object.values(r.faultsInjected).reduce((s, v) => s + v, 0)).toBeGreaterThan(0);
    expect(r.checks).toBeGreaterThanOrEqual(2);
    expect(r.pagesVerified).toBeGreaterThan(1000);
    expect(r.deviceWritesVerified).toBeGreaterThan(0);
    expect(r.sanitizerChecked).toBeGreaterThan(0);
    expect(r.maxInvalidationMs).toBeLessThanOrEqual(r.deadlineBoundMs);
    // The record: a header with the seed, every operation in order, the checkpoints, the summary.
    const rec = readRecord(record);
    expect(rec.header.seed).toBe(20261126);
    expect(rec.ops.map((o) => o.i)).toEqual(Array.from({ length: r.operations }, (_, i) => i));
    expect(rec.checks.length).toBe(r.checks);
    expect(rec.summary?.ok).toBe(true);
    expect(readFileSync(record, 'utf8')).toContain('"t":"inv"');
  }, 240_000);

  it('catches a device that acknowledges before quiescing its DMA, names the operation in the record, and replay finds it again', async () => {
    const record = join(dir, 'buggy.jsonl');
    const r = await runSoak({ durationMs: 12_000, seed: 7, checkEveryMs: 4_000, external: false, faults: false, record, bug: { role: 'gpu-w', mode: 'ack-before-quiesce' }, dma: { rate: 400, writeMix: 0.5, transferUs: 2000 } });
    expect(r.ok).toBe(false);
    expect(r.problemsByCategory['stale-access']).toBeGreaterThan(0);
    expect(r.problems.every((p) => p.category !== 'stale-access' || p.detail.startsWith('gpu-w'))).toBe(true);
    const rec = readRecord(record);
    const first = rec.problems.find((p) => p.category === 'stale-access')!;
    expect(rec.ops.some((o) => o.i === first.i)).toBe(true);
    const replay = await replaySoak(record, 2);
    expect(replay.operations).toBe(r.operations);
    expect(replay.runs).toHaveLength(2);
    expect(replay.reproduced).toBeGreaterThanOrEqual(1);
    expect(replay.runs.some((x) => (x.problemsByCategory['stale-access'] ?? 0) > 0)).toBe(true);
  }, 240_000);
});
