/**
 * fork (copy-on-write) and exit (exit_mmap).
 *
 * fork: for every VMA whose page table must be copied (private areas that ever held anonymous
 * pages), the parent gets PROTECTION_PAGE over the whole VMA while its writable PTEs are
 * write-protected and shared with the child. Shared mappings are not copied: the child faults
 * them in. The child starts without subscriptions.
 *
 * exit: mmu_notifier_release (RELEASE [0, ULONG_MAX] to interval subscriptions, `release` to
 * whole-mm subscriptions, which are then unlinked), then UNMAP [0, ULONG_MAX) to what remains
 * (interval subscriptions), zap, free page tables.
 */
import { DevmirrorError, kerr } from '../errors.js';
import { FF, LEVEL, PMD_PAGES, PMD_SIZE, PTE, TASK_SIZE, ULONG_MAX } from './layout.js';
import type { Kernel, Process } from './kernel.js';
import type { MM } from './mm.js';
import { ZERO_PFN } from './phys-mem.js';
import { mkPte, ptePfn } from './pte.js';
import type { Vma } from './vma.js';
import { MmuNotifierEvent } from '../notifier/range.js';

/** vma_needs_copy: only areas with anonymous pages have page tables worth copying. */
function needsCopy(v: Vma): boolean {
  return v.anonVma && !v.shared;
}

async function waitMigrations(k: Kernel, mm: MM, v: Vma): Promise<void> {
  for (;;) {
    let pending = -1;
    mm.pt.walk(v.start, v.end, (_va, _idx, _l, e) => {
      if (pending < 0 && e & PTE.MIGRATION) pending = ptePfn(e);
    });
    if (pending < 0) return;
    await k.waitFolio(pending);
  }
}

/**
 * copy_page_range for one VMA, synchronously (no await), so nothing changes under it. Returns
 * false if a page-table page could not be allocated.
 */
function copyPageRange(k: Kernel, src: MM, dst: MM, v: Vma): boolean {
  const alloc = (): number => k.mem.tryAlloc(0, false, FF.PGTABLE, true);
  let ok = true;
  src.pt.walk(v.start, v.end, (va, idx, level, e0) => {
    if (!ok) return;
    let e = e0;
    if (e & PTE.DEVICE_EXCLUSIVE) {
      // Device-exclusive entries become present again before copying (the device saw
      // PROTECTION_PAGE over this VMA already).
      e = mkPte(ptePfn(e), PTE.PRESENT | (e & (PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG)));
      src.pt.store(idx, e);
    }
    const didx = dst.pt.ensure(va, level, alloc);
    if (didx < 0) {
      ok = false;
      return;
    }
    if (e & PTE.SWAP) {
      k.swap.dup(ptePfn(e));
      dst.pt.store(didx, e);
      dst.swapEntries++;
      return;
    }
    const pfn = ptePfn(e);
    let child = e & ~PTE.YOUNG;
    if (e & PTE.WRITE) {
      // Write-protect both sides: the next write by either breaks COW.
      src.pt.store(idx, e & ~PTE.WRITE);
      child &= ~PTE.WRITE;
    }
    if (pfn === ZERO_PFN && !(e & PTE.DEVICE_PRIVATE)) {
      dst.pt.store(didx, child);
      return;
    }
    const huge = level === LEVEL.PMD;
    if (huge) {
      for (let i = 0; i < PMD_PAGES; i++) k.mem.get(pfn + i);
    } else {
      k.mem.get(pfn);
    }
    k.mapLeaf(dst, va, didx, pfn, child);
  });
  return ok;
}

export async function fork(k: Kernel, parent: Process): Promise<Process> {
  const pmm = parent.mm;
  await pmm.mmapLock.write('fork');
  let child: Process | null = null;
  try {
    if (pmm.exiting) throw new DevmirrorError('DM_ERR_PROCESS_EXITING', `process ${parent.pid} is exiting`);
    await k.reserve(1); // the child's page directory (reclaiming if needed)
    child = k.createProcess(undefined, parent.pid);
    const cmm = child.mm;
    cmm.brkStart = pmm.brkStart;
    cmm.brk = pmm.brk;
    for (const v of pmm.vmas.items) {
      // VM_DONTCOPY (MADV_DONTFORK): dup_mmap leaves it out, no copy, no notification.
      if (v.dontFork) continue;
      const cv = v.clone(v.start, v.end);
      cmm.vmas.insert(cv);
      if (!needsCopy(v)) continue;
      // Enough frames for the child's page tables of this VMA, before notifying.
      await k.reserve(Math.ceil((v.end - v.start) / PMD_SIZE) + 4);
      await waitMigrations(k, pmm, v);
      const range = v.cow ? await k.notify(pmm, MmuNotifierEvent.PROTECTION_PAGE, v.start, v.end, 'fork') : null;
      let ok: boolean;
      try {
        await waitMigrations(k, pmm, v);
        ok = copyPageRange(k, pmm, cmm, v);
      } finally {
        if (range) k.notifyEnd(pmm, range);
      }
      if (!ok) throw kerr('ENOMEM', 'fork: out of memory for page tables');
    }
    return child;
  } catch (e) {
    if (child) await teardown(k, child);
    throw e;
  } finally {
    pmm.mmapLock.writeUnlock('fork');
  }
}

/** Zaps every mapping and frees the page tables of an mm nobody can reach (a failed fork). */
async function teardown(k: Kernel, p: Process): Promise<void> {
  const mm = p.mm;
  mm.markExiting();
  k.zapRange(mm, 0, TASK_SIZE);
  for (const v of [...mm.vmas.items]) {
    mm.vmas.remove(v);
  }
  freeAllTables(k, mm);
  k.reapProcess(p);
}

function freeAllTables(k: Kernel, mm: MM): void {
  mm.pt.prune(0, TASK_SIZE);
  mm.notifier.alive = false;
  mm.users = 0;
  mm.retireSlot();
  k.mem.clearFlags(mm.pt.pgd, FF.PGTABLE);
  k.mem.put(mm.pt.pgd);
}

const exiting = new WeakMap<Process, Promise<void>>();

/** exit: the process's address space goes away (exit_mmap). Idempotent. */
export function exit(k: Kernel, p: Process): Promise<void> {
  const running = exiting.get(p);
  if (running) return running;
  const done = doExit(k, p);
  exiting.set(p, done);
  return done;
}

async function doExit(k: Kernel, p: Process): Promise<void> {
  const mm = p.mm;
  p.state = 'exiting';
  // mm_users reached zero: mmget_not_zero fails from now on, so no new device faults start.
  mm.markExiting();
  await mm.notifier.release('exit');
  await mm.mmapLock.write('exit');
  try {
    // exit_mmap: with no VMA at all (a failed fork), unmap_vmas never runs.
    if (mm.vmas.length > 0) {
      const range = await k.notify(mm, MmuNotifierEvent.UNMAP, 0, ULONG_MAX, 'exit');
      try {
        k.zapRange(mm, 0, TASK_SIZE);
      } finally {
        k.notifyEnd(mm, range);
      }
    }
    for (const v of [...mm.vmas.items]) {
      mm.vmas.remove(v);
      if (v.file && v.file.kind === 'shmem' && !k.fileMapped(v.file)) dropShmem(k, v.file.id);
    }
    freeAllTables(k, mm);
  } finally {
    mm.mmapLock.writeUnlock('exit');
  }
  k.reapProcess(p);
}

/** The last mapping of a MAP_SHARED|MAP_ANONYMOUS object is gone: free its pages and swap. */
export function dropShmem(k: Kernel, id: number): void {
  const f = k.files.get(id);
  if (!f || f.kind !== 'shmem') return;
  for (const [index, pfn] of [...f.cache]) {
    f.cache.delete(index);
    k.lruDel(pfn);
    k.putPage(pfn);
  }
  for (const slot of f.swapped.values()) k.swap.put(slot);
  f.swapped.clear();
  k.files.delete(id);
}
