/**
 * Replays a real program's address-space history (parsed strace output, see strace.ts) into an
 * emulated process, so that devices mirroring it see the invalidations that program would cause.
 *
 * Model (documented in docs/benchmarks.md):
 * - Addresses are the program's own: every mapping is made fixed at the address the real call
 *   returned, so munmap/mprotect/madvise/mremap hit the same ranges.
 * - brk moves an anonymous heap at the program's own break: growth maps [old, new), shrinking
 *   unmaps it (what brk does to the address space).
 * - A file mapping maps an in-memory file per opened path, sized by its largest mapping; a mapping
 *   of an fd that was never opened (or a larger one later) is mapped anonymous and counted.
 * - strace records no page touches, so the replay touches pages by a model: in every new writable
 *   mapping, heap growth and range made writable by mprotect, the first and the last page and
 *   `density` of the others, at most `maxTouchPages` per range; a readable file mapping gets its
 *   first page read. The pages written are remembered (until unmapped, moved or discarded) so that
 *   devices can work on the program's data (`written`), not on memory it never touched.
 * - Every traced task replays into one emulated process (threads share an address space; this
 *   filter does not trace clone, so processes and threads cannot be told apart).
 * - `timeScale` 0 replays as fast as possible; 1 keeps the recorded gaps between calls.
 * A call the emulated kernel refuses (an emulation difference) is counted and skipped.
 */
import type { Kernel, Process } from '../kernel/kernel.js';
import { PAGE_SIZE } from '../kernel/layout.js';
import { PROT } from '../kernel/vma.js';
import type { ParsedTrace } from './strace.js';

export interface ReplayOptions {
  timeScale: number;
  /** Fraction of the pages of a new writable mapping touched (besides the first and last). */
  density: number;
  maxTouchPages: number;
}

export const DEFAULT_REPLAY: ReplayOptions = { timeScale: 0, density: 0.05, maxTouchPages: 256 };

export interface ReplayStats {
  calls: number;
  replayed: number;
  refused: Record<string, number>;
  mappings: number;
  fileMappingsAsAnon: number;
  touchedPages: number;
  /** Writable mappings alive at the end (where devices can DMA). */
  writableRanges: Array<[number, number]>;
}

const ADVICE: Record<string, string> = {
  MADV_DONTNEED: 'dontneed',
  MADV_FREE: 'free',
  MADV_PAGEOUT: 'pageout',
  MADV_HUGEPAGE: 'hugepage',
  MADV_NOHUGEPAGE: 'nohugepage',
  MADV_COLLAPSE: 'collapse',
  MADV_MERGEABLE: 'mergeable',
  MADV_WILLNEED: 'willneed',
};

const pageDown = (a: number): number => a - (a % PAGE_SIZE);
const pageUp = (a: number): number => Math.ceil(a / PAGE_SIZE) * PAGE_SIZE;

export async function replayTrace(
  k: Kernel,
  p: Process,
  trace: ParsedTrace,
  o: ReplayOptions = DEFAULT_REPLAY,
  afterEach?: (i: number, stats: ReplayStats, writable: () => Array<[number, number]>, lastTouched: number, written: (start: number, end: number, max: number) => number[]) => Promise<void> | void,
): Promise<ReplayStats> {
  const stats: ReplayStats = { calls: trace.events.length, replayed: 0, refused: {}, mappings: 0, fileMappingsAsAnon: 0, touchedPages: 0, writableRanges: [] };
  const fds = new Map<number, string>();
  const files = new Map<string, { id: number; size: number }>();
  const writable = new RangeSet();
  let brkBase = -1;
  let brkCur = -1;
  let t0: number | null = null;
  const start = performance.now();
  const refuse = (what: string, e: unknown): void => {
    const key = `${what}: ${(e as { code?: string }).code ?? (e as Error).message}`;
    stats.refused[key] = (stats.refused[key] ?? 0) + 1;
  };
  /** The first page the program last touched: where it works now. */
  let lastTouched = -1;
  /** Pages the replay wrote and the program still has (what its devices work on). */
  const wrote = new Set<number>();
  /** The written pages in [start, end), in address order, at most `max` (walks the range or the set, the smaller). */
  const written = (start: number, end: number, max: number): number[] => {
    const out: number[] = [];
    if (wrote.size === 0) return out;
    if ((end - start) / PAGE_SIZE < wrote.size) {
      for (let a = start; a < end && out.length < max; a += PAGE_SIZE) if (wrote.has(a)) out.push(a);
    } else {
      for (const a of wrote) if (a >= start && a < end) out.push(a);
      out.sort((x, y) => x - y).splice(max);
    }
    return out;
  };
  const forget = (start: number, end: number): void => {
    for (const a of written(start, end, Infinity)) wrote.delete(a);
  };
  const touch = async (addr: number, length: number, write: boolean): Promise<void> => {
    const pages = length / PAGE_SIZE;
    if (pages <= 0) return;
    lastTouched = addr;
    const want = new Set<number>([0, pages - 1]);
    const extra = Math.min(o.maxTouchPages - 2, Math.floor((pages - 2) * o.density));
    if (extra > 0) {
      const stride = (pages - 2) / extra;
      for (let i = 0; i < extra; i++) want.add(1 + Math.floor(i * stride));
    }
    for (const i of want) {
      const a = addr + i * PAGE_SIZE;
      if (write) {
        await k.write(p.pid, a, new Uint8Array(8).fill(0x5a));
        wrote.add(a);
      } else await k.read(p.pid, a, 8);
      stats.touchedPages++;
    }
  };
  for (let i = 0; i < trace.events.length; i++) {
    const ev = trace.events[i];
    if (o.timeScale > 0) {
      t0 ??= ev.t;
      const due = start + (ev.t - t0) * 1000 * o.timeScale;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    }
    const op = ev.op;
    try {
      switch (op.kind) {
        case 'open':
          fds.set(op.fd, op.path);
          break;
        case 'close':
          fds.delete(op.fd);
          break;
        case 'mmap': {
          const length = pageUp(op.length);
          const anon = op.flags.includes('MAP_ANONYMOUS') || op.fd < 0;
          const shared = op.flags.includes('MAP_SHARED') || op.flags.includes('MAP_SHARED_VALIDATE');
          let file: { id: number; offset: number } | undefined;
          if (!anon) {
            const path = fds.get(op.fd);
            const need = op.offset + length;
            let f = path ? files.get(path) : undefined;
            if (path && !f) {
              const mf = k.createFile(pageUp(need));
              f = { id: mf.id, size: pageUp(need) };
              files.set(path, f);
            }
            if (f && need <= f.size) file = { id: f.id, offset: op.offset };
            else stats.fileMappingsAsAnon++;
          }
          await k.mmap(p.pid, { addr: op.result, fixed: true, length, prot: op.prot, shared: shared && file !== undefined, ...(file ? { file } : {}) });
          forget(op.result, op.result + length); // a fixed mapping replaces what was there
          stats.mappings++;
          if (!(op.prot & PROT.WRITE)) writable.remove(op.result, op.result + length);
          if (op.prot & PROT.WRITE) {
            writable.add(op.result, op.result + length);
            await touch(op.result, length, true);
          } else if (file && op.prot & PROT.READ) await touch(op.result, Math.min(length, PAGE_SIZE), false);
          break;
        }
        case 'munmap':
          await k.munmap(p.pid, pageDown(op.addr), pageUp(op.length));
          writable.remove(pageDown(op.addr), pageDown(op.addr) + pageUp(op.length));
          forget(pageDown(op.addr), pageDown(op.addr) + pageUp(op.length));
          break;
        case 'mremap': {
          const moved = op.result !== op.addr;
          await k.mremap(p.pid, { addr: op.addr, length: pageUp(op.oldLength), newLength: pageUp(op.newLength), maymove: moved, fixed: moved, newAddr: moved ? op.result : undefined });
          // The writable part of the old range moves with it (growth of a writable mapping is writable).
          const was = writable.covers(op.addr, op.addr + PAGE_SIZE);
          writable.remove(op.addr, op.addr + pageUp(op.oldLength));
          // The data moves with the mapping.
          if (moved) {
            const old = written(op.addr, op.addr + pageUp(op.oldLength), Infinity);
            for (const a of old) wrote.delete(a);
            for (const a of old) wrote.add(op.result + (a - op.addr));
          } else if (op.newLength < op.oldLength) forget(op.addr + pageUp(op.newLength), op.addr + pageUp(op.oldLength));
          if (was) writable.add(op.result, op.result + pageUp(op.newLength));
          break;
        }
        case 'mprotect': {
          const a = pageDown(op.addr);
          const len = pageUp(op.length);
          await k.mprotect(p.pid, a, len, op.prot);
          if (!(op.prot & PROT.WRITE)) writable.remove(a, a + len);
          else {
            writable.add(a, a + len);
            // Programs make memory writable to write it: allocators and JITs commit reserved
            // (PROT_NONE) memory this way, and GCs lift write barriers. Touched by the same model
            // as a new writable mapping.
            await touch(a, len, true);
          }
          break;
        }
        case 'madvise': {
          const advice = ADVICE[op.advice];
          if (!advice) {
            stats.refused[`madvise ${op.advice}: not modelled`] = (stats.refused[`madvise ${op.advice}: not modelled`] ?? 0) + 1;
            continue;
          }
          await k.madvise(p.pid, pageDown(op.addr), pageUp(op.length), advice as never);
          // DONTNEED discards the data; FREE says the program no longer needs it.
          if (advice === 'dontneed' || advice === 'free') forget(pageDown(op.addr), pageDown(op.addr) + pageUp(op.length));
          break;
        }
        case 'brk': {
          if (op.addr === 0) {
            if (brkBase < 0) brkBase = brkCur = op.result;
            break;
          }
          if (brkBase < 0) brkBase = brkCur = pageUp(op.addr);
          const next = pageUp(op.result);
          const cur = pageUp(brkCur);
          if (next > cur) {
            await k.mmap(p.pid, { addr: cur, fixed: true, length: next - cur, prot: PROT.READ | PROT.WRITE });
            writable.add(cur, next);
            await touch(cur, next - cur, true);
          } else if (next < cur) {
            await k.munmap(p.pid, next, cur - next);
            writable.remove(next, cur);
            forget(next, cur);
          }
          brkCur = op.result;
          break;
        }
      }
      stats.replayed++;
    } catch (e) {
      refuse(op.kind, e);
    }
    if (afterEach) await afterEach(i, stats, () => writable.ranges(), lastTouched, written);
  }
  stats.writableRanges = writable.ranges();
  return stats;
}

/**
 * Disjoint, sorted, merged [start, end) ranges: the program's writable memory. Merging matters: a
 * collector that unprotects its heap one page at a time leaves one writable heap, not thousands of
 * one-page areas for the DMA engines to aim at.
 */
export class RangeSet {
  private r: Array<[number, number]> = [];

  add(start: number, end: number): void {
    if (end <= start) return;
    const out: Array<[number, number]> = [];
    let s = start;
    let e = end;
    for (const [a, b] of this.r) {
      if (b < s || a > e) out.push([a, b]);
      else {
        s = Math.min(s, a);
        e = Math.max(e, b);
      }
    }
    out.push([s, e]);
    this.r = out.sort((x, y) => x[0] - y[0]);
  }

  remove(start: number, end: number): void {
    if (end <= start) return;
    const out: Array<[number, number]> = [];
    for (const [a, b] of this.r) {
      if (b <= start || a >= end) out.push([a, b]);
      else {
        if (a < start) out.push([a, start]);
        if (b > end) out.push([end, b]);
      }
    }
    this.r = out;
  }

  /** True if [start, end) lies inside one range. */
  covers(start: number, end: number): boolean {
    return this.r.some(([a, b]) => a <= start && end <= b);
  }

  ranges(): Array<[number, number]> {
    return this.r.map(([a, b]) => [a, b]);
  }
}
