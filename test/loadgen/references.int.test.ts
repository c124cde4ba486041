import { describe, expect, it } from 'vitest';
import { RANGE, REF, ReferenceFanout, type RefMode } from '../../src/loadgen/references.js';

describe('reference handshakes (integration: worker threads)', () => {
  it.each(['blocking', 'spin', 'spin-range', 'waitAsync', 'postMessage'] as RefMode[])('%s: every round waits for every worker', async (mode) => {
    const n = 3;
    const ref = new ReferenceFanout(mode, n);
    try {
      await ref.ready();
      for (let i = 0; i < 50; i++) expect(await ref.round()).toBeGreaterThan(0);
      if (mode !== 'postMessage') {
        // Every worker acknowledged every start (10 of ready, 50 here), each once. With spin-range
        // the last add may still be landing when the answers were all seen: wait for it.
        const until = Date.now() + 10_000;
        while (Atomics.load(ref.words, REF.ACKS) < 60 * n && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
        expect(Atomics.load(ref.words, REF.ACKS)).toBe(60 * n);
      }
    } finally {
      await ref.close();
    }
  });

  it('spin-range: each worker read the range its slot carried and answered in the slot', async () => {
    const n = 2;
    const ref = new ReferenceFanout('spin-range', n);
    try {
      await ref.ready();
      await ref.round();
      for (let i = 0; i < n; i++) {
        const slot = RANGE.BASE + i * RANGE.STRIDE + RANGE.SLOT;
        expect(Atomics.load(ref.words, slot + RANGE.ANSWER)).toBe(1);
        // The id of the last round (11: ten in ready, one here), stored last by the publisher.
        expect(Atomics.load(ref.words, slot)).toBe(11);
      }
    } finally {
      await ref.close();
    }
  });
});
