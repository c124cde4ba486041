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
 * The ring copies the fields of the kernel's record into slot objects it reuses, and formats them
 * only when read. It keeps no reference to the record: the kernel's records then die young (a
 * scavenge copies nothing of them), where a ring of ten thousand records kept every one of them
 * through two scavenges into the old generation (bench:channel's external round with the client
 * on the server's CPU spent about 1 us a round in the scavenger for that, 11-29). A slot keeps the
 * row objects of up to REUSED_ROWS subscribers; a wider invalidation's rows are its own, dropped
 * with it.
 */
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

/** One slot of the ring, overwritten in place by each entry that lands in it. */
interface Stored {
  /** The entry's id; 0 while the slot is empty or its entry aged out. */
  id: number;
  /** Wall-clock time of completion, ms since the epoch. */
  at: number;
  pid: number;
  start: number;
  end: number;
  event: MmuNotifierEvent;
  flags: number;
  owner: number | null;
  origin: string;
  result: 'ok' | 'EAGAIN';
  ackUs: number;
  totalUs: number;
  /** rows[0 .. nrows) are this entry's subscribers. */
  nrows: number;
  rows: Row[];
}

/** Subscriber rows a slot keeps for reuse (wider invalidations allocate and drop their own). */
const REUSED_ROWS = 16;

const emptySlot = (): Stored => ({ id: 0, at: 0, pid: 0, start: 0, end: 0, event: 0, flags: 0, owner: null, origin: '', result: 'ok', ackUs: 0, totalUs: 0, nrows: 0, rows: [] });

/** Default bound on the subscriber rows the ring keeps (about 80 bytes each). */
export const DEFAULT_EVENT_ROWS = 250_000;

export class EventLog {
  private readonly ring: (Stored | undefined)[];
  /** performance.now()'s origin in ms since the epoch: a record's end time on the wall clock. */
  private readonly timeOrigin = performance.timeOrigin;
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
    this.ring = new Array(capacity);
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
    const s = (this.ring[slot] ??= emptySlot());
    const r = rec.range;
    s.id = id;
    // The record's end on the wall clock; an untimed record (no observer timed it) is stamped now.
    s.at = rec.endedUs > 0 ? this.timeOrigin + rec.endedUs / 1000 : Date.now();
    s.pid = r.pid;
    s.start = r.start;
    s.end = r.end;
    s.event = r.event;
    s.flags = r.flags;
    s.owner = r.owner;
    s.origin = r.origin;
    s.result = rec.result;
    s.ackUs = Math.max(0, rec.ackedUs - rec.startedUs);
    s.totalUs = Math.max(0, rec.endedUs - rec.startedUs);
    const subs = rec.subscribers;
    const n = subs.length;
    if (n > REUSED_ROWS) s.rows = new Array<Row>(n);
    else if (s.rows.length > REUSED_ROWS) s.rows = [];
    const rows = s.rows;
    for (let i = 0; i < n; i++) {
      const o = subs[i];
      const row = rows[i];
      if (row === undefined) rows[i] = { info: o.info, kind: o.kind, result: o.result, ackUs: o.ackUs };
      else {
        row.info = o.info;
        row.kind = o.kind;
        row.result = o.result;
        row.ackUs = o.ackUs;
      }
    }
    s.nrows = n;
    this.rows += n;
    while (this.rows > this.maxRows && this.oldest < id) this.evict(this.oldest);
  }

  /** Ages out every entry up to `id` (nothing if it is gone already). */
  private evict(id: number): void {
    for (; this.oldest <= id; this.oldest++) {
      const slot = this.oldest % this.capacity;
      const e = this.ring[slot];
      if (e !== undefined && e.id === this.oldest) {
        this.rows -= e.nrows;
        e.id = 0;
        // A wide entry's rows go with it; a narrow slot keeps its row objects for the next entry.
        if (e.rows.length > REUSED_ROWS) e.rows = [];
      }
    }
  }

  /** The entry as the API shows it (formatted on read). */
  private static entry(s: Stored): EventEntry {
    const subscribers: EventEntry['subscribers'] = [];
    for (let i = 0; i < s.nrows; i++) {
      const o = s.rows[i];
      subscribers.push({ label: o.info.label, kind: o.kind, deviceId: o.info.deviceId ?? null, deviceKind: o.info.deviceKind ?? null, result: o.result, ackUs: o.ackUs });
    }
    return {
      id: s.id,
      pid: s.pid,
      start: s.start,
      end: formatEnd(s.end),
      event: eventName(s.event),
      blockable: (s.flags & RANGE_BLOCKABLE) !== 0,
      owner: s.owner,
      origin: s.origin,
      result: s.result,
      ackUs: s.ackUs,
      totalUs: s.totalUs,
      subscribers,
      at: s.at,
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
    // The pid is checked on the record, before the entry is formatted.
    const match = (s: Stored | undefined, id: number): EventEntry | null => {
      if (s === undefined || s.id !== id || (opts.pid !== undefined && s.pid !== opts.pid)) return null;
      const e = EventLog.entry(s);
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
        const e = match(this.ring[id % this.capacity], id);
        if (e !== null) items.push(e);
      }
      return { items, nextSince: lastExamined, dropped };
    }
    for (let id = this.next - 1; id >= oldest && items.length < limit; id--) {
      const e = match(this.ring[id % this.capacity], id);
      if (e !== null) items.push(e);
    }
    items.reverse();
    return { items, nextSince: this.next - 1, dropped };
  }
}
