/**
 * gpu: a GPU with shared virtual memory after amdgpu's KFD SVM (amdkfd/kfd_svm.c).
 *
 * Mirror: SVM ranges (granularity-aligned windows, 2 MiB by default, clipped to the VMA), each with
 * its own interval subscription and a per-page frame array (dma_addr). A retry fault creates the
 * range if needed and validates it: readBegin, hmm_range_fault over the whole range (for writing
 * when the VMA is writable), the range lock, readRetry, program the GPU PTEs.
 *
 * invalidate (svm_range_cpu_invalidate_pagetables), faithful:
 *  - RELEASE: ignored; the blockable flag is never checked (the range lock is taken anyway);
 *  - UNMAP: unmap the overlap from the GPU; the range is split or removed by deferred work after
 *    the window closes (children get their own subscriptions);
 *  - anything else evicts: XNACK on unmaps the overlap; XNACK off counts the range invalid and, on
 *    the first eviction, quiesces *all* queues (the DMA engine stops), then restores every invalid
 *    range after AMDGPU_SVM_RANGE_RESTORE_DELAY_MS (1 ms) and resumes;
 *  - no owner filter: its own migrations land here too (as CLEAR).
 * aware: drops the range on UNMAP, downgrades to read-only on PROTECTION_VMA/PAGE and SOFT_DIRTY, skips its
 * own MIGRATE/EXCLUSIVE. blind: every event is a CLEAR.
 *
 * Counters as KFD's sysfs: faults, page_in (to VRAM), page_out (from VRAM), evicted_ms.
 */
import { PAGE_SIZE } from '../src/kernel/layout.js';
import { ERRNO, HMM_PFN } from '../src/kernel/hmm.js';
import { MmuNotifierEvent } from '../src/notifier/range.js';
import { Mutex } from '../src/lib/locks.js';
import type { MirrorSummary } from '../src/devices/protocol.js';
import { Device, type Action } from './runtime/device.js';
import type { DevRange, DevSub, DeviceHost, IntervalHandler } from './runtime/host.js';

const RESTORE_DELAY_MS = 1;

class SvmRange {
  readonly pfns: Int32Array;
  readonly write: Uint8Array;
  readonly lock: Mutex;
  sub!: DevSub;
  mapped = 0;
  invalid = 0;
  /** aware: re-read the CPU page table when the window closes (PROTECTION_PAGE). */
  reread = false;
  /** Removed (UNMAP) or replaced by children: faults in flight must start over. */
  dead = false;
  constructor(
    readonly start: number,
    readonly end: number,
  ) {
    const n = (end - start) / PAGE_SIZE;
    this.pfns = new Int32Array(n).fill(-1);
    this.write = new Uint8Array(n);
    this.lock = new Mutex(`svm[${start.toString(16)}]`);
  }
  idx(va: number): number {
    return Math.floor((va - this.start) / PAGE_SIZE);
  }
  /** Unmaps [s, e) from the GPU; returns pages unmapped. */
  unmap(s: number, e: number, _host: DeviceHost): number {
    let n = 0;
    const a = Math.max(s, this.start);
    const b = Math.min(e, this.end);
    for (let va = a; va < b; va += PAGE_SIZE) {
      const i = this.idx(va);
      if (this.pfns[i] >= 0) {
        this.pfns[i] = -1;
        this.write[i] = 0;
        n++;
      }
    }
    this.mapped -= n;
    return n;
  }
  downgrade(s: number, e: number): number {
    let n = 0;
    const a = Math.max(s, this.start);
    const b = Math.min(e, this.end);
    for (let va = a; va < b; va += PAGE_SIZE) {
      const i = this.idx(va);
      if (this.write[i]) n++;
      this.write[i] = 0;
    }
    return n;
  }
}

export class Gpu extends Device implements IntervalHandler {
  ranges: SvmRange[] = [];
  readonly granularity: number;
  xnack: boolean;
  private readonly bySub = new Map<number, SvmRange>();
  private stoppedSince = 0;
  private restoreTimer: NodeJS.Timeout | null = null;
  /** The process's mm was released: every queue is gone (kfd_process_notifier_release). */
  private released = false;
  private resumeWaiters: Array<() => void> = [];
  private readonly deferred: Array<{ range: SvmRange; start: number; end: number }> = [];
  private deferredRunning = false;

  constructor(host: DeviceHost) {
    super(host);
    this.granularity = Number(host.options.granularityPages ?? 512) * PAGE_SIZE;
    this.xnack = host.options.xnack !== false;
    for (const c of ['faults', 'page_in', 'page_out', 'evicted_ms']) host.counters[c] = 0;
    host.onCommand('prefetch', (a) => this.prefetch(Number(a.addr), Number(a.length), String(a.location ?? 'vram')));
    host.onCommand('xnack', (a) => {
      this.xnack = Boolean(a.on);
      return this.xnack;
    });
  }

  async attach(): Promise<void> {
    // Ranges are created by faults (or prefetch).
  }

  get queuesStopped(): boolean {
    return this.stoppedSince > 0;
  }

  private find(va: number): SvmRange | undefined {
    for (const r of this.ranges) if (va >= r.start && va < r.end) return r;
    return undefined;
  }

  /** svm_range_get_range_boundaries: the granularity-aligned window around va, clipped. */
  private async create(va: number): Promise<SvmRange | null> {
    const vma = await this.host.vma(va);
    if (!vma || !(vma.prot & 1)) return null;
    let start = Math.max(vma.start, Math.floor(va / this.granularity) * this.granularity);
    let end = Math.min(vma.end, start + this.granularity, Math.floor(va / this.granularity) * this.granularity + this.granularity);
    for (const r of this.ranges) {
      if (r.end <= va && r.end > start) start = r.end;
      if (r.start > va && r.start < end) end = r.start;
    }
    const existing = this.find(va);
    if (existing) return existing;
    const range = new SvmRange(start, end);
    range.sub = await this.host.insertInterval(start, end - start, this, `svm[${start.toString(16)}-${end.toString(16)}]`);
    const again = this.find(va);
    if (again) {
      await this.host.removeInterval(range.sub);
      return again;
    }
    this.bySub.set(range.sub.id, range);
    this.ranges.push(range);
    this.ranges.sort((a, b) => a.start - b.start);
    return range;
  }

  private rangeOfSub(sub: DevSub): SvmRange | undefined {
    return this.bySub.get(sub.id);
  }

  // ---- the notifier --------------------------------------------------------------------------

  private action(r: DevRange): Action {
    const { event } = this.seen(r);
    if (this.policy === 'aware') return this.awareAction(r);
    if (event === MmuNotifierEvent.RELEASE) return 'skip';
    if (event === MmuNotifierEvent.UNMAP) return 'drop';
    return 'zap';
  }

  invalidate(sub: DevSub, r: DevRange, curSeq: number): boolean | Promise<boolean> {
    const range = this.rangeOfSub(sub);
    if (!range || this.ignores(r)) return true;
    const action = this.action(r);
    if (action === 'skip') {
      if (this.seen(r).event === MmuNotifierEvent.RELEASE) {
        // amdgpu's SVM callback returns at once for RELEASE; what stops the GPU is the process's
        // own mm notifier (kfd_process_notifier_release: every queue is preempted), which the
        // same mmu_notifier_release calls before exit_mmap frees a page. This device has no such
        // second subscription, so the queue stop is done here: in-flight DMA drains before the
        // answer, and no queue runs again (the process is going away). (Found by the explorer:
        // DMA landed after the RELEASE answer, in freed frames.)
        this.released = true;
        const q = this.quiesce(0, 2 ** 53);
        return q ? q.then(() => true) : true;
      }
      return true;
    }
    // svm_range_lock: taken unconditionally, the blockable flag is never checked.
    const go = (): boolean | Promise<boolean> => {
      try {
        sub.setSeq(curSeq);
        if (action === 'drop') {
          this.inc('inv_pages_unmapped', range.unmap(r.start, r.end, this.host));
          this.defer(range, r.start, r.end);
        } else if (action === 'downgrade') {
          this.inc('inv_pages_downgraded', range.downgrade(r.start, r.end));
          if (this.seen(r).event === MmuNotifierEvent.PROTECTION_PAGE) range.reread = true;
        } else if (this.xnack) {
          this.inc('inv_pages_unmapped', range.unmap(r.start, r.end, this.host));
        } else {
          range.invalid++;
          this.inc('inv_pages_unmapped', range.unmap(r.start, r.end, this.host));
          this.quiesceQueues();
        }
      } finally {
        range.lock.unlock();
      }
      // Unmapping waits for the GPU (fence wait + TLB flush): in-flight DMA to the range drains;
      // with XNACK off all queues were stopped, so everything drains.
      const q = !this.xnack && action === 'zap' ? this.quiesce(0, 2 ** 53) : this.quiesce(r.start, Math.min(r.end, 2 ** 53));
      return q ? q.then(() => true) : true;
    };
    const locked = range.lock.lock('invalidate');
    return locked ? locked.then(go) : go();
  }

  /** XNACK off: the first eviction stops every queue; restore comes after the delay. */
  private quiesceQueues(): void {
    if (!this.queuesStopped) this.stoppedSince = Date.now();
    if (this.restoreTimer) return;
    this.scheduleRestore();
  }

  private scheduleRestore(): void {
    this.host.holdTimers(true, RESTORE_DELAY_MS);
    this.restoreTimer = setTimeout(() => {
      this.host.holdTimers(false, RESTORE_DELAY_MS);
      this.background(this.restore(), 'restore');
    }, RESTORE_DELAY_MS);
  }

  /** svm_range_restore_work: revalidate every invalid range, then resume the queues. */
  private async restore(): Promise<void> {
    this.restoreTimer = null;
    for (const r of [...this.ranges]) {
      if (r.invalid === 0 || r.dead) continue;
      const ok = await this.validate(r);
      if (!ok) {
        this.scheduleRestore();
        return;
      }
      r.invalid = 0;
    }
    if (this.restoreTimer) return;
    this.host.counters.evicted_ms += Date.now() - this.stoppedSince;
    this.stoppedSince = 0;
    for (const w of this.resumeWaiters.splice(0)) w();
  }

  /** UNMAP: split or remove the range after the window closes (SVM_OP_UNMAP_RANGE / UPDATE). */
  private defer(range: SvmRange, start: number, end: number): void {
    this.deferred.push({ range, start, end });
  }

  windowClosed(sub: DevSub): void {
    if (this.deferred.length > 0 && !this.deferredRunning) this.background(this.runDeferred(), 'deferred range work');
    const range = this.rangeOfSub(sub);
    if (range?.reread) {
      range.reread = false;
      this.background(this.reread(range), 're-read after PROTECTION_PAGE');
    }
  }

  /** aware, PROTECTION_PAGE: re-read the CPU page table (no faulting) and map what it allows. */
  private async reread(range: SvmRange): Promise<void> {
    for (let tries = 0; tries < 16 && !range.dead; tries++) {
      const seq = await this.host.readBegin(range.sub);
      const r = await this.host.rangeFault(range.sub, seq, range.start, range.end, { defaultFlags: 0, mask: 0, ownerSelf: true });
      if (r.ret === ERRNO.EBUSY) continue;
      if (r.ret < 0) return;
      await range.lock.lock('reread');
      try {
        if (range.dead || this.retry(range.sub, seq)) continue;
        for (let i = 0; i < r.pfns.length; i++) {
          const w = r.pfns[i];
          const had = range.pfns[i] >= 0;
          if (w & HMM_PFN.VALID) {
            range.pfns[i] = w & HMM_PFN.PFN_MASK;
            range.write[i] = w & HMM_PFN.WRITE ? 1 : 0;
            if (!had) range.mapped++;
          } else if (had) {
            range.pfns[i] = -1;
            range.write[i] = 0;
            range.mapped--;
          }
        }
        this.inc('rereads');
        return;
      } finally {
        range.lock.unlock();
      }
    }
  }

  private async runDeferred(): Promise<void> {
    this.deferredRunning = true;
    try {
      while (this.deferred.length > 0) {
        const { range, start, end } = this.deferred.shift() as { range: SvmRange; start: number; end: number };
        if (range.dead) continue;
        range.dead = true;
        this.ranges = this.ranges.filter((r) => r !== range);
        // Children keep what is left of the range, with their own subscriptions, inserted before
        // the parent's is removed so no invalidation falls between them.
        const parts: Array<[number, number]> = [];
        if (start > range.start) parts.push([range.start, Math.min(start, range.end)]);
        if (end < range.end) parts.push([Math.max(end, range.start), range.end]);
        for (const [s, e] of parts) {
          if (e <= s) continue;
          const child = new SvmRange(s, e);
          child.sub = await this.host.insertInterval(s, e - s, this, `svm[${s.toString(16)}-${e.toString(16)}]`);
          for (let va = s; va < e; va += PAGE_SIZE) {
            const i = range.idx(va);
            if (range.pfns[i] >= 0) {
              child.pfns[child.idx(va)] = range.pfns[i];
              child.write[child.idx(va)] = range.write[i];
              child.mapped++;
            }
          }
          this.bySub.set(child.sub.id, child);
          this.ranges.push(child);
        }
        this.ranges.sort((a, b) => a.start - b.start);
        this.bySub.delete(range.sub.id);
        for (let va = range.start; va < range.end; va += PAGE_SIZE) {
          if (range.pfns[range.idx(va)] >= 0 && !this.find(va)) this.host.forget(va);
        }
        await this.host.removeInterval(range.sub);
      }
    } finally {
      this.deferredRunning = false;
    }
  }

  // ---- faults --------------------------------------------------------------------------------

  lookup(va: number, write: boolean): number {
    if (this.queuesStopped || this.released) return -1;
    const r = this.find(va);
    if (!r) return -1;
    const i = r.idx(va);
    const pfn = r.pfns[i];
    if (pfn < 0 || (write && !r.write[i])) return -1;
    return pfn;
  }

  /** svm_range_restore_pages: the retry-fault handler. */
  async fault(va: number, write: boolean): Promise<boolean> {
    if (this.released) return false;
    if (this.queuesStopped) await new Promise<void>((r) => this.resumeWaiters.push(r));
    for (let tries = 0; tries < 8; tries++) {
      const range = this.find(va) ?? (await this.create(va));
      if (!range) return false;
      if (range.dead) continue;
      const ok = await this.validate(range, write);
      if (ok === null) continue; // the range changed under us (split): replay the fault
      if (ok) this.inc('faults');
      return ok;
    }
    return false;
  }

  /**
   * svm_range_validate_and_map: hmm_range_fault over the whole range (writable if the VMA is),
   * then program it under the range lock unless readRetry says the pfns are stale.
   */
  private async validate(range: SvmRange, wantWrite = false): Promise<boolean | null> {
    const vma = await this.host.vma(range.start);
    if (!vma) return false;
    const write = (vma.prot & 2) !== 0;
    if (wantWrite && !write) return false;
    const deadline = Date.now() + 1000;
    for (;;) {
      if (range.dead) return null;
      if (Date.now() > deadline) return false;
      const seq = await this.host.readBegin(range.sub);
      const r = await this.host.rangeFault(range.sub, seq, range.start, range.end, {
        defaultFlags: HMM_PFN.REQ_FAULT | (write ? HMM_PFN.REQ_WRITE : 0),
        mask: 0,
        ownerSelf: true,
      });
      if (r.ret === ERRNO.EBUSY) continue;
      if (r.ret < 0) return false;
      await range.lock.lock('map');
      try {
        if (range.dead) return null;
        if (this.retry(range.sub, seq)) continue;
        range.mapped = 0;
        for (let i = 0; i < r.pfns.length; i++) {
          const w = r.pfns[i];
          if (w & HMM_PFN.VALID) {
            range.pfns[i] = w & HMM_PFN.PFN_MASK;
            range.write[i] = w & HMM_PFN.WRITE ? 1 : 0;
            range.mapped++;
          } else {
            range.pfns[i] = -1;
            range.write[i] = 0;
          }
        }
        return true;
      } finally {
        range.lock.unlock();
      }
    }
  }

  /** SET_ATTR PREFETCH_LOC: migrate to VRAM (or back), then validate. */
  async prefetch(addr: number, length: number, location: string): Promise<{ migrated: number }> {
    let migrated = 0;
    for (let a = addr; a < addr + length; ) {
      const range = this.find(a) ?? (await this.create(a));
      if (!range) break;
      const end = Math.min(range.end, addr + length);
      if (location === 'vram') {
        const r = await this.host.migrate('to', Math.max(a, range.start), end);
        migrated += r.moved;
        this.inc('page_in', r.moved);
      } else {
        const r = await this.host.migrate('from', Math.max(a, range.start), end);
        migrated += r.moved;
        this.inc('page_out', r.moved);
      }
      await this.validate(range);
      a = range.end;
    }
    return { migrated };
  }

  dropPages(vas: number[]): void {
    for (const va of vas) {
      const r = this.find(va);
      if (r) r.unmap(va, va + PAGE_SIZE, this.host);
    }
    this.inc('page_out', vas.length);
  }

  areas(): Array<[number, number]> {
    const c = this.dma.config;
    if (c.start !== undefined && c.end !== undefined) return [[c.start, c.end]];
    return this.ranges.map((r) => [r.start, r.end]);
  }

  summary(): MirrorSummary {
    let pages = 0;
    let writable = 0;
    let devicePages = 0;
    for (const r of this.ranges) {
      for (let i = 0; i < r.pfns.length; i++) {
        if (r.pfns[i] < 0) continue;
        pages++;
        if (r.write[i]) writable++;
        if (r.pfns[i] >= this.ramFrames) devicePages++;
      }
    }
    return { pages, writable, devicePages, objects: this.ranges.length };
  }
}
