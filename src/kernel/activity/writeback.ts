/**
 * Writeback of dirty file pages (msync, the flusher daemon). Before writing a page the kernel
 * cleans it with page_mkclean: every shared mapping that maps it is write-protected and cleaned,
 * bracketed by PROTECTION_PAGE over the folio's extent in that VMA, so the next write (by the CPU or
 * a device) faults and dirties it again. Clean pages are not notified.
 */
import { FF, PAGE_SIZE, PTE } from '../layout.js';
import type { MemFile } from '../files.js';
import type { Kernel } from '../kernel.js';
import type { MM } from '../mm.js';
import { ptePfn } from '../pte.js';
import { MmuNotifierEvent, type Origin } from '../../notifier/range.js';

export interface WritebackResult {
  scanned: number;
  cleaned: number;
  written: number;
}

/**
 * folio_mkclean: write-protect and clean the page in every shared VMA of its file that covers its
 * offset (the file rmap walk visits them all, mapped or not: each gets PROTECTION_PAGE). Returns
 * true if any PTE was dirty.
 */
export async function folioMkclean(k: Kernel, pfn: number, origin: Origin): Promise<boolean> {
  const file = k.fileOf(pfn);
  if (!file) return false;
  const index = k.pageIndex[pfn];
  const visits: Array<{ mm: MM; va: number }> = [];
  for (const p of k.liveProcesses()) {
    for (const v of p.mm.vmas.items) {
      if (v.file !== file || !v.shared) continue; // invalid_mkclean_vma: VM_SHARED only
      const va = v.addressOf(index);
      if (va >= v.start && va < v.end) visits.push({ mm: p.mm, va });
    }
  }
  let cleaned = false;
  for (const { mm, va } of visits) {
    if (mm.exiting) continue;
    const range = await k.notify(mm, MmuNotifierEvent.PROTECTION_PAGE, va, va + PAGE_SIZE, origin);
    try {
      const idx = mm.pt.leafIndex(va);
      if (idx < 0 || mm.pt.lastLevel !== 0) continue;
      const e = mm.pt.load(idx);
      if (ptePfn(e) !== pfn || !(e & PTE.PRESENT)) continue;
      if (e & (PTE.DIRTY | PTE.WRITE)) {
        if (e & PTE.DIRTY) cleaned = true;
        mm.pt.store(idx, e & ~(PTE.DIRTY | PTE.WRITE));
      }
    } finally {
      k.notifyEnd(mm, range);
    }
  }
  return cleaned;
}

/** Is the page dirty, counting PTE dirty bits that were not folded into the folio yet? */
export function pageDirty(k: Kernel, pfn: number): boolean {
  if (k.mem.hasFlag(pfn, FF.DIRTY)) return true;
  for (const m of k.rmap.of(pfn)) {
    const idx = m.mm.pt.leafIndex(m.va);
    if (idx >= 0 && m.mm.pt.lastLevel === 0 && ptePfn(m.mm.pt.load(idx)) === pfn && m.mm.pt.load(idx) & PTE.DIRTY) return true;
  }
  return false;
}

/** Writes back the dirty pages of file pages [first, last] (inclusive). */
export async function writebackFile(
  k: Kernel,
  file: MemFile,
  first = 0,
  last = Number.MAX_SAFE_INTEGER,
  origin: Origin = 'writeback',
): Promise<WritebackResult> {
  const res: WritebackResult = { scanned: 0, cleaned: 0, written: 0 };
  if (file.kind !== 'file') return res;
  const indexes = [...file.cache.keys()].filter((i) => i >= first && i <= last).sort((a, b) => a - b);
  for (const index of indexes) {
    const pfn = file.cache.get(index);
    if (pfn === undefined) continue;
    res.scanned++;
    if (!pageDirty(k, pfn)) continue;
    await k.folioLocks.lock(pfn, 'writeback');
    try {
      if (file.cache.get(index) !== pfn) continue;
      // folio_clear_dirty_for_io: clean the mappings first, so writes after this point dirty
      // the page again and are written next time.
      if (await folioMkclean(k, pfn, origin)) res.cleaned++;
      k.mem.clearFlags(pfn, FF.DIRTY);
      file.writeDisk(index, k.mem.page(pfn));
      res.written++;
      k.stats.writebacks++;
    } finally {
      k.folioLocks.unlock(pfn);
    }
  }
  return res;
}

/** The flusher: every file with dirty pages. */
export async function writebackAll(k: Kernel, origin: Origin = 'writeback'): Promise<WritebackResult> {
  const total: WritebackResult = { scanned: 0, cleaned: 0, written: 0 };
  for (const f of k.files.list()) {
    const r = await writebackFile(k, f, 0, Number.MAX_SAFE_INTEGER, origin);
    total.scanned += r.scanned;
    total.cleaned += r.cleaned;
    total.written += r.written;
  }
  return total;
}
