/**
 * Transparent huge pages: collapse (khugepaged, MADV_COLLAPSE) and split on demand.
 *
 * collapse_huge_page: allocate the huge folio, then CLEAR over the aligned 2 MiB around detaching the
 * PTE table (pmdp_collapse_flush); the copy and the install of the huge PMD happen after the end,
 * under the mmap write lock, and populate without notifying. khugepaged only collapses ranges with
 * recently used pages, asking the subscribers through test_young.
 */
import { FF, PAGE_SIZE, PMD_PAGES, PMD_SIZE, PTE } from '../layout.js';
import type { Kernel } from '../kernel.js';
import type { MM } from '../mm.js';
import { ZERO_PFN } from '../phys-mem.js';
import { ptePfn } from '../pte.js';
import { MmuNotifierEvent, type Origin } from '../../notifier/range.js';

export type CollapseResult =
  | 'collapsed'
  | 'not-eligible'
  | 'already-huge'
  | 'empty'
  | 'not-anonymous-exclusive'
  | 'swap-or-special'
  | 'lack-referenced'
  | 'alloc-failed'
  | 'raced';

/**
 * Collapses the 2 MiB at `haddr` into a huge page. The caller holds the mmap write lock.
 * `requireYoung` is khugepaged's referenced check (MADV_COLLAPSE skips it).
 */
export async function collapseHugePage(
  k: Kernel,
  mm: MM,
  haddr: number,
  origin: Origin,
  requireYoung: boolean,
): Promise<CollapseResult> {
  const vma = mm.vmas.find(haddr);
  if (!vma || vma.file !== null || vma.shared || vma.huge === 'nohugepage') return 'not-eligible';
  if (haddr % PMD_SIZE !== 0 || haddr < vma.start || haddr + PMD_SIZE > vma.end) return 'not-eligible';
  const pmdIdx = mm.pt.pmdIndex(haddr);
  if (pmdIdx < 0) return 'empty';
  const pmd = mm.pt.load(pmdIdx);
  if (pmd === 0) return 'empty';
  if (pmd & PTE.HUGE) return 'already-huge';
  const table = ptePfn(pmd);
  const base = table * (PAGE_SIZE / 4);
  const words = k.mem.dataWords;
  /** The per-page checks of hpage_collapse_scan_pmd and __collapse_huge_page_isolate. */
  const eligible = (): CollapseResult | number => {
    let present = 0;
    for (let i = 0; i < PMD_PAGES; i++) {
      const e = Atomics.load(words, base + i);
      if (e === 0) continue;
      if (!(e & PTE.PRESENT) || e & PTE.PROTNONE) return 'swap-or-special';
      const pfn = ptePfn(e);
      if (pfn === ZERO_PFN) continue;
      const fl = k.mem.flags(pfn);
      if (!(fl & FF.ANON) || fl & FF.KSM || k.mem.mapcount(pfn) !== 1 || k.mem.refcount(pfn) !== 1) {
        return 'not-anonymous-exclusive';
      }
      present++;
    }
    return present;
  };
  /** Referenced pages: PTE young, folio referenced, or a secondary MMU's test_young (each page). */
  const referenced = async (): Promise<number> => {
    let n = 0;
    for (let i = 0; i < PMD_PAGES; i++) {
      const e = Atomics.load(words, base + i);
      const pfn = ptePfn(e);
      if (!(e & PTE.PRESENT) || pfn === ZERO_PFN) continue;
      if (e & PTE.YOUNG || k.mem.hasFlag(pfn, FF.REFERENCED)) n++;
      else if (mm.notifier.subscriberCount > 0 && (await mm.notifier.testYoung(haddr + i * PAGE_SIZE))) n++;
    }
    return n;
  };
  const scan = eligible();
  if (typeof scan === 'string') return scan;
  if (scan === 0) return 'empty';
  if (requireYoung && (await referenced()) === 0) return 'lack-referenced';
  const head = k.mem.tryAllocHuge(k.mem.nodeOfPfn(table), false, FF.ANON, false);
  if (head < 0) return 'alloc-failed';
  const freeHead = (): void => {
    for (let i = 0; i < PMD_PAGES; i++) k.mem.put(head + i);
  };
  const range = await k.notify(mm, MmuNotifierEvent.CLEAR, haddr, haddr + PMD_SIZE, origin);
  let detached = -1;
  try {
    // Re-validate after the acknowledgements: reclaim or migration may have moved a page.
    if (mm.pt.load(pmdIdx) !== pmd || typeof eligible() === 'string') {
      freeHead();
      return 'raced';
    }
    // pmdp_collapse_flush: the PTE table leaves the page table; faults would now see a none PMD
    // but they are excluded by the mmap write lock the caller holds.
    mm.pt.store(pmdIdx, 0);
    detached = table;
  } finally {
    k.notifyEnd(mm, range);
  }
  // __collapse_huge_page_isolate asks again, after the invalidation, page by page.
  if (requireYoung && (await referenced()) === 0) {
    mm.pt.store(pmdIdx, pmd); // pmd_populate: put the PTE table back
    freeHead();
    return 'lack-referenced';
  }
  let soft = 0;
  for (let i = 0; i < PMD_PAGES; i++) {
    const e = Atomics.load(k.mem.dataWords, base + i);
    const va = haddr + i * PAGE_SIZE;
    if (e === 0 || ptePfn(e) === ZERO_PFN) k.mem.zeroPage(head + i);
    else k.mem.copyPage(head + i, ptePfn(e));
    soft |= e & PTE.SOFT_DIRTY;
    if (e !== 0) {
      Atomics.store(k.mem.dataWords, base + i, 0);
      k.releaseLeaf(mm, va, e);
    }
  }
  k.putPage(detached);
  const flags = PTE.PRESENT | PTE.HUGE | PTE.DIRTY | PTE.YOUNG | soft | (vma.writable ? PTE.WRITE : 0);
  k.mapLeaf(mm, haddr, pmdIdx, head, flags);
  for (let i = 0; i < PMD_PAGES; i++) k.lruAdd(head + i);
  k.stats.thpCollapsed++;
  return 'collapsed';
}

/** khugepaged: one pass over every eligible 2 MiB of every process. */
export async function khugepagedScan(k: Kernel, maxCollapses = 8): Promise<{ scanned: number; collapsed: number }> {
  let scanned = 0;
  let collapsed = 0;
  for (const p of k.liveProcesses()) {
    const mm = p.mm;
    if (mm.exiting) continue;
    const candidates: number[] = [];
    for (const v of mm.vmas.items) {
      if (v.file !== null || v.shared) continue;
      // Only 2 MiB ranges with page-table entries can collapse: a huge, mostly unpopulated VMA is
      // not walked PMD by PMD (that took minutes and a candidate list of 2^26 entries).
      const first = Math.ceil(v.start / PMD_SIZE) * PMD_SIZE;
      const last = Math.floor(v.end / PMD_SIZE) * PMD_SIZE;
      if (first >= last) continue;
      mm.pt.walk(first, last, (va) => {
        const a = Math.floor(va / PMD_SIZE) * PMD_SIZE;
        if (candidates[candidates.length - 1] !== a && k.thpEligible(v, a)) candidates.push(a);
      });
    }
    if (candidates.length === 0) continue;
    if (!mm.mmapLock.tryWrite('khugepaged')) continue;
    try {
      for (const a of candidates) {
        scanned++;
        if ((await collapseHugePage(k, mm, a, 'khugepaged', true)) === 'collapsed') collapsed++;
        if (collapsed >= maxCollapses) return { scanned, collapsed };
      }
    } finally {
      mm.mmapLock.writeUnlock('khugepaged');
    }
  }
  return { scanned, collapsed };
}

/** Splits the THP mapped at addr (its mappings and the folio). */
export async function splitThpAt(k: Kernel, mm: MM, addr: number): Promise<boolean> {
  const haddr = Math.floor(addr / PMD_SIZE) * PMD_SIZE;
  const idx = mm.pt.pmdIndex(haddr);
  if (idx < 0) return false;
  const e = mm.pt.load(idx);
  if (!(e & PTE.HUGE)) {
    const leaf = mm.pt.lookup(addr);
    const pfn = ptePfn(leaf);
    if (!(leaf & PTE.PRESENT) || pfn === ZERO_PFN || !k.mem.isCompound(pfn)) return false;
    return k.splitFolio(k.mem.headOf(pfn));
  }
  const pfn = ptePfn(e);
  if (pfn === ZERO_PFN) {
    await k.splitHugePmd(mm, haddr, 'thp_split');
    return true;
  }
  return k.splitFolio(pfn);
}
