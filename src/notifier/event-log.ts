/**
 * A bounded ring of completed invalidations (GET /v1/events), each with a monotonically increasing
 * id. Readers page with `since` (exclusive); entries that aged out before a read are counted as
 * `dropped`.
 *
 * Bounded twice: by entries (`capacity`) and by subscriber rows (`maxRows`, the sum of every kept
 * entry's subscribers). An invalidation that reaches a thousand external clients carries a thousand
 * per-subscriber results: bounded by count alone, the ring grew the kernel process's heap by about
 * 0.5 MB a round at 1,000 clients (measured), on its way to ten thousand such entries. The oldest
 * entries age out first, whichever bound is hit; the newest entry is always kept.
 *
 * The ring copies the fields of the kernel's record into columns (typed arrays, one per field,
 * indexed by slot) and formats them only when read. It keeps no reference to the record: the
 * kernel's records then die young (a scavenge copies nothing of them), where a ring of ten thousand
 * records kept every one of them through two scavenges into the old generation (bench:channel's
 * external round with the client on the server's CPU spent about 1 us a round in the scavenger for
 * that, 11-29). Columns, not an object per slot: consecutive entries share cache lines, so adding
 * one touches about two new lines instead of a cold object or three (the slot objects cost 0.47 us
 * an entry there). The first subscriber of an entry has columns too; the others of a wider entry
 * are kept as row objects of their own, dropped with it.
 */
import { performance } from 'node:perf_hooks';
import { eventName, formatEnd, RANGE_BLOCKABLE, type MmuNotifierEvent } from './range.js';
import type { InvalidationRecord, SubscriberInfo, SubscriberOutcome } from './subscriptions.js';

export interface EventEntry {
  id: number;
  pid: number;
  start: number;
  end: number | string;
  event: string;
  blockable: boolean;
  owner: number | null;
  origin: string;
  result: 'ok' | 'EAGAIN';
  /** Publish-to-last-acknowledgement, microseconds. */
  ackUs: number;
  /** Publish-to-end, microseconds (the whole start/ack/end round). */
  totalUs: number;
  subscribers: Array<{ label: string; kind: string; deviceId: number | null; deviceKind: string | null; result: string; ackUs: number }>;
  /** Wall-clock time of completion, ms since the epoch. */
  at: number;
}

export interface EventPage {
  items: EventEntry[];
  nextSince: number;
  dropped: number;
}

interface Row {
  info: SubscriberInfo;
  kind: SubscriberOutcome['kind'];
  result: SubscriberOutcome['result'];
  ackUs: number;
}

const KINDS: ReadonlyArray<SubscriberOutcome['kind']> = ['interval', 'mm'];
const RESULTS: ReadonlyArray<SubscriberOutcome['result']> = ['ok', 'would-block', 'bug'];
const kindCode = (k: SubscriberOutcome['kind']): number => (k === 'interval' ? 0 : 1);
const resultCode = (r: SubscriberOutcome['result']): number => (r === 'ok' ? 0 : r === 'would-block' ? 1 : 2);

/** Default bound on the subscriber rows the ring keeps (about 80 bytes each). */
export const DEFAULT_EVENT_ROWS = 250_000;

export class EventLog {
  // The columns, indexed by slot (id % capacity). A slot is live while ids[slot] is its entry's id.
  private readonly ids: Float64Array;
  /** Wall-clock time of completion, ms since the epoch. */
  private readonly ats: Float64Array;
  private readonly pids: Int32Array;
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;
  /** Int32: the kernel API takes any event number (an unknown one is shown as UNKNOWN). */
  private readonly events: Int32Array;
  private readonly flagss: Int32Array;
  /** NaN for no owner. */
  private readonly owners: Float64Array;
  private readonly origins: string[];
  /** 0 ok, 1 EAGAIN. */
  private readonly results: Uint8Array;
  private readonly ackUss: Float64Array;
  private readonly totalUss: Float64Array;
  private readonly nrows: Int32Array;
  // The first subscriber's row.
  private readonly row0Info: Array<SubscriberInfo | null>;
  private readonly row0Kind: Uint8Array;
  private readonly row0Result: Uint8Array;
  private readonly row0AckUs: Float64Array;
  /** The other subscribers' rows, for entries with more than one. */
  private readonly moreRows: Array<Row[] | null>;
  private next = 1;
  /** Lowest id still kept (ids below aged out). */
  private oldest = 1;
  /** Subscriber rows of the kept entries. */
  private rows = 0;

  constructor(
    readonly capacity = 10_000,
    readonly maxRows = DEFAULT_EVENT_ROWS,
  ) {
    if (!(capacity >= 1) || !(maxRows >= 1)) throw new RangeError('EventLog: capacity and maxRows must be at least 1');
    this.ids = new Float64Array(capacity);
    this.ats = new Float64Array(capacity);
    this.pids = new Int32Array(capacity);
    this.starts = new Float64Array(capacity);
    this.ends = new Float64Array(capacity);
    this.events = new Int32Array(capacity);
    this.flagss = new Int32Array(capacity);
    this.owners = new Float64Array(capacity);
    this.origins = new Array<string>(capacity).fill('');
    this.results = new Uint8Array(capacity);
    this.ackUss = new Float64Array(capacity);
    this.totalUss = new Float64Array(capacity);
    this.nrows = new Int32Array(capacity);
    this.row0Info = new Array<SubscriberInfo | null>(capacity).fill(null);
    this.row0Kind = new Uint8Array(capacity);
    this.row0Result = new Uint8Array(capacity);
    this.row0AckUs = new Float64Array(capacity);
    this.moreRows = new Array<Row[] | null>(capacity).fill(null);
  }

  /**
   * Called before every read: a log fed by a deferred kernel observer flushes the kernel's pending
   * records here (Kernel.flushObservers), so a read right after an operation sees its invalidations.
   */
  sync: () => void = () => undefined;

  /** Id the next entry will get. */
  get nextId(): number {
    this.sync();
    return this.next;
  }

  /** Entries and subscriber rows kept now. */
  get size(): { entries: number; rows: number } {
    this.sync();
    return { entries: this.next - this.oldest, rows: this.rows };
  }

  add(rec: InvalidationRecord): void {
    const id = this.next++;
    const slot = id % this.capacity;
    // The slot held id - capacity, unless it aged out by rows already.
    this.evict(id - this.capacity);
    const r = rec.range;
    this.ids[slot] = id;
    // The record's end on the wall clock as it reads now (a step of the wall clock since the process
    // started does not shift it); an untimed record (no observer timed it) is stamped now.
    const wall = Date.now();
    this.ats[slot] = rec.endedUs > 0 ? wall - Math.max(0, performance.now() - rec.endedUs / 1000) : wall;
    this.pids[slot] = r.pid;
    this.starts[slot] = r.start;
    this.ends[slot] = r.end;
    this.events[slot] = r.event;
    this.flagss[slot] = r.flags;
    this.owners[slot] = r.owner === null ? NaN : r.owner;
    this.origins[slot] = r.origin;
    this.results[slot] = rec.result === 'ok' ? 0 : 1;
    this.ackUss[slot] = Math.max(0, rec.ackedUs - rec.startedUs);
    this.totalUss[slot] = Math.max(0, rec.endedUs - rec.startedUs);
    const subs = rec.subscribers;
    const n = subs.length;
    this.nrows[slot] = n;
    if (n > 0) {
      const o = subs[0];
      this.row0Info[slot] = o.info;
      this.row0Kind[slot] = kindCode(o.kind);
      this.row0Result[slot] = resultCode(o.result);
      this.row0AckUs[slot] = o.ackUs;
    }
    if (n > 1) {
      const more = new Array<Row>(n - 1);
      for (let i = 1; i < n; i++) {
        const o = subs[i];
        more[i - 1] = { info: o.info, kind: o.kind, result: o.result, ackUs: o.ackUs };
      }
      this.moreRows[slot] = more;
    }
    this.rows += n;
    while (this.rows > this.maxRows && this.oldest < id) this.evict(this.oldest);
  }

  /** Ages out every entry up to `id` (nothing if it is gone already). */
  private evict(id: number): void {
    for (; this.oldest <= id; this.oldest++) {
      const slot = this.oldest % this.capacity;
      if (this.ids[slot] !== this.oldest) continue;
      this.rows -= this.nrows[slot];
      this.ids[slot] = 0;
      this.nrows[slot] = 0;
      this.row0Info[slot] = null;
      if (this.moreRows[slot] !== null) this.moreRows[slot] = null;
    }
  }

  /** The entry in `slot` as the API shows it (formatted on read). */
  private entry(slot: number): EventEntry {
    const subscribers: EventEntry['subscribers'] = [];
    const n = this.nrows[slot];
    const row = (info: SubscriberInfo, kind: SubscriberOutcome['kind'], result: SubscriberOutcome['result'], ackUs: number): void => {
      subscribers.push({ label: info.label, kind, deviceId: info.deviceId ?? null, deviceKind: info.deviceKind ?? null, result, ackUs });
    };
    if (n > 0) row(this.row0Info[slot]!, KINDS[this.row0Kind[slot]], RESULTS[this.row0Result[slot]], this.row0AckUs[slot]);
    const more = n > 1 ? this.moreRows[slot]! : [];
    for (const o of more) row(o.info, o.kind, o.result, o.ackUs);
    const owner = this.owners[slot];
    return {
      id: this.ids[slot],
      pid: this.pids[slot],
      start: this.starts[slot],
      end: formatEnd(this.ends[slot]),
      event: eventName(this.events[slot] as MmuNotifierEvent),
      blockable: (this.flagss[slot] & RANGE_BLOCKABLE) !== 0,
      owner: Number.isNaN(owner) ? null : owner,
      origin: this.origins[slot],
      result: this.results[slot] === 0 ? 'ok' : 'EAGAIN',
      ackUs: this.ackUss[slot],
      totalUs: this.totalUss[slot],
      subscribers,
      at: this.ats[slot],
    };
  }

  /**
   * Without `since`: the newest `limit` entries, oldest first. With `since`: the entries after it,
   * oldest first. `pid` and `filter` select entries (before the limit).
   */
  query(opts: { since?: number; limit?: number; pid?: number; filter?: (e: EventEntry) => boolean } = {}): EventPage {
    this.sync();
    const limit = Math.max(1, Math.min(opts.limit ?? 100, this.capacity));
    const oldest = this.oldest;
    // The pid is checked on its column, before the entry is formatted.
    const match = (id: number): EventEntry | null => {
      const slot = id % this.capacity;
      if (this.ids[slot] !== id || (opts.pid !== undefined && this.pids[slot] !== opts.pid)) return null;
      const e = this.entry(slot);
      return opts.filter === undefined || opts.filter(e) ? e : null;
    };
    const items: EventEntry[] = [];
    let dropped = 0;
    if (opts.since !== undefined) {
      const from = opts.since + 1;
      if (from < oldest) dropped = oldest - from;
      let lastExamined = opts.since;
      for (let id = Math.max(from, oldest); id < this.next && items.length < limit; id++) {
        lastExamined = id;
        const e = match(id);
        if (e !== null) items.push(e);
      }
      return { items, nextSince: lastExamined, dropped };
    }
    for (let id = this.next - 1; id >= oldest && items.length < limit; id--) {
      const e = match(id);
      if (e !== null) items.push(e);
    }
    items.reverse();
    return { items, nextSince: this.next - 1, dropped };
  }
}
