import { describe, expect, it } from 'vitest';
import { interleave, type Contender } from '../../src/lib/interleave.js';

/** A contender whose n-th round (0-based, counting every round it ran) takes `lat(n)` us. */
function fake(name: string, lat: (n: number) => number, log: string[], async = false): Contender & { calls: number } {
  const c = {
    name,
    calls: 0,
    round(): number | Promise<number> {
      const v = lat(c.calls++);
      log.push(name);
      return async ? Promise.resolve(v) : v;
    },
  };
  return c;
}

describe('interleave', () => {
  it('keeps `rounds` samples per contender, split over the blocks, and drops warm-up and re-entry rounds', async () => {
    const log: string[] = [];
    // Round k of each contender returns k: the kept samples show which rounds were kept.
    const a = fake('a', (k) => k, log);
    const b = fake('b', (k) => 1000 + k, log, true);
    const [ra, rb] = await interleave([a, b], { rounds: 12, blocks: 3, reentry: 2, warm: 5, tick: async () => undefined, settle: async () => undefined });
    // 5 warm + 3 blocks x (2 re-entry + 4 kept)
    expect(a.calls).toBe(5 + 3 * 6);
    expect(b.calls).toBe(5 + 3 * 6);
    expect(Array.from(ra.samples)).toEqual([7, 8, 9, 10, 13, 14, 15, 16, 19, 20, 21, 22]);
    expect(Array.from(rb.samples)).toEqual([1007, 1008, 1009, 1010, 1013, 1014, 1015, 1016, 1019, 1020, 1021, 1022]);
    expect(ra.blockP50).toEqual([8, 14, 20]);
    expect(ra.lat.n).toBe(12);
    expect(ra.lat.max).toBe(22);
    expect(rb.lat.p50).toBe(1014);
  });

  it('warms each contender for `warmMs` as well as `warm` rounds, before any block', async () => {
    const log: string[] = [];
    const busy = (ms: number): void => {
      const t = performance.now();
      while (performance.now() - t < ms);
    };
    // A round of `slow` takes at least 1 ms of wall time: with warm: 2 and warmMs: 20 its warm-up
    // lasts at least 20 ms, so it runs more than 2 rounds. `fast` takes no time: it keeps going
    // for its own 20 ms too.
    const stamps: Array<[number, number]> = [];
    const slow = fake('slow', () => {
      const t = performance.now();
      busy(1);
      stamps.push([t, performance.now()]);
      return 1;
    }, log);
    const fast = fake('fast', () => 1, log);
    const started = performance.now();
    await interleave([slow, fast], { rounds: 1, blocks: 1, reentry: 0, warm: 2, warmMs: 20, yieldEvery: 4, tick: async () => undefined, settle: async () => undefined });
    const firstKept = log.length - 2; // the block: one kept round each
    const warmSlow = log.slice(0, firstKept).filter((n) => n === 'slow').length;
    expect(warmSlow).toBeGreaterThan(2);
    // Its last warm round ended at least warmMs after the warm-up began.
    expect(stamps[warmSlow - 1][1] - started).toBeGreaterThanOrEqual(20);
    // Each warm-up is whole before the next contender's starts, and both come before the block.
    expect(log.slice(0, warmSlow).every((n) => n === 'slow')).toBe(true);
    expect(log.slice(firstKept)).toEqual(['slow', 'fast']);
    expect(fast.calls).toBeGreaterThan(2 + 1);
    // Without warmMs, exactly `warm` rounds.
    const log2: string[] = [];
    const s2 = fake('s', () => (busy(1), 1), log2);
    await interleave([s2], { rounds: 1, blocks: 1, reentry: 0, warm: 2, tick: async () => undefined, settle: async () => undefined });
    expect(s2.calls).toBe(3);
  });

  it('rotates the order of the contenders from block to block', async () => {
    const log: string[] = [];
    const cs = ['x', 'y', 'z'].map((n) => fake(n, () => 1, log));
    await interleave(cs, { rounds: 3, blocks: 3, reentry: 0, tick: async () => undefined, settle: async () => undefined });
    // One kept round per block and no re-entry: the log is the order of the blocks' turns.
    expect(log).toEqual(['x', 'y', 'z', 'y', 'z', 'x', 'z', 'x', 'y']);
  });

  it('probes every block of every contender, around its kept rounds only', async () => {
    const log: string[] = [];
    const a = fake('a', () => 1, log);
    const b = fake('b', () => 2, log);
    const seen: Array<[string, number, number]> = [];
    await interleave([a, b], {
      rounds: 4,
      blocks: 2,
      reentry: 1,
      tick: async () => undefined, settle: async () => undefined,
      probe: {
        before: () => log.length,
        after: (name, since) => seen.push([name, since, log.length]),
      },
    });
    // Each probe spans exactly the 2 kept rounds of one block (the re-entry round comes before).
    expect(seen).toEqual([
      ['a', 1, 3],
      ['b', 4, 6],
      ['b', 7, 9],
      ['a', 10, 12],
    ]);
  });

  it('lets the event loop turn every `yieldEvery` rounds', async () => {
    let ticks = 0;
    const c = fake('a', () => 1, []);
    await interleave([c], { rounds: 64, blocks: 1, reentry: 0, yieldEvery: 16, tick: async () => void ticks++, settle: async () => undefined });
    expect(ticks).toBe(4);
  });

  it('settles before every block, ahead of its re-entry rounds', async () => {
    const log: string[] = [];
    const a = fake('a', () => 1, log);
    const b = fake('b', () => 2, log);
    await interleave([a, b], { rounds: 2, blocks: 2, reentry: 1, warm: 1, tick: async () => undefined, settle: async () => void log.push('settle') });
    expect(log).toEqual(['a', 'b', 'settle', 'a', 'a', 'settle', 'b', 'b', 'settle', 'b', 'b', 'settle', 'a', 'a']);
  });

  it('returns nothing for no contenders', async () => {
    expect(await interleave([], { rounds: 10, blocks: 2 })).toEqual([]);
  });
});
