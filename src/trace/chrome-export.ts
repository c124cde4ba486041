/**
 * Trace entries to the Chrome trace event format (JSON object form), which ui.perfetto.dev and
 * chrome://tracing open. The subset emitted is described by docs/trace.schema.json.
 *
 * Layout: three trace "processes", each with one thread (track) per subject:
 *   1 kernel     "notifier (invalidations)", then one track per kernel activity (reclaim, ...)
 *   2 devices    one track per device ("gpu0 (worker)", "nic0 (external)"), and its DMA counters
 *   3 processes  one track per emulated process, its syscalls ("pid 101 demo")
 *
 * Nesting. Complete events (ph X) on one thread must nest strictly, but the kernel runs many things
 * at once (two invalidations of different processes, a device's range fault across an
 * invalidation of its range). Each track's spans are therefore packed into lanes: a span goes to
 * the first lane where it nests inside (or follows) what is open there; a track that needed more
 * than one lane gets threads named "gpu0 (worker) #2", ... sorted next to the first. Times are
 * rounded to whole nanoseconds before packing, so that the nesting holds exactly in the JSON.
 */
import { eventName, rangeBlockable } from '../notifier/range.js';
import { ULONG_MAX } from '../kernel/layout.js';
import type { DeviceName, TraceEntry, TrackKey } from './recorder.js';

export interface ChromeEvent {
  name: string;
  ph: 'X' | 'B' | 'E' | 'i' | 'M' | 'C' | 's' | 'f';
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  cat?: string;
  s?: 't' | 'p' | 'g';
  id?: number;
  bp?: 'e';
  args?: Record<string, unknown>;
}

export interface ChromeTrace {
  traceEvents: ChromeEvent[];
  displayTimeUnit: 'ns';
  metadata: Record<string, unknown>;
}

export interface ExportNames {
  process(pid: number): string | undefined;
  device(id: number): DeviceName | undefined;
}

export const TRACE_PIDS = { kernel: 1, devices: 2, processes: 3 } as const;
const GROUP_NAMES: Record<number, string> = { 1: 'kernel', 2: 'devices', 3: 'processes' };

const KERNEL_TRACK = 'k';
const ACTIVITY_ORDER = ['reclaim', 'compaction', 'migration', 'numa_balancing', 'ksm', 'khugepaged', 'thp_split', 'writeback', 'oom_reaper'];

export const hexAddr = (n: number): string => (n >= ULONG_MAX ? '0xffffffffffffffff' : '0x' + n.toString(16));
const ns = (us: number): number => Math.round(us * 1000);

interface Slice {
  track: TrackKey;
  name: string;
  cat: string;
  t0: number;
  t1: number;
  args?: Record<string, unknown>;
  lane: number;
  /** Flow ids leaving (s) or arriving at (f) this slice, at its start. */
  flowOut?: number[];
  flowIn?: number;
}

function groupOf(track: TrackKey): number {
  if (track === KERNEL_TRACK || track.startsWith('a:')) return TRACE_PIDS.kernel;
  if (track.startsWith('p:')) return TRACE_PIDS.processes;
  return TRACE_PIDS.devices;
}

/** Sort key within a group: the notifier first, activities in a fixed order, then by id. */
function orderOf(track: TrackKey): [number, number, string] {
  if (track === KERNEL_TRACK) return [0, 0, ''];
  const [k, rest] = [track.slice(0, 1), track.slice(2)];
  if (k === 'a') {
    const i = ACTIVITY_ORDER.indexOf(rest);
    return [1, i < 0 ? ACTIVITY_ORDER.length : i, rest];
  }
  const n = Number(rest);
  return [k === 's' ? 3 : 2, Number.isFinite(n) ? n : 0, rest];
}

function trackName(track: TrackKey, names: ExportNames): string {
  if (track === KERNEL_TRACK) return 'notifier (invalidations)';
  const rest = track.slice(2);
  switch (track[0]) {
    case 'a':
      return rest;
    case 'p': {
      const pid = Number(rest);
      const n = Number.isFinite(pid) ? names.process(pid) : undefined;
      return n ? `pid ${rest} ${n}` : `pid ${rest}`;
    }
    case 'd': {
      const d = names.device(Number(rest));
      return d ? `${d.name} (${d.transport})` : `device ${rest}`;
    }
    default:
      return `subscriber ${rest}`;
  }
}

/**
 * Packs slices into lanes so that slices of one lane nest strictly. `slices` must be sorted by
 * start, longest first among equal starts.
 */
export function packLanes(slices: Slice[]): number {
  const lanes: number[][] = [];
  for (const s of slices) {
    let placed = -1;
    for (let i = 0; i < lanes.length && placed < 0; i++) {
      const open = lanes[i];
      while (open.length && open[open.length - 1] <= s.t0) open.pop();
      if (open.length === 0 || s.t1 <= open[open.length - 1]) placed = i;
    }
    if (placed < 0) {
      placed = lanes.length;
      lanes.push([]);
    }
    lanes[placed].push(s.t1);
    s.lane = placed;
  }
  return lanes.length;
}

/** The Chrome trace of `entries` (any order). */
export function toChromeTrace(entries: readonly TraceEntry[], names: ExportNames, metadata: Record<string, unknown> = {}): ChromeTrace {
  const slices: Slice[] = [];
  const instants: Array<{ track: TrackKey; name: string; t: number; args?: Record<string, unknown> }> = [];
  const counters: Array<{ track: TrackKey; name: string; t: number; values: Record<string, number> }> = [];
  const tracks = new Set<TrackKey>();
  let nextFlow = 1;

  for (const e of entries) {
    switch (e.kind) {
      case 'inv': {
        const rec = e.rec;
        const r = rec.range;
        const event = eventName(r.event);
        const common = {
          id: r.id,
          pid: r.pid,
          start: hexAddr(r.start),
          end: hexAddr(r.end),
          event,
          origin: r.origin,
          blockable: rangeBlockable(r),
          owner: r.owner,
        };
        const t0 = ns(rec.startedUs);
        const t1 = Math.max(t0, ns(rec.endedUs));
        const acked = Math.min(t1, Math.max(t0, ns(rec.ackedUs)));
        const kernel: Slice = {
          track: KERNEL_TRACK,
          name: `${event} ${r.origin}`,
          cat: 'invalidation',
          t0,
          t1,
          lane: 0,
          args: { ...common, result: rec.result, subscribers: rec.subscribers.length, ackUs: (acked - t0) / 1000 },
          flowOut: [],
        };
        slices.push(kernel);
        tracks.add(KERNEL_TRACK);
        if (acked > t0) slices.push({ track: KERNEL_TRACK, name: 'wait for acks', cat: 'invalidation', t0, t1: acked, lane: 0, args: { id: r.id } });
        for (const s of rec.subscribers) {
          const track = s.info.deviceId !== undefined ? `d:${s.info.deviceId}` : `s:${s.info.label}`;
          tracks.add(track);
          const flow = nextFlow++;
          kernel.flowOut!.push(flow);
          const ackAt = Math.min(t1, t0 + Math.max(0, ns(s.ackUs)));
          slices.push({
            track,
            name: event,
            cat: 'invalidation',
            t0,
            t1: ackAt,
            lane: 0,
            flowIn: flow,
            args: { ...common, result: s.result, subscriber: s.info.label, kind: s.kind, ackUs: (ackAt - t0) / 1000 },
          });
          instants.push({ track, name: rec.result === 'ok' ? `end ${event}` : 'start unwound (EAGAIN)', t: t1, args: { id: r.id } });
        }
        break;
      }
      case 'span': {
        const t0 = ns(e.t0);
        slices.push({ track: e.track, name: e.name, cat: e.track[0] === 'p' ? 'syscall' : e.track[0] === 'a' ? 'activity' : 'device', t0, t1: Math.max(t0, ns(e.t1)), lane: 0, args: e.args });
        tracks.add(e.track);
        break;
      }
      case 'instant':
        instants.push({ track: e.track, name: e.name, t: ns(e.t), args: e.args });
        tracks.add(e.track);
        break;
      case 'counter':
        counters.push({ track: e.track, name: e.name, t: ns(e.t), values: e.values });
        tracks.add(e.track);
        break;
    }
  }

  // Lanes per track.
  slices.sort((a, b) => a.t0 - b.t0 || b.t1 - a.t1);
  const byTrack = new Map<TrackKey, Slice[]>();
  for (const s of slices) {
    const l = byTrack.get(s.track);
    if (l) l.push(s);
    else byTrack.set(s.track, [s]);
  }
  const laneCount = new Map<TrackKey, number>();
  for (const [t, l] of byTrack) laneCount.set(t, packLanes(l));

  // Thread ids: tracks sorted within their group, lanes next to each other.
  const sorted = [...tracks].sort((a, b) => {
    const ga = groupOf(a) - groupOf(b);
    if (ga) return ga;
    const [x1, y1, z1] = orderOf(a);
    const [x2, y2, z2] = orderOf(b);
    return x1 - x2 || y1 - y2 || (z1 < z2 ? -1 : z1 > z2 ? 1 : 0);
  });
  const tids = new Map<string, number>();
  const meta: ChromeEvent[] = [];
  for (const pid of [TRACE_PIDS.kernel, TRACE_PIDS.devices, TRACE_PIDS.processes]) {
    meta.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name: GROUP_NAMES[pid] } });
    meta.push({ name: 'process_sort_index', ph: 'M', pid, tid: 0, args: { sort_index: pid } });
  }
  let tid = 1;
  for (const t of sorted) {
    const name = trackName(t, names);
    const pid = groupOf(t);
    for (let lane = 0; lane < Math.max(1, laneCount.get(t) ?? 1); lane++) {
      tids.set(`${t}\u0000${lane}`, tid);
      meta.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name: lane === 0 ? name : `${name} #${lane + 1}` } });
      meta.push({ name: 'thread_sort_index', ph: 'M', pid, tid, args: { sort_index: tid } });
      tid++;
    }
  }
  const where = (track: TrackKey, lane: number): { pid: number; tid: number } => ({ pid: groupOf(track), tid: tids.get(`${track}\u0000${lane}`) as number });

  const events: ChromeEvent[] = [];
  for (const s of slices) {
    const w = where(s.track, s.lane);
    const ts = s.t0 / 1000;
    events.push({ name: s.name, ph: 'X', cat: s.cat, ...w, ts, dur: (s.t1 - s.t0) / 1000, ...(s.args ? { args: s.args } : {}) });
    // A flow starts on the kernel's span and ends on each subscriber's span, both at the publish.
    for (const id of s.flowOut ?? []) events.push({ name: 'invalidate', ph: 's', cat: 'invalidation', id, ...w, ts });
    if (s.flowIn !== undefined) events.push({ name: 'invalidate', ph: 'f', bp: 'e', cat: 'invalidation', id: s.flowIn, ...w, ts });
  }
  for (const i of instants) events.push({ name: i.name, ph: 'i', s: 't', cat: i.track === KERNEL_TRACK ? 'invalidation' : 'device', ...where(i.track, 0), ts: i.t / 1000, ...(i.args ? { args: i.args } : {}) });
  for (const c of counters) {
    events.push({ name: `${trackName(c.track, names)} ${c.name}`, ph: 'C', pid: groupOf(c.track), tid: 0, ts: c.t / 1000, args: c.values });
  }
  // Flow starts after their slice at the same timestamp; otherwise by time, longer spans first.
  const rank = (e: ChromeEvent): number => (e.ph === 'X' ? 0 : e.ph === 's' || e.ph === 'f' ? 1 : 2);
  events.sort((a, b) => (a.ts as number) - (b.ts as number) || rank(a) - rank(b) || (b.dur ?? 0) - (a.dur ?? 0));
  return { traceEvents: [...meta, ...events], displayTimeUnit: 'ns', metadata };
}
