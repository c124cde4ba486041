/** Recording subscribers: they log exactly what the notifier core delivers to them. */
import { MmuIntervalNotifier, MmuNotifier, type MmuNotifierSubscriptions } from '../../src/notifier/subscriptions.js';
import { eventName, rangeBlockable, type NotifierRange } from '../../src/notifier/range.js';
import { ULONG_MAX } from '../../src/kernel/layout.js';

export interface Call {
  op: 'start' | 'end' | 'invalidate' | 'release' | 'clear_flush_young' | 'clear_young' | 'test_young';
  event?: string;
  start?: number;
  end?: number | string;
  blockable?: boolean;
  owner?: number | null;
  curSeq?: number;
  origin?: string;
}

export function describeRange(r: NotifierRange): Pick<Call, 'event' | 'start' | 'end' | 'blockable' | 'owner'> {
  return {
    event: eventName(r.event),
    start: r.start,
    end: r.end >= ULONG_MAX ? 'ULONG_MAX' : r.end,
    blockable: rangeBlockable(r),
    owner: r.owner,
  };
}

/** A whole-mm subscriber that records start/end (and young/release) calls. */
export function recordingMm(opts: { refuseNonblock?: boolean; young?: boolean } = {}): { sub: MmuNotifier; calls: Call[] } {
  const calls: Call[] = [];
  const sub = new MmuNotifier(
    {
      invalidateRangeStart: (_s, r) => {
        calls.push({ op: 'start', ...describeRange(r), origin: r.origin });
        if (opts.refuseNonblock && !rangeBlockable(r)) return -11;
        return 0;
      },
      invalidateRangeEnd: opts.refuseNonblock
        ? undefined
        : (_s, r) => {
            calls.push({ op: 'end', ...describeRange(r) });
          },
      release: () => {
        calls.push({ op: 'release' });
      },
      clearFlushYoung: (_s, start, end) => {
        calls.push({ op: 'clear_flush_young', start, end });
        return !!opts.young;
      },
      clearYoung: (_s, start, end) => {
        calls.push({ op: 'clear_young', start, end });
        return !!opts.young;
      },
      testYoung: (_s, addr) => {
        calls.push({ op: 'test_young', start: addr });
        return !!opts.young;
      },
    },
    { label: 'recorder-mm' },
  );
  return { sub, calls };
}

/** An interval subscriber that records invalidate calls and sets the sequence as a driver must. */
export function recordingInterval(
  subs: MmuNotifierSubscriptions,
  start: number,
  length: number,
  opts: { refuseNonblock?: boolean } = {},
): { sub: MmuIntervalNotifier; calls: Call[] } {
  const calls: Call[] = [];
  const sub = new MmuIntervalNotifier(
    {
      invalidate: (s, r, curSeq) => {
        calls.push({ op: 'invalidate', ...describeRange(r), curSeq, origin: r.origin });
        if (opts.refuseNonblock && !rangeBlockable(r)) return false;
        s.setSeq(curSeq);
        return true;
      },
    },
    { label: 'recorder-interval' },
  );
  subs.insertInterval(sub, start, length);
  return { sub, calls };
}

export const MiB = 1024 * 1024;
export const PAGE = 4096;

export function fill(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
