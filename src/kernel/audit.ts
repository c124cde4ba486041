/**
 * Frame and swap accounting audit: recomputes, from the page tables and the page cache alone, what
 * every frame's refcount and mapcount and every swap slot's refcount must be, and compares with
 * the books. Run it when the kernel is quiescent (no operation in flight): tests, the soak, and the
 * control plane's self-check. Any mismatch is a leaked or double-freed frame.
 */
import { FF, PMD_PAGES, PTE, TASK_SIZE } from './layout.js';
import type { Kernel } from './kernel.js';
import { ZERO_PFN } from './phys-mem.js';
import { ptePfn } from './pte.js';

export interface AuditReport {
  ok: boolean;
  problems: string[];
  framesInUse: number;
  framesFree: number;
  pageTablePages: number;
  pageCachePages: number;
  swapSlotsInUse: number;
  deviceFramesInUse: number;
  quarantined: number;
}

export function audit(k: Kernel, maxProblems = 20): AuditReport {
  const mem = k.mem;
  const problems: string[] = [];
  const report = (m: string): void => {
    if (problems.length < maxProblems) problems.push(m);
  };
  const refs = new Int32Array(mem.totalFrames);
  const maps = new Int32Array(mem.totalFrames);
  const swapRefs = new Map<number, number>();
  let pageTablePages = 0;
  let pageCachePages = 0;
  const rmapExpected = new Map<string, boolean>();

  for (const p of k.liveProcesses()) {
    const mm = p.mm;
    if (mm.dead) continue;
    const corrupt = (table: number, index: number, e: number): void =>
      report(`pid ${p.pid}: table page ${table} entry ${index} holds 0x${(e >>> 0).toString(16)}, a table outside memory (a stray write into a table page)`);
    for (const t of mm.pt.tablePages(corrupt)) {
      refs[t]++;
      pageTablePages++;
      if (!mem.hasFlag(t, FF.PGTABLE)) report(`table page ${t} of pid ${p.pid} lacks PGTABLE`);
    }
    mm.pt.walk(0, TASK_SIZE, (va, _idx, level, e) => {
      if (e & PTE.SWAP) {
        const s = ptePfn(e);
        swapRefs.set(s, (swapRefs.get(s) ?? 0) + 1);
        return;
      }
      const pfn = ptePfn(e);
      if (pfn === ZERO_PFN && !(e & PTE.DEVICE_PRIVATE)) return;
      const vma = mm.vmas.find(va);
      if (!vma) report(`pid ${p.pid}: entry at 0x${va.toString(16)} outside any VMA`);
      else if (vma.file && level === 0 && e & (PTE.PRESENT | PTE.PROTNONE) && mem.hasFlag(pfn, FF.FILE)) {
        // A page-cache page must be the cache page of the file offset this address maps.
        const want = vma.file.cache.get(vma.fileIndex(va));
        if (want !== pfn) report(`pid ${p.pid}: 0x${va.toString(16)} maps frame ${pfn}, file ${vma.file.id} index ${vma.fileIndex(va)} is ${want}`);
      }
      if (level === 1) {
        for (let i = 0; i < PMD_PAGES; i++) {
          refs[pfn + i]++;
          maps[pfn + i]++;
        }
        rmapExpected.set(`${pfn}:${p.pid}:${va}:h`, true);
      } else {
        refs[pfn]++;
        maps[pfn]++;
        rmapExpected.set(`${pfn}:${p.pid}:${va}:p`, true);
      }
    });
  }
  for (const f of k.files.list()) {
    for (const pfn of f.cache.values()) {
      refs[pfn]++;
      pageCachePages++;
    }
    for (const slot of f.swapped.values()) swapRefs.set(slot, (swapRefs.get(slot) ?? 0) + 1);
  }
  // rmap must describe exactly the mappings found above.
  let rmapCount = 0;
  for (const [pfn, list] of k.rmap.entries()) {
    for (const m of list) {
      rmapCount++;
      const key = `${pfn}:${m.mm.pid}:${m.va}:${m.huge ? 'h' : 'p'}`;
      if (!rmapExpected.has(key)) report(`stale rmap entry ${key}`);
    }
  }
  if (rmapCount !== rmapExpected.size) report(`rmap has ${rmapCount} entries, page tables ${rmapExpected.size}`);

  let inUse = 0;
  let deviceInUse = 0;
  for (let pfn = 0; pfn < mem.totalFrames; pfn++) {
    const fl = mem.flags(pfn);
    if (fl & FF.RESERVED) continue;
    const rc = mem.refcount(pfn);
    if (fl & FF.FREE) {
      if (refs[pfn] !== 0) report(`free frame ${pfn} still referenced ${refs[pfn]} times`);
      continue;
    }
    if (fl & FF.QUARANTINED && rc === 0) continue;
    if (pfn >= mem.ramFrames) deviceInUse++;
    else inUse++;
    if (rc !== refs[pfn]) report(`frame ${pfn} refcount ${rc}, expected ${refs[pfn]} (flags 0x${fl.toString(16)})`);
    if (mem.mapcount(pfn) !== maps[pfn]) report(`frame ${pfn} mapcount ${mem.mapcount(pfn)}, expected ${maps[pfn]}`);
    if (rc === 0) report(`frame ${pfn} leaked: in use with no reference`);
  }
  let swapInUse = 0;
  for (let s = 0; s < k.swap.slots; s++) {
    const want = swapRefs.get(s) ?? 0;
    const have = k.swap.refcount(s);
    if (have !== want) report(`swap slot ${s} refcount ${have}, expected ${want}`);
    if (have > 0) swapInUse++;
  }
  try {
    mem.auditFreeLists();
  } catch (e) {
    report((e as Error).message);
  }
  return {
    ok: problems.length === 0,
    problems,
    framesInUse: inUse,
    framesFree: mem.freeFrames(),
    pageTablePages,
    pageCachePages,
    swapSlotsInUse: swapInUse,
    deviceFramesInUse: deviceInUse,
    quarantined: mem.quarantinedFrames(),
  };
}
