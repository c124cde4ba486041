/**
 * Side-effect-free snapshots of what a refused operation must leave alone: the frame/swap books
 * (audit), the processes, every process's VMA list, and the pagemap of every mapped page together
 * with a hash of its contents (read from the frame or swap slot, without faulting).
 */
import { createHash } from 'node:crypto';
import type { Kernel } from '../../src/kernel/kernel.js';

export interface VmaSnap {
  start: number;
  end: number;
  prot: number;
  shared: boolean;
  file: number | null;
  pgoff: number;
  huge: string;
  mergeable: boolean;
}

export interface PageSnap {
  addr: number;
  entry: Record<string, unknown>;
  /** sha1 of the frame's contents, 'swap:<slot>' for a swapped page, null if not present. */
  contents: string | null;
}

export interface KernelSnap {
  audit: { ok: boolean; problems: string[]; framesInUse: number; framesFree: number; pageTablePages: number; pageCachePages: number; swapSlotsInUse: number; deviceFramesInUse: number };
  processes: Array<{ pid: number; state: string; rss: number; swapEntries: number; brk: number; vmas: VmaSnap[]; pages: PageSnap[] }>;
  files: Array<{ id: number; kind: string; size: number; cached: number[]; swapped: number[]; mapped: boolean }>;
}

function hashFrame(k: Kernel, pfn: number): string {
  return createHash('sha1').update(k.mem.page(pfn)).digest('hex').slice(0, 16);
}

/** Snapshot of the kernel; pages of VMAs larger than `maxPagesPerVma` are sampled at the ends. */
export function snapshot(k: Kernel, maxPagesPerVma = 1024): KernelSnap {
  const a = k.audit();
  const processes = k.liveProcesses().map((p) => {
    const vmas: VmaSnap[] = p.mm.vmas.items.map((v) => ({
      start: v.start,
      end: v.end,
      prot: v.prot,
      shared: v.shared,
      file: v.file ? v.file.id : null,
      pgoff: v.pgoff,
      huge: v.huge,
      mergeable: v.mergeable,
    }));
    const pages: PageSnap[] = [];
    for (const v of p.mm.vmas.items) {
      const n = Math.min(v.pages, maxPagesPerVma);
      for (const e of k.pagemap(p.pid, v.start, n)) {
        const contents = e.swapped ? `swap:${e.swapSlot}` : e.pfn !== null && (e.present || e.protnone || e.devicePrivate !== null || e.exclusive) ? hashFrame(k, e.pfn) : null;
        pages.push({ addr: e.addr, entry: { ...e }, contents });
      }
    }
    return { pid: p.pid, state: p.state, rss: p.mm.rss, swapEntries: p.mm.swapEntries, brk: p.mm.brk, vmas, pages };
  });
  const files = k.files.list().map((f) => ({
    id: f.id,
    kind: f.kind,
    size: f.size,
    cached: [...f.cache.keys()].sort((x, y) => x - y),
    swapped: [...f.swapped.keys()].sort((x, y) => x - y),
    mapped: k.fileMapped(f),
  }));
  return {
    audit: {
      ok: a.ok,
      problems: a.problems,
      framesInUse: a.framesInUse,
      framesFree: a.framesFree,
      pageTablePages: a.pageTablePages,
      pageCachePages: a.pageCachePages,
      swapSlotsInUse: a.swapSlotsInUse,
      deviceFramesInUse: a.deviceFramesInUse,
    },
    processes,
    files,
  };
}

/** Runs f and turns both a synchronous throw and a rejection into a rejected promise. */
export function settle<T>(f: () => T | Promise<T>): Promise<T> {
  return Promise.resolve().then(f);
}
