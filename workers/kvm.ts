/**
 * kvm: KVM's secondary MMU (virt/kvm/kvm_main.c + a TDP MMU), one whole-mm subscription per VM.
 *
 * Mirror: memslots (gfn -> hva, linear) and shadow page-table entries (SPTEs) at 4 KiB or 2 MiB.
 *
 * invalidate_range_start ignores the event entirely: count the invalidation; only if the hva range
 * hits a memslot: in_progress++ (the first one resets the tracked range), widen the single tracked
 * gfn range to cover it (it never shrinks until every invalidation ends), zap the SPTEs, and flush
 * remote TLBs if anything was zapped. Non-blockable ranges never fail (it just does not yield).
 * invalidate_range_end: mmu_invalidate_seq++, then in_progress--.
 * A vCPU fault snapshots the seq, pre-checks the range locklessly, resolves the pfn (GUP), takes
 * mmu_lock and retries (without sleeping: the vCPU re-enters) if an invalidation covers the gfn or
 * the seq moved. Aging: clear_flush_young / clear_young / test_young on the SPTE accessed bits;
 * release zaps everything.
 *
 * Counters: pf_taken, pf_fixed, remote_tlb_flush, mmu_shadow_zapped; gauges mmu_invalidate_seq and
 * mmu_invalidate_in_progress.
 */
import { PAGE_SIZE, PMD_PAGES, PMD_SIZE } from '../src/kernel/layout.js';
import { Mutex } from '../src/lib/locks.js';
import type { MirrorSummary } from '../src/devices/protocol.js';
import { Device } from './runtime/device.js';
import type { DevRange, DevSub, DeviceHost, MmHandler } from './runtime/host.js';

export interface Memslot {
  id: number;
  baseGfn: number;
  npages: number;
  /** userspace_addr */
  hva: number;
}

interface Spte {
  pfn: number;
  write: boolean;
  young: boolean;
  /** Part of a 2 MiB SPTE (head gfn). */
  huge: number;
}

export class Kvm extends Device implements MmHandler {
  memslots: Memslot[] = [];
  readonly sptes = new Map<number, Spte>();
  readonly mmuLock: Mutex;
  sub!: DevSub;
  mmuInvalidateSeq = 0;
  inProgress = 0;
  rangeStart = Infinity;
  rangeEnd = -Infinity;
  mnActiveInvalidateCount = 0;
  private readonly counted = new Set<number>();

  constructor(host: DeviceHost) {
    super(host);
    this.mmuLock = new Mutex('mmu_lock');
    for (const c of ['pf_taken', 'pf_fixed', 'remote_tlb_flush', 'mmu_shadow_zapped', 'pages_4k', 'pages_2m']) host.counters[c] = 0;
    host.onCommand('set-memslot', (a) => this.setMemslot(a as unknown as Memslot));
    host.onCommand('memslots', () => this.memslots);
    host.onCommand('vcpu-access', async (a) => this.dma.access(Number(a.hva), Boolean(a.write)));
  }

  async attach(): Promise<void> {
    for (const m of (this.host.options.memslots as Memslot[] | undefined) ?? []) this.setMemslot(m);
    this.sub = await this.host.registerMm(this, 'kvm');
  }

  private gauges(): void {
    this.host.counters.mmu_invalidate_seq = this.mmuInvalidateSeq;
    this.host.counters.mmu_invalidate_in_progress = this.inProgress;
  }

  /** KVM_SET_USER_MEMORY_REGION: replaces a slot (its SPTEs are zapped). */
  setMemslot(m: Memslot): Memslot[] {
    const old = this.memslots.find((s) => s.id === m.id);
    if (old) this.zapGfns(old.baseGfn, old.baseGfn + old.npages);
    this.memslots = this.memslots.filter((s) => s.id !== m.id);
    if (m.npages > 0) this.memslots.push({ id: m.id, baseGfn: m.baseGfn, npages: m.npages, hva: m.hva });
    return this.memslots;
  }

  private slotForHva(hva: number): Memslot | undefined {
    return this.memslots.find((s) => hva >= s.hva && hva < s.hva + s.npages * PAGE_SIZE);
  }

  private gfnOf(hva: number): number {
    const s = this.slotForHva(hva);
    return s ? s.baseGfn + Math.floor((hva - s.hva) / PAGE_SIZE) : -1;
  }

  /** Gfn ranges of every memslot overlapping the hva range. */
  private gfnRanges(start: number, end: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (const s of this.memslots) {
      const a = Math.max(start, s.hva);
      const b = Math.min(end, s.hva + s.npages * PAGE_SIZE);
      if (b > a) out.push([s.baseGfn + Math.floor((a - s.hva) / PAGE_SIZE), s.baseGfn + Math.ceil((b - s.hva) / PAGE_SIZE)]);
    }
    return out;
  }

  private zapGfns(g0: number, g1: number, downgrade = false): number {
    let n = 0;
    const each = (gfn: number, sp: Spte): void => {
      if (downgrade) {
        sp.write = false;
        return;
      }
      this.sptes.delete(gfn);
      n++;
    };
    if (g1 - g0 > this.sptes.size) {
      for (const [gfn, sp] of [...this.sptes]) if (gfn >= g0 && gfn < g1) each(gfn, sp);
    } else {
      for (let g = g0; g < g1; g++) {
        const sp = this.sptes.get(g);
        if (sp) each(g, sp);
      }
    }
    return n;
  }

  // ---- the notifier (whole-mm) ---------------------------------------------------------------

  start(r: DevRange): boolean | Promise<boolean> {
    this.mnActiveInvalidateCount++;
    if (this.ignores(r)) return true;
    const ranges = this.gfnRanges(r.start, Math.min(r.end, 2 ** 53));
    if (ranges.length === 0) return true; // only take mmu_lock on a memslot hit
    const action = this.policy === 'aware' ? this.awareAction(r) : 'zap';
    if (action === 'skip') return true;
    // kvm_mmu_invalidate_begin + range_add, under mmu_lock (held synchronously here).
    if (this.inProgress === 0) {
      this.rangeStart = Infinity;
      this.rangeEnd = -Infinity;
    }
    this.inProgress++;
    this.counted.add(r.id);
    let zapped = 0;
    for (const [g0, g1] of ranges) {
      this.rangeStart = Math.min(this.rangeStart, g0);
      this.rangeEnd = Math.max(this.rangeEnd, g1);
      zapped += this.zapGfns(g0, g1, action === 'downgrade');
    }
    if (zapped > 0) {
      this.inc('remote_tlb_flush');
      this.inc('mmu_shadow_zapped', zapped);
    }
    this.gauges();
    // The remote TLB flush waits for every vCPU to leave guest mode: in-flight accesses drain.
    const q = this.quiesce(r.start, Math.min(r.end, 2 ** 53));
    return q ? q.then(() => true) : true;
  }

  end(r: DevRange): void {
    // kvm_mmu_invalidate_end: seq first, then in_progress (the fault side reads them in reverse).
    this.mmuInvalidateSeq++;
    if (this.counted.delete(r.id)) this.inProgress--;
    this.mnActiveInvalidateCount--;
    this.gauges();
  }

  release(): void {
    // kvm_flush_shadow_all
    const n = this.sptes.size;
    for (const gfn of [...this.sptes.keys()]) this.zapGfns(gfn, gfn + 1);
    if (n > 0) {
      this.inc('remote_tlb_flush');
      this.inc('mmu_shadow_zapped', n);
    }
  }

  private age(start: number, end: number, clear: boolean, flush: boolean): boolean {
    let young = false;
    for (const [g0, g1] of this.gfnRanges(start, end)) {
      for (let g = g0; g < g1; g++) {
        const sp = this.sptes.get(g);
        if (sp?.young) {
          young = true;
          if (clear) sp.young = false;
        }
      }
    }
    if (young && flush) this.inc('remote_tlb_flush');
    return young;
  }

  clearFlushYoung(start: number, end: number): boolean {
    return this.age(start, end, true, true);
  }
  clearYoung(start: number, end: number): boolean {
    return this.age(start, end, true, false);
  }
  testYoung(addr: number): boolean {
    return this.age(addr, addr + PAGE_SIZE, false, false);
  }

  // ---- vCPU faults ---------------------------------------------------------------------------

  private retryGfn(seq: number, gfn: number): boolean {
    if (this.inProgress > 0 && gfn >= this.rangeStart && gfn < this.rangeEnd) return true;
    return this.mmuInvalidateSeq !== seq;
  }

  override peek(hva: number): number {
    const gfn = this.gfnOf(hva);
    return gfn < 0 ? -1 : (this.sptes.get(gfn)?.pfn ?? -1);
  }

  lookup(hva: number, write: boolean): number {
    const gfn = this.gfnOf(hva);
    if (gfn < 0) return -1;
    const sp = this.sptes.get(gfn);
    if (!sp || (write && !sp.write)) return -1;
    sp.young = true; // the hardware accessed bit
    return sp.pfn;
  }

  /** kvm_tdp_page_fault: retries without sleeping until the SPTE can be installed. */
  async fault(hva: number, write: boolean): Promise<boolean> {
    const gfn = this.gfnOf(hva);
    if (gfn < 0) return false;
    this.inc('pf_taken');
    for (let tries = 0; tries < 10_000; tries++) {
      const seq = this.mmuInvalidateSeq;
      // mmu_invalidate_retry_gfn_unsafe: the lockless pre-check.
      if (!this.skipSeqRetry && this.inProgress > 0 && gfn >= this.rangeStart && gfn < this.rangeEnd) {
        await new Promise((r) => setImmediate(r)); // RET_PF_RETRY: the vCPU re-enters
        continue;
      }
      const g = await this.host.gup(hva, write);
      if (g.ret < 0) return false;
      await this.mmuLock.lock('fault');
      try {
        if (!this.skipSeqRetry && this.retryGfn(seq, gfn)) continue;
        const slot = this.slotForHva(hva) as Memslot;
        const head = Math.floor(gfn / PMD_PAGES) * PMD_PAGES;
        const headHva = slot.hva + (head - slot.baseGfn) * PAGE_SIZE;
        const canHuge = g.huge && headHva % PMD_SIZE === 0 && head >= slot.baseGfn && head + PMD_PAGES <= slot.baseGfn + slot.npages;
        if (canHuge && g.hugePfns) {
          for (let i = 0; i < PMD_PAGES; i++) this.sptes.set(head + i, { pfn: g.hugePfns[i], write: g.write, young: true, huge: head });
          this.inc('pages_2m');
        } else {
          this.sptes.set(gfn, { pfn: g.pfn, write: g.write, young: true, huge: -1 });
          this.inc('pages_4k');
        }
        this.inc('pf_fixed');
        return true;
      } finally {
        this.mmuLock.unlock();
      }
    }
    return false;
  }

  dropPages(vas: number[]): void {
    for (const hva of vas) {
      const gfn = this.gfnOf(hva);
      if (gfn >= 0) this.sptes.delete(gfn);
    }
  }

  areas(): Array<[number, number]> {
    const c = this.dma.config;
    if (c.start !== undefined && c.end !== undefined) return [[c.start, c.end]];
    return this.memslots.map((s) => [s.hva, s.hva + s.npages * PAGE_SIZE]);
  }

  summary(): MirrorSummary {
    let writable = 0;
    for (const sp of this.sptes.values()) if (sp.write) writable++;
    return { pages: this.sptes.size, writable, devicePages: 0, objects: this.memslots.length };
  }
}
