/**
 * Device memory: migrate_vma_* (to and from device-private memory) and make_device_exclusive.
 *
 * migrate_vma_setup sends MIGRATE with the device as owner over the whole range while it unmaps
 * the source pages (so the device can skip its own migration); filling holes sends a second MIGRATE
 * from the first hole to the end. A CPU fault on a device-private page migrates that one page back
 * (MIGRATE, owner = the device). Evicting a device's memory uses try_to_migrate: CLEAR, no owner.
 *
 * Callers hold the mmap lock for reading.
 */
import { kerr } from '../errors.js';
import { FF, FM, PAGE_SIZE, PMD_PAGES, PMD_SIZE, PTE } from './layout.js';
import type { Kernel } from './kernel.js';
import type { MM } from './mm.js';
import { ZERO_PFN } from './phys-mem.js';
import { fromMigration, isMigrationOf, mkPte, ptePfn, type Pte } from './pte.js';
import { MmuNotifierEvent } from '../notifier/range.js';
import { handleMmFault } from './fault.js';

export interface MigratedPage {
  va: number;
  /** Source frame (RAM or device), ZERO_PFN for the zero page, -1 for a hole. */
  src: number;
  /** Destination frame, -1 if the page did not move. */
  dst: number;
}

export interface MigrateResult {
  /** Global clock tick when the destination entries were installed. */
  tick: number;
  /** Pages collected for migration (migrate->cpages). */
  collected: number;
  /** Pages that actually moved. */
  moved: number;
  pages: MigratedPage[];
}

interface Collected {
  va: number;
  idx: number;
  old: Pte;
  src: number;
  /** Entry installed while migrating (a migration entry), or 0 for a hole. */
  mig: Pte;
}

interface HugeChunk {
  haddr: number;
  pmdIdx: number;
  /** The PMD entry when collected: a THP, the huge zero page, or none (a hole). */
  old: Pte;
  devHead: number;
}

/**
 * Is the aligned 2 MiB at haddr movable as one device THP? A PMD-mapped anonymous THP this mm
 * holds alone, the huge zero page, or nothing at all (a 2 MiB hole).
 */
function hugeCandidate(k: Kernel, mm: MM, haddr: number): { pmdIdx: number; old: Pte } | null {
  const pmdIdx = mm.pt.pmdIndex(haddr);
  if (pmdIdx < 0) return null;
  const e = mm.pt.load(pmdIdx);
  if (e === 0) return { pmdIdx, old: 0 };
  if (!(e & PTE.HUGE) || !(e & PTE.PRESENT)) return null;
  const head = ptePfn(e);
  if (head === ZERO_PFN) return { pmdIdx, old: e };
  if (!k.mem.folioIntact(head) || k.mem.hasFlag(head, FF.KSM) || !k.mem.hasFlag(head, FF.ANON)) return null;
  for (let i = 0; i < PMD_PAGES; i++) if (k.mem.mapcount(head + i) !== 1 || k.mem.refcount(head + i) !== 1) return null;
  return { pmdIdx, old: e };
}

/**
 * Splits what must move page by page: huge mappings that the range covers only partly or that
 * cannot move whole, and PTE-mapped THPs (migrate_vma_collect splits them: split_folio).
 */
async function splitForSmallPages(k: Kernel, mm: MM, start: number, end: number, whole: Set<number>): Promise<void> {
  for (let a = Math.floor(start / PMD_SIZE) * PMD_SIZE; a < end; a += PMD_SIZE) {
    if (whole.has(a)) continue;
    const idx = mm.pt.pmdIndex(a);
    if (idx < 0) continue;
    const e = mm.pt.load(idx);
    if (e & PTE.HUGE) {
      const head = ptePfn(e);
      if (head === ZERO_PFN || e & PTE.DEVICE_PRIVATE) await k.splitHugePmd(mm, a, 'thp_split');
      else if (k.folioLocks.tryLock(head, 'migrate_vma_split')) {
        try {
          await k.splitFolio(head);
        } finally {
          k.folioLocks.unlock(head);
        }
      }
    }
  }
  const heads = new Set<number>();
  mm.pt.walk(start, end, (_va, _idx, level, e) => {
    if (level === 0 && e & PTE.PRESENT && ptePfn(e) !== ZERO_PFN && k.mem.isCompound(ptePfn(e))) heads.add(k.mem.headOf(ptePfn(e)));
  });
  for (const head of heads) {
    if (!k.folioLocks.tryLock(head, 'migrate_vma_split')) continue;
    try {
      await k.splitFolio(head);
    } finally {
      k.folioLocks.unlock(head);
    }
  }
}

/**
 * migrate_vma to device memory of `owner` (MIGRATE_VMA_SELECT_SYSTEM). Anonymous private pages,
 * zero pages and holes move; shared, file, KSM and swapped pages stay. A whole, aligned 2 MiB that
 * is a THP, the huge zero page or a hole moves as one device THP (a huge device-private PMD) when
 * the device can allocate one; `hugeAllocFails` makes that allocation fail (test_hmm's FAIL_ALLOC)
 * so the migration falls back to 4 KiB pages. `range` must lie in one VMA (else EINVAL).
 */
export async function migrateToDevice(
  k: Kernel,
  mm: MM,
  start: number,
  end: number,
  owner: number,
  opts: { hugeAllocFails?: boolean } = {},
): Promise<MigrateResult> {
  const vma = mm.vmas.find(start);
  if (!vma || end > vma.end || start >= end) throw kerr('EINVAL', 'range is not inside one VMA');
  const anonPrivate = vma.file === null || !vma.shared;
  // Device THPs: allocate first, before anything changes, so a failure just means small pages.
  const chunks: HugeChunk[] = [];
  if (anonPrivate && vma.file === null && !opts.hugeAllocFails) {
    for (let a = Math.ceil(start / PMD_SIZE) * PMD_SIZE; a + PMD_SIZE <= end; a += PMD_SIZE) {
      await k.ensurePt(mm, a, 1);
      const c = hugeCandidate(k, mm, a);
      if (!c) continue;
      const devHead = k.mem.tryAllocDeviceHuge(owner);
      if (devHead < 0) break;
      chunks.push({ haddr: a, pmdIdx: c.pmdIdx, old: c.old, devHead });
    }
  }
  const whole = new Set(chunks.map((c) => c.haddr));
  await splitForSmallPages(k, mm, start, end, whole);
  const collected: Collected[] = [];
  const pages: MigratedPage[] = [];
  const hugeDone: HugeChunk[] = [];
  const releaseDevHuge = (c: HugeChunk): void => {
    for (let i = 0; i < PMD_PAGES; i++) k.mem.put(c.devHead + i);
  };
  // migrate_vma_collect: MIGRATE over the whole range, with this device as owner.
  const range = await k.notify(mm, MmuNotifierEvent.MIGRATE, start, end, 'device_migration', owner);
  try {
    for (const c of chunks) {
      // A THP moves now (its data cannot change: every mapping of it is this PMD, which the
      // device and the CPU were just told to drop); holes wait for migrate_vma_pages.
      if (c.old === 0) continue;
      if (mm.pt.load(c.pmdIdx) !== c.old) {
        releaseDevHuge(c);
        continue;
      }
      const head = ptePfn(c.old);
      for (let i = 0; i < PMD_PAGES; i++) {
        if (head === ZERO_PFN) k.mem.zeroPage(c.devHead + i);
        else k.mem.copyPage(c.devHead + i, head + i);
      }
      mm.pt.store(c.pmdIdx, 0);
      k.releaseLeaf(mm, c.haddr, c.old);
      vma.anonVma = true;
      k.mapLeaf(mm, c.haddr, c.pmdIdx, c.devHead, PTE.DEVICE_PRIVATE | PTE.HUGE | PTE.DIRTY | PTE.SOFT_DIRTY | (vma.writable ? PTE.WRITE : 0));
      hugeDone.push(c);
    }
    for (let va = start; va < end; va += PAGE_SIZE) {
      if (whole.has(Math.floor(va / PMD_SIZE) * PMD_SIZE)) continue;
      const page: MigratedPage = { va, src: -1, dst: -1 };
      pages.push(page);
      let idx = mm.pt.leafIndex(va);
      if (idx < 0 || mm.pt.lastLevel !== 0) idx = await k.ensurePt(mm, va, 0);
      if (idx < 0) continue;
      const e = mm.pt.load(idx);
      if (e === 0) {
        if (vma.file === null) collected.push({ va, idx, old: 0, src: -1, mig: 0 });
        continue;
      }
      if (!(e & PTE.PRESENT)) continue;
      const pfn = ptePfn(e);
      page.src = pfn;
      if (pfn === ZERO_PFN) {
        if (anonPrivate) collected.push({ va, idx, old: e, src: ZERO_PFN, mig: 0 });
        continue;
      }
      const fl = k.mem.flags(pfn);
      if (!(fl & FF.ANON) || fl & (FF.KSM | FF.COMPOUND) || k.mem.mapcount(pfn) !== 1) continue;
      if (!k.folioLocks.tryLock(pfn, 'migrate_vma')) continue;
      const mig = mkPte(pfn, PTE.MIGRATION | (e & (PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG)));
      mm.pt.store(idx, mig);
      collected.push({ va, idx, old: e, src: pfn, mig });
    }
  } finally {
    k.notifyEnd(mm, range);
  }
  // The driver allocates device pages and copies.
  const dsts = new Map<number, number>();
  for (const c of collected) {
    const dst = k.mem.tryAllocDevice(owner);
    if (dst < 0) continue;
    if (c.src > 0) k.mem.copyPage(dst, c.src);
    dsts.set(c.va, dst);
  }
  // migrate_vma_pages: holes get new entries; MIGRATE from the first hole to the end.
  const holeChunks = chunks.filter((c) => c.old === 0);
  const firstHole = Math.min(
    ...collected.filter((c) => c.mig === 0 && dsts.has(c.va)).map((c) => c.va),
    ...holeChunks.map((c) => c.haddr),
  );
  let holeRange = null;
  if (Number.isFinite(firstHole)) holeRange = await k.notify(mm, MmuNotifierEvent.MIGRATE, firstHole, end, 'device_migration', owner);
  let moved = 0;
  try {
    for (const c of holeChunks) {
      if (mm.pt.load(c.pmdIdx) !== 0) {
        releaseDevHuge(c);
        continue;
      }
      for (let i = 0; i < PMD_PAGES; i++) k.mem.zeroPage(c.devHead + i);
      vma.anonVma = true;
      k.mapLeaf(mm, c.haddr, c.pmdIdx, c.devHead, PTE.DEVICE_PRIVATE | PTE.HUGE | PTE.DIRTY | PTE.SOFT_DIRTY | (vma.writable ? PTE.WRITE : 0));
      hugeDone.push(c);
    }
    for (const c of collected) {
      const dst = dsts.get(c.va);
      const page = pages.find((p) => p.va === c.va) as MigratedPage;
      const cur = mm.pt.load(c.idx);
      const intact = c.mig !== 0 ? isMigrationOf(cur, c.src) : cur === c.old;
      if (dst === undefined || !intact) {
        // Not moved: restore the source (migrate_vma_finalize) and give back the device page.
        if (c.mig !== 0 && isMigrationOf(cur, c.src)) mm.pt.store(c.idx, fromMigration(cur, c.old, c.src));
        if (dst !== undefined) k.mem.put(dst);
        if (c.mig !== 0) k.folioLocks.unlock(c.src);
        continue;
      }
      const writable = vma.writable;
      const flags =
        PTE.DEVICE_PRIVATE |
        (writable ? PTE.WRITE : 0) |
        PTE.DIRTY |
        (cur & PTE.SOFT_DIRTY) |
        (c.old === 0 || c.src === ZERO_PFN ? PTE.SOFT_DIRTY : 0);
      if (c.mig !== 0) {
        mm.pt.store(c.idx, 0);
        k.releaseLeaf(mm, c.va, c.old);
        k.folioLocks.unlock(c.src);
      } else if (c.old !== 0) {
        mm.pt.store(c.idx, 0);
      }
      vma.anonVma = true;
      k.mapLeaf(mm, c.va, c.idx, dst, flags);
      page.dst = dst;
      moved++;
    }
  } finally {
    if (holeRange) k.notifyEnd(mm, holeRange);
  }
  // The device maps the new pages after migrate_vma_finalize, so they are granted from here: a
  // tick taken inside the holes' MIGRATE window would date the grants before that window closed,
  // and the sanitizer would rightly call the device's first access to them stale.
  const tick = k.mem.tick();
  for (const c of hugeDone) {
    for (let i = 0; i < PMD_PAGES; i++) pages.push({ va: c.haddr + i * PAGE_SIZE, src: c.old === 0 ? -1 : ptePfn(c.old), dst: c.devHead + i });
    moved += PMD_PAGES;
  }
  pages.sort((a, b) => a.va - b.va);
  return { tick, collected: collected.length + hugeDone.length * PMD_PAGES, moved, pages };
}

/**
 * migrate_vma from device memory of `owner` back to RAM (MIGRATE_VMA_SELECT_DEVICE_PRIVATE).
 * `event` is MIGRATE with the owner (driver-initiated, or the CPU fault path), or CLEAR without
 * owner (eviction of a device range through try_to_migrate).
 */
export async function migrateToSystem(
  k: Kernel,
  mm: MM,
  start: number,
  end: number,
  owner: number,
  how: 'migrate' | 'evict' = 'migrate',
): Promise<MigrateResult> {
  const pages: MigratedPage[] = [];
  // Device THPs come back page by page: split their PMD first.
  const huge: number[] = [];
  mm.pt.walk(start, end, (va, _idx, level, e) => {
    if (level === 1 && e & PTE.DEVICE_PRIVATE && k.mem.getMeta(ptePfn(e), FM.OWNER) === owner) huge.push(va);
  });
  for (const va of huge) await k.splitHugePmd(mm, va, 'thp_split');
  const found: Array<{ va: number; idx: number; e: Pte; dev: number }> = [];
  mm.pt.walk(start, end, (va, idx, level, e) => {
    if (level !== 0 || !(e & PTE.DEVICE_PRIVATE)) return;
    const dev = ptePfn(e);
    if (k.mem.getMeta(dev, FM.OWNER) === owner) found.push({ va, idx, e, dev });
  });
  // Allocate first so a failure leaves everything in place.
  const dsts: number[] = [];
  try {
    for (let i = 0; i < found.length; i++) dsts.push(await k.allocPage(FF.ANON, 0, false));
  } catch (e) {
    for (const d of dsts) k.mem.put(d);
    throw e;
  }
  const range =
    how === 'migrate'
      ? await k.notify(mm, MmuNotifierEvent.MIGRATE, start, end, 'device_migration', owner)
      : await k.notify(mm, MmuNotifierEvent.CLEAR, start, end, 'device_migration');
  const pm = k.pagemaps.get(owner);
  let moved = 0;
  let tick = 0;
  try {
    // migrate_vma_collect: migration entries (device faults on them wait for the page lock).
    const live: Array<{ va: number; idx: number; e: Pte; dev: number; dst: number; mig: Pte }> = [];
    found.forEach((f, i) => {
      if (mm.pt.load(f.idx) !== f.e || !k.folioLocks.tryLock(f.dev, 'migrate_to_ram')) {
        k.mem.put(dsts[i]);
        return;
      }
      const mig = mkPte(f.dev, PTE.MIGRATION | (f.e & (PTE.WRITE | PTE.SOFT_DIRTY)));
      mm.pt.store(f.idx, mig);
      live.push({ ...f, dst: dsts[i], mig });
    });
    try {
      // The owner drops its translations before the pages move (dmirror_devmem_fault_alloc_and_copy
      // erases its entry under its lock), so it never sees a half-moved page.
      if (live.length > 0 && pm?.migratingOut) await pm.migratingOut(mm, live.map((l) => l.va));
    } finally {
      tick = k.mem.tick();
      for (const f of live) {
        const cur = mm.pt.load(f.idx);
        if (!isMigrationOf(cur, f.dev)) {
          k.mem.put(f.dst);
        } else {
          k.mem.copyPage(f.dst, f.dev);
          mm.pt.store(f.idx, 0);
          k.releaseLeaf(mm, f.va, f.e);
          const flags = PTE.PRESENT | PTE.YOUNG | PTE.DIRTY | (cur & (PTE.WRITE | PTE.SOFT_DIRTY));
          k.mem.setFlags(f.dst, FF.DIRTY);
          k.mapLeaf(mm, f.va, f.idx, f.dst, flags);
          k.lruAdd(f.dst);
          pages.push({ va: f.va, src: f.dev, dst: f.dst });
          moved++;
        }
        k.folioLocks.unlock(f.dev);
      }
    }
  } finally {
    k.notifyEnd(mm, range);
  }
  for (const p of pages) pm?.pageMigratedOut?.(mm, p.va, p.src);
  return { tick, collected: found.length, moved, pages };
}

/** A CPU fault on a device-private page: ask the owner (dev_pagemap_ops.migrate_to_ram). */
export async function migrateDevicePageToRam(k: Kernel, mm: MM, va: number, e: Pte): Promise<void> {
  const owner = k.mem.getMeta(ptePfn(e), FM.OWNER);
  const pm = k.pagemaps.get(owner);
  const migrate = async (): Promise<void> => {
    await migrateToSystem(k, mm, va, va + PAGE_SIZE, owner, 'migrate');
  };
  if (pm?.migrateToRam) await pm.migrateToRam(mm, va, migrate);
  else await migrate();
}

/** Moves every device page of `owner` back to RAM (device removal, memory pressure). */
export async function evictDeviceMemory(k: Kernel, owner: number): Promise<number> {
  let moved = 0;
  for (const p of k.liveProcesses()) {
    const mm = p.mm;
    const spans: Array<[number, number]> = [];
    mm.pt.walk(0, 2 ** 47, (va, _idx, level, e) => {
      if (e & PTE.DEVICE_PRIVATE && k.mem.getMeta(ptePfn(e), FM.OWNER) === owner) spans.push([va, va + (level === 1 ? PMD_SIZE : PAGE_SIZE)]);
    });
    for (const [s, e] of spans) moved += (await migrateToSystem(k, mm, s, e, owner, 'evict')).moved;
  }
  return moved;
}

/**
 * make_device_exclusive: fault the page in for writing, then replace the PTE with a device-exclusive
 * entry (EXCLUSIVE, owner = the caller, one page). Returns the frame, or throws EBUSY.
 */
export async function makeDeviceExclusive(k: Kernel, mm: MM, va: number, owner: number): Promise<{ pfn: number; tick: number }> {
  for (let tries = 0; tries < 8; tries++) {
    await handleMmFault(k, mm, va, { write: true, remote: true });
    const vma = mm.vmas.find(va);
    if (!vma || vma.file !== null) throw kerr('EBUSY', 'device-exclusive access needs anonymous memory');
    let idx = mm.pt.leafIndex(va);
    if (idx >= 0 && mm.pt.lastLevel !== 0) {
      await k.splitHugePmd(mm, va, 'thp_split');
      idx = mm.pt.leafIndex(va);
    }
    if (idx < 0 || mm.pt.lastLevel !== 0) continue;
    const e = mm.pt.load(idx);
    if (!(e & PTE.PRESENT) || !(e & PTE.WRITE) || ptePfn(e) === ZERO_PFN) continue;
    const pfn = ptePfn(e);
    if (k.mem.isCompound(pfn) && !(await k.splitFolio(k.mem.headOf(pfn)))) continue;
    if (!k.folioLocks.tryLock(pfn, 'make_device_exclusive')) continue;
    try {
      const range = await k.notify(mm, MmuNotifierEvent.EXCLUSIVE, va, va + PAGE_SIZE, 'device_exclusive', owner);
      try {
        if (mm.pt.load(idx) !== e) continue;
        mm.pt.store(idx, mkPte(pfn, PTE.DEVICE_EXCLUSIVE | (e & (PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG))));
        return { pfn, tick: k.mem.tick() };
      } finally {
        k.notifyEnd(mm, range);
      }
    } finally {
      k.folioLocks.unlock(pfn);
    }
  }
  throw kerr('EBUSY', `could not make 0x${va.toString(16)} device-exclusive`);
}
