/**
 * Virtual memory areas and the per-mm VMA list (sorted, non-overlapping). Kernel thread only; VMAs
 * change only under the mmap write lock.
 */
import type { MemFile } from './files.js';
import { PAGE_SIZE } from './layout.js';

export const PROT = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
export type ProtName = 'read' | 'write' | 'exec';

export function protFromNames(names: readonly ProtName[]): number {
  let p = 0;
  for (const n of names) p |= n === 'read' ? PROT.READ : n === 'write' ? PROT.WRITE : PROT.EXEC;
  return p;
}
export function protNames(p: number): ProtName[] {
  const out: ProtName[] = [];
  if (p & PROT.READ) out.push('read');
  if (p & PROT.WRITE) out.push('write');
  if (p & PROT.EXEC) out.push('exec');
  return out;
}

export type HugeAdvice = 'default' | 'hugepage' | 'nohugepage';

export interface VmaProps {
  prot: number;
  shared: boolean;
  /** Backing file: a user file, or the hidden shmem object of a MAP_SHARED|MAP_ANONYMOUS area. */
  file: MemFile | null;
  /** File page index of `start`. */
  pgoff: number;
  huge: HugeAdvice;
  mergeable: boolean;
  /** What the heap / stack / a user mapping is called in maps. */
  name: string | null;
}

export class Vma implements VmaProps {
  prot: number;
  shared: boolean;
  file: MemFile | null;
  pgoff: number;
  huge: HugeAdvice;
  mergeable: boolean;
  name: string | null;
  /**
   * The kernel's anon_vma: set once the VMA has held anonymous pages, which makes fork copy its
   * page table (and notify PROTECTION_PAGE).
   */
  anonVma = false;
  /** VM_SOFTDIRTY: new areas count as soft-dirty until clear_refs. */
  softDirty = true;
  /**
   * VM_DONTCOPY (madvise MADV_DONTFORK, undone by MADV_DOFORK): fork leaves the VMA out of the
   * child (dup_mmap skips it), so it neither copies its page table nor write-protects it, and its
   * devices get no PROTECTION_PAGE for it. What RDMA libraries ask of registered memory
   * (ibv_fork_init): a parent's later write then never COWs a page a NIC is writing.
   */
  dontFork = false;

  constructor(
    public start: number,
    public end: number,
    props: VmaProps,
  ) {
    this.prot = props.prot;
    this.shared = props.shared;
    this.file = props.file;
    this.pgoff = props.pgoff;
    this.huge = props.huge;
    this.mergeable = props.mergeable;
    this.name = props.name;
  }

  get anonymous(): boolean {
    return this.file === null;
  }
  /** A shared mapping of a real (disk-like) file, subject to writeback. */
  get sharedFile(): boolean {
    return this.shared && this.file !== null && this.file.kind === 'file';
  }
  /** Private mapping whose writes go to anonymous copies (is_cow_mapping with VM_MAYWRITE). */
  get cow(): boolean {
    return !this.shared;
  }
  get readable(): boolean {
    return (this.prot & PROT.READ) !== 0;
  }
  get writable(): boolean {
    return (this.prot & PROT.WRITE) !== 0;
  }
  get pages(): number {
    return (this.end - this.start) / PAGE_SIZE;
  }
  /** File page index of address `va`. */
  fileIndex(va: number): number {
    return this.pgoff + (va - this.start) / PAGE_SIZE;
  }
  /** Address of file page `index` in this VMA (may be outside it). */
  addressOf(index: number): number {
    return this.start + (index - this.pgoff) * PAGE_SIZE;
  }
  props(): VmaProps {
    return {
      prot: this.prot,
      shared: this.shared,
      file: this.file,
      pgoff: this.pgoff,
      huge: this.huge,
      mergeable: this.mergeable,
      name: this.name,
    };
  }
  /** Same properties, so the two can merge when adjacent (and file offsets are contiguous). */
  compatible(o: Vma): boolean {
    return (
      this.prot === o.prot &&
      this.shared === o.shared &&
      this.file === o.file &&
      this.huge === o.huge &&
      this.mergeable === o.mergeable &&
      this.dontFork === o.dontFork &&
      this.name === o.name
    );
  }
  clone(start: number, end: number): Vma {
    const v = new Vma(start, end, this.props());
    v.pgoff = this.pgoff + (start - this.start) / PAGE_SIZE;
    v.anonVma = this.anonVma;
    v.softDirty = this.softDirty;
    v.dontFork = this.dontFork;
    return v;
  }
}

/** Sorted, non-overlapping list of VMAs with binary search. */
export class VmaList {
  readonly items: Vma[] = [];

  get length(): number {
    return this.items.length;
  }

  /** Index of the first VMA whose end > addr. */
  private lowerBound(addr: number): number {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.items[mid].end <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The VMA containing addr, or null. */
  find(addr: number): Vma | null {
    const i = this.lowerBound(addr);
    const v = this.items[i];
    return v && v.start <= addr ? v : null;
  }

  /** The first VMA with end > addr (find_vma), or null. */
  findFrom(addr: number): Vma | null {
    return this.items[this.lowerBound(addr)] ?? null;
  }

  /** The last VMA ending at or before addr, or null. */
  prevOf(addr: number): Vma | null {
    const i = this.lowerBound(addr);
    const v = this.items[i];
    if (v && v.start < addr) return i > 0 ? this.items[i - 1] : null;
    return i > 0 ? this.items[i - 1] : null;
  }

  /** VMAs overlapping [start, end), in order. */
  overlapping(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    for (let i = this.lowerBound(start); i < this.items.length && this.items[i].start < end; i++) {
      out.push(this.items[i]);
    }
    return out;
  }

  /** True if [start, end) is fully covered by VMAs without holes. */
  covers(start: number, end: number): boolean {
    let at = start;
    for (const v of this.overlapping(start, end)) {
      if (v.start > at) return false;
      at = v.end;
      if (at >= end) return true;
    }
    return at >= end;
  }

  insert(v: Vma): void {
    const i = this.lowerBound(v.start);
    const next = this.items[i];
    if (next && next.start < v.end) throw new Error(`VMA overlap at ${v.start.toString(16)}`);
    this.items.splice(i, 0, v);
  }

  remove(v: Vma): void {
    const i = this.items.indexOf(v);
    if (i >= 0) this.items.splice(i, 1);
  }

  /**
   * Splits the VMA containing `addr` so that a VMA boundary falls at addr; returns the VMA that now
   * starts at addr (or null if no VMA contains addr).
   */
  splitAt(addr: number): Vma | null {
    const v = this.find(addr);
    if (!v || v.start === addr) return v;
    const tail = v.clone(addr, v.end);
    v.end = addr;
    this.insert(tail);
    return tail;
  }

  /** Merges compatible neighbours around [start, end) (vma_merge). */
  mergeAround(start: number, end: number): void {
    let i = Math.max(0, this.lowerBound(start) - 1);
    while (i + 1 < this.items.length) {
      const a = this.items[i];
      const b = this.items[i + 1];
      if (a.start > end) break;
      const contiguousFile = a.file === null || b.pgoff === a.pgoff + (a.end - a.start) / PAGE_SIZE;
      if (a.end === b.start && a.compatible(b) && contiguousFile && a.anonVma === b.anonVma && a.softDirty === b.softDirty) {
        a.end = b.end;
        this.items.splice(i + 1, 1);
      } else {
        i++;
      }
    }
  }

  /**
   * The highest `align`-aligned address addr with [addr, addr + length) free, addr >= above and
   * addr + length <= below (the top-down mmap layout), or -1.
   */
  findGapTopDown(length: number, below: number, above: number, align: number): number {
    let i = this.lowerBound(below);
    if (i >= this.items.length || this.items[i].start >= below) i--;
    let ceiling = below;
    for (;;) {
      const floor = Math.max(above, i >= 0 ? this.items[i].end : above);
      const addr = Math.floor((ceiling - length) / align) * align;
      if (addr >= floor && addr + length <= ceiling) return addr;
      if (i < 0) return -1;
      ceiling = Math.min(ceiling, this.items[i].start);
      i--;
    }
  }

  isFree(start: number, end: number): boolean {
    return this.overlapping(start, end).length === 0;
  }
}
