/**
 * The kernel's side of one device worker: its subscriptions (kernel-side notifier objects whose
 * callbacks post into the worker's mailbox), the requests the device makes (readBegin, range
 * fault, migrate, ...), the acknowledgement deadline, and eviction.
 *
 * Acknowledgements of every transport are accounted in one place, `HandshakeLedger`: a call is
 * answered once; a late, duplicate or foreign answer is a protocol error.
 */
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { DevmirrorError } from '../errors.js';
import {
  ANSWER,
  CALL_OP,
  CALL_SLOTS,
  CALL_SLOT_WORDS,
  CS,
  END_SLOTS,
  END_SLOT_WORDS,
  ES,
  MAILBOX_VERSION,
  MB,
  MB_CALLS_OFFSET,
  MB_ENDS_OFFSET,
  MB_WORDS,
  PAGE_SIZE,
  addrHi,
  addrLo,
  callSeqWord,
  endSeqWord,
} from '../kernel/layout.js';
import type { Kernel, Process } from '../kernel/kernel.js';
import { pteMapsFrame, ptePfn } from '../kernel/pte.js';
import { MmuIntervalNotifier, MmuNotifier } from '../notifier/subscriptions.js';
import { DeviceServices } from './device-services.js';
import { alignedSab } from '../lib/aligned-sab.js';
import { ERRNO } from '../kernel/hmm.js';
import { ProgressCounters, type ProgressSource } from '../progress/counters.js';
import { ACK_OK, ACK_PENDING, ACK_REFUSED, waitAcks, type PendingAck } from '../notifier/pending-ack.js';
import { ORIGIN_CODES, type NotifierRange } from '../notifier/range.js';
import type { Finding } from '../sanitizer/sanitizer.js';
import type { WorkerAckGroup } from './ack-group.js';
import type {
  DeviceEvent,
  DeviceInit,
  DeviceKind,
  DeviceRequest,
  EventPolicy,
  FaultInjection,
  KernelMessage,
  MirrorSummary,
  SanitizerSnapshot,
} from './protocol.js';

export type DeviceState = 'starting' | 'running' | 'stopping' | 'stopped' | 'evicted' | 'crashed';

export interface DeviceOptions {
  kind: DeviceKind;
  name: string;
  process: Process;
  policy: EventPolicy;
  options: Record<string, unknown>;
  /** Acknowledgement deadline before eviction (HMM_RANGE_DEFAULT_TIMEOUT is 1 s). */
  deadlineMs: number;
  /** The notifier channel's URL, when the kernel serves one: the worker subscribes through it. */
  channelUrl?: string | null;
  /** First ring position of calls and ends (int32; see DeviceManagerOptions.ringStart). */
  ringStart?: number;
}

/** A posted call waiting for its answer. */
class CallAck implements PendingAck {
  answeredAtUs?: number;
  /** Set when the device is gone: the call counts as answered (its mirror is torn down). */
  forced = 0;
  /**
   * Date.now() when the watchdog first saw this call unanswered (0 before): stamping here instead
   * of at post keeps a clock read off the fast path; eviction comes at most one watchdog period
   * (deadline / 4, at most 250 ms) after the deadline.
   */
  seenMs = 0;
  constructor(
    readonly dev: WorkerDevice,
    readonly slot: number,
    readonly id: number,
    readonly group: WorkerAckGroup,
  ) {}
  /** The answer once read (ACK_PENDING before). */
  private result = ACK_PENDING;
  poll(): number {
    // Read from the mailbox once: the first read frees the slot, which the next call this far
    // round the ring reuses, so a later poll (the core settling the round) must not look there.
    if (this.result !== ACK_PENDING) return this.result;
    if (this.forced) return this.forced;
    const a = Atomics.load(this.dev.mailbox, MB_CALLS_OFFSET + this.slot * CALL_SLOT_WORDS + CS.ANSWER);
    if (a === ANSWER.PENDING) return ACK_PENDING;
    this.dev.consume(this, a);
    this.result = a === ANSWER.OK ? ACK_OK : ACK_REFUSED;
    return this.result;
  }
}

let nextSubId = 1;

/** What a call slot carries of a range: a NotifierRange itself (no copy on the invalidation path), or the fields of a young or release call. */
type CallFields = Pick<NotifierRange, 'id' | 'start' | 'end' | 'flags' | 'owner'> & { event: number; origin: NotifierRange['origin'] | null };

/** The fields of a call that carries no invalidation (young tests, release). */
function plainCall(start: number, end: number): CallFields {
  return { id: 0, start, end, event: -1, flags: 0, owner: null, origin: null };
}

export class WorkerDevice implements ProgressSource {
  readonly id: number;
  readonly kind: DeviceKind;
  readonly name: string;
  readonly pid: number;
  readonly policy: EventPolicy;
  readonly mailboxSab: SharedArrayBuffer;
  readonly mailbox: Int32Array;
  readonly transport = 'worker' as const;
  state: DeviceState = 'starting';
  stateReason = '';
  /** performance.now() when the worker thread exited (0 while it runs). */
  exitedAt = 0;
  readonly createdAt = Date.now();
  deadlineMs: number;
  counters: Record<string, number> = {};
  sanitizer: SanitizerSnapshot = { checked: 0, findings: 0, byKind: {}, recent: [] };
  mirror: MirrorSummary = { pages: 0, writable: 0, devicePages: 0, objects: 0 };
  readonly findings: Finding[] = [];
  faults: FaultInjection = {};
  readonly handshake = { calls: 0, answered: 0, refused: 0, evictions: 0, protocolErrors: 0, lateAnswers: 0, endsDeferred: 0 };

  private worker: Worker | null = null;
  private readonly slots: Array<CallAck | null> = new Array(CALL_SLOTS).fill(null);
  /** Calls and ends posted (int32, wrapping like the device's tails; slots are `& (SLOTS - 1)`). */
  private callHead = 0;
  private endHead = 0;
  /** Last END_TAIL read (the device only moves it forward). */
  private endTailSeen = 0;
  private readonly subs = new Map<number, MmuIntervalNotifier | MmuNotifier>();
  private readonly replies = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextReq = 1;
  private watchdog: NodeJS.Timeout | null = null;
  private readyResolve: (() => void) | null = null;
  private exitPromise: Promise<number> | null = null;
  private slotWaiters: Array<() => void> = [];
  onFinding: ((d: WorkerDevice, f: Finding) => void) | null = null;
  onStateChange: ((d: WorkerDevice) => void) | null = null;
  private readonly services: DeviceServices;
  /** Authenticates this worker on the notifier channel (`worker:<id>:<secret>`). */
  readonly channelToken: string;
  log: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>) => void = () => undefined;

  constructor(
    private readonly k: Kernel,
    private readonly group: WorkerAckGroup,
    id: number,
    private readonly opts: DeviceOptions,
  ) {
    this.id = id;
    this.kind = opts.kind;
    this.name = opts.name;
    this.pid = opts.process.pid;
    this.policy = opts.policy;
    this.deadlineMs = opts.deadlineMs;
    this.services = new DeviceServices(k, id);
    this.channelToken = `worker:${id}:${randomBytes(16).toString('hex')}`;
    // Line-aligned: every slot is one cache line (see alignedSab).
    this.mailboxSab = alignedSab(MB_WORDS * 4);
    this.mailbox = new Int32Array(this.mailboxSab, 0, MB_WORDS);
    this.mailbox[MB.SPIN_US] = 0;
    const start = (opts.ringStart ?? 0) | 0;
    this.callHead = this.endHead = this.endTailSeen = start;
    this.mailbox[MB.END_TAIL] = start;
    // Every SEQ starts at `start`: the device expects `p + 1` in the slot of position p, which is
    // `start` only for position start - 1, 2^32 positions away. (Zero would be expected for
    // position -1, a start within one ring of the wrap would read an unwritten slot.)
    for (let t = 0; t < CALL_SLOTS; t++) this.mailbox[callSeqWord(t)] = start;
    for (let t = 0; t < END_SLOTS; t++) this.mailbox[endSeqWord(t)] = start;
    // VERSION last: the worker starts after this constructor, but every word is in place first.
    Atomics.store(this.mailbox, MB.VERSION, MAILBOX_VERSION);
  }

  /** The options the device was created with (what its personality received). */
  get options(): Readonly<Record<string, unknown>> {
    return this.opts.options;
  }

  get alive(): boolean {
    return this.state === 'starting' || this.state === 'running' || this.state === 'stopping';
  }

  /** Spawns the worker and waits until the personality is up. */
  async start(entry: { url: URL; tsBootstrap: boolean }): Promise<void> {
    const init: DeviceInit = {
      deviceId: this.id,
      kind: this.kind,
      name: this.name,
      pid: this.pid,
      policy: this.policy,
      options: this.opts.options,
      mailbox: this.mailboxSab,
      kc: this.group.kcSab,
      meta: this.k.mem.handles.meta,
      data: this.k.mem.handles.data,
      bootId: this.k.bootId,
      ringStart: (this.opts.ringStart ?? 0) | 0,
      ...(this.opts.channelUrl ? { channel: { url: this.opts.channelUrl, token: this.channelToken } } : {}),
    };
    const w = entry.tsBootstrap
      ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(entry.url.href)}); })`, {
          eval: true,
          workerData: init,
        })
      : new Worker(entry.url, { workerData: init });
    this.worker = w;
    this.exitPromise = new Promise((resolve) =>
      w.once('exit', (code) => {
        this.exitedAt = performance.now();
        resolve(code);
      }),
    );
    w.on('message', (m: DeviceEvent | DeviceRequest) => this.onMessage(m));
    w.on('error', (e) => {
      this.log('error', 'device worker error', { err: String(e) });
      void this.gone('crashed', `worker error: ${e.message}`);
    });
    w.once('exit', (code) => {
      if (this.alive) void this.gone('crashed', `worker exited with code ${code}`);
    });
    await new Promise<void>((resolve, reject) => {
      this.readyResolve = resolve;
      const t = setTimeout(() => reject(new DevmirrorError('DM_ERR_INTERNAL', `device ${this.name} did not start`)), 30_000);
      t.unref();
      void this.exitPromise?.then(() => reject(new DevmirrorError('DM_ERR_INTERNAL', `device ${this.name} exited while starting`)));
    });
    this.state = 'running';
    this.watchdog = setInterval(() => this.checkDeadlines(), Math.max(5, Math.min(250, this.deadlineMs / 4)));
    this.watchdog.unref();
    this.onStateChange?.(this);
  }

  // ---- the handshake (kernel side) -----------------------------------------------------------

  // ---- progress (src/progress) -----------------------------------------------------------------

  /** readBegin waits and range-fault retry counts (the progress oracle). */
  readonly progress = new ProgressCounters();

  /**
   * Calls the device has not answered, oldest first. Reads the answer words without consuming
   * them (poll() would free the slot under the kernel's feet); the time is when the deadline
   * watchdog first saw the call unanswered, or now.
   */
  pendingAckList(): Array<{ invalidationId: number; subscriptionId: number; sentMs: number }> {
    const out: Array<{ invalidationId: number; subscriptionId: number; sentMs: number }> = [];
    const now = Date.now();
    for (const a of this.slots) {
      if (!a || a.forced) continue;
      const base = MB_CALLS_OFFSET + a.slot * CALL_SLOT_WORDS;
      // Acquire: the answer word is the device's last write of the slot.
      if (Atomics.load(this.mailbox, base + CS.ANSWER) !== ANSWER.PENDING) continue;
      const op = this.mailbox[base + CS.OP];
      if (op !== CALL_OP.INVALIDATE && op !== CALL_OP.MM_START) continue;
      out.push({ invalidationId: a.id, subscriptionId: this.mailbox[base + CS.SUB], sentMs: a.seenMs || now });
    }
    return out.sort((x, y) => x.sentMs - y.sentMs);
  }

  subRange(subId: number): { pid: number; start: number; end: number } | null {
    const s = this.subs.get(subId);
    if (!s) return null;
    return s instanceof MmuIntervalNotifier ? { pid: this.pid, start: s.start, end: s.end } : { pid: this.pid, start: 0, end: 2 ** 64 };
  }

  /**
   * The origin of the last call and its code: a lookup keyed by a string that varies costs about
   * 11 ns here, a compare about 1 (11-27), and consecutive calls mostly share their origin.
   */
  private lastOrigin: NotifierRange['origin'] | null = null;
  private lastOriginCode = 0;

  /** Publishes a call into the mailbox; returns its pending answer, or null if the ring is full. */
  private post(op: number, subId: number, c: CallFields, curSeq: number): CallAck | null {
    const slot = this.callHead & (CALL_SLOTS - 1);
    if (this.slots[slot]) return null;
    const base = MB_CALLS_OFFSET + slot * CALL_SLOT_WORDS;
    const mb = this.mailbox;
    const id = (c.id & 0x7fffffff) || ((this.callHead + 1) & 0x7fffffff) || 1;
    // The clock is read before the slot's stores: it is a plain load and store on the kernel's own
    // header line (PhysicalMemory.tick; only this thread advances it), and it reaches the device
    // inside the slot, ordered by the SEQ store below.
    const tick = this.k.mem.tick();
    mb[base + CS.OP] = op;
    mb[base + CS.SUB] = subId;
    mb[base + CS.START_LO] = addrLo(c.start);
    mb[base + CS.START_HI] = addrHi(c.start);
    mb[base + CS.END_LO] = addrLo(c.end);
    mb[base + CS.END_HI] = addrHi(c.end);
    mb[base + CS.EVENT] = c.event;
    mb[base + CS.FLAGS] = c.flags;
    mb[base + CS.OWNER] = c.owner ?? -1;
    mb[base + CS.CUR_SEQ] = curSeq;
    mb[base + CS.PID] = this.pid;
    if (c.origin !== this.lastOrigin) {
      this.lastOrigin = c.origin;
      this.lastOriginCode = c.origin === null ? 0 : (ORIGIN_CODES[c.origin] ?? 0);
    }
    mb[base + CS.ORIGIN] = this.lastOriginCode;
    mb[base + CS.ANSWER] = ANSWER.PENDING;
    mb[base + CS.TICK] = tick;
    mb[base + CS.ID] = id;
    // SEQ last (Atomics): the device loads it first, so every word above is visible once it sees
    // the call's position there. A spinning device polls this very word: the call reaches it in
    // one transfer of this line, with no header line in between.
    this.callHead = (this.callHead + 1) | 0;
    Atomics.store(mb, base + CS.SEQ, this.callHead);
    // The end held back from the round before (see pendingRange): its line transfer now overlaps
    // this call's, which the kernel waits for. Written after the call, so a device that looks at
    // both takes the call first, as its pump would anyway.
    this.flushEnd();
    const ack = new CallAck(this, slot, id, this.group);
    this.slots[slot] = ack;
    this.handshake.calls++;
    // Dekker pair 1 (see ring): the SEQ store above precedes this load. A device that is not
    // parked now re-checks every SEQ after it stores PARKED, before it waits: it takes this call
    // without a ring, and the kernel queues nothing (no microtask on the fast path). A parked one
    // is rung when the kernel starts waiting (or at the next microtask): the core publishes to
    // every subscriber first, so no woken device takes the core before the last call is written.
    if (Atomics.load(mb, MB.PARKED) !== 0) this.group.deferRing(this);
    return ack;
  }

  /** Publishes and, if the ring is full, waits for a slot first. */
  private call(op: number, subId: number, c: CallFields, curSeq: number): PendingAck | Promise<boolean> {
    if (!this.alive) return { poll: () => ACK_OK, group: this.group };
    const ack = this.post(op, subId, c, curSeq);
    if (ack) return ack;
    return (async () => {
      for (;;) {
        await new Promise<void>((r) => this.slotWaiters.push(r));
        if (!this.alive) return true;
        const a = this.post(op, subId, c, curSeq);
        if (a) {
          await waitAcks([a]);
          return a.poll() === ACK_OK;
        }
      }
    })();
  }

  private async callAndWait(op: number, subId: number, c: CallFields): Promise<boolean> {
    const r = this.call(op, subId, c, 0);
    if (r instanceof Promise) return r;
    await waitAcks([r]);
    return r.poll() === ACK_OK;
  }

  /** @internal the kernel read the answer: free the slot (a second read is a protocol error). */
  consume(ack: CallAck, a: number): void {
    if (this.slots[ack.slot] !== ack) return;
    this.slots[ack.slot] = null;
    if (a === ANSWER.OK) this.handshake.answered++;
    else this.handshake.refused++;
    // Nobody waits for a slot unless the ring was full: no shift call on an empty list.
    if (this.slotWaiters.length > 0) this.slotWaiters.shift()?.();
  }

  /**
   * Ends the ring had no room for, oldest first. An end is never dropped: a device that misses one
   * keeps the range "in progress" for ever (KVM's mmu_invalidate_in_progress; its faults on the
   * range would retry until they give up). A device falls END_SLOTS ends behind when it gets no
   * core for a while, not only when it is dead (a dead one is evicted by its call deadline).
   */
  private overflowEnds: Array<{ subId: number; range: NotifierRange; tick: number }> = [];
  private overflowTimer: NodeJS.Timeout | null = null;

  /**
   * The end posted last, not written into the ring yet (`pendingRange` null: none). An end is
   * one-way and the kernel never waits for it, so it need not cross to the device before the
   * kernel goes on: writing it costs the kernel the end slot's line (the device polls that line,
   * so the store waits for the line to come back) at the very moment the next round could start.
   * It is written instead right after the next call's SEQ store (post), while the kernel waits for
   * that call's answer anyway; before any message to the device (send), which must not overtake
   * it; and, if neither comes, at the group's next check phase (WorkerAckGroup.deferEnd). The
   * device loses nothing by it: it takes calls before ends anyway (WorkerHost.pump), and the end's
   * clock tick, which the sanitizer orders windows by, is the one taken when it was posted.
   * Measured (kernel-ab.mjs, N = 1, 11-29): the round 0.240 to 0.271 us against 0.280 to 0.291.
   */
  private pendingSub = 0;
  private pendingRange: NotifierRange | null = null;
  private pendingTick = 0;

  private postEnd(subId: number, range: NotifierRange): void {
    if (!this.alive) return;
    // The end's clock tick is now, when the PTEs are final, however late it reaches the device:
    // the sanitizer treats grants computed before it as computed inside the window.
    const tick = this.k.mem.tick();
    // Keep the order: an older end still held goes out first.
    this.flushEnd();
    this.pendingSub = subId;
    this.pendingRange = range;
    this.pendingTick = tick;
    this.group.deferEnd(this);
  }

  /** @internal writes the end held back by postEnd, if any (see pendingRange). */
  flushEnd(): void {
    const range = this.pendingRange;
    if (range === null) return;
    this.pendingRange = null;
    if (this.alive) this.emitEnd(this.pendingSub, range, this.pendingTick);
  }

  /** Writes an end into the ring, or queues it behind the ends the ring had no room for. */
  private emitEnd(subId: number, range: NotifierRange, tick: number): void {
    // Keep the order: nothing goes into the ring while older ends wait outside it.
    if (this.overflowEnds.length > 0 || !this.endRoom()) {
      this.overflowEnds.push({ subId, range, tick });
      this.handshake.endsDeferred++;
      this.group.deferRing(this);
      this.flushOverflowLater();
      return;
    }
    this.writeEnd(subId, range, tick);
  }

  /** Room for one more end in the ring (re-reading the device's tail only when the cache says full). */
  private endRoom(): boolean {
    // END_TAIL sits on the device's line: read it only when our cached copy says the ring may be
    // full (each read pulls the line across cores).
    if (((this.endHead - this.endTailSeen) | 0) >= END_SLOTS) this.endTailSeen = Atomics.load(this.mailbox, MB.END_TAIL);
    return ((this.endHead - this.endTailSeen) | 0) < END_SLOTS;
  }

  /** Moves waiting ends into the ring as the device frees slots; retries every millisecond. */
  private flushOverflowLater(): void {
    if (this.overflowTimer) return;
    this.overflowTimer = setTimeout(() => {
      this.overflowTimer = null;
      if (!this.alive) {
        this.overflowEnds = [];
        return;
      }
      while (this.overflowEnds.length > 0 && this.endRoom()) {
        const e = this.overflowEnds.shift()!;
        this.writeEnd(e.subId, e.range, e.tick);
      }
      if (this.overflowEnds.length > 0) {
        this.group.deferRing(this);
        this.flushOverflowLater();
      }
    }, 1);
  }

  private writeEnd(subId: number, range: NotifierRange, tick: number): void {
    const mb = this.mailbox;
    const slot = this.endHead & (END_SLOTS - 1);
    const base = MB_ENDS_OFFSET + slot * END_SLOT_WORDS;
    mb[base + ES.SUB] = subId;
    mb[base + ES.START_LO] = addrLo(range.start);
    mb[base + ES.START_HI] = addrHi(range.start);
    mb[base + ES.END_LO] = addrLo(range.end);
    mb[base + ES.END_HI] = addrHi(range.end);
    mb[base + ES.EVENT] = range.event;
    mb[base + ES.FLAGS] = range.flags;
    mb[base + ES.PID] = this.pid;
    mb[base + ES.TICK] = tick;
    mb[base + ES.ID] = (range.id & 0x7fffffff) || 1;
    // SEQ last (Atomics), as for a call: a spinning device takes the end as soon as it sees it.
    this.endHead = (this.endHead + 1) | 0;
    Atomics.store(mb, base + ES.SEQ, this.endHead);
    // One-way, and lazy: the kernel never waits for an end, so a parked device is not woken for
    // one. It takes its ends on its next wake (right after the calls that woke it, before a
    // message or a timer; at most IDLE_BLOCK_MS later), which halves the wakes of an invalidation round. The
    // ring is rung when half the end slots are in use, so ends are never dropped for lack of room.
    if (((this.endHead - this.endTailSeen) | 0) >= END_SLOTS / 2) {
      this.endTailSeen = Atomics.load(mb, MB.END_TAIL);
      if (((this.endHead - this.endTailSeen) | 0) >= END_SLOTS / 2) {
        this.group.deferRing(this);
        return;
      }
    }
    // Dekker pair 1 (see ring): the SEQ store above precedes this load. A device not parked now
    // re-checks every SEQ after it stores PARKED and before it waits, so it will take this end.
    if (Atomics.load(mb, MB.PARKED) === 0) return;
    // Parked: if no call comes to carry the end within END_RING_DELAY_MS, the group rings then.
    this.group.lateRing(this);
  }

  /**
   * @internal true if the device has not taken every end posted and nothing else will make it:
   * a call it has not answered yet was rung for, and the device takes its ends in the same pump as
   * that call, so ringing again would only cost the kernel a futex call while the device waits for a core.
   */
  endsUnread(): boolean {
    if (!this.alive) return false;
    // Reads the device's line (END_TAIL, answer words): only on the late-ring timer, never per call.
    this.endTailSeen = Atomics.load(this.mailbox, MB.END_TAIL);
    if (this.endTailSeen === this.endHead) return false;
    for (const a of this.slots) {
      if (a && Atomics.load(this.mailbox, MB_CALLS_OFFSET + a.slot * CALL_SLOT_WORDS + CS.ANSWER) === ANSWER.PENDING) return false;
    }
    return true;
  }

  /** @internal set while this device is in the group's deferred-ring batch. */
  ringPending = false;
  /** @internal set while this device is in the group's list of held ends (WorkerAckGroup.deferEnd). */
  endQueued = false;

  /**
   * @internal wakes the device if it is parked (the group's batch flush, messages, teardown).
   *
   * Dekker pair 1, kernel half: everything rung for (a slot's SEQ, MESSAGES) was stored (Atomics)
   * before this load of PARKED; the device stores PARKED before it re-checks those words and then
   * waits on the DOORBELL value it read before. So either its re-check sees the new word and it
   * does not sleep, or this load sees PARKED and the add moves DOORBELL (its wait returns at once,
   * or the notify wakes it). A device that spins or runs costs the kernel one load of a line it
   * does not write: no read-modify-write, no futex call, no transfer of the line it polls.
   *
   *   kernel                               device
   *   store slot SEQ (or add MESSAGES)     seen = load DOORBELL; pump; spin on the SEQs ...
   *   load PARKED ----------------+        store PARKED = 1
   *     0: done (the device will  |        re-check next call SEQ, next end SEQ, MESSAGES
   *        see the SEQ itself)    +------>   something new: PARKED = 0, take it
   *     1: add DOORBELL; notify  -------->  Atomics.wait(DOORBELL, seen): returns at once
   *                                          ("not-equal") or is woken; PARKED = 0
   */
  ring(): void {
    this.ringPending = false;
    if (Atomics.load(this.mailbox, MB.PARKED) === 0) return;
    Atomics.add(this.mailbox, MB.DOORBELL, 1);
    Atomics.notify(this.mailbox, MB.DOORBELL);
    this.group.deviceWakes++;
  }

  private checkDeadlines(): void {
    if (!this.alive) return;
    const now = Date.now();
    for (const a of this.slots) {
      if (!a || a.forced) continue;
      if (a.seenMs === 0) {
        a.seenMs = now;
        continue;
      }
      if (now - a.seenMs > this.deadlineMs) {
        const late = Atomics.load(this.mailbox, MB_CALLS_OFFSET + a.slot * CALL_SLOT_WORDS + CS.ANSWER);
        if (late !== ANSWER.PENDING) continue;
        void this.evict(`no answer to call ${a.id} within ${this.deadlineMs} ms`);
        return;
      }
    }
  }

  // ---- subscriptions ---------------------------------------------------------------------------

  private info(label: string): { label: string; deviceId: number; deviceKind: string } {
    return { label: `${this.name}:${label}`, deviceId: this.id, deviceKind: this.kind };
  }

  private insertInterval(start: number, length: number, label: string): number {
    const id = nextSubId++;
    const sub = new MmuIntervalNotifier(
      {
        invalidate: (s, range, curSeq) => {
          // Mirror the device's setSeq: the device sets its own copy when it handles the call.
          s.setSeq(curSeq);
          return this.call(CALL_OP.INVALIDATE, id, range, curSeq);
        },
        windowClosed: (_s, range) => this.postEnd(id, range),
      },
      this.info(label),
    );
    this.opts.process.mm.notifier.insertInterval(sub, start, length);
    this.subs.set(id, sub);
    return id;
  }

  private registerMm(label: string): number {
    const id = nextSubId++;
    const young = (op: number, start: number, end: number): Promise<boolean> =>
      this.alive ? this.callAndWait(op, id, plainCall(start, end)) : Promise.resolve(false);
    const sub = new MmuNotifier(
      {
        invalidateRangeStart: (_s, range) => {
          const r = this.call(CALL_OP.MM_START, id, range, 0);
          if (r instanceof Promise) return r.then((ok) => (ok ? 0 : -11));
          return r;
        },
        invalidateRangeEnd: (_s, range) => this.postEnd(id, range),
        release: async () => {
          if (this.alive) await this.callAndWait(CALL_OP.RELEASE, id, plainCall(0, 2 ** 64));
        },
        clearFlushYoung: (_s, start, end) => young(CALL_OP.CLEAR_FLUSH_YOUNG, start, end),
        clearYoung: (_s, start, end) => young(CALL_OP.CLEAR_YOUNG, start, end),
        testYoung: (_s, addr) => young(CALL_OP.TEST_YOUNG, addr, addr + PAGE_SIZE),
      },
      this.info(label),
    );
    this.opts.process.mm.notifier.register(sub);
    this.subs.set(id, sub);
    return id;
  }

  /**
   * Subscription requests that arrive through the notifier channel (the worker's session): the
   * same kernel objects as the postMessage path, their calls still go to the mailbox.
   */
  channelSubscribe(kind: 'interval' | 'mm', start: number, length: number, label: string): { id: number; seq: number } {
    if (!this.alive) throw new DevmirrorError('DM_ERR_CONFLICT', `device ${this.name} is ${this.state}`);
    if (kind === 'interval') {
      const id = this.insertInterval(start, length, label);
      return { id, seq: (this.subs.get(id) as MmuIntervalNotifier).invalidateSeq };
    }
    return { id: this.registerMm(label), seq: 0 };
  }

  channelUnsubscribe(id: number): Promise<void> {
    if (!this.subs.has(id)) return Promise.reject(new DevmirrorError('DM_ERR_FORBIDDEN', `subscription ${id} is not this device's`));
    return this.removeSub(id);
  }

  private async removeSub(id: number): Promise<void> {
    this.progress.dropSub(id);
    const sub = this.subs.get(id);
    if (!sub) return;
    this.subs.delete(id);
    const n = this.opts.process.mm.notifier;
    if (sub instanceof MmuIntervalNotifier) await n.removeInterval(sub);
    else await n.unregister(sub);
  }

  // ---- requests from the device ----------------------------------------------------------------

  private send(m: KernelMessage, transfer?: ArrayBuffer[]): void {
    if (!this.worker || !this.alive) return;
    // A message never overtakes the mailbox traffic before it (the device pumps its mailbox before
    // it handles a message): the end held back goes into the ring first.
    this.flushEnd();
    this.worker.postMessage(m, transfer as never);
    // One doorbell for everything: a device blocked in Atomics.wait cannot see a message until it
    // turns its event loop, so MESSAGES tells it to (bumped after the post, before the ring).
    Atomics.add(this.mailbox, MB.MESSAGES, 1);
    this.ring();
  }

  /** Microseconds the device spins on its doorbell before parking (set as cores get short). */
  setSpinUs(us: number): void {
    Atomics.store(this.mailbox, MB.SPIN_US, us);
  }

  private reply(req: number, value: unknown, transfer?: ArrayBuffer[]): void {
    this.send({ t: 'reply', req, ok: true, value }, transfer);
  }

  private fail(req: number, e: unknown): void {
    const err = e instanceof DevmirrorError ? e : new DevmirrorError('DM_ERR_INTERNAL', (e as Error)?.message ?? String(e));
    this.send({ t: 'reply', req, ok: false, error: { code: err.code, message: err.message, details: err.details } });
  }

  private onMessage(m: DeviceEvent | DeviceRequest): void {
    switch (m.t) {
      case 'ready':
        this.readyResolve?.();
        this.readyResolve = null;
        return;
      case 'stats':
        this.counters = m.counters;
        this.sanitizer = m.sanitizer;
        this.mirror = m.mirror;
        // A worker's DMA runs in its own thread against shared memory: the kernel sees only these
        // running totals (posted at most every 200 ms), so the trace has them as sampled counters.
        this.k.trace?.counter(`d:${this.id}`, 'dma', this.pid, { bytes: m.counters.dma_bytes ?? 0, accessesChecked: m.sanitizer.checked });
        return;
      case 'finding':
        if (this.findings.length < 500) this.findings.push(m.finding);
        this.onFinding?.(this, m.finding);
        return;
      case 'log':
        this.log(m.level, m.msg, m.data);
        return;
      case 'reply': {
        const r = this.replies.get(m.req);
        if (!r) return;
        this.replies.delete(m.req);
        if (m.ok) r.resolve(m.value);
        else r.reject(new DevmirrorError((m.error?.code ?? 'DM_ERR_INTERNAL') as never, m.error?.message, m.error?.details));
        return;
      }
      default:
        void this.handleRequest(m);
    }
  }

  private async handleRequest(m: DeviceRequest): Promise<void> {
    try {
      switch (m.t) {
        case 'insert': {
          const id = this.insertInterval(m.start, m.length, m.label);
          return this.reply(m.req, { id, seq: (this.subs.get(id) as MmuIntervalNotifier).invalidateSeq });
        }
        case 'remove':
          await this.removeSub(m.sub);
          return this.reply(m.req, true);
        case 'register':
          return this.reply(m.req, { id: this.registerMm(m.label), seq: 0 });
        case 'unregister':
          await this.removeSub(m.sub);
          return this.reply(m.req, true);
        case 'readBegin': {
          const sub = this.subs.get(m.sub);
          if (!(sub instanceof MmuIntervalNotifier)) throw new DevmirrorError('DM_ERR_VALIDATION', `no interval subscription ${m.sub}`);
          const seq = sub.readBegin();
          if (typeof seq === 'number') return this.reply(m.req, seq);
          // Waiting for an open window to close: the progress oracle's wait-for graph shows it.
          const w = this.progress.noteWait('readBegin', m.sub);
          try {
            return this.reply(m.req, await seq);
          } finally {
            this.progress.endWait(w);
          }
        }
        case 'fault': {
          const sub = this.subs.get(m.sub);
          if (!(sub instanceof MmuIntervalNotifier)) throw new DevmirrorError('DM_ERR_VALIDATION', `no interval subscription ${m.sub}`);
          const rep = await this.services.rangeFault(this.pid, sub, m);
          // A retry budget per fault (src/progress): EBUSY means an invalidation moved the seq.
          if (rep.ret === 0 || rep.ret === ERRNO.EBUSY) {
            this.progress.noteFault(m.sub, rep.ret === ERRNO.EBUSY, rep.ret === ERRNO.EBUSY ? (this.k.findProcess(this.pid)?.mm.notifier.recentOrigins(m.start, m.end) ?? []) : []);
          }
          return this.reply(m.req, rep);
        }
        case 'gup':
          return this.reply(m.req, await this.services.gup(this.pid, m.va, m.write));
        case 'vma':
          return this.reply(m.req, this.services.vma(this.pid, m.va));
        case 'migrate':
          return this.reply(m.req, await this.services.migrate(this.pid, m.dir, m.start, m.end, m.allocFails));
        case 'evict':
          return this.reply(m.req, await this.services.evictDeviceMemory());
        case 'exclusive':
          return this.reply(m.req, await this.services.exclusive(this.pid, m.va));
      }
    } catch (e) {
      this.fail((m as { req: number }).req, e);
    }
  }

  // ---- commands to the device ------------------------------------------------------------------

  /** Sends a command to the personality (test_hmm ioctls, DMA control, ...) and awaits its reply. */
  command<T = unknown>(name: string, args: Record<string, unknown> = {}, timeoutMs = 0): Promise<T> {
    if (!this.alive) return Promise.reject(new DevmirrorError('DM_ERR_CONFLICT', `device ${this.name} is ${this.state}`));
    const req = this.nextReq++;
    return new Promise<T>((resolve, reject) => {
      this.replies.set(req, { resolve: resolve as (v: unknown) => void, reject });
      this.send({ t: 'command', req, name, args });
      if (timeoutMs > 0) {
        const t = setTimeout(() => {
          if (this.replies.delete(req)) reject(new DevmirrorError('ETIME', `device ${this.name} did not answer ${name}`));
        }, timeoutMs);
        t.unref();
      }
    });
  }

  /** Fetches fresh counters, sanitizer figures and the mirror summary from the device. */
  async refresh(timeoutMs = 10_000): Promise<this> {
    // A device that stopped (its process exited, say) keeps the figures it had when it stopped.
    if (!this.alive) return this;
    let s: { counters: Record<string, number>; sanitizer: SanitizerSnapshot; mirror: MirrorSummary };
    try {
      s = await this.command('stats', {}, timeoutMs);
    } catch (e) {
      if (!this.alive) return this;
      throw e;
    }
    this.counters = s.counters;
    this.sanitizer = s.sanitizer;
    this.mirror = s.mirror;
    return this;
  }

  async inject(f: FaultInjection): Promise<void> {
    this.faults = { ...this.faults, ...f };
    if (f.crash) {
      this.send({ t: 'command', req: 0, name: 'crash', args: {} });
      return;
    }
    await this.command('inject', f as Record<string, unknown>, 10_000);
  }

  // ---- teardown --------------------------------------------------------------------------------

  /**
   * The device stopped answering (hang, crash): take the memory away for real. The worker is
   * terminated and must have exited before any of its pending calls counts as answered (only then
   * may the kernel change the PTEs); if it cannot be stopped, the frames in the ranges it was told
   * about are quarantined (never reused) and that is reported.
   */
  async evict(reason: string): Promise<void> {
    if (!this.alive) return;
    this.handshake.evictions++;
    this.log('warn', 'evicting device', { reason });
    await this.gone('evicted', reason);
  }

  private async gone(state: DeviceState, reason: string): Promise<void> {
    if (!this.alive) return;
    const wasAlive = true;
    this.state = state;
    this.stateReason = reason;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    if (this.worker && wasAlive) {
      // Test hook: a device that cannot be stopped (say, a DMA engine that ignores resets).
      const unstoppable = this.opts.options.simulateUnstoppable === true && state === 'evicted';
      const stopped = unstoppable
        ? false
        : await Promise.race([
            this.worker.terminate().then(() => true),
            new Promise<boolean>((r) => setTimeout(() => r(false), Math.max(1000, this.deadlineMs)).unref()),
          ]);
      if (!stopped) {
        this.quarantinePending();
        if (unstoppable) void this.worker.terminate();
      }
    }
    // Now every outstanding call counts as answered: the device can no longer touch memory.
    for (const a of this.slots) if (a) a.forced = ACK_OK;
    this.slots.fill(null);
    for (const w of this.slotWaiters.splice(0)) w();
    for (const r of this.replies.values()) r.reject(new DevmirrorError('DM_ERR_CONFLICT', `device ${this.name} ${state}: ${reason}`));
    this.replies.clear();
    this.group.ring();
    this.group.recheck();
    // Tear the mirror down as on unregister.
    for (const id of [...this.subs.keys()]) await this.removeSub(id).catch(() => undefined);
    await this.k.releaseDevice(this.id);
    this.onStateChange?.(this);
  }

  private quarantinePending(): void {
    const p = this.k.findProcess(this.pid);
    if (!p) return;
    let n = 0;
    for (const a of this.slots) {
      if (!a) continue;
      const base = MB_CALLS_OFFSET + a.slot * CALL_SLOT_WORDS;
      const start = (this.mailbox[base + CS.START_HI] >>> 0) * 2 ** 32 + (this.mailbox[base + CS.START_LO] >>> 0);
      const endHi = this.mailbox[base + CS.END_HI];
      const end = endHi === -1 ? 2 ** 47 : (endHi >>> 0) * 2 ** 32 + (this.mailbox[base + CS.END_LO] >>> 0);
      p.mm.pt.walk(start, Math.min(end, 2 ** 47), (_va, _idx, level, e) => {
        if (!pteMapsFrame(e) || ptePfn(e) === 0) return;
        const pages = level === 1 ? 512 : 1;
        for (let i = 0; i < pages; i++) this.k.mem.quarantine(ptePfn(e) + i);
        n += pages;
      });
    }
    this.log('error', 'device could not be stopped: frames quarantined', { frames: n });
    this.counters.quarantinedFrames = n;
  }

  /** Unregisters every subscription (release is called as on unregister) and stops the worker. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.state = 'stopping';
    for (const id of [...this.subs.keys()]) await this.removeSub(id).catch(() => undefined);
    // The last figures (after release), kept for the API and for refresh() once stopped.
    await this.refresh(1000).catch(() => undefined);
    await this.gone('stopped', 'stopped');
    await this.exitPromise;
  }
}
