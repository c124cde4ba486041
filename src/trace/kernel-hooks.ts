/**
 * Connects a TraceRecorder to a kernel, without touching the kernel's code paths:
 *
 * - completed invalidations come from the kernel's observer (`onInvalidation`), which hands over the
 *   record the notifier core built anyway (start, each subscriber's answer time and result, end);
 * - syscalls and kernel activities are timed by interposing on the kernel object's own entry points
 *   (the methods the HTTP API, the soak, the demo and the daemons call), on this one instance: the
 *   prototype and every other Kernel stay untouched, and with tracing off nothing is interposed;
 * - device requests (range faults, readBegin waits, migrations, DMA) are recorded where the kernel
 *   serves them (device-services.ts, external-device.ts, worker-device.ts, the notifier core), each
 *   behind a `kernel.trace` null check.
 *
 * Why entry points and not the activity modules: an activity runs from several callers (a request, a
 * daemon tick, direct reclaim under memory pressure), and the span should say which; the modules
 * themselves stay free of tracing.
 */
import type { Kernel, Process } from '../kernel/kernel.js';
import type { DaemonName } from '../kernel/activity/daemons.js';
import { nowUs, type TraceRecorder, type TrackKey } from './recorder.js';

/**
 * Address arguments are passed as numbers with their position in the args object set in
 * `Call.hex`: the recorder stores the number and the export writes it as '0x' + n.toString(16)
 * (formatting it on every call was the hooks' largest cost).
 */
const HEX0 = 1;
const keyCount = (o: Record<string, unknown> | undefined): number => {
  let n = 0;
  for (const _ in o) n++;
  return n;
};

/** The track of each kernel activity: the invalidations it sends carry the same name as origin. */
export const ACTIVITY_TRACKS = ['reclaim', 'compaction', 'migration', 'numa_balancing', 'ksm', 'khugepaged', 'thp_split', 'writeback', 'oom_reaper'] as const;
export type ActivityTrack = (typeof ACTIVITY_TRACKS)[number];

const DAEMON_TRACK: Record<DaemonName, ActivityTrack> = {
  kswapd: 'reclaim',
  kcompactd: 'compaction',
  numa: 'numa_balancing',
  ksmd: 'ksm',
  khugepaged: 'khugepaged',
  flusher: 'writeback',
};

interface Call {
  track: TrackKey;
  name: string;
  pid: number | null;
  args?: Record<string, unknown>;
  /** Bit i set: the i-th value of args is an address, written in hex (TraceRecorder.span). */
  hex?: number;
}

/** Numbers and short strings of an activity's result (what it did), for the span's args. */
function summary(r: unknown): Record<string, unknown> | undefined {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return undefined;
  const out: Record<string, unknown> = {};
  let n = 0;
  for (const [k, v] of Object.entries(r)) {
    if (typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    if (++n > 16) break;
  }
  return out;
}

/** The syscalls traced on the process tracks: method, span name, args from the call's arguments (an address first: HEX0). */
const SYSCALLS: Array<[string, string, (a: unknown[]) => Record<string, unknown>]> = [
  ['mmap', 'mmap', (a) => {
    const m = a[1] as Record<string, unknown>;
    return { addr: m.addr, length: m.length, prot: m.prot, shared: m.shared ?? false, fixed: m.fixed ?? false, populate: m.populate ?? false, file: m.file ? true : false };
  }],
  ['munmap', 'munmap', (a) => ({ addr: a[1], length: a[2] })],
  ['mremap', 'mremap', (a) => {
    const m = a[1] as Record<string, unknown>;
    return { addr: m.addr, length: m.length, newLength: m.newLength };
  }],
  ['mprotect', 'mprotect', (a) => ({ addr: a[1], length: a[2], prot: a[3] })],
  ['madvise', 'madvise', (a) => ({ addr: a[1], length: a[2], advice: a[3] })],
  ['brk', 'brk', (a) => ({ addr: a[1] })],
  ['msync', 'msync', (a) => ({ addr: a[1], length: a[2] })],
  ['clearRefs', 'clear_refs', (a) => ({ mode: a[1] })],
  ['read', 'cpu read', (a) => ({ addr: a[1], length: a[2] })],
  ['write', 'cpu write', (a) => ({ addr: a[1], length: (a[2] as Uint8Array | undefined)?.length })],
  ['fork', 'fork', () => ({})],
  ['exit', 'exit', () => ({})],
  ['exitProcess', 'exit', () => ({})],
];

/**
 * Interposes on `obj[key]` (an async method) so that each call records a span. Returns the undo.
 * The wrapper calls the original with the same `this` and arguments and returns the original's own
 * promise (no extra async frame or promise on the caller's path); the span is recorded by a reaction
 * on that promise, registered before the caller's, so it is in the ring when the caller resumes. A
 * failure is recorded (its code) and reaches the caller unchanged.
 */
function interpose(tr: TraceRecorder, obj: object, key: string, describe: (args: unknown[]) => Call | null, after?: (r: unknown, c: Call) => void): () => void {
  const o = obj as Record<string, unknown>;
  const orig = o[key] as ((...a: unknown[]) => Promise<unknown>) | undefined;
  if (typeof orig !== 'function') throw new Error(`trace: ${key} is not a method to interpose on`);
  const own = Object.prototype.hasOwnProperty.call(o, key);
  const failed = (c: Call, e: unknown): void => {
    c.args = { ...c.args, error: (e as { code?: string } | null)?.code ?? String(e) };
  };
  o[key] = function (this: unknown, ...args: unknown[]): Promise<unknown> {
    const c = describe(args);
    if (c === null) return orig.apply(this, args);
    const t0 = nowUs();
    let p: Promise<unknown>;
    try {
      p = orig.apply(this, args);
    } catch (e) {
      // Not an async function after all: threw before returning a promise (rejected, as before).
      failed(c, e);
      tr.span(c.track, c.name, t0, c.pid, c.args, nowUs(), c.hex);
      return Promise.reject(e);
    }
    if (!(p instanceof Promise)) {
      after?.(p, c);
      tr.span(c.track, c.name, t0, c.pid, c.args, nowUs(), c.hex);
      return Promise.resolve(p);
    }
    p.then(
      (r) => {
        try {
          after?.(r, c);
        } catch {
          // Describing the result must not fail the call (nor reject this unobserved reaction).
        }
        tr.span(c.track, c.name, t0, c.pid, c.args, nowUs(), c.hex);
      },
      (e) => {
        failed(c, e);
        tr.span(c.track, c.name, t0, c.pid, c.args, nowUs(), c.hex);
      },
    );
    return p;
  };
  return () => {
    if (own) o[key] = orig;
    else delete o[key];
  };
}

/**
 * Starts tracing `k` into `tr`; returns the function that stops it. Only one recorder per kernel.
 */
export function attachTracing(k: Kernel, tr: TraceRecorder): () => void {
  if (k.trace) throw new Error('trace: this kernel is already traced');
  const undo: Array<() => void> = [];
  const proc = (x: unknown): { pid: number | null } => ({ pid: pidOf(x) });
  const pidOf = (x: unknown): number | null => {
    const p = typeof x === 'object' && x !== null ? (x as Process) : k.findProcess(x as number | string);
    if (p) {
      tr.noteProcess(p.pid, p.name);
      return p.pid;
    }
    return typeof x === 'number' ? x : null;
  };
  // The same string per process, so the recorder's interning finds it by its cached hash.
  const processTracks = new Map<number | null, TrackKey>();
  const processTrack = (pid: number | null): TrackKey => {
    let t = processTracks.get(pid);
    if (t === undefined) {
      if (processTracks.size > 4096) processTracks.clear();
      processTracks.set(pid, (t = `p:${pid ?? '?'}`));
    }
    return t;
  };

  undo.push(k.observe({ onInvalidation: (rec) => tr.invalidation(rec) }));

  for (const [method, name, args] of SYSCALLS) {
    undo.push(
      interpose(
        tr,
        k,
        method,
        (a) => {
          const pid = pidOf(a[0]);
          return { track: processTrack(pid), name, pid, args: args(a), hex: HEX0 };
        },
        (r, c) => {
          if (method === 'fork' && r && typeof r === 'object') {
            const child = r as Process;
            tr.noteProcess(child.pid, child.name);
            c.args = { ...c.args, child: child.pid };
          } else if (typeof r === 'number') {
            c.hex = (c.hex ?? 0) | (1 << keyCount(c.args));
            c.args = { ...c.args, result: r };
          }
        },
      ),
    );
  }

  const activity = (method: string, track: ActivityTrack, name: string, args: (a: unknown[]) => { pid: number | null; args?: Record<string, unknown> }, hex = 0): void => {
    const key = `a:${track}`;
    undo.push(
      interpose(
        tr,
        k,
        method,
        (a) => {
          const d = args(a);
          return { track: key, name, pid: d.pid, args: d.args, hex };
        },
        (r, c) => {
          const s = summary(r);
          if (s) c.args = { ...c.args, ...s };
          else if (typeof r === 'boolean') c.args = { ...c.args, result: r };
        },
      ),
    );
  };
  const machine = () => ({ pid: null });
  activity('reclaim', 'reclaim', 'shrink', (a) => ({ pid: null, args: { pages: a[0], by: 'request' } }));
  activity('compact', 'compaction', 'compact', (a) => ({ pid: null, args: { node: a[0] ?? 0, by: 'request' } }));
  activity('migrate', 'migration', 'migrate_pages', (a) => ({ ...proc(a[0]), args: { addr: a[1], length: a[2], node: a[3] } }), HEX0);
  activity('numaBalance', 'numa_balancing', 'task_numa_work', (a) => ({ ...proc(a[0]), args: { bytes: a[1] } }));
  activity('ksm', 'ksm', 'ksm scan', machine);
  activity('khugepaged', 'khugepaged', 'khugepaged scan', (a) => ({ pid: null, args: { max: a[0] } }));
  activity('collapse', 'khugepaged', 'collapse', (a) => ({ ...proc(a[0]), args: { addr: a[1] } }), HEX0);
  activity('splitThp', 'thp_split', 'split_huge_page', (a) => ({ ...proc(a[0]), args: { addr: a[1] } }), HEX0);
  activity('writeback', 'writeback', 'writeback', machine);
  activity('oomKill', 'oom_reaper', 'oom kill', (a) => (a[0] === undefined ? { pid: null } : proc(a[0])));
  activity('oomReap', 'oom_reaper', 'oom reap', (a) => proc(a[0]));

  // Device memory eviction (the device is gone, or asked for it): on the device's track.
  undo.push(interpose(tr, k, 'evictDeviceMemory', (a) => ({ track: `d:${a[0]}`, name: 'evict device memory', pid: null }), (r, c) => (c.args = { pages: r })));

  // Background runs: a daemon tick calls runOnce, which calls the activity modules directly.
  undo.push(
    interpose(tr, k.daemons, 'runOnce', (a) => {
      const track = DAEMON_TRACK[a[0] as DaemonName];
      return track ? { track: `a:${track}`, name: String(a[0]), pid: null, args: { by: 'daemon' } } : null;
    }),
  );

  // Direct reclaim and the OOM killer under allocation pressure (allocSlow).
  const pressure = k.pressure;
  if (pressure) {
    undo.push(interpose(tr, pressure, 'reclaim', (a) => ({ track: 'a:reclaim', name: 'direct reclaim', pid: null, args: { pages: a[1], scan: a[2] } }), (r, c) => (c.args = { ...c.args, reclaimed: r })));
    undo.push(interpose(tr, pressure, 'oom', () => ({ track: 'a:oom_reaper', name: 'oom kill (allocation failed)', pid: null }), (r, c) => (c.args = { ...c.args, killed: r })));
  }

  k.trace = tr;
  return () => {
    k.trace = null;
    for (const u of undo.reverse()) u();
  };
}
