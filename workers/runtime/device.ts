/**
 * What every personality shares: the host, the event policy, the deliberate bug modes, the driver
 * lock, the DMA engine and the counters. Subclasses implement the mirror.
 */
import { PAGE_SIZE } from '../../src/kernel/layout.js';
import { Mutex } from '../../src/lib/locks.js';
import { MmuNotifierEvent } from '../../src/notifier/range.js';
import { EVENT_NAMES } from '../../src/notifier/range.js';
import { RANGE_UPDATE_TO_READ_ONLY } from '../../src/sanitizer/sanitizer.js';
import type { BugMode, DmaConfig, MirrorSummary } from '../../src/devices/protocol.js';
import { DmaEngine, type DmaTarget } from './dma-engine.js';
import type { DevRange, DeviceHost } from './host.js';

/** What a device should do with an invalidation, after its policy. */
export type Action =
  /** Ignore it (its own migration, RELEASE for some drivers). */
  | 'skip'
  /** Drop the translations in range (the range itself may stay tracked). */
  | 'zap'
  /** Drop the translations and the tracking structure (UNMAP, aware). */
  | 'drop'
  /** Keep the translations read-only (a write needs a fault). */
  | 'downgrade';

const BLIND_VIEW = Object.freeze({ event: MmuNotifierEvent.CLEAR as number, owner: null });

export abstract class Device implements DmaTarget {
  readonly lock: Mutex;
  readonly dma: DmaEngine;
  bug: BugMode | null = null;
  /** Frames of RAM: anything at or above is device memory. */
  readonly ramFrames: number;

  constructor(readonly host: DeviceHost) {
    this.lock = new Mutex(`${host.name}.lock`);
    this.dma = new DmaEngine(host, this);
    this.ramFrames = host.ramFrames;
    host.onCommand('dma', (args) => this.dma.configure(args as Partial<DmaConfig>));
    host.onCommand('dma-quiesce', () => this.dma.quiesce());
    // A full collection of this thread's heap when the process exposes one (the soak's memory figure).
    host.onCommand('gc', () => {
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      return gc !== undefined;
    });
    host.onCommand('dma-access', async (args) => this.dma.access(Number(args.addr), Boolean(args.write)));
    // A kernel launch touching a buffer: one access per page, in order, faulting as needed.
    host.onCommand('dma-sweep', async (args) => {
      const addr = Number(args.addr);
      const npages = Number(args.npages);
      const faults = this.dma.stats.faults;
      let ok = 0;
      // holdUs: each access holds its translation that long before moving its data (a long
      // transfer the conformance suite invalidates under, whatever the engine's own transferUs).
      const holdUs = args.holdUs === undefined ? undefined : Number(args.holdUs);
      for (let i = 0; i < npages; i++) if (await this.dma.access(addr + i * PAGE_SIZE, Boolean(args.write), undefined, holdUs)) ok++;
      return { ok, failed: npages - ok, faults: this.dma.stats.faults - faults };
    });
    host.onCommand('bug', (args) => {
      this.bug = (args.bug as BugMode | null) ?? null;
      return this.bug;
    });
    host.onCommand('counters', () => host.counterSnapshot());
    // What the device maps in [addr, addr + npages pages): the frame per page, or -1 (dashboards).
    host.onCommand('mirror-map', (args) => {
      const addr = Number(args.addr);
      const npages = Math.min(4096, Number(args.npages));
      const out: number[] = [];
      for (let i = 0; i < npages; i++) out.push(this.peek(addr + i * PAGE_SIZE));
      return out;
    });
    // The kernel is moving some of this device's pages back to RAM: drop them before they move.
    host.onCommand('migrating-out', (args) => {
      this.dropPages(args.vas as number[]);
      return true;
    });
  }

  /** Forget the translations of these pages (the kernel is moving them out of device memory). */
  abstract dropPages(vas: number[]): void;

  /** Subscribe and build the initial mirror. */
  abstract attach(): Promise<void>;
  abstract lookup(va: number, write: boolean): number;
  /** The translation of va without side effects (no accessed bit): for observers. */
  peek(va: number): number {
    return this.lookup(va, false);
  }
  abstract fault(va: number, write: boolean): Promise<boolean>;
  abstract areas(): Array<[number, number]>;
  abstract summary(): MirrorSummary;

  /**
   * Runs device background work (deferred splits, restores, re-reads, DMA accesses) without letting
   * a failure escape as an unhandled rejection (which would kill the worker): a request can fail
   * when the kernel already removed the subscription it names (the device's own deferred work
   * raced it). The failure is counted and logged.
   */
  background(p: Promise<unknown>, what: string): void {
    p.catch((e: Error) => {
      this.inc('background_errors');
      this.host.log('warn', `${what} failed: ${e?.message ?? String(e)}`);
    });
  }

  inc(name: string, by = 1): void {
    this.host.counters[name] = (this.host.counters[name] ?? 0) + by;
  }

  get policy(): 'faithful' | 'aware' | 'blind' {
    return this.host.policy;
  }

  /** The event as the device sees it: a blind device (pre-5.2) sees every event as CLEAR, no owner. */
  seen(r: DevRange): { readonly event: number; readonly owner: number | null } {
    // No allocation on the invalidation path: the range itself, or one shared blind view.
    return this.policy === 'blind' ? BLIND_VIEW : r;
  }

  ownEvent(r: DevRange): boolean {
    const s = this.seen(r);
    return (s.event === MmuNotifierEvent.MIGRATE || s.event === MmuNotifierEvent.EXCLUSIVE) && s.owner === this.host.deviceId;
  }

  /**
   * The event-aware choice (the seed series' intent). A downgrade is marked on the range
   * (`DevRange.kept`): every personality acts on the choice it gets here, and its host reports
   * the mark with the acknowledgement (refault accounting).
   */
  awareAction(r: DevRange): Action {
    const action = this.awareChoice(r);
    r.kept = action === 'downgrade';
    return action;
  }

  private awareChoice(r: DevRange): Action {
    const { event } = this.seen(r);
    if (this.ownEvent(r)) {
      this.inc('own_events_skipped');
      return 'skip';
    }
    switch (event) {
      case MmuNotifierEvent.UNMAP:
        return 'drop';
      case MmuNotifierEvent.PROTECTION_VMA:
        return r.flags & RANGE_UPDATE_TO_READ_ONLY ? 'downgrade' : 'zap';
      case MmuNotifierEvent.PROTECTION_PAGE:
      case MmuNotifierEvent.SOFT_DIRTY:
        return 'downgrade';
      default:
        return 'zap';
    }
  }

  /** Deliberate bug: acknowledge without acting on this event. */
  ignores(r: DevRange): boolean {
    return this.bug !== null && this.bug.startsWith('ignore-event:') && this.bug.slice(13) === EVENT_NAMES[r.event];
  }

  get skipSeqRetry(): boolean {
    return this.bug === 'skip-seq-retry';
  }

  /** readRetry, unless the skip-seq-retry bug is on. */
  retry(sub: { readRetry(seq: number): boolean }, seq: number): boolean {
    return this.skipSeqRetry ? false : sub.readRetry(seq);
  }

  /**
   * No DMA in flight and no test scheduler gating the locks (src/explore): with its own lock free
   * too, the personality's invalidate runs to the end synchronously (IntervalHandler.ackFirst).
   */
  protected quiet(): boolean {
    return this.dma.busy === 0 && Mutex.gate === null;
  }

  /**
   * Stops using [start, end): waits for in-flight DMA to it, unless the ack-before-quiesce bug is
   * on (then the device answers while its DMA is still running).
   */
  quiesce(start: number, end: number): Promise<void> | null {
    if (this.bug === 'ack-before-quiesce') return null;
    if (!this.dma.busyIn(start, end)) return null;
    return this.dma.drain(start, end);
  }
}
