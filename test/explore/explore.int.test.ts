/**
 * The interleaving explorer on the real kernel, channel and personalities: every deliberate bug
 * mode is found, shrunk and replayed identically; the same seed gives the same reproduction; the
 * correct devices find nothing; the progress oracle reports a constructed deadlock (with its
 * cycle) and a constructed livelock (retry budget).
 */
import { describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { explore, replayRepro, formatRepro, scenarioOf } from '../../src/explore/explore.js';
import { schemaErrors, structureErrors, threadNames } from '../trace/check-trace.js';
import { checkScenario, loadScenario, scenarioToRaw, type Scenario } from '../../src/explore/scenario.js';
import { runScenario } from '../../src/explore/run.js';

const DIR = 'scenarios/explore';
const ALL = readdirSync(DIR).filter((f) => f.endsWith('.yaml') && f !== 'livelock.yaml' && f !== 'lock-across-fault.yaml');
/** Scenarios with a buggy device; the others are regressions of bugs the explorer found in devmirror. */
const BUGGY = ALL.filter((f) => loadScenario(join(DIR, f)).devices.some((d) => d.bug));
const REGRESSIONS = ALL.filter((f) => !BUGGY.includes(f));

/** The scenario with every device correct. */
function fixed(sc: Scenario): Scenario {
  const raw = scenarioToRaw(sc) as Record<string, unknown> & { devices: Array<Record<string, unknown>> };
  raw.devices = raw.devices.map((d) => ({ ...d, bug: null }));
  return checkScenario(raw);
}

describe('explorer: each bug mode is found, shrunk and replayed', () => {
  it('has a scenario for every bug mode', () => {
    const bugs = new Set(BUGGY.flatMap((f) => loadScenario(join(DIR, f)).devices.map((d) => d.bug)).filter(Boolean));
    for (const b of ['ack-before-quiesce', 'skip-seq-retry', ...['UNMAP', 'CLEAR', 'PROTECTION_VMA', 'PROTECTION_PAGE', 'SOFT_DIRTY', 'RELEASE', 'MIGRATE', 'EXCLUSIVE'].map((e) => `ignore-event:${e}`)]) {
      expect(bugs.has(b as never), b).toBe(true);
    }
  });

  for (const file of BUGGY) {
    it(`${file}: finds a sanitizer finding, shrinks it, replays it identically, and the same seed gives the same reproduction`, async () => {
      const sc = loadScenario(join(DIR, file));
      const a = await explore(sc, { runs: 300, seed: 1 });
      expect(a.repro, `no finding for ${file}`).not.toBeNull();
      const r = a.repro!;
      expect(r.finding.oracle).toBe('sanitizer');
      expect(['stale', 'lost-write', 'write-ro']).toContain(r.finding.kind);
      expect(r.finding.device).toBe(sc.devices.find((d) => d.bug)!.name);
      // Shrunk: never larger than what was first seen.
      expect(r.steps.length).toBeLessThanOrEqual(r.original.steps);
      expect(r.choices.length).toBe(r.steps.length);
      expect(formatRepro(r)).toContain('FINDING (sanitizer');
      const again = await replayRepro(r);
      expect(again.identical, JSON.stringify({ diverged: again.diverged, at: again.firstDifference })).toBe(true);
      const b = await explore(sc, { runs: 300, seed: 1 });
      expect(b.repro!.choices).toEqual(r.choices);
      expect(b.repro!.finding).toEqual(r.finding);
    });
  }

  it('regression scenarios (races the explorer found in devmirror) find nothing', async () => {
    expect(REGRESSIONS.length).toBeGreaterThan(0);
    for (const file of REGRESSIONS) {
      const r = await explore(loadScenario(join(DIR, file)), { runs: 150, seed: 3 });
      expect(r.repro?.finding ?? null, file).toBeNull();
    }
  });

  it('the correct devices find nothing in the same scenarios', async () => {
    for (const file of BUGGY) {
      const r = await explore(fixed(loadScenario(join(DIR, file))), { runs: 60, seed: 7 });
      expect(r.repro?.finding ?? null, file).toBeNull();
    }
  });
});

describe('explorer: trace of a reproduction', () => {
  it('exports the run as a valid Chrome trace with the kernel, device and process tracks', async () => {
    const sc = loadScenario(join(DIR, 'skip-seq-retry.yaml'));
    const a = await explore(sc, { runs: 300, seed: 1 });
    const r = await runScenario(scenarioOf(a.repro!), { policy: { kind: 'forced', keys: a.repro!.choices, strict: true }, trace: true });
    expect(r.finding?.oracle).toBe('sanitizer');
    const t = r.trace!;
    expect(schemaErrors(t)).toEqual([]);
    expect(structureErrors(t)).toEqual([]);
    const tracks = [...threadNames(t).keys()];
    expect(tracks).toEqual(expect.arrayContaining(['notifier (invalidations)', 'gpu0 (external)']));
    const names = t.traceEvents.filter((e) => e.ph === 'X').map((e) => e.name);
    // The racing fault, the invalidation that made its pfns stale, and the stale DMA.
    expect(names).toEqual(expect.arrayContaining(['hmm_range_fault', 'CLEAR', 'madvise']));
    expect(t.traceEvents.some((e) => e.ph === 'i' && e.name === 'dma write')).toBe(true);
  });
});

describe('explorer: the progress oracle', () => {
  it('reports a constructed deadlock (lock held across readBegin) and names the cycle', async () => {
    const sc = loadScenario(join(DIR, 'lock-across-fault.yaml'));
    const a = await explore(sc, { runs: 100, seed: 1 });
    const f = a.repro!.finding;
    expect(f.oracle).toBe('deadlock');
    // invalidation -> device (ack) -> device lock -> readBegin -> the same invalidation
    expect(f.message).toMatch(/invalidation #\d+ \(UNMAP from munmap.*-\[waits for dm0's acknowledgement.*-> device dm0 -\[the invalidate handler waits for the device's lock\]-> lock dm0\.lock \(held by fault\) -\[.*readBegin\]-> dm0 readBegin.*-\[readBegin waits for the invalidation window to close\]-> invalidation #\d+ \(UNMAP/);
    const r = await runScenario(sc, { policy: { kind: 'forced', keys: a.repro!.choices, strict: true } });
    expect(r.finding!.graph!.cycle!.length).toBe(5);
    expect(r.finding!.graph!.cycle![0]).toBe(r.finding!.graph!.cycle![4]);
    // With the bug off the same scenario completes under every schedule tried.
    expect((await explore(fixed(sc), { runs: 60, seed: 1 })).repro).toBeNull();
  });

  it('reports a constructed livelock: a fault answered EBUSY past its retry budget while mprotect keeps invalidating', async () => {
    const sc = loadScenario(join(DIR, 'livelock.yaml'));
    // The adversary: the CPU's next mprotect runs right after each readBegin reply reaches the
    // device, so every range fault carries a seq an invalidation has already moved.
    const adversary = { kind: 'custom' as const, choose: (run: readonly { key: string; label: string }[], taken: readonly { label: string }[]) => {
      const cpu = run.find((s) => s.key === 'thread cpu');
      if (cpu && (taken[taken.length - 1]?.label ?? '').includes('readBeginReply')) return cpu;
      return run.find((s) => s.key !== 'thread cpu') ?? run[0];
    } };
    const r = await runScenario(sc, { retryBudget: 5, policy: adversary as never });
    expect(r.finding?.oracle).toBe('livelock');
    expect(r.finding?.kind).toBe('retry-budget');
    expect(r.finding?.message).toMatch(/answered EBUSY 5 times in a row: invalidations from mprotect/);
    // A schedule that lets the device's fault finish before the CPU goes on: no alarm.
    const patient = { kind: 'custom' as const, choose: (run: readonly { key: string }[]) => run.find((s) => s.key !== 'thread cpu') ?? run[0] };
    const calm = await runScenario(sc, { retryBudget: 5, policy: patient as never });
    expect(calm.finding).toBeNull();
    expect(calm.ops.some((o) => o.startsWith('dev: dmirror read') && o.endsWith('cpages 1'))).toBe(true);
  });
});
