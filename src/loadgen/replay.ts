/**
 * Replays a real program's address-space history (parsed strace output, see strace.ts) into
 * emulated processes, so that devices mirroring one of them see the invalidations that program
 * would cause.
 *
 * Model (documented in docs/benchmarks.md):
 * - Tasks are grouped into address spaces (src/loadgen/address-spaces.ts infers exec, threads and
 *   exits from the calls): each address space replays into an emulated process of its own. The
 *   devices' process (`target`) is the main one (the most memory calls) unless `space` names
 *   another; every other one gets a process when its first call comes and exits when its last task
 *   does (exit_mmap), so a shell or launcher around the program does not leave its mappings in it.
 *   The target is never exited: the devices report on it as the program left it.
 * - Addresses are the program's own: every mapping is made fixed at the address the real call
 *   returned, so munmap/mprotect/madvise/mremap hit the same ranges.
 * - brk moves an anonymous heap at the program's own break: growth maps [old, new), shrinking
 *   unmaps it (what brk does to the address space).
 * - What execve mapped is not in the trace (the program's image, the dynamic loader, the stack):
 *   an mprotect or madvise that succeeded on a range the replay has not mapped (the loader's RELRO
 *   mprotect of the program and of itself) first maps the missing part, private and writable (the
 *   loader wrote its relocations there), touched as a new writable mapping; counted as image
 *   mappings.
 * - A file mapping maps an in-memory file per opened path (one page cache for every process, as a
 *   file has), sized by its largest mapping; a mapping of an fd that was never opened (or a larger
 *   one later) is mapped anonymous and counted. Threads share their fd table; an exec keeps it.
 * - strace records no page touches, so the replay touches pages by a model: in every new writable
 *   mapping, heap growth and range made writable by mprotect, the first and the last page and
 *   `density` of the others, at most `maxTouchPages` per range; a readable file mapping gets its
 *   first page read. The pages written are remembered (until unmapped, moved or discarded) so that
 *   devices can work on the program's data (`written`), not on memory it never touched.
 * - `timeScale` 0 replays as fast as possible; 1 keeps the recorded gaps between calls.
 * A call the emulated kernel refuses (an emulation difference) is counted and skipped.
 */
import { performance } from 'node:perf_hooks';
import type { Kernel, Process } from '../kernel/kernel.js';
import { PAGE_SIZE } from '../kernel/layout.js';
import { PROT } from '../kernel/vma.js';
import { DevmirrorError } from '../errors.js';
import type { ParsedTrace } from './strace.js';
import { RangeSet } from './range-set.js';
import { planAddressSpaces, type AddressSpaceInfo } from './address-spaces.js';

export interface ReplayOptions {
  timeScale: number;
  /** Fraction of the pages of a new writable mapping touched (besides the first and last). */
  density: number;
  maxTouchPages: number;
  /** The address space the devices' process replays (an index of ReplayStats.spaces); default the main one. */
  space?: number;
}

export const DEFAULT_REPLAY: ReplayOptions = { timeScale: 0, density: 0.05, maxTouchPages: 256 };

export interface ReplaySpace extends AddressSpaceInfo {
  /** The emulated process it replayed into (0 if it made no call the replay reached). */
  pid: number;
  /** The devices' process. */
  target: boolean;
  /** Its process was exited when its last task ended. */
  exited: boolean;
}

export interface ReplayStats {
  /** Calls in the trace (memory calls, openat and close). */
  calls: number;
  replayed: number;
  refused: Record<string, number>;
  mappings: number;
  fileMappingsAsAnon: number;
  /** Ranges execve had mapped (not in the trace), mapped before a call that needed them. */
  imageMappings: number;
  touchedPages: number;
  /** The address spaces, in order of appearance; `target` marks the devices'. */
  spaces: ReplaySpace[];
  /** Writable mappings of the target alive at the end (where devices can DMA). */
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
  MADV_DONTFORK: 'dontfork',
  MADV_DOFORK: 'dofork',
};

const pageDown = (a: number): number => a - (a % PAGE_SIZE);
const pageUp = (a: number): number => Math.ceil(a / PAGE_SIZE) * PAGE_SIZE;

/** One address space's replay state. */
interface Space {
  info: ReplaySpace;
  proc: Process | null;
  fds: Map<number, string>;
  brkCur: number;
  writable: RangeSet;
  /** Pages the replay wrote and the program still has (what its devices work on). */
  wrote: Set<number>;
  /** The first page the program last touched: where it works now. */
  lastTouched: number;
}

/**
 * Replays `trace`. `p` is the devices' process: the target address space replays into it; every
 * other address space gets a process of its own. `afterEach` runs after every call, with the
 * target's writable ranges, last touched page and written pages.
 */
export async function replayTrace(
  k: Kernel,
  p: Process,
  trace: ParsedTrace,
  o: ReplayOptions = DEFAULT_REPLAY,
  afterEach?: (i: number, stats: ReplayStats, writable: () => Array<[number, number]>, lastTouched: number, written: (start: number, end: number, max: number) => number[]) => Promise<void> | void,
): Promise<ReplayStats> {
  const plan = planAddressSpaces(trace);
  const targetIndex = o.space ?? plan.main;
  if (trace.events.length > 0 && (!Number.isSafeInteger(targetIndex) || targetIndex < 0 || targetIndex >= plan.spaces.length)) {
    throw new DevmirrorError('DM_ERR_VALIDATION', `address space ${targetIndex} is not in the trace (it has ${plan.spaces.length}: 0 to ${plan.spaces.length - 1})`);
  }
  const spaces: Space[] = plan.spaces.map((info) => ({
    info: { ...info, pids: [...info.pids], pid: 0, target: info.index === targetIndex, exited: false },
    proc: null,
    fds: new Map(),
    brkCur: -1,
    writable: new RangeSet(),
    wrote: new Set(),
    lastTouched: -1,
  }));
  const stats: ReplayStats = {
    calls: trace.events.length,
    replayed: 0,
    refused: {},
    mappings: 0,
    fileMappingsAsAnon: 0,
    imageMappings: 0,
    touchedPages: 0,
    spaces: spaces.map((sp) => sp.info),
    writableRanges: [],
  };
  const files = new Map<string, { id: number; size: number }>();
  /** The space each task last called in: an exec carries its fd table over. */
  const taskSpace = new Map<number, Space>();
  let t0: number | null = null;
  const start = performance.now();
  const refuse = (what: string, e: unknown): void => {
    const key = `${what}: ${(e as { code?: string }).code ?? (e as Error).message}`;
    stats.refused[key] = (stats.refused[key] ?? 0) + 1;
  };
  /** The written pages of `sp` in [start, end), in address order, at most `max` (walks the range or the set, the smaller). */
  const written = (sp: Space, start: number, end: number, max: number): number[] => {
    const out: number[] = [];
    const wrote = sp.wrote;
    if (wrote.size === 0) return out;
    if ((end - start) / PAGE_SIZE < wrote.size) {
      for (let a = start; a < end && out.length < max; a += PAGE_SIZE) if (wrote.has(a)) out.push(a);
    } else {
      for (const a of wrote) if (a >= start && a < end) out.push(a);
      out.sort((x, y) => x - y).splice(max);
    }
    return out;
  };
  const forget = (sp: Space, start: number, end: number): void => {
    for (const a of written(sp, start, end, Infinity)) sp.wrote.delete(a);
  };
  const touch = async (sp: Space, pid: number, addr: number, length: number, write: boolean): Promise<void> => {
    const pages = length / PAGE_SIZE;
    if (pages <= 0) return;
    sp.lastTouched = addr;
    const want = new Set<number>([0, pages - 1]);
    const extra = Math.min(o.maxTouchPages - 2, Math.floor((pages - 2) * o.density));
    if (extra > 0) {
      const stride = (pages - 2) / extra;
      for (let i = 0; i < extra; i++) want.add(1 + Math.floor(i * stride));
    }
    for (const i of want) {
      const a = addr + i * PAGE_SIZE;
      if (write) {
        await k.write(pid, a, new Uint8Array(8).fill(0x5a));
        sp.wrote.add(a);
      } else await k.read(pid, a, 8);
      stats.touchedPages++;
    }
  };
  /** Maps what execve had mapped in [a, a + len) and the trace does not show (see the model). */
  const mapImage = async (sp: Space, pid: number, a: number, len: number): Promise<void> => {
    const proc = sp.proc as Process;
    if (proc.mm.vmas.covers(a, a + len)) return;
    let at = a;
    const gaps: Array<[number, number]> = [];
    for (const v of proc.mm.vmas.overlapping(a, a + len)) {
      if (v.start > at) gaps.push([at, v.start]);
      at = Math.max(at, v.end);
    }
    if (at < a + len) gaps.push([at, a + len]);
    for (const [g0, g1] of gaps) {
      await k.mmap(pid, { addr: g0, fixed: true, length: g1 - g0, prot: PROT.READ | PROT.WRITE });
      stats.imageMappings++;
      sp.writable.add(g0, g1);
      await touch(sp, pid, g0, g1 - g0, true);
    }
  };
  /** Ends the spaces whose last task is gone before event `i` (their processes exit; never the target's). */
  let ending = 0;
  const byEnd = spaces.filter((sp) => sp.info.endsBefore >= 0).sort((x, y) => x.info.endsBefore - y.info.endsBefore);
  const endSpaces = async (i: number): Promise<void> => {
    for (; ending < byEnd.length && byEnd[ending].info.endsBefore <= i; ending++) {
      const sp = byEnd[ending];
      if (sp.info.target || !sp.proc) continue;
      try {
        await k.exit(sp.proc.pid);
        sp.info.exited = true;
      } catch (e) {
        refuse('exit', e);
      }
      sp.wrote.clear();
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
    await endSpaces(i);
    const sp = spaces[plan.of[i]];
    const before = taskSpace.get(ev.pid);
    if (!sp.proc) {
      sp.proc = sp.info.target ? p : k.createProcess(`replay-${sp.info.firstPid}`);
      sp.info.pid = sp.proc.pid;
      // A task that exec'd into this space keeps its open files.
      if (before && before !== sp) for (const [fd, path] of before.fds) sp.fds.set(fd, path);
    }
    taskSpace.set(ev.pid, sp);
    const pid = sp.proc.pid;
    const op = ev.op;
    try {
      switch (op.kind) {
        case 'open':
          sp.fds.set(op.fd, op.path);
          break;
        case 'close':
          sp.fds.delete(op.fd);
          break;
        case 'mmap': {
          const length = pageUp(op.length);
          const anon = op.flags.includes('MAP_ANONYMOUS') || op.fd < 0;
          const shared = op.flags.includes('MAP_SHARED') || op.flags.includes('MAP_SHARED_VALIDATE');
          let file: { id: number; offset: number } | undefined;
          if (!anon) {
            const path = sp.fds.get(op.fd);
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
          await k.mmap(pid, { addr: op.result, fixed: true, length, prot: op.prot, shared: shared && file !== undefined, ...(file ? { file } : {}) });
          forget(sp, op.result, op.result + length); // a fixed mapping replaces what was there
          stats.mappings++;
          if (!(op.prot & PROT.WRITE)) sp.writable.remove(op.result, op.result + length);
          if (op.prot & PROT.WRITE) {
            sp.writable.add(op.result, op.result + length);
            await touch(sp, pid, op.result, length, true);
          } else if (file && op.prot & PROT.READ) await touch(sp, pid, op.result, Math.min(length, PAGE_SIZE), false);
          break;
        }
        case 'munmap':
          await k.munmap(pid, pageDown(op.addr), pageUp(op.length));
          sp.writable.remove(pageDown(op.addr), pageDown(op.addr) + pageUp(op.length));
          forget(sp, pageDown(op.addr), pageDown(op.addr) + pageUp(op.length));
          break;
        case 'mremap': {
          const moved = op.result !== op.addr;
          await k.mremap(pid, { addr: op.addr, length: pageUp(op.oldLength), newLength: pageUp(op.newLength), maymove: moved, fixed: moved, newAddr: moved ? op.result : undefined });
          // The writable part of the old range moves with it (growth of a writable mapping is writable).
          const was = sp.writable.covers(op.addr, op.addr + PAGE_SIZE);
          sp.writable.remove(op.addr, op.addr + pageUp(op.oldLength));
          // The data moves with the mapping.
          if (moved) {
            const old = written(sp, op.addr, op.addr + pageUp(op.oldLength), Infinity);
            for (const a of old) sp.wrote.delete(a);
            for (const a of old) sp.wrote.add(op.result + (a - op.addr));
          } else if (op.newLength < op.oldLength) forget(sp, op.addr + pageUp(op.newLength), op.addr + pageUp(op.oldLength));
          if (was) sp.writable.add(op.result, op.result + pageUp(op.newLength));
          break;
        }
        case 'mprotect': {
          const a = pageDown(op.addr);
          const len = pageUp(op.length);
          await mapImage(sp, pid, a, len);
          await k.mprotect(pid, a, len, op.prot);
          if (!(op.prot & PROT.WRITE)) sp.writable.remove(a, a + len);
          else {
            sp.writable.add(a, a + len);
            // Programs make memory writable to write it: allocators and JITs commit reserved
            // (PROT_NONE) memory this way, and GCs lift write barriers. Touched by the same model
            // as a new writable mapping.
            await touch(sp, pid, a, len, true);
          }
          break;
        }
        case 'madvise': {
          const advice = ADVICE[op.advice];
          if (!advice) {
            stats.refused[`madvise ${op.advice}: not modelled`] = (stats.refused[`madvise ${op.advice}: not modelled`] ?? 0) + 1;
            continue;
          }
          await mapImage(sp, pid, pageDown(op.addr), pageUp(op.length));
          await k.madvise(pid, pageDown(op.addr), pageUp(op.length), advice as never);
          // DONTNEED discards the data; FREE says the program no longer needs it.
          if (advice === 'dontneed' || advice === 'free') forget(sp, pageDown(op.addr), pageDown(op.addr) + pageUp(op.length));
          break;
        }
        case 'brk': {
          if (op.addr === 0) {
            if (sp.brkCur < 0) sp.brkCur = op.result;
            break;
          }
          if (sp.brkCur < 0) sp.brkCur = pageUp(op.addr);
          const next = pageUp(op.result);
          const cur = pageUp(sp.brkCur);
          if (next > cur) {
            await k.mmap(pid, { addr: cur, fixed: true, length: next - cur, prot: PROT.READ | PROT.WRITE });
            sp.writable.add(cur, next);
            await touch(sp, pid, cur, next - cur, true);
          } else if (next < cur) {
            await k.munmap(pid, next, cur - next);
            sp.writable.remove(next, cur);
            forget(sp, next, cur);
          }
          sp.brkCur = op.result;
          break;
        }
      }
      stats.replayed++;
    } catch (e) {
      refuse(op.kind, e);
    }
    if (afterEach) {
      const t = spaces[targetIndex];
      await afterEach(i, stats, () => t.writable.ranges(), t.lastTouched, (a, b, max) => written(t, a, b, max));
    }
  }
  await endSpaces(trace.events.length);
  stats.writableRanges = trace.events.length > 0 ? spaces[targetIndex].writable.ranges() : [];
  return stats;
}
