import { describe, expect, it } from 'vitest';
import { EventLog } from '../../src/notifier/event-log.js';
import { ULONG_MAX } from '../../src/kernel/layout.js';
import { makeRange, MmuNotifierEvent, RANGE_BLOCKABLE } from '../../src/notifier/range.js';
import type { InvalidationRecord, SubscriberOutcome } from '../../src/notifier/subscriptions.js';

const PAGE = 4096;
function record(pid: number, subscribers: number, start = 0x10000, end = start + PAGE): InvalidationRecord {
  const range = { ...makeRange(pid, MmuNotifierEvent.CLEAR, start, end, 'madvise'), flags: RANGE_BLOCKABLE };
  const subs: SubscriberOutcome[] = [];
  for (let i = 0; i < subscribers; i++) subs.push({ info: { label: `dev${i}`, deviceId: i, deviceKind: 'dmirror' }, kind: 'interval', result: 'ok', ackUs: 10 + i });
  return { range, result: 'ok', subscribers: subs, startedUs: 100, ackedUs: 130, endedUs: 150 };
}

describe('EventLog', () => {
  it('formats an entry as GET /v1/events shows it', () => {
    const log = new EventLog();
    log.add(record(7, 2));
    log.add({ ...record(8, 0, 0, ULONG_MAX), result: 'EAGAIN' });
    const { items, nextSince, dropped } = log.query();
    expect([nextSince, dropped]).toEqual([2, 0]);
    expect(items[0]).toMatchObject({
      id: 1, pid: 7, start: 0x10000, end: 0x11000, event: 'CLEAR', blockable: true, owner: null, origin: 'madvise', result: 'ok', ackUs: 30, totalUs: 50,
      subscribers: [
        { label: 'dev0', kind: 'interval', deviceId: 0, deviceKind: 'dmirror', result: 'ok', ackUs: 10 },
        { label: 'dev1', kind: 'interval', deviceId: 1, deviceKind: 'dmirror', result: 'ok', ackUs: 11 },
      ],
    });
    expect(typeof items[0].at).toBe('number');
    expect(items[1]).toMatchObject({ id: 2, end: '0xffffffffffffffff', result: 'EAGAIN', subscribers: [] });
  });

  it('keeps the newest `capacity` entries and counts the rest as dropped', () => {
    const log = new EventLog(3);
    for (let i = 0; i < 5; i++) log.add(record(1, 1));
    expect(log.query().items.map((e) => e.id)).toEqual([3, 4, 5]);
    expect(log.query({ since: 0 })).toMatchObject({ dropped: 2, nextSince: 5 });
    expect(log.query({ since: 0 }).items.map((e) => e.id)).toEqual([3, 4, 5]);
    expect(log.size).toEqual({ entries: 3, rows: 3 });
  });

  it('ages out the oldest entries when their subscriber rows pass maxRows, and keeps the newest even alone', () => {
    const log = new EventLog(100, 10);
    log.add(record(1, 4)); // 1: 4 rows
    log.add(record(1, 4)); // 2: 8 rows
    log.add(record(1, 4)); // 3: 12 > 10 -> 1 goes
    expect(log.query().items.map((e) => e.id)).toEqual([2, 3]);
    expect(log.size).toEqual({ entries: 2, rows: 8 });
    expect(log.query({ since: 0 })).toMatchObject({ dropped: 1, nextSince: 3 });
    // One entry above the whole budget: everything before it goes, it stays.
    log.add(record(1, 25));
    expect(log.query().items.map((e) => e.id)).toEqual([4]);
    expect(log.size).toEqual({ entries: 1, rows: 25 });
    // Paging from a reader's last id counts what aged out in between.
    expect(log.query({ since: 2 })).toMatchObject({ dropped: 1, nextSince: 4 });
    log.add(record(1, 1));
    expect(log.query().items.map((e) => e.id)).toEqual([5]);
    expect(log.size).toEqual({ entries: 1, rows: 1 });
  });

  it('count and row bounds together: the wrap and the row eviction never count an entry twice', () => {
    const log = new EventLog(4, 6);
    const sizes = [1, 2, 3, 1, 1, 4, 2, 2, 1, 6, 1];
    for (const n of sizes) log.add(record(1, n));
    // Expected from the two rules, in a plain model.
    let kept: Array<{ id: number; n: number }> = [];
    sizes.forEach((n, i) => {
      kept.push({ id: i + 1, n });
      kept = kept.filter((e) => e.id > i + 1 - 4);
      while (kept.reduce((a, e) => a + e.n, 0) > 6 && kept.length > 1) kept.shift();
    });
    expect(log.query({ limit: 100 }).items.map((e) => e.id)).toEqual(kept.map((e) => e.id));
    expect(log.size.rows).toBe(kept.reduce((a, e) => a + e.n, 0));
  });

  it('filters by pid before the limit, and by a predicate', () => {
    const log = new EventLog();
    for (let i = 0; i < 6; i++) log.add(record(i % 2 === 0 ? 10 : 11, 1, 0x10000 + i * PAGE));
    expect(log.query({ pid: 11, limit: 2 }).items.map((e) => e.id)).toEqual([4, 6]);
    expect(log.query({ since: 0, pid: 10 }).items.map((e) => e.id)).toEqual([1, 3, 5]);
    expect(log.query({ filter: (e) => e.start >= 0x10000 + 4 * PAGE }).items.map((e) => e.id)).toEqual([5, 6]);
  });

  it('fed by a deferred kernel observer, every read flushes the kernel first: an operation is in the log when it returns', async () => {
    const { Kernel, PROT } = await import('../../src/kernel/kernel.js');
    const { MmuIntervalNotifier } = await import('../../src/notifier/subscriptions.js');
    const k = new Kernel({ memoryBytes: 8 << 20 });
    const log = new EventLog(100);
    log.sync = () => k.flushObservers();
    k.observe({ deferred: true, onInvalidation: (rec) => log.add(rec) });
    const p = k.createProcess('log');
    const a = await k.mmap(p.pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE });
    p.mm.notifier.insertInterval(new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), true) }, { label: 'sub' }), a, 4 * PAGE);
    const before = log.nextId;
    await k.munmap(p.pid, a, PAGE);
    expect(log.nextId).toBe(before + 1);
    await k.madvise(p.pid, a + PAGE, PAGE, 'dontneed');
    expect(log.size.entries).toBe(2);
    expect(log.query({ since: before - 1 }).items.map((e) => e.event)).toEqual(['UNMAP', 'CLEAR']);
  });

  it('copies each record into its slot: a slot reused by narrower and wider entries shows each one exactly, and no record is referenced', () => {
    const log = new EventLog(3, 10_000);
    const counts = [2, 20, 1, 0, 17, 3, 16, 40, 2];
    const added: InvalidationRecord[] = [];
    for (let i = 0; i < counts.length; i++) {
      const rec = record(100 + i, counts[i], 0x10000 * (i + 1));
      rec.subscribers.forEach((o, j) => (o.ackUs = 1000 * i + j));
      log.add(rec);
      added.push(rec);
      // The newest three, as added, each with its own subscribers and nothing left from the slot's last entry.
      const want = added.slice(-3);
      const page = log.query({ limit: 3 });
      expect(page.items.map((e) => e.pid)).toEqual(want.map((r) => r.range.pid));
      for (let k = 0; k < want.length; k++) {
        expect(page.items[k].start).toBe(want[k].range.start);
        expect(page.items[k].subscribers.map((o) => [o.label, o.ackUs])).toEqual(want[k].subscribers.map((o) => [o.info.label, o.ackUs]));
      }
      expect(log.size).toEqual({ entries: want.length, rows: want.reduce((n, r) => n + r.subscribers.length, 0) });
    }
    // The log copied the record: changing it afterwards (the kernel never does) changes no entry.
    const last = added[added.length - 1];
    last.subscribers[0].ackUs = -1;
    last.subscribers.length = 0;
    expect(log.query({ limit: 1 }).items[0].subscribers.map((o) => o.ackUs)).toEqual([8000, 8001]);
  });

  it('stamps an entry with its end on the wall clock (a timed record) or with the time it was added (untimed); any event number', () => {
    const log = new EventLog(10);
    const timed = record(1, 1);
    timed.startedUs = performance.now() * 1000 - 100_000;
    timed.endedUs = timed.startedUs + 2000;
    log.add(timed);
    const untimed = { ...record(2, 1), startedUs: 0, ackedUs: 0, endedUs: 0 };
    const before = Date.now();
    log.add(untimed);
    const [a, b] = log.query().items;
    // Its end on the wall clock: about 98 ms before it was added (a few ms of slack for the test).
    expect(Math.abs(a.at - (before - 98))).toBeLessThan(20);
    expect(a.at).toBeLessThan(before - 50); // 98 ms ago, not when it was added
    expect(a.totalUs).toBe(2000);
    expect(b.at).toBeGreaterThanOrEqual(before);
    expect(b.totalUs).toBe(0);
    // An event number the kernel does not name (the API takes any) is kept, not wrapped to a named one.
    const odd = record(3, 0);
    odd.range.event = 257 as MmuNotifierEvent;
    log.add(odd);
    expect(log.query({ limit: 1 }).items[0].event).not.toBe('CLEAR');
  });

  it('rejects a bound below one', () => {
    expect(() => new EventLog(0)).toThrow(RangeError);
    expect(() => new EventLog(10, 0)).toThrow(RangeError);
  });
});
