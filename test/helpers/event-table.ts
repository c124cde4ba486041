/**
 * Helpers for test/kernel/event-table.test.ts: turn recorder calls into plain objects with only
 * the fields the kernel defines ({op, event, start, end, blockable, owner}), build expected
 * sequences, and subscribers that share one log (for delivery-order tests).
 */
import { MmuIntervalNotifier, MmuNotifier, type MmuNotifierSubscriptions } from '../../src/notifier/subscriptions.js';
import { describeRange, PAGE, type Call } from './recorder.js';

export type EventName =
  | 'UNMAP'
  | 'CLEAR'
  | 'PROTECTION_VMA'
  | 'PROTECTION_PAGE'
  | 'SOFT_DIRTY'
  | 'RELEASE'
  | 'MIGRATE'
  | 'EXCLUSIVE';

export interface Ev {
  op: Call['op'];
  event?: string;
  start?: number;
  end?: number | string;
  blockable?: boolean;
  owner?: number | null;
  who?: string;
}

const KEYS = ['who', 'op', 'event', 'start', 'end', 'blockable', 'owner'] as const;

/** Keeps only the kernel-visible fields (drops origin, curSeq). */
export function strip(calls: ReadonlyArray<Call & { who?: string }>): Ev[] {
  return calls.map((c) => {
    const o: Record<string, unknown> = {};
    for (const k of KEYS) if (c[k as keyof typeof c] !== undefined) o[k] = c[k as keyof typeof c];
    return o as unknown as Ev;
  });
}

/** Returns the stripped calls recorded so far and empties the log. */
export function take(calls: Call[]): Ev[] {
  return strip(calls.splice(0, calls.length));
}

export interface RangeOpts {
  blockable?: boolean;
  owner?: number | null;
}

function body(event: EventName, start: number, end: number | string, o: RangeOpts) {
  return { event, start, end, blockable: o.blockable ?? true, owner: o.owner ?? null };
}

/** invalidate_range_start + invalidate_range_end as a whole-mm subscriber sees them. */
export function pair(event: EventName, start: number, end: number | string, o: RangeOpts = {}): Ev[] {
  return [
    { op: 'start', ...body(event, start, end, o) },
    { op: 'end', ...body(event, start, end, o) },
  ];
}

/** A start without an end (refused non-blockable start). */
export function startOnly(event: EventName, start: number, end: number | string, o: RangeOpts = {}): Ev {
  return { op: 'start', ...body(event, start, end, o) };
}

/** One interval-subscriber invalidate call. */
export function inv(event: EventName, start: number, end: number | string, o: RangeOpts = {}): Ev {
  return { op: 'invalidate', ...body(event, start, end, o) };
}

/** One-page pair / invalidate helpers. */
export const pagePair = (event: EventName, va: number, o: RangeOpts = {}): Ev[] => pair(event, va, va + PAGE, o);
export const pageInv = (event: EventName, va: number, o: RangeOpts = {}): Ev => inv(event, va, va + PAGE, o);

export function cfy(va: number, len = PAGE): Ev {
  return { op: 'clear_flush_young', start: va, end: va + len };
}

export function testYoung(va: number): Ev {
  return { op: 'test_young', start: va };
}

/**
 * Subscribers (whole-mm and interval) that append to one shared log, each entry tagged `who`.
 */
export function sharedLog() {
  const log: Array<Call & { who: string }> = [];
  function mm(subs: MmuNotifierSubscriptions, who: string): MmuNotifier {
    const sub = new MmuNotifier(
      {
        invalidateRangeStart: (_s, r) => {
          log.push({ who, op: 'start', ...describeRange(r) });
          return 0;
        },
        invalidateRangeEnd: (_s, r) => {
          log.push({ who, op: 'end', ...describeRange(r) });
        },
        release: () => {
          log.push({ who, op: 'release' });
        },
      },
      { label: who },
    );
    subs.register(sub);
    return sub;
  }
  function interval(subs: MmuNotifierSubscriptions, who: string, start: number, length: number): MmuIntervalNotifier {
    const sub = new MmuIntervalNotifier(
      {
        invalidate: (s, r, curSeq) => {
          log.push({ who, op: 'invalidate', ...describeRange(r) });
          s.setSeq(curSeq);
          return true;
        },
      },
      { label: who },
    );
    subs.insertInterval(sub, start, length);
    return sub;
  }
  return { log, mm, interval };
}

/** Tags every entry of an expected sequence with `who`. */
export function as(who: string, evs: Ev[]): Ev[] {
  return evs.map((e) => ({ who, ...e }));
}
