/**
 * The explorer's deterministic scheduler. The kernel, the channel's server sessions, the device
 * clients and the personalities all run in this one thread; everything that could happen in a
 * different order in a real system is turned into a *step* that waits here until the scheduler
 * picks it:
 *
 *   - a frame in flight on a device's connection (one FIFO per direction, as TCP keeps it):
 *     InvalidateStart / InvalidateEnd / replies from the kernel, InvalidateAck / ReadBegin /
 *     RangeFault / Dma / ... from the device;
 *   - a device lock acquisition (Mutex.gate) and a DMA transfer finishing (the host's sleepUs);
 *   - the next operation of each scenario thread, once its previous one has returned.
 *
 * Between two steps the scheduler lets the thread go quiet (`settle`): every promise chain and
 * immediate callback the last step caused runs to completion, so the state in which the next
 * choice is made depends only on the choices made so far. A run is therefore a function of its
 * choice list, which is what the explorer records, shrinks and replays.
 *
 * Choices are recorded by *key* (the connection direction, the gate, the thread), not by index: a
 * shrunk scenario or a truncated schedule still means the same thing where its keys exist, and a
 * key that no longer exists falls back to the default choice (the oldest runnable step: "everything
 * runs as soon as it can", the schedule with no preemption).
 */
import { mulberry } from '../lib/random.js';

/** A seeded source of choices. */
export class Random {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry(seed);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

export interface Step {
  /** Stable identity of the queue this step heads (what a choice records). */
  readonly key: string;
  /** Human-readable, for step lists. */
  readonly label: string;
  /** Creation order: the default policy runs the oldest first. */
  readonly seq: number;
  run(): void;
}

export type Policy =
  /**
   * Uniform choice among the runnable steps, from a seeded generator, except that each scenario
   * thread's next operation is held back a random number of steps (up to `horizon`) after it
   * becomes runnable, unless nothing else can run: without that, uniform choice issues a syscall
   * within a step or two, and a race that needs a device's fault path to get far first (readBegin,
   * range fault, reply, lock) is almost never seen.
   */
  | { kind: 'random'; rng: Random; horizon?: number }
  /**
   * Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010): every key gets a random
   * priority when first seen, the highest runnable runs, and at `depth - 1` random steps the
   * running key drops below everything. A bug that needs d ordering constraints is found with
   * probability at least 1/(n k^(d-1)) per run, where uniform choice needs luck at every step:
   * uniform choice runs a waiting thread within a few steps, so it rarely lets a long device fault
   * path get far before the racing syscall.
   */
  | { kind: 'pct'; rng: Random; depth: number; horizon: number }
  /**
   * Follow recorded keys (null: the default choice there); where a key is not runnable, `strict`
   * fails, otherwise the default. Past the end of the list, the default.
   */
  | { kind: 'forced'; keys: readonly (string | null)[]; strict: boolean }
  /** Always the oldest runnable step. */
  | { kind: 'default' }
  /** A caller's strategy (an adversary that constructs a known interleaving, in tests). */
  | { kind: 'custom'; choose(runnable: readonly Step[], taken: readonly TakenStep[]): Step };

export interface TakenStep {
  key: string;
  label: string;
  /** Not what the default policy would have run here (a preemption). */
  deviation: boolean;
}

export class ScheduleDiverged extends Error {
  constructor(
    readonly index: number,
    readonly wanted: string,
    readonly runnable: string[],
  ) {
    super(`the schedule diverged at step ${index}: ${wanted} is not runnable (runnable: ${runnable.join(', ') || 'none'})`);
  }
}

export class Scheduler {
  /** Queues by key; a key's runnable step is its head (FIFO per connection direction). */
  private readonly queues = new Map<string, Step[]>();
  private seq = 0;
  /** Bumped by every enqueue and every step run: settle waits for it to stop moving. */
  private activity = 0;
  private readonly counters = new Map<string, number>();
  readonly taken: TakenStep[] = [];

  constructor(public policy: Policy) {}

  /** A fresh key with an ordinal: `base#n` (gates are one-shot, each its own queue). */
  uniqueKey(base: string): string {
    const n = (this.counters.get(base) ?? 0) + 1;
    this.counters.set(base, n);
    return `${base}#${n}`;
  }

  enqueue(key: string, label: string, run: () => void): void {
    const q = this.queues.get(key);
    const step: Step = { key, label, seq: this.seq++, run };
    if (q) q.push(step);
    else this.queues.set(key, [step]);
    this.activity++;
  }

  /** A one-shot step: resolves when the scheduler picks it. */
  gate(base: string, label: string): Promise<void> {
    const key = this.uniqueKey(base);
    return new Promise<void>((resolve) => this.enqueue(key, label, resolve));
  }

  /** Drops every queued step of these keys (a connection closed: its frames are lost). */
  drop(pred: (key: string) => boolean): void {
    for (const k of [...this.queues.keys()]) if (pred(k)) this.queues.delete(k);
    this.activity++;
  }

  /** The runnable steps (queue heads), oldest first. */
  runnable(): Step[] {
    const out: Step[] = [];
    for (const q of this.queues.values()) out.push(q[0]);
    return out.sort((a, b) => a.seq - b.seq);
  }

  get idle(): boolean {
    return this.queues.size === 0;
  }

  /**
   * Lets every consequence of the last step run: promise chains, immediates, and the immediates
   * they schedule. Quiet means no step was queued or run for three consecutive turns of the event
   * loop; a personality spinning on immediates (KVM's RET_PF_RETRY) is bounded by `maxTurns`.
   */
  async settle(maxTurns = 200): Promise<void> {
    let last = this.activity;
    let quiet = 0;
    for (let i = 0; i < maxTurns && quiet < 3; i++) {
      await new Promise<void>((r) => setImmediate(r));
      if (this.activity === last) quiet++;
      else {
        quiet = 0;
        last = this.activity;
      }
    }
  }

  /** Random policy: step index before which a thread's pending operation may not run. */
  private notBefore = new Map<Step, number>();

  private randomPick(p: Extract<Policy, { kind: 'random' }>, runnable: Step[]): Step {
    const horizon = p.horizon ?? 0;
    let eligible = runnable;
    if (horizon > 0) {
      const now = this.taken.length;
      eligible = runnable.filter((s) => {
        if (!s.key.startsWith('thread ')) return true;
        let at = this.notBefore.get(s);
        if (at === undefined) {
          at = now + p.rng.int(horizon + 1);
          this.notBefore.set(s, at);
        }
        return now >= at;
      });
      if (eligible.length === 0) eligible = runnable;
    }
    return eligible[p.rng.int(eligible.length)];
  }

  private priorities = new Map<string, number>();
  private changePoints: Set<number> | null = null;
  private lowest = 0;

  private pct(p: Extract<Policy, { kind: 'pct' }>, runnable: Step[]): Step {
    if (!this.changePoints) {
      this.changePoints = new Set<number>();
      for (let i = 1; i < p.depth; i++) this.changePoints.add(p.rng.int(p.horizon));
    }
    let best = runnable[0];
    let bestPri = -Infinity;
    for (const s of runnable) {
      let pri = this.priorities.get(s.key);
      if (pri === undefined) {
        pri = 1 + p.rng.int(1_000_000);
        this.priorities.set(s.key, pri);
      }
      if (pri > bestPri) {
        bestPri = pri;
        best = s;
      }
    }
    if (this.changePoints.has(this.taken.length)) this.priorities.set(best.key, --this.lowest);
    return best;
  }

  /** Picks the next step under the policy and runs it; false when nothing is runnable. */
  step(): boolean {
    const runnable = this.runnable();
    if (runnable.length === 0) return false;
    const dflt = runnable[0];
    let pick = dflt;
    const p = this.policy;
    if (p.kind === 'random') pick = this.randomPick(p, runnable);
    else if (p.kind === 'pct') pick = this.pct(p, runnable);
    else if (p.kind === 'custom') pick = p.choose(runnable, this.taken);
    else if (p.kind === 'forced') {
      const want = p.keys[this.taken.length];
      if (want !== undefined && want !== null) {
        const found = runnable.find((s) => s.key === want);
        if (found) pick = found;
        else if (p.strict) throw new ScheduleDiverged(this.taken.length, want, runnable.map((s) => s.key));
      }
    }
    const q = this.queues.get(pick.key)!;
    q.shift();
    if (q.length === 0) this.queues.delete(pick.key);
    this.taken.push({ key: pick.key, label: pick.label, deviation: pick !== dflt });
    this.activity++;
    pick.run();
    return true;
  }
}
