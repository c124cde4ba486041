/**
 * A device's mirror keyed by virtual page number: a radix of 512-slot leaves (one per 2 MiB, like a
 * page-table page or an xarray node), not one Map keyed by page number.
 *
 * Why: user addresses reach 2^47, so page numbers reach 2^35, beyond V8's small integers. A Map
 * keyed by such numbers boxes every key into a heap number and hashes its double bits: two
 * lookups cost 22 to 24 ns here (Node 20, 11-27), and invalidating one page makes two (test_hmm
 * erases the end page too). Here the leaves are found by a small integer (the page number over
 * 512) in a Map, and the last leaf is cached: an invalidation, a fault or a DMA sweep stays inside
 * one 2 MiB span, so a lookup is a compare and an array load.
 *
 * The part of Map's interface the mirrors use: get, set, delete, size, values, forEach. Walks go by
 * leaf, in page order within a leaf, which no caller relies on.
 */

/** Slots per leaf: 512 pages (2 MiB), a page-table page's worth. */
const LEAF_SLOTS = 512;

interface Leaf<V> {
  slots: Array<V | undefined>;
  used: number;
}

export class PageMap<V> {
  private readonly leaves = new Map<number, Leaf<V>>();
  private count = 0;
  /** The last leaf looked up (key -1 when none): most lookups fall into the same 2 MiB. */
  private lastKey = -1;
  private lastLeaf: Leaf<V> | undefined = undefined;

  get size(): number {
    return this.count;
  }

  private leaf(key: number): Leaf<V> | undefined {
    if (key === this.lastKey) return this.lastLeaf;
    const l = this.leaves.get(key);
    // Only an existing leaf is cached: a later set() that creates this leaf cannot find a stale
    // `undefined` here. A leaf that empties is removed, and uncached with it (delete).
    if (l !== undefined) {
      this.lastKey = key;
      this.lastLeaf = l;
    }
    return l;
  }

  get(vpn: number): V | undefined {
    const key = Math.floor(vpn / LEAF_SLOTS);
    const l = this.leaf(key);
    return l === undefined ? undefined : l.slots[vpn - key * LEAF_SLOTS];
  }

  set(vpn: number, v: V): this {
    const key = Math.floor(vpn / LEAF_SLOTS);
    let l = this.leaf(key);
    if (l === undefined) {
      // Filled with undefined, not holey: every slot read stays on the fast elements path.
      l = { slots: new Array<V | undefined>(LEAF_SLOTS).fill(undefined), used: 0 };
      this.leaves.set(key, l);
      this.lastKey = key;
      this.lastLeaf = l;
    }
    const i = vpn - key * LEAF_SLOTS;
    if (l.slots[i] === undefined) {
      l.used++;
      this.count++;
    }
    l.slots[i] = v;
    return this;
  }

  delete(vpn: number): boolean {
    const key = Math.floor(vpn / LEAF_SLOTS);
    const l = this.leaf(key);
    const i = vpn - key * LEAF_SLOTS;
    if (l === undefined || l.slots[i] === undefined) return false;
    l.slots[i] = undefined;
    this.count--;
    if (--l.used === 0) {
      // A mirror that moves over the address space would otherwise keep a 512-slot leaf for every
      // 2 MiB it ever touched. (Removing the entry being visited from a Map is safe in forEach.)
      this.leaves.delete(key);
      if (this.lastLeaf === l) {
        this.lastKey = -1;
        this.lastLeaf = undefined;
      }
    }
    return true;
  }

  /** Every entry, in page order within a leaf (deleting the one visited is safe). */
  forEach(fn: (v: V, vpn: number) => void): void {
    for (const [key, l] of this.leaves) {
      const base = key * LEAF_SLOTS;
      for (let i = 0; i < LEAF_SLOTS; i++) {
        const v = l.slots[i];
        if (v !== undefined) fn(v, base + i);
      }
    }
  }

  *values(): IterableIterator<V> {
    for (const l of this.leaves.values()) {
      for (let i = 0; i < LEAF_SLOTS; i++) {
        const v = l.slots[i];
        if (v !== undefined) yield v;
      }
    }
  }
}
