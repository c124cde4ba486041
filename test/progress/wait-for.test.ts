import { describe, expect, it } from 'vitest';
import { findCycle } from '../../src/progress/wait-for.js';

describe('wait-for graphs', () => {
  it('finds the cycle and only the cycle', () => {
    const edges = [
      { from: 'inv', to: 'dev', why: 'ack' },
      { from: 'dev', to: 'lock', why: 'lock' },
      { from: 'lock', to: 'rb', why: 'holder' },
      { from: 'rb', to: 'inv', why: 'window' },
      { from: 'other', to: 'inv', why: 'x' },
    ];
    expect(findCycle(['other', 'inv', 'dev', 'lock', 'rb'], edges)).toEqual(['inv', 'dev', 'lock', 'rb', 'inv']);
  });
  it('returns null for a chain of waits', () => {
    expect(findCycle(['a', 'b', 'c'], [{ from: 'a', to: 'b', why: '' }, { from: 'b', to: 'c', why: '' }])).toBeNull();
  });
});
