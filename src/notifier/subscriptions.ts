/**
 * The per-mm notifier core, after mm/mmu_notifier.c: whole-mm ("hlist") subscriptions and interval
 * subscriptions with the `invalidateSeq` protocol.
 *
 * Asynchronous completion. A kernel callback blocks until the device has stopped using the range;
 * here a callback may instead return a promise (a device worker or an external client answering
 * later). The core publishes a blockable start to every intersecting subscriber first (tree, then
 * list, the kernel's order) and then waits for all of them, like the two-pass
 * invalidate_start/invalidate_finish interval ops: fan-out latency is the slowest subscriber, not
 * the sum. Non-blockable ranges (the OOM reaper) are delivered one subscriber at a time, because
 * the kernel stops at the first interval subscriber that refuses.
 *
 * Sequence protocol (interval subscriptions), all on the kernel thread:
 *
 *   invalidateSeq: even = idle; odd = an open range hit an interval subscription ("frozen").
 *
 *   kernel (invalidation)            device (fault, see readBegin/readRetry)
 *   -------------------------------  ------------------------------------------------
 *   active++; hit? seq |= 1          seq = readBegin(sub)   // waits while sub.seq == global
 *   invalidate(sub, range, seq) ---> lock; sub.setSeq(seq); zap mirror; unlock; ack
 *   (wait for every ack)             pfns = rangeFault(sub, seq) // EBUSY if sub.seq != seq
 *   change PTEs                      lock
 *   active--; 0 && odd? seq++        if readRetry(sub, seq): unlock; goto readBegin
 *   apply deferred insert/remove     program device PTEs from pfns; unlock
 *   wake readBegin waiters
 *
 * A fault that began before the invalidation holds the old sub.seq, so readRetry fails after the
 * invalidation's setSeq and the stale pfns are never programmed. A fault that begins inside the
 * window finds sub.seq == global and waits in readBegin until the last range ends.
 */
import { performance } from 'node:perf_hooks';
import { DevmirrorError, invariant } from '../errors.js';
import { ULONG_MAX } from '../kernel/layout.js';
import { IntervalTree, type IntervalNode } from './interval-tree.js';
import { MmuNotifierEvent, RANGE_BLOCKABLE, type NotifierRange } from './range.js';
import { ACK_OK, isPendingAck, parkAcksThen, spinAcks, waitAcks, type PendingAck } from './pending-ack.js';

export const EAGAIN = -11;

/** What a subscriber is, for records, metrics and the dashboard. */
export interface SubscriberInfo {
  /** Human readable name, e.g. "gpu0:svm[0x7f00..]". */
  label: string;
  deviceId?: number;
  deviceKind?: string;
}

// ---- whole-mm subscriptions ---------------------------------------------------------------------

export interface MmuNotifierOps {
  /** mm teardown or unregister: drop every secondary mapping; at most once. */
  release?(sub: MmuNotifier): void | Promise<void>;
  clearFlushYoung?(sub: MmuNotifier, start: number, end: number): boolean | Promise<boolean>;
  clearYoung?(sub: MmuNotifier, start: number, end: number): boolean | Promise<boolean>;
  testYoung?(sub: MmuNotifier, addr: number): boolean | Promise<boolean>;
  /** 0, or EAGAIN (only for a non-blockable range); a PendingAck answers OK (0) or REFUSED. */
  invalidateRangeStart?(sub: MmuNotifier, range: NotifierRange): number | Promise<number> | PendingAck;
  /** One-way. */
  invalidateRangeEnd?(sub: MmuNotifier, range: NotifierRange): void;
}

export class MmuNotifier {
  subscriptions: MmuNotifierSubscriptions | null = null;
  /** Callbacks running right now (the SRCU read sections unregister waits for). */
  inFlight = 0;
  released = false;
  users = 1;
  private idleWaiters: Array<() => void> = [];

  constructor(
    readonly ops: MmuNotifierOps,
    readonly info: SubscriberInfo,
  ) {}

  /** @internal */
  enter(): void {
    this.inFlight++;
  }
  /** @internal */
  exit(): void {
    if (--this.inFlight === 0 && this.idleWaiters.length) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }
  /** Resolves when no callback of this subscription is running (synchronize_srcu). */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }
}

// ---- interval subscriptions ---------------------------------------------------------------------

export interface MmuIntervalNotifierOps {
  /**
   * Must stop using [range] ∩ [sub] before returning (or resolving) true and call
   * `sub.setSeq(curSeq)` under the driver lock. May return false only if the range is not
   * blockable.
   */
  invalidate(sub: MmuIntervalNotifier, range: NotifierRange, curSeq: number): boolean | Promise<boolean> | PendingAck;
  /**
   * Not a kernel callback (interval subscriptions get no end in the kernel): devmirror's transports
   * use it to tell a device, and its sanitizer, that the window of an invalidation it received has
   * closed. Called after the tree bookkeeping of the end, one-way.
   */
  windowClosed?(sub: MmuIntervalNotifier, range: NotifierRange): void;
}

let nextKey = 1;

export class MmuIntervalNotifier implements IntervalNode {
  start = 0;
  /** Inclusive, like the kernel's interval tree. */
  last = 0;
  readonly key = nextKey++;
  /** mmu_interval_notifier.invalidate_seq. */
  invalidateSeq = 0;
  subscriptions: MmuNotifierSubscriptions | null = null;
  inTree = false;
  inFlight = 0;
  _left?: IntervalNode | null;
  _right?: IntervalNode | null;
  _height?: number;
  _max?: number;

  constructor(
    readonly ops: MmuIntervalNotifierOps,
    readonly info: SubscriberInfo,
  ) {}

  /** mmu_interval_set_seq: call from invalidate() with the driver lock held. */
  setSeq(curSeq: number): void {
    this.invalidateSeq = curSeq;
  }

  /** mmu_interval_read_retry: under the driver lock; true means the pfns are stale. */
  readRetry(seq: number): boolean {
    return this.invalidateSeq !== seq;
  }

  /** mmu_interval_check_retry: the same test without the lock, a hint. */
  checkRetry(seq: number): boolean {
    return this.invalidateSeq !== seq;
  }

  /** mmu_interval_read_begin. Resolves at once unless an invalidation of this range is open. */
  readBegin(): number | Promise<number> {
    invariant(this.subscriptions, 'readBegin on a removed interval subscription');
    return this.subscriptions.readBegin(this);
  }

  /** End of the range, exclusive (may be ULONG_MAX). */
  get end(): number {
    return this.last + 1;
  }
}

// ---- records ------------------------------------------------------------------------------------

export interface SubscriberOutcome {
  info: SubscriberInfo;
  kind: 'interval' | 'mm';
  /** ok, would-block (refused a non-blockable range), or bug (refused a blockable one). */
  result: 'ok' | 'would-block' | 'bug';
  /** From publishing start to this subscriber's answer. */
  ackUs: number;
}

export interface InvalidationRecord {
  range: NotifierRange;
  result: 'ok' | 'EAGAIN';
  subscribers: SubscriberOutcome[];
  /**
   * performance.now() in microseconds. Every time of a record (and each subscriber's ackUs) is 0
   * when it was not timed: see MmuNotifierSubscriptions.timing.
   */
  startedUs: number;
  /**
   * All acknowledgements in (the PTEs may change). When every subscriber answered synchronously
   * (inside its callback) this equals startedUs: nothing was waited for.
   */
  ackedUs: number;
  /** End delivered (or the failure unwound). */
  endedUs: number;
}

/** What the core counts itself (the kernel passes its stats). */
export interface NotifierCounts {
  /** Invalidations started (every event, the RELEASE of exit included). */
  invalidations: number;
  /** Of which refused or failed (a non-blockable start refused, a blockable one refused: a bug). */
  invalidationsRefused: number;
}

export interface NotifierObserver {
  onInvalidationStart?(range: NotifierRange): void;
  onInvalidationEnd?(record: InvalidationRecord): void;
  /** A subscriber broke a rule the kernel WARNs about. */
  onSubscriberBug?(info: SubscriberInfo, message: string, range: NotifierRange | null): void;
  /** A readBegin had to wait for open invalidations (from `sinceUs` until now); tracing. */
  onReadBeginWait?(info: SubscriberInfo, sinceUs: number): void;
}

interface OpenRange {
  record: InvalidationRecord;
  /** Position in MmuNotifierSubscriptions.openList (swap-removed at the end). */
  index: number;
  /** Interval subscriptions that were called (for windowClosed). */
  intervals: MmuIntervalNotifier[];
  /** hlist subscribers whose start succeeded: they, and only they, get end (null: none). */
  started: MmuNotifier[] | null;
  /** Did this range take part in the tree window (active counted)? */
  treeCounted: boolean;
}

interface Deferred {
  sub: MmuIntervalNotifier;
  op: 'insert' | 'remove';
}

let nextInvalidationId = 1;
/** Length of the recent-ranges ring (a power of two). */
const RECENT = 16;

/**
 * Restarts the process-wide id counters (invalidation ids, interval keys). Only for the
 * interleaving explorer, which runs many kernels one after another in one process and must number
 * everything the same way in every run, or a replay in a fresh process would not match its record.
 */
export function resetNotifierIds(): void {
  nextInvalidationId = 1;
  nextKey = 1;
}

const now = (): number => performance.now() * 1000;

/**
 * A started range's OpenRange, on the range itself: the end finds it without a lookup (a Map keyed
 * by id cost the round about 40 ns, 11-27). A symbol key: JSON, structured clones and the wire
 * never see it.
 */
const OPEN: unique symbol = Symbol('devmirror.openRange');
/** The intervals of a range that hit none (never pushed to: the blockable path's own). */
const NO_HITS: MmuIntervalNotifier[] = [];

/** `list` with `x` appended; a new list is a one-element literal (one grown from [] holds 17 slots). */
function add<T>(list: T[] | null, x: T): T[] {
  if (list === null) return [x];
  list.push(x);
  return list;
}

type OpenedRange = NotifierRange & { [OPEN]?: OpenRange | null };

/**
 * Whether invalidation records are timed. A clock read costs about 40 ns here (performance.now,
 * 11-27), a third of the kernel's own share of an in-process round, and only observers of the
 * records (metrics, the event log, tracing, the load generator) read the times: the kernel shares
 * one switch among its mms and keeps it on exactly while such an observer is attached.
 */
export interface RecordTiming {
  on: boolean;
}

/**
 * mmu_notifier_subscriptions: one per mm, created with the mm (the kernel allocates it lazily; an
 * empty one behaves identically).
 */
export class MmuNotifierSubscriptions {
  /** Whole-mm subscriptions, newest first (hlist_add_head). */
  readonly list: MmuNotifier[] = [];
  readonly itree = new IntervalTree<MmuIntervalNotifier>();
  hasItree = false;
  /** Starts at 2, as in the kernel. */
  invalidateSeq = 2;
  activeInvalidateRanges = 0;
  private deferred: Deferred[] = [];
  private seqWaiters: Array<{ seq: number; resolve: () => void }> = [];
  /** Ranges started and not yet ended (unordered; each knows its index). */
  private openList: OpenRange[] = [];
  /** The tree search's output, reused (see invalidateRangeStart). */
  private readonly hitScratch: MmuIntervalNotifier[] = [];
  /** Timing of the records; standalone subscriptions time everything (the kernel shares its switch). */
  timing: RecordTiming = { on: true };
  /** The last ranges started (a ring): what moved the seq under a fault that keeps retrying. */
  private readonly recent: Array<NotifierRange | undefined> = new Array(RECENT);
  private recentNext = 0;
  /** False once the mm is gone (mm_users == 0): inserts fail with EINVAL. */
  alive = true;
  released = false;
  observer: NotifierObserver | null = null;
  /**
   * Counters this core bumps itself (the kernel's stats): counting here, not in an observer,
   * keeps the observer calls off an invalidation when nothing observes the ranges.
   */
  counts: NotifierCounts | null = null;
  private seqWords: Int32Array | null = null;
  private seqWord = 0;
  private activeWord = 0;

  constructor(readonly pid: number) {}

  /**
   * Publishes invalidateSeq and the active count to the words `publishTo` named (the mm table's
   * MS.INVALIDATE_SEQ and MS.ACTIVE_RANGES): plain stores from this thread only, a snapshot to
   * inspect, which no thread orders itself on. Stored here rather than through an observer call:
   * two calls a round through a closure cost the in-process round about 20 ns (11-29).
   */
  private publish(): void {
    const w = this.seqWords;
    if (w === null) return;
    w[this.activeWord] = this.activeInvalidateRanges;
    w[this.seqWord] = this.invalidateSeq;
  }

  /** Where publish() writes (an mm's slot in the kernel's shared meta words). */
  publishTo(words: Int32Array, seqWord: number, activeWord: number): void {
    this.seqWords = words;
    this.seqWord = seqWord;
    this.activeWord = activeWord;
    this.publish();
  }

  /** An invalidation started: counted, and the observer told if it listens. */
  private noteStart(range: NotifierRange): void {
    const c = this.counts;
    if (c !== null) c.invalidations++;
    this.observer?.onInvalidationStart?.(range);
  }

  /** An invalidation ended (or failed to start): counted, and the observer told if it listens. */
  private noteEnd(rec: InvalidationRecord): void {
    const c = this.counts;
    if (c !== null && rec.result !== 'ok') c.invalidationsRefused++;
    this.observer?.onInvalidationEnd?.(rec);
  }

  private bug(info: SubscriberInfo, message: string, range: NotifierRange | null): void {
    this.observer?.onSubscriberBug?.(info, message, range);
  }

  get subscriberCount(): number {
    return this.list.length + this.itree.size;
  }

  /** Who is subscribed now, whole-mm and interval (leak checks, observers). */
  subscribers(): SubscriberInfo[] {
    const out = this.list.map((s) => s.info);
    for (const s of this.itree.overlapping(0, Number.MAX_VALUE)) out.push(s.info);
    return out;
  }

  /** True while invalidations are open that froze the tree (seq odd). */
  isInvalidating(): boolean {
    return (this.invalidateSeq & 1) === 1;
  }

  // ---- registration ----------------------------------------------------------------------------

  /** mmu_notifier_register: newest first. */
  register(sub: MmuNotifier): void {
    if (!this.alive) throw new DevmirrorError('EINVAL', 'the mm has no users');
    invariant(sub.subscriptions === null, 'subscription already registered');
    sub.subscriptions = this;
    sub.released = false;
    this.list.unshift(sub);
  }

  /**
   * mmu_notifier_unregister: calls release if it has not run, unlinks, and resolves only when no
   * callback of this subscription is running or can run.
   */
  async unregister(sub: MmuNotifier): Promise<void> {
    const i = this.list.indexOf(sub);
    if (i >= 0) {
      if (!sub.released && sub.ops.release) {
        sub.released = true;
        sub.enter();
        try {
          await sub.ops.release(sub);
        } finally {
          sub.exit();
        }
      }
      const j = this.list.indexOf(sub);
      if (j >= 0) this.list.splice(j, 1);
    }
    await sub.idle();
    sub.subscriptions = null;
  }

  /**
   * mmu_interval_notifier_insert. Throws EOVERFLOW for an empty or wrapping range.
   */
  insertInterval(sub: MmuIntervalNotifier, start: number, length: number): void {
    if (!(length > 0) || !Number.isFinite(start) || start < 0 || start + length - 1 >= ULONG_MAX) {
      throw new DevmirrorError('EOVERFLOW', 'interval is empty or wraps');
    }
    if (!this.alive) throw new DevmirrorError('EINVAL', 'the mm has no users');
    invariant(sub.subscriptions === null, 'interval subscription already inserted');
    this.hasItree = true;
    sub.subscriptions = this;
    sub.start = start;
    sub.last = start + length - 1;
    if (this.activeInvalidateRanges === 0) {
      // Idle: seq is even. sub.seq = global - 1 is odd and never equal to global, so readBegin
      // never waits on a fresh subscription.
      invariant((this.invalidateSeq & 1) === 0, 'seq odd while no range is active');
      sub.invalidateSeq = this.invalidateSeq - 1;
      this.itree.insert(sub);
      sub.inTree = true;
    } else if (this.isInvalidating()) {
      // Frozen tree: the insert waits for the last range to end; readBegin waits with it.
      this.deferred.push({ sub, op: 'insert' });
      sub.invalidateSeq = this.invalidateSeq;
    } else {
      // Ranges are open but none hit an interval: insert now, but make seq odd so the last end
      // bumps it and readBegin on this new subscription waits for the open ranges to finish.
      this.invalidateSeq |= 1;
      this.itree.insert(sub);
      sub.inTree = true;
      sub.invalidateSeq = this.invalidateSeq;
      this.publish();
    }
  }

  /**
   * mmu_interval_notifier_remove: immediate when idle; deferred while the tree is frozen, and then
   * resolves only when the window closes. Afterwards no callback runs for `sub`.
   */
  async removeInterval(sub: MmuIntervalNotifier): Promise<void> {
    if (sub.subscriptions !== this) return;
    let waitSeq = 0;
    if (this.isInvalidating()) {
      const pendingInsert = this.deferred.findIndex((d) => d.sub === sub && d.op === 'insert');
      if (!sub.inTree && pendingInsert >= 0) {
        this.deferred.splice(pendingInsert, 1);
      } else if (sub.inTree) {
        if (!this.deferred.some((d) => d.sub === sub && d.op === 'remove')) {
          this.deferred.push({ sub, op: 'remove' });
        }
        waitSeq = this.invalidateSeq;
      }
    } else if (sub.inTree) {
      this.itree.remove(sub);
      sub.inTree = false;
    }
    if (waitSeq) await this.waitSeqChange(waitSeq);
    while (sub.inFlight > 0) await this.waitSeqChange(this.invalidateSeq);
    sub.subscriptions = null;
  }

  // ---- readBegin -------------------------------------------------------------------------------

  readBegin(sub: MmuIntervalNotifier): number | Promise<number> {
    const seq = sub.invalidateSeq;
    if (seq !== this.invalidateSeq) return seq;
    // The subscription was hit by (or inserted during) the open window: wait until the last
    // range ends and the global seq moves on. No loop: a retry may already be pending on return.
    const t0 = now();
    return this.waitSeqChange(seq).then(() => {
      this.observer?.onReadBeginWait?.(sub.info, t0);
      return seq;
    });
  }

  /** Resolves when invalidateSeq != seq. */
  waitSeqChange(seq: number): Promise<void> {
    if (this.invalidateSeq !== seq) return Promise.resolve();
    return new Promise((resolve) => this.seqWaiters.push({ seq, resolve }));
  }

  private wakeSeqWaiters(): void {
    if (this.seqWaiters.length === 0) return;
    const keep: typeof this.seqWaiters = [];
    for (const w of this.seqWaiters) {
      if (w.seq !== this.invalidateSeq) w.resolve();
      else keep.push(w);
    }
    this.seqWaiters = keep;
  }

  // ---- the interval tree part ------------------------------------------------------------------

  /**
   * mn_itree_inv_start_range: count the range, freeze the tree if it hits. The caller publishes the
   * new seq (publish()): the blockable path does it after posting the calls, since the shared word
   * is for inspection only (no thread orders itself on it) and is not on a device's way to its call.
   */
  private itreeStart(range: NotifierRange, out: MmuIntervalNotifier[]): number {
    this.activeInvalidateRanges++;
    this.itree.overlapping(range.start, range.end - 1, out);
    if (out.length > 0) this.invalidateSeq |= 1;
    return this.invalidateSeq;
  }

  /** mn_itree_inv_end. */
  private itreeEnd(): void {
    invariant(this.activeInvalidateRanges > 0, 'invalidate end without start');
    this.activeInvalidateRanges--;
    if (this.activeInvalidateRanges !== 0 || !this.isInvalidating()) {
      this.publish();
      return;
    }
    this.invalidateSeq++;
    // Deferred items were pushed at the head of an hlist in the kernel: apply newest first.
    for (let i = this.deferred.length - 1; i >= 0; i--) {
      const { sub, op } = this.deferred[i];
      if (op === 'insert') {
        this.itree.insert(sub);
        sub.inTree = true;
      } else {
        this.itree.remove(sub);
        sub.inTree = false;
      }
    }
    if (this.deferred.length > 0) this.deferred = [];
    this.publish();
    this.wakeSeqWaiters();
  }

  private callInterval(
    sub: MmuIntervalNotifier,
    range: NotifierRange,
    curSeq: number,
  ): boolean | Promise<boolean> | PendingAck {
    sub.inFlight++;
    let r: boolean | Promise<boolean> | PendingAck;
    try {
      r = sub.ops.invalidate(sub, range, curSeq);
    } catch (e) {
      sub.inFlight--;
      this.bug(sub.info, `invalidate threw: ${(e as Error).message}`, range);
      return true;
    }
    if (typeof r === 'boolean') {
      sub.inFlight--;
      return r;
    }
    if (isPendingAck(r)) return r; // inFlight is dropped when the core reads the answer
    return r.then(
      (v) => {
        sub.inFlight--;
        return v;
      },
      (e: Error) => {
        sub.inFlight--;
        this.bug(sub.info, `invalidate failed: ${e.message}`, range);
        return true;
      },
    );
  }

  private callStart(sub: MmuNotifier, range: NotifierRange): number | Promise<number> | PendingAck {
    const fn = sub.ops.invalidateRangeStart;
    if (!fn) return 0;
    sub.enter();
    let r: number | Promise<number> | PendingAck;
    try {
      r = fn.call(sub.ops, sub, range);
    } catch (e) {
      sub.exit();
      this.bug(sub.info, `invalidate_range_start threw: ${(e as Error).message}`, range);
      return 0;
    }
    if (typeof r === 'number') {
      sub.exit();
      return r;
    }
    if (isPendingAck(r)) return r; // exit() when the core reads the answer
    return r.then(
      (v) => {
        sub.exit();
        return v;
      },
      (e: Error) => {
        sub.exit();
        this.bug(sub.info, `invalidate_range_start failed: ${e.message}`, range);
        return 0;
      },
    );
  }

  /** Waits for one answer of any kind (non-blockable path, one subscriber at a time). */
  private async answer<T extends boolean | number>(r: T | Promise<T> | PendingAck, ok: T, refused: T): Promise<T> {
    if (!isPendingAck(r)) return r;
    await waitAcks([r]);
    return r.poll() === ACK_OK ? ok : refused;
  }

  // ---- invalidate_range_start / end ------------------------------------------------------------

  /**
   * mmu_notifier_invalidate_range_start (blockable) or ..._nonblock (`blockable` false).
   * Resolves to 0, or EAGAIN when a non-blockable start was refused; then every part that started
   * has been unwound and the caller must not call invalidateRangeEnd or touch the PTEs.
   */
  invalidateRangeStart(range: NotifierRange, blockable = true): Promise<number> | number {
    if (blockable) return this.startBlockable(range, 0);
    range.flags &= ~RANGE_BLOCKABLE;
    range.id = nextInvalidationId++;
    return this.startNonBlockable(range, this.opened(range, this.timing.on ? now() : 0, [], []));
  }

  /**
   * The blockable start (invalidateRangeStart(range, true)), resolving with `value` instead of 0:
   * the kernel's notify passes the range, and its caller's continuation is then the first reaction
   * to the last answer (no `.then(() => range)` on top: each reaction was one more microtask of an
   * external round on the kernel's event loop).
   */
  startBlockable<T>(range: NotifierRange, value: T): T | Promise<T> {
    range.flags |= RANGE_BLOCKABLE;
    range.id = nextInvalidationId++;
    const startedUs = this.timing.on ? now() : 0;

    // Publish first, book-keep after: a subscriber in another thread (a device worker) handles
    // the call while this thread writes the record below, so that work costs the round nothing.
    // No subscriber can see the order: a worker sees only its mailbox, and one in this thread runs
    // inside the loop below, before anything else here. (The non-blockable path records first:
    // it waits for each subscriber in turn anyway.)
    let hits: MmuIntervalNotifier[] | null = null;
    // Who was called, in order (the tree's hits, then the list's), and what each returned: true or
    // false for a synchronous answer (a list subscriber's 0 or errno is mapped at the call), a
    // PendingAck, or a promise of one of those.
    let called: Array<MmuIntervalNotifier | MmuNotifier> | null = null;
    let results: Array<boolean | Promise<boolean> | PendingAck> | null = null;
    if (this.hasItree) {
      // The tree search fills a scratch list; the range keeps an exact copy (a list grown by push
      // holds 17 slots, and this path allocates on every invalidation). Copied before any
      // subscriber runs: one in this thread may start a nested invalidation.
      const scratch = this.hitScratch;
      const curSeq = this.itreeStart(range, scratch);
      const n = scratch.length;
      if (n === 1 && this.list.length === 0) {
        const hit = scratch[0];
        scratch.pop();
        return this.startOneInterval(range, startedUs, hit, curSeq, value);
      }
      // One hit beside whole-mm subscriptions is a one-element literal: half the cost of slice()
      // and new Array() here (11-27), and both are before the first call.
      hits = n === 0 ? NO_HITS : n === 1 ? [scratch[0]] : scratch.slice();
      while (scratch.length > 0) scratch.pop(); // `length = 0` is a runtime call, pop is inlined
      if (n === 1) results = [this.callInterval(hits[0], range, curSeq)];
      else if (n > 1) {
        results = new Array(n);
        for (let i = 0; i < n; i++) results[i] = this.callInterval(hits[i], range, curSeq);
      }
      if (n > 0) called = hits;
      this.publish();
    }
    let started: MmuNotifier[] | null = null;
    for (const sub of this.list) {
      if (!sub.ops.invalidateRangeStart) {
        if (sub.ops.invalidateRangeEnd) started = add(started, sub);
        continue;
      }
      const r = this.callStart(sub, range);
      started = add(started, sub);
      // `called` may still be `hits`, which the open range keeps as its intervals: copy, not push.
      called = called === hits ? [...(called ?? []), sub] : add(called, sub);
      results = add(results, typeof r === 'number' ? r === 0 : isPendingAck(r) ? r : r.then((v) => v === 0));
    }

    const open = this.opened(range, startedUs, hits ?? NO_HITS, null);
    const rec = open.record;
    open.treeCounted = hits !== null;
    open.started = started;
    // Built with a literal for the first element: a list grown by push from empty holds 17 slots.
    let outcomes: SubscriberOutcome[] | null = null;
    // Allocated only when needed: most invalidations have one or two synchronous or shared-memory
    // subscribers, and this is the kernel's hottest path.
    let pending: Promise<unknown>[] | null = null;
    // How many answers come through shared memory (PendingAcks), collected and waited for together.
    let nAcks = 0;
    if (called !== null) {
      const all = results as Array<boolean | Promise<boolean> | PendingAck>;
      for (let i = 0; i < called.length; i++) {
        const sub = called[i];
        const r = all[i];
        const kind = sub instanceof MmuIntervalNotifier ? 'interval' : 'mm';
        const outcome: SubscriberOutcome = { info: sub.info, kind, result: 'ok', ackUs: 0 };
        outcomes = add(outcomes, outcome);
        if (typeof r === 'boolean') {
          if (!r) this.blockableRefused(sub.info, outcome, range);
        } else if (isPendingAck(r)) {
          nAcks++;
        } else {
          (pending ??= []).push(r.then((ok) => this.settlePromised(rec, sub.info, outcome, ok)));
        }
      }
    }
    if (outcomes !== null) rec.subscribers = outcomes;
    if (nAcks > 0) {
      // For each shared-memory answer: the ack, who answered (an interval or an mm subscription)
      // and its outcome record. When every subscriber answers that way (device workers), these
      // are the lists built above, in the same order: no copies on the fast path.
      let ackList = results as PendingAck[];
      let subs = called as Array<MmuIntervalNotifier | MmuNotifier>;
      let ackOutcomes = outcomes as SubscriberOutcome[];
      if (nAcks !== ackList.length) {
        const all = results as Array<boolean | Promise<boolean> | PendingAck>;
        ackList = [];
        subs = [];
        ackOutcomes = [];
        for (let i = 0; i < all.length; i++) {
          const r = all[i];
          if (!isPendingAck(r)) continue;
          ackList.push(r);
          subs.push((called as Array<MmuIntervalNotifier | MmuNotifier>)[i]);
          ackOutcomes.push((outcomes as SubscriberOutcome[])[i]);
        }
      }
      // The closures that wait are made in methods of their own: captured here, these lists
      // would give this block a context allocation on every invalidation, the ones answered
      // inside the spin included.
      if (pending === null) {
        // Nothing else to wait for (every external client, every worker): settled and stamped at
        // once when all answered inside the spin, else where the last answer is taken (or in one
        // reaction), without Promise.all and its extra turn (one per round and client set).
        if (spinAcks(ackList, rec.startedUs !== 0)) return this.settledAll(rec, ackList, subs, ackOutcomes, value);
        return this.parkSettled(rec, ackList, subs, ackOutcomes, value);
      }
      const w = waitAcks(ackList, rec.startedUs !== 0);
      if (w === null) this.settleAcks(rec, ackList, subs, ackOutcomes);
      else pending.push(this.settleWhen(w, rec, ackList, subs, ackOutcomes));
    }
    if (pending === null) {
      rec.ackedUs = rec.startedUs;
      return value;
    }
    return Promise.all(pending).then(() => {
      rec.ackedUs = this.stampIfTimed(rec);
      return value;
    });
  }

  /** Settles and stamps every answer of `acks`; returns `value`. */
  private settledAll<T>(rec: InvalidationRecord, acks: readonly PendingAck[], subs: ReadonlyArray<MmuIntervalNotifier | MmuNotifier>, outcomes: readonly SubscriberOutcome[], value: T): T {
    this.settleAcks(rec, acks, subs, outcomes);
    rec.ackedUs = this.stampAnswered(rec, acks);
    return value;
  }

  /** Parks on `acks` (spinAcks found some pending), then settledAll. */
  private parkSettled<T>(rec: InvalidationRecord, acks: readonly PendingAck[], subs: ReadonlyArray<MmuIntervalNotifier | MmuNotifier>, outcomes: readonly SubscriberOutcome[], value: T): Promise<T> {
    return parkAcksThen(acks, () => this.settledAll(rec, acks, subs, outcomes, value));
  }

  /** settledAll for the one-hit path's single ack (its kind known: no instanceof). */
  private settledOne<T>(rec: InvalidationRecord, acks: readonly PendingAck[], hit: MmuIntervalNotifier, outcome: SubscriberOutcome, value: T): T {
    this.settleIntervalAck(rec, acks[0], hit, outcome);
    rec.ackedUs = this.stampAnswered(rec, acks);
    return value;
  }

  /** Settles `acks` once `w` (their waitAcks) resolves. */
  private settleWhen(w: Promise<void>, rec: InvalidationRecord, acks: readonly PendingAck[], subs: ReadonlyArray<MmuIntervalNotifier | MmuNotifier>, outcomes: readonly SubscriberOutcome[]): Promise<void> {
    return w.then(() => this.settleAcks(rec, acks, subs, outcomes));
  }

  /**
   * When the last of `acks` was answered: its stamp (each is stamped when its group first saw the
   * answer: inside the spin, or in the frame handler that took it), 0 if the record is not timed.
   */
  private stampAnswered(rec: InvalidationRecord, acks: readonly PendingAck[]): number {
    let t = rec.startedUs;
    if (t !== 0) for (let i = 0; i < acks.length; i++) t = Math.max(t, acks[i].answeredAtUs ?? now());
    return t;
  }

  /**
   * The blockable start of the common case: one interval hit and no whole-mm subscription (a
   * device's interval over the range, nothing else). The same steps, in the same order, as the
   * general path above, without its lists of calls, results and outcomes and the loops over them:
   * 10 to 40 ns of an in-process round at N = 1 on a host whose bare round trip is 0.2 us
   * (docs/benchmarks.md).
   */
  private startOneInterval<T>(range: NotifierRange, startedUs: number, hit: MmuIntervalNotifier, curSeq: number, value: T): T | Promise<T> {
    const r = this.callInterval(hit, range, curSeq);
    this.publish();
    const outcome: SubscriberOutcome = { info: hit.info, kind: 'interval', result: 'ok', ackUs: 0 };
    const open = this.opened(range, startedUs, [hit], [outcome]);
    open.treeCounted = true;
    const rec = open.record;
    if (typeof r === 'boolean') {
      if (!r) this.blockableRefused(hit.info, outcome, range);
      rec.ackedUs = startedUs;
      return value;
    }
    if (!isPendingAck(r)) {
      return r.then((ok) => {
        this.settlePromised(rec, hit.info, outcome, ok);
        rec.ackedUs = this.stampIfTimed(rec);
        return value;
      });
    }
    // Settled where the answer is taken: inside the spin (no closure), or where the group takes
    // it (an external ack's frame handler).
    const acks = [r];
    if (spinAcks(acks, startedUs !== 0)) return this.settledOne(rec, acks, hit, outcome, value);
    return parkAcksThen(acks, () => this.settledOne(rec, acks, hit, outcome, value));
  }

  /** A promised answer arrived: its time, and a refusal reported. */
  private settlePromised(rec: InvalidationRecord, info: SubscriberInfo, outcome: SubscriberOutcome, ok: boolean): void {
    outcome.ackUs = this.sinceStart(rec);
    if (!ok) this.blockableRefused(info, outcome, rec.range);
  }

  /** Reads the shared-memory answers (no closure on the fast path: a method, not a lambda). */
  private settleAcks(rec: InvalidationRecord, acks: readonly PendingAck[], subs: ReadonlyArray<MmuIntervalNotifier | MmuNotifier>, outcomes: readonly SubscriberOutcome[]): void {
    for (let i = 0; i < acks.length; i++) this.settleAck(rec, acks[i], subs[i], outcomes[i]);
  }

  private settleAck(rec: InvalidationRecord, a: PendingAck, sub: MmuIntervalNotifier | MmuNotifier, outcome: SubscriberOutcome): void {
    if (sub instanceof MmuIntervalNotifier) {
      this.settleIntervalAck(rec, a, sub, outcome);
      return;
    }
    // The core reads the answer: only now is the callback over.
    sub.exit();
    this.settleAnswer(rec, a, sub.info, outcome);
  }

  /** settleAck for an interval subscription (the one-hit path knows its kind: no instanceof there). */
  private settleIntervalAck(rec: InvalidationRecord, a: PendingAck, sub: MmuIntervalNotifier, outcome: SubscriberOutcome): void {
    sub.inFlight--;
    this.settleAnswer(rec, a, sub.info, outcome);
  }

  /** The answer's time and, if it refused, the report. */
  private settleAnswer(rec: InvalidationRecord, a: PendingAck, info: SubscriberInfo, outcome: SubscriberOutcome): void {
    outcome.ackUs = rec.startedUs === 0 ? 0 : (a.answeredAtUs ?? now()) - rec.startedUs;
    if (a.poll() !== ACK_OK) this.blockableRefused(info, outcome, rec.range);
  }

  /** A started range's record, open set entry, recent-ring entry and start observer. */
  private opened(range: NotifierRange, startedUs: number, intervals: MmuIntervalNotifier[], subscribers: SubscriberOutcome[] | null): OpenRange {
    const record: InvalidationRecord = { range, result: 'ok', subscribers: subscribers ?? [], startedUs, ackedUs: 0, endedUs: 0 };
    const open: OpenRange = { record, index: this.openList.length, intervals, started: null, treeCounted: false };
    this.openList.push(open);
    (range as OpenedRange)[OPEN] = open;
    this.recent[this.recentNext++ & (RECENT - 1)] = range;
    this.noteStart(range);
    return open;
  }

  private blockableRefused(info: SubscriberInfo, outcome: SubscriberOutcome, range: NotifierRange): void {
    // The kernel WARNs and carries on: a blockable invalidation cannot fail.
    outcome.result = 'bug';
    this.bug(info, 'refused a blockable invalidation', range);
  }

  /** Microseconds since the record started, or 0 if it is not timed. */
  private sinceStart(rec: InvalidationRecord): number {
    return rec.startedUs === 0 ? 0 : now() - rec.startedUs;
  }

  /** The clock, for a record that is timed (0 otherwise). */
  private stampIfTimed(rec: InvalidationRecord): number {
    return rec.startedUs === 0 ? 0 : now();
  }

  /** Removes a range from the open set; undefined if it is not open here. */
  private openTake(range: NotifierRange): OpenRange | undefined {
    const open = (range as OpenedRange)[OPEN];
    const list = this.openList;
    if (!open || list[open.index] !== open) return undefined;
    const last = list.pop() as OpenRange;
    if (last !== open) {
      list[open.index] = last;
      last.index = open.index;
    }
    (range as OpenedRange)[OPEN] = null;
    return open;
  }

  private async startNonBlockable(range: NotifierRange, open: OpenRange): Promise<number> {
    const rec = open.record;
    if (this.hasItree) {
      const hits: MmuIntervalNotifier[] = [];
      const curSeq = this.itreeStart(range, hits);
      this.publish();
      open.treeCounted = true;
      for (const sub of hits) {
        open.intervals.push(sub);
        const raw = this.callInterval(sub, range, curSeq);
        const ok = await this.answer(raw, true, false);
        if (isPendingAck(raw)) sub.inFlight--;
        const outcome: SubscriberOutcome = {
          info: sub.info,
          kind: 'interval',
          result: ok ? 'ok' : 'would-block',
          ackUs: this.sinceStart(rec),
        };
        rec.subscribers.push(outcome);
        if (!ok) {
          // The kernel stops at the first refusal, closes its own window and never calls the
          // list part.
          this.itreeEnd();
          open.treeCounted = false;
          return this.failStart(range, open);
        }
      }
    }
    let failed = false;
    for (const sub of [...this.list]) {
      if (!sub.ops.invalidateRangeStart) {
        if (sub.ops.invalidateRangeEnd) open.started = add(open.started, sub);
        continue;
      }
      const raw = this.callStart(sub, range);
      const r = await this.answer(raw, 0, EAGAIN);
      if (isPendingAck(raw)) sub.exit();
      const ok = r === 0;
      rec.subscribers.push({ info: sub.info, kind: 'mm', result: ok ? 'ok' : 'would-block', ackUs: this.sinceStart(rec) });
      if (ok) open.started = add(open.started, sub);
      else {
        if (r !== EAGAIN) this.bug(sub.info, `invalidate_range_start returned ${r}, not -EAGAIN`, range);
        failed = true;
      }
    }
    if (!failed) {
      rec.ackedUs = this.stampIfTimed(rec);
      return 0;
    }
    // Unwind both parts: end to every list subscriber that started (the kernel calls end on all
    // that implement it, which by its rule are exactly those), and close the tree window the
    // kernel would leave open here.
    if (open.started !== null) for (const sub of open.started) this.callEnd(sub, range);
    if (open.treeCounted) this.itreeEnd();
    open.treeCounted = false;
    return this.failStart(range, open);
  }

  private failStart(range: NotifierRange, open: OpenRange): number {
    const rec = open.record;
    this.closeWindows(open.intervals, range);
    rec.result = 'EAGAIN';
    rec.ackedUs = rec.endedUs = this.stampIfTimed(rec);
    this.openTake(range);
    this.noteEnd(rec);
    return EAGAIN;
  }

  private callEnd(sub: MmuNotifier, range: NotifierRange): void {
    const fn = sub.ops.invalidateRangeEnd;
    if (!fn || sub.subscriptions !== this) return;
    sub.enter();
    try {
      fn.call(sub.ops, sub, range);
    } catch (e) {
      this.bug(sub.info, `invalidate_range_end threw: ${(e as Error).message}`, range);
    } finally {
      sub.exit();
    }
  }

  private closeWindows(subs: readonly MmuIntervalNotifier[], range: NotifierRange): void {
    for (const sub of subs) {
      if (!sub.ops.windowClosed || sub.subscriptions !== this) continue;
      try {
        sub.ops.windowClosed(sub, range);
      } catch (e) {
        this.bug(sub.info, `windowClosed threw: ${(e as Error).message}`, range);
      }
    }
  }

  /**
   * mmu_notifier_invalidate_range_end: tree bookkeeping first, then the list's ends. The interval
   * subscribers' window ends (devmirror's, not the kernel's) are published before both: a device
   * worker takes its end while this thread does the rest. It cannot tell the difference: its next
   * request to the kernel (readBegin, a fault) is served by this thread, after all of it.
   */
  invalidateRangeEnd(range: NotifierRange): void {
    const open = this.openTake(range);
    if (!open) invariant(false, `invalidate_range_end for range ${range.id} that is not open`);
    this.closeWindows(open.intervals, range);
    if (open.treeCounted) this.itreeEnd();
    const started = open.started;
    if (started !== null) for (let i = 0; i < started.length; i++) this.callEnd(started[i], range);
    open.record.endedUs = this.stampIfTimed(open.record);
    this.noteEnd(open.record);
  }

  /** Origins of the recent ranges that overlap [start, end), newest first (progress reports). */
  recentOrigins(start: number, end: number): string[] {
    const out: string[] = [];
    for (let i = 1; i <= this.recent.length; i++) {
      const r = this.recent[(this.recentNext - i) & (RECENT - 1)];
      if (r && r.start < end && r.end > start && !out.includes(r.origin)) out.push(r.origin);
    }
    return out;
  }

  /** Ranges started and not yet ended. */
  openRanges(): NotifierRange[] {
    return this.openList.map((o) => o.record.range).sort((a, b) => a.id - b.id);
  }

  // ---- young -----------------------------------------------------------------------------------

  /** OR over every subscriber (all are called). */
  async clearFlushYoung(start: number, end: number): Promise<boolean> {
    return this.young('clearFlushYoung', start, end);
  }
  async clearYoung(start: number, end: number): Promise<boolean> {
    return this.young('clearYoung', start, end);
  }
  private async young(op: 'clearFlushYoung' | 'clearYoung', start: number, end: number): Promise<boolean> {
    if (this.list.length === 0) return false;
    const results: Array<boolean | Promise<boolean>> = [];
    for (const sub of this.list) {
      const fn = sub.ops[op];
      if (!fn) continue;
      sub.enter();
      const r = Promise.resolve()
        .then(() => fn.call(sub.ops, sub, start, end))
        .finally(() => sub.exit());
      results.push(r);
    }
    const all = await Promise.all(results);
    return all.some(Boolean);
  }
  /** First true wins; later subscribers are not asked. */
  async testYoung(addr: number): Promise<boolean> {
    for (const sub of [...this.list]) {
      const fn = sub.ops.testYoung;
      if (!fn) continue;
      sub.enter();
      try {
        if (await fn.call(sub.ops, sub, addr)) return true;
      } finally {
        sub.exit();
      }
    }
    return false;
  }

  // ---- release ---------------------------------------------------------------------------------

  /**
   * mmu_notifier_release (start of exit_mmap): RELEASE [0, ULONG_MAX] to interval subscribers
   * (they stay in the tree and still get the UNMAP that follows), then `release` to every
   * whole-mm subscription, which is then unlinked and gets no further callbacks.
   */
  async release(origin: NotifierRange['origin'] = 'exit'): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.hasItree) {
      const range: NotifierRange = {
        pid: this.pid,
        start: 0,
        end: ULONG_MAX,
        event: MmuNotifierEvent.RELEASE,
        flags: RANGE_BLOCKABLE,
        owner: null,
        origin,
        id: nextInvalidationId++,
      };
      const rec: InvalidationRecord = { range, result: 'ok', subscribers: [], startedUs: now(), ackedUs: 0, endedUs: 0 };
      this.noteStart(range);
      const hits: MmuIntervalNotifier[] = [];
      const curSeq = this.itreeStart(range, hits);
      this.publish();
      await Promise.all(
        hits.map(async (sub) => {
          const raw = this.callInterval(sub, range, curSeq);
          const ok = await this.answer(raw, true, false);
          if (isPendingAck(raw)) sub.inFlight--;
          const outcome: SubscriberOutcome = { info: sub.info, kind: 'interval', result: 'ok', ackUs: now() - rec.startedUs };
          rec.subscribers.push(outcome);
          if (!ok) this.blockableRefused(sub.info, outcome, range);
        }),
      );
      rec.ackedUs = now();
      this.itreeEnd();
      this.closeWindows(hits, range);
      rec.endedUs = now();
      this.noteEnd(rec);
    }
    const subs = [...this.list];
    await Promise.all(
      subs.map(async (sub) => {
        if (sub.released) return;
        sub.released = true;
        if (!sub.ops.release) return;
        sub.enter();
        try {
          await sub.ops.release(sub);
        } catch (e) {
          this.bug(sub.info, `release failed: ${(e as Error).message}`, null);
        } finally {
          sub.exit();
        }
      }),
    );
    // hlist_del_init_rcu on every entry, then synchronize_srcu.
    this.list.length = 0;
    await Promise.all(subs.map((s) => s.idle()));
    for (const s of subs) s.subscriptions = null;
  }
}
