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
 * The ring keeps the kernel's own record (immutable once the invalidation ended) and formats it only
 * when read: the kernel thread does no per-subscriber work for the log.
 */
import { eventName, formatEnd, rangeBlockable } from './range.js';
import type { InvalidationRecord } from './subscriptions.js';

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

interface Stored {
  id: number;
  /** Wall-clock time of completion, ms since the epoch. */
  at: number;
  rec: InvalidationRecord;
}

/** Default bound on the subscriber rows the ring keeps (about 80 bytes each). */
export const DEFAULT_EVENT_ROWS = 250_000;

export class EventLog {
  private readonly ring: (Stored | undefined)[];
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
    this.ring[slot] = { id, at: Date.now(), rec };
    this.rows += rec.subscribers.length;
    while (this.rows > this.maxRows && this.oldest < id) this.evict(this.oldest);
  }

  /** Ages out every entry up to `id` (nothing if it is gone already). */
  private evict(id: number): void {
    for (; this.oldest <= id; this.oldest++) {
      const slot = this.oldest % this.capacity;
      const e = this.ring[slot];
      if (e !== undefined && e.id === this.oldest) {
        this.rows -= e.rec.subscribers.length;
        this.ring[slot] = undefined;
      }
    }
  }

  /** The entry as the API shows it (formatted on read). */
  private static entry(s: Stored): EventEntry {
    const rec = s.rec;
    const r = rec.range;
    return {
      id: s.id,
      pid: r.pid,
      start: r.start,
      end: formatEnd(r.end),
      event: eventName(r.event),
      blockable: rangeBlockable(r),
      owner: r.owner,
      origin: r.origin,
      result: rec.result,
      ackUs: Math.max(0, rec.ackedUs - rec.startedUs),
      totalUs: Math.max(0, rec.endedUs - rec.startedUs),
      subscribers: rec.subscribers.map((o) => ({
        label: o.info.label,
        kind: o.kind,
        deviceId: o.info.deviceId ?? null,
        deviceKind: o.info.deviceKind ?? null,
        result: o.result,
        ackUs: o.ackUs,
      })),
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
      if (s === undefined || s.id !== id || (opts.pid !== undefined && s.rec.range.pid !== opts.pid)) return null;
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
