/**
 * The emulated kernel: physical memory, swap, files, processes and their address spaces, and the
 * primitives every syscall, fault and kernel activity is built from (page allocation with reclaim
 * and the OOM killer, mapping and unmapping frames, splitting huge pages, notifier pairs).
 *
 * Threading: everything here runs on one thread (the kernel thread, which also serves HTTP and the
 * channel). It never blocks: it awaits where the kernel would sleep. Locking rules are in
 * docs/locking.md; in short, code between two awaits is atomic (that replaces the page-table lock),
 * and every decision taken before an await is re-validated after it (pte_same), as the kernel does
 * after re-taking the page-table lock.
 */
import { DevmirrorError, invariant, kerr } from '../errors.js';
import { FF, FM, LEVEL, PAGE_SIZE, PMD_PAGES, PMD_SIZE, PTE, PTE_FLAGS_MASK } from './layout.js';
import { FileTable, type MemFile } from './files.js';
import { KeyedMutex } from '../lib/locks.js';
import { MM } from './mm.js';
import { PhysicalMemory, ZERO_PFN } from './phys-mem.js';
import { mkPte, ptePfn, type Pte } from './pte.js';
import { Rmap } from './rmap.js';
import { SwapArea } from './swap.js';
import type { Vma } from './vma.js';
import {
  type InvalidationRecord,
  type MmuNotifierSubscriptions,
  type NotifierObserver,
  type SubscriberInfo,
  type RecordTiming,
} from '../notifier/subscriptions.js';
import { makeRange, type MmuNotifierEvent, type NotifierRange, type Origin } from '../notifier/range.js';
import * as sys from './syscalls.js';
import { exit as exitProcess, fork as forkProcess } from './process-ops.js';
import { shrink, type ReclaimResult } from './activity/reclaim.js';
import { oomKill, oomReap, type ReapResult } from './activity/oom.js';
import { compact, migrateRange, type CompactResult } from './activity/migrate.js';
import { numaScan, type NumaScanResult } from './activity/numa.js';
import { ksmScan, type KsmResult } from './activity/ksm.js';
import { collapseHugePage, khugepagedScan, splitThpAt, type CollapseResult } from './activity/thp.js';
import { writebackAll, type WritebackResult } from './activity/writeback.js';
import { audit, type AuditReport } from './audit.js';
import { hmmRangeFault, type HmmRange } from './hmm.js';
import { makeDeviceExclusive, migrateToDevice, migrateToSystem, evictDeviceMemory, type MigrateResult } from './migrate-device.js';
import { handleMmFault } from './fault.js';
import { PROT } from './vma.js';
import { Daemons } from './activity/daemons.js';
import type { TraceRecorder } from '../trace/recorder.js';

export interface KernelConfig {
  /** RAM in bytes (multiple of 2 MiB). Default 64 MiB. */
  memoryBytes: number;
  /** Device memory (VRAM) pool in bytes. Default 16 MiB. */
  deviceMemoryBytes: number;
  numaNodes: number;
  /** Swap in bytes. Default: twice the memory. */
  swapBytes: number;
  maxProcesses: number;
  /** Transparent huge pages: like /sys/kernel/mm/transparent_hugepage/enabled. */
  thp: 'always' | 'madvise' | 'never';
  bootId: number;
}

export const DEFAULT_KERNEL_CONFIG: KernelConfig = {
  memoryBytes: 64 * 1024 * 1024,
  deviceMemoryBytes: 16 * 1024 * 1024,
  numaNodes: 2,
  swapBytes: 128 * 1024 * 1024,
  maxProcesses: 1024,
  thp: 'madvise',
  bootId: 0,
};

export interface Process {
  pid: number;
  name: string;
  mm: MM;
  parent: number | null;
  state: 'running' | 'exiting' | 'exited';
  /** Set when the OOM killer chose this process. */
  oomKilled: boolean;
}

/** Hooks a device-memory owner registers (struct dev_pagemap_ops). */
export interface DevicePagemap {
  owner: number;
  /**
   * A CPU (or another device) touched a device-private page of this owner: move it back to RAM.
   * The kernel supplies `migrate`, the generic migrate_vma path; a device hook typically calls it
   * and then updates its own mirror. Without a hook the kernel calls `migrate` itself.
   */
  migrateToRam?(mm: MM, va: number, migrate: () => Promise<void>): Promise<void>;
  /**
   * Pages of this owner are moving back to RAM (their entries are migration entries now): drop
   * the translations before they move. Awaited inside the invalidation window.
   */
  migratingOut?(mm: MM, vas: number[]): Promise<void>;
  /** The kernel moved a page of this owner (CPU fault, eviction): forget the mirror entry. */
  pageMigratedOut?(mm: MM, va: number, devPfn: number): void;
}

export interface KernelObserver {
  /**
   * Every completed invalidation, in order. With `deferred`, in batches instead: at most 10 ms
   * later (or after 1,024 records), or at once when someone calls `Kernel.flushObservers()`
   * (a reader of what the observer keeps calls it before reading, as the event log and the metrics
   * do). The record is immutable by then.
   */
  onInvalidation?(rec: InvalidationRecord): void;
  /**
   * onInvalidation in batches (see there). For observers that only keep or count records: the
   * round does not run their code, and a batch runs it with warm caches, once per batch instead of
   * once per invalidation.
   */
  deferred?: boolean;
  onInvalidationStart?(range: NotifierRange): void;
  onSubscriberBug?(info: SubscriberInfo, message: string, range: NotifierRange | null): void;
  onProcessExit?(p: Process): void;
  onOomKill?(p: Process, reason: string): void;
}

/** Every hook of KernelObserver (the per-hook observer lists are built from it). */
const OBSERVER_HOOKS = ['onInvalidation', 'onInvalidationStart', 'onSubscriberBug', 'onProcessExit', 'onOomKill'] as const satisfies ReadonlyArray<keyof KernelObserver>;
type ObserverHook = (typeof OBSERVER_HOOKS)[number];
/**
 * Deferred observers get the records at most this many milliseconds late (or when a reader flushes),
 * and in batches of at most DEFER_MAX_RECORDS (the records wait in memory until then).
 */
const DEFER_MS = 10;
const DEFER_MAX_RECORDS = 1024;

export interface KernelStats {
  faults: number;
  cowFaults: number;
  swapOuts: number;
  swapIns: number;
  reclaimed: number;
  reclaimScans: number;
  migrations: number;
  compactions: number;
  ksmMerged: number;
  thpCollapsed: number;
  thpSplit: number;
  writebacks: number;
  oomKills: number;
  oomReapRetries: number;
  invalidations: number;
  invalidationsRefused: number;
  subscriberBugs: number;
  enomem: number;
  /** Page-table entries pointing outside memory that a fault found and cleared (pmd_clear_bad). */
  badTableEntries: number;
}

const MAX_PID = 4 * 1024 * 1024;

export class Kernel {
  readonly config: KernelConfig;
  readonly mem: PhysicalMemory;
  readonly swap: SwapArea;
  readonly files = new FileTable();
  readonly rmap = new Rmap();
  /** Folio locks, keyed by head pfn. */
  readonly folioLocks = new KeyedMutex();
  readonly processes = new Map<number, Process>();
  private readonly names = new Map<string, number>();
  private nextPid = 100;
  private readonly freeSlots: number[] = [];
  /** Page-cache index of file frames (valid while FF.FILE is set). */
  readonly pageIndex: Int32Array;
  /** LRU lists (insertion ordered sets of pfns): reclaim scans the inactive list from the front. */
  readonly lru = { active: new Set<number>(), inactive: new Set<number>() };
  readonly pagemaps = new Map<number, DevicePagemap>();
  private readonly observers = new Set<KernelObserver>();
  /** The observers that have each hook (see emit); onInvalidation lists the synchronous ones. */
  private readonly hooks: { [K in ObserverHook]?: KernelObserver[] } = {};
  /** The deferred onInvalidation observers, and the records they have not seen yet, in order. */
  private deferredObservers: KernelObserver[] = [];
  private deferredRecords: InvalidationRecord[] = [];
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * Shared by every mm's notifier: invalidation records are timed only while an observer takes
   * them (onInvalidation: metrics, the event log, tracing, the load generator). See RecordTiming.
   */
  readonly recordTiming: RecordTiming = { on: false };
  readonly stats: KernelStats = {
    faults: 0,
    cowFaults: 0,
    swapOuts: 0,
    swapIns: 0,
    reclaimed: 0,
    reclaimScans: 0,
    migrations: 0,
    compactions: 0,
    ksmMerged: 0,
    thpCollapsed: 0,
    thpSplit: 0,
    writebacks: 0,
    oomKills: 0,
    oomReapRetries: 0,
    invalidations: 0,
    invalidationsRefused: 0,
    subscriberBugs: 0,
    badTableEntries: 0,
    enomem: 0,
  };
  /** Memory-pressure hooks installed by the activity modules (reclaim, OOM). */
  pressure: {
    reclaim(k: Kernel, pages: number, scanLimit?: number): Promise<number>;
    oom(k: Kernel, reason: string): Promise<boolean>;
  } | null = null;
  readonly bootId: number;
  /** Background activity at configurable rates. */
  readonly daemons: Daemons;
  /** The trace recorder while tracing is on (src/trace/kernel-hooks.ts), else null. */
  trace: TraceRecorder | null = null;

  constructor(config: Partial<KernelConfig> = {}) {
    const cfg = { ...DEFAULT_KERNEL_CONFIG, ...config };
    if (config.swapBytes === undefined) cfg.swapBytes = cfg.memoryBytes * 2;
    for (const [k, v] of Object.entries({
      memoryBytes: cfg.memoryBytes,
      deviceMemoryBytes: cfg.deviceMemoryBytes,
      swapBytes: cfg.swapBytes,
    })) {
      if (!Number.isInteger(v) || v < 0 || v % PAGE_SIZE !== 0) {
        throw new DevmirrorError('DM_ERR_CONFIG', `${k} must be a non-negative multiple of ${PAGE_SIZE}`);
      }
    }
    if (cfg.memoryBytes % PMD_SIZE !== 0) throw new DevmirrorError('DM_ERR_CONFIG', 'memoryBytes must be a multiple of 2 MiB');
    this.config = cfg;
    this.bootId = cfg.bootId || Math.floor(Math.random() * 0x7fffffff) + 1;
    this.mem = new PhysicalMemory({
      ramFrames: cfg.memoryBytes / PAGE_SIZE,
      deviceFrames: cfg.deviceMemoryBytes / PAGE_SIZE,
      numaNodes: cfg.numaNodes,
      swapSlots: cfg.swapBytes / PAGE_SIZE,
      maxMm: cfg.maxProcesses,
      bootId: this.bootId,
    });
    this.swap = new SwapArea(this.mem, cfg.swapBytes / PAGE_SIZE);
    this.pageIndex = new Int32Array(this.mem.totalFrames);
    for (let s = cfg.maxProcesses - 1; s >= 0; s--) this.freeSlots.push(s);
    this.daemons = new Daemons(this);
    this.pressure = {
      reclaim: async (k, pages, scanLimit) => (await shrink(k, pages, 'reclaim', scanLimit)).reclaimed,
      oom: (k, reason) => oomKill(k, reason, (p) => k.exitProcess(p)),
    };
  }

  // ---- observers -------------------------------------------------------------------------------

  observe(o: KernelObserver): () => void {
    if (this.observers.has(o)) return () => this.unobserve(o);
    // A deferred observer sees only invalidations that complete while it is subscribed: the
    // records pending now go to the deferred observers there were before it.
    if (o.deferred === true && typeof o.onInvalidation === 'function') this.flushObservers();
    this.observers.add(o);
    // Copy on write: an emit walking a list is not disturbed by (un)subscribing from an observer.
    for (const h of OBSERVER_HOOKS) {
      if (typeof o[h] !== 'function') continue;
      if (h === 'onInvalidation' && o.deferred === true) this.deferredObservers = [...this.deferredObservers, o];
      else this.hooks[h] = [...(this.hooks[h] ?? []), o];
    }
    this.refreshNotifierObservers();
    return () => this.unobserve(o);
  }

  private unobserve(o: KernelObserver): boolean {
    if (!this.observers.has(o)) return false;
    // A deferred observer sees every invalidation that completed while it was subscribed.
    if (this.deferredObservers.includes(o)) this.flushObservers();
    this.observers.delete(o);
    for (const h of OBSERVER_HOOKS) {
      const list = this.hooks[h]?.filter((x) => x !== o);
      this.hooks[h] = list && list.length > 0 ? list : undefined;
    }
    this.deferredObservers = this.deferredObservers.filter((x) => x !== o);
    this.refreshNotifierObservers();
    return true;
  }

  /**
   * Hands the deferred observers every invalidation record that completed since the last flush, in
   * order. Runs by itself (a timer, or a full batch); a reader of a deferred observer's state calls
   * it first, so it never sees a state behind the kernel's.
   */
  flushObservers(): void {
    const recs = this.deferredRecords;
    if (recs.length === 0) return;
    this.deferredRecords = [];
    const list = this.deferredObservers;
    for (let i = 0; i < list.length; i++) {
      const o = list[i];
      for (let j = 0; j < recs.length; j++) {
        // One that unsubscribed inside this batch (itself or another) gets no more of it.
        if (j > 0 && !this.observers.has(o)) break;
        try {
          o.onInvalidation!(recs[j]);
        } catch {
          // An observer (metrics, UI) must never break the kernel.
        }
      }
    }
  }

  private deferInvalidation(rec: InvalidationRecord): void {
    if (this.deferredRecords.push(rec) >= DEFER_MAX_RECORDS) return this.flushObservers();
    if (this.flushTimer !== null) return;
    // A timer, not setImmediate: a round driven by socket I/O turns the event loop once per round,
    // so an immediate would run (and be scheduled) every round, which cost the external round
    // 2 to 5 us more than calling the observers inline (protocol-floor.mjs, 11-29). unref: pending
    // observer work alone does not keep the process alive.
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flushObservers();
    }, DEFER_MS).unref();
  }

  /**
   * Calls every observer that has hook `name`. The observers of each hook are listed when they
   * subscribe: an invalidation emits on its start and end, and walking every observer (a Set
   * iterator, a rest-argument array) for hooks most do not have cost the round measurably. Hooks
   * take at most three arguments (the implementation passes a, b, c).
   */
  emit<K extends ObserverHook>(name: K, ...args: Parameters<NonNullable<KernelObserver[K]>>): void;
  emit(name: ObserverHook, a?: unknown, b?: unknown, c?: unknown): void {
    const list = this.hooks[name];
    if (list === undefined) return;
    for (let i = 0; i < list.length; i++) {
      const o = list[i];
      try {
        (o[name] as (a: unknown, b: unknown, c: unknown) => void).call(o, a, b, c);
      } catch {
        // An observer (metrics, UI) must never break the kernel.
      }
    }
  }

  // ---- processes -------------------------------------------------------------------------------

  /** Creates an empty process (an exec'd image without mappings). */
  createProcess(name?: string, parent: number | null = null): Process {
    if (name !== undefined) {
      if (this.names.has(name)) throw new DevmirrorError('DM_ERR_NAME_TAKEN', `a process named "${name}" exists`);
    }
    const slot = this.freeSlots.pop();
    if (slot === undefined) throw kerr('EAGAIN', 'process table full');
    const pgd = this.mem.tryAlloc(0, false, FF.PGTABLE, true);
    if (pgd < 0) {
      this.freeSlots.push(slot);
      this.stats.enomem++;
      throw kerr('ENOMEM', 'no frame for a page directory');
    }
    let pid = this.nextPid++;
    while (this.processes.has(pid)) pid = this.nextPid++;
    if (this.nextPid > MAX_PID) this.nextPid = 100;
    const mm = new MM(pid, slot, this.mem, pgd);
    this.attachNotifier(mm.notifier, mm);
    mm.pt.onBadEntry = () => this.stats.badTableEntries++;
    const p: Process = { pid, name: name ?? `proc${pid}`, mm, parent, state: 'running', oomKilled: false };
    if (name === undefined && this.names.has(p.name)) p.name = `proc${pid}-${slot}`;
    this.processes.set(pid, p);
    this.names.set(p.name, pid);
    return p;
  }

  private attachNotifier(n: MmuNotifierSubscriptions, mm: MM): void {
    n.timing = this.recordTiming;
    n.counts = this.stats;
    n.observer = this.notifierObserver(mm);
  }

  /**
   * The notifier core's observer for one mm. The range hooks are there only while some kernel
   * observer wants them (onInvalidationStart; onInvalidation, which also switches timing on):
   * an invalidation nobody observes makes no observer call (about 25 ns of the in-process round
   * at N = 1, 11-29; the core counts the kernel's stats itself). observe() and unobserve()
   * rebuild it for every live mm.
   */
  private notifierObserver(mm: MM): NotifierObserver {
    const o: NotifierObserver = {
      onSubscriberBug: (info, msg, range) => {
        this.stats.subscriberBugs++;
        this.emit('onSubscriberBug', info, msg, range);
      },
      onReadBeginWait: (info, sinceUs) => this.trace?.span(this.trace.subscriberTrack(info), 'readBegin wait', sinceUs, mm.pid),
    };
    if (this.hooks.onInvalidationStart !== undefined) o.onInvalidationStart = (range) => this.emit('onInvalidationStart', range);
    const sync = this.hooks.onInvalidation !== undefined;
    const deferred = this.deferredObservers.length > 0;
    if (sync && deferred) {
      o.onInvalidationEnd = (rec) => {
        this.emit('onInvalidation', rec);
        this.deferInvalidation(rec);
      };
    } else if (sync) o.onInvalidationEnd = (rec) => this.emit('onInvalidation', rec);
    else if (deferred) o.onInvalidationEnd = (rec) => this.deferInvalidation(rec);
    return o;
  }

  /** Gives every live mm's notifier the observer that matches the kernel's observers now. */
  private refreshNotifierObservers(): void {
    this.recordTiming.on = this.hooks.onInvalidation !== undefined || this.deferredObservers.length > 0;
    for (const p of this.processes.values()) if (p.state !== 'exited') p.mm.notifier.observer = this.notifierObserver(p.mm);
  }

  /** The live process with this pid (or name), or DM_ERR_NO_SUCH_PROCESS. */
  process(pidOrName: number | string): Process {
    const pid = typeof pidOrName === 'number' ? pidOrName : this.names.get(pidOrName);
    const p = pid === undefined ? undefined : this.processes.get(pid);
    if (!p || p.state === 'exited') {
      throw new DevmirrorError('DM_ERR_NO_SUCH_PROCESS', `no process ${JSON.stringify(pidOrName)}`);
    }
    return p;
  }

  findProcess(pidOrName: number | string): Process | undefined {
    try {
      return this.process(pidOrName);
    } catch {
      return undefined;
    }
  }

  liveProcesses(): Process[] {
    return [...this.processes.values()].filter((p) => p.state !== 'exited');
  }

  /** @internal called by exit once the mm is torn down. */
  reapProcess(p: Process): void {
    p.state = 'exited';
    this.processes.delete(p.pid);
    if (this.names.get(p.name) === p.pid) this.names.delete(p.name);
    this.freeSlots.push(p.mm.slot);
    for (const c of this.processes.values()) if (c.parent === p.pid) c.parent = null;
    this.emit('onProcessExit', p);
  }

  // ---- page allocation -------------------------------------------------------------------------

  /**
   * Allocates one RAM frame, going through reclaim, then the OOM killer, before failing with
   * ENOMEM. Nothing is changed when it fails.
   */
  async allocPage(flags: number, node = 0, zero = true): Promise<number> {
    const pfn = this.mem.tryAlloc(node, false, flags, zero);
    if (pfn >= 0) return pfn;
    return this.allocSlow(flags, node, zero);
  }

  private async allocSlow(flags: number, node: number, zero: boolean): Promise<number> {
    const pressure = this.pressure;
    // Direct reclaim with rising priority, as do_try_to_free_pages: each round scans a larger
    // share of the LRU (1/4096 of it up to all of it, twice, so second-chance pages go too)
    // before the OOM killer is considered.
    for (let priority = 12; priority >= -1 && pressure; priority -= 2) {
      const lruSize = this.lru.active.size + this.lru.inactive.size;
      const scan = Math.max(32, priority < 0 ? 2 * lruSize : lruSize >> priority);
      await pressure.reclaim(this, 32, scan);
      const pfn = this.mem.tryAlloc(node, false, flags, zero);
      if (pfn >= 0) return pfn;
    }
    for (let kills = 0; kills < 3 && pressure; kills++) {
      if (!(await pressure.oom(this, 'page allocation failed after reclaim'))) break;
      const pfn = this.mem.tryAlloc(node, false, flags, zero);
      if (pfn >= 0) return pfn;
    }
    this.stats.enomem++;
    throw kerr('ENOMEM', 'out of memory: reclaim, swap and the OOM killer could not free a frame');
  }

  /** Makes sure `n` frames are free (so a synchronous section can allocate without failing). */
  async reserve(n: number): Promise<void> {
    if (this.mem.freeFrames() >= n) return;
    const got: number[] = [];
    try {
      while (this.mem.freeFrames() + got.length < n) got.push(await this.allocPage(0, 0, false));
    } finally {
      for (const p of got) this.mem.put(p);
    }
  }

  /** Ensures the page-table pages for va exist down to `level`; returns the entry index or -2. */
  async ensurePt(mm: MM, va: number, level: number): Promise<number> {
    for (;;) {
      const idx = mm.pt.ensure(va, level, () => this.mem.tryAlloc(0, false, FF.PGTABLE, true));
      if (idx !== -1) return idx;
      await this.reserve(4);
    }
  }

  /** Drops a reference; cleans up the kernel's books if the frame was freed. */
  putPage(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    if (this.mem.put(pfn)) {
      this.lru.active.delete(pfn);
      this.lru.inactive.delete(pfn);
    }
  }

  lruAdd(pfn: number): void {
    if (pfn === ZERO_PFN || this.mem.isDevicePfn(pfn)) return;
    this.mem.setFlags(pfn, FF.LRU);
    this.lru.inactive.add(pfn);
  }

  lruDel(pfn: number): void {
    this.mem.clearFlags(pfn, FF.LRU | FF.ACTIVE);
    this.lru.active.delete(pfn);
    this.lru.inactive.delete(pfn);
  }

  // ---- mapping primitives (no notification: callers bracket downgrades with notify) ------------

  /** Installs a leaf mapping `pfn` at va (PTE or huge PMD); the caller owns the reference. */
  mapLeaf(mm: MM, va: number, idx: number, pfn: number, flags: number): void {
    mm.pt.store(idx, mkPte(pfn, flags));
    if (pfn === ZERO_PFN && !(flags & PTE.DEVICE_PRIVATE)) return;
    if (flags & PTE.HUGE) {
      for (let i = 0; i < PMD_PAGES; i++) this.mem.addMapcount(pfn + i, 1);
      this.rmap.add(pfn, mm, va, true);
      mm.addRss(PMD_PAGES);
    } else {
      this.mem.addMapcount(pfn, 1);
      this.rmap.add(pfn, mm, va);
      mm.addRss(1);
    }
  }

  /**
   * Clears one leaf and releases what it referenced: frames (folding a dirty PTE into the folio),
   * swap slots, device pages. Returns the old entry.
   */
  zapLeaf(mm: MM, va: number, idx: number, e: Pte = mm.pt.load(idx)): Pte {
    if (e === 0) return 0;
    mm.pt.store(idx, 0);
    this.releaseLeaf(mm, va, e);
    return e;
  }

  /** Drops the references an entry held (after it was cleared or replaced). */
  releaseLeaf(mm: MM, va: number, e: Pte): void {
    if (e & PTE.SWAP) {
      this.swap.put(ptePfn(e));
      mm.swapEntries--;
      return;
    }
    const pfn = ptePfn(e);
    if (pfn === ZERO_PFN && !(e & PTE.DEVICE_PRIVATE)) return;
    if (e & PTE.HUGE) {
      for (let i = 0; i < PMD_PAGES; i++) {
        if (e & PTE.DIRTY) this.mem.setFlags(pfn + i, FF.DIRTY);
        this.mem.addMapcount(pfn + i, -1);
      }
      this.rmap.remove(pfn, mm, va, true);
      mm.addRss(-PMD_PAGES);
      for (let i = 0; i < PMD_PAGES; i++) this.putPage(pfn + i);
      return;
    }
    if (e & PTE.DIRTY) this.mem.setFlags(pfn, FF.DIRTY);
    this.mem.addMapcount(pfn, -1);
    this.rmap.remove(pfn, mm, va);
    mm.addRss(-1);
    this.putPage(pfn);
  }

  /** Zaps every leaf in [start, end) (huge leaves must lie fully inside: split them first). */
  zapRange(mm: MM, start: number, end: number): number {
    let zapped = 0;
    mm.pt.walk(start, end, (va, idx, level, e) => {
      if (level === LEVEL.PMD) invariant(va >= start && va + PMD_SIZE <= end, 'zap of part of a huge PMD');
      this.zapLeaf(mm, va, idx, e);
      zapped++;
    });
    return zapped;
  }

  // ---- notifier pairs --------------------------------------------------------------------------

  /**
   * Opens an invalidation (mmu_notifier_invalidate_range_start, blockable) and resolves when
   * every subscriber has acknowledged. Pair with notifyEnd after changing the PTEs.
   */
  notify(
    mm: MM,
    event: MmuNotifierEvent,
    start: number,
    end: number,
    origin: Origin,
    owner: number | null = null,
    flags = 0,
  ): NotifierRange | Promise<NotifierRange> {
    const range = makeRange(mm.pid, event, start, end, origin, owner);
    range.flags = flags;
    if (mm.notifier.subscriberCount === 0 && !mm.notifier.hasItree) return range; // !mm_has_notifiers
    // Synchronous when every subscriber answered inside the spin: no promise on the fast path.
    // Resolves with the range itself: no reaction of its own between the last answer and the caller.
    return mm.notifier.startBlockable(range, range);
  }

  notifyEnd(mm: MM, range: NotifierRange): void {
    if (range.id === 0) return;
    mm.notifier.invalidateRangeEnd(range);
  }

  // ---- huge pages ------------------------------------------------------------------------------

  /**
   * Splits the huge PMD mapping at va into 512 PTEs (__split_huge_pmd: CLEAR over the aligned
   * 2 MiB). The folio itself stays whole (PTE-mapped). Without `always`, nothing happens unless a
   * huge PMD is there; with it (split_huge_pmd_address, as a VMA split calls it), the CLEAR pair is
   * sent whenever the PMD table exists, huge or not, as the kernel does.
   */
  async splitHugePmd(mm: MM, va: number, origin: Origin = 'thp_split', always = false): Promise<void> {
    const haddr = Math.floor(va / PMD_SIZE) * PMD_SIZE;
    const pmdIdx = mm.pt.pmdIndex(haddr);
    if (pmdIdx < 0) return;
    const huge = (mm.pt.load(pmdIdx) & PTE.HUGE) !== 0;
    if (!huge && !always) return;
    const table = huge ? await this.allocPage(FF.PGTABLE, 0, true) : -1;
    const range = await this.notify(mm, 1 /* CLEAR */, haddr, haddr + PMD_SIZE, origin);
    try {
      if (!this.splitHugePmdLocked(mm, pmdIdx, haddr, table) && table >= 0) this.mem.put(table);
    } finally {
      this.notifyEnd(mm, range);
    }
  }

  /**
   * split_huge_pmd_locked: replaces a huge PMD leaf by a table of 512 PTEs (in `table`, a zeroed
   * page-table page). Synchronous; the caller has notified. Returns false (table unused) if the
   * PMD is not huge any more.
   */
  splitHugePmdLocked(mm: MM, pmdIdx: number, haddr: number, table: number): boolean {
    const now = mm.pt.load(pmdIdx);
    if (table < 0 || now === 0 || !(now & PTE.HUGE)) return false;
    const pfn = ptePfn(now);
    const flags = now & ~PTE.HUGE & PTE_FLAGS_MASK;
    const zero = pfn === ZERO_PFN && !(now & PTE.DEVICE_PRIVATE);
    const base = table * (PAGE_SIZE / 4);
    for (let i = 0; i < PMD_PAGES; i++) {
      Atomics.store(this.mem.dataWords, base + i, mkPte(zero ? ZERO_PFN : pfn + i, flags));
    }
    // Publish the filled table in one store: readers see either the huge leaf or all 512 PTEs.
    mm.pt.store(pmdIdx, mkPte(table, PTE.PRESENT | PTE.TABLE));
    if (!zero) {
      this.rmap.remove(pfn, mm, haddr, true);
      for (let i = 0; i < PMD_PAGES; i++) this.rmap.add(pfn + i, mm, haddr + i * PAGE_SIZE);
    }
    this.stats.thpSplit++;
    return true;
  }

  /**
   * split_huge_page: unmaps the folio at `head` from every mapping (unmap_folio: try_to_migrate
   * with TTU_SPLIT_HUGE_PMD, one CLEAR over the folio's span in each VMA, a PMD mapping being split
   * inside that window), then remaps it page by page, silently, as 512 independent pages. The
   * caller holds the folio lock.
   */
  async splitFolio(head: number): Promise<boolean> {
    const spans = new Map<string, { mm: MM; start: number; end: number; haddr: number; huge: boolean }>();
    const add = (mm: MM, folioStart: number, huge: boolean): void => {
      const vma = mm.vmas.find(Math.max(folioStart, 0));
      const v = vma ?? mm.vmas.findFrom(folioStart);
      if (!v) return;
      const key = `${mm.pid}:${folioStart}`;
      const prev = spans.get(key);
      if (prev) {
        prev.huge ||= huge;
        return;
      }
      spans.set(key, { mm, start: Math.max(v.start, folioStart), end: Math.min(v.end, folioStart + PMD_SIZE), haddr: folioStart, huge });
    };
    for (const m of this.rmap.hugeMappings(head)) add(m.mm, m.va, true);
    for (let i = 0; i < PMD_PAGES; i++) {
      for (const m of this.rmap.direct(head + i)) if (!m.huge) add(m.mm, m.va - i * PAGE_SIZE, false);
    }
    for (const s of spans.values()) {
      const table = s.huge ? await this.allocPage(FF.PGTABLE, 0, true) : -1;
      const range = await this.notify(s.mm, 1 /* CLEAR */, s.start, s.end, 'thp_split');
      try {
        const pmdIdx = s.mm.pt.pmdIndex(s.haddr);
        const used = pmdIdx >= 0 && ptePfn(s.mm.pt.load(pmdIdx)) === head && this.splitHugePmdLocked(s.mm, pmdIdx, s.haddr, table);
        if (!used && table >= 0) this.mem.put(table);
      } finally {
        this.notifyEnd(s.mm, range);
      }
    }
    if (this.rmap.hugeMappings(head).length > 0) return false;
    if (this.mem.folioIntact(head)) this.mem.dissolveFolio(head);
    return true;
  }

  /** THP eligibility of the aligned 2 MiB around va in vma (anonymous private memory only). */
  thpEligible(vma: Vma, va: number): boolean {
    if (this.config.thp === 'never' || vma.huge === 'nohugepage') return false;
    if (this.config.thp === 'madvise' && vma.huge !== 'hugepage') return false;
    if (!vma.anonymous || vma.shared) return false;
    const haddr = Math.floor(va / PMD_SIZE) * PMD_SIZE;
    return haddr >= vma.start && haddr + PMD_SIZE <= vma.end;
  }

  // ---- files -----------------------------------------------------------------------------------

  fileOf(pfn: number): MemFile | undefined {
    if (!this.mem.hasFlag(pfn, FF.FILE)) return undefined;
    return this.files.get(this.mem.getMeta(pfn, FM.MAPPING));
  }

  /** Makes a file page-cache resident and returns its frame (filemap_fault / shmem_get_folio). */
  async getFilePage(file: MemFile, index: number): Promise<number> {
    for (;;) {
      const cached = file.cache.get(index);
      if (cached !== undefined) {
        if (!this.folioLocks.isLocked(cached)) return cached;
        // Under reclaim or writeback: wait for the folio lock, then look again.
        await this.folioLocks.lock(cached, 'filemap_fault');
        this.folioLocks.unlock(cached);
        continue;
      }
      const flags = FF.FILE | (file.kind === 'shmem' ? FF.SHMEM : 0);
      const pfn = await this.allocPage(flags, 0, false);
      if (file.cache.has(index)) {
        this.mem.put(pfn);
        continue;
      }
      if (file.kind === 'file') {
        file.readDisk(index, this.mem.page(pfn));
      } else {
        const slot = file.swapped.get(index);
        if (slot !== undefined) {
          this.swap.read(slot, pfn);
          file.swapped.delete(index);
          this.swap.put(slot);
          this.mem.setFlags(pfn, FF.DIRTY);
        } else {
          this.mem.zeroPage(pfn);
        }
      }
      this.mem.setMeta(pfn, FM.MAPPING, file.id);
      this.pageIndex[pfn] = index;
      file.cache.set(index, pfn);
      this.lruAdd(pfn);
      return pfn;
    }
  }

  /** Does any VMA of a live process map this file? (the file's i_mmap tree is not empty) */
  fileMapped(file: MemFile): boolean {
    for (const p of this.processes.values()) {
      if (p.mm.dead) continue;
      for (const v of p.mm.vmas.items) if (v.file === file) return true;
    }
    return false;
  }

  /** Removes a clean, unmapped page from its file's cache and frees it. */
  dropFromCache(file: MemFile, index: number, pfn: number): void {
    invariant(file.cache.get(index) === pfn, 'page cache mismatch');
    file.cache.delete(index);
    this.lruDel(pfn);
    this.putPage(pfn);
  }

  // ---- helpers ---------------------------------------------------------------------------------

  /** Awaits the folio lock holder of pfn (migration_entry_wait). */
  async waitFolio(pfn: number): Promise<void> {
    const head = this.mem.headOf(pfn);
    for (const key of [pfn, head]) {
      if (this.folioLocks.isLocked(key)) {
        await this.folioLocks.lock(key, 'wait');
        this.folioLocks.unlock(key);
      }
    }
  }

  // ---- syscalls ---------------------------------------------------------------------------------

  async mmap(pid: number | string, args: sys.MmapArgs): Promise<number> {
    return sys.mmap(this, this.process(pid), args);
  }
  async munmap(pid: number | string, addr: number, length: number): Promise<void> {
    return sys.munmap(this, this.process(pid), addr, length);
  }
  async mremap(pid: number | string, args: sys.MremapArgs): Promise<number> {
    return sys.mremap(this, this.process(pid), args);
  }
  async mprotect(pid: number | string, addr: number, length: number, prot: number): Promise<void> {
    return sys.mprotect(this, this.process(pid), addr, length, prot);
  }
  async madvise(pid: number | string, addr: number, length: number, advice: sys.Advice): Promise<sys.MadviseResult> {
    return sys.madvise(this, this.process(pid), addr, length, advice);
  }
  async brk(pid: number | string, addr: number): Promise<number> {
    return sys.brk(this, this.process(pid), addr);
  }
  async msync(pid: number | string, addr: number, length: number): Promise<{ written: number }> {
    return sys.msync(this, this.process(pid), addr, length);
  }
  async clearRefs(pid: number | string, mode: sys.ClearRefsMode): Promise<void> {
    return sys.clearRefs(this, this.process(pid), mode);
  }
  pagemap(pid: number | string, addr: number, pages: number): sys.PagemapEntry[] {
    return sys.pagemap(this, this.process(pid), addr, pages);
  }
  /** A CPU load of `length` bytes (faults as needed). */
  async read(pid: number | string, addr: number, length: number, node = 0): Promise<Uint8Array> {
    return sys.cpuAccess(this, this.process(pid), addr, length, null, node);
  }
  /** A CPU store (COW, dirty and soft-dirty as the MMU would). */
  async write(pid: number | string, addr: number, data: Uint8Array, node = 0): Promise<void> {
    await sys.cpuAccess(this, this.process(pid), addr, data.length, data, node);
  }
  async fork(pid: number | string): Promise<Process> {
    return forkProcess(this, this.process(pid));
  }
  async exit(pid: number | string): Promise<void> {
    return exitProcess(this, this.process(pid));
  }
  /** @internal exit by object (the OOM killer's victim may no longer be found by name). */
  async exitProcess(p: Process): Promise<void> {
    return exitProcess(this, p);
  }
  createFile(size: number): MemFile {
    if (!Number.isSafeInteger(size) || size < 0) throw new DevmirrorError('DM_ERR_VALIDATION', 'size must be a non-negative integer');
    return this.files.create(size, 'file');
  }
  file(id: number): MemFile {
    const f = this.files.get(id);
    if (!f || f.kind !== 'file') throw new DevmirrorError('DM_ERR_NO_SUCH_FILE', `no file ${id}`);
    return f;
  }
  fileRead(id: number, offset: number, length: number): Uint8Array {
    const f = this.file(id);
    sys.checkNumber('offset', offset);
    sys.checkNumber('length', length);
    return sys.fileRead(this, f, offset, length);
  }
  async fileWrite(id: number, offset: number, data: Uint8Array): Promise<void> {
    const f = this.file(id);
    sys.checkNumber('offset', offset);
    if (offset + data.length > 1 << 30) throw new DevmirrorError('DM_ERR_TOO_LARGE', 'files are limited to 1 GiB');
    return sys.fileWrite(this, f, offset, data);
  }

  // ---- kernel activity ----------------------------------------------------------------------------

  async reclaim(pages: number): Promise<ReclaimResult> {
    if (sys.checkNumber('pages', pages) === 0) throw kerr('EINVAL', 'pages must be positive');
    return shrink(this, pages);
  }
  async compact(node = 0): Promise<CompactResult> {
    this.checkNode(node);
    return compact(this, node);
  }
  async migrate(pid: number | string, addr: number, length: number, node: number): Promise<{ scanned: number; migrated: number; failed: number }> {
    const p = this.process(pid);
    this.checkNode(node);
    const r = sys.userRange(addr, length, 'EINVAL', true);
    if (!r) return { scanned: 0, migrated: 0, failed: 0 };
    return migrateRange(this, p.mm, r[0], r[1], node);
  }
  private checkNode(node: unknown): void {
    if (typeof node !== 'number' || !Number.isInteger(node) || node < 0 || node >= this.mem.numaNodes) throw kerr('EINVAL', 'no such NUMA node');
  }
  /** [start, end) given as two addresses: page aligned, non-empty, inside the user address space. */
  private checkSpan(start: number, end: number): void {
    sys.checkNumber('start', start);
    sys.checkNumber('end', end);
    if (end <= start) throw kerr('EINVAL', 'empty or inverted range');
    sys.userRange(start, end - start, 'EINVAL', false);
  }
  private checkOwner(owner: unknown): void {
    if (typeof owner !== 'number' || !Number.isSafeInteger(owner) || owner <= 0) throw new DevmirrorError('DM_ERR_VALIDATION', 'owner must be a positive integer');
  }
  async numaBalance(pid: number | string, windowBytes?: number): Promise<NumaScanResult> {
    const p = this.process(pid);
    if (windowBytes !== undefined && (sys.checkNumber('windowBytes', windowBytes) === 0 || windowBytes % PAGE_SIZE !== 0)) {
      throw kerr('EINVAL', 'the scan window must be a positive multiple of the page size');
    }
    return numaScan(this, p, windowBytes);
  }
  async ksm(): Promise<KsmResult> {
    return ksmScan(this);
  }
  async khugepaged(max?: number): Promise<{ scanned: number; collapsed: number }> {
    return khugepagedScan(this, max);
  }
  async collapse(pid: number | string, addr: number): Promise<CollapseResult> {
    const p = this.process(pid);
    sys.checkNumber('addr', addr);
    await p.mm.mmapLock.write('collapse');
    try {
      return await collapseHugePage(this, p.mm, Math.floor(addr / PMD_SIZE) * PMD_SIZE, 'khugepaged', false);
    } finally {
      p.mm.mmapLock.writeUnlock('collapse');
    }
  }
  async splitThp(pid: number | string, addr: number): Promise<boolean> {
    const p = this.process(pid);
    sys.checkNumber('addr', addr);
    await p.mm.mmapLock.read('split');
    try {
      return await splitThpAt(this, p.mm, addr);
    } finally {
      p.mm.mmapLock.readUnlock('split');
    }
  }
  async writeback(): Promise<WritebackResult> {
    return writebackAll(this);
  }
  /** Chooses a victim (or takes `pid`), reaps it, and lets it exit. */
  async oomKill(pid?: number | string): Promise<boolean> {
    return oomKill(this, 'requested', (p) => this.exitProcess(p), pid === undefined ? undefined : this.process(pid));
  }
  /** Runs the OOM reaper on a process without killing it (for experiments with refusals). */
  async oomReap(pid: number | string): Promise<ReapResult> {
    return oomReap(this, this.process(pid));
  }
  audit(): AuditReport {
    return audit(this);
  }

  // ---- device-facing (HMM) ----------------------------------------------------------------------

  /** hmm_range_fault under the mmap read lock (the caller is a device driver). */
  async rangeFault(pid: number | string, r: HmmRange): Promise<number> {
    const p = this.process(pid);
    this.checkSpan(r.start, r.end);
    await p.mm.mmapLock.read('hmm_range_fault');
    try {
      return await hmmRangeFault(this, p.mm, r);
    } finally {
      p.mm.mmapLock.readUnlock('hmm_range_fault');
    }
  }
  async migrateToDevice(pid: number | string, start: number, end: number, owner: number, opts?: { hugeAllocFails?: boolean }): Promise<MigrateResult> {
    const p = this.process(pid);
    this.checkSpan(start, end);
    this.checkOwner(owner);
    await p.mm.mmapLock.read('migrate_vma');
    try {
      return await migrateToDevice(this, p.mm, start, end, owner, opts);
    } finally {
      p.mm.mmapLock.readUnlock('migrate_vma');
    }
  }
  async migrateToSystem(pid: number | string, start: number, end: number, owner: number): Promise<MigrateResult> {
    const p = this.process(pid);
    this.checkSpan(start, end);
    this.checkOwner(owner);
    await p.mm.mmapLock.read('migrate_vma');
    try {
      return await migrateToSystem(this, p.mm, start, end, owner, 'migrate');
    } finally {
      p.mm.mmapLock.readUnlock('migrate_vma');
    }
  }
  /**
   * get_user_pages for a device that mirrors without an interval notifier (KVM's hva_to_pfn):
   * faults the page in (for writing if asked) and returns the frame, its generation and the clock
   * tick at which the entry was read.
   */
  async gup(pid: number | string, va: number, write: boolean): Promise<{ pfn: number; gen: number; tick: number; write: boolean; huge: boolean }> {
    const p = this.process(pid);
    this.checkSpan(Math.floor(va / PAGE_SIZE) * PAGE_SIZE, Math.floor(va / PAGE_SIZE) * PAGE_SIZE + PAGE_SIZE);
    const mm = p.mm;
    await mm.mmapLock.read('gup');
    try {
      for (let tries = 0; tries < 64; tries++) {
        if (mm.exiting) throw kerr('EFAULT', 'the process is exiting');
        const idx = mm.pt.leafIndex(va);
        const e = idx >= 0 ? mm.pt.load(idx) : 0;
        if (e & PTE.PRESENT && (!write || e & PTE.WRITE)) {
          const huge = (e & PTE.HUGE) !== 0;
          const head = ptePfn(e);
          const pfn = head === ZERO_PFN ? ZERO_PFN : huge ? head + Math.floor((va % PMD_SIZE) / PAGE_SIZE) : head;
          mm.pt.store(idx, e | PTE.YOUNG | (write ? PTE.DIRTY | PTE.SOFT_DIRTY : 0));
          return { pfn, gen: this.mem.generation(pfn), tick: this.mem.tick(), write: (e & PTE.WRITE) !== 0, huge };
        }
        try {
          await handleMmFault(this, mm, va, { write, remote: true });
        } catch (err) {
          if ((err as DevmirrorError).code === 'ENOMEM') throw err;
          throw kerr('EFAULT', (err as Error).message);
        }
      }
      throw kerr('EAGAIN', 'gup kept racing invalidations');
    } finally {
      mm.mmapLock.readUnlock('gup');
    }
  }

  /**
   * A device is gone (stopped, evicted, disconnected): forget its pagemap hooks and move every page
   * of its memory back to RAM. Never throws: teardown must complete.
   */
  async releaseDevice(owner: number): Promise<void> {
    this.pagemaps.delete(owner);
    await this.evictDeviceMemory(owner).catch(() => 0);
  }

  async evictDeviceMemory(owner: number): Promise<number> {
    this.checkOwner(owner);
    return evictDeviceMemory(this, owner);
  }
  async makeDeviceExclusive(pid: number | string, va: number, owner: number): Promise<{ pfn: number; tick: number }> {
    const p = this.process(pid);
    this.checkSpan(va, va + PAGE_SIZE);
    this.checkOwner(owner);
    await p.mm.mmapLock.read('make_device_exclusive');
    try {
      return await makeDeviceExclusive(this, p.mm, va, owner);
    } finally {
      p.mm.mmapLock.readUnlock('make_device_exclusive');
    }
  }
}

export { PROT };

export function pageAlignDown(a: number): number {
  return Math.floor(a / PAGE_SIZE) * PAGE_SIZE;
}
export function pageAlignUp(a: number): number {
  return Math.ceil(a / PAGE_SIZE) * PAGE_SIZE;
}
export function isPageAligned(a: number): boolean {
  return Number.isSafeInteger(a) && a % PAGE_SIZE === 0;
}
