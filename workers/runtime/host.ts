/**
 * The device side of the notifier: what a personality (gpu, rdma, kvm, dmirror) programs against.
 * One interface, two transports: `WorkerHost` (a worker thread: the handshake on Atomics, requests
 * over postMessage) and, later, a socket host for external clients. Personality code never sees
 * which one it runs on.
 *
 * The host also runs the sanitizer: it records every pfn the kernel grants, revokes grants when the
 * device answers an invalidation, and checks every memory access the device makes through
 * `access()`. The personality cannot bypass it: it has no other way to touch memory.
 */
import { CALL_OP } from '../../src/kernel/layout.js';
import type { DeviceKind, EventPolicy, FaultReply, GupReply, MigrateReply, ExclusiveReply } from '../../src/devices/protocol.js';

export interface DevRange {
  /** Invalidation id. */
  id: number;
  pid: number;
  start: number;
  end: number;
  event: number;
  flags: number;
  owner: number | null;
  blockable: boolean;
  origin: number;
  /** Clock tick when the kernel published it. */
  tick: number;
  /**
   * Set when the invalidate/start handler chose to downgrade its mappings instead of dropping them
   * (Device.awareAction; it keeps serving reads): the host reports it with the acknowledgement, and the sanitizer then
   * does not count a later read grant of such a page as a refault. Refault accounting only; the
   * sanitizer ignores it for an event that does not leave the page mapped read-only.
   */
  kept: boolean;
}

/** The device's copy of an interval subscription, with its own invalidate_seq. */
export class DevSub {
  /** Local mmu_interval_notifier.invalidate_seq: set by the invalidate handler (setSeq). */
  seq: number;
  constructor(
    readonly id: number,
    readonly start: number,
    readonly length: number,
    readonly handler: IntervalHandler | MmHandler,
    seq: number,
  ) {
    this.seq = seq;
  }
  get end(): number {
    return this.start + this.length;
  }
  /** mmu_interval_set_seq: call under the driver lock in invalidate. */
  setSeq(cur: number): void {
    this.seq = cur;
  }
  /** mmu_interval_read_retry: under the driver lock; true means the pfns are stale. */
  readRetry(seq: number): boolean {
    return this.seq !== seq;
  }
}

export interface IntervalHandler {
  /**
   * Stop using [range] (wait for in-flight DMA), call sub.setSeq(curSeq), then return true. May
   * return false only if the range is not blockable.
   */
  invalidate(sub: DevSub, range: DevRange, curSeq: number): boolean | Promise<boolean>;
  /**
   * Optional: true if the device is idle enough, right now, that a blockable invalidation may be
   * acknowledged before `invalidate` runs. The worker host then stores the answer first and calls
   * `invalidate` at once, in the same synchronous step, before this thread can make any device
   * access. A personality may say yes only when `invalidate` will then complete synchronously and
   * return true: its lock is free (no fault path is between its readRetry and its mirror update),
   * no DMA is in flight (nothing that translated before the call can touch memory after the
   * answer), and no test scheduler gates its locks. The kernel's rule, that a device no longer uses
   * the range once it answers, then holds: the only thing after the answer is the zap itself, and
   * the device's next access comes after it. A yes that is then broken (a promise, a refusal) is
   * counted as `ack_first_broken`. Blockable calls only; a worker-thread device only (an external
   * device answers over its socket after its handler).
   *
   *   kernel thread                      device thread
   *   post call (SEQ)          ---->     ackFirst() -> true
   *   spin on ANSWER           <----     store ANSWER
   *   change the PTEs, free              invalidate(): setSeq, zap the mirror   (no access between)
   *   post end                 ---->     ... next DMA access: translates through the new mirror
   */
  ackFirst?(sub: DevSub): boolean;
  /** The invalidation's window closed (not a kernel callback; for end-side work). */
  windowClosed?(sub: DevSub, range: DevRange): void;
}

export interface MmHandler {
  start(range: DevRange): boolean | Promise<boolean>;
  end?(range: DevRange): void;
  release?(): void | Promise<void>;
  clearFlushYoung?(start: number, end: number): boolean;
  clearYoung?(start: number, end: number): boolean;
  testYoung?(addr: number): boolean;
}

export interface FaultRequest {
  defaultFlags: number;
  mask: number;
  input?: Uint32Array | null;
  /** Report this device's own device-private pages as valid (dev_private_owner). */
  ownerSelf: boolean;
}

export interface VmaInfo {
  start: number;
  end: number;
  prot: number;
  shared: boolean;
  file: boolean;
}

export type CommandHandler = (args: Record<string, unknown>) => unknown | Promise<unknown>;

export interface DeviceHost {
  readonly deviceId: number;
  readonly pid: number;
  readonly kind: DeviceKind;
  readonly name: string;
  readonly policy: EventPolicy;
  readonly options: Record<string, unknown>;
  /** Named counters, created as they are first bumped (not for hot paths: see hotCounters). */
  readonly counters: Record<string, number>;
  /** Registers counters of fixed shape for a hot path (see HotCounters); reports include them. */
  hotCounters<T extends Record<string, number>>(init: T): T;
  /** Every counter: the named ones and the hot groups. */
  counterSnapshot(): Record<string, number>;
  /** Frames of RAM; frame numbers at or above are device memory. */
  readonly ramFrames: number;

  insertInterval(start: number, length: number, handler: IntervalHandler, label: string): Promise<DevSub>;
  removeInterval(sub: DevSub): Promise<void>;
  registerMm(handler: MmHandler, label: string): Promise<DevSub>;
  unregisterMm(sub: DevSub): Promise<void>;
  readBegin(sub: DevSub): Promise<number>;
  /** hmm_range_fault under the mmap lock, in the kernel; valid pfns are granted to this device. */
  rangeFault(sub: DevSub, seq: number, start: number, end: number, req: FaultRequest): Promise<FaultReply>;
  /** get_user_pages of one page (KVM's hva_to_pfn); the pfn is granted. */
  gup(va: number, write: boolean): Promise<GupReply>;
  vma(va: number): Promise<VmaInfo | null>;
  /** migrate_vma to (or from) this device's memory; moved pages are granted. */
  migrate(dir: 'to' | 'from', start: number, end: number, allocFails?: boolean): Promise<MigrateReply>;
  /** make_device_exclusive of one page for this device. */
  exclusive(va: number): Promise<ExclusiveReply>;
  /** Moves every page of this device's memory back to RAM (device-range eviction); returns pages moved. */
  evictDeviceMemory(): Promise<number>;

  /**
   * The only way a device touches memory: reads (into `buf`) or writes (from `buf`) `len` bytes at
   * `off` of the page at `va`, through frame `pfn`; checked by the sanitizer. Synchronous in a
   * worker (shared memory); a promise over a socket (the kernel performs it), which the caller
   * awaits while the access counts as in flight.
   */
  access(va: number, pfn: number, write: boolean, buf: Uint8Array, bufOff: number, off: number, len: number): void | Promise<void>;
  /** The device dropped its translation of va (no longer granted). */
  forget(va: number): void;

  onCommand(name: string, fn: CommandHandler): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>): void;
  /** Resolves after `us` microseconds (a simulated device latency). */
  sleepUs(us: number): Promise<void>;
  /**
   * Declares (true) or retires (false) timer work that must fire within `periodMs` (a running DMA
   * engine's tick, a restore delay): the device loop never blocks in Atomics.wait longer than the
   * shortest declared period, so timers keep their pace while the loop sleeps on its doorbell.
   */
  holdTimers(on: boolean, periodMs: number): void;
}

/**
 * Runs the personality's handler for one kernel call (whatever transport brought it): interval
 * invalidate, mm start, release or a young query (`op` is a CALL_OP). A call for a subscription
 * the device already dropped is answered as done.
 */
export function invokeCall(sub: DevSub | undefined, op: number, range: DevRange, curSeq: number): boolean | void | Promise<boolean | void> {
  if (!sub) return true;
  if (op === CALL_OP.INVALIDATE) {
    // The kernel's copy of this subscription's invalidate_seq was set to curSeq when the call was
    // published (it cannot wait for the device's setSeq), and readBegin returns the kernel's copy:
    // the device's copy must move with it before the handler runs, or a handler that skips setSeq
    // (test_hmm skips its own MIGRATE) leaves the two apart and every later readRetry fails
    // (a fault retrying until EBUSY). Setting it early only adds retries, never hides one.
    sub.setSeq(curSeq);
    return (sub.handler as IntervalHandler).invalidate(sub, range, curSeq);
  }
  const h = sub.handler as MmHandler;
  switch (op) {
    case CALL_OP.MM_START:
      return h.start(range);
    case CALL_OP.RELEASE:
      return h.release?.();
    case CALL_OP.CLEAR_FLUSH_YOUNG:
      return h.clearFlushYoung?.(range.start, range.end) ?? false;
    case CALL_OP.CLEAR_YOUNG:
      return h.clearYoung?.(range.start, range.end) ?? false;
    case CALL_OP.TEST_YOUNG:
      return h.testYoung?.(range.start) ?? false;
  }
  return true;
}

/** Delivers an end to the personality (interval windowClosed or mm end). */
export function invokeEnd(sub: DevSub | undefined, range: DevRange): void {
  if (!sub) return;
  if ('invalidate' in sub.handler) sub.handler.windowClosed?.(sub, range);
  else sub.handler.end?.(range);
}
