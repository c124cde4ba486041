/**
 * A device's DMA engine: reads and writes emulated memory through the device's mirror at a rate,
 * with a pattern (sequential, random, hot set) and a read/write mix, faulting in as the real device
 * would. Each access is *in flight* from the moment it looks up its translation until its data has
 * moved (a simulated transfer time): an invalidation must wait for the in-flight accesses to its
 * range (`drain`) before the device answers, or the sanitizer sees the late access.
 */
import { PAGE_SIZE } from '../../src/kernel/layout.js';
import type { DmaConfig, DmaQuiesced } from '../../src/devices/protocol.js';
import type { DeviceHost } from './host.js';

export interface DmaTarget {
  /** Synchronous device TLB lookup: the frame for va with the needed access, or -1. */
  lookup(va: number, write: boolean): number;
  /** The device's fault path; resolves true if the page is mapped now. */
  fault(va: number, write: boolean): Promise<boolean>;
  /** Areas the engine may touch, [start, end) pairs (page aligned). */
  areas(): Array<[number, number]>;
}

interface InFlight {
  va: number;
  done: Promise<void>;
}

/**
 * The engine issues its accesses in batches, one batch per tick of `tickMs(rate)`: every 2 ms at
 * high rates, and less often at low rates so that a batch holds about 16 accesses (at most 50 ms).
 * Each tick wakes the worker thread; with tens of workers on two cores, a wake per access would
 * cost more CPU than the accesses themselves.
 */
const MIN_TICK_MS = 2;
const MAX_TICK_MS = 50;
const ACCESSES_PER_TICK = 16;
function tickMs(rate: number): number {
  return Math.min(MAX_TICK_MS, Math.max(MIN_TICK_MS, Math.round((ACCESSES_PER_TICK * 1000) / rate)));
}

export const DEFAULT_DMA: DmaConfig = { rate: 0, pattern: 'random', writeMix: 0.3, transferUs: 0, bytes: 64 };

export class DmaEngine {
  config: DmaConfig = { ...DEFAULT_DMA };
  private readonly inflight = new Set<InFlight>();
  /** Every access from its first step (a fault it awaits included) to its end: what quiesce waits for. */
  private readonly started = new Set<Promise<boolean>>();
  private timer: NodeJS.Timeout | null = null;
  private period = 0;
  private cursor = 0;
  private credit = 0;
  private hot: number[] = [];
  private seq = 1;
  readonly stats = { accesses: 0, reads: 0, writes: 0, faults: 0, errors: 0, drains: 0, drainWaits: 0 };
  private readonly buf = new Uint8Array(PAGE_SIZE);
  private readonly bufWords = new DataView(this.buf.buffer);
  /** Journal (config.journalTag set): va -> [tag, seq] of the last write applied since the last quiesce. */
  private readonly journal = new Map<number, [number, number]>();

  constructor(
    private readonly host: DeviceHost,
    private readonly target: DmaTarget,
  ) {}

  configure(c: Partial<DmaConfig>): DmaConfig {
    this.config = { ...this.config, ...c };
    const period = this.config.rate > 0 ? tickMs(this.config.rate) : 0;
    if (this.timer && period !== this.period) {
      clearInterval(this.timer);
      this.timer = null;
      this.host.holdTimers(false, this.period);
    }
    if (period > 0 && !this.timer) {
      this.period = period;
      this.timer = setInterval(() => this.tick(), period);
      this.host.holdTimers(true, period);
    }
    return this.config;
  }

  stop(): void {
    this.configure({ rate: 0 });
  }

  get busy(): number {
    return this.inflight.size;
  }

  /**
   * The windows the engine may touch now: the device's mapped areas clipped to [start, end), or,
   * with `pages`, those of the listed pages that lie in them.
   */
  private windows(): { pages: Array<[number, number]>; total: number } {
    const c = this.config;
    const pages: Array<[number, number]> = [];
    let total = 0;
    const areas = this.target.areas();
    if (c.pages && c.pages.length > 0) {
      for (const p of c.pages) {
        const va = p - (p % PAGE_SIZE);
        if ((c.start !== undefined && va < c.start) || (c.end !== undefined && va >= c.end)) continue;
        if (!areas.some(([s, e]) => va >= s && va < e)) continue;
        pages.push([va, va + PAGE_SIZE]);
        total++;
      }
      return { pages, total };
    }
    for (const [s, e] of areas) {
      const lo = Math.max(s, c.start ?? s);
      const hi = Math.min(e, c.end ?? e);
      if (hi > lo) {
        pages.push([lo, hi]);
        total += (hi - lo) / PAGE_SIZE;
      }
    }
    return { pages, total };
  }

  private pick({ pages, total }: { pages: Array<[number, number]>; total: number }): number {
    const c = this.config;
    if (total === 0) return -1;
    let n: number;
    if (c.pattern === 'sequential') n = this.cursor++ % total;
    else if (c.pattern === 'hotset') {
      if (this.hot.length === 0 || Math.random() < 0.01) this.hot = Array.from({ length: 8 }, () => Math.floor(Math.random() * total));
      n = Math.random() < 0.9 ? this.hot[Math.floor(Math.random() * this.hot.length)] : Math.floor(Math.random() * total);
    } else n = Math.floor(Math.random() * total);
    for (const [lo, hi] of pages) {
      const cnt = (hi - lo) / PAGE_SIZE;
      if (n < cnt) return lo + n * PAGE_SIZE;
      n -= cnt;
    }
    return -1;
  }

  private tick(): void {
    this.credit += (this.config.rate * this.period) / 1000;
    let budget = Math.min(Math.floor(this.credit), 1000);
    this.credit -= budget;
    if (budget === 0) return;
    // The areas once per batch: faults in this batch run later (they await the kernel).
    const w = this.windows();
    while (budget-- > 0) {
      const va = this.pick(w);
      if (va < 0) return;
      // A failed access (its fault raced the removal of the subscription it used) is an error of
      // this access, not of the worker.
      this.access(va, Math.random() < this.config.writeMix).catch(() => this.stats.errors++);
    }
  }

  /**
   * One device access to the page at va: translate (faulting as needed), then move the data after
   * the transfer time, with the translation held in flight.
   */
  access(va: number, write: boolean, data?: Uint8Array, holdUs?: number): Promise<boolean> {
    const p = this.doAccess(va, write, data, holdUs);
    this.started.add(p);
    const done = (): void => void this.started.delete(p);
    p.then(done, done);
    return p;
  }

  private async doAccess(va: number, write: boolean, data?: Uint8Array, holdUs?: number): Promise<boolean> {
    let pfn = this.target.lookup(va, write);
    for (let tries = 0; pfn < 0; tries++) {
      if (tries > 16) {
        this.stats.errors++;
        return false;
      }
      this.stats.faults++;
      if (!(await this.target.fault(va, write))) {
        this.stats.errors++;
        return false;
      }
      pfn = this.target.lookup(va, write);
    }
    // The translation is in use from here: a drain of this range must wait for us.
    let finish!: () => void;
    const op: InFlight = { va, done: new Promise<void>((r) => (finish = r)) };
    this.inflight.add(op);
    try {
      const transferUs = holdUs ?? this.config.transferUs;
      if (transferUs > 0) await this.host.sleepUs(transferUs);
      const len = Math.min(this.config.bytes, PAGE_SIZE);
      if (write) {
        const seq = this.seq++;
        const tag = data ? undefined : this.config.journalTag;
        let src = data ?? this.buf.fill((seq & 0xff) | 1, 0, len);
        let n = len;
        if (tag !== undefined) {
          n = Math.max(8, len);
          this.bufWords.setUint32(0, tag >>> 0, true);
          this.bufWords.setUint32(4, seq >>> 0, true);
          src = this.buf;
        }
        const pending = this.host.access(va, pfn, true, src, 0, 0, n);
        if (pending) await pending;
        // Journalled once applied: a worker's write is synchronous, a socket host's replies come
        // back in the order the kernel applied them, so the last entry is the page's last write.
        if (tag !== undefined) this.journal.set(va, [tag >>> 0, seq >>> 0]);
        this.stats.writes++;
      } else {
        const pending = this.host.access(va, pfn, false, this.buf, 0, 0, len);
        if (pending) await pending;
        this.stats.reads++;
      }
      this.stats.accesses++;
      return true;
    } finally {
      this.inflight.delete(op);
      finish();
    }
  }

  /**
   * Stops issuing accesses, waits until none is in flight, and hands over (and clears) the journal:
   * after this, memory holds the journalled stamp of every page unless someone else wrote it.
   */
  async quiesce(): Promise<DmaQuiesced> {
    this.stop();
    // Not only the accesses holding a translation: one still faulting writes once its fault is in.
    while (this.started.size > 0) await Promise.allSettled([...this.started]);
    const journal: DmaQuiesced['journal'] = [];
    for (const [va, [tag, seq]] of this.journal) journal.push([va, tag, seq]);
    this.journal.clear();
    return { journal, stats: { ...this.stats } };
  }

  /** Waits until no in-flight access touches [start, end). */
  async drain(start: number, end: number): Promise<void> {
    this.stats.drains++;
    for (;;) {
      const waiting: Promise<void>[] = [];
      for (const op of this.inflight) if (op.va >= start && op.va < end) waiting.push(op.done);
      if (waiting.length === 0) return;
      this.stats.drainWaits++;
      await Promise.all(waiting);
    }
  }

  /** True if an access to [start, end) is in flight (a synchronous fast-path check). */
  busyIn(start: number, end: number): boolean {
    if (this.inflight.size === 0) return false; // no iterator on the invalidation path
    for (const op of this.inflight) if (op.va >= start && op.va < end) return true;
    return false;
  }
}
