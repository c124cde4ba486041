/**
 * Workloads of `devmirror bench`: each is one operation on the emulated kernel that makes it send
 * invalidations of a known kind to every device mirroring the area, repeated by the runner.
 *
 *   munmap     munmap a range, then map it again (fixed) and touch it        UNMAP
 *   mprotect   mprotect a range read-only, then read-write                   PROTECTION_VMA
 *   madvise    madvise(DONTNEED) a range, then touch it again                 CLEAR
 *   soft-dirty clear_refs(soft-dirty), then write a range                     SOFT_DIRTY
 *   fork       fork (COW write-protects the parent), write a range, exit     PROTECTION_PAGE, CLEAR
 *   migrate    migrate a range to the other NUMA node                         CLEAR (page migration)
 *   compact    one compaction pass                                            CLEAR
 *   numa       one NUMA-balancing pass over the process                       PROTECTION_VMA
 *   oom-reaper the OOM reaper over the process (non-blockable ranges, retried  CLEAR, non-blockable
 *              while devices refuse), then the range touched again
 *   mixed      all of the above but the OOM reaper, round robin
 */
import type { Kernel, Process } from '../kernel/kernel.js';
import { PROT } from '../kernel/vma.js';
import { PAGE_SIZE } from '../kernel/layout.js';

export const WORKLOADS = ['munmap', 'mprotect', 'madvise', 'soft-dirty', 'fork', 'migrate', 'compact', 'numa', 'oom-reaper', 'mixed'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];
export type Pattern = 'sequential' | 'random' | 'hotset';

export interface WorkloadContext {
  k: Kernel;
  p: Process;
  /** The area every device mirrors. */
  addr: number;
  pages: number;
  /** Pages per operation (clipped to the area). */
  rangePages: number;
  pattern: Pattern;
  /** Deterministic [0, 1) generator (seeded). */
  random: () => number;
  /** Operations done so far. */
  op: number;
}

/** The start of the next range, by the address pattern. */
export function nextRange(c: WorkloadContext): number {
  const n = Math.min(c.rangePages, c.pages);
  const slots = Math.max(1, Math.floor(c.pages / n));
  let slot: number;
  if (c.pattern === 'sequential') slot = c.op % slots;
  else if (c.pattern === 'hotset') slot = c.random() < 0.9 ? Math.floor(c.random() * Math.min(4, slots)) : Math.floor(c.random() * slots);
  else slot = Math.floor(c.random() * slots);
  return c.addr + slot * n * PAGE_SIZE;
}

const RW = PROT.READ | PROT.WRITE;

async function touch(c: WorkloadContext, a: number, n: number): Promise<void> {
  await c.k.write(c.p.pid, a, new Uint8Array(n * PAGE_SIZE).fill((c.op & 0xff) | 1));
}

const STEPS: Record<Exclude<WorkloadName, 'mixed'>, (c: WorkloadContext) => Promise<void>> = {
  async munmap(c) {
    const a = nextRange(c);
    const n = Math.min(c.rangePages, c.pages);
    await c.k.munmap(c.p.pid, a, n * PAGE_SIZE);
    await c.k.mmap(c.p.pid, { addr: a, fixed: true, length: n * PAGE_SIZE, prot: RW });
    await touch(c, a, n);
  },
  async mprotect(c) {
    const a = nextRange(c);
    const n = Math.min(c.rangePages, c.pages);
    await c.k.mprotect(c.p.pid, a, n * PAGE_SIZE, PROT.READ);
    await c.k.mprotect(c.p.pid, a, n * PAGE_SIZE, RW);
  },
  async madvise(c) {
    const a = nextRange(c);
    const n = Math.min(c.rangePages, c.pages);
    await c.k.madvise(c.p.pid, a, n * PAGE_SIZE, 'dontneed');
    await touch(c, a, n);
  },
  async 'soft-dirty'(c) {
    await c.k.clearRefs(c.p.pid, 'soft-dirty');
    const a = nextRange(c);
    await touch(c, a, Math.min(c.rangePages, c.pages));
  },
  async fork(c) {
    const child = await c.k.fork(c.p.pid);
    const a = nextRange(c);
    await touch(c, a, Math.min(c.rangePages, c.pages));
    await c.k.exit(child.pid);
  },
  async migrate(c) {
    const a = nextRange(c);
    await c.k.migrate(c.p.pid, a, Math.min(c.rangePages, c.pages) * PAGE_SIZE, c.op % 2);
  },
  async compact(c) {
    await c.k.compact(c.op % 2);
  },
  async numa(c) {
    await c.k.numaBalance(c.p.pid);
  },
  async 'oom-reaper'(c) {
    await c.k.oomReap(c.p.pid);
    const a = nextRange(c);
    await touch(c, a, Math.min(c.rangePages, c.pages));
  },
};

const MIXED = (Object.keys(STEPS) as Array<keyof typeof STEPS>).filter((s) => s !== 'oom-reaper');

/** Runs one operation of the workload. */
export function step(name: WorkloadName, c: WorkloadContext): Promise<void> {
  const s = name === 'mixed' ? STEPS[MIXED[c.op % MIXED.length]] : STEPS[name];
  return s(c);
}
