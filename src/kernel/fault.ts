/**
 * handle_mm_fault: how the emulated kernel resolves a page fault, for the CPU or on behalf of a
 * device (hmm_range_fault's FAULT_FLAG_REMOTE). Populating a none or swap entry never notifies;
 * replacing a mapped page (COW, zero-page write, device-exclusive restore, THP split) does.
 *
 * The caller holds the mmap lock for reading. Every path that awaits (allocation, notifier
 * acknowledgements, folio locks) re-checks the entry afterwards and retries if it changed
 * (the kernel's pte_same under the page-table lock).
 */
import { DevmirrorError, kerr } from '../errors.js';
import { FF, LEVEL, PAGE_SIZE, PMD_PAGES, PMD_SIZE, PTE } from './layout.js';
import type { Kernel } from './kernel.js';
import type { MM } from './mm.js';
import { ZERO_PFN } from './phys-mem.js';
import { mkPte, ptePfn, type Pte } from './pte.js';
import type { Vma } from './vma.js';
import { MmuNotifierEvent } from '../notifier/range.js';
import { migrateDevicePageToRam } from './migrate-device.js';
import { migrateFolioToNode } from './activity/migrate.js';

export interface FaultFlags {
  write: boolean;
  /** On behalf of a device (FAULT_FLAG_REMOTE): no NUMA migration to the "current" CPU. */
  remote?: boolean;
  /** NUMA node of the faulting CPU. */
  node?: number;
}

const DONE = 0;
const RETRY = 1;
type Step = typeof DONE | typeof RETRY;
const MAX_RETRIES = 100_000;

export function segv(kind: 'SEGV_MAPERR' | 'SEGV_ACCERR', va: number): DevmirrorError {
  return kerr('SIGSEGV', `${kind} at 0x${va.toString(16)}`, { si_code: kind, addr: va });
}

/** Checks a CPU access against the VMA (the kernel's access_error). */
export function accessCheck(mm: MM, va: number, write: boolean): Vma {
  const vma = mm.vmas.find(va);
  if (!vma) throw segv('SEGV_MAPERR', va);
  if (write ? !vma.writable : !vma.readable) throw segv('SEGV_ACCERR', va);
  const f = vma.file;
  if (f && f.kind === 'file' && vma.fileIndex(Math.floor(va / PAGE_SIZE) * PAGE_SIZE) >= f.pages) {
    throw kerr('SIGBUS', `access beyond the end of file ${f.id}`, { addr: va });
  }
  return vma;
}

export async function handleMmFault(k: Kernel, mm: MM, addr: number, f: FaultFlags): Promise<void> {
  const va = Math.floor(addr / PAGE_SIZE) * PAGE_SIZE;
  if (mm.exiting) throw segv('SEGV_MAPERR', va);
  k.stats.faults++;
  mm.counters.faults++;
  if (f.remote) mm.counters.remoteFaults++;
  for (let tries = 0; tries < MAX_RETRIES; tries++) {
    const vma = accessCheck(mm, va, f.write);
    if ((await faultOnce(k, mm, vma, va, f)) === DONE) return;
    if (mm.exiting) throw segv('SEGV_MAPERR', va);
  }
  throw kerr('EAGAIN', `fault at 0x${va.toString(16)} kept retrying`);
}

async function faultOnce(k: Kernel, mm: MM, vma: Vma, va: number, f: FaultFlags): Promise<Step> {
  const pmdIdx = await k.ensurePt(mm, va, LEVEL.PMD);
  const pmd = mm.pt.load(pmdIdx);
  if (pmd === 0 && k.thpEligible(vma, va)) {
    const r = await doHugePmdAnonymousPage(k, mm, vma, va, pmdIdx, f);
    if (r !== null) return r;
  } else if (pmd & PTE.HUGE) {
    return doHugePmdFault(k, mm, vma, va, pmdIdx, pmd, f);
  }
  const idx = await k.ensurePt(mm, va, LEVEL.PTE);
  if (idx === -2) return RETRY; // a huge leaf appeared meanwhile
  const e = mm.pt.load(idx);
  if (e === 0) return doPteNone(k, mm, vma, va, idx, f);
  if (e & PTE.SWAP) return doSwapPage(k, mm, vma, va, idx, e, f);
  if (e & PTE.MIGRATION) {
    await k.waitFolio(ptePfn(e));
    return RETRY;
  }
  if (e & PTE.DEVICE_PRIVATE) {
    await migrateDevicePageToRam(k, mm, va, e);
    return RETRY;
  }
  if (e & PTE.DEVICE_EXCLUSIVE) {
    await removeDeviceExclusive(k, mm, va, idx, e);
    return RETRY;
  }
  if (e & PTE.PROTNONE) return doNumaPage(k, mm, va, idx, e, f);
  if (f.write && !(e & PTE.WRITE)) return doWpPage(k, mm, vma, va, idx, e);
  // Present and allowed: a spurious fault (or a hardware A/D update).
  mm.pt.store(idx, e | PTE.YOUNG | (f.write ? PTE.DIRTY | PTE.SOFT_DIRTY : 0));
  return DONE;
}

// ---- none entries: populate, never notify ---------------------------------------------------------

async function doPteNone(k: Kernel, mm: MM, vma: Vma, va: number, idx: number, f: FaultFlags): Promise<Step> {
  const node = f.node ?? 0;
  if (vma.file === null) {
    // Private anonymous memory.
    if (!f.write) {
      if (mm.pt.load(idx) !== 0) return RETRY;
      mm.pt.store(idx, mkPte(ZERO_PFN, PTE.PRESENT | PTE.YOUNG));
      return DONE;
    }
    const pfn = await k.allocPage(FF.ANON, node, true);
    if (mm.pt.load(idx) !== 0 || mm.exiting) {
      k.putPage(pfn);
      return RETRY;
    }
    vma.anonVma = true;
    k.mapLeaf(mm, va, idx, pfn, PTE.PRESENT | PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG);
    k.lruAdd(pfn);
    return DONE;
  }
  const file = vma.file;
  const index = vma.fileIndex(va);
  if (file.kind === 'file' && index >= file.pages) throw kerr('SIGBUS', `access beyond the end of file ${file.id}`);
  const page = await k.getFilePage(file, index);
  if (mm.pt.load(idx) !== 0 || mm.exiting) return RETRY;
  if (vma.shared) {
    let flags = PTE.PRESENT | PTE.YOUNG;
    if (f.write) {
      k.mem.setFlags(page, FF.DIRTY);
      flags |= PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY;
    } else if (file.kind === 'shmem' && vma.writable) {
      // tmpfs does no dirty accounting, so no write-notify: read faults map writable.
      flags |= PTE.WRITE;
    }
    k.mem.get(page);
    k.mapLeaf(mm, va, idx, page, flags);
    return DONE;
  }
  if (!f.write) {
    k.mem.get(page);
    k.mapLeaf(mm, va, idx, page, PTE.PRESENT | PTE.YOUNG);
    return DONE;
  }
  // do_cow_fault: a private write to a file page gets an anonymous copy straight away.
  const copy = await k.allocPage(FF.ANON, node, false);
  if (mm.pt.load(idx) !== 0 || file.cache.get(index) !== page) {
    k.putPage(copy);
    return RETRY;
  }
  k.mem.copyPage(copy, page);
  vma.anonVma = true;
  k.mapLeaf(mm, va, idx, copy, PTE.PRESENT | PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG);
  k.lruAdd(copy);
  return DONE;
}

async function doSwapPage(k: Kernel, mm: MM, vma: Vma, va: number, idx: number, e: Pte, f: FaultFlags): Promise<Step> {
  const slot = ptePfn(e);
  const pfn = await k.allocPage(FF.ANON, f.node ?? 0, false);
  if (mm.pt.load(idx) !== e) {
    k.putPage(pfn);
    return RETRY;
  }
  k.swap.read(slot, pfn);
  let flags = PTE.PRESENT | PTE.YOUNG | (e & PTE.SOFT_DIRTY);
  if (f.write) flags |= PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY;
  // The copy in swap is about to lose its last reference: the page is the only copy now.
  k.mem.setFlags(pfn, FF.DIRTY);
  mm.pt.store(idx, 0);
  k.swap.put(slot);
  mm.swapEntries--;
  vma.anonVma = true;
  k.mapLeaf(mm, va, idx, pfn, flags);
  k.lruAdd(pfn);
  k.stats.swapIns++;
  mm.counters.swapIns++;
  mm.counters.majorFaults++;
  return DONE;
}

// ---- write-protect faults ---------------------------------------------------------------------------

async function doWpPage(k: Kernel, mm: MM, vma: Vma, va: number, idx: number, e: Pte): Promise<Step> {
  const pfn = ptePfn(e);
  const mem = k.mem;
  if (pfn !== ZERO_PFN) {
    const fl = mem.flags(pfn);
    if (fl & FF.FILE && vma.shared) {
      // wp_page_shared: the filesystem is told (page_mkwrite), the folio is dirtied, and the
      // PTE becomes writable again. An upgrade: no notification.
      mem.setFlags(pfn, FF.DIRTY);
      mm.pt.store(idx, e | PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG);
      return DONE;
    }
    if (fl & FF.ANON && !(fl & FF.KSM) && mem.mapcount(pfn) === 1 && mem.refcount(pfn) === 1 && !k.folioLocks.isLocked(pfn)) {
      // wp_page_reuse: we are the only user, so make it writable in place. No notification.
      // wp_can_reuse_anon_folio trylocks the folio: whoever holds it (KSM write-protecting it to
      // merge, reclaim, migration) makes us copy instead.
      mm.pt.store(idx, e | PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG);
      mem.clearFlags(pfn, FF.LAZYFREE);
      return DONE;
    }
  }
  return wpPageCopy(k, mm, vma, va, idx, e);
}

/** wp_page_copy: a private copy replaces a shared, zero or file page (CLEAR, one page). */
async function wpPageCopy(k: Kernel, mm: MM, vma: Vma, va: number, idx: number, e: Pte): Promise<Step> {
  const old = ptePfn(e);
  const zero = old === ZERO_PFN;
  const copy = await k.allocPage(FF.ANON, 0, zero);
  const range = await k.notify(mm, MmuNotifierEvent.CLEAR, va, va + PAGE_SIZE, 'cow_fault');
  try {
    if (mm.pt.load(idx) !== e) {
      k.putPage(copy);
      return RETRY;
    }
    // Copy after the acknowledgements: no device can still be writing the old page.
    if (!zero) k.mem.copyPage(copy, old);
    const keepSoftDirty = e & PTE.SOFT_DIRTY;
    mm.pt.store(idx, 0);
    k.releaseLeaf(mm, va, e);
    vma.anonVma = true;
    k.mapLeaf(mm, va, idx, copy, PTE.PRESENT | PTE.WRITE | PTE.DIRTY | PTE.YOUNG | PTE.SOFT_DIRTY | keepSoftDirty);
    k.lruAdd(copy);
    k.stats.cowFaults++;
    mm.counters.cowFaults++;
    return DONE;
  } finally {
    k.notifyEnd(mm, range);
  }
}

// ---- special entries ------------------------------------------------------------------------------

/**
 * A CPU fault on a device-exclusive entry gives the page back to the CPU: CLEAR with no owner
 * (6.15+; older kernels sent EXCLUSIVE with no owner), one page.
 */
export async function removeDeviceExclusive(k: Kernel, mm: MM, va: number, idx: number, e: Pte): Promise<void> {
  const pfn = ptePfn(e);
  await k.folioLocks.lock(pfn, 'remove_device_exclusive');
  try {
    const range = await k.notify(mm, MmuNotifierEvent.CLEAR, va, va + PAGE_SIZE, 'exclusive_restore');
    try {
      if (mm.pt.load(idx) !== e) return;
      const keep = e & (PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY);
      mm.pt.store(idx, mkPte(pfn, PTE.PRESENT | PTE.YOUNG | keep));
    } finally {
      k.notifyEnd(mm, range);
    }
  } finally {
    k.folioLocks.unlock(pfn);
  }
}

/** do_numa_page: restore the protection (no notification), migrate if the page is misplaced. */
async function doNumaPage(k: Kernel, mm: MM, va: number, idx: number, e: Pte, f: FaultFlags): Promise<Step> {
  const pfn = ptePfn(e);
  mm.pt.store(idx, (e & ~PTE.PROTNONE) | PTE.PRESENT | PTE.YOUNG);
  mm.counters.numaFaults++;
  const node = f.node ?? 0;
  if (!f.remote && k.mem.nodeOfPfn(pfn) !== node && k.mem.hasFlag(pfn, FF.ANON) && !k.mem.isCompound(pfn)) {
    await migrateFolioToNode(k, pfn, node, 'numa_balancing');
  }
  return RETRY; // re-evaluate: a write may still need a write fault
}

// ---- huge PMDs -------------------------------------------------------------------------------------

async function doHugePmdAnonymousPage(
  k: Kernel,
  mm: MM,
  vma: Vma,
  va: number,
  pmdIdx: number,
  f: FaultFlags,
): Promise<Step | null> {
  const haddr = Math.floor(va / PMD_SIZE) * PMD_SIZE;
  if (!f.write) {
    // The huge zero page.
    if (mm.pt.load(pmdIdx) !== 0) return RETRY;
    mm.pt.store(pmdIdx, mkPte(ZERO_PFN, PTE.PRESENT | PTE.HUGE | PTE.YOUNG));
    return DONE;
  }
  const head = k.mem.tryAllocHuge(f.node ?? 0, false, FF.ANON, true);
  if (head < 0) return null; // fall back to small pages
  if (mm.pt.load(pmdIdx) !== 0) {
    for (let i = 0; i < PMD_PAGES; i++) k.putPage(head + i);
    return RETRY;
  }
  vma.anonVma = true;
  k.mapLeaf(mm, haddr, pmdIdx, head, PTE.PRESENT | PTE.HUGE | PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG);
  for (let i = 0; i < PMD_PAGES; i++) k.lruAdd(head + i);
  return DONE;
}

async function doHugePmdFault(
  k: Kernel,
  mm: MM,
  _vma: Vma,
  va: number,
  pmdIdx: number,
  pmd: Pte,
  f: FaultFlags,
): Promise<Step> {
  const head = ptePfn(pmd);
  if (pmd & (PTE.MIGRATION | PTE.DEVICE_PRIVATE)) {
    // Device or migrating THPs are split and handled page by page.
    await k.splitHugePmd(mm, va, 'thp_split');
    return RETRY;
  }
  if (pmd & PTE.PROTNONE) {
    mm.pt.store(pmdIdx, (pmd & ~PTE.PROTNONE) | PTE.PRESENT | PTE.YOUNG);
    mm.counters.numaFaults++;
    return RETRY;
  }
  if (f.write && !(pmd & PTE.WRITE)) {
    const exclusive =
      head !== ZERO_PFN &&
      !k.mem.hasFlag(head, FF.KSM) &&
      k.mem.folioIntact(head) &&
      !k.folioLocks.isLocked(head) &&
      Array.from({ length: PMD_PAGES }, (_, i) => head + i).every(
        (p) => k.mem.mapcount(p) === 1 && k.mem.refcount(p) === 1,
      );
    if (exclusive) {
      mm.pt.store(pmdIdx, pmd | PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG);
      return DONE;
    }
    // A shared THP or the huge zero page: split the mapping and COW the one page.
    await k.splitHugePmd(mm, va, 'thp_split');
    return RETRY;
  }
  mm.pt.store(pmdIdx, pmd | PTE.YOUNG | (f.write ? PTE.DIRTY | PTE.SOFT_DIRTY : 0));
  return DONE;
}
