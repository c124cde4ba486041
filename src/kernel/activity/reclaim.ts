/**
 * Page reclaim (shrink_folio_list) with LRU aging, and swap-out.
 *
 * Aging asks every mapping whether the page was used: the PTE young bit first, then the notifier
 * subscribers' clear_flush_young (a device that used the page keeps it warm), OR-ed as in
 * folio_referenced_one. A page that was not referenced is unmapped with one CLEAR pair per
 * (folio, VMA) mapping, then written to swap (anonymous, shmem), written back (dirty file), or
 * simply dropped (clean file, lazily freed anonymous).
 */
import { FF, PAGE_SIZE, PMD_SIZE, PTE } from '../layout.js';
import type { Kernel } from '../kernel.js';
import { isMigrationOf, mkPte, ptePfn } from '../pte.js';
import type { Origin } from '../../notifier/range.js';
import { unmapToMigrationEntries, rollback } from './migrate.js';

export interface ReclaimResult {
  scanned: number;
  reclaimed: number;
  activated: number;
  swappedOut: number;
  discarded: number;
  written: number;
  failed: number;
}

const emptyResult = (): ReclaimResult => ({
  scanned: 0,
  reclaimed: 0,
  activated: 0,
  swappedOut: 0,
  discarded: 0,
  written: 0,
  failed: 0,
});

/**
 * folio_referenced: how many mappings used the page since the last look. Clears the young bits it
 * finds, in the page table and (through clear_flush_young) in every subscriber.
 */
export async function folioReferenced(k: Kernel, pfn: number): Promise<number> {
  let referenced = 0;
  for (const m of k.rmap.of(pfn, k.mem.headOf(pfn))) {
    const mm = m.mm;
    let young = false;
    let start = m.va;
    let end = m.va + PAGE_SIZE;
    if (m.huge) {
      start = Math.floor(m.va / PMD_SIZE) * PMD_SIZE;
      end = start + PMD_SIZE;
      const idx = mm.pt.pmdIndex(start);
      const e = idx >= 0 ? mm.pt.load(idx) : 0;
      if (e & PTE.HUGE && e & PTE.YOUNG) {
        mm.pt.store(idx, e & ~PTE.YOUNG);
        young = true;
      }
    } else {
      const idx = mm.pt.leafIndex(m.va);
      const e = idx >= 0 ? mm.pt.load(idx) : 0;
      if (ptePfn(e) === pfn && e & PTE.YOUNG) {
        mm.pt.store(idx, e & ~PTE.YOUNG);
        young = true;
      }
    }
    // ptep_clear_flush_young_notify: the primary bit, then the secondary MMUs; both always run.
    const secondary = mm.notifier.subscriberCount > 0 ? await mm.notifier.clearFlushYoung(start, end) : false;
    if (young || secondary) referenced++;
  }
  return referenced;
}

type EvictOutcome = 'reclaimed' | 'failed' | 'activate' | 'keep';

/**
 * Unmaps and frees one page (the caller took it off the LRU). `ignoreReferences` is
 * MADV_PAGEOUT's reclaim_pages path.
 */
export async function evictPage(
  k: Kernel,
  pfn: number,
  origin: Origin,
  ignoreReferences: boolean,
  res: ReclaimResult,
): Promise<EvictOutcome> {
  const mem = k.mem;
  if (mem.flags(pfn) & (FF.FREE | FF.DEVICE | FF.RESERVED | FF.PGTABLE) || mem.flags(pfn) & FF.ISOLATED) return 'failed';
  if (mem.isCompound(pfn)) {
    const head = mem.headOf(pfn);
    if (!k.folioLocks.tryLock(head, 'reclaim-split')) return 'keep';
    try {
      if (!(await k.splitFolio(head))) return 'keep';
    } finally {
      k.folioLocks.unlock(head);
    }
    if (mem.flags(pfn) & FF.FREE) return 'failed';
  }
  if (!ignoreReferences) {
    const refs = await folioReferenced(k, pfn);
    if (mem.flags(pfn) & FF.FREE) return 'failed';
    if (refs > 0) {
      // folio_check_references: activate if it was referenced before or is shared.
      if (mem.hasFlag(pfn, FF.REFERENCED) || refs > 1) return 'activate';
      mem.setFlags(pfn, FF.REFERENCED);
      return 'keep';
    }
  }
  if (!k.folioLocks.tryLock(pfn, 'reclaim')) return 'keep';
  mem.get(pfn);
  mem.setFlags(pfn, FF.ISOLATED);
  try {
    const fl = mem.flags(pfn);
    const file = k.fileOf(pfn);
    const index = k.pageIndex[pfn];
    if (fl & FF.ANON && !(fl & FF.LAZYFREE) && k.swap.free() === 0) return 'activate';
    if (file && file.kind === 'shmem' && k.swap.free() === 0) return 'activate';
    // Provenance: the LRU's reclaim of a swap-backed page (anonymous, shmem) is a swap-out; file
    // pages and lazily freed ones are dropped or written back. A syscall (MADV_PAGEOUT) keeps its own.
    const swapBacked = (fl & FF.ANON && !(fl & FF.LAZYFREE)) || file?.kind === 'shmem';
    const unmapped = await unmapToMigrationEntries(k, pfn, origin === 'reclaim' && swapBacked ? 'swap' : origin);
    if (!unmapped) return 'keep';
    const cacheRef = file && k.files.get(file.id) === file && file.cache.get(index) === pfn ? 1 : 0;
    if (mem.refcount(pfn) !== 1 + cacheRef + unmapped.length || mem.mapcount(pfn) !== unmapped.length) {
      rollback(k, unmapped);
      return 'keep';
    }
    // Every mapping now holds a migration entry: nobody can write the page any more.
    // The migration entries may have had bits changed (mprotect, clear_refs): match by pfn.
    const finish = (u: (typeof unmapped)[number], entry: number): boolean => {
      if (!isMigrationOf(u.mm.pt.load(u.idx), pfn)) return false;
      u.mm.pt.store(u.idx, entry);
      k.releaseLeaf(u.mm, u.va, u.old);
      return true;
    };
    if (fl & FF.ANON) {
      if (unmapped.length === 0) return 'reclaimed'; // unmapped meanwhile: our put frees it
      if (fl & FF.LAZYFREE && !(mem.flags(pfn) & FF.DIRTY)) {
        // MADV_FREE page not written since (unmapping folded any dirty PTE into the folio):
        // drop it, the next read sees zeros.
        for (const u of unmapped) finish(u, 0);
        res.discarded++;
        return 'reclaimed';
      }
      if (k.swap.free() === 0) {
        rollback(k, unmapped);
        return 'activate';
      }
      const slot = k.swap.swapOut(pfn, unmapped.length);
      let used = 0;
      for (const u of unmapped) {
        if (finish(u, mkPte(slot, PTE.SWAP | (u.mm.pt.load(u.idx) & PTE.SOFT_DIRTY)))) {
          u.mm.swapEntries++;
          used++;
        }
      }
      for (let i = used; i < unmapped.length; i++) k.swap.put(slot);
      res.swappedOut++;
      k.stats.swapOuts++;
      return 'reclaimed';
    }
    if (!file) {
      rollback(k, unmapped);
      return 'failed';
    }
    for (const u of unmapped) finish(u, 0);
    // The object may have gone while we waited (its last mapping was unmapped): then the page is
    // simply dropped with our reference, nothing goes to swap or disk.
    if (k.files.get(file.id) !== file || !cacheRef) return 'reclaimed';
    if (file.kind === 'shmem') {
      const slot = k.swap.swapOut(pfn, 1);
      file.swapped.set(index, slot);
      res.swappedOut++;
      k.stats.swapOuts++;
    } else if (mem.flags(pfn) & FF.DIRTY) {
      // pageout(): the page is unmapped, so no page_mkclean is needed before the write.
      file.writeDisk(index, mem.page(pfn));
      mem.clearFlags(pfn, FF.DIRTY);
      res.written++;
      k.stats.writebacks++;
    }
    if (cacheRef) {
      file.cache.delete(index);
      mem.put(pfn); // the cache's reference; ours is dropped below
    }
    return 'reclaimed';
  } finally {
    mem.clearFlags(pfn, FF.ISOLATED);
    k.folioLocks.unlock(pfn);
    k.putPage(pfn);
  }
}

/** Moves pages from the active to the inactive list, clearing their young bits (aging). */
async function ageActive(k: Kernel, count: number): Promise<void> {
  for (let i = 0; i < count && k.lru.active.size > 0; i++) {
    const pfn = k.lru.active.values().next().value as number;
    k.lru.active.delete(pfn);
    if (k.mem.hasFlag(pfn, FF.FREE)) continue;
    await folioReferenced(k, pfn);
    if (k.mem.hasFlag(pfn, FF.FREE)) continue;
    k.mem.clearFlags(pfn, FF.ACTIVE | FF.REFERENCED);
    k.lru.inactive.add(pfn);
  }
}

/**
 * shrink_node: scan the inactive list until `target` pages are freed, `scanLimit` pages were looked
 * at, or the lists run dry.
 */
export async function shrink(k: Kernel, target: number, origin: Origin = 'reclaim', scanLimit = Math.max(64, target * 8)): Promise<ReclaimResult> {
  const res = emptyResult();
  const limit = scanLimit;
  k.stats.reclaimScans++;
  // One pass: a page put back (kept, activated) is not looked at again in the same call, as
  // shrink_inactive_list isolates each page once per scan.
  const seen = new Set<number>();
  while (res.reclaimed < target && res.scanned < limit) {
    if (k.lru.inactive.size < k.lru.active.size || k.lru.inactive.size === 0) await ageActive(k, 32);
    if (k.lru.inactive.size === 0) break;
    const pfn = k.lru.inactive.values().next().value as number;
    if (seen.has(pfn)) break;
    seen.add(pfn);
    k.lru.inactive.delete(pfn);
    res.scanned++;
    const outcome = await evictPage(k, pfn, origin, false, res);
    putBack(k, pfn, outcome, res);
  }
  k.stats.reclaimed += res.reclaimed;
  return res;
}

function putBack(k: Kernel, pfn: number, outcome: EvictOutcome, res: ReclaimResult): void {
  if (outcome === 'reclaimed') {
    res.reclaimed++;
    return;
  }
  if (k.mem.hasFlag(pfn, FF.FREE) || !k.mem.hasFlag(pfn, FF.LRU)) return;
  if (outcome === 'activate') {
    res.activated++;
    k.mem.setFlags(pfn, FF.ACTIVE);
    k.lru.inactive.delete(pfn);
    k.lru.active.add(pfn);
  } else {
    if (outcome === 'failed') res.failed++;
    k.lru.active.delete(pfn);
    k.lru.inactive.add(pfn);
  }
}

/** reclaim_pages: reclaim these pages now, ignoring references (MADV_PAGEOUT). */
export async function reclaimPages(k: Kernel, pfns: number[], origin: Origin): Promise<ReclaimResult> {
  const res = emptyResult();
  for (const pfn of pfns) {
    if (!k.mem.hasFlag(pfn, FF.LRU) || k.mem.hasFlag(pfn, FF.FREE)) continue;
    k.lru.inactive.delete(pfn);
    k.lru.active.delete(pfn);
    res.scanned++;
    const outcome = await evictPage(k, pfn, origin, true, res);
    putBack(k, pfn, outcome === 'activate' ? 'keep' : outcome, res);
  }
  k.stats.reclaimed += res.reclaimed;
  return res;
}
