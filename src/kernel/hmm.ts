/**
 * hmm_range_fault (mm/hmm.c): snapshot or fault a range of an address space into pfn words.
 *
 * pfn words here are 32-bit: the kernel's 64-bit layout (VALID bit 63, WRITE 62, ERROR 61, map order
 * in the bits below) is produced by the codec at the protocol boundary. On input a word is a request
 * (REQ_FAULT = VALID, REQ_WRITE = WRITE), combined as (input & pfnFlagsMask) | defaultFlags.
 *
 * Faithful details: a fault request faults every page from the first one needing it to the end of
 * the current 2 MiB chunk, then restarts the walk internally; EBUSY reaches the caller only when
 * the interval subscription saw an invalidation (checkRetry), which a COW write fault on a zero or
 * shared page causes itself (one extra loop for the driver); device-private pages of
 * `devPrivateOwner` are reported valid and never faulted; protnone entries are reported without
 * VALID; a write request on a VMA without write permission is EPERM; no VMA, or an unreadable one,
 * is ERROR when nothing is requested and EFAULT when a fault is.
 *
 * The caller holds the mmap lock for reading.
 */
import { FM, PAGE_SIZE, PMD_PAGES, PMD_SIZE, PTE } from './layout.js';
import type { Kernel } from './kernel.js';
import type { MM } from './mm.js';
import { ZERO_PFN } from './phys-mem.js';
import { ptePfn } from './pte.js';
import type { Vma } from './vma.js';
import { handleMmFault } from './fault.js';
import type { MmuIntervalNotifier } from '../notifier/subscriptions.js';

export const HMM_PFN = {
  VALID: 0x80000000,
  WRITE: 0x40000000,
  ERROR: 0x20000000,
  ORDER_SHIFT: 24,
  ORDER_MASK: 0x1f000000,
  PFN_MASK: 0x00ffffff,
  /** Input: the page must end up valid. */
  REQ_FAULT: 0x80000000,
  /** Input: the page must end up writable. */
  REQ_WRITE: 0x40000000,
} as const;

export const ERRNO = { EPERM: -1, ENOENT: -2, ENOMEM: -12, EFAULT: -14, EBUSY: -16, EINVAL: -22 } as const;

export function hmmPfnToPfn(w: number): number {
  return w & HMM_PFN.PFN_MASK;
}
export function hmmPfnOrder(w: number): number {
  return (w & HMM_PFN.ORDER_MASK) >>> HMM_PFN.ORDER_SHIFT;
}

export interface HmmRange {
  notifier: MmuIntervalNotifier;
  notifierSeq: number;
  start: number;
  end: number;
  /** One word per page: requests in, results out. */
  hmmPfns: Uint32Array;
  defaultFlags: number;
  pfnFlagsMask: number;
  devPrivateOwner: number | null;
  /**
   * Output: the global clock tick at the start of the walk that produced the result. Every page
   * table entry the result reflects was read after this tick, synchronously (the sanitizer orders
   * grants against invalidations with it).
   */
  tick?: number;
}

const NEED_FAULT = 1;
const NEED_WRITE_FAULT = 2;
const PMD_ORDER = 9;

/** Internal "restart the walk from `last`" signal. */
const RESTART = 1;

class Walk {
  last: number;
  constructor(
    readonly k: Kernel,
    readonly mm: MM,
    readonly r: HmmRange,
  ) {
    this.last = r.start;
  }

  idx(addr: number): number {
    return (addr - this.r.start) / PAGE_SIZE;
  }

  needFault(input: number, cpu: number): number {
    let req = (input & this.r.pfnFlagsMask) | this.r.defaultFlags;
    req >>>= 0;
    if (!(req & HMM_PFN.REQ_FAULT)) return 0;
    if (req & HMM_PFN.REQ_WRITE && !(cpu & HMM_PFN.WRITE)) return NEED_FAULT | NEED_WRITE_FAULT;
    if (!(cpu & HMM_PFN.VALID)) return NEED_FAULT;
    return 0;
  }

  rangeNeedFault(start: number, end: number, cpu: number): number {
    if (!((this.r.defaultFlags | this.r.pfnFlagsMask) & HMM_PFN.REQ_FAULT)) return 0;
    let required = 0;
    for (let a = start; a < end; a += PAGE_SIZE) {
      required |= this.needFault(this.r.hmmPfns[this.idx(a)], cpu);
      if (required === (NEED_FAULT | NEED_WRITE_FAULT)) break;
    }
    return required;
  }

  fill(start: number, end: number, value: number): void {
    for (let a = start; a < end; a += PAGE_SIZE) this.r.hmmPfns[this.idx(a)] = value;
  }

  /** hmm_vma_fault: fault every page of [addr, end), then restart the walk. */
  async fault(vma: Vma, addr: number, end: number, required: number): Promise<number> {
    this.last = addr;
    let write = false;
    if (required & NEED_WRITE_FAULT) {
      if (!vma.writable) return ERRNO.EPERM;
      write = true;
    }
    for (let a = addr; a < end; a += PAGE_SIZE) {
      try {
        await handleMmFault(this.k, this.mm, a, { write, remote: true });
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOMEM') return ERRNO.ENOMEM;
        return ERRNO.EFAULT;
      }
    }
    return RESTART;
  }

  async run(): Promise<number> {
    const { r, mm } = this;
    // A pass that returns 0 runs without awaiting (faults and waits restart the walk), so every
    // entry it reads is read after this tick.
    r.tick = this.k.mem.tick();
    let addr = this.last;
    while (addr < r.end) {
      const vma = mm.vmas.findFrom(addr);
      if (!vma || vma.start >= r.end) return this.noVma(addr, r.end);
      if (vma.start > addr) {
        const ret = this.noVma(addr, vma.start);
        if (ret) return ret;
        addr = vma.start;
      }
      const vend = Math.min(vma.end, r.end);
      if (!vma.readable) {
        // hmm_vma_walk_test: cannot be mirrored.
        if (this.rangeNeedFault(addr, vend, 0)) return ERRNO.EFAULT;
        this.fill(addr, vend, HMM_PFN.ERROR);
        addr = vend;
        continue;
      }
      while (addr < vend) {
        const chunkEnd = Math.min(vend, (Math.floor(addr / PMD_SIZE) + 1) * PMD_SIZE);
        const ret = await this.pmdChunk(vma, addr, chunkEnd);
        if (ret) return ret;
        addr = chunkEnd;
      }
    }
    return 0;
  }

  noVma(addr: number, end: number): number {
    if (this.rangeNeedFault(addr, end, 0)) return ERRNO.EFAULT;
    this.fill(addr, end, HMM_PFN.ERROR);
    return 0;
  }

  async pmdChunk(vma: Vma, addr: number, end: number): Promise<number> {
    const { k, mm, r } = this;
    const pmdIdx = mm.pt.pmdIndex(addr);
    const pmd = pmdIdx < 0 ? 0 : mm.pt.load(pmdIdx);
    if (pmd === 0) {
      const required = this.rangeNeedFault(addr, end, 0);
      if (required) return this.fault(vma, addr, end, required);
      this.fill(addr, end, 0);
      return 0;
    }
    if (pmd & PTE.HUGE) {
      const head = ptePfn(pmd);
      if (pmd & PTE.DEVICE_PRIVATE && r.devPrivateOwner !== null && k.mem.getMeta(head, FM.OWNER) === r.devPrivateOwner) {
        // The caller's own device THP: valid, with its map order, never faulted.
        const cpu = (HMM_PFN.VALID | (pmd & PTE.WRITE ? HMM_PFN.WRITE : 0) | (PMD_ORDER << HMM_PFN.ORDER_SHIFT)) >>> 0;
        const haddr = Math.floor(addr / PMD_SIZE) * PMD_SIZE;
        for (let a = addr; a < end; a += PAGE_SIZE) r.hmmPfns[this.idx(a)] = ((head + (a - haddr) / PAGE_SIZE) | cpu) >>> 0;
        return 0;
      }
      if (pmd & (PTE.MIGRATION | PTE.DEVICE_PRIVATE | PTE.SWAP)) {
        if (!this.rangeNeedFault(addr, end, 0)) {
          this.fill(addr, end, 0);
          return 0;
        }
        if (pmd & PTE.MIGRATION) {
          await k.waitFolio(ptePfn(pmd));
          this.last = addr;
          return RESTART;
        }
        return this.fault(vma, addr, end, this.rangeNeedFault(addr, end, 0));
      }
      const cpu =
        pmd & PTE.PROTNONE
          ? 0
          : (HMM_PFN.VALID | (pmd & PTE.WRITE ? HMM_PFN.WRITE : 0) | (PMD_ORDER << HMM_PFN.ORDER_SHIFT)) >>> 0;
      const required = this.rangeNeedFault(addr, end, cpu);
      if (required) return this.fault(vma, addr, end, required);
      const haddr = Math.floor(addr / PMD_SIZE) * PMD_SIZE;
      for (let a = addr; a < end; a += PAGE_SIZE) {
        const pfn = head === ZERO_PFN ? ZERO_PFN : head + (a - haddr) / PAGE_SIZE;
        r.hmmPfns[this.idx(a)] = (pfn | cpu) >>> 0;
      }
      return 0;
    }
    for (let a = addr; a < end; a += PAGE_SIZE) {
      const i = this.idx(a);
      const e = mm.pt.lookup(a);
      const input = r.hmmPfns[i];
      if (e === 0) {
        const required = this.needFault(input, 0);
        if (required) return this.fault(vma, a, end, required);
        r.hmmPfns[i] = 0;
        continue;
      }
      if (!(e & PTE.PRESENT)) {
        const pfn = ptePfn(e);
        if (e & PTE.DEVICE_PRIVATE && r.devPrivateOwner !== null && k.mem.getMeta(pfn, FM.OWNER) === r.devPrivateOwner) {
          r.hmmPfns[i] = (pfn | HMM_PFN.VALID | (e & PTE.WRITE ? HMM_PFN.WRITE : 0)) >>> 0;
          continue;
        }
        const required = this.needFault(input, 0);
        if (!required) {
          // protnone keeps its pfn, without VALID; other non-present entries read as 0.
          r.hmmPfns[i] = e & PTE.PROTNONE ? pfn : 0;
          continue;
        }
        if (e & PTE.MIGRATION) {
          await k.waitFolio(pfn);
          this.last = a;
          return RESTART;
        }
        return this.fault(vma, a, end, required);
      }
      const cpu = (HMM_PFN.VALID | (e & PTE.WRITE ? HMM_PFN.WRITE : 0)) >>> 0;
      const required = this.needFault(input, cpu);
      if (required) return this.fault(vma, a, end, required);
      r.hmmPfns[i] = (ptePfn(e) | cpu) >>> 0;
    }
    return 0;
  }
}

/**
 * Returns 0 or a negative errno (EBUSY, EFAULT, EPERM, ENOMEM). On success every word holds its
 * output; the pfns may be used only if `readRetry` is false under the driver lock afterwards.
 */
export async function hmmRangeFault(k: Kernel, mm: MM, r: HmmRange): Promise<number> {
  if (r.start % PAGE_SIZE !== 0 || r.end % PAGE_SIZE !== 0 || r.end <= r.start) return ERRNO.EINVAL;
  if (r.hmmPfns.length < (r.end - r.start) / PAGE_SIZE) return ERRNO.EINVAL;
  if (mm.exiting) return ERRNO.EFAULT;
  const w = new Walk(k, mm, r);
  for (;;) {
    if (r.notifier.checkRetry(r.notifierSeq)) return ERRNO.EBUSY;
    const ret = await w.run();
    if (ret !== RESTART) return ret;
  }
}

/** Number of pages a huge mapping covers (for callers converting map orders). */
export const HMM_PMD_PAGES = PMD_PAGES;
