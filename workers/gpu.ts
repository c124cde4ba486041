/**
 * gpu: a GPU with shared virtual memory after amdgpu's KFD SVM (amdkfd/kfd_svm.c).
 *
 * Mirror: SVM ranges (granularity-aligned windows, 2 MiB by default, clipped to the VMA), each with
 * its own interval subscription and a per-page frame array (dma_addr). A retry fault
 * (svm_range_restore_pages) creates the range if needed, takes the range's migrate_mutex (faults on
 * one range serialize), drops the fault if the range was validated less than
 * AMDGPU_SVM_RANGE_RETRY_FAULT_PENDING (2 ms) after the fault arrived ("already restored": a fault
 * that waited behind the restore of its range does not redo it; if its page is still not mapped
 * for the access, the hardware's replay of the dropped fault is modelled by waiting out the 2 ms),
 * checks the permission of the VMA at the fault address (a write fault needs VM_WRITE), and
 * validates the whole range (svm_range_validate_and_map): per VMA inside the range, readBegin,
 * hmm_range_fault over that part (for writing when that VMA is writable, whatever the fault: a read
 * fault also maps a writable VMA writable, as KFD does), the range lock, readRetry, program the GPU
 * PTEs with that VMA's permission. A range spanning a read-only and a writable VMA (mprotect split
 * the VMA after the range was created) maps each part with its own permission.
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
 * Counters as KFD's sysfs: faults (retry faults resolved: restored or already restored), page_in (to
 * VRAM), page_out (from VRAM), evicted_ms; and restores (range validations by a fault),
 * faults_already_restored (dropped within 2 ms of a validation, page mapped), faults_replayed
 * (dropped within 2 ms, page not mapped: replayed after the window), faults_refused (no permission).
 */
import { performance } from 'node:perf_hooks';
import { PAGE_SIZE } from '../src/kernel/layout.js';
import { ERRNO, HMM_PFN } from '../src/kernel/hmm.js';
import { MmuNotifierEvent } from '../src/notifier/range.js';
import { Mutex } from '../src/lib/locks.js';
import { noteWake } from '../src/lib/wakes.js';
import type { MirrorSummary } from '../src/devices/protocol.js';
import { Device, type Action } from './runtime/device.js';
import type { DevRange, DevSub, DeviceHost, IntervalHandler, VmaInfo } from './runtime/host.js';

const RESTORE_DELAY_MS = 1;
/**
 * AMDGPU_SVM_RANGE_RETRY_FAULT_PENDING: a retry fault that arrives less than this after its range
 * was validated is dropped as already restored.
 */
const RETRY_FAULT_PENDING_MS = 2;
const now = (): number => performance.now();

class SvmRange {
  readonly pfns: Int32Array;
  readonly write: Uint8Array;
  /** svm_range_lock (prange->lock): the notifier and the PTE update. */
  readonly lock: Mutex;
  /** prange->migrate_mutex: serializes faults, restores and prefetches of the range. */
  readonly migrate: Mutex;
  /** prange->validate_timestamp (performance.now() ms) of the last successful validation. */
  validatedAt = -Infinity;
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
    this.migrate = new Mutex(`svm[${start.toString(16)}].migrate`);
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
    for (const c of ['faults', 'page_in', 'page_out', 'evicted_ms', 'restores', 'faults_already_restored', 'faults_replayed', 'faults_refused']) host.counters[c] = 0;
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
      // If the range is migrating (or a fault validates it), wait for that first.
      await r.migrate.lock('restore');
      let ok: boolean | null;
      try {
        ok = await this.validate(r);
      } finally {
        r.migrate.unlock();
      }
      if (!ok) {
        this.scheduleRestore();
        return;
      }
      r.invalid = 0;
    }
    if (this.restoreTimer) return;
    this.host.counters.evicted_ms += Date.now() - this.stoppedSince;
    this.stoppedSince = 0;
    if (this.resumeWaiters.length > 0) noteWake(); // their continuations are microtasks (wakes.ts)
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
    // The fault's timestamp: taken when it arrives, before it waits for any lock.
    let arrived = now();
    for (let tries = 0; tries < 16; tries++) {
      const range = this.find(va) ?? (await this.create(va));
      if (!range) return false;
      if (range.dead) continue;
      await range.migrate.lock('fault');
      let replayAt = 0;
      try {
        // svm_range_skip_recover: removed or split while we waited; replay the fault.
        if (range.dead) continue;
        // Skip a duplicate fault: the range was validated less than 2 ms before this fault came.
        if (arrived < range.validatedAt + RETRY_FAULT_PENDING_MS) {
          if (this.lookup(va, write) >= 0) {
            this.inc('faults_already_restored');
            this.inc('faults');
            return true;
          }
          // Dropped, but the page is still not mapped for this access (invalidated since, or no
          // write permission): the hardware replays the fault until the window has passed.
          replayAt = range.validatedAt + RETRY_FAULT_PENDING_MS;
        } else {
          // svm_fault_allowed: the VMA at the fault address must allow the access.
          const vma = await this.host.vma(va);
          if (!vma) return false;
          if (!(vma.prot & 1) || (write && !(vma.prot & 2))) {
            this.inc('faults_refused');
            return false;
          }
          const ok = await this.validate(range);
          if (ok === null) continue; // the range changed under us (split): replay the fault
          if (ok) {
            this.inc('restores');
            this.inc('faults');
          }
          return ok;
        }
      } finally {
        range.migrate.unlock();
      }
      this.inc('faults_replayed');
      // At least a millisecond: a timer, not a spin of immediates.
      if (replayAt > now()) await this.host.sleepUs(Math.max(1000, Math.ceil((replayAt - now()) * 1000)));
      if (this.released) return false;
      if (this.queuesStopped) await new Promise<void>((r) => this.resumeWaiters.push(r));
      // The replay comes after the window (a timer may fire a little before performance.now() says).
      arrived = Math.max(now(), replayAt);
    }
    return false;
  }

  /**
   * svm_range_validate_and_map: for each VMA inside the range, hmm_range_fault over that part
   * (writable if that VMA is, whatever the fault), then program it under the range lock with that
   * VMA's permission unless readRetry says the pfns are stale. A hole (no VMA) fails, as -EFAULT.
   * Sets the validate timestamp on success. Call with range.migrate held.
   */
  private async validate(range: SvmRange): Promise<boolean | null> {
    const deadline = Date.now() + 1000;
    for (let addr = range.start; addr < range.end; ) {
      if (range.dead) return null;
      if (Date.now() > deadline) return false;
      const vma = await this.host.vma(addr);
      if (!vma) return false;
      const next = Math.min(vma.end, range.end);
      const ok = await this.mapPart(range, addr, next, vma, deadline);
      if (ok === 'again') continue; // the VMA changed between the lookup and the fault: look again
      if (ok !== true) return ok;
      addr = next;
    }
    range.validatedAt = now();
    return true;
  }

  /** One VMA's part [start, end) of the range: fault it in and program it. */
  private async mapPart(range: SvmRange, start: number, end: number, vma: VmaInfo, deadline: number): Promise<boolean | null | 'again'> {
    const write = (vma.prot & 2) !== 0;
    for (;;) {
      if (range.dead) return null;
      if (Date.now() > deadline) return false;
      const seq = await this.host.readBegin(range.sub);
      const r = await this.host.rangeFault(range.sub, seq, start, end, {
        defaultFlags: HMM_PFN.REQ_FAULT | (write ? HMM_PFN.REQ_WRITE : 0),
        mask: 0,
        ownerSelf: true,
      });
      if (r.ret === ERRNO.EBUSY) continue;
      if (r.ret < 0) {
        // KFD looks the VMA up and faults under one mmap read lock; here the two are separate
        // requests, and an mprotect or munmap in between makes the fault fail: look again.
        const v = await this.host.vma(start);
        if (v && (v.start !== vma.start || v.end !== vma.end || v.prot !== vma.prot)) return 'again';
        return false;
      }
      await range.lock.lock('map');
      try {
        if (range.dead) return null;
        if (this.retry(range.sub, seq)) continue;
        const base = range.idx(start);
        for (let i = 0; i < r.pfns.length; i++) {
          const w = r.pfns[i];
          const j = base + i;
          const had = range.pfns[j] >= 0;
          if (w & HMM_PFN.VALID) {
            range.pfns[j] = w & HMM_PFN.PFN_MASK;
            range.write[j] = w & HMM_PFN.WRITE ? 1 : 0;
            if (!had) range.mapped++;
          } else {
            range.pfns[j] = -1;
            range.write[j] = 0;
            if (had) range.mapped--;
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
      await range.migrate.lock('prefetch');
      try {
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
      } finally {
        range.migrate.unlock();
      }
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
