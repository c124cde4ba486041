import { describe, expect, it } from 'vitest';
import { MmuIntervalNotifier, MmuNotifier, MmuNotifierSubscriptions, EAGAIN, type InvalidationRecord } from '../../src/notifier/subscriptions.js';
import { makeRange, MmuNotifierEvent, rangeBlockable, type NotifierRange } from '../../src/notifier/range.js';
import { recordingInterval, recordingMm } from '../helpers/recorder.js';
import { ACK_OK, ACK_PENDING, ACK_REFUSED, type AckGroup, type PendingAck } from '../../src/notifier/pending-ack.js';

const PAGE = 4096;

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function range(event: number, start: number, end: number): NotifierRange {
  return makeRange(1, event as 0, start, end, 'munmap');
}

describe('sequence protocol (mm/mmu_notifier.c)', () => {
  it('follows the worked example of section 5: idle 4, sub 3; a hit makes 5/5; an old fault retries; readBegin waits for 6', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    // Bring the global seq from 2 to 4 with one invalidation that hits an interval.
    const warm = recordingInterval(subs, 0x10000, PAGE);
    const r0 = range(MmuNotifierEvent.CLEAR, 0x10000, 0x11000);
    await subs.invalidateRangeStart(r0);
    subs.invalidateRangeEnd(r0);
    await subs.removeInterval(warm.sub);
    expect(subs.invalidateSeq).toBe(4);

    const { sub } = recordingInterval(subs, 0x20000, 4 * PAGE);
    expect(sub.invalidateSeq).toBe(3); // inserted while idle: global - 1
    const faultSeq = await sub.readBegin(); // a device fault begins
    expect(faultSeq).toBe(3);

    const r = range(MmuNotifierEvent.UNMAP, 0x20000, 0x21000);
    await subs.invalidateRangeStart(r);
    expect(subs.invalidateSeq).toBe(5);
    expect(sub.invalidateSeq).toBe(5); // set by the callback (setSeq)
    expect(sub.readRetry(faultSeq)).toBe(true); // the old fault must retry

    let began: number | null = null;
    const p = Promise.resolve(sub.readBegin()).then((s) => (began = s));
    await tick();
    expect(began).toBeNull(); // sleeps inside the open window
    subs.invalidateRangeEnd(r);
    await p;
    expect(subs.invalidateSeq).toBe(6);
    expect(began).toBe(5);
    expect(sub.readRetry(5)).toBe(false);
  });

  it('leaves seq even for ranges that hit no interval, and does not make readBegin wait', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const { sub } = recordingInterval(subs, 0x100000, PAGE);
    const r = range(MmuNotifierEvent.CLEAR, 0x200000, 0x201000);
    await subs.invalidateRangeStart(r);
    expect(subs.invalidateSeq).toBe(2);
    expect(subs.activeInvalidateRanges).toBe(1);
    expect(await sub.readBegin()).toBe(1);
    subs.invalidateRangeEnd(r);
    expect(subs.invalidateSeq).toBe(2);
  });

  it('delivers the unclipped range and one odd curSeq to every intersecting subscriber, nested ranges close once', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const a = recordingInterval(subs, 0x10000, 2 * PAGE);
    const b = recordingInterval(subs, 0x12000, 2 * PAGE);
    const c = recordingInterval(subs, 0x40000, PAGE);
    const r1 = range(MmuNotifierEvent.CLEAR, 0x11000, 0x13000);
    const r2 = range(MmuNotifierEvent.CLEAR, 0x12000, 0x13000);
    await subs.invalidateRangeStart(r1);
    await subs.invalidateRangeStart(r2);
    expect(a.calls).toEqual([{ op: 'invalidate', event: 'CLEAR', start: 0x11000, end: 0x13000, blockable: true, owner: null, curSeq: 3, origin: 'munmap' }]);
    expect(b.calls.map((x) => [x.start, x.end, x.curSeq])).toEqual([
      [0x11000, 0x13000, 3],
      [0x12000, 0x13000, 3],
    ]);
    expect(c.calls).toEqual([]);
    subs.invalidateRangeEnd(r1);
    expect(subs.invalidateSeq).toBe(3); // still one range open
    subs.invalidateRangeEnd(r2);
    expect(subs.invalidateSeq).toBe(4);
  });

  it('defers inserts and removes while the tree is frozen, applies them at the last end, and cancels a pending insert', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const a = recordingInterval(subs, 0x10000, PAGE);
    const r = range(MmuNotifierEvent.CLEAR, 0x10000, 0x11000);
    await subs.invalidateRangeStart(r);
    expect(subs.invalidateSeq).toBe(3);

    // Insert while frozen: deferred, seq = global so readBegin waits.
    const late = new MmuIntervalNotifier({ invalidate: () => true }, { label: 'late' });
    subs.insertInterval(late, 0x10000, PAGE);
    expect(late.inTree).toBe(false);
    expect(late.invalidateSeq).toBe(3);
    expect(subs.itree.overlapping(0x10000, 0x10fff).map((s) => s.info.label)).toEqual(['recorder-interval']);

    // Insert then remove while frozen: the pending insert is cancelled, remove does not wait.
    const cancelled = new MmuIntervalNotifier({ invalidate: () => true }, { label: 'cancelled' });
    subs.insertInterval(cancelled, 0x30000, PAGE);
    await subs.removeInterval(cancelled);

    // Remove while frozen: deferred, and the promise resolves only at the end.
    let removed = false;
    const rm = subs.removeInterval(a.sub).then(() => (removed = true));
    let lateBegan: number | null = null;
    const lb = Promise.resolve(late.readBegin()).then((s) => (lateBegan = s));
    await tick();
    expect(removed).toBe(false);
    expect(lateBegan).toBeNull();
    expect(a.sub.inTree).toBe(true);

    subs.invalidateRangeEnd(r);
    await rm;
    await lb;
    expect(removed).toBe(true);
    expect(lateBegan).toBe(3);
    expect(a.sub.inTree).toBe(false);
    expect(late.inTree).toBe(true);
    expect(cancelled.inTree).toBe(false);
    expect([...subs.itree].map((s) => s.info.label)).toEqual(['late']);
  });

  it('inserts at once while only non-hitting ranges are open, making seq odd so readBegin waits for them', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    recordingInterval(subs, 0x10000, PAGE);
    const r = range(MmuNotifierEvent.CLEAR, 0x90000, 0x91000); // hits nothing
    await subs.invalidateRangeStart(r);
    expect(subs.invalidateSeq).toBe(2);
    const n = new MmuIntervalNotifier({ invalidate: () => true }, { label: 'n' });
    subs.insertInterval(n, 0x50000, PAGE);
    expect(n.inTree).toBe(true);
    expect(subs.invalidateSeq).toBe(3);
    expect(n.invalidateSeq).toBe(3);
    let began = false;
    const p = Promise.resolve(n.readBegin()).then(() => (began = true));
    await tick();
    expect(began).toBe(false);
    subs.invalidateRangeEnd(r);
    await p;
    expect(subs.invalidateSeq).toBe(4);
  });

  it('rejects empty and wrapping intervals with EOVERFLOW', () => {
    const subs = new MmuNotifierSubscriptions(1);
    const n = new MmuIntervalNotifier({ invalidate: () => true }, { label: 'n' });
    expect(() => subs.insertInterval(n, 0x1000, 0)).toThrow(expect.objectContaining({ code: 'EOVERFLOW' }));
    expect(() => subs.insertInterval(n, 2 ** 64 - 4096, 8192)).toThrow(expect.objectContaining({ code: 'EOVERFLOW' }));
  });

  it('waits for asynchronous acknowledgements before start resolves, publishing to all subscribers first', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const acks = [deferred<boolean>(), deferred<boolean>()];
    const seen: string[] = [];
    for (const [i, d] of acks.entries()) {
      const n = new MmuIntervalNotifier(
        {
          invalidate: (s, _r, seq) => {
            seen.push(`sub${i}`);
            return d.promise.then((v) => {
              s.setSeq(seq);
              return v;
            });
          },
        },
        { label: `sub${i}` },
      );
      subs.insertInterval(n, 0x10000, PAGE);
    }
    let done = false;
    const p = Promise.resolve(subs.invalidateRangeStart(range(MmuNotifierEvent.CLEAR, 0x10000, 0x11000))).then(() => (done = true));
    await tick();
    expect(seen).toEqual(['sub0', 'sub1']); // both published before any answered
    acks[1].resolve(true);
    await tick();
    expect(done).toBe(false);
    acks[0].resolve(true);
    await p;
    expect(done).toBe(true);
  });
});

describe('non-blockable ranges and unwinding', () => {
  it('stops at the first refusing interval subscriber, closes the tree window, never calls the list', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const refuse = recordingInterval(subs, 0x10000, PAGE, { refuseNonblock: true });
    const after = recordingInterval(subs, 0x20000, PAGE);
    const mm = recordingMm();
    subs.register(mm.sub);
    const r = range(MmuNotifierEvent.UNMAP, 0x10000, 0x30000);
    const res = await subs.invalidateRangeStart(r, false);
    expect(res).toBe(EAGAIN);
    expect(refuse.calls.map((c) => c.blockable)).toEqual([false]);
    expect(after.calls).toEqual([]);
    expect(mm.calls).toEqual([]);
    expect(subs.activeInvalidateRanges).toBe(0);
    expect(subs.invalidateSeq % 2).toBe(0);
    expect(subs.openRanges()).toEqual([]);
  });

  it('calls every list start, then end only on the subscribers that started, and unwinds the tree part too', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const log: string[] = [];
    const ok = new MmuNotifier(
      {
        invalidateRangeStart: () => (log.push('ok:start'), 0),
        invalidateRangeEnd: () => void log.push('ok:end'),
      },
      { label: 'ok' },
    );
    const refusing = new MmuNotifier({ invalidateRangeStart: (_s, r) => (log.push('refuse:start'), rangeBlockable(r) ? 0 : EAGAIN) }, { label: 'refusing' });
    subs.register(ok);
    subs.register(refusing); // newest first: refusing is called before ok
    const tree = recordingInterval(subs, 0x10000, PAGE);
    const res = await subs.invalidateRangeStart(range(MmuNotifierEvent.UNMAP, 0x10000, 0x11000), false);
    expect(res).toBe(EAGAIN);
    expect(tree.calls).toHaveLength(1);
    expect(log).toEqual(['refuse:start', 'ok:start', 'ok:end']);
    // The interval window the kernel would leave open is closed.
    expect(subs.activeInvalidateRanges).toBe(0);
    expect(subs.invalidateSeq).toBe(4);
    expect(await tree.sub.readBegin()).toBe(3);
  });

  it('reports a subscriber that fails a blockable range as a bug and completes the invalidation', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const bugs: string[] = [];
    subs.observer = { onSubscriberBug: (info, msg) => bugs.push(`${info.label}: ${msg}`) };
    subs.insertInterval(new MmuIntervalNotifier({ invalidate: () => false }, { label: 'bad' }), 0x10000, PAGE);
    const r = range(MmuNotifierEvent.CLEAR, 0x10000, 0x11000);
    expect(await subs.invalidateRangeStart(r, true)).toBe(0);
    subs.invalidateRangeEnd(r);
    expect(bugs).toEqual(['bad: refused a blockable invalidation']);
  });

  it('reports whole-mm subscribers that fail a blockable range, synchronously or not, and still ends every one that started', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const bugs: string[] = [];
    const records: InvalidationRecord[] = [];
    subs.observer = { onSubscriberBug: (info, msg) => bugs.push(`${info.label}: ${msg}`), onInvalidationEnd: (rec) => records.push(rec) };
    const ends: string[] = [];
    const mm = (label: string, start?: () => number | Promise<number>): MmuNotifier =>
      new MmuNotifier({ ...(start ? { invalidateRangeStart: start } : {}), invalidateRangeEnd: () => void ends.push(label) }, { label });
    subs.insertInterval(new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), true) }, { label: 'iv' }), 0x10000, PAGE);
    subs.register(mm('sync-bad', () => -11));
    subs.register(mm('async-bad', () => Promise.resolve(-11)));
    subs.register(mm('good', () => 0));
    subs.register(mm('end-only'));
    const r = range(MmuNotifierEvent.CLEAR, 0x10000, 0x11000);
    expect(await subs.invalidateRangeStart(r, true)).toBe(0);
    subs.invalidateRangeEnd(r);
    expect(bugs.sort()).toEqual(['async-bad: refused a blockable invalidation', 'sync-bad: refused a blockable invalidation']);
    // Newest first (hlist_add_head); the end-only subscriber gets its end too.
    expect(ends).toEqual(['end-only', 'good', 'async-bad', 'sync-bad']);
    expect(records).toHaveLength(1);
    expect(records[0].subscribers.map((o) => [o.info.label, o.kind, o.result])).toEqual([
      ['iv', 'interval', 'ok'],
      ['good', 'mm', 'ok'],
      ['async-bad', 'mm', 'bug'],
      ['sync-bad', 'mm', 'bug'],
    ]);
    expect(subs.isInvalidating()).toBe(false);
    expect(subs.openRanges()).toEqual([]);
  });
});

describe('shared-memory answers (PendingAck)', () => {
  /** A group whose acks are answered by the test: spin() sees what is answered so far, park() waits for the rest. */
  function ackGroup(): { group: AckGroup; ack: () => PendingAck & { answer(v: number): void } } {
    const waiters: Array<() => void> = [];
    const group: AckGroup = {
      spin: (acks) => acks.every((a) => a.poll() !== ACK_PENDING),
      park: (acks) =>
        new Promise<void>((resolve) => {
          const check = (): void => (acks.every((a) => a.poll() !== ACK_PENDING) ? resolve() : void waiters.push(check));
          check();
        }),
    };
    const ack = (): PendingAck & { answer(v: number): void } => {
      let state = ACK_PENDING;
      return {
        group,
        poll: () => state,
        answer(v: number) {
          state = v;
          for (const w of waiters.splice(0)) w();
        },
      };
    };
    return { group, ack };
  }

  it('waits for every shared-memory answer among synchronous and promised ones, and records each outcome in call order', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const bugs: string[] = [];
    const records: InvalidationRecord[] = [];
    subs.observer = { onSubscriberBug: (info, msg) => bugs.push(`${info.label}: ${msg}`), onInvalidationEnd: (rec) => records.push(rec) };
    const { ack } = ackGroup();
    const a1 = ack();
    const a2 = ack();
    const late = deferred<boolean>();
    const iv = (label: string, answer: () => boolean | Promise<boolean> | PendingAck, start: number): MmuIntervalNotifier => {
      const sub = new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), answer()) }, { label });
      subs.insertInterval(sub, start, PAGE);
      return sub;
    };
    const s1 = iv('shm-1', () => a1, 0x10000);
    iv('sync', () => true, 0x11000);
    const s2 = iv('shm-2', () => a2, 0x12000);
    iv('promise', () => late.promise, 0x13000);
    let done = false;
    const r = range(MmuNotifierEvent.CLEAR, 0x10000, 0x14000);
    const started = Promise.resolve(subs.invalidateRangeStart(r, true)).then((v) => ((done = true), v));
    await tick();
    expect(done).toBe(false);
    expect(s1.inFlight).toBe(1); // a shared-memory callback is over only when its answer is read
    a1.answer(ACK_OK);
    late.resolve(true);
    await tick();
    expect(done).toBe(false); // shm-2 has not answered
    a2.answer(ACK_REFUSED);
    expect(await started).toBe(0);
    expect([s1.inFlight, s2.inFlight]).toEqual([0, 0]);
    subs.invalidateRangeEnd(r);
    expect(bugs).toEqual(['shm-2: refused a blockable invalidation']);
    expect(records).toHaveLength(1);
    const byLabel = Object.fromEntries(records[0].subscribers.map((o) => [o.info.label, o.result]));
    expect(byLabel).toEqual({ 'shm-1': 'ok', sync: 'ok', 'shm-2': 'bug', promise: 'ok' });
    expect(subs.openRanges()).toEqual([]);
  });

  it('one interval hit and no whole-mm subscription (the short path) ends as the general path does, for every kind of answer', async () => {
    // The general path is forced by a whole-mm subscription with no callbacks: it is never called
    // and has no outcome, so both runs must record exactly the same.
    type Answer = 'true' | 'false' | 'promise-true' | 'promise-false' | 'ack-ok' | 'ack-refused' | 'parked-ok' | 'parked-refused' | 'throws';
    const run = async (answer: Answer, general: boolean) => {
      const subs = new MmuNotifierSubscriptions(1);
      subs.timing = { on: true };
      const bugs: string[] = [];
      const records: InvalidationRecord[] = [];
      subs.observer = { onSubscriberBug: (info, msg) => bugs.push(`${info.label}: ${msg}`), onInvalidationEnd: (rec) => records.push(rec) };
      if (general) subs.register(new MmuNotifier({}, { label: 'inert' }));
      const { ack } = ackGroup();
      const a = ack();
      const sub = new MmuIntervalNotifier(
        {
          invalidate: (s, _r, seq) => {
            s.setSeq(seq);
            switch (answer) {
              case 'true':
              case 'false':
                return answer === 'true';
              case 'promise-true':
              case 'promise-false':
                return tick().then(() => answer === 'promise-true');
              case 'ack-ok':
              case 'ack-refused':
                a.answer(answer === 'ack-ok' ? ACK_OK : ACK_REFUSED);
                return a;
              case 'parked-ok':
              case 'parked-refused':
                setImmediate(() => a.answer(answer === 'parked-ok' ? ACK_OK : ACK_REFUSED));
                return a;
              case 'throws':
                throw new Error('boom');
            }
          },
        },
        { label: 'dev' },
      );
      subs.insertInterval(sub, 0x10000, 4 * PAGE);
      const r = range(MmuNotifierEvent.CLEAR, 0x11000, 0x12000);
      const x = subs.invalidateRangeStart(r, true);
      const sync = typeof x === 'number';
      expect(subs.isInvalidating()).toBe(true);
      expect(await x).toBe(0);
      expect(sub.inFlight).toBe(0);
      expect(subs.openRanges()).toEqual([r]);
      subs.invalidateRangeEnd(r);
      expect(subs.isInvalidating()).toBe(false);
      expect(subs.openRanges()).toEqual([]);
      expect(records).toHaveLength(1);
      const rec = records[0];
      expect(rec.startedUs).toBeGreaterThan(0);
      expect(rec.ackedUs).toBeGreaterThanOrEqual(rec.startedUs);
      expect(rec.endedUs).toBeGreaterThanOrEqual(rec.ackedUs);
      return {
        sync,
        seq: [subs.invalidateSeq, sub.invalidateSeq],
        bugs,
        subscribers: rec.subscribers.map((o) => [o.info.label, o.kind, o.result, o.ackUs >= 0]),
        result: rec.result,
      };
    };
    const answers: Answer[] = ['true', 'false', 'promise-true', 'promise-false', 'ack-ok', 'ack-refused', 'parked-ok', 'parked-refused', 'throws'];
    for (const answer of answers) {
      const short = await run(answer, false);
      expect(short, answer).toEqual(await run(answer, true));
      const refused = answer.endsWith('false') || answer.endsWith('refused');
      expect(short.bugs, answer).toEqual(refused ? ['dev: refused a blockable invalidation'] : answer === 'throws' ? ['dev: invalidate threw: boom'] : []);
      expect(short.subscribers, answer).toEqual([['dev', 'interval', refused ? 'bug' : 'ok', true]]);
      expect(short.sync, answer).toBe(!answer.startsWith('promise') && !answer.startsWith('parked'));
      expect(short.seq, answer).toEqual([4, 3]);
    }
  });

  it('completes synchronously when every subscriber answered through shared memory inside the spin', () => {
    const subs = new MmuNotifierSubscriptions(1);
    const { ack } = ackGroup();
    const acks = [ack(), ack()];
    acks.forEach((a, i) => {
      subs.insertInterval(new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), a.answer(ACK_OK), a) }, { label: `w${i}` }), 0x10000 + i * PAGE, PAGE);
    });
    const r = range(MmuNotifierEvent.CLEAR, 0x10000, 0x12000);
    expect(subs.invalidateRangeStart(r, true)).toBe(0); // a number, not a promise
    expect(subs.isInvalidating()).toBe(true);
    subs.invalidateRangeEnd(r);
    expect(subs.isInvalidating()).toBe(false);
  });
});

describe('whole-mm subscriptions', () => {
  it('registers newest first, ORs clear_flush_young over all, and stops test_young at the first true', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const a = recordingMm({ young: true });
    const b = recordingMm({ young: false });
    subs.register(a.sub);
    subs.register(b.sub);
    expect(subs.list.map((s) => s)).toEqual([b.sub, a.sub]);
    expect(await subs.clearFlushYoung(0x1000, 0x2000)).toBe(true);
    expect(a.calls.map((c) => c.op)).toEqual(['clear_flush_young']);
    expect(b.calls.map((c) => c.op)).toEqual(['clear_flush_young']);
    expect(await subs.testYoung(0x1000)).toBe(true);
    expect(b.calls.filter((c) => c.op === 'test_young')).toHaveLength(1);
    expect(a.calls.filter((c) => c.op === 'test_young')).toHaveLength(1);
    const c = recordingMm({ young: true });
    subs.register(c.sub); // newest, young: a and b are not asked
    expect(await subs.testYoung(0x1000)).toBe(true);
    expect(b.calls.filter((x) => x.op === 'test_young')).toHaveLength(1);
  });

  it('release: RELEASE to intervals, release once to each list subscriber, which then gets nothing more', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const mm = recordingMm();
    subs.register(mm.sub);
    const iv = recordingInterval(subs, 0x10000, PAGE);
    await subs.release();
    await subs.release();
    expect(iv.calls.map((c) => [c.op, c.event, c.start, c.end])).toEqual([['invalidate', 'RELEASE', 0, 'ULONG_MAX']]);
    expect(mm.calls.map((c) => c.op)).toEqual(['release']);
    const r = range(MmuNotifierEvent.UNMAP, 0, 2 ** 64);
    await subs.invalidateRangeStart(r);
    subs.invalidateRangeEnd(r);
    expect(mm.calls.map((c) => c.op)).toEqual(['release']);
    expect(iv.calls.map((c) => c.event)).toEqual(['RELEASE', 'UNMAP']);
    await subs.unregister(mm.sub); // no second release
    expect(mm.calls.map((c) => c.op)).toEqual(['release']);
  });

  it('unregister calls release once and resolves only after callbacks in flight finished', async () => {
    const subs = new MmuNotifierSubscriptions(1);
    const gate = deferred<number>();
    let released = 0;
    const sub = new MmuNotifier({ invalidateRangeStart: () => gate.promise, release: () => void released++ }, { label: 's' });
    subs.register(sub);
    const r = range(MmuNotifierEvent.CLEAR, 0, PAGE);
    const started = subs.invalidateRangeStart(r);
    let unregistered = false;
    const u = subs.unregister(sub).then(() => (unregistered = true));
    await tick();
    expect(released).toBe(1);
    expect(unregistered).toBe(false); // its start callback is still running
    gate.resolve(0);
    await started;
    await u;
    expect(unregistered).toBe(true);
    subs.invalidateRangeEnd(r);
  });
});
