/**
 * Emulated physical memory: RAM frames split between NUMA nodes, a pool of device-memory frames,
 * and their metadata, all in SharedArrayBuffers so device workers can read page contents and frame
 * generations directly.
 *
 * Threading: only the kernel thread allocates, frees and changes refcounts/flags. Other threads only
 * read (Atomics.load) metadata and read/write page contents of frames they were granted. The
 * generation word is the one cross-thread contract here: it is bumped with Atomics.add *before* a
 * freed frame goes back on a free list and again when it is handed out, so a reader that loads the
 * generation after touching a frame and finds it equal to the one it was granted knows the frame
 * was not recycled in between.
 */
import { alignedSab } from '../lib/aligned-sab.js';
import { DevmirrorError, invariant } from '../errors.js';
import {
  FF,
  FM,
  FRAME_META_WORDS,
  HDR,
  HDR_WORDS,
  LAYOUT_VERSION,
  MM_SLOT_WORDS,
  PAGE_SIZE,
  PMD_PAGES,
  PTE_MAX_PFN,
} from './layout.js';

export interface PhysMemConfig {
  /** RAM frames (4 KiB each). */
  ramFrames: number;
  /** Device-memory frames (VRAM) for pages migrated to devices. */
  deviceFrames: number;
  numaNodes: number;
  swapSlots: number;
  maxMm: number;
  bootId?: number;
}

export interface SharedMemoryHandles {
  meta: SharedArrayBuffer;
  data: SharedArrayBuffer;
  swap: SharedArrayBuffer;
}

/** Frame 0 is the zero page: never freed, never written. */
export const ZERO_PFN = 0;

export class PhysicalMemory {
  readonly meta: Int32Array;
  readonly data: Uint8Array;
  /** The same bytes as `data`, as 32-bit words (page-table entries live here). */
  readonly dataWords: Int32Array;
  readonly handles: SharedMemoryHandles;
  readonly ramFrames: number;
  readonly deviceFrames: number;
  readonly totalFrames: number;
  readonly numaNodes: number;
  readonly framesPerNode: number;
  readonly metaBase = HDR_WORDS;
  readonly mmBase: number;
  readonly maxMm: number;

  // Free lists: one doubly linked list per node (and one for device memory), kernel-thread only.
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly heads: Int32Array;
  private readonly freeCount: Int32Array;
  private deviceHead = -1;
  private deviceFree = 0;
  /** Free frames per 2 MiB block of RAM (huge-page allocation and compaction). */
  readonly blockFree: Int32Array;
  private quarantined = 0;

  constructor(cfg: PhysMemConfig) {
    const { ramFrames, deviceFrames, numaNodes, maxMm } = cfg;
    if (!Number.isInteger(ramFrames) || ramFrames < PMD_PAGES * numaNodes) {
      throw new DevmirrorError('DM_ERR_CONFIG', `memory must hold at least ${PMD_PAGES * numaNodes} frames`);
    }
    if (ramFrames % PMD_PAGES !== 0) {
      throw new DevmirrorError('DM_ERR_CONFIG', 'memory size must be a multiple of 2 MiB');
    }
    if (ramFrames + deviceFrames > PTE_MAX_PFN) {
      throw new DevmirrorError('DM_ERR_CONFIG', `at most ${PTE_MAX_PFN} frames fit a page-table entry`);
    }
    if (!Number.isInteger(numaNodes) || numaNodes < 1 || numaNodes > 64) {
      throw new DevmirrorError('DM_ERR_CONFIG', 'NUMA nodes must be between 1 and 64');
    }
    this.ramFrames = ramFrames;
    this.deviceFrames = deviceFrames;
    this.totalFrames = ramFrames + deviceFrames;
    this.numaNodes = numaNodes;
    // Nodes get whole 2 MiB blocks so huge pages never straddle nodes.
    const blocks = ramFrames / PMD_PAGES;
    this.framesPerNode = Math.floor(blocks / numaNodes) * PMD_PAGES;
    this.maxMm = maxMm;
    this.mmBase = HDR_WORDS + this.totalFrames * FRAME_META_WORDS;
    // Line-aligned (src/lib/aligned-sab.ts): the header's words are grouped by who writes them.
    const metaWords = this.mmBase + maxMm * MM_SLOT_WORDS;
    const metaSab = alignedSab(metaWords * 4);
    const dataSab = new SharedArrayBuffer(this.totalFrames * PAGE_SIZE);
    const swapSab = new SharedArrayBuffer(Math.max(1, cfg.swapSlots) * PAGE_SIZE);
    this.handles = { meta: metaSab, data: dataSab, swap: swapSab };
    this.meta = new Int32Array(metaSab, 0, metaWords);
    this.data = new Uint8Array(dataSab);
    this.dataWords = new Int32Array(dataSab);
    this.next = new Int32Array(this.totalFrames).fill(-1);
    this.prev = new Int32Array(this.totalFrames).fill(-1);
    this.heads = new Int32Array(numaNodes).fill(-1);
    this.freeCount = new Int32Array(numaNodes);
    this.blockFree = new Int32Array(blocks);

    const m = this.meta;
    m[HDR.RAM_FRAMES] = ramFrames;
    m[HDR.DEVICE_FRAMES] = deviceFrames;
    m[HDR.NUMA_NODES] = numaNodes;
    m[HDR.ZERO_PFN] = ZERO_PFN;
    m[HDR.MAX_MM] = maxMm;
    m[HDR.FRAME_META_OFFSET] = HDR_WORDS;
    m[HDR.MM_TABLE_OFFSET] = this.mmBase;
    m[HDR.SWAP_SLOTS] = cfg.swapSlots;
    m[HDR.BOOT_ID] = (cfg.bootId ?? 0) & 0x7fffffff;

    // Free lists are built from the top down so low frames are handed out first.
    for (let pfn = this.totalFrames - 1; pfn >= 0; pfn--) {
      this.setMeta(pfn, FM.HEAD, pfn);
      if (pfn < ramFrames) {
        this.setMeta(pfn, FM.NODE, this.nodeOfPfn(pfn));
        if (pfn === ZERO_PFN) {
          this.setMeta(pfn, FM.FLAGS, FF.RESERVED | FF.ZERO);
          this.setMeta(pfn, FM.REFCOUNT, 1);
          continue;
        }
        this.setMeta(pfn, FM.FLAGS, FF.FREE);
        this.linkFree(pfn);
      } else {
        this.setMeta(pfn, FM.NODE, -1);
        this.setMeta(pfn, FM.FLAGS, FF.FREE | FF.DEVICE);
        this.next[pfn] = this.deviceHead;
        if (this.deviceHead >= 0) this.prev[this.deviceHead] = pfn;
        this.deviceHead = pfn;
        this.deviceFree++;
      }
    }
    this.publishCounts();
    // Written last: a reader that sees the version sees an initialised header (Atomics.store is
    // sequentially consistent, so every plain store above is visible to a reader that loads it).
    Atomics.store(m, HDR.LAYOUT_VERSION, LAYOUT_VERSION);
  }

  nodeOfPfn(pfn: number): number {
    if (pfn >= this.ramFrames) return -1;
    return Math.min(this.numaNodes - 1, Math.floor(pfn / this.framesPerNode));
  }

  isDevicePfn(pfn: number): boolean {
    return pfn >= this.ramFrames && pfn < this.totalFrames;
  }

  // ---- metadata access -------------------------------------------------------------------------

  metaIndex(pfn: number, word: number): number {
    return this.metaBase + pfn * FRAME_META_WORDS + word;
  }
  getMeta(pfn: number, word: number): number {
    return Atomics.load(this.meta, this.metaIndex(pfn, word));
  }
  setMeta(pfn: number, word: number, v: number): void {
    Atomics.store(this.meta, this.metaIndex(pfn, word), v);
  }
  flags(pfn: number): number {
    return this.getMeta(pfn, FM.FLAGS);
  }
  hasFlag(pfn: number, bit: number): boolean {
    return (this.flags(pfn) & bit) !== 0;
  }
  setFlags(pfn: number, bits: number): void {
    Atomics.or(this.meta, this.metaIndex(pfn, FM.FLAGS), bits);
  }
  clearFlags(pfn: number, bits: number): void {
    Atomics.and(this.meta, this.metaIndex(pfn, FM.FLAGS), ~bits);
  }
  refcount(pfn: number): number {
    return this.getMeta(pfn, FM.REFCOUNT);
  }
  mapcount(pfn: number): number {
    return this.getMeta(pfn, FM.MAPCOUNT);
  }
  generation(pfn: number): number {
    return this.getMeta(pfn, FM.GENERATION);
  }
  headOf(pfn: number): number {
    return this.getMeta(pfn, FM.HEAD);
  }
  isCompound(pfn: number): boolean {
    return this.hasFlag(pfn, FF.COMPOUND);
  }

  // ---- free lists ------------------------------------------------------------------------------

  private linkFree(pfn: number): void {
    const node = this.nodeOfPfn(pfn);
    const h = this.heads[node];
    this.next[pfn] = h;
    this.prev[pfn] = -1;
    if (h >= 0) this.prev[h] = pfn;
    this.heads[node] = pfn;
    this.freeCount[node]++;
    this.blockFree[Math.floor(pfn / PMD_PAGES)]++;
  }

  private unlinkFree(pfn: number): void {
    const node = this.nodeOfPfn(pfn);
    const n = this.next[pfn];
    const p = this.prev[pfn];
    if (p >= 0) this.next[p] = n;
    else this.heads[node] = n;
    if (n >= 0) this.prev[n] = p;
    this.next[pfn] = -1;
    this.prev[pfn] = -1;
    this.freeCount[node]--;
    this.blockFree[Math.floor(pfn / PMD_PAGES)]--;
  }

  private publishCounts(): void {
    let free = 0;
    for (let i = 0; i < this.numaNodes; i++) free += this.freeCount[i];
    Atomics.store(this.meta, HDR.FREE_RAM, free);
    Atomics.store(this.meta, HDR.FREE_DEVICE, this.deviceFree);
  }

  freeFrames(node?: number): number {
    if (node !== undefined) return this.freeCount[node];
    let free = 0;
    for (let i = 0; i < this.numaNodes; i++) free += this.freeCount[i];
    return free;
  }
  freeDeviceFrames(): number {
    return this.deviceFree;
  }
  quarantinedFrames(): number {
    return this.quarantined;
  }

  /** Hands out `pfn` (already unlinked): refcount 1, fresh generation, the given flags. */
  private handOut(pfn: number, flags: number): void {
    // Generation first: a device still holding an old grant must see a new value before the frame
    // can hold someone else's data (the frame was zeroed or will be overwritten after this).
    Atomics.add(this.meta, this.metaIndex(pfn, FM.GENERATION), 1);
    this.setMeta(pfn, FM.FLAGS, flags);
    this.setMeta(pfn, FM.REFCOUNT, 1);
    this.setMeta(pfn, FM.MAPCOUNT, 0);
    this.setMeta(pfn, FM.OWNER, 0);
    this.setMeta(pfn, FM.MAPPING, 0);
    this.setMeta(pfn, FM.HEAD, pfn);
  }

  /**
   * Takes one RAM frame without reclaiming (the kernel's allocator wraps this with reclaim, swap
   * and the OOM killer). Prefers `node`, falls back to the other nodes unless `strict`.
   * Returns -1 when no frame is free.
   */
  tryAlloc(node = 0, strict = false, flags = 0, zero = true): number {
    let n = node >= 0 && node < this.numaNodes ? node : 0;
    let pfn = this.heads[n];
    if (pfn < 0 && !strict) {
      for (let i = 1; i < this.numaNodes && pfn < 0; i++) {
        n = (node + i) % this.numaNodes;
        pfn = this.heads[n];
      }
    }
    if (pfn < 0) return -1;
    this.unlinkFree(pfn);
    this.handOut(pfn, flags);
    if (zero) this.zeroPage(pfn);
    this.publishCounts();
    return pfn;
  }

  /** Takes 512 contiguous, aligned RAM frames as one folio; returns the head pfn or -1. */
  tryAllocHuge(node = 0, strict = false, flags = 0, zero = true): number {
    const order: number[] = [node];
    if (!strict) for (let i = 1; i < this.numaNodes; i++) order.push((node + i) % this.numaNodes);
    for (const n of order) {
      if (n < 0 || n >= this.numaNodes) continue;
      const first = (n * this.framesPerNode) / PMD_PAGES;
      const last = n === this.numaNodes - 1 ? this.blockFree.length : first + this.framesPerNode / PMD_PAGES;
      for (let b = first; b < last; b++) {
        if (this.blockFree[b] !== PMD_PAGES) continue;
        const head = b * PMD_PAGES;
        for (let i = 0; i < PMD_PAGES; i++) {
          this.unlinkFree(head + i);
          this.handOut(head + i, flags | FF.COMPOUND);
          this.setMeta(head + i, FM.HEAD, head);
          if (zero) this.zeroPage(head + i);
        }
        this.publishCounts();
        return head;
      }
    }
    return -1;
  }

  /** Takes a specific free RAM frame (compaction's migration target). */
  tryAllocExact(pfn: number, flags = 0): boolean {
    if (pfn >= this.ramFrames || !this.hasFlag(pfn, FF.FREE)) return false;
    this.unlinkFree(pfn);
    this.handOut(pfn, flags);
    this.publishCounts();
    return true;
  }

  tryAllocDevice(owner: number): number {
    const pfn = this.deviceHead;
    if (pfn < 0) return -1;
    this.deviceHead = this.next[pfn];
    if (this.deviceHead >= 0) this.prev[this.deviceHead] = -1;
    this.next[pfn] = -1;
    this.deviceFree--;
    this.handOut(pfn, FF.DEVICE);
    this.setMeta(pfn, FM.OWNER, owner);
    this.zeroPage(pfn);
    this.publishCounts();
    return pfn;
  }

  private unlinkDevice(pfn: number): void {
    const n = this.next[pfn];
    const p = this.prev[pfn];
    if (p >= 0) this.next[p] = n;
    else this.deviceHead = n;
    if (n >= 0) this.prev[n] = p;
    this.next[pfn] = this.prev[pfn] = -1;
    this.deviceFree--;
  }

  /**
   * Takes 512 contiguous, aligned device-memory frames as one folio (a device THP); returns the head
   * or -1.
   */
  tryAllocDeviceHuge(owner: number): number {
    for (let head = this.ramFrames; head + PMD_PAGES <= this.totalFrames; head += PMD_PAGES) {
      let free = true;
      for (let i = 0; i < PMD_PAGES && free; i++) free = this.hasFlag(head + i, FF.FREE);
      if (!free) continue;
      for (let i = 0; i < PMD_PAGES; i++) {
        const pfn = head + i;
        this.unlinkDevice(pfn);
        this.handOut(pfn, FF.DEVICE | FF.COMPOUND);
        this.setMeta(pfn, FM.HEAD, head);
        this.setMeta(pfn, FM.OWNER, owner);
      }
      this.publishCounts();
      return head;
    }
    return -1;
  }

  /** Takes a reference (folio_get). */
  get(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    invariant(!this.hasFlag(pfn, FF.FREE), `get on free frame ${pfn}`);
    Atomics.add(this.meta, this.metaIndex(pfn, FM.REFCOUNT), 1);
  }

  /** Drops a reference (folio_put); frees the frame at zero. Returns true if it was freed. */
  put(pfn: number): boolean {
    if (pfn === ZERO_PFN) return false;
    const idx = this.metaIndex(pfn, FM.REFCOUNT);
    const before = Atomics.sub(this.meta, idx, 1);
    invariant(before > 0, `refcount underflow on frame ${pfn}`);
    if (before !== 1) return false;
    this.release(pfn);
    return true;
  }

  /** Returns a frame whose refcount reached zero to its free list. */
  private release(pfn: number): void {
    const flags = this.flags(pfn);
    invariant((flags & FF.FREE) === 0, `double free of frame ${pfn}`);
    invariant(this.mapcount(pfn) === 0, `frame ${pfn} freed while still mapped`);
    if (flags & FF.COMPOUND) this.dissolveFolio(this.headOf(pfn));
    Atomics.add(this.meta, this.metaIndex(pfn, FM.GENERATION), 1);
    if (flags & FF.QUARANTINED) {
      // A device that could not be stopped may still write here: never hand it out again.
      this.setMeta(pfn, FM.FLAGS, FF.QUARANTINED | (flags & FF.DEVICE));
      this.quarantined++;
      return;
    }
    if (pfn >= this.ramFrames) {
      this.setMeta(pfn, FM.FLAGS, FF.FREE | FF.DEVICE);
      this.setMeta(pfn, FM.OWNER, 0);
      this.next[pfn] = this.deviceHead;
      this.prev[pfn] = -1;
      if (this.deviceHead >= 0) this.prev[this.deviceHead] = pfn;
      this.deviceHead = pfn;
      this.deviceFree++;
    } else {
      this.setMeta(pfn, FM.FLAGS, FF.FREE);
      this.setMeta(pfn, FM.HEAD, pfn);
      this.linkFree(pfn);
    }
    this.publishCounts();
  }

  /**
   * Splits a huge folio into 512 independent frames (split_huge_page without the unmapping: the
   * caller has already split every PMD mapping of it). Each frame keeps its own refcount.
   */
  dissolveFolio(head: number): void {
    for (let i = 0; i < PMD_PAGES; i++) {
      const pfn = head + i;
      if (this.headOf(pfn) !== head || !this.hasFlag(pfn, FF.COMPOUND)) continue;
      this.clearFlags(pfn, FF.COMPOUND);
      this.setMeta(pfn, FM.HEAD, pfn);
    }
  }

  /** True when all 512 frames from `head` still form one folio. */
  folioIntact(head: number): boolean {
    if (head % PMD_PAGES !== 0) return false;
    for (let i = 0; i < PMD_PAGES; i++) {
      if (!this.hasFlag(head + i, FF.COMPOUND) || this.headOf(head + i) !== head) return false;
    }
    return true;
  }

  quarantine(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    this.setFlags(pfn, FF.QUARANTINED);
  }

  addMapcount(pfn: number, delta: number): void {
    if (pfn === ZERO_PFN) return;
    const before = Atomics.add(this.meta, this.metaIndex(pfn, FM.MAPCOUNT), delta);
    invariant(before + delta >= 0, `mapcount underflow on frame ${pfn}`);
  }

  // ---- page contents ---------------------------------------------------------------------------

  page(pfn: number): Uint8Array {
    return this.data.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
  }
  zeroPage(pfn: number): void {
    this.data.fill(0, pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
  }
  copyPage(dst: number, src: number): void {
    this.data.copyWithin(dst * PAGE_SIZE, src * PAGE_SIZE, (src + 1) * PAGE_SIZE);
  }
  pagesEqual(a: number, b: number): boolean {
    const wa = a * (PAGE_SIZE / 4);
    const wb = b * (PAGE_SIZE / 4);
    const w = this.dataWords;
    for (let i = 0; i < PAGE_SIZE / 4; i++) if (w[wa + i] !== w[wb + i]) return false;
    return true;
  }
  pageIsZero(pfn: number): boolean {
    const base = pfn * (PAGE_SIZE / 4);
    const w = this.dataWords;
    for (let i = 0; i < PAGE_SIZE / 4; i++) if (w[base + i] !== 0) return false;
    return true;
  }

  /**
   * Global event clock tick (see HDR.CLOCK). Only the kernel thread advances the clock (devices'
   * sanitizers only read it), so this is a plain read and store of its own last value: an
   * Atomics.add here was a locked instruction, a full barrier, twice per invalidation round. The
   * ticks reach other threads inside what the kernel publishes after them (a call or end slot
   * before its SEQ, a postMessage reply), which orders them.
   */
  tick(): number {
    const v = (this.meta[HDR.CLOCK] + 1) | 0;
    this.meta[HDR.CLOCK] = v;
    return v;
  }

  /** Consistency of the allocator's own books; throws on the first problem. */
  auditFreeLists(): { free: number; used: number; reserved: number; quarantined: number; deviceFree: number } {
    let free = 0;
    let reserved = 0;
    let quarantined = 0;
    let used = 0;
    const onList = new Uint8Array(this.totalFrames);
    for (let n = 0; n < this.numaNodes; n++) {
      let count = 0;
      for (let p = this.heads[n]; p >= 0; p = this.next[p]) {
        invariant(onList[p] === 0, `frame ${p} twice on a free list`);
        onList[p] = 1;
        count++;
      }
      invariant(count === this.freeCount[n], `node ${n} free count ${this.freeCount[n]} != list ${count}`);
    }
    let devCount = 0;
    for (let p = this.deviceHead; p >= 0; p = this.next[p]) {
      onList[p] = 1;
      devCount++;
    }
    invariant(devCount === this.deviceFree, `device free count mismatch`);
    for (let pfn = 0; pfn < this.totalFrames; pfn++) {
      const f = this.flags(pfn);
      if (f & FF.FREE) {
        invariant(onList[pfn] === 1, `frame ${pfn} marked free but not on a list`);
        invariant(this.refcount(pfn) === 0 || pfn >= this.ramFrames, `free frame ${pfn} has refs`);
        if (pfn < this.ramFrames) free++;
      } else {
        invariant(onList[pfn] === 0, `frame ${pfn} on a free list but not marked free`);
        if (f & FF.RESERVED) reserved++;
        else if (f & FF.QUARANTINED && this.refcount(pfn) === 0) quarantined++;
        else if (pfn < this.ramFrames) used++;
      }
    }
    return { free, used, reserved, quarantined, deviceFree: this.deviceFree };
  }
}
