import { describe, expect, it } from 'vitest';
import { AdaptiveSpin, DEFAULT_KERNEL_SPIN_US, KERNEL_SPIN_US_PER_ANSWER, MAX_KERNEL_SPIN_US } from '../../src/devices/ack-group.js';

describe('AdaptiveSpin (the kernel thread spin budget)', () => {
  it('spins the whole budget while spins catch the answers', () => {
    const s = new AdaptiveSpin(2);
    expect(s.budget(1)).toBe(DEFAULT_KERNEL_SPIN_US);
    s.record(true);
    expect(s.budget(1)).toBe(DEFAULT_KERNEL_SPIN_US);
  });

  it('grows the budget with the answers beyond the spare cores, up to the cap', () => {
    // 2 cores: one spare. 1 and 2 answers fit the base budget; 8 take 8 turns on the spare core.
    const two = new AdaptiveSpin(2);
    expect([1, 2, 4, 8, 16, 64].map((n) => two.budget(n))).toEqual([100, 100, 200, 8 * KERNEL_SPIN_US_PER_ANSWER, MAX_KERNEL_SPIN_US, MAX_KERNEL_SPIN_US]);
    // 4 cores: three spare, so eight answers need a third of that.
    expect(new AdaptiveSpin(4).budget(8)).toBeCloseTo((8 * KERNEL_SPIN_US_PER_ANSWER) / 3, 6);
    // kernelSpinUs caps every budget, the base one too; 0 never spins.
    expect([1, 8].map((n) => new AdaptiveSpin(2, 80).budget(n))).toEqual([80, 80]);
    expect([1, 8].map((n) => new AdaptiveSpin(2, 0).budget(n))).toEqual([0, 0]);
  });

  it('never spins on a single core (the answer needs that core)', () => {
    expect(new AdaptiveSpin(1, 100).budget(1)).toBe(0);
    expect(new AdaptiveSpin(1).budget(8)).toBe(0);
  });

  it('backs off when spins miss and grows back when they catch', () => {
    const s = new AdaptiveSpin(4, 80);
    s.record(false);
    expect(s.budget(1)).toBe(60);
    s.record(false);
    s.record(false);
    expect(s.budget(1)).toBe(20);
    s.record(true);
    expect(s.budget(1)).toBe(30);
    for (let i = 0; i < 10; i++) s.record(true);
    expect(s.budget(1)).toBe(80);
  });

  it('after backing off to nothing it probes again now and then', () => {
    const s = new AdaptiveSpin(2, 40);
    let probes = 0;
    for (let i = 0; i < 2000; i++) {
      s.record(false);
      if (s.budget(1) > 0) probes++;
    }
    // 5% of the records at score 0 start a probe (score 2): over 2,000 misses some probes happen,
    // and most of the time the budget is none.
    expect(probes).toBeGreaterThan(0);
    expect(probes).toBeLessThan(1000);
  });
});
