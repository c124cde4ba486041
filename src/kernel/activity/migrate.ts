/**
 * Page migration between RAM frames (migrate_pages), and the activities built on it: compaction,
 * NUMA balancing and explicit migration. try_to_migrate_one sends CLEAR for each (folio, VMA)
 * mapping while it replaces the PTE with a migration entry; the copy happens once every mapping
 * is gone, and remapping to the new frame populates without notifying.
 */
import { FF, FM, PAGE_SIZE, PMD_PAGES, PTE, PTE_FLAGS_MASK } from '../layout.js';
import type { Kernel } from '../kernel.js';
import type { MM } from '../mm.js';
import { ZERO_PFN } from '../phys-mem.js';
import { fromMigration, isMigrationOf, mkPte, ptePfn, type Pte } from '../pte.js';
import { MmuNotifierEvent, type Origin } from '../../notifier/range.js';

interface Unmapped {
  mm: MM;
  va: number;
  idx: number;
  old: Pte;
  mig: Pte;
}

/**
 * Unmaps every mapping of `pfn` to a migration entry, one CLEAR pair per mapping
 * (try_to_migrate / try_to_unmap with TTU_SPLIT). The caller holds the folio lock and a reference.
 * Returns the entries it replaced, or null if a mapping cannot be unmapped (device-exclusive).
 */
export async function unmapToMigrationEntries(k: Kernel, pfn: number, origin: Origin): Promise<Unmapped[] | null> {
  const out: Unmapped[] = [];
  for (const m of k.rmap.of(pfn)) {
    if (m.huge) return rollback(k, out);
    const range = await k.notify(m.mm, MmuNotifierEvent.CLEAR, m.va, m.va + PAGE_SIZE, origin);
    try {
      const idx = m.mm.pt.leafIndex(m.va);
      if (idx < 0 || m.mm.pt.lastLevel !== 0) continue;
      const e = m.mm.pt.load(idx);
      if (ptePfn(e) !== pfn || e & (PTE.SWAP | PTE.MIGRATION | PTE.DEVICE_PRIVATE)) continue;
      if (e & PTE.DEVICE_EXCLUSIVE) return rollback(k, out);
      const mig = mkPte(pfn, PTE.MIGRATION | (e & (PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG)));
      if (e & PTE.DIRTY) k.mem.setFlags(pfn, FF.DIRTY);
      m.mm.pt.store(idx, mig);
      out.push({ mm: m.mm, va: m.va, idx, old: e, mig });
    } finally {
      k.notifyEnd(m.mm, range);
    }
  }
  return out;
}

/** Puts back the original entries (remove_migration_ptes on failure): an upgrade, no notify. */
export function rollback(k: Kernel, done: Unmapped[]): null {
  for (const u of done) {
    const cur = u.mm.pt.load(u.idx);
    if (isMigrationOf(cur, ptePfn(u.mig))) u.mm.pt.store(u.idx, fromMigration(cur, u.old, ptePfn(u.mig)));
  }
  return null;
}

/**
 * Migrates one order-0 page to a frame from `allocTarget` (huge folios are split first).
 * Returns the new frame, or -1 if the page could not move now.
 */
export async function migratePage(
  k: Kernel,
  pfn: number,
  allocTarget: () => number,
  origin: Origin,
): Promise<number> {
  const mem = k.mem;
  const fl = mem.flags(pfn);
  if (fl & (FF.FREE | FF.RESERVED | FF.PGTABLE | FF.DEVICE) || pfn === ZERO_PFN) return -1;
  if (!(fl & (FF.ANON | FF.FILE))) return -1;
  if (fl & FF.COMPOUND) {
    const head = mem.headOf(pfn);
    if (!k.folioLocks.tryLock(head, 'split')) return -1;
    try {
      if (!(await k.splitFolio(head))) return -1;
    } finally {
      k.folioLocks.unlock(head);
    }
  }
  if (mem.flags(pfn) & FF.FREE || !k.folioLocks.tryLock(pfn, 'migrate')) return -1;
  mem.get(pfn);
  mem.setFlags(pfn, FF.ISOLATED);
  let target = -1;
  try {
    const unmapped = await unmapToMigrationEntries(k, pfn, origin);
    if (!unmapped) return -1;
    const file = k.fileOf(pfn);
    const index = k.pageIndex[pfn];
    // Expected references: our isolation ref, the page cache, and one per migration entry.
    const expected = 1 + (file && file.cache.get(index) === pfn ? 1 : 0) + unmapped.length;
    if (mem.refcount(pfn) !== expected || mem.mapcount(pfn) !== unmapped.length) {
      rollback(k, unmapped);
      return -1;
    }
    target = allocTarget();
    if (target < 0) {
      rollback(k, unmapped);
      return -1;
    }
    mem.copyPage(target, pfn);
    const keep = FF.ANON | FF.FILE | FF.SHMEM | FF.DIRTY | FF.KSM | FF.LAZYFREE | FF.REFERENCED;
    mem.setFlags(target, mem.flags(pfn) & keep);
    mem.setMeta(target, FM.MAPPING, mem.getMeta(pfn, FM.MAPPING));
    k.pageIndex[target] = index;
    if (file && file.cache.get(index) === pfn) {
      file.cache.set(index, target);
      mem.get(target);
      mem.put(pfn);
    }
    for (const u of unmapped) {
      const cur = u.mm.pt.load(u.idx);
      if (!isMigrationOf(cur, pfn)) continue; // zapped meanwhile
      u.mm.pt.store(u.idx, 0);
      k.releaseLeaf(u.mm, u.va, u.old);
      mem.get(target);
      k.mapLeaf(u.mm, u.va, u.idx, target, fromMigration(cur, u.old, target) & PTE_FLAGS_MASK);
    }
    k.lruDel(pfn);
    k.lruAdd(target);
    mem.put(target); // allocation reference; the mappings and the cache hold it now
    k.stats.migrations++;
    return target;
  } finally {
    mem.clearFlags(pfn, FF.ISOLATED);
    k.folioLocks.unlock(pfn);
    k.putPage(pfn);
  }
}

export async function migrateFolioToNode(k: Kernel, pfn: number, node: number, origin: Origin): Promise<number> {
  return migratePage(k, pfn, () => k.mem.tryAlloc(node, true, 0, false), origin);
}

export interface CompactResult {
  block: number;
  scanned: number;
  migrated: number;
  failed: number;
  /** The block is entirely free afterwards (a huge page fits). */
  freed: boolean;
}

/**
 * Compaction: empties the most nearly free 2 MiB block of a node by migrating its pages to free
 * frames in other blocks (highest first), so a huge page can be allocated there.
 */
export async function compact(k: Kernel, node = 0): Promise<CompactResult> {
  const mem = k.mem;
  const blocks = mem.blockFree.length;
  let best = -1;
  for (let b = 0; b < blocks; b++) {
    const nodeOf = mem.nodeOfPfn(b * PMD_PAGES);
    if (nodeOf !== node || mem.blockFree[b] === PMD_PAGES) continue;
    let movable = true;
    for (let i = 0; i < PMD_PAGES && movable; i++) {
      const f = mem.flags(b * PMD_PAGES + i);
      if (f & (FF.RESERVED | FF.PGTABLE) || (f & FF.FREE) === 0 && (f & (FF.ANON | FF.FILE)) === 0) movable = false;
    }
    if (movable && (best < 0 || mem.blockFree[b] > mem.blockFree[best])) best = b;
  }
  const res: CompactResult = { block: best, scanned: 0, migrated: 0, failed: 0, freed: false };
  if (best < 0) return res;
  k.stats.compactions++;
  const lo = best * PMD_PAGES;
  const hi = lo + PMD_PAGES;
  let cursor = mem.ramFrames - 1;
  const target = (): number => {
    for (; cursor >= 0; cursor--) {
      if ((cursor >= lo && cursor < hi) || mem.nodeOfPfn(cursor) !== node) continue;
      if (mem.hasFlag(cursor, FF.FREE) && mem.tryAllocExact(cursor)) return cursor--;
    }
    return -1;
  };
  for (let pfn = lo; pfn < hi; pfn++) {
    const f = mem.flags(pfn);
    if (f & FF.FREE) continue;
    res.scanned++;
    if ((await migratePage(k, pfn, target, 'compaction')) >= 0) res.migrated++;
    else res.failed++;
  }
  res.freed = mem.blockFree[best] === PMD_PAGES;
  return res;
}

/** Migrates the pages mapped in [start, end) of mm to `node` (migrate_pages / move_pages). */
export async function migrateRange(
  k: Kernel,
  mm: MM,
  start: number,
  end: number,
  node: number,
): Promise<{ scanned: number; migrated: number; failed: number }> {
  const pfns: number[] = [];
  mm.pt.walk(start, end, (_va, _idx, level, e) => {
    if (!(e & PTE.PRESENT) || (e & PTE.TABLE) !== 0) return;
    const pfn = ptePfn(e);
    if (pfn === ZERO_PFN) return;
    if (level === 1) for (let i = 0; i < PMD_PAGES; i++) pfns.push(pfn + i);
    else pfns.push(pfn);
  });
  const res = { scanned: 0, migrated: 0, failed: 0 };
  for (const pfn of pfns) {
    if (k.mem.nodeOfPfn(pfn) === node || k.mem.hasFlag(pfn, FF.FREE)) continue;
    res.scanned++;
    if ((await migrateFolioToNode(k, pfn, node, 'migration')) >= 0) res.migrated++;
    else res.failed++;
  }
  return res;
}
