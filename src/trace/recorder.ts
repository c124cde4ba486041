/**
 * The trace recorder: a bounded ring of what happened in the kernel process, with performance.now()
 * timestamps in microseconds (the clock the notifier core stamps its records with), exported to the
 * Chrome trace / Perfetto JSON format by chrome-export.ts.
 *
 * Cost model. The kernel holds `kernel.trace` (null when tracing is off: every hook is one null
 * check). When on, recording an entry copies its numbers into preallocated columns (a
 * struct-of-arrays ring of typed arrays) and allocates nothing: strings (tracks, names, origins,
 * string arguments) are interned into a small table, arguments are stored as a shape id (which keys,
 * of which type) and up to MAX_ARGS numbers, an invalidation's subscribers in MAX_SUBS inline slots.
 * So the ring holds no per-entry objects, and what the kernel built for an entry (its
 * InvalidationRecord, the arguments object) dies young. The entries are rebuilt as objects only when
 * read (query, export). Rare entries that do not fit (more arguments or subscribers than the inline
 * slots, arguments that are neither numbers, booleans, null nor strings) keep a copy of their
 * objects on the side.
 *
 * Entries are recorded when they complete, so a span still open at export time is not in the trace.
 *
 * Bounded: the ring keeps the newest `capacity` entries; older ones are overwritten and counted as
 * dropped. Entries carry a sequence number (1, 2, ...) so readers page with `since` like
 * GET /v1/events. The string table is compacted (to the strings the ring still uses) when it grows
 * past STRING_LIMIT, so unique strings (pids, error messages) do not pile up in a long run.
 */
import { performance } from 'node:perf_hooks';
import type { InvalidationRecord, SubscriberInfo, SubscriberOutcome } from '../notifier/subscriptions.js';
import type { MmuNotifierEvent, NotifierRange, Origin } from '../notifier/range.js';

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

/** Numbers stored inline per entry (arguments, or an invalidation's fields). */
const MAX_ARGS = 8;
/** Subscribers stored inline per invalidation. */
const MAX_SUBS = 4;
/** The string table is compacted when it grows past this (and grows if still full after that). */
const STRING_LIMIT = 16_384;
/** At most this many argument shapes; entries of a new shape beyond it keep their objects. */
const SHAPE_LIMIT = 4096;

const K_INV = 1;
const K_SPAN = 2;
const K_INSTANT = 3;
const K_COUNTER = 4;

// Argument value types.
const T_NUM = 0;
const T_HEX = 1; // a string '0x...' of a number below 2^52: stored as the number, written back as it was
const T_STR = 2; // interned
const T_BOOL = 3;
const T_NULL = 4;
const T_UNDEF = 5;
const TYPES = 6;

// Side-store flags per slot.
const F_ARGS = 1;
const F_SUBS = 2;

const SUB_KINDS = ['interval', 'mm'] as const;
const SUB_RESULTS = ['ok', 'would-block', 'bug'] as const;

/** A node of the argument-shape trie: keys in order, each with the type of its value. */
interface ShapeNode {
  id: number;
  next: Map<string, Array<ShapeNode | undefined>> | null;
}
interface Shape {
  keys: string[];
  types: number[];
}

/** A '0x...' string that is exactly '0x' + n.toString(16) for a number n below 2^52. */
function hexValue(s: string): number {
  const n = s.length;
  if (n < 3 || n > 15 || s.charCodeAt(0) !== 48 || s.charCodeAt(1) !== 120) return -1;
  if (n > 3 && s.charCodeAt(2) === 48) return -1; // leading zero
  for (let i = 2; i < n; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return -1;
  }
  return Number(s);
}

export class TraceRecorder {
  private last = 0;
  // The ring, one column per field; slot = seq % capacity.
  private readonly kind: Uint8Array;
  private readonly flags: Uint8Array;
  private readonly pid: Float64Array; // NaN: null
  private readonly track: Int32Array; // string id (invalidations: unused)
  private readonly name: Int32Array; // string id (invalidations: origin)
  private readonly t0: Float64Array;
  private readonly t1: Float64Array;
  private readonly shape: Int32Array; // argument shape, -1 none, -2 on the side; invalidations: subscriber count
  private readonly val: Float64Array; // MAX_ARGS per slot
  // Invalidations' subscribers, MAX_SUBS per slot.
  private readonly subInfo: Array<SubscriberInfo | undefined>;
  private readonly subCode: Uint8Array; // kind * 4 + result
  private readonly subAck: Float64Array;
  // What did not fit, by slot.
  private readonly sideArgs = new Map<number, Record<string, unknown> | undefined>();
  private readonly sideSubs = new Map<number, SubscriberOutcome[]>();

  private strings: string[] = [];
  private stringIds = new Map<string, number>();
  private stringLimit = STRING_LIMIT;
  private readonly shapes: Shape[] = [];
  private readonly shapeRoot: ShapeNode = { id: -1, next: null };
  private readonly scratchTypes = new Uint8Array(MAX_ARGS);

  /** Names seen while recording: processes and devices may be gone when the trace is exported. */
  readonly processNames = new Map<number, string>();
  readonly deviceNames = new Map<number, DeviceName>();
  /** Looks a device up by id (set by the service); called once per device, when first seen. */
  resolveDevice: ((id: number) => DeviceName | null) | null = null;

  constructor(readonly capacity = DEFAULT_TRACE_CAPACITY) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError('trace capacity must be a positive integer');
    this.kind = new Uint8Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.pid = new Float64Array(capacity);
    this.track = new Int32Array(capacity);
    this.name = new Int32Array(capacity);
    this.t0 = new Float64Array(capacity);
    this.t1 = new Float64Array(capacity);
    this.shape = new Int32Array(capacity);
    this.val = new Float64Array(capacity * MAX_ARGS);
    this.subInfo = new Array(capacity * MAX_SUBS).fill(undefined);
    this.subCode = new Uint8Array(capacity * MAX_SUBS);
    this.subAck = new Float64Array(capacity * MAX_SUBS);
  }

  /** Entries recorded since start (including those dropped). */
  get recorded(): number {
    return this.last;
  }

  /** Entries overwritten so far. */
  get dropped(): number {
    return Math.max(0, this.last - this.capacity);
  }

  /** Claims the next slot (the oldest entry's, once full) and returns it. */
  private next(kind: number, pid: number | null): number {
    if (this.strings.length > this.stringLimit) this.compactStrings();
    const slot = ++this.last % this.capacity;
    if (this.flags[slot] !== 0) {
      this.sideArgs.delete(slot);
      this.sideSubs.delete(slot);
      this.flags[slot] = 0;
    }
    this.kind[slot] = kind;
    this.pid[slot] = pid === null ? NaN : pid;
    return slot;
  }

  private intern(s: string): number {
    let id = this.stringIds.get(s);
    if (id === undefined) {
      id = this.strings.length;
      this.strings.push(s);
      this.stringIds.set(s, id);
    }
    return id;
  }

  /**
   * Stores `args` in `slot`: inline when they fit, else a copy on the side. Bit i of `hex`: the
   * i-th value, if a number, is an address to write as '0x' + n.toString(16).
   */
  private putArgs(slot: number, args: Record<string, unknown> | undefined, hex: number): void {
    if (args === undefined) {
      this.shape[slot] = -1;
      return;
    }
    let node = this.shapeRoot;
    let i = 0;
    const base = slot * MAX_ARGS;
    const types = this.scratchTypes;
    for (const k in args) {
      if (i === MAX_ARGS) return this.sideStore(slot, args);
      const v = args[k];
      let t: number;
      let x: number;
      switch (typeof v) {
        case 'number':
          t = (hex >>> i) & 1 ? T_HEX : T_NUM;
          x = v;
          break;
        case 'string':
          x = hexValue(v);
          if (x >= 0) t = T_HEX;
          else {
            t = T_STR;
            x = this.intern(v);
          }
          break;
        case 'boolean':
          t = T_BOOL;
          x = v ? 1 : 0;
          break;
        case 'undefined':
          t = T_UNDEF;
          x = 0;
          break;
        default:
          if (v !== null) return this.sideStore(slot, args);
          t = T_NULL;
          x = 0;
      }
      types[i] = t;
      this.val[base + i++] = x;
      let byType = node.next?.get(k);
      // Once the shape table is full, new keys go to the side store without growing the trie
      // (arguments whose key names keep changing would otherwise grow it for ever).
      if (byType === undefined) {
        if (this.shapes.length >= SHAPE_LIMIT) return this.sideStore(slot, args);
        byType = new Array<ShapeNode | undefined>(TYPES).fill(undefined);
        (node.next ??= new Map()).set(k, byType);
      }
      const next = byType[t];
      if (next === undefined && this.shapes.length >= SHAPE_LIMIT) return this.sideStore(slot, args);
      node = next ?? (byType[t] = { id: -1, next: null });
    }
    if (node.id < 0) {
      // A new shape (once per shape).
      if (this.shapes.length >= SHAPE_LIMIT) return this.sideStore(slot, args);
      node.id = this.shapes.length;
      this.shapes.push({ keys: Object.keys(args), types: Array.from(types.subarray(0, i)) });
    }
    this.shape[slot] = node.id;
  }

  private sideStore(slot: number, args: Record<string, unknown>): void {
    this.shape[slot] = -2;
    this.flags[slot] |= F_ARGS;
    this.sideArgs.set(slot, { ...args });
  }

  private getArgs(slot: number): Record<string, unknown> | undefined {
    const id = this.shape[slot];
    if (id === -1) return undefined;
    if (id === -2) {
      const a = this.sideArgs.get(slot);
      return a && { ...a };
    }
    const { keys, types } = this.shapes[id];
    const out: Record<string, unknown> = {};
    const base = slot * MAX_ARGS;
    for (let i = 0; i < keys.length; i++) {
      const x = this.val[base + i];
      switch (types[i]) {
        case T_NUM:
          out[keys[i]] = x;
          break;
        case T_HEX:
          out[keys[i]] = '0x' + x.toString(16);
          break;
        case T_STR:
          out[keys[i]] = this.strings[x];
          break;
        case T_BOOL:
          out[keys[i]] = x !== 0;
          break;
        case T_NULL:
          out[keys[i]] = null;
          break;
        default:
          out[keys[i]] = undefined;
      }
    }
    return out;
  }

  /** Keeps only the strings the ring still uses (and renumbers them). */
  private compactStrings(): void {
    const old = this.strings;
    const strings: string[] = [];
    const ids = new Map<string, number>();
    const map = new Int32Array(old.length).fill(-1);
    const remap = (id: number): number => {
      let n = map[id];
      if (n < 0) {
        n = map[id] = strings.length;
        strings.push(old[id]);
        ids.set(old[id], n);
      }
      return n;
    };
    const oldest = Math.max(1, this.last - this.capacity + 1);
    for (let s = oldest; s <= this.last; s++) {
      const slot = s % this.capacity;
      this.name[slot] = remap(this.name[slot]);
      if (this.kind[slot] === K_INV) continue;
      this.track[slot] = remap(this.track[slot]);
      const id = this.shape[slot];
      if (id < 0) continue;
      const { types } = this.shapes[id];
      for (let i = 0; i < types.length; i++) if (types[i] === T_STR) this.val[slot * MAX_ARGS + i] = remap(this.val[slot * MAX_ARGS + i]);
    }
    this.strings = strings;
    this.stringIds = ids;
    if (strings.length > this.stringLimit / 2) this.stringLimit *= 2;
  }

  // ---- recording -------------------------------------------------------------------------------

  invalidation(rec: InvalidationRecord): void {
    const subs = rec.subscribers;
    const n = subs.length;
    for (let i = 0; i < n; i++) {
      const d = subs[i].info.deviceId;
      if (d !== undefined && !this.deviceNames.has(d)) this.noteDevice(d);
    }
    const r = rec.range;
    const slot = this.next(K_INV, r.pid);
    this.name[slot] = this.intern(r.origin);
    this.t0[slot] = rec.startedUs;
    this.t1[slot] = rec.endedUs;
    this.shape[slot] = n;
    const v = this.val;
    const b = slot * MAX_ARGS;
    v[b] = r.id;
    v[b + 1] = r.start;
    v[b + 2] = r.end;
    v[b + 3] = r.event;
    v[b + 4] = r.flags;
    v[b + 5] = r.owner === null ? NaN : r.owner;
    v[b + 6] = rec.ackedUs;
    v[b + 7] = rec.result === 'ok' ? 0 : 1;
    const sb = slot * MAX_SUBS;
    if (n > MAX_SUBS) {
      this.flags[slot] |= F_SUBS;
      this.sideSubs.set(slot, subs.map((s) => ({ ...s })));
      for (let i = 0; i < MAX_SUBS; i++) this.subInfo[sb + i] = undefined;
      return;
    }
    for (let i = 0; i < MAX_SUBS; i++) {
      if (i < n) {
        const s = subs[i];
        this.subInfo[sb + i] = s.info;
        this.subCode[sb + i] = (s.kind === 'interval' ? 0 : 1) * 4 + (s.result === 'ok' ? 0 : s.result === 'would-block' ? 1 : 2);
        this.subAck[sb + i] = s.ackUs;
      } else this.subInfo[sb + i] = undefined;
    }
  }

  /** A span from t0 to t1; `hex`: see putArgs (bit i: the i-th argument is an address). */
  span(track: TrackKey, name: string, t0: number, pid: number | null, args?: Record<string, unknown>, t1 = nowUs(), hex = 0): void {
    const slot = this.next(K_SPAN, pid);
    this.track[slot] = this.intern(track);
    this.name[slot] = this.intern(name);
    this.t0[slot] = t0;
    this.t1[slot] = t1;
    this.putArgs(slot, args, hex);
  }

  instant(track: TrackKey, name: string, pid: number | null, args?: Record<string, unknown>, t = nowUs()): void {
    const slot = this.next(K_INSTANT, pid);
    this.track[slot] = this.intern(track);
    this.name[slot] = this.intern(name);
    this.t0[slot] = t;
    this.putArgs(slot, args, 0);
  }

  counter(track: TrackKey, name: string, pid: number | null, values: Record<string, number>, t = nowUs()): void {
    const slot = this.next(K_COUNTER, pid);
    this.track[slot] = this.intern(track);
    this.name[slot] = this.intern(name);
    this.t0[slot] = t;
    this.putArgs(slot, values, 0);
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

  /** The entry of sequence number `seq` (which must be in the ring), as an object. */
  private entry(seq: number): TraceEntry {
    const slot = seq % this.capacity;
    const p = this.pid[slot];
    const pid = Number.isNaN(p) ? null : p;
    switch (this.kind[slot]) {
      case K_INV: {
        const v = this.val;
        const b = slot * MAX_ARGS;
        const range: NotifierRange = {
          pid: pid as number,
          start: v[b + 1],
          end: v[b + 2],
          event: v[b + 3] as MmuNotifierEvent,
          flags: v[b + 4],
          owner: Number.isNaN(v[b + 5]) ? null : v[b + 5],
          origin: this.strings[this.name[slot]] as Origin,
          id: v[b],
        };
        let subscribers: SubscriberOutcome[];
        const side = this.sideSubs.get(slot);
        if (side) subscribers = side.map((s) => ({ ...s }));
        else {
          subscribers = [];
          const sb = slot * MAX_SUBS;
          for (let i = 0; i < this.shape[slot]; i++) {
            const c = this.subCode[sb + i];
            subscribers.push({ info: this.subInfo[sb + i] as SubscriberInfo, kind: SUB_KINDS[c >> 2], result: SUB_RESULTS[c & 3], ackUs: this.subAck[sb + i] });
          }
        }
        const rec: InvalidationRecord = { range, result: v[b + 7] === 0 ? 'ok' : 'EAGAIN', subscribers, startedUs: this.t0[slot], ackedUs: v[b + 6], endedUs: this.t1[slot] };
        return { kind: 'inv', seq, pid, rec };
      }
      case K_SPAN:
        return { kind: 'span', seq, pid, track: this.strings[this.track[slot]], name: this.strings[this.name[slot]], t0: this.t0[slot], t1: this.t1[slot], args: this.getArgs(slot) };
      case K_INSTANT:
        return { kind: 'instant', seq, pid, track: this.strings[this.track[slot]], name: this.strings[this.name[slot]], t: this.t0[slot], args: this.getArgs(slot) };
      default:
        return { kind: 'counter', seq, pid, track: this.strings[this.track[slot]], name: this.strings[this.name[slot]], t: this.t0[slot], values: (this.getArgs(slot) ?? {}) as Record<string, number> };
    }
  }

  /**
   * Without `since`: the newest `limit` matching entries, oldest first. With `since`: the matching
   * entries after it, oldest first, at most `limit`.
   */
  query(opts: { since?: number; limit?: number; filter?: (e: TraceEntry) => boolean } = {}): TracePage {
    const limit = Math.max(1, Math.min(opts.limit ?? this.capacity, this.capacity));
    const oldest = Math.max(1, this.last - this.capacity + 1);
    const filter = opts.filter;
    const entries: TraceEntry[] = [];
    if (opts.since !== undefined) {
      const from = opts.since + 1;
      const dropped = from < oldest ? oldest - from : 0;
      let lastExamined = Math.min(opts.since, this.last);
      for (let s = Math.max(from, oldest); s <= this.last && entries.length < limit; s++) {
        lastExamined = s;
        const e = this.entry(s);
        if (filter === undefined || filter(e)) entries.push(e);
      }
      return { entries, nextSince: lastExamined, dropped };
    }
    for (let s = this.last; s >= oldest && entries.length < limit; s--) {
      const e = this.entry(s);
      if (filter === undefined || filter(e)) entries.push(e);
    }
    entries.reverse();
    return { entries, nextSince: this.last, dropped: this.dropped };
  }
}
