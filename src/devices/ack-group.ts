/**
 * Waiting for device workers' answers without blocking the kernel thread.
 *
 * Every worker answers in its own mailbox slot and then bumps one shared word, KC.ACK_DOORBELL.
 * The kernel (the thread that also serves HTTP and WebSocket, so it never calls Atomics.wait)
 * first spins on the slots for a short, adaptive budget: an answer from a worker running on another
 * core arrives in a fraction of a microsecond. Only if the budget runs out does it park with
 * Atomics.waitAsync on the doorbell, re-checking every slot on each wake.
 *
 *   kernel (publish, then wait)                 device worker
 *   ---------------------------                 ---------------------------------
 *   write slot words, ID last                   spin on DOORBELL, then waitAsync
 *   add MB.DOORBELL; notify          ------->   read ID (Atomics), then the words
 *   spin: load slot ANSWER (budget)             stop using the range, drain DMA
 *     answered? -> done, synchronously          store ANSWER_TICK, then ANSWER
 *   else park: waitAsync(KC.ACK_DOORBELL) <---  add KC.ACK_DOORBELL; notify
 *   wake: re-poll every waiting slot
 *
 * The device stores ANSWER before it bumps the doorbell, and the kernel reads the doorbell before it
 * re-polls, so a wake never misses an answer (all Atomics are sequentially consistent). The
 * doorbell value the kernel parks on is read *before* its last poll: an answer that lands between
 * the poll and the park changes the value and the waitAsync returns at once ("not-equal").
 */
import os from 'node:os';
import { KC, KC_WORDS } from '../kernel/layout.js';
import { ACK_PENDING, type AckGroup, type PendingAck } from '../notifier/pending-ack.js';

const now = (): number => performance.now() * 1000;

export interface SpinPolicy {
  /** Loads to spin before parking. */
  budget(): number;
  /** Feedback after each wait. */
  record(answeredWhileSpinning: boolean): void;
}

/**
 * Spin while it pays: only when there are fewer busy workers than cores (a spinner needs a free
 * core, see machine-facts: with 2 spinners on 2 cores spinning costs more than parking), and back
 * off when recent spins did not catch the answer.
 */
export class AdaptiveSpin implements SpinPolicy {
  private score = 8;
  constructor(
    private readonly cores = os.cpus().length,
    private readonly max = 6000,
    public activeWorkers = () => 1,
  ) {}
  budget(): number {
    if (this.activeWorkers() >= this.cores) return 64;
    return Math.round((this.max * this.score) / 8);
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

  constructor(
    readonly kcSab: SharedArrayBuffer = new SharedArrayBuffer(KC_WORDS * 4),
    readonly policy: SpinPolicy = new AdaptiveSpin(),
  ) {
    this.kc = new Int32Array(kcSab);
  }

  private allAnswered(acks: readonly PendingAck[]): boolean {
    for (let i = 0; i < acks.length; i++) {
      const a = acks[i];
      if (a.poll() === ACK_PENDING) return false;
      if (a.answeredAtUs === undefined) a.answeredAtUs = now();
    }
    return true;
  }

  spin(acks: readonly PendingAck[]): boolean {
    if (this.allAnswered(acks)) return true;
    const budget = this.policy.budget();
    let seen = Atomics.load(this.kc, KC.ACK_DOORBELL);
    for (let i = 0; i < budget; i++) {
      // Cheap: watch the shared doorbell, re-poll the slots only when it moved.
      const v = Atomics.load(this.kc, KC.ACK_DOORBELL);
      if (v !== seen) {
        seen = v;
        if (this.allAnswered(acks)) {
          this.spins++;
          this.policy.record(true);
          return true;
        }
      }
    }
    const ok = this.allAnswered(acks);
    this.policy.record(ok);
    return ok;
  }

  park(acks: readonly PendingAck[]): Promise<void> {
    this.parks++;
    return new Promise<void>((resolve) => {
      this.parked.push({ acks, resolve });
      if (!this.waiting) void this.waitLoop();
    });
  }

  /** Wakes parked waiters whose acks are all answered (also called after an eviction). */
  recheck(): void {
    if (this.parked.length === 0) return;
    const still: Parked[] = [];
    for (const p of this.parked) {
      if (this.allAnswered(p.acks)) p.resolve();
      else still.push(p);
    }
    this.parked = still;
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
    try {
      while (this.parked.length > 0) {
        const seen = Atomics.load(this.kc, KC.ACK_DOORBELL);
        this.recheck();
        if (this.parked.length === 0) break;
        Atomics.store(this.kc, KC.KERNEL_PARKED, 1);
        const r = Atomics.waitAsync(this.kc, KC.ACK_DOORBELL, seen, 50);
        if (r.async) await r.value;
        Atomics.store(this.kc, KC.KERNEL_PARKED, 0);
      }
    } finally {
      this.waiting = false;
      if (this.keepAlive) clearInterval(this.keepAlive);
      this.keepAlive = null;
    }
  }
}
