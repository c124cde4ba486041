/**
 * Sleeping locks for the kernel thread. JavaScript runs one task at a time, so anything between two
 * `await`s is already atomic (that is what stands in for spinlocks and the page-table lock); these
 * locks order tasks across the awaits where the kernel would sleep (waiting for invalidation
 * acknowledgements, for reclaim, for a device).
 *
 * Both are FIFO-fair: a waiting writer blocks later readers, as the kernel's rwsem does, so a stream
 * of faults cannot starve munmap.
 */
import { noteWake } from './wakes.js';

interface Waiter {
  write: boolean;
  resolve: () => void;
  who: string;
}

export class RwLock {
  private readers = 0;
  private writer = false;
  private queue: Waiter[] = [];
  /** Labels of current holders, for wait-for graphs and debugging. */
  readonly holders = new Map<string, number>();

  constructor(readonly name: string) {}

  get readLocked(): number {
    return this.readers;
  }
  get writeLocked(): boolean {
    return this.writer;
  }
  get waiting(): number {
    return this.queue.length;
  }

  private hold(who: string): void {
    this.holders.set(who, (this.holders.get(who) ?? 0) + 1);
  }
  private unhold(who: string): void {
    const n = (this.holders.get(who) ?? 1) - 1;
    if (n <= 0) this.holders.delete(who);
    else this.holders.set(who, n);
  }

  tryRead(who = 'anon'): boolean {
    if (this.writer || this.queue.length > 0) return false;
    this.readers++;
    this.hold(who);
    return true;
  }

  tryWrite(who = 'anon'): boolean {
    if (this.writer || this.readers > 0 || this.queue.length > 0) return false;
    this.writer = true;
    this.hold(who);
    return true;
  }

  read(who = 'anon'): Promise<void> | void {
    if (this.tryRead(who)) return;
    return new Promise((resolve) => this.queue.push({ write: false, resolve, who }));
  }

  write(who = 'anon'): Promise<void> | void {
    if (this.tryWrite(who)) return;
    return new Promise((resolve) => this.queue.push({ write: true, resolve, who }));
  }

  readUnlock(who = 'anon'): void {
    if (this.readers <= 0) throw new Error(`${this.name}: read unlock without lock`);
    this.readers--;
    this.unhold(who);
    this.grant();
  }

  writeUnlock(who = 'anon'): void {
    if (!this.writer) throw new Error(`${this.name}: write unlock without lock`);
    this.writer = false;
    this.unhold(who);
    this.grant();
  }

  /** mmap_write_downgrade: keep holding, as a reader. */
  downgrade(who = 'anon'): void {
    if (!this.writer) throw new Error(`${this.name}: downgrade without write lock`);
    this.writer = false;
    this.readers++;
    this.grant();
  }

  private grant(): void {
    while (this.queue.length > 0) {
      const w = this.queue[0];
      if (w.write) {
        if (this.writer || this.readers > 0) return;
        this.queue.shift();
        this.writer = true;
        this.hold(w.who);
        w.resolve();
        return;
      }
      if (this.writer) return;
      this.queue.shift();
      this.readers++;
      this.hold(w.who);
      w.resolve();
    }
  }
}

export class Mutex {
  /**
   * Set only by the interleaving explorer (src/explore), which runs devices in its own thread:
   * every blocking acquisition first waits for the scheduler to let it try, so the order in which
   * a fault path and an invalidation take a device lock is a scheduling choice, not luck. Only
   * device code uses Mutex (the kernel's locks are RwLock and KeyedMutex). tryLock is not gated:
   * a non-blockable path never waits.
   */
  static gate: ((m: Mutex, who: string) => Promise<void>) | null = null;
  private locked = false;
  private queue: Array<() => void> = [];
  holder: string | null = null;
  /** Who waits, in order (wait-for graphs). */
  readonly waiters: string[] = [];

  constructor(readonly name: string) {}

  get isLocked(): boolean {
    return this.locked;
  }

  tryLock(who = 'anon'): boolean {
    if (this.locked) return false;
    this.locked = true;
    this.holder = who;
    return true;
  }

  lock(who = 'anon'): Promise<void> | void {
    const gate = Mutex.gate;
    if (gate) return gate(this, who).then(() => this.acquire(who));
    return this.acquire(who);
  }

  private acquire(who: string): Promise<void> | void {
    if (this.tryLock(who)) return;
    this.waiters.push(who);
    return new Promise((resolve) =>
      this.queue.push(() => {
        this.waiters.splice(this.waiters.indexOf(who), 1);
        this.holder = who;
        resolve();
      }),
    );
  }

  unlock(): void {
    if (!this.locked) throw new Error(`${this.name}: unlock without lock`);
    // Uncontended (every invalidation of an idle device): no shift call on an empty queue.
    const next = this.queue.length > 0 ? this.queue.shift() : undefined;
    if (next) {
      // The waiter resumes in a microtask: a device loop about to park must yield first (wakes.ts).
      noteWake();
      next();
    } else {
      this.locked = false;
      this.holder = null;
    }
  }
}

/** Per-key mutexes created on demand (folio locks keyed by pfn). */
export class KeyedMutex {
  private readonly locks = new Map<number, { waiters: Array<() => void>; holder: string }>();

  isLocked(key: number): boolean {
    return this.locks.has(key);
  }

  tryLock(key: number, who = 'anon'): boolean {
    if (this.locks.has(key)) return false;
    this.locks.set(key, { waiters: [], holder: who });
    return true;
  }

  lock(key: number, who = 'anon'): Promise<void> | void {
    const l = this.locks.get(key);
    if (!l) {
      this.locks.set(key, { waiters: [], holder: who });
      return;
    }
    return new Promise((resolve) =>
      l.waiters.push(() => {
        l.holder = who;
        resolve();
      }),
    );
  }

  unlock(key: number): void {
    const l = this.locks.get(key);
    if (!l) throw new Error(`unlock of unlocked key ${key}`);
    const next = l.waiters.shift();
    if (next) next();
    else this.locks.delete(key);
  }

  held(): Array<{ key: number; holder: string; waiters: number }> {
    return [...this.locks].map(([key, l]) => ({ key, holder: l.holder, waiters: l.waiters.length }));
  }
}
