/**
 * An augmented AVL interval tree over closed intervals [start, last] (the kernel's
 * `interval_tree` uses the same inclusive `last`). Each node caches the largest `last` in its
 * subtree, so a stabbing/overlap query visits O(log n + k) nodes: invalidation cost does not grow
 * with subscriptions that do not intersect the range.
 *
 * Nodes are ordered by (start, key); `key` is a unique integer the caller supplies so equal starts
 * are allowed. Kernel thread only.
 */

export interface IntervalNode {
  start: number;
  last: number;
  /** Unique tie-breaker among nodes with the same start. */
  readonly key: number;
  /** Tree bookkeeping; undefined while the node is not in a tree. */
  _left?: IntervalNode | null;
  _right?: IntervalNode | null;
  _height?: number;
  _max?: number;
}

function h(n: IntervalNode | null | undefined): number {
  return n ? (n._height as number) : 0;
}
function mx(n: IntervalNode | null | undefined): number {
  return n ? (n._max as number) : -Infinity;
}
function update(n: IntervalNode): void {
  n._height = 1 + Math.max(h(n._left), h(n._right));
  n._max = Math.max(n.last, mx(n._left), mx(n._right));
}
function cmp(a: IntervalNode, b: IntervalNode): number {
  return a.start !== b.start ? a.start - b.start : a.key - b.key;
}
function rotateRight(y: IntervalNode): IntervalNode {
  const x = y._left as IntervalNode;
  y._left = x._right ?? null;
  x._right = y;
  update(y);
  update(x);
  return x;
}
function rotateLeft(x: IntervalNode): IntervalNode {
  const y = x._right as IntervalNode;
  x._right = y._left ?? null;
  y._left = x;
  update(x);
  update(y);
  return y;
}
function balance(n: IntervalNode): IntervalNode {
  update(n);
  const bf = h(n._left) - h(n._right);
  if (bf > 1) {
    if (h(n._left?._left) < h(n._left?._right)) n._left = rotateLeft(n._left as IntervalNode);
    return rotateRight(n);
  }
  if (bf < -1) {
    if (h(n._right?._right) < h(n._right?._left)) n._right = rotateRight(n._right as IntervalNode);
    return rotateLeft(n);
  }
  return n;
}

export class IntervalTree<T extends IntervalNode> {
  private root: T | null = null;
  private count = 0;

  get size(): number {
    return this.count;
  }

  insert(node: T): void {
    node._left = null;
    node._right = null;
    node._height = 1;
    node._max = node.last;
    this.root = this.ins(this.root, node) as T;
    this.count++;
  }

  private ins(t: IntervalNode | null, node: IntervalNode): IntervalNode {
    if (!t) return node;
    if (cmp(node, t) < 0) t._left = this.ins(t._left ?? null, node);
    else t._right = this.ins(t._right ?? null, node);
    return balance(t);
  }

  /** Removes `node`; returns false if it was not in the tree. */
  remove(node: T): boolean {
    let found = false;
    const del = (t: IntervalNode | null): IntervalNode | null => {
      if (!t) return null;
      const c = cmp(node, t);
      if (c < 0) t._left = del(t._left ?? null);
      else if (c > 0) t._right = del(t._right ?? null);
      else {
        found = true;
        const l = t._left ?? null;
        const r = t._right ?? null;
        t._left = t._right = undefined;
        t._height = t._max = undefined;
        if (!l) return r;
        if (!r) return l;
        // Replace with the smallest node of the right subtree.
        let m = r;
        while (m._left) m = m._left;
        const removeMin = (x: IntervalNode): IntervalNode | null => {
          if (!x._left) return x._right ?? null;
          x._left = removeMin(x._left);
          return balance(x);
        };
        const newRight = removeMin(r);
        m._left = l;
        m._right = newRight;
        return balance(m);
      }
      return balance(t);
    };
    this.root = del(this.root) as T | null;
    if (found) this.count--;
    return found;
  }

  /** Every node overlapping [start, last], in (start, key) order. */
  overlapping(start: number, last: number, out: T[] = []): T[] {
    collectOverlapping(this.root, start, last, out as IntervalNode[]);
    return out;
  }

  /** True if any node overlaps [start, last] (stops at the first). */
  intersects(start: number, last: number): boolean {
    let t: IntervalNode | null | undefined = this.root;
    // Descend: go left when the left subtree can hold an overlap, as in the classic search.
    while (t) {
      if (t.start <= last && t.last >= start) return true;
      if (t._left && (t._left._max as number) >= start) t = t._left;
      else if (t.start > last) return false;
      else t = t._right;
    }
    return false;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    const stack: IntervalNode[] = [];
    let t: IntervalNode | null | undefined = this.root;
    while (t || stack.length) {
      while (t) {
        stack.push(t);
        t = t._left;
      }
      const n = stack.pop() as IntervalNode;
      yield n as T;
      t = n._right;
    }
  }

  /** Checks AVL balance, ordering and the cached maxima (tests). */
  validate(): void {
    const check = (t: IntervalNode | null | undefined, lo: IntervalNode | null, hi: IntervalNode | null): number => {
      if (!t) return 0;
      if (lo && cmp(t, lo) <= 0) throw new Error('order violated');
      if (hi && cmp(t, hi) >= 0) throw new Error('order violated');
      const lh = check(t._left, lo, t);
      const rh = check(t._right, t, hi);
      if (Math.abs(lh - rh) > 1) throw new Error('unbalanced');
      if (t._height !== 1 + Math.max(lh, rh)) throw new Error('bad height');
      if (t._max !== Math.max(t.last, mx(t._left), mx(t._right))) throw new Error('bad max');
      return 1 + Math.max(lh, rh);
    };
    check(this.root, null, null);
  }
}

/** In-order walk of the subtrees that can overlap [start, last] (a function, not a per-call closure). */
function collectOverlapping(t: IntervalNode | null | undefined, start: number, last: number, out: IntervalNode[]): void {
  if (!t || (t._max as number) < start) return;
  // The child checks save a call per missing child: a device's one whole-mm interval is a tree of
  // one node, searched on every invalidation before the first call is posted.
  if (t._left) collectOverlapping(t._left, start, last, out);
  if (t.start > last) return;
  if (t.last >= start) out.push(t);
  if (t._right) collectOverlapping(t._right, start, last, out);
}
