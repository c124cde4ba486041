import { describe, expect, it } from 'vitest';
import { AdaptiveSpin, DEFAULT_KERNEL_SPIN_US } from '../../src/devices/ack-group.js';

describe('AdaptiveSpin (the kernel thread spin budget)', () => {
  it('spins the whole budget while spins catch the answers, however many devices there are', () => {
    const s = new AdaptiveSpin(2);
    expect(s.budget()).toBe(DEFAULT_KERNEL_SPIN_US);
    s.record(true);
    expect(s.budget()).toBe(DEFAULT_KERNEL_SPIN_US);
  });

  it('never spins on a single core (the answer needs that core)', () => {
    expect(new AdaptiveSpin(1, 100).budget()).toBe(0);
  });

  it('backs off when spins miss and grows back when they catch', () => {
    const s = new AdaptiveSpin(4, 80);
    s.record(false);
    expect(s.budget()).toBe(60);
    s.record(false);
    s.record(false);
    expect(s.budget()).toBe(20);
    s.record(true);
    expect(s.budget()).toBe(30);
    for (let i = 0; i < 10; i++) s.record(true);
    expect(s.budget()).toBe(80);
  });

  it('after backing off to nothing it probes again now and then', () => {
    const s = new AdaptiveSpin(2, 40);
    let probes = 0;
    for (let i = 0; i < 2000; i++) {
      s.record(false);
      if (s.budget() > 0) probes++;
    }
    // 5% of the records at score 0 start a probe (score 2): over 2,000 misses some probes happen,
    // and most of the time the budget is none.
    expect(probes).toBeGreaterThan(0);
    expect(probes).toBeLessThan(1000);
  });
});
