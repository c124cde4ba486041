import { describe, expect, it } from 'vitest';
import { summarizeRuns, type RunRow } from '../../src/loadgen/run-summary.js';

const lat = (p50: number, p99 = p50 * 3) => ({ n: 100, mean: p50, p50, p90: p50 * 2, p99, p99_9: p99 * 2, max: p99 * 4 });
const row = (n: number, placement: string, role: RunRow['role'], p50: number, p99?: number): RunRow => ({ n, placement, role, lat: lat(p50, p99) });

describe('summarizeRuns (bench:channel --runs)', () => {
  it('pairs each system row with the floor and protocol floor of its own run, N and placement, and takes the median over runs', () => {
    const runs: RunRow[][] = [
      // Rows in the order bench:channel writes them; the apart floor is faster than the together one.
      [row(1, 'apart', 'floor', 90), row(1, 'apart', 'protocol', 95), row(1, 'apart', 'devmirror', 99), row(1, 'together', 'floor', 20), row(1, 'together', 'protocol', 23), row(1, 'together', 'devmirror', 24), row(1000, 'free', 'floor', 5000, 20_000), row(1000, 'free', 'devmirror', 7000, 30_000)],
      [row(1, 'apart', 'floor', 100), row(1, 'apart', 'protocol', 104), row(1, 'apart', 'devmirror', 106), row(1, 'together', 'floor', 20), row(1, 'together', 'protocol', 24), row(1, 'together', 'devmirror', 28), row(1000, 'free', 'floor', 5000, 25_000), row(1000, 'free', 'devmirror', 7000, 40_000)],
      [row(1, 'apart', 'floor', 80), row(1, 'apart', 'protocol', 84), row(1, 'apart', 'devmirror', 88), row(1, 'together', 'floor', 10), row(1, 'together', 'protocol', 12), row(1, 'together', 'devmirror', 12.5), row(1000, 'free', 'floor', 4000, 22_000), row(1000, 'free', 'devmirror', 6000, 35_000)],
    ];
    const s = summarizeRuns(runs, 1.3);
    expect(s.map((x) => `${x.n} ${x.placement}`)).toEqual(['1 apart', '1 together', '1000 free']);
    const together = s[1];
    expect(together.p50Ratio).toEqual([24 / 20, 28 / 20, 12.5 / 10]);
    expect(together.ratio.median).toBeCloseTo(1.25);
    expect(together.ratio.min).toBeCloseTo(1.2);
    expect(together.ratio.max).toBeCloseTo(1.4);
    expect(together.ratio.above).toBe(1);
    expect(together.protocolRatio).toEqual([23 / 20, 24 / 20, 12 / 10]);
    expect(together.codeRatio).toEqual([24 / 23, 28 / 24, 12.5 / 12]);
    const wide = s[2];
    expect(wide.p99).toEqual([30_000, 40_000, 35_000]);
    expect(wide.floorP99).toEqual([20_000, 25_000, 22_000]);
    expect(wide.protocolRatio).toEqual([]);
    expect(wide.ratio.n).toBe(3);
  });

  it('refuses a run whose system row has no floor to compare with, rather than leaving the run out of the median', () => {
    expect(() => summarizeRuns([[row(1, 'together', 'floor', 20), row(1, 'together', 'devmirror', 24)], [row(1, 'apart', 'floor', 20), row(1, 'together', 'devmirror', 24)]], 1.3)).toThrow(/run 2: no floor row for N = 1 \(together\)/);
  });
});
