/**
 * Waiting for device workers' answers without blocking the kernel thread.
 *
 * Every worker answers in its own mailbox slot; while the kernel is parked it also bumps one shared
 * word, KC.ACK_DOORBELL. The kernel (the thread that also serves HTTP and WebSocket, so it never
 * calls Atomics.wait) first spins on the answer words for a short, adaptive budget: an answer from
 * a worker running on another core arrives in a fraction of a microsecond. Only if the budget runs
 * out does it park with Atomics.waitAsync on the doorbell, re-checking every slot on each wake.
 *
 *   kernel (publish, then wait)                  device worker (MB = its mailbox)
 *   ---------------------------------            ----------------------------------------
 *   write slot words, slot SEQ last  ---------> spin on the next call's SEQ, the next end's
 *   deferRing: batch, then                         SEQ and MB.MESSAGES for MB.SPIN_US, then
 *     load MB.PARKED; only if 1:                   store MB.PARKED=1; re-check them;
 *     add MB.DOORBELL; notify  -------------->     Atomics.wait(DOORBELL, seen); PARKED=0
 *   spin: load slot ANSWER (budget)              read the slot (the ends after the answer)
 *     all answered? -> done, synchronously       stop using the range, drain its DMA, setSeq
 *   else park:                                   store slot ANSWER (Atomics)
 *     store KERNEL_PARKED=1                      load KC.KERNEL_PARKED; if 1:
 *     seen = load ACK_DOORBELL; recheck slots      v = add KC.ACK_DOORBELL + 1
 *     store WAKE_AT = seen + fewest pending        notify only if v >= KC.WAKE_AT
 *     waitAsync(ACK_DOORBELL, seen, 50 ms) <----
 *   wake: re-poll every slot (loop); none parked: store KERNEL_PARKED=0
 *   change the PTEs; write END slot, SEQ last -> a spinning device takes it at once (one-way;
 *     (a parked device is rung for it later)     END_TAIL frees the slot)
 *
 * Two Dekker pairs make the conditional wakes safe (all Atomics are sequentially consistent):
 * the kernel stores a SEQ (or MESSAGES) then loads PARKED, the device stores PARKED then re-checks
 * those words before it waits on the old DOORBELL value, so either the device sees the new word or
 * the kernel sees PARKED and rings (WorkerDevice.ring has the interleavings). Symmetrically the
 * kernel stores KERNEL_PARKED, reads ACK_DOORBELL (`seen`), re-polls the answers, stores WAKE_AT
 * and waits on `seen`; a device stores its ANSWER and then loads KERNEL_PARKED. A device that saw
 * 0 answered before the re-poll, which sees it. One that saw 1 adds to ACK_DOORBELL: before `seen`
 * was read, its answer is in the re-poll too; after, the doorbell differs from `seen` and the
 * waitAsync returns at once ("not-equal"), or, if the wait had begun, the device reads the WAKE_AT
 * stored before it and notifies when it is due. So a spinning kernel costs a device one store and
 * one load per answer, no read-modify-write on the word every device shares. WAKE_AT only delays
 * notifies until enough answers arrived for the closest parked set (a set parked later lowers it:
 * lowerWakeAt); the 50 ms timeout bounds any wake that is lost anyway (never relied on for
 * correctness of state).
 */
import { performance } from 'node:perf_hooks';
import os from 'node:os';
import { KC, KC_WORDS } from '../kernel/layout.js';
import { busyWaitUs } from '../lib/busy-wait.js';
import { alignedSab } from '../lib/aligned-sab.js';
import { ACK_PENDING, type AckGroup, type PendingAck } from '../notifier/pending-ack.js';

const now = (): number => performance.now() * 1000;
const RESOLVED = Promise.resolve();
/** Longest an end waits for a call to carry it to a parked device before it is rung for itself. */
const END_RING_DELAY_MS = 1;
/** The kernel thread's spin for answers before it parks, for a few answers (see AdaptiveSpin). */
export const DEFAULT_KERNEL_SPIN_US = 100;
/** The longest the kernel thread ever spins for one wait (its event loop waits that long at most). */
export const MAX_KERNEL_SPIN_US = 500;
/** What each answer adds to the budget when answers outnumber the cores left to the devices. */
export const KERNEL_SPIN_US_PER_ANSWER = 50;

export interface SpinPolicy {
  /** Microseconds to spin before parking, waiting for `pending` answers. */
  budget(pending: number): number;
  /** Feedback after each wait. */
  record(answeredWhileSpinning: boolean): void;
}

/**
 * Spin while it pays: back off when recent spins did not catch the answer, probe again now and
 * then. Only a single core never spins: there the answer needs this core.
 *
 * The budget grows with the answers waited for once they outnumber the cores left to the devices
 * (the kernel's spin keeps one): the woken devices then answer one after another on the other
 * cores, KERNEL_SPIN_US_PER_ANSWER each, and a spin that stops before the last one has paid for
 * nothing and still parks. A park costs an event-loop wake (waitAsync) on top of the futex wake,
 * and at N = 8 it cost more than the spin that catches the answers (below). Capped at
 * MAX_KERNEL_SPIN_US (kernelSpinUs), the longest the thread that serves I/O is held.
 *
 * Measured with dmirror workers, 2 vCPUs, 11-27, p50: N = 2, a 1 us token spin when short of
 * cores (an older rule) 82 to 88 us against 26 us with a 100 us adaptive spin; N = 4, 91 to 104
 * against 43 us. N = 8 (ad hoc, alternating fresh processes, 5,000 rounds, about 23:35 UTC) with a
 * flat 100 us: 165.5 and 168.7 us, the kernel parked in 91% and 92% of the rounds; 250 us: 119.2
 * and 134.2 us (parked 14% and 20%); 500 us: 120.8 and 127.6 us. N = 16: 368.2 us at 100, 341.5 at
 * 300, 314.1 at 600. N = 32: 828.5 to 872.0 us whatever the budget (its spins fail and the score
 * backs off, as before).
 */
export class AdaptiveSpin implements SpinPolicy {
  private score = 8;
  constructor(
    private readonly cores = os.cpus().length,
    /** The longest spin (DeviceManagerOptions.kernelSpinUs); 0 never spins. */
    private readonly maxUs = MAX_KERNEL_SPIN_US,
  ) {}
  budget(pending: number): number {
    if (this.cores < 2) return 0;
    const want = Math.max(DEFAULT_KERNEL_SPIN_US, (KERNEL_SPIN_US_PER_ANSWER * pending) / (this.cores - 1));
    return (Math.min(this.maxUs, want) * this.score) / 8;
  }
  record(ok: boolean): void {
    this.score = ok ? Math.min(8, this.score + 1) : Math.max(0, this.score - 2);
    if (this.score === 0 && Math.random() < 0.05) this.score = 2; // probe again now and then
  }
}

interface Parked {
  acks: readonly PendingAck[];
  resolve: () => void;
}

export class WorkerAckGroup implements AckGroup {
  readonly kc: Int32Array;
  private parked: Parked[] = [];
  private waiting = false;
  private keepAlive: NodeJS.Timeout | null = null;
  spins = 0;
  parks = 0;
  /** Wake-ups of the parked kernel (ideally one per park). */
  wakes = 0;
  /** Futex wakes of parked devices done by the kernel thread (ideally one per device per round). */
  deviceWakes = 0;
  /**
   * Parked sets found complete only after the wait timed out: their last answer came without
   * a wake. A lost wake-up, or a device thread stalled between its answer and its notify for the
   * whole timeout; zero in a correct run.
   */
  lateWakes = 0;
  /**
   * Tests only: busy-wait this long between the re-poll of the answers and the wait, widening
   * the window in which an answer can land after the re-poll (its doorbell add must wake us).
   */
  parkRaceUs = 0;

  constructor(
    readonly kcSab: SharedArrayBuffer = alignedSab(KC_WORDS * 4),
    readonly policy: SpinPolicy = new AdaptiveSpin(),
  ) {
    this.kc = new Int32Array(kcSab, 0, KC_WORDS);
  }

  private toRing: Array<{ ringPending: boolean; ring(): void }> = [];

  /**
   * Queues a device's doorbell. Rung in one batch when the kernel starts waiting (spin or park) or,
   * failing that, at the next microtask: publishing every call before waking anyone keeps a woken
   * device from taking the core while the kernel still has calls to write, and an end followed by
   * the next call costs the device one wake, not two.
   */
  deferRing(dev: { ringPending: boolean; ring(): void }): void {
    if (dev.ringPending) return;
    dev.ringPending = true;
    // A bare promise reaction: Node's queueMicrotask costs several times more (async context).
    if (this.toRing.push(dev) === 1) void RESOLVED.then(this.flush);
  }

  private endsHeld: Array<{ endQueued: boolean; flushEnd(): void }> = [];
  private endsImmediate: NodeJS.Immediate | null = null;

  /**
   * A device holds back the end it was just posted (WorkerDevice.pendingRange) until its next
   * call or message carries it; this writes whatever is still held at the next check phase, so an
   * end that no call follows reaches the ring within one event-loop turn. One immediate for every
   * device and every round in between: rounds that follow each other flush their ends themselves,
   * and this finds nothing left.
   */
  deferEnd(dev: { endQueued: boolean; flushEnd(): void }): void {
    if (dev.endQueued) return;
    dev.endQueued = true;
    this.endsHeld.push(dev);
    this.endsImmediate ??= setImmediate(this.flushEnds);
  }

  private readonly flushEnds = (): void => {
    this.endsImmediate = null;
    const list = this.endsHeld;
    this.endsHeld = [];
    for (let i = 0; i < list.length; i++) {
      list[i].endQueued = false;
      list[i].flushEnd();
    }
  };

  private late = new Set<{ ringPending: boolean; ring(): void; endsUnread(): boolean }>();
  private lateTimer: NodeJS.Timeout | null = null;

  /**
   * Ends are not rung for (the kernel never waits for one; the next call's ring carries them).
   * This bounds how long an end can sit unread at a device that gets no further call: after
   * END_RING_DELAY_MS, devices that still have unread ends are rung.
   */
  lateRing(dev: { ringPending: boolean; ring(): void; endsUnread(): boolean }): void {
    this.late.add(dev);
    if (this.lateTimer) return;
    this.lateTimer = setTimeout(() => {
      this.lateTimer = null;
      const devs = [...this.late];
      this.late.clear();
      for (const d of devs) if (!d.ringPending && d.endsUnread()) d.ring();
    }, END_RING_DELAY_MS);
    this.lateTimer.unref();
  }

  readonly flush = (): void => {
    const list = this.toRing;
    if (list.length === 0) return;
    this.toRing = [];
    for (let i = 0; i < list.length; i++) if (list[i].ringPending) list[i].ring();
  };

  private allAnswered(acks: readonly PendingAck[]): boolean {
    for (let i = 0; i < acks.length; i++) if (acks[i].poll() === ACK_PENDING) return false;
    return true;
  }

  /**
   * Stamps answer times with one clock read for all acks answered since the last stamp (a clock
   * read costs more than a whole poll; the stamp is as late as the moment we looked).
   */
  private stamp(acks: readonly PendingAck[], at = -1): void {
    let t = at;
    for (let i = 0; i < acks.length; i++) {
      const a = acks[i];
      if (a.answeredAtUs !== undefined || a.poll() === ACK_PENDING) continue;
      if (t < 0) t = now();
      a.answeredAtUs = t;
    }
  }

  spin(acks: readonly PendingAck[], timed = true): boolean {
    this.flush();
    // Poll the answer words themselves, not the shared doorbell: each cache line that crosses
    // cores costs about as much as the whole bare round trip, and the doorbell would be one more
    // per answer. Answered acks are skipped (`first`). The first 256 polls need no clock: an
    // answer from a worker spinning on another core comes within them, and an untimed round then
    // reads no clock at all (a read costs about 40 ns, a tenth of the bare round trip). After
    // that the clock is read once per 256 polls, against the budget.
    let first = 0;
    let t = -1;
    let until = 0;
    for (;;) {
      for (let i = 0; i < 256; i++) {
        while (first < acks.length && acks[first].poll() !== ACK_PENDING) first++;
        if (first === acks.length) {
          this.spins++;
          this.policy.record(true);
          // Stamped when the last answer was seen (at most one 256-poll stretch late).
          if (timed) this.stamp(acks, now());
          return true;
        }
      }
      if (t < 0) {
        t = now();
        until = t + this.policy.budget(acks.length - first);
      } else t = now();
      if (t >= until) break;
    }
    const ok = this.allAnswered(acks);
    this.policy.record(ok);
    if (timed) this.stamp(acks, t);
    return ok;
  }

  park(acks: readonly PendingAck[]): Promise<void> {
    this.flush();
    this.parks++;
    return new Promise<void>((resolve) => {
      this.parked.push({ acks, resolve });
      if (!this.waiting) void this.waitLoop();
      else this.lowerWakeAt(acks);
    });
  }

  /**
   * A set parked while the loop already waits: the loop's WAKE_AT was computed for the sets parked
   * before, and may be further away than this set's last answer (two slow devices pending there,
   * one fast one here). Without this, that answer would not notify and the set would wait for the
   * loop's 50 ms timeout.
   *
   * KERNEL_PARKED is 1 for as long as the loop waits, so every answer from here on bumps the
   * doorbell. `seen` is read before the poll: answers between the two count twice (early, never
   * late). A device that bumped the doorbell before the WAKE_AT store below compared it with the
   * old value and may not have notified: the re-read after the store catches that case, and this
   * thread then notifies its own waitAsync (the loop re-polls every set when it wakes).
   */
  private lowerWakeAt(acks: readonly PendingAck[]): void {
    const kc = this.kc;
    const seen = Atomics.load(kc, KC.ACK_DOORBELL);
    let pending = 0;
    for (let i = 0; i < acks.length; i++) if (acks[i].poll() === ACK_PENDING) pending++;
    const at = (seen + pending) | 0;
    if (pending > 0 && ((at - Atomics.load(kc, KC.WAKE_AT)) | 0) >= 0) return; // the loop wakes no later
    if (pending > 0) Atomics.store(kc, KC.WAKE_AT, at);
    if (((Atomics.load(kc, KC.ACK_DOORBELL) - at) | 0) >= 0) Atomics.notify(kc, KC.ACK_DOORBELL);
  }

  /** Wakes parked waiters whose acks are all answered (also called after an eviction). */
  recheck(): number {
    if (this.parked.length === 0) return 0;
    const still: Parked[] = [];
    let fewest = Infinity;
    for (const p of this.parked) {
      this.stamp(p.acks);
      let pending = 0;
      for (let i = 0; i < p.acks.length; i++) if (p.acks[i].poll() === ACK_PENDING) pending++;
      if (pending === 0) p.resolve();
      else {
        still.push(p);
        fewest = Math.min(fewest, pending);
      }
    }
    this.parked = still;
    return still.length === 0 ? 0 : fewest;
  }

  /** Rings the doorbell from the kernel side (e.g. an eviction answered for a dead device). */
  ring(): void {
    Atomics.add(this.kc, KC.ACK_DOORBELL, 1);
    Atomics.notify(this.kc, KC.ACK_DOORBELL);
  }

  private async waitLoop(): Promise<void> {
    this.waiting = true;
    // A pending waitAsync does not keep the event loop alive: hold a ref'd timer while parked.
    this.keepAlive ??= setInterval(() => undefined, 1 << 30);
    const kc = this.kc;
    let timedOut = false;
    try {
      while (this.parked.length > 0) {
        // Dekker pair 2, kernel half: KERNEL_PARKED is stored before the re-poll of the answer
        // words (recheck); a device stores its ANSWER before it loads KERNEL_PARKED. A device that
        // saw 0 (and so did not bump the doorbell) answered before this store: the re-poll sees it.
        Atomics.store(kc, KC.KERNEL_PARKED, 1);
        // Read before the re-poll: a device that answers after the re-poll saw KERNEL_PARKED and
        // bumps the doorbell, so the wait below on `seen` returns at once or is notified.
        const seen = Atomics.load(kc, KC.ACK_DOORBELL);
        const before = this.parked.length;
        const fewest = this.recheck();
        if (timedOut && this.parked.length < before) this.lateWakes++;
        if (this.parked.length === 0) break;
        // Wake me when the doorbell has moved by as many answers as the closest parked set still
        // needs: no set can complete earlier, so no device needs to notify before that (each wake
        // of this thread is an event-loop turn; with N devices it would otherwise be N per round).
        // Answers of other rounds also move the doorbell: then the wake is early, never late.
        // Answers between `seen` and the recheck count twice: early again, never late. WAKE_AT
        // is stored before the wait: a device that bumps the doorbell after the wait began loads
        // this value; one that bumped it before makes the wait return "not-equal".
        if (this.parkRaceUs > 0) busyWaitUs(this.parkRaceUs);
        Atomics.store(kc, KC.WAKE_AT, (seen + fewest) | 0);
        const r = Atomics.waitAsync(kc, KC.ACK_DOORBELL, seen, 50);
        timedOut = (r.async ? await r.value : r.value) === 'timed-out';
        this.wakes++;
      }
    } finally {
      // No longer parked: devices stop bumping the doorbell (the spin polls answer words).
      Atomics.store(kc, KC.KERNEL_PARKED, 0);
      this.waiting = false;
      if (this.keepAlive) clearInterval(this.keepAlive);
      this.keepAlive = null;
    }
  }
}
