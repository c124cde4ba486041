/**
 * A 4-level radix page table (x86-64 shape: PGD -> PUD -> PMD -> PTE, 512 entries each) whose table
 * pages are frames of emulated physical memory. A huge page is a leaf at PMD level.
 *
 * Writers: only the kernel thread changes entries, always with Atomics.store of a whole 32-bit word,
 * so a reader never sees a torn entry.
 *
 * Readers in other threads (see PageTableReader) walk without any lock. The hazard is a table page
 * being unlinked, freed and reused while a reader is inside it. The protocol is a seqcount on the
 * mm's MS.PT_GEN slot:
 *
 *   kernel (freeing a table page)          reader
 *   ------------------------------         --------------------------------
 *   store parent entry = 0                 g1 = load PT_GEN
 *   add PT_GEN, 1                          walk: load entries level by level
 *   free the table frame (may be reused)   g2 = load PT_GEN
 *                                          g1 != g2 ? retry : entry is valid
 *
 * All accesses are sequentially consistent Atomics, so if the reader loaded an entry from a table
 * page after it was freed, the PT_GEN bump that precedes the free is visible to its second load.
 */
import { DevmirrorError, invariant } from '../errors.js';
import { FF, HDR, LAYOUT_VERSION, LEVEL, LEVEL_SHIFT, MS, PAGE_SIZE, PTE, PTRS_PER_TABLE, mmSlotIndex } from './layout.js';
import type { PhysicalMemory } from './phys-mem.js';
import { mkPte, ptePfn, type Pte } from './pte.js';

const WORDS_PER_PAGE = PAGE_SIZE / 4;
const LEVEL_SIZE = LEVEL_SHIFT.map((s) => 2 ** s);

export function entryOffset(va: number, level: number): number {
  // va < 2^47: va / 2^shift < 2^35; `& 511` applies ToInt32 (modulo 2^32), which keeps the low
  // 9 bits exact because 2^32 is a multiple of 512.
  return (va / LEVEL_SIZE[level]) & (PTRS_PER_TABLE - 1);
}

/** Start of the `level` region containing va (level 1: 2 MiB, 2: 1 GiB, ...). */
export function levelFloor(va: number, level: number): number {
  const size = LEVEL_SIZE[level + 1] ?? 2 ** 48;
  return Math.floor(va / size) * size;
}

export interface LeafVisitor {
  /**
   * Called for each existing leaf entry in range: a PTE (level 0) or a huge PMD (level 1). `va`
   * is the address the entry maps (2 MiB aligned for a PMD leaf). Entries that are none are
   * skipped unless `visitNone` was set.
   */
  (va: number, idx: number, level: number, e: Pte): void;
}

export class PageTable {
  readonly words: Int32Array;
  /** Level of the entry returned by the last `leafIndex` call. */
  lastLevel = 0;

  /**
   * Frames of physical memory. Table pages live in the same memory as data, so a device that keeps
   * writing after it acknowledged an invalidation (the bug the sanitizer exists to catch) can land
   * a stray write in a frame that was freed and reused as a table page. The walkers that must
   * survive that (teardown, audit) do not follow an entry that points outside memory.
   */
  private readonly frames: number;
  /**
   * Called for each entry pointing outside memory that the fault path clears (the kernel's
   * pmd_clear_bad: "bad pmd", then the entry is cleared and a fresh table allocated); the kernel
   * counts them (stats.badTableEntries).
   */
  onBadEntry: (() => void) | null = null;

  constructor(
    private readonly mem: PhysicalMemory,
    readonly pgd: number,
    private readonly mmSlot: number,
  ) {
    this.words = mem.dataWords;
    this.frames = this.words.length / WORDS_PER_PAGE;
  }

  /** The table an upper-level entry points to, or -1 if it points outside memory (not followed). */
  private child(e: Pte): number {
    const pfn = ptePfn(e);
    return pfn < this.frames ? pfn : -1;
  }

  static tableIdx(tablePfn: number, va: number, level: number): number {
    return tablePfn * WORDS_PER_PAGE + entryOffset(va, level);
  }

  load(idx: number): Pte {
    return Atomics.load(this.words, idx);
  }
  /** The only way entries change: one sequentially consistent store of the whole word. */
  store(idx: number, e: Pte): void {
    Atomics.store(this.words, idx, e);
  }

  /**
   * Word index of the lowest existing entry for `va`: a PTE if the PTE table exists, a PMD entry if
   * the PMD is a huge leaf or none (lastLevel says which), or -1 if an upper table is missing (or
   * its entry points outside memory: a stray write, not followed; the fault path replaces it).
   */
  leafIndex(va: number): number {
    let table = this.pgd;
    for (let level: number = LEVEL.PGD; level > LEVEL.PTE; level--) {
      const idx = PageTable.tableIdx(table, va, level);
      const e = Atomics.load(this.words, idx);
      if ((e & PTE.TABLE) === 0) {
        this.lastLevel = level;
        return level === LEVEL.PMD ? idx : -1;
      }
      table = this.child(e);
      if (table < 0) {
        this.lastLevel = level;
        return -1;
      }
    }
    this.lastLevel = LEVEL.PTE;
    return PageTable.tableIdx(table, va, LEVEL.PTE);
  }

  /** The leaf entry mapping `va` (a huge PMD counts), or 0. */
  lookup(va: number): Pte {
    const idx = this.leafIndex(va);
    return idx < 0 ? 0 : this.load(idx);
  }

  /** Word index of the PMD entry for va, or -1 if the PMD table is missing (or not followed). */
  pmdIndex(va: number): number {
    let table = this.pgd;
    for (let level: number = LEVEL.PGD; level > LEVEL.PMD; level--) {
      const e = Atomics.load(this.words, PageTable.tableIdx(table, va, level));
      if ((e & PTE.TABLE) === 0) return -1;
      table = this.child(e);
      if (table < 0) return -1;
    }
    return PageTable.tableIdx(table, va, LEVEL.PMD);
  }

  /**
   * Makes sure the tables down to `level` exist and returns the index of the entry at that level
   * (level 0: the PTE; level 1: the PMD entry). Returns -1 if a table page could not be allocated
   * (the caller reclaims and retries), or -2 if a huge PMD leaf sits where a PTE table is needed
   * (the caller splits it first).
   */
  ensure(va: number, level: number, alloc: () => number): number {
    let table = this.pgd;
    for (let l: number = LEVEL.PGD; l > level; l--) {
      const idx = PageTable.tableIdx(table, va, l);
      let e = Atomics.load(this.words, idx);
      if ((e & PTE.TABLE) !== 0 && this.child(e) < 0) {
        // A stray write into this table page (pmd_bad): report it, clear the entry and go on as if
        // it were none. Whatever it pointed to is not memory, so nothing leaks.
        this.onBadEntry?.();
        Atomics.store(this.words, idx, 0);
        e = 0;
      }
      if (e === 0) {
        const pfn = alloc();
        if (pfn < 0) return -1;
        this.mem.setFlags(pfn, FF.PGTABLE);
        e = mkPte(pfn, PTE.PRESENT | PTE.TABLE);
        // The table page is zeroed before the store that publishes it, so a reader that follows
        // the new entry only ever sees zeroed (none) entries in it.
        Atomics.store(this.words, idx, e);
      } else if ((e & PTE.TABLE) === 0) {
        return -2;
      }
      table = ptePfn(e);
    }
    return PageTable.tableIdx(table, va, level);
  }

  /**
   * Visits every existing leaf overlapping [start, end), in address order, skipping missing tables
   * in one step. With `visitNone`, none entries inside existing PTE tables are visited too.
   */
  walk(start: number, end: number, visit: LeafVisitor, visitNone = false): void {
    this.walkLevel(this.pgd, LEVEL.PGD, 0, start, end, visit, visitNone);
  }

  private walkLevel(
    table: number,
    level: number,
    base: number,
    start: number,
    end: number,
    visit: LeafVisitor,
    visitNone: boolean,
  ): void {
    const size = LEVEL_SIZE[level];
    const first = Math.max(0, Math.floor((start - base) / size));
    const last = Math.min(PTRS_PER_TABLE - 1, Math.floor((end - 1 - base) / size));
    for (let i = first; i <= last; i++) {
      const idx = table * WORDS_PER_PAGE + i;
      const e = Atomics.load(this.words, idx);
      const va = base + i * size;
      if (level === LEVEL.PTE) {
        if (e !== 0 || visitNone) visit(va, idx, LEVEL.PTE, e);
      } else if (e & PTE.TABLE) {
        const child = this.child(e);
        if (child >= 0) this.walkLevel(child, level - 1, va, start, end, visit, visitNone);
      } else if (level === LEVEL.PMD && e !== 0) {
        visit(va, idx, LEVEL.PMD, e);
      }
    }
  }

  /** True if any leaf in [start, end) is not none (used to skip work on unpopulated ranges). */
  populated(start: number, end: number): boolean {
    let found = false;
    this.walk(start, end, () => {
      found = true;
    });
    return found;
  }

  /** Address of the first populated upper-level region (level >= PMD) in range, or -1. */
  firstPopulated(start: number, end: number, level: number): number {
    let first = -1;
    // A PUD (level 2) counts as populated when it points at a PMD table that has any entry.
    this.walk(start, end, (va) => {
      if (first < 0) first = Math.max(start, levelFloor(va, level - 1));
    });
    return first;
  }

  /**
   * Frees page-table pages left empty by an unmap of [start, end) (free_pgtables). A table may go
   * only if its whole span lies within [floor, ceiling): the space between the neighbouring VMAs,
   * so tables still covering live mappings stay. Returns the number of table pages freed.
   */
  prune(start: number, end: number, floor = start, ceiling = end): number {
    const freed: number[] = [];
    this.pruneLevel(this.pgd, LEVEL.PGD, 0, start, end, floor, ceiling, freed);
    if (freed.length === 0) return 0;
    // Parent entries are already cleared; bump PT_GEN before any freed table can be reused so a
    // lockless reader that walked into one retries (see the protocol at the top of this file).
    Atomics.add(this.mem.meta, mmSlotIndex(this.mem.mmBase, this.mmSlot, MS.PT_GEN), 1);
    for (const pfn of freed) {
      this.mem.clearFlags(pfn, FF.PGTABLE);
      invariant(this.mem.put(pfn), `page-table page ${pfn} still referenced`);
    }
    return freed.length;
  }

  /** Returns true if the table at `table` became (or is) empty. */
  private pruneLevel(
    table: number,
    level: number,
    base: number,
    start: number,
    end: number,
    floor: number,
    ceiling: number,
    freed: number[],
  ): boolean {
    const size = LEVEL_SIZE[level];
    const first = Math.max(0, Math.floor((start - base) / size));
    const last = Math.min(PTRS_PER_TABLE - 1, Math.floor((end - 1 - base) / size));
    for (let i = first; i <= last; i++) {
      const idx = table * WORDS_PER_PAGE + i;
      const e = Atomics.load(this.words, idx);
      if (level === LEVEL.PTE || !(e & PTE.TABLE)) continue;
      const child = this.child(e);
      if (child < 0) continue;
      const va = base + i * size;
      const childEmpty = this.pruneLevel(child, level - 1, va, start, end, floor, ceiling, freed);
      if (childEmpty && va >= floor && va + size <= ceiling) {
        Atomics.store(this.words, idx, 0);
        freed.push(child);
      }
    }
    return this.tableEmpty(table);
  }

  tableEmpty(table: number): boolean {
    const base = table * WORDS_PER_PAGE;
    for (let i = 0; i < PTRS_PER_TABLE; i++) if (Atomics.load(this.words, base + i) !== 0) return false;
    return true;
  }

  /**
   * Every table page of this mm, for accounting and teardown. An entry that points outside memory
   * (a stray write into a table page) is not followed: `onCorrupt` hears of it.
   */
  tablePages(onCorrupt?: (table: number, index: number, entry: Pte) => void): number[] {
    const out: number[] = [this.pgd];
    const rec = (table: number, level: number): void => {
      if (level === LEVEL.PTE) return;
      for (let i = 0; i < PTRS_PER_TABLE; i++) {
        const e = Atomics.load(this.words, table * WORDS_PER_PAGE + i);
        if (!(e & PTE.TABLE)) continue;
        const child = this.child(e);
        if (child < 0) {
          onCorrupt?.(table, i, e);
          continue;
        }
        out.push(child);
        rec(child, level - 1);
      }
    };
    rec(this.pgd, LEVEL.PGD);
    return out;
  }
}

/**
 * Read-only, lock-free page-table walker for threads other than the kernel's (device workers,
 * dashboards, CPU threads). It needs only the shared buffers and an mm slot; see the PT_GEN
 * protocol above.
 */
export class PageTableReader {
  private readonly meta: Int32Array;
  private readonly words: Int32Array;
  private readonly mmBase: number;

  /**
   * Test hooks: `stallSpins` busy-waits between levels to widen race windows; `unsafe` skips the
   * PT_GEN check (to show what the protocol prevents). Never set in production.
   */
  constructor(
    metaSab: SharedArrayBuffer,
    dataSab: SharedArrayBuffer,
    private readonly testHooks: { stallSpins?: number; unsafe?: boolean } = {},
  ) {
    this.meta = new Int32Array(metaSab);
    this.words = new Int32Array(dataSab);
    if (Atomics.load(this.meta, HDR.LAYOUT_VERSION) !== LAYOUT_VERSION) {
      throw new DevmirrorError('DM_ERR_LAYOUT_MISMATCH', 'shared memory layout version does not match');
    }
    this.mmBase = this.meta[HDR.MM_TABLE_OFFSET];
  }

  private slotWord(slot: number, word: number): number {
    return mmSlotIndex(this.mmBase, slot, word);
  }

  /**
   * The leaf entry mapping `va` in the mm at `slot` as of one consistent moment, and its level
   * (0 PTE, 1 huge PMD). Returns null if the mm slot is not live.
   */
  lookup(slot: number, va: number): { e: Pte; level: number } | null {
    const frames = this.words.length / WORDS_PER_PAGE;
    for (;;) {
      // Seqcount read side: g1 before the walk, g2 after; a table freed meanwhile moved PT_GEN.
      const g1 = Atomics.load(this.meta, this.slotWord(slot, MS.PT_GEN));
      if (Atomics.load(this.meta, this.slotWord(slot, MS.STATE)) === 0) return null;
      let table = Atomics.load(this.meta, this.slotWord(slot, MS.PGD_PFN));
      let e = 0;
      let level: number = LEVEL.PGD;
      let torn = false;
      for (; level >= LEVEL.PTE; level--) {
        e = Atomics.load(this.words, PageTable.tableIdx(table, va, level));
        if (level === LEVEL.PTE || (e & PTE.TABLE) === 0) break;
        table = ptePfn(e);
        // A consistent walk never points outside memory; this one read a recycled table.
        if (table >= frames) {
          torn = true;
          break;
        }
        for (let i = this.testHooks.stallSpins ?? 0; i > 0; i--) Atomics.load(this.meta, 0);
      }
      const g2 = Atomics.load(this.meta, this.slotWord(slot, MS.PT_GEN));
      if (this.testHooks.unsafe) return { e, level: torn ? -1 : level > LEVEL.PMD ? LEVEL.PTE : level };
      if (g1 === g2 && !torn) {
        if (level > LEVEL.PMD) return { e: 0, level: LEVEL.PTE };
        return { e, level };
      }
    }
  }

}
