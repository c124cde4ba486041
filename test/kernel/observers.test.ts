import { describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { MmuIntervalNotifier, type InvalidationRecord } from '../../src/notifier/subscriptions.js';
import { MmuNotifierEvent, RANGE_BLOCKABLE, makeRange } from '../../src/notifier/range.js';
import { MS, mmSlotIndex } from '../../src/kernel/layout.js';

const PAGE = 4096;

async function setup(): Promise<{ k: Kernel; round: () => Promise<void> }> {
  const k = new Kernel({ memoryBytes: 8 << 20 });
  const p = k.createProcess('obs');
  const a = await k.mmap(p.pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE });
  const sub = new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), true) }, { label: 'sub' });
  p.mm.notifier.insertInterval(sub, a, 4 * PAGE);
  const round = async (): Promise<void> => {
    const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    k.notifyEnd(p.mm, r);
  };
  return { k, round };
}

describe('kernel observers', () => {
  it('times invalidation records exactly while an observer takes them', async () => {
    const { k, round } = await setup();
    expect(k.recordTiming.on).toBe(false);
    const seen: InvalidationRecord[] = [];
    const other = k.observe({ onProcessExit: () => undefined });
    expect(k.recordTiming.on).toBe(false); // an observer without onInvalidation reads no record
    const stop = k.observe({ onInvalidation: (rec) => seen.push(rec) });
    expect(k.recordTiming.on).toBe(true);
    await round();
    expect(seen).toHaveLength(1);
    expect(seen[0].startedUs).toBeGreaterThan(0);
    expect(seen[0].endedUs).toBeGreaterThanOrEqual(seen[0].startedUs);
    expect(seen[0].subscribers).toHaveLength(1);
    stop();
    expect(k.recordTiming.on).toBe(false);
    await round();
    expect(seen).toHaveLength(1); // unsubscribed: not called again
    other();
  });

  it('calls each hook only on the observers that have it, in subscription order, and survives a throwing one', async () => {
    const { k, round } = await setup();
    const calls: string[] = [];
    k.observe({
      onInvalidationStart: () => {
        calls.push('a');
        throw new Error('observer bug');
      },
    });
    const stopB = k.observe({ onInvalidationStart: () => calls.push('b'), onInvalidation: () => calls.push('b-end') });
    k.observe({ onProcessExit: () => calls.push('exit') });
    await round();
    expect(calls).toEqual(['a', 'b', 'b-end']);
    stopB();
    stopB(); // twice: no effect
    calls.length = 0;
    await round();
    expect(calls).toEqual(['a']);
    expect(k.recordTiming.on).toBe(false);
  });

  it('a deferred observer gets every record in order, in batches: on flushObservers, on its timer, and before it unsubscribes', async () => {
    const { k, round } = await setup();
    const seen: InvalidationRecord[] = [];
    const sync: InvalidationRecord[] = [];
    const stop = k.observe({ deferred: true, onInvalidation: (rec) => seen.push(rec) });
    expect(k.recordTiming.on).toBe(true); // a deferred observer's records are timed too
    await round();
    await round();
    expect(seen).toHaveLength(0); // not inside the rounds
    k.flushObservers();
    expect(seen).toHaveLength(2);
    expect(seen[0].endedUs).toBeGreaterThanOrEqual(seen[0].startedUs);
    k.flushObservers(); // nothing pending: no repeat
    expect(seen).toHaveLength(2);
    // Beside a synchronous observer: that one is called inside the round, both see the same records.
    const stopSync = k.observe({ onInvalidation: (rec) => sync.push(rec) });
    await round();
    expect(sync).toHaveLength(1);
    expect(seen).toHaveLength(2);
    // The timer delivers without a reader (at most DEFER_MS later).
    const deadline = Date.now() + 10_000;
    while (seen.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(seen).toHaveLength(3);
    expect(seen[2]).toBe(sync[0]);
    stopSync();
    // Unsubscribing flushes first: the observer sees every invalidation of its subscription.
    await round();
    stop();
    expect(seen).toHaveLength(4);
    expect(seen.map((r) => r.startedUs)).toEqual([...seen.map((r) => r.startedUs)].sort((x, y) => x - y));
    expect(k.recordTiming.on).toBe(false);
  });

  it('a deferred observer that unsubscribes inside a batch gets no more of it; the others get all of it', async () => {
    const { k, round } = await setup();
    const calls: string[] = [];
    const stopA: () => void = k.observe({
      deferred: true,
      onInvalidation: () => {
        calls.push('a');
        stopA();
      },
    });
    k.observe({ deferred: true, onInvalidation: () => calls.push('b') });
    for (let i = 0; i < 3; i++) await round();
    k.flushObservers();
    expect(calls).toEqual(['a', 'b', 'b', 'b']);
  });

  it('a deferred observer that subscribes while records are pending gets none of them', async () => {
    const { k, round } = await setup();
    const first: InvalidationRecord[] = [];
    const late: InvalidationRecord[] = [];
    k.observe({ deferred: true, onInvalidation: (rec) => first.push(rec) });
    await round();
    k.observe({ deferred: true, onInvalidation: (rec) => late.push(rec) });
    await round();
    k.flushObservers();
    expect(first).toHaveLength(2);
    expect(late).toEqual([first[1]]);
  });

  it('a deferred observer gets a full batch at once, and a throwing one does not stop the others', async () => {
    const { k, round } = await setup();
    const seen: number[] = [];
    k.observe({
      deferred: true,
      onInvalidation: () => {
        throw new Error('observer bug');
      },
    });
    k.observe({ deferred: true, onInvalidation: (rec) => seen.push(rec.startedUs) });
    for (let i = 0; i < 1024; i++) await round();
    // The 1,024th record filled the batch: delivered inside that round, not on the timer.
    expect(seen).toHaveLength(1024);
  });

  it('an observer that unsubscribes inside its hook does not make the next one miss the event', async () => {
    const { k, round } = await setup();
    const calls: string[] = [];
    const stopA: () => void = k.observe({
      onInvalidation: () => {
        calls.push('a');
        stopA();
      },
    });
    k.observe({ onInvalidation: () => calls.push('b') });
    await round();
    await round();
    expect(calls).toEqual(['a', 'b', 'b']);
    expect(k.recordTiming.on).toBe(true);
  });

  it('counts invalidations and refusals and publishes the seq with no observer; an observer attached later gets ranges only while attached', async () => {
    const k = new Kernel({ memoryBytes: 8 << 20 });
    const p = k.createProcess('obs');
    const a = await k.mmap(p.pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE });
    const seqWord = mmSlotIndex(k.mem.mmBase, p.mm.slot, MS.INVALIDATE_SEQ);
    const activeWord = mmSlotIndex(k.mem.mmBase, p.mm.slot, MS.ACTIVE_RANGES);
    let during: number[] = [];
    const sub = new MmuIntervalNotifier(
      {
        invalidate: (s, r, seq) => {
          // Refuses a non-blockable start (as mlx5 does), takes every blockable one.
          if ((r.flags & RANGE_BLOCKABLE) === 0) return false;
          during = [k.mem.meta[seqWord], k.mem.meta[activeWord]];
          s.setSeq(seq);
          return true;
        },
      },
      { label: 'sub' },
    );
    p.mm.notifier.insertInterval(sub, a, 4 * PAGE);
    expect(k.mem.meta[seqWord]).toBe(p.mm.notifier.invalidateSeq);
    const before = { ...k.stats };
    const seq0 = p.mm.notifier.invalidateSeq;
    const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    // Inside the window: the seq is odd and one range is active, in the shared words too.
    expect(k.mem.meta[seqWord]).toBe(seq0 | 1);
    expect(k.mem.meta[activeWord]).toBe(1);
    k.notifyEnd(p.mm, r);
    expect(k.mem.meta[seqWord]).toBe(p.mm.notifier.invalidateSeq);
    expect(k.mem.meta[seqWord] % 2).toBe(0);
    expect(k.mem.meta[activeWord]).toBe(0);
    expect(k.stats.invalidations - before.invalidations).toBe(1);
    expect(k.stats.invalidationsRefused).toBe(before.invalidationsRefused);
    // The call itself ran before the core published the odd seq: it publishes after the post,
    // so that a device's call does not wait for a snapshot nobody orders itself on.
    expect(during).toEqual([seq0, 0]);
    // An observer attached to a live process gets the next range, and only while attached.
    const starts: number[] = [];
    const stop = k.observe({ onInvalidationStart: (range) => starts.push(range.start) });
    const r2 = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a + PAGE, a + 2 * PAGE, 'madvise');
    k.notifyEnd(p.mm, r2);
    stop();
    const r3 = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    k.notifyEnd(p.mm, r3);
    expect(starts).toEqual([a + PAGE]);
    expect(k.stats.invalidations - before.invalidations).toBe(3);
    expect(k.stats.invalidationsRefused).toBe(before.invalidationsRefused);
    // A refused non-blockable start counts as started and refused, and leaves the words idle.
    const oom = makeRange(p.pid, MmuNotifierEvent.UNMAP, a, a + PAGE, 'oom_reaper');
    expect(await p.mm.notifier.invalidateRangeStart(oom, false)).not.toBe(0);
    expect(k.stats.invalidations - before.invalidations).toBe(4);
    expect(k.stats.invalidationsRefused - before.invalidationsRefused).toBe(1);
    expect(k.mem.meta[seqWord]).toBe(p.mm.notifier.invalidateSeq);
    expect(k.mem.meta[seqWord] % 2).toBe(0);
    expect(k.mem.meta[activeWord]).toBe(0);
  });
});
