/**
 * The trace recorder: a bounded ring of what happened in the kernel process, with performance.now()
 * timestamps in microseconds (the clock the notifier core stamps its records with), exported to the
 * Chrome trace / Perfetto JSON format by chrome-export.ts.
 *
 * Cost model. The kernel holds `kernel.trace` (null when tracing is off: every hook is one null
 * check). When on, a completed invalidation costs one ring store of the record the notifier core
 * built anyway (kept by reference, never copied or formatted); everything else is one small object.
 * Formatting happens only at export. Entries are recorded when they complete, so a span still open
 * at export time is not in the trace.
 *
 * Bounded: the ring keeps the newest `capacity` entries; older ones are overwritten and counted as
 * dropped. Entries carry a sequence number (1, 2, ...) so readers page with `since` like
 * GET /v1/events.
 */
import type { InvalidationRecord, SubscriberInfo } from '../notifier/subscriptions.js';

/** µs on the performance.now() clock, like InvalidationRecord's stamps. */
export const nowUs = (): number => performance.now() * 1000;

/**
 * Which track an entry belongs to:
 * - `a:<activity>` a kernel activity (reclaim, compaction, khugepaged, ...);
 * - `p:<pid>` the syscalls of one emulated process;
 * - `d:<deviceId>` one device (worker or external client);
 * - `s:<label>` a subscriber that is no device (a kernel-internal or test subscription).
 */
export type TrackKey = string;

interface Base {
  /** Sequence number, from 1. */
  seq: number;
  /** Emulated process the entry concerns, or null for machine-wide ones (activities). */
  pid: number | null;
}
export interface InvalidationEntry extends Base {
  kind: 'inv';
  rec: InvalidationRecord;
}
export interface SpanEntry extends Base {
  kind: 'span';
  track: TrackKey;
  name: string;
  t0: number;
  t1: number;
  args?: Record<string, unknown>;
}
export interface InstantEntry extends Base {
  kind: 'instant';
  track: TrackKey;
  name: string;
  t: number;
  args?: Record<string, unknown>;
}
export interface CounterEntry extends Base {
  kind: 'counter';
  track: TrackKey;
  name: string;
  t: number;
  values: Record<string, number>;
}
export type TraceEntry = InvalidationEntry | SpanEntry | InstantEntry | CounterEntry;

export interface DeviceName {
  name: string;
  /** worker or external */
  transport: string;
  kind?: string;
}

export interface TracePage {
  entries: TraceEntry[];
  /** Sequence number of the last entry examined: pass it as `since` to continue. */
  nextSince: number;
  /** Entries after `since` (or in all, without it) that aged out of the ring before this read. */
  dropped: number;
}

export const DEFAULT_TRACE_CAPACITY = 50_000;

export class TraceRecorder {
  private readonly ring: (TraceEntry | undefined)[];
  private last = 0;
  /** Names seen while recording: processes and devices may be gone when the trace is exported. */
  readonly processNames = new Map<number, string>();
  readonly deviceNames = new Map<number, DeviceName>();
  /** Looks a device up by id (set by the service); called once per device, when first seen. */
  resolveDevice: ((id: number) => DeviceName | null) | null = null;

  constructor(readonly capacity = DEFAULT_TRACE_CAPACITY) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError('trace capacity must be a positive integer');
    this.ring = new Array(capacity);
  }

  /** Entries recorded since start (including those dropped). */
  get recorded(): number {
    return this.last;
  }

  /** Entries overwritten so far. */
  get dropped(): number {
    return Math.max(0, this.last - this.capacity);
  }

  private push(e: TraceEntry): void {
    e.seq = ++this.last;
    this.ring[e.seq % this.capacity] = e;
  }

  // ---- recording -------------------------------------------------------------------------------

  invalidation(rec: InvalidationRecord): void {
    for (const s of rec.subscribers) if (s.info.deviceId !== undefined) this.noteDevice(s.info.deviceId);
    this.push({ kind: 'inv', seq: 0, pid: rec.range.pid, rec });
  }

  span(track: TrackKey, name: string, t0: number, pid: number | null, args?: Record<string, unknown>, t1 = nowUs()): void {
    this.push({ kind: 'span', seq: 0, pid, track, name, t0, t1, args });
  }

  instant(track: TrackKey, name: string, pid: number | null, args?: Record<string, unknown>, t = nowUs()): void {
    this.push({ kind: 'instant', seq: 0, pid, track, name, t, args });
  }

  counter(track: TrackKey, name: string, pid: number | null, values: Record<string, number>, t = nowUs()): void {
    this.push({ kind: 'counter', seq: 0, pid, track, name, t, values });
  }

  /** A span on a device's track (range faults, migrations, readBegin waits). */
  deviceSpan(deviceId: number, name: string, t0: number, pid: number | null, args?: Record<string, unknown>): void {
    this.noteDevice(deviceId);
    this.span(`d:${deviceId}`, name, t0, pid, args);
  }

  /** The track of a subscriber: its device's, or one named after it. */
  subscriberTrack(info: SubscriberInfo): TrackKey {
    if (info.deviceId !== undefined) {
      this.noteDevice(info.deviceId);
      return `d:${info.deviceId}`;
    }
    return `s:${info.label}`;
  }

  noteProcess(pid: number, name: string): void {
    if (this.processNames.get(pid) !== name) this.processNames.set(pid, name);
  }

  noteDevice(id: number): void {
    if (this.deviceNames.has(id)) return;
    const d = this.resolveDevice?.(id) ?? null;
    if (d) this.deviceNames.set(id, d);
  }

  // ---- reading ---------------------------------------------------------------------------------

  /**
   * Without `since`: the newest `limit` matching entries, oldest first. With `since`: the matching
   * entries after it, oldest first, at most `limit`.
   */
  query(opts: { since?: number; limit?: number; filter?: (e: TraceEntry) => boolean } = {}): TracePage {
    const limit = Math.max(1, Math.min(opts.limit ?? this.capacity, this.capacity));
    const oldest = Math.max(1, this.last - this.capacity + 1);
    const match = (e: TraceEntry | undefined): e is TraceEntry => e !== undefined && (opts.filter === undefined || opts.filter(e));
    const entries: TraceEntry[] = [];
    if (opts.since !== undefined) {
      const from = opts.since + 1;
      const dropped = from < oldest ? oldest - from : 0;
      let lastExamined = Math.min(opts.since, this.last);
      for (let s = Math.max(from, oldest); s <= this.last && entries.length < limit; s++) {
        lastExamined = s;
        const e = this.ring[s % this.capacity];
        if (e && e.seq === s && match(e)) entries.push(e);
      }
      return { entries, nextSince: lastExamined, dropped };
    }
    for (let s = this.last; s >= oldest && entries.length < limit; s--) {
      const e = this.ring[s % this.capacity];
      if (e && e.seq === s && match(e)) entries.push(e);
    }
    entries.reverse();
    return { entries, nextSince: this.last, dropped: this.dropped };
  }
}
