/**
 * The memory syscalls: mmap, munmap, mremap, mprotect, madvise, brk, msync, clear_refs, pagemap,
 * and CPU loads/stores. Each fires exactly the notifier events the kernel fires (see the table in
 * docs/events.md) and never notifies when it only populates.
 *
 * Argument checks come first and change nothing; an errno is thrown as a DevmirrorError.
 */
import { DevmirrorError, kerr } from '../errors.js';
import { FF, FM, LEVEL, PAGE_SIZE, PMD_SIZE, PTE, PUD_SIZE, TASK_SIZE, ULONG_MAX } from './layout.js';
import { handleMmFault, accessCheck } from './fault.js';
import type { MemFile } from './files.js';
import { isPageAligned, pageAlignUp, type Kernel, type Process } from './kernel.js';
import { MMAP_BASE, MMAP_MIN_ADDR, type MM } from './mm.js';
import { ZERO_PFN } from './phys-mem.js';
import { ptePfn, type Pte } from './pte.js';
import { PROT, Vma, type HugeAdvice } from './vma.js';
import { MmuNotifierEvent, RANGE_UPDATE_TO_READ_ONLY, type Origin } from '../notifier/range.js';
import { reclaimPages } from './activity/reclaim.js';
import { collapseHugePage } from './activity/thp.js';
import { writebackFile } from './activity/writeback.js';
import { dropShmem } from './process-ops.js';

// ---- argument checks -------------------------------------------------------------------------------

export function checkNumber(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new DevmirrorError('DM_ERR_BAD_ADDRESS', `${name} must be a non-negative integer`);
  }
  return v;
}

/** [addr, addr + pageAlignUp(length)) with the kernel's checks; `zeroOk` returns null for 0. */
export function userRange(addr: number, length: number, onBad: 'EINVAL' | 'ENOMEM', zeroOk: boolean): [number, number] | null {
  checkNumber('addr', addr);
  checkNumber('length', length);
  if (!isPageAligned(addr)) throw kerr('EINVAL', 'address is not page aligned');
  if (length === 0) {
    if (zeroOk) return null;
    throw kerr('EINVAL', 'length is zero');
  }
  const len = pageAlignUp(length);
  if (len > TASK_SIZE || addr > TASK_SIZE - len) throw kerr(onBad, 'range wraps or leaves the user address space');
  return [addr, addr + len];
}

function checkProt(prot: number): void {
  if (!Number.isInteger(prot) || prot < 0 || prot > (PROT.READ | PROT.WRITE | PROT.EXEC)) {
    throw kerr('EINVAL', 'unknown protection bits');
  }
}

async function withWrite<T>(mm: MM, who: string, fn: () => Promise<T>): Promise<T> {
  await mm.mmapLock.write(who);
  try {
    if (mm.exiting) throw new DevmirrorError('DM_ERR_PROCESS_EXITING', `process ${mm.pid} is exiting`);
    return await fn();
  } finally {
    mm.mmapLock.writeUnlock(who);
  }
}

/** Runs fn under the mmap read lock (refused once the process is exiting). */
export async function withRead<T>(mm: MM, who: string, fn: () => Promise<T>): Promise<T> {
  await mm.mmapLock.read(who);
  try {
    if (mm.exiting) throw new DevmirrorError('DM_ERR_PROCESS_EXITING', `process ${mm.pid} is exiting`);
    return await fn();
  } finally {
    mm.mmapLock.readUnlock(who);
  }
}

// ---- shared helpers -----------------------------------------------------------------------------

/** Splits a huge PMD straddling `addr` (vma_adjust_trans_huge at a new VMA boundary). */
async function splitHugeAt(k: Kernel, mm: MM, addr: number): Promise<void> {
  if (addr % PMD_SIZE === 0) return;
  const idx = mm.pt.pmdIndex(addr);
  if (idx >= 0 && mm.pt.load(idx) & PTE.HUGE) await k.splitHugePmd(mm, addr, 'thp_split');
}

/**
 * __split_vma at addr: vma_adjust_trans_huge first (split_huge_pmd_if_needed: when addr is not
 * 2 MiB aligned and the aligned 2 MiB around it lies inside the VMA, CLEAR over it, huge or not).
 */
async function splitVma(k: Kernel, mm: MM, addr: number): Promise<void> {
  const v = mm.vmas.find(addr);
  if (!v || v.start === addr) return;
  if (addr % PMD_SIZE !== 0) {
    const lo = Math.floor(addr / PMD_SIZE) * PMD_SIZE;
    if (lo >= v.start && lo + PMD_SIZE <= v.end) await k.splitHugePmd(mm, addr, 'thp_split', true);
  }
  mm.vmas.splitAt(addr);
}

/** Splits huge PMDs that [start, end) covers only partly. */
async function splitHugeEdges(k: Kernel, mm: MM, start: number, end: number): Promise<void> {
  await splitHugeAt(k, mm, start);
  await splitHugeAt(k, mm, end);
}

/** A VMA went away: a MAP_SHARED|MAP_ANONYMOUS object nobody maps any more is freed. */
function fileRelease(k: Kernel, v: Vma): void {
  if (v.file && v.file.kind === 'shmem' && !k.fileMapped(v.file)) dropShmem(k, v.file.id);
}

/**
 * do_munmap with the mmap write lock held: split edge THPs and VMAs, one UNMAP pair over the whole
 * range (unmap_vmas), then free page tables. Returns false if nothing was mapped there.
 */
export async function doMunmap(k: Kernel, mm: MM, start: number, end: number, origin: Origin): Promise<boolean> {
  if (mm.vmas.overlapping(start, end).length === 0) return false;
  await splitVma(k, mm, start);
  await splitVma(k, mm, end);
  const range = await k.notify(mm, MmuNotifierEvent.UNMAP, start, end, origin);
  try {
    k.zapRange(mm, start, end);
    for (const v of mm.vmas.overlapping(start, end)) {
      mm.vmas.remove(v);
      fileRelease(k, v);
    }
  } finally {
    k.notifyEnd(mm, range);
  }
  // free_pgtables: tables wholly between the neighbouring VMAs go.
  const prev = mm.vmas.prevOf(start);
  const next = mm.vmas.findFrom(end);
  mm.pt.prune(start, end, prev ? prev.end : 0, next ? next.start : TASK_SIZE);
  return true;
}

// ---- mmap ---------------------------------------------------------------------------------------

export interface MmapArgs {
  addr?: number;
  length: number;
  prot: number;
  shared?: boolean;
  fixed?: boolean;
  populate?: boolean;
  hugepage?: boolean;
  file?: { id: number; offset?: number };
  name?: string;
}

export async function mmap(k: Kernel, p: Process, a: MmapArgs): Promise<number> {
  const mm = p.mm;
  checkNumber('length', a.length);
  if (a.length === 0) throw kerr('EINVAL', 'length is zero');
  checkProt(a.prot);
  const len = pageAlignUp(a.length);
  if (len > TASK_SIZE - MMAP_MIN_ADDR) throw kerr('ENOMEM', 'mapping larger than the address space');
  const hint = a.addr ?? 0;
  checkNumber('addr', hint);
  if (a.fixed && !isPageAligned(hint)) throw kerr('EINVAL', 'MAP_FIXED needs an aligned address');
  // security_mmap_addr: an unprivileged process may not map below mmap_min_addr.
  if (a.fixed && hint < MMAP_MIN_ADDR) throw kerr('EPERM', 'address below mmap_min_addr');
  if (a.fixed && hint > TASK_SIZE - len) throw kerr('ENOMEM', 'MAP_FIXED range leaves the address space');
  let file: MemFile | null = null;
  let pgoff = 0;
  if (a.file) {
    const f = k.files.get(a.file.id);
    if (!f || f.kind !== 'file') throw new DevmirrorError('DM_ERR_NO_SUCH_FILE', `no file ${a.file.id}`);
    const off = a.file.offset ?? 0;
    checkNumber('offset', off);
    if (!isPageAligned(off)) throw kerr('EINVAL', 'file offset is not page aligned');
    file = f;
    pgoff = off / PAGE_SIZE;
  }
  if (a.hugepage && (file || a.shared)) throw kerr('EINVAL', 'hugepage mappings must be private anonymous');
  const shared = !!a.shared;
  let result = 0;
  await withWrite(mm, 'mmap', async () => {
    let addr: number;
    if (a.fixed) {
      addr = hint;
      await doMunmap(k, mm, addr, addr + len, 'mmap');
    } else {
      const align = !file && !shared && (a.hugepage || len >= PMD_SIZE) ? PMD_SIZE : PAGE_SIZE;
      addr = -1;
      if (hint && isPageAligned(hint) && hint >= MMAP_MIN_ADDR && hint <= TASK_SIZE - len && mm.vmas.isFree(hint, hint + len)) {
        addr = hint;
      } else {
        addr = mm.vmas.findGapTopDown(len, MMAP_BASE, MMAP_MIN_ADDR, align);
        if (addr < 0 && align !== PAGE_SIZE) addr = mm.vmas.findGapTopDown(len, MMAP_BASE, MMAP_MIN_ADDR, PAGE_SIZE);
        if (addr < 0) addr = mm.vmas.findGapTopDown(len, TASK_SIZE, MMAP_BASE, PAGE_SIZE);
      }
      if (addr < 0) throw kerr('ENOMEM', 'no free address range');
    }
    if (shared && !file) file = k.files.create(len, 'shmem');
    const v = new Vma(addr, addr + len, {
      prot: a.prot,
      shared,
      file,
      pgoff,
      huge: a.hugepage ? 'hugepage' : 'default',
      mergeable: false,
      name: a.name ?? null,
    });
    mm.vmas.insert(v);
    if (!file) mm.vmas.mergeAround(addr, addr + len);
    result = addr;
  });
  if (a.populate && a.prot !== PROT.NONE) await populate(k, mm, result, result + len);
  return result;
}

/**
 * mm_populate: fault every page in (write faults for private writable mappings, as
 * populate_vma_page_range does). Errors are ignored, as MAP_POPULATE ignores them.
 */
export async function populate(k: Kernel, mm: MM, start: number, end: number): Promise<void> {
  await mm.mmapLock.read('populate');
  try {
    for (let va = start; va < end; va += PAGE_SIZE) {
      // A task being killed stops populating (fatal_signal_pending in __get_user_pages).
      if (mm.exiting) return;
      const v = mm.vmas.find(va);
      if (!v || !v.readable) continue;
      try {
        await handleMmFault(k, mm, va, { write: v.writable && !v.shared });
      } catch {
        return;
      }
      // A huge mapping (a THP, or the huge zero page a read fault maps without using memory)
      // covers the rest of its 2 MiB: skip it, as __get_user_pages does with its page_mask. Page by
      // page, a read-only THP area of 64 TiB took hours.
      if (mm.pt.lookup(va) & PTE.HUGE) va = Math.floor(va / PMD_SIZE) * PMD_SIZE + PMD_SIZE - PAGE_SIZE;
    }
  } finally {
    mm.mmapLock.readUnlock('populate');
  }
}

export async function munmap(k: Kernel, p: Process, addr: number, length: number): Promise<void> {
  const r = userRange(addr, length, 'EINVAL', false);
  if (!r) return;
  await withWrite(p.mm, 'munmap', () => doMunmap(k, p.mm, r[0], r[1], 'munmap'));
}

// ---- mremap -------------------------------------------------------------------------------------

export interface MremapArgs {
  addr: number;
  length: number;
  newLength: number;
  maymove?: boolean;
  fixed?: boolean;
  dontunmap?: boolean;
  newAddr?: number;
}

export async function mremap(k: Kernel, p: Process, a: MremapArgs): Promise<number> {
  const mm = p.mm;
  checkNumber('addr', a.addr);
  checkNumber('length', a.length);
  checkNumber('newLength', a.newLength);
  if (!isPageAligned(a.addr)) throw kerr('EINVAL', 'address is not page aligned');
  if (a.fixed && !a.maymove) throw kerr('EINVAL', 'MREMAP_FIXED needs MREMAP_MAYMOVE');
  if (a.dontunmap && !a.maymove) throw kerr('EINVAL', 'MREMAP_DONTUNMAP needs MREMAP_MAYMOVE');
  const oldLen = pageAlignUp(a.length);
  const newLen = pageAlignUp(a.newLength);
  if (newLen === 0 || oldLen === 0) throw kerr('EINVAL', 'zero length');
  if (a.dontunmap && oldLen !== newLen) throw kerr('EINVAL', 'MREMAP_DONTUNMAP needs equal lengths');
  if (oldLen > TASK_SIZE || a.addr > TASK_SIZE - oldLen || newLen > TASK_SIZE) throw kerr('EINVAL', 'range wraps');
  let newAddr = a.newAddr ?? 0;
  if (a.fixed) {
    checkNumber('newAddr', newAddr);
    if (!isPageAligned(newAddr) || newAddr > TASK_SIZE - newLen) throw kerr('EINVAL', 'bad new address');
    if (newAddr < MMAP_MIN_ADDR) throw kerr('EPERM', 'address below mmap_min_addr');
    if (newAddr < a.addr + oldLen && a.addr < newAddr + newLen) throw kerr('EINVAL', 'old and new ranges overlap');
  }
  return withWrite(mm, 'mremap', async () => {
    const addr = a.addr;
    const vma = mm.vmas.find(addr);
    if (!vma || addr + oldLen > vma.end) throw kerr('EFAULT', 'old range is not one mapping');
    if (a.fixed) {
      await doMunmap(k, mm, newAddr, newAddr + newLen, 'mremap');
      let moveLen = oldLen;
      if (newLen < oldLen) {
        await doMunmap(k, mm, addr + newLen, addr + oldLen, 'mremap');
        moveLen = newLen;
      }
      return moveVma(k, mm, addr, moveLen, newAddr, newLen, !!a.dontunmap);
    }
    if (newLen <= oldLen && !a.dontunmap) {
      if (newLen < oldLen) await doMunmap(k, mm, addr + newLen, addr + oldLen, 'mremap');
      return addr;
    }
    if (!a.dontunmap && addr + oldLen === vma.end && addr + newLen <= TASK_SIZE && mm.vmas.isFree(vma.end, addr + newLen)) {
      // Expand in place: populating later, nothing to notify.
      vma.end = addr + newLen;
      if (vma.file && vma.file.kind === 'shmem' && vma.file.size < vma.fileIndex(vma.end) * PAGE_SIZE) {
        vma.file.size = vma.fileIndex(vma.end) * PAGE_SIZE;
      }
      return addr;
    }
    if (!a.maymove) throw kerr('ENOMEM', 'cannot grow in place');
    const align = addr % PMD_SIZE === 0 && oldLen >= PMD_SIZE ? PMD_SIZE : PAGE_SIZE;
    let to = mm.vmas.findGapTopDown(newLen, MMAP_BASE, MMAP_MIN_ADDR, align);
    if (to < 0) to = mm.vmas.findGapTopDown(newLen, MMAP_BASE, MMAP_MIN_ADDR, PAGE_SIZE);
    if (to < 0) throw kerr('ENOMEM', 'no free range to move to');
    return moveVma(k, mm, addr, oldLen, to, newLen, !!a.dontunmap);
  });
}

/**
 * move_vma: a new VMA at `to`, page tables moved under UNMAP over the old range (the new range is
 * not notified: it only gets populated), then munmap of the old range (a second UNMAP pair) unless
 * MREMAP_DONTUNMAP keeps the old VMA, now empty.
 */
async function moveVma(
  k: Kernel,
  mm: MM,
  from: number,
  len: number,
  to: number,
  newLen: number,
  dontunmap: boolean,
): Promise<number> {
  await splitHugeEdges(k, mm, from, from + len);
  if ((from - to) % PMD_SIZE !== 0) {
    // Huge PMDs can only move to an equally aligned place: split them first.
    for (let a = Math.floor(from / PMD_SIZE) * PMD_SIZE; a < from + len; a += PMD_SIZE) await splitHugeAt(k, mm, a + PAGE_SIZE);
  }
  mm.vmas.splitAt(from);
  mm.vmas.splitAt(from + len);
  const old = mm.vmas.find(from);
  if (!old) throw kerr('EFAULT', 'old range vanished');
  // Page tables for the destination first: if memory runs out, nothing has changed yet.
  const want: Array<{ va: number; level: number }> = [];
  mm.pt.walk(from, from + len, (va, _idx, level) => want.push({ va: va - from + to, level }));
  try {
    for (const w of want) {
      if ((await k.ensurePt(mm, w.va, w.level)) < 0) throw kerr('ENOMEM', 'no frame for a page table while moving');
    }
  } catch (e) {
    // Give back the (empty) tables made for the destination.
    const prev = mm.vmas.prevOf(to);
    const next = mm.vmas.findFrom(to + len);
    mm.pt.prune(to, to + len, prev ? prev.end : 0, next ? next.start : TASK_SIZE);
    mm.vmas.mergeAround(from, from + len); // undo the VMA splits
    throw e;
  }
  const nv = old.clone(from, from + len);
  nv.start = to;
  nv.end = to + newLen;
  mm.vmas.insert(nv);
  const range = await k.notify(mm, MmuNotifierEvent.UNMAP, from, from + len, 'mremap');
  try {
    // A migration finds its entries again by address: let migrations in the range finish first
    // (nothing can start a new one between this check and the synchronous move below).
    for (;;) {
      let pending = -1;
      mm.pt.walk(from, from + len, (_va, _i, _l, e) => {
        if (pending < 0 && e & PTE.MIGRATION) pending = ptePfn(e);
      });
      if (pending < 0) break;
      await k.waitFolio(pending);
    }
    const leaves: Array<{ va: number; idx: number; level: number; e: Pte }> = [];
    mm.pt.walk(from, from + len, (va, idx, level, e) => leaves.push({ va, idx, level, e }));
    for (const l of leaves) {
      const nva = l.va - from + to;
      const nidx = mm.pt.ensure(nva, l.level, () => k.mem.tryAlloc(0, false, FF.PGTABLE, true));
      if (nidx < 0) throw kerr('ENOMEM', 'no frame for a page table while moving');
      mm.pt.store(l.idx, 0);
      mm.pt.store(nidx, l.e);
      if (l.e & PTE.SWAP) continue;
      const pfn = ptePfn(l.e);
      if (pfn === ZERO_PFN && !(l.e & PTE.DEVICE_PRIVATE)) continue;
      const huge = l.level === LEVEL.PMD;
      k.rmap.remove(pfn, mm, l.va, huge);
      k.rmap.add(pfn, mm, nva, huge);
      if (l.e & PTE.DEVICE_PRIVATE) k.pagemaps.get(k.mem.getMeta(pfn, FM.OWNER))?.pageMigratedOut?.(mm, l.va, pfn);
    }
  } finally {
    k.notifyEnd(mm, range);
  }
  if (!dontunmap) await doMunmap(k, mm, from, from + len, 'mremap');
  return to;
}

// ---- mprotect -----------------------------------------------------------------------------------

/** can_change_pte_writable: upgrade without a fault when nobody else can see the page. */
function canMakeWritable(k: Kernel, vma: Vma, e: Pte): boolean {
  if (!(e & PTE.PRESENT)) return false;
  const pfn = ptePfn(e);
  if (vma.shared) return (e & PTE.DIRTY) !== 0;
  if (pfn === ZERO_PFN) return false;
  const fl = k.mem.flags(pfn);
  return (
    (fl & FF.ANON) !== 0 &&
    (fl & FF.KSM) === 0 &&
    k.mem.mapcount(pfn) === 1 &&
    k.mem.refcount(pfn) === 1 &&
    (e & PTE.SOFT_DIRTY) !== 0
  );
}

/**
 * change_protection over one VMA: PROTECTION_VMA opened lazily at the first populated PUD (so an
 * unpopulated range sends nothing), from that PUD's address (or the start) to the end.
 */
export async function changeProtection(
  k: Kernel,
  mm: MM,
  vma: Vma,
  start: number,
  end: number,
  newProt: number,
  origin: Origin,
  numa = false,
): Promise<number> {
  let first = -1;
  for (let a = start; a < end; a = (Math.floor(a / PUD_SIZE) + 1) * PUD_SIZE) {
    const pudEnd = Math.min(end, (Math.floor(a / PUD_SIZE) + 1) * PUD_SIZE);
    if (pudPopulated(mm, a)) {
      first = a;
      break;
    }
    if (pudEnd >= end) break;
  }
  if (first < 0) return 0;
  let changed = 0;
  // update_to_read_only: the VMA keeps VM_READ (NUMA hinting leaves the VMA as it is).
  const readable = numa ? vma.readable : (newProt & PROT.READ) !== 0;
  const range = await k.notify(mm, MmuNotifierEvent.PROTECTION_VMA, first, end, origin, null, readable ? RANGE_UPDATE_TO_READ_ONLY : 0);
  try {
    mm.pt.walk(start, end, (va, idx, _level, e) => {
      let n = e;
      if (numa) {
        if (!(e & PTE.PRESENT) || ptePfn(e) === ZERO_PFN) return;
        const pfn = ptePfn(e);
        if (!(e & PTE.HUGE) && k.mem.flags(pfn) & FF.KSM) return;
        n = (e & ~PTE.PRESENT) | PTE.PROTNONE;
      } else if (newProt === PROT.NONE) {
        if (e & PTE.PRESENT) n = (e & ~PTE.PRESENT) | PTE.PROTNONE;
        n &= ~PTE.WRITE;
      } else {
        if (e & PTE.PROTNONE) n = (n & ~PTE.PROTNONE) | PTE.PRESENT;
        if (!(newProt & PROT.WRITE)) n &= ~PTE.WRITE;
        else if (!(n & PTE.WRITE) && canMakeWritable(k, vma, n)) n |= PTE.WRITE;
      }
      if (n !== e) {
        mm.pt.store(idx, n);
        changed++;
      }
      void va;
    });
  } finally {
    k.notifyEnd(mm, range);
  }
  return changed;
}

function pudPopulated(mm: MM, va: number): boolean {
  // The PUD entry (level 2) for va: populated if it points at a PMD table.
  let table = mm.pt.pgd;
  const pgdE = mm.pt.load(table * (PAGE_SIZE / 4) + (Math.floor(va / 2 ** 39) & 511));
  if (!(pgdE & PTE.TABLE)) return false;
  table = ptePfn(pgdE);
  const pudE = mm.pt.load(table * (PAGE_SIZE / 4) + (Math.floor(va / PUD_SIZE) & 511));
  return pudE !== 0;
}

export async function mprotect(k: Kernel, p: Process, addr: number, length: number, prot: number): Promise<void> {
  checkProt(prot);
  const r = userRange(addr, length, 'ENOMEM', true);
  if (!r) return;
  const start = r[0];
  let end = r[1];
  const mm = p.mm;
  await withWrite(mm, 'mprotect', async () => {
    // As do_mprotect_pkey: a hole at the start changes nothing; a hole further on stops the
    // change there (the VMAs before it keep their new protection) and the call fails with ENOMEM.
    const first = mm.vmas.find(start);
    if (!first) throw kerr('ENOMEM', 'range is not mapped at its start');
    let covered = start;
    for (const v of mm.vmas.overlapping(start, end)) {
      if (v.start > covered) break;
      covered = v.end;
    }
    const hole = covered < end;
    if (hole) end = covered;
    // mprotect_fixup splits only VMAs whose protection changes.
    for (const v of mm.vmas.overlapping(start, end)) {
      if (v.prot === prot) continue;
      const s = Math.max(start, v.start);
      const e = Math.min(end, v.end);
      await splitVma(k, mm, s);
      await splitVma(k, mm, e);
    }
    for (const v of mm.vmas.overlapping(start, end)) {
      if (v.prot === prot) continue;
      await changeProtection(k, mm, v, v.start, v.end, prot, 'mprotect');
      v.prot = prot;
    }
    mm.vmas.mergeAround(start, end);
    if (hole) throw kerr('ENOMEM', 'part of the range is not mapped (the part before the hole was changed)');
  });
}

// ---- madvise ------------------------------------------------------------------------------------

export type Advice = 'dontneed' | 'free' | 'pageout' | 'hugepage' | 'nohugepage' | 'collapse' | 'mergeable' | 'willneed' | 'dontfork' | 'dofork';
export const ADVICES: readonly Advice[] = ['dontneed', 'free', 'pageout', 'hugepage', 'nohugepage', 'collapse', 'mergeable', 'willneed', 'dontfork', 'dofork'];

/** Advice that changes a VMA flag (madvise_update_vma: split at the range's edges, set, merge back). */
type FlagAdvice = 'hugepage' | 'nohugepage' | 'mergeable' | 'dontfork' | 'dofork';
const FLAG_ADVICE: ReadonlySet<Advice> = new Set<Advice>(['hugepage', 'nohugepage', 'mergeable', 'dontfork', 'dofork']);

/** Does the advice change this VMA's flags? */
function adviceChanges(v: Vma, advice: FlagAdvice): boolean {
  if (advice === 'mergeable') return !v.mergeable;
  if (advice === 'dontfork') return !v.dontFork;
  if (advice === 'dofork') return v.dontFork;
  return v.huge !== advice;
}

function applyAdvice(v: Vma, advice: FlagAdvice): void {
  if (advice === 'mergeable') v.mergeable = true;
  else if (advice === 'dontfork' || advice === 'dofork') v.dontFork = advice === 'dontfork';
  else v.huge = advice as HugeAdvice;
}

export interface MadviseResult {
  /** Pages affected (zapped, freed, reclaimed, collapsed). */
  pages: number;
}

/** zap_page_range_single: CLEAR over [start, end) with partial THPs split inside the window. */
async function zapPageRangeSingle(k: Kernel, mm: MM, start: number, end: number, origin: Origin): Promise<number> {
  const range = await k.notify(mm, MmuNotifierEvent.CLEAR, start, end, origin);
  try {
    await splitHugeEdges(k, mm, start, end);
    return k.zapRange(mm, start, end);
  } finally {
    k.notifyEnd(mm, range);
  }
}

async function madviseFree(k: Kernel, mm: MM, start: number, end: number): Promise<number> {
  let n = 0;
  const range = await k.notify(mm, MmuNotifierEvent.CLEAR, start, end, 'madvise');
  try {
    await splitHugeEdges(k, mm, start, end);
    mm.pt.walk(start, end, (va, idx, level, e) => {
      if (e & PTE.SWAP) {
        k.zapLeaf(mm, va, idx, e);
        n++;
        return;
      }
      if (!(e & PTE.PRESENT) || level !== LEVEL.PTE) return;
      const pfn = ptePfn(e);
      if (pfn === ZERO_PFN || !k.mem.hasFlag(pfn, FF.ANON) || k.mem.mapcount(pfn) !== 1) return;
      if (k.mem.isCompound(pfn)) return;
      mm.pt.store(idx, e & ~(PTE.DIRTY | PTE.YOUNG));
      k.mem.clearFlags(pfn, FF.DIRTY | FF.REFERENCED);
      k.mem.setFlags(pfn, FF.LAZYFREE);
      n++;
    });
  } finally {
    k.notifyEnd(mm, range);
  }
  return n;
}

async function madvisePageout(k: Kernel, mm: MM, start: number, end: number): Promise<number> {
  await splitHugeEdges(k, mm, start, end);
  const pfns: number[] = [];
  mm.pt.walk(start, end, (_va, idx, level, e) => {
    if (!(e & PTE.PRESENT)) return;
    const pfn = ptePfn(e);
    if (pfn === ZERO_PFN) return;
    const fl = k.mem.flags(pfn);
    if (fl & FF.ANON && k.mem.mapcount(pfn) > 1) return; // shared anonymous pages stay
    // madvise_cold_or_pageout_pte_range clears the young bit without asking the notifiers.
    mm.pt.store(idx, e & ~PTE.YOUNG);
    if (level === LEVEL.PMD) for (let i = 0; i < 512; i++) pfns.push(pfn + i);
    else pfns.push(pfn);
  });
  const res = await reclaimPages(k, pfns, 'madvise');
  return res.reclaimed;
}

export async function madvise(k: Kernel, p: Process, addr: number, length: number, advice: Advice): Promise<MadviseResult> {
  if (!ADVICES.includes(advice)) throw kerr('EINVAL', `unknown advice ${String(advice)}`);
  const r = userRange(addr, length, 'ENOMEM', true);
  if (!r) return { pages: 0 };
  const [start, end] = r;
  const mm = p.mm;
  const writeLock = FLAG_ADVICE.has(advice) || advice === 'collapse';
  const run = async (): Promise<MadviseResult> => {
    const vmas = mm.vmas.overlapping(start, end);
    const hole = !mm.vmas.covers(start, end);
    if (vmas.length === 0) throw kerr('ENOMEM', 'range is not mapped');
    let pages = 0;
    if (advice === 'free' && vmas.some((v) => v.file !== null)) throw kerr('EINVAL', 'MADV_FREE needs anonymous memory');
    if (writeLock && advice !== 'collapse') {
      for (const v of mm.vmas.overlapping(start, end)) {
        if (!adviceChanges(v, advice as FlagAdvice)) continue;
        const s = Math.max(start, v.start);
        const e = Math.min(end, v.end);
        await splitVma(k, mm, s);
        await splitVma(k, mm, e);
      }
      for (const v of mm.vmas.overlapping(start, end)) applyAdvice(v, advice as FlagAdvice);
      mm.vmas.mergeAround(start, end);
    } else {
      for (const v of vmas) {
        const s = Math.max(start, v.start);
        const e = Math.min(end, v.end);
        if (advice === 'dontneed') pages += await zapPageRangeSingle(k, mm, s, e, 'madvise');
        else if (advice === 'free') pages += await madviseFree(k, mm, s, e);
        else if (advice === 'pageout') pages += await madvisePageout(k, mm, s, e);
        else if (advice === 'willneed') pages += 0;
        else if (advice === 'collapse') {
          // Only 2 MiB ranges with page-table entries can collapse (the others are 'empty'): walking
          // every PMD of a huge unpopulated VMA one by one held the CPU for tens of seconds. Under
          // the mmap write lock no range gains entries meanwhile.
          const first = Math.ceil(s / PMD_SIZE) * PMD_SIZE;
          const candidates: number[] = [];
          if (first + PMD_SIZE <= e && v.file !== null) candidates.push(first); // refused (EINVAL) at the first one
          else if (first + PMD_SIZE <= e) {
            mm.pt.walk(first, Math.floor(e / PMD_SIZE) * PMD_SIZE, (va) => {
              const h = Math.floor(va / PMD_SIZE) * PMD_SIZE;
              if (candidates[candidates.length - 1] !== h) candidates.push(h);
            });
          }
          for (const a of candidates) {
            const res = await collapseHugePage(k, mm, a, 'madvise', false);
            if (res === 'collapsed' || res === 'already-huge') pages += 512;
            else if (res === 'alloc-failed') throw kerr('ENOMEM', 'no huge page for MADV_COLLAPSE');
            else if (res === 'not-eligible' && v.file !== null) throw kerr('EINVAL', 'MADV_COLLAPSE needs anonymous memory');
          }
        }
      }
    }
    if (hole) throw kerr('ENOMEM', 'part of the range is not mapped (the mapped part was advised)');
    return { pages };
  };
  return writeLock ? withWrite(mm, 'madvise', run) : withRead(mm, 'madvise', run);
}

// ---- brk ----------------------------------------------------------------------------------------

export async function brk(k: Kernel, p: Process, addr: number): Promise<number> {
  const mm = p.mm;
  checkNumber('addr', addr);
  if (addr === 0 || addr < mm.brkStart || addr > TASK_SIZE) return mm.brk;
  return withWrite(mm, 'brk', async () => {
    const oldEnd = pageAlignUp(mm.brk);
    const newEnd = pageAlignUp(addr);
    if (newEnd === oldEnd) {
      mm.brk = addr;
      return addr;
    }
    if (newEnd < oldEnd) {
      await doMunmap(k, mm, newEnd, oldEnd, 'brk');
      mm.brk = addr;
      return addr;
    }
    if (!mm.vmas.isFree(oldEnd, newEnd)) return mm.brk;
    const heap = oldEnd > mm.brkStart ? mm.vmas.find(oldEnd - PAGE_SIZE) : null;
    if (heap && heap.end === oldEnd && heap.name === '[heap]') heap.end = newEnd;
    else {
      mm.vmas.insert(
        new Vma(oldEnd, newEnd, { prot: PROT.READ | PROT.WRITE, shared: false, file: null, pgoff: 0, huge: 'default', mergeable: false, name: '[heap]' }),
      );
    }
    mm.brk = addr;
    return addr;
  });
}

// ---- msync / clear_refs -------------------------------------------------------------------------

export async function msync(k: Kernel, p: Process, addr: number, length: number): Promise<{ written: number }> {
  const r = userRange(addr, length, 'ENOMEM', true);
  if (!r) return { written: 0 };
  const [start, end] = r;
  const mm = p.mm;
  return withRead(mm, 'msync', async () => {
    // As the kernel: the mapped parts are synced, an unmapped part makes the call fail with ENOMEM.
    const hole = !mm.vmas.covers(start, end);
    let written = 0;
    for (const v of mm.vmas.overlapping(start, end)) {
      if (!v.sharedFile || !v.file) continue;
      const s = Math.max(start, v.start);
      const e = Math.min(end, v.end);
      const res = await writebackFile(k, v.file, v.fileIndex(s), v.fileIndex(e - PAGE_SIZE), 'msync');
      written += res.written;
    }
    if (hole) throw kerr('ENOMEM', 'part of the range is not mapped (the mapped part was synced)');
    return { written };
  });
}

export type ClearRefsMode = 'soft-dirty' | 'referenced';

/**
 * clear_refs: "4" (soft-dirty) write-protects every PTE and clears soft-dirty under one SOFT_DIRTY
 * pair over [0, ULONG_MAX); "1" (referenced) clears young bits without any notifier.
 */
export async function clearRefs(k: Kernel, p: Process, mode: ClearRefsMode): Promise<void> {
  const mm = p.mm;
  if (mode !== 'soft-dirty' && mode !== 'referenced') throw kerr('EINVAL', `unknown clear_refs mode ${String(mode)}`);
  if (mode === 'referenced') {
    await withRead(mm, 'clear_refs', async () => {
      mm.pt.walk(0, TASK_SIZE, (_va, idx, _l, e) => {
        if (e & PTE.YOUNG) mm.pt.store(idx, e & ~PTE.YOUNG);
      });
    });
    return;
  }
  await withWrite(mm, 'clear_refs', async () => {
    for (const v of mm.vmas.items) v.softDirty = false;
    const range = await k.notify(mm, MmuNotifierEvent.SOFT_DIRTY, 0, ULONG_MAX, 'clear_refs');
    try {
      mm.pt.walk(0, TASK_SIZE, (_va, idx, _l, e) => {
        let n = e;
        if (e & PTE.PRESENT) n = e & ~(PTE.WRITE | PTE.SOFT_DIRTY);
        else if (e & (PTE.SWAP | PTE.PROTNONE | PTE.MIGRATION)) n = e & ~PTE.SOFT_DIRTY;
        if (n !== e) mm.pt.store(idx, n);
      });
    } finally {
      k.notifyEnd(mm, range);
    }
  });
}

// ---- pagemap ------------------------------------------------------------------------------------

export interface PagemapEntry {
  addr: number;
  present: boolean;
  pfn: number | null;
  write: boolean;
  dirty: boolean;
  young: boolean;
  softDirty: boolean;
  swapped: boolean;
  swapSlot: number | null;
  /** Owner (device id) of a device-private page, else null. */
  devicePrivate: number | null;
  exclusive: boolean;
  protnone: boolean;
  huge: boolean;
  zeroPage: boolean;
  migration: boolean;
  node: number | null;
  /** Frame flags worth showing (anon, file, ksm, ...). */
  kind: 'anon' | 'file' | 'shmem' | 'ksm' | 'zero' | 'device' | null;
}

export const MAX_PAGEMAP_PAGES = 1 << 20;

export function pagemap(k: Kernel, p: Process, addr: number, pages: number): PagemapEntry[] {
  checkNumber('addr', addr);
  checkNumber('pages', pages);
  if (!isPageAligned(addr)) throw kerr('EINVAL', 'address is not page aligned');
  if (pages > MAX_PAGEMAP_PAGES) throw new DevmirrorError('DM_ERR_TOO_LARGE', `at most ${MAX_PAGEMAP_PAGES} pages per read`);
  if (addr + pages * PAGE_SIZE > TASK_SIZE) throw kerr('EINVAL', 'range leaves the address space');
  const mm = p.mm;
  const out: PagemapEntry[] = [];
  for (let i = 0; i < pages; i++) {
    const va = addr + i * PAGE_SIZE;
    const e = mm.pt.lookup(va);
    const huge = (e & PTE.HUGE) !== 0;
    let pfn: number | null = e === 0 || e & PTE.SWAP ? null : ptePfn(e);
    const zero = pfn === ZERO_PFN && !(e & PTE.DEVICE_PRIVATE);
    if (huge && pfn !== null && !zero) pfn += (va % PMD_SIZE) / PAGE_SIZE;
    const vma = mm.vmas.find(va);
    const dev = e & PTE.DEVICE_PRIVATE ? k.mem.getMeta(pfn as number, FM.OWNER) : null;
    let kind: PagemapEntry['kind'] = null;
    if (zero) kind = 'zero';
    else if (dev !== null) kind = 'device';
    else if (pfn !== null) {
      const fl = k.mem.flags(pfn);
      kind = fl & FF.KSM ? 'ksm' : fl & FF.SHMEM ? 'shmem' : fl & FF.FILE ? 'file' : fl & FF.ANON ? 'anon' : null;
    }
    out.push({
      addr: va,
      present: (e & PTE.PRESENT) !== 0,
      pfn,
      write: (e & PTE.WRITE) !== 0,
      dirty: (e & PTE.DIRTY) !== 0,
      young: (e & PTE.YOUNG) !== 0,
      softDirty: (e & PTE.SOFT_DIRTY) !== 0 || (vma?.softDirty ?? false),
      swapped: (e & PTE.SWAP) !== 0,
      swapSlot: e & PTE.SWAP ? ptePfn(e) : null,
      devicePrivate: dev,
      exclusive: (e & PTE.DEVICE_EXCLUSIVE) !== 0,
      protnone: (e & PTE.PROTNONE) !== 0,
      huge,
      zeroPage: zero,
      migration: (e & PTE.MIGRATION) !== 0,
      node: pfn !== null && dev === null ? k.mem.nodeOfPfn(pfn) : null,
      kind,
    });
  }
  return out;
}

// ---- CPU loads and stores -----------------------------------------------------------------------

export const MAX_ACCESS_BYTES = 64 * 1024 * 1024;

/**
 * A CPU thread reads or writes user memory: each page is touched as the MMU would (young, dirty,
 * soft-dirty set in the entry), faulting where the entry does not allow the access.
 */
export async function cpuAccess(
  k: Kernel,
  p: Process,
  addr: number,
  length: number,
  write: Uint8Array | null,
  node = 0,
): Promise<Uint8Array> {
  checkNumber('addr', addr);
  checkNumber('length', length);
  if (length > MAX_ACCESS_BYTES) throw new DevmirrorError('DM_ERR_TOO_LARGE', `at most ${MAX_ACCESS_BYTES} bytes per access`);
  if (addr + length > TASK_SIZE) throw kerr('EFAULT', 'access leaves the address space');
  const mm = p.mm;
  const out = write ? write : new Uint8Array(length);
  if (length === 0) return out;
  return withRead(mm, 'cpu', async () => {
    // Every page is checked against the VMAs before anything is written, so a store that would
    // fault with SIGSEGV half way changes nothing.
    for (let va = Math.floor(addr / PAGE_SIZE) * PAGE_SIZE; va < addr + length; va += PAGE_SIZE) {
      accessCheck(mm, va, write !== null);
    }
    let done = 0;
    while (done < length) {
      const va = addr + done;
      const pageVa = Math.floor(va / PAGE_SIZE) * PAGE_SIZE;
      const off = va - pageVa;
      const n = Math.min(PAGE_SIZE - off, length - done);
      const at = done;
      await touch(k, mm, pageVa, write !== null, node, (pfn) => {
        const base = pfn * PAGE_SIZE + off;
        if (write) k.mem.data.set(write.subarray(at, at + n), base);
        else out.set(k.mem.data.subarray(base, base + n), at);
      });
      done += n;
    }
    return out;
  });
}

/**
 * Makes the entry at va usable for the access (faulting as needed), sets the accessed/dirty bits
 * and performs `access` on the frame, all in one synchronous step once the entry allows it: no
 * other kernel task can move, free or reuse the frame between the check and the access (what the
 * page-table lock and the TLB give a real CPU).
 */
export async function touch(
  k: Kernel,
  mm: MM,
  va: number,
  write: boolean,
  node: number,
  access: (pfn: number) => void,
): Promise<void> {
  for (;;) {
    const idx = mm.pt.leafIndex(va);
    const e = idx >= 0 ? mm.pt.load(idx) : 0;
    if (e & PTE.PRESENT && (!write || e & PTE.WRITE)) {
      const huge = (e & PTE.HUGE) !== 0;
      mm.pt.store(idx, e | PTE.YOUNG | (write ? PTE.DIRTY | PTE.SOFT_DIRTY : 0));
      const pfn = ptePfn(e);
      const sub = pfn === ZERO_PFN ? ZERO_PFN : huge ? pfn + (va % PMD_SIZE) / PAGE_SIZE : pfn;
      if (write) k.mem.clearFlags(sub, FF.LAZYFREE);
      access(sub);
      return;
    }
    await handleMmFault(k, mm, va, { write, node });
  }
}

/** pread from an in-memory file (page cache first, then the disk). */
export function fileRead(k: Kernel, file: MemFile, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(Math.max(0, Math.min(length, file.size - offset)));
  let done = 0;
  while (done < out.length) {
    const pos = offset + done;
    const index = Math.floor(pos / PAGE_SIZE);
    const off = pos % PAGE_SIZE;
    const n = Math.min(PAGE_SIZE - off, out.length - done);
    const pfn = file.cache.get(index);
    if (pfn !== undefined) out.set(k.mem.data.subarray(pfn * PAGE_SIZE + off, pfn * PAGE_SIZE + off + n), done);
    else {
      const page = new Uint8Array(PAGE_SIZE);
      file.readDisk(index, page);
      out.set(page.subarray(off, off + n), done);
    }
    done += n;
  }
  return out;
}

/** pwrite into an in-memory file through the page cache (dirtying it). */
export async function fileWrite(k: Kernel, file: MemFile, offset: number, data: Uint8Array): Promise<void> {
  if (offset + data.length > file.size) file.size = offset + data.length;
  let done = 0;
  while (done < data.length) {
    const pos = offset + done;
    const index = Math.floor(pos / PAGE_SIZE);
    const off = pos % PAGE_SIZE;
    const n = Math.min(PAGE_SIZE - off, data.length - done);
    const pfn = await k.getFilePage(file, index);
    k.mem.data.set(data.subarray(done, done + n), pfn * PAGE_SIZE + off);
    k.mem.setFlags(pfn, FF.DIRTY);
    done += n;
  }
}

