import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IntervalTree, type IntervalNode } from '../../src/notifier/interval-tree.js';

interface N extends IntervalNode {
  id: number;
}

describe('IntervalTree', () => {
  it('answers overlap queries like a linear scan, in (start, key) order, under random inserts and removes', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant('add' as const), start: fc.integer({ min: 0, max: 1000 }), len: fc.integer({ min: 1, max: 100 }) }),
            fc.record({ op: fc.constant('del' as const), pick: fc.nat() }),
            fc.record({ op: fc.constant('query' as const), start: fc.integer({ min: 0, max: 1100 }), len: fc.integer({ min: 1, max: 200 }) }),
          ),
          { maxLength: 300 },
        ),
        (ops) => {
          const tree = new IntervalTree<N>();
          const live: N[] = [];
          let key = 1;
          for (const o of ops) {
            if (o.op === 'add') {
              const n: N = { start: o.start, last: o.start + o.len - 1, key: key, id: key++ };
              tree.insert(n);
              live.push(n);
            } else if (o.op === 'del' && live.length > 0) {
              const n = live.splice(o.pick % live.length, 1)[0];
              expect(tree.remove(n)).toBe(true);
              expect(tree.remove(n)).toBe(false);
            } else if (o.op === 'query') {
              const last = o.start + o.len - 1;
              const want = live
                .filter((n) => n.start <= last && n.last >= o.start)
                .sort((a, b) => a.start - b.start || a.key - b.key)
                .map((n) => n.id);
              expect(tree.overlapping(o.start, last).map((n) => n.id)).toEqual(want);
              expect(tree.intersects(o.start, last)).toBe(want.length > 0);
            }
            tree.validate();
            expect(tree.size).toBe(live.length);
          }
          expect([...tree].map((n) => n.id)).toEqual([...live].sort((a, b) => a.start - b.start || a.key - b.key).map((n) => n.id));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('visits O(log n + k) nodes: a query that hits one of 100,000 intervals touches few nodes', () => {
    const tree = new IntervalTree<N>();
    for (let i = 0; i < 100_000; i++) tree.insert({ start: i * 10, last: i * 10 + 4, key: i + 1, id: i });
    let visited = 0;
    const proxy = tree.overlapping(500_000, 500_003);
    expect(proxy.map((n) => n.id)).toEqual([50_000]);
    // Count nodes by instrumenting a walk with the same pruning as `overlapping`.
    const root = (tree as unknown as { root: IntervalNode }).root;
    const walk = (t: IntervalNode | null | undefined): void => {
      if (!t || (t._max as number) < 500_000) return;
      visited++;
      walk(t._left);
      if (t.start > 500_003) return;
      walk(t._right);
    };
    walk(root);
    expect(visited).toBeLessThan(80);
  });
});
