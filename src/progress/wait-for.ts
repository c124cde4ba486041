/**
 * Wait-for graphs: who waits on whom when something is stuck. Nodes are the things that can wait
 * or be waited on; an edge A -> B means "A cannot go on until B does something":
 *
 *   invalidation #I   -> device D        D has not acknowledged I (the kernel waits in start)
 *   device D          -> lock L          D's invalidate handler waits for its own lock L
 *   lock L            -> D readBegin S   L's holder is D's fault path, and D has a readBegin waiting
 *   D readBegin S     -> invalidation #I readBegin waits until every window over S closes
 *   D (inferred)      -> D readBegin S   without a view of the device's locks (an external client
 *                                        or a worker): D owes an ack while its own fault waits in
 *                                        readBegin behind that invalidation; the usual cause is a
 *                                        driver lock held across readBegin, so the edge is marked
 *                                        inferred
 *
 * A cycle is a deadlock (it cannot resolve itself); a graph without one still says who waits on
 * whom. The kernel's own sleeping locks (mmap lock, folio locks) are not nodes: a wait on them
 * shows only as the invalidation or syscall it holds up.
 */
import type { Kernel } from '../kernel/kernel.js';
import type { ProgressSource } from './counters.js';
import type { Mutex } from '../lib/locks.js';
import { eventName, formatEnd } from '../notifier/range.js';

export interface WaitEdge {
  from: string;
  to: string;
  why: string;
  /** Derived without seeing the device's own locks. */
  inferred?: boolean;
}

export interface WaitForGraph {
  nodes: string[];
  edges: WaitEdge[];
  /** The first cycle found, as node names (the first repeated at the end), or null. */
  cycle: string[] | null;
  /** The cycle as one line: "a -[why]-> b -[why]-> a". */
  cycleText: string;
}

export interface WaitForInput {
  kernel: Kernel;
  devices: Array<{ name: string; source: ProgressSource }>;
  /** Device locks and their devices, when the caller can see them (the explorer runs devices in its own thread). */
  mutexes?: Array<{ m: Mutex; owner: string | null }>;
  /** Threads (explorer) or tasks still running, for the report. */
  threads?: Array<{ name: string; op: string }>;
}

const hex = (v: number): string => `0x${v.toString(16)}`;

export function buildWaitForGraph(input: WaitForInput): WaitForGraph {
  const nodes = new Set<string>();
  const edges: WaitEdge[] = [];
  const add = (from: string, to: string, why: string, inferred = false): void => {
    nodes.add(from);
    nodes.add(to);
    if (!edges.some((e) => e.from === from && e.to === to)) edges.push({ from, to, why, ...(inferred ? { inferred } : {}) });
  };
  // Open invalidations, by id, with their process's subscriptions.
  const invName = new Map<number, string>();
  const openByPid = new Map<number, Array<{ id: number; start: number; end: number }>>();
  for (const p of input.kernel.processes.values()) {
    for (const r of p.mm.notifier.openRanges()) {
      const name = `invalidation #${r.id} (${eventName(r.event)} from ${r.origin}, pid ${r.pid}, [${hex(r.start)}, ${typeof formatEnd(r.end) === "number" ? hex(r.end) : formatEnd(r.end)}))`;
      invName.set(r.id, name);
      nodes.add(name);
      const l = openByPid.get(r.pid) ?? [];
      l.push({ id: r.id, start: r.start, end: r.end });
      openByPid.set(r.pid, l);
    }
  }
  for (const d of input.devices) {
    const dev = `device ${d.name}`;
    const owed = d.source.pendingAckList();
    for (const a of owed) {
      const inv = invName.get(a.invalidationId) ?? `invalidation #${a.invalidationId}`;
      add(inv, dev, `waits for ${d.name}'s acknowledgement (subscription ${a.subscriptionId})`);
    }
    const readBegins: string[] = [];
    for (const w of d.source.progress.waits.values()) {
      const sub = d.source.subRange(w.subId);
      if (!sub) continue;
      const rb = `${d.name} readBegin (subscription ${w.subId})`;
      readBegins.push(rb);
      for (const r of openByPid.get(sub.pid) ?? []) {
        if (r.start < sub.end && r.end > sub.start) add(rb, invName.get(r.id)!, 'readBegin waits for the invalidation window to close');
      }
    }
    if (input.mutexes) {
      for (const { m, owner } of input.mutexes) {
        if (owner !== d.name || !m.isLocked) continue;
        const lock = `lock ${m.name} (held by ${m.holder ?? '?'})`;
        if (owed.length > 0 && m.waiters.includes('invalidate')) add(dev, lock, "the invalidate handler waits for the device's lock");
        if (m.holder !== 'invalidate') for (const rb of readBegins) add(lock, rb, `the holder (${m.holder}) is the fault path waiting in readBegin`);
      }
    } else if (owed.length > 0) {
      for (const rb of readBegins) add(dev, rb, 'owes an acknowledgement while its own fault waits in readBegin (a driver lock held across readBegin?)', true);
    }
  }
  for (const t of input.threads ?? []) nodes.add(`thread ${t.name} (${t.op})`);
  const list = [...nodes];
  const cycle = findCycle(list, edges);
  return { nodes: list, edges, cycle, cycleText: cycle ? cycleText(cycle, edges) : '' };
}

/** The first cycle reachable by depth-first search, node names with the first repeated last. */
export function findCycle(nodes: string[], edges: WaitEdge[]): string[] | null {
  const out = new Map<string, string[]>();
  for (const e of edges) out.set(e.from, [...(out.get(e.from) ?? []), e.to]);
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const dfs = (n: string): string[] | null => {
    state.set(n, 1);
    stack.push(n);
    for (const m of out.get(n) ?? []) {
      if (state.get(m) === 1) return [...stack.slice(stack.indexOf(m)), m];
      if (!state.has(m)) {
        const c = dfs(m);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(n, 2);
    return null;
  };
  for (const n of nodes) {
    if (state.has(n)) continue;
    const c = dfs(n);
    if (c) return c;
  }
  return null;
}

function cycleText(cycle: string[], edges: WaitEdge[]): string {
  let s = cycle[0];
  for (let i = 1; i < cycle.length; i++) {
    const e = edges.find((x) => x.from === cycle[i - 1] && x.to === cycle[i]);
    s += ` -[${e?.why ?? '?'}${e?.inferred ? ', inferred' : ''}]-> ${cycle[i]}`;
  }
  return s;
}
