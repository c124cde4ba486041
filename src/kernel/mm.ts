/**
 * An address space (`struct mm_struct`): VMAs, the page table, the mmap lock, the notifier
 * subscriptions and the counters. Published to other threads through its mm-table slot (layout.ts
 * MS.*): the page-table root, invalidateSeq and active-range count.
 */
import { MS, MM_STATE, mmSlotIndex } from './layout.js';
import { RwLock } from '../lib/locks.js';
import { PageTable } from './page-table.js';
import type { PhysicalMemory } from './phys-mem.js';
import { VmaList } from './vma.js';
import { MmuNotifierSubscriptions } from '../notifier/subscriptions.js';

export const MMAP_BASE = 0x7f0000000000;
export const MMAP_MIN_ADDR = 0x10000;
export const BRK_BASE = 0x555555554000;

export interface MmCounters {
  /** Page faults handled for the CPU (minor + major). */
  faults: number;
  majorFaults: number;
  cowFaults: number;
  /** Faults raised on behalf of a device (hmm_range_fault with FAULT_FLAG_REMOTE). */
  remoteFaults: number;
  numaFaults: number;
  swapIns: number;
}

export class MM {
  readonly vmas = new VmaList();
  readonly mmapLock: RwLock;
  readonly notifier: MmuNotifierSubscriptions;
  readonly pt: PageTable;
  brkStart = BRK_BASE;
  brk = BRK_BASE;
  /** mm_users: the process plus transient mmget() holders. Zero means exit_mmap ran. */
  users = 1;
  /** exit_mmap has started: faults fail, no new subscriptions. */
  exiting = false;
  dead = false;
  /** The OOM reaper has finished with this mm (MMF_OOM_SKIP). */
  oomSkip = false;
  readonly counters: MmCounters = { faults: 0, majorFaults: 0, cowFaults: 0, remoteFaults: 0, numaFaults: 0, swapIns: 0 };
  /** Resident pages (anon + file + shmem) mapped by this mm. */
  rss = 0;
  swapEntries = 0;
  /** Where NUMA balancing scanning resumes (task_numa_work's scan offset). */
  numaScanOffset = 0;

  constructor(
    readonly pid: number,
    readonly slot: number,
    private readonly mem: PhysicalMemory,
    pgdPfn: number,
  ) {
    this.mmapLock = new RwLock(`mmap_lock[${pid}]`);
    this.pt = new PageTable(mem, pgdPfn, slot);
    this.notifier = new MmuNotifierSubscriptions(pid);
    this.slotStore(MS.PID, pid);
    this.slotStore(MS.PGD_PFN, pgdPfn);
    // The notifier core stores its seq and active count there itself (plain stores, this thread).
    this.notifier.publishTo(mem.meta, this.slotIndex(MS.INVALIDATE_SEQ), this.slotIndex(MS.ACTIVE_RANGES));
    this.slotStore(MS.RSS, 0);
    Atomics.add(mem.meta, this.slotIndex(MS.SLOT_GEN), 1);
    // State last: a reader that sees LIVE sees the root and seq stored above.
    this.slotStore(MS.STATE, MM_STATE.LIVE);
  }

  slotIndex(word: number): number {
    return mmSlotIndex(this.mem.mmBase, this.slot, word);
  }
  slotStore(word: number, v: number): void {
    Atomics.store(this.mem.meta, this.slotIndex(word), v);
  }

  addRss(delta: number): void {
    this.rss += delta;
    this.slotStore(MS.RSS, this.rss);
  }

  markExiting(): void {
    this.exiting = true;
    this.slotStore(MS.STATE, MM_STATE.EXITING);
  }

  /** Frees the slot; the caller has freed every page-table page. */
  retireSlot(): void {
    this.dead = true;
    this.slotStore(MS.STATE, MM_STATE.FREE);
    // Readers that raced the teardown retry on PT_GEN and then see FREE.
    Atomics.add(this.mem.meta, this.slotIndex(MS.PT_GEN), 1);
  }
}
