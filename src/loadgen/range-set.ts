/**
 * Disjoint, sorted, merged [start, end) ranges: a replayed program's writable memory, or what an
 * address space has mapped (src/loadgen/address-spaces.ts). Merging matters: a
 * collector that unprotects its heap one page at a time leaves one writable heap, not thousands of
 * one-page areas for the DMA engines to aim at.
 */
export class RangeSet {
  private r: Array<[number, number]> = [];

  add(start: number, end: number): void {
    if (end <= start) return;
    const out: Array<[number, number]> = [];
    let s = start;
    let e = end;
    for (const [a, b] of this.r) {
      if (b < s || a > e) out.push([a, b]);
      else {
        s = Math.min(s, a);
        e = Math.max(e, b);
      }
    }
    out.push([s, e]);
    this.r = out.sort((x, y) => x[0] - y[0]);
  }

  remove(start: number, end: number): void {
    if (end <= start) return;
    const out: Array<[number, number]> = [];
    for (const [a, b] of this.r) {
      if (b <= start || a >= end) out.push([a, b]);
      else {
        if (a < start) out.push([a, start]);
        if (b > end) out.push([end, b]);
      }
    }
    this.r = out;
  }

  /** True if `addr` lies in a range. */
  has(addr: number): boolean {
    return this.r.some(([a, b]) => a <= addr && addr < b);
  }

  /** True if [start, end) lies inside one range. */
  covers(start: number, end: number): boolean {
    return this.r.some(([a, b]) => a <= start && end <= b);
  }

  ranges(): Array<[number, number]> {
    return this.r.map(([a, b]) => [a, b]);
  }
}
