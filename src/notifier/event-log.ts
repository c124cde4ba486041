/**
 * A bounded ring of completed invalidations (GET /v1/events), each with a monotonically increasing
 * id. Readers page with `since` (exclusive); entries that aged out before a read are counted as
 * `dropped`.
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

export class EventLog {
  private readonly ring: (EventEntry | undefined)[];
  private next = 1;

  constructor(readonly capacity = 10_000) {
    this.ring = new Array(capacity);
  }

  /** Id the next entry will get. */
  get nextId(): number {
    return this.next;
  }

  add(rec: InvalidationRecord): EventEntry {
    const r = rec.range;
    const e: EventEntry = {
      id: this.next++,
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
      subscribers: rec.subscribers.map((s) => ({
        label: s.info.label,
        kind: s.kind,
        deviceId: s.info.deviceId ?? null,
        deviceKind: s.info.deviceKind ?? null,
        result: s.result,
        ackUs: s.ackUs,
      })),
      at: Date.now(),
    };
    this.ring[e.id % this.capacity] = e;
    return e;
  }

  /**
   * Without `since`: the newest `limit` entries, oldest first. With `since`: the entries after it,
   * oldest first. `pid` and `filter` select entries (before the limit).
   */
  query(opts: { since?: number; limit?: number; pid?: number; filter?: (e: EventEntry) => boolean } = {}): EventPage {
    const limit = Math.max(1, Math.min(opts.limit ?? 100, this.capacity));
    const oldest = Math.max(1, this.next - this.capacity);
    const match = (e: EventEntry | undefined): e is EventEntry => !!e && (opts.pid === undefined || e.pid === opts.pid) && (opts.filter === undefined || opts.filter(e));
    const items: EventEntry[] = [];
    let dropped = 0;
    if (opts.since !== undefined) {
      const from = opts.since + 1;
      if (from < oldest) dropped = oldest - from;
      let lastExamined = opts.since;
      for (let id = Math.max(from, oldest); id < this.next && items.length < limit; id++) {
        lastExamined = id;
        const e = this.ring[id % this.capacity];
        if (e && e.id === id && match(e)) items.push(e);
      }
      return { items, nextSince: lastExamined, dropped };
    }
    for (let id = this.next - 1; id >= oldest && items.length < limit; id--) {
      const e = this.ring[id % this.capacity];
      if (e && e.id === id && match(e)) items.push(e);
    }
    items.reverse();
    return { items, nextSince: this.next - 1, dropped };
  }
}
