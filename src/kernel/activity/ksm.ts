/**
 * KSM: merges identical anonymous pages of MADV_MERGEABLE areas into one write-protected page.
 * write_protect_page and replace_page each send CLEAR over the one page they change. A write to a
 * merged page breaks COW (CLEAR from the fault).
 */
import { FF, PAGE_SIZE, PTE } from '../layout.js';
import type { Kernel } from '../kernel.js';
import type { MM } from '../mm.js';
import { ZERO_PFN } from '../phys-mem.js';
import { ptePfn } from '../pte.js';
import { MmuNotifierEvent } from '../../notifier/range.js';

export interface KsmResult {
  scanned: number;
  merged: number;
  /** Pages freed by merging. */
  saved: number;
}

interface Candidate {
  mm: MM;
  va: number;
  pfn: number;
}

export function hashPage(k: Kernel, pfn: number): number {
  const w = k.mem.dataWords;
  const base = pfn * (PAGE_SIZE / 4);
  let h = 0x811c9dc5;
  for (let i = 0; i < PAGE_SIZE / 4; i++) h = Math.imul(h ^ w[base + i], 16777619);
  return h >>> 0;
}

/** write_protect_page: make one mapping read-only and clean (CLEAR, one page). */
async function writeProtect(k: Kernel, c: Candidate): Promise<boolean> {
  const range = await k.notify(c.mm, MmuNotifierEvent.CLEAR, c.va, c.va + PAGE_SIZE, 'ksm');
  try {
    const idx = c.mm.pt.leafIndex(c.va);
    if (idx < 0 || c.mm.pt.lastLevel !== 0) return false;
    const e = c.mm.pt.load(idx);
    if (!(e & PTE.PRESENT) || ptePfn(e) !== c.pfn) return false;
    if (e & PTE.DIRTY) k.mem.setFlags(c.pfn, FF.DIRTY);
    c.mm.pt.store(idx, e & ~(PTE.WRITE | PTE.DIRTY));
    return true;
  } finally {
    k.notifyEnd(c.mm, range);
  }
}

/** replace_page: point the mapping at the KSM page (CLEAR, one page). */
async function replacePage(k: Kernel, c: Candidate, ksmPfn: number): Promise<boolean> {
  const range = await k.notify(c.mm, MmuNotifierEvent.CLEAR, c.va, c.va + PAGE_SIZE, 'ksm');
  try {
    const idx = c.mm.pt.leafIndex(c.va);
    if (idx < 0 || c.mm.pt.lastLevel !== 0) return false;
    const e = c.mm.pt.load(idx);
    if (ptePfn(e) !== c.pfn || e & PTE.WRITE || !(e & PTE.PRESENT)) return false;
    if (!k.mem.pagesEqual(c.pfn, ksmPfn)) return false;
    c.mm.pt.store(idx, 0);
    k.releaseLeaf(c.mm, c.va, e);
    k.mem.get(ksmPfn);
    k.mapLeaf(c.mm, c.va, idx, ksmPfn, PTE.PRESENT | PTE.YOUNG | (e & PTE.SOFT_DIRTY));
    return true;
  } finally {
    k.notifyEnd(c.mm, range);
  }
}

/**
 * One full ksmd scan over every mergeable area, or (`only`) over the mergeable part of one range:
 * POST /v1/kernel/trigger merges a chosen range without touching the rest of the machine.
 */
export async function ksmScan(k: Kernel, only?: { mm: MM; start: number; end: number }): Promise<KsmResult> {
  const res: KsmResult = { scanned: 0, merged: 0, saved: 0 };
  const groups = new Map<number, Candidate[]>();
  const stable = new Map<number, number>();
  for (const p of k.liveProcesses()) {
    const mm = p.mm;
    if (only && mm !== only.mm) continue;
    for (const v of mm.vmas.items) {
      if (!v.mergeable || v.file !== null || v.shared) continue;
      const from = only ? Math.max(v.start, only.start) : v.start;
      const to = only ? Math.min(v.end, only.end) : v.end;
      if (from >= to) continue;
      mm.pt.walk(from, to, (va, _idx, level, e) => {
        if (level !== 0 || !(e & PTE.PRESENT)) return;
        const pfn = ptePfn(e);
        if (pfn === ZERO_PFN || k.mem.isCompound(pfn)) return;
        res.scanned++;
        const fl = k.mem.flags(pfn);
        const h = hashPage(k, pfn);
        if (fl & FF.KSM) {
          stable.set(h, pfn);
          return;
        }
        if (!(fl & FF.ANON) || k.mem.mapcount(pfn) !== 1) return;
        const g = groups.get(h);
        if (g) g.push({ mm, va, pfn });
        else groups.set(h, [{ mm, va, pfn }]);
      });
    }
  }
  // Hold a reference on every page we may use across the awaits below (get_mergeable_page), so
  // none is freed and reused under us.
  const held: number[] = [];
  const hold = (pfn: number): void => {
    k.mem.get(pfn);
    held.push(pfn);
  };
  for (const cands of groups.values()) for (const c of cands) hold(c.pfn);
  for (const pfn of stable.values()) hold(pfn);
  try {
    await mergeGroups(k, groups, stable, res);
  } finally {
    for (const pfn of held) k.putPage(pfn);
  }
  return res;
}

async function mergeGroups(k: Kernel, groups: Map<number, Candidate[]>, stable: Map<number, number>, res: KsmResult): Promise<void> {
  for (const [h, cands] of groups) {
    let ksm = stable.get(h) ?? -1;
    if (ksm >= 0 && !k.mem.pagesEqual(ksm, cands[0].pfn)) ksm = -1;
    let rest = cands;
    if (ksm < 0) {
      if (cands.length < 2) continue;
      const first = cands[0];
      if (!k.folioLocks.tryLock(first.pfn, 'ksm')) continue;
      try {
        if (!(await writeProtect(k, first))) continue;
        k.mem.setFlags(first.pfn, FF.KSM);
        ksm = first.pfn;
      } finally {
        k.folioLocks.unlock(first.pfn);
      }
      rest = cands.slice(1);
    }
    for (const c of rest) {
      if (!k.mem.hasFlag(ksm, FF.KSM) || !k.folioLocks.tryLock(c.pfn, 'ksm')) continue;
      try {
        if (!(await writeProtect(k, c))) continue;
        if (await replacePage(k, c, ksm)) {
          res.merged++;
          res.saved++;
          k.stats.ksmMerged++;
        }
      } finally {
        k.folioLocks.unlock(c.pfn);
      }
    }
  }
}

