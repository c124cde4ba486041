/**
 * Which traced tasks share an address space, inferred from their calls alone: the strace filter the
 * replay takes (`-e trace=memory,openat,close`) traces neither clone nor execve.
 *
 * - **exec**: the first memory call of a freshly exec'd image is brk(NULL) (the dynamic loader and
 *   static startup code ask for the break before anything else), and each image gets a new,
 *   randomised break. A brk(NULL) that returns anything but the current break of the caller's
 *   address space starts a new one: the task exec'd. One that returns the current break is a
 *   query (the loader asks twice).
 * - **a new task** (a thread, or a forked child that has not exec'd: the two look the same here)
 *   joins an address space that lives: the one whose break its brk(NULL) returns, or where the
 *   address its first call names is mapped, or else the one that made the last call (the parent
 *   returns from clone just before the child runs).
 * - **ends**: a task is gone at its `+++` line (exit, a fatal signal, another thread's execve) or
 *   when it execs; an address space ends with its last task (exit_mmap, or exec dropping the old
 *   mm).
 *
 * An address space whose break the trace never showed (strace attached to a running program) learns
 * it from its first brk(NULL) instead.
 *
 * Known limits: a forked child that does not exec makes its calls in its parent's replayed address
 * space (a copy, in reality); an exec that gets the break of the image before (address-space
 * randomisation off, the same program again) is not seen.
 */
import { PAGE_SIZE } from '../kernel/layout.js';
import { RangeSet } from './range-set.js';
import type { Op, ParsedTrace } from './strace.js';

export interface AddressSpaceInfo {
  /** Its place in AddressSpacePlan.spaces: the order of first appearance. */
  index: number;
  /** The task whose call made it. */
  firstPid: number;
  /** Every task that made a call in it, in order of their first. */
  pids: number[];
  /** Its calls, and of those the memory calls (not openat and close). */
  calls: number;
  memoryCalls: number;
  /** The break its image started with (from the brk(NULL) that made it); null if none was seen. */
  brk: number | null;
  /** How it ended: its last task exited or exec'd; null if it lives at the trace's end. */
  ended: 'exit' | 'exec' | null;
  /** It is gone before events[endsBefore] (events.length: at the trace's end); -1 while it lives. */
  endsBefore: number;
}

export interface AddressSpacePlan {
  spaces: AddressSpaceInfo[];
  /** The address space of each event (an index into spaces). */
  of: Int32Array;
  /** The space with the most memory calls: the program the trace is about. */
  main: number;
}

const pageUp = (a: number): number => Math.ceil(a / PAGE_SIZE) * PAGE_SIZE;

/** The address a call names in a mapping that must exist already (null: it names none). */
function namedAddress(op: Op): number | null {
  switch (op.kind) {
    case 'munmap':
    case 'mprotect':
    case 'madvise':
    case 'mremap':
      return op.addr;
    default:
      return null;
  }
}

export function planAddressSpaces(trace: ParsedTrace): AddressSpacePlan {
  const events = trace.events;
  const spaces: AddressSpaceInfo[] = [];
  /** Per space: what it has mapped, its break, its live tasks, its last call. */
  const mapped: RangeSet[] = [];
  const brk: Array<number | null> = [];
  const tasks: Array<Set<number>> = [];
  const lastCall: number[] = [];
  const taskSpace = new Map<number, number>();
  const of = new Int32Array(events.length);
  let last = -1;

  const create = (pid: number, b: number | null): number => {
    const index = spaces.length;
    spaces.push({ index, firstPid: pid, pids: [], calls: 0, memoryCalls: 0, brk: b, ended: null, endsBefore: -1 });
    mapped.push(new RangeSet());
    brk.push(b);
    tasks.push(new Set());
    lastCall.push(-1);
    return index;
  };
  const enter = (pid: number, s: number): void => {
    taskSpace.set(pid, s);
    tasks[s].add(pid);
    if (!spaces[s].pids.includes(pid)) spaces[s].pids.push(pid);
  };
  const leave = (pid: number, before: number, how: 'exit' | 'exec'): void => {
    const s = taskSpace.get(pid);
    if (s === undefined) return;
    taskSpace.delete(pid);
    tasks[s].delete(pid);
    if (tasks[s].size === 0) {
      spaces[s].ended = how;
      spaces[s].endsBefore = before;
    }
  };
  const live = (s: number): boolean => s >= 0 && tasks[s].size > 0;
  /** The live space a new task's first call belongs in, or -1. */
  const join = (op: Op): number => {
    let best = -1;
    const want = (s: number): void => {
      if (best < 0 || lastCall[s] > lastCall[best]) best = s;
    };
    if (op.kind === 'brk' && op.addr === 0) {
      for (let s = 0; s < spaces.length; s++) if (live(s) && brk[s] === op.result) want(s);
      return best;
    }
    const addr = namedAddress(op);
    if (addr !== null) for (let s = 0; s < spaces.length; s++) if (live(s) && mapped[s].has(addr)) want(s);
    if (best >= 0) return best;
    if (live(last)) return last;
    for (let s = 0; s < spaces.length; s++) if (live(s)) want(s);
    return best;
  };

  let x = 0;
  const exits = trace.exits ?? [];
  for (let i = 0; i < events.length; i++) {
    for (; x < exits.length && exits[x].before <= i; x++) leave(exits[x].pid, i, 'exit');
    const { pid, op } = events[i];
    let s = taskSpace.get(pid) ?? -1;
    const brkQuery = op.kind === 'brk' && op.addr === 0;
    if (s < 0) {
      s = join(op);
      // A brk(NULL) no live space answers with its break: a freshly exec'd image.
      if (s < 0) s = create(pid, brkQuery ? op.result : null);
      enter(pid, s);
    } else if (brkQuery && brk[s] === null) {
      // A space whose start the trace did not show (strace attached late): a query that teaches
      // its break, not an exec.
      brk[s] = op.result;
    } else if (brkQuery && brk[s] !== op.result) {
      leave(pid, i, 'exec');
      s = create(pid, op.result);
      enter(pid, s);
    }
    of[i] = s;
    const info = spaces[s];
    info.calls++;
    if (op.kind !== 'open' && op.kind !== 'close') info.memoryCalls++;
    lastCall[s] = i;
    last = s;
    const m = mapped[s];
    switch (op.kind) {
      case 'mmap':
        m.add(op.result, op.result + pageUp(op.length));
        break;
      case 'munmap':
        m.remove(op.addr, op.addr + pageUp(op.length));
        break;
      case 'mremap':
        m.remove(op.addr, op.addr + pageUp(op.oldLength));
        m.add(op.result, op.result + pageUp(op.newLength));
        break;
      case 'brk':
        if (op.addr === 0) break;
        if (brk[s] !== null) {
          const cur = pageUp(brk[s]!);
          const next = pageUp(op.result);
          if (next > cur) m.add(cur, next);
          else m.remove(next, cur);
        }
        brk[s] = op.result;
        break;
    }
  }
  for (; x < exits.length; x++) leave(exits[x].pid, events.length, 'exit');

  let main = 0;
  for (const sp of spaces) if (sp.memoryCalls > spaces[main].memoryCalls) main = sp.index;
  return { spaces, of, main };
}
