import { describe, expect, it } from 'vitest';
import { PageMap } from '../../../workers/runtime/page-map.js';
import { mulberry } from '../../../src/lib/random.js';

/** Page numbers a 47-bit address space reaches, near leaf edges and past V8's small integers. */
const EDGES = [0, 1, 511, 512, 513, 2 ** 20 - 1, 2 ** 20, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 0x7efffffc0, 2 ** 35 - 1];

/** Every entry, by page number (forEach is the map's walk). */
function entries<V>(m: PageMap<V> | Map<number, V>): Array<[number, V]> {
  const out: Array<[number, V]> = [];
  m.forEach((v, vpn) => out.push([vpn, v]));
  return out.sort((a, b) => a[0] - b[0]);
}

describe('PageMap', () => {
  it('agrees with a Map under random set, delete and get', () => {
    const random = mulberry(11);
    const rng = { next: random, int: (n: number): number => Math.floor(random() * n) };
    const model = new Map<number, number>();
    const pm = new PageMap<number>();
    // A few dense spans (lookups stay in one leaf, as the cache assumes) and the edges.
    const bases = [0x7efffffc0, 0x7f0001000, 2 ** 31 - 300, 12345];
    const vpn = (): number => (rng.next() < 0.1 ? EDGES[rng.int(EDGES.length)] : bases[rng.int(bases.length)] + rng.int(1500));
    for (let i = 0; i < 20_000; i++) {
      const v = vpn();
      const op = rng.int(3);
      if (op === 0) {
        model.set(v, i);
        expect(pm.set(v, i)).toBe(pm);
      } else if (op === 1) {
        expect(pm.delete(v)).toBe(model.delete(v));
      } else {
        expect(pm.get(v)).toBe(model.get(v));
      }
      expect(pm.size).toBe(model.size);
    }
    expect(entries(pm)).toEqual(entries(model));
    expect([...pm.values()].sort((a, b) => a - b)).toEqual([...model.values()].sort((a, b) => a - b));
  });

  it('keeps every edge page apart (no two page numbers share a slot)', () => {
    const pm = new PageMap<number>();
    EDGES.forEach((v, i) => pm.set(v, i));
    expect(pm.size).toBe(EDGES.length);
    EDGES.forEach((v, i) => expect(pm.get(v)).toBe(i));
    expect(pm.get(2 ** 31 + 2)).toBeUndefined();
    expect(pm.get(510)).toBeUndefined();
  });

  it('lets forEach delete the entry it visits, and visits each entry once', () => {
    const pm = new PageMap<string>();
    for (let v = 0x7efffffc0; v < 0x7efffffc0 + 1100; v += 3) pm.set(v, `p${v}`);
    pm.set(2 ** 33, 'far');
    const seen: number[] = [];
    pm.forEach((value, v) => {
      expect(value).toBe(v === 2 ** 33 ? 'far' : `p${v}`);
      seen.push(v);
      if (v % 2 === 0) pm.delete(v);
    });
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.length).toBe(368);
    expect(pm.size).toBe(seen.filter((v) => v % 2 !== 0).length);
    for (const v of seen) expect(pm.get(v) !== undefined).toBe(v % 2 !== 0);
  });

  it('finds a leaf created after a miss on it was looked up (the cache holds no misses)', () => {
    const pm = new PageMap<number>();
    expect(pm.get(5000)).toBeUndefined();
    pm.set(5001, 1);
    expect(pm.get(5001)).toBe(1);
    expect(pm.get(5000)).toBeUndefined();
    pm.set(5000, 2);
    expect(pm.get(5000)).toBe(2);
    // A set that overwrites does not count twice.
    pm.set(5000, 3);
    expect(pm.size).toBe(2);
  });

  it('drops a leaf that empties, and its cache with it: a refilled span gets a fresh leaf', () => {
    const pm = new PageMap<number>();
    pm.set(5, 1);
    expect(pm.get(5)).toBe(1); // the leaf of pages 0..511 is now the cached one
    expect(pm.delete(5)).toBe(true); // it empties: removed
    expect(pm.delete(5)).toBe(false);
    pm.set(6, 2); // a new leaf for the same span
    expect(pm.get(6)).toBe(2); // a stale cache would look into the removed leaf
    expect(pm.get(5)).toBeUndefined();
    expect(pm.size).toBe(1);
    // Many spans touched once and emptied again leave nothing behind.
    for (let i = 0; i < 2000; i++) pm.set(0x7f0000000 + i * 512, i);
    for (let i = 0; i < 2000; i++) expect(pm.delete(0x7f0000000 + i * 512)).toBe(true);
    expect(pm.size).toBe(1);
    expect(entries(pm)).toEqual([[6, 2]]);
    expect((pm as unknown as { leaves: Map<number, unknown> }).leaves.size).toBe(1);
  });
});
