import { describe, expect, it } from 'vitest';
import { percentiles, spread } from '../../src/lib/stats.js';

describe('spread (a figure over repeated passes)', () => {
  it('gives min, median, max and the count above the limit, whatever the order', () => {
    expect(spread([1.7, 1.44, 1.52, 1.38, 1.46], 1.5)).toEqual({ n: 5, min: 1.38, median: 1.46, max: 1.7, above: 2 });
  });

  it('takes the mean of the middle two for an even count; a value equal to the limit is not above it', () => {
    expect(spread([4, 1, 3, 2], 3)).toEqual({ n: 4, min: 1, median: 2.5, max: 4, above: 1 });
  });

  it('is empty for no values', () => {
    const s = spread([]);
    expect(s.n).toBe(0);
    expect(s.above).toBe(0);
    expect(Number.isNaN(s.median)).toBe(true);
  });
});

describe('percentiles', () => {
  it('uses the nearest rank', () => {
    const p = percentiles(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect([p.p50, p.p90, p.p99, p.p99_9, p.max]).toEqual([500, 900, 990, 999, 1000]);
    expect(p.mean).toBe(500.5);
  });
});
