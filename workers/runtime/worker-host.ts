/**
 * DeviceHost for a worker thread. The mailbox loop answers invalidations (spin briefly, then park on
 * the doorbell, which the kernel also rings for every postMessage); requests go to the kernel over
 * postMessage. This thread does nothing but the device, so it may block in Atomics.wait.
 *
 * Handshake, device side (see src/devices/ack-group.ts for the kernel side):
 *
 *   wait: spin on the next call's and end's SEQ and MB.MESSAGES (MB.SPIN_US), turn the event
 *         loop, then park (store MB.PARKED, re-check them, Atomics.wait on MB.DOORBELL)
 *   take: while the next call slot's SEQ is its position + 1 (Atomics): read its words, handle it
 *         (then the ends, see pump)
 *   handle: personality stops using the range (drains DMA), setSeq, zaps its mirror
 *   answer: store ANSWER (Atomics); if KC.KERNEL_PARKED: add KC.ACK_DOORBELL, notify if it
 *           reached KC.WAKE_AT; then sanitizer.started and acked
 *   (a quiet personality, IntervalHandler.ackFirst: answer first, then handle, in one step)
 *   ends: while the next end slot's SEQ is its position + 1: sanitizer.ended; personality end
 *
 * The sanitizer revokes grants in the same synchronous step as the answer, before this thread can
 * make any other access, so every access after answering is checked against the revoked grant.
 */
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { parentPort, workerData } from 'node:worker_threads';
import {
  ANSWER,
  CALL_OP,
  CALL_SLOTS,
  CALL_SLOT_WORDS,
  CS,
  END_SLOTS,
  END_SLOT_WORDS,
  ES,
  HDR,
  KC,
  KC_WORDS,
  MB,
  MB_WORDS,
  MB_CALLS_OFFSET,
  MB_ENDS_OFFSET,
  PAGE_SIZE,
  callSeqWord,
  endSeqWord,
  joinAddr,
} from '../../src/kernel/layout.js';
import { HotCounters } from './hot-counters.js';
import { busyWaitUs } from '../../src/lib/busy-wait.js';
import { RANGE_BLOCKABLE, originOf } from '../../src/notifier/range.js';
import { Sanitizer } from '../../src/sanitizer/sanitizer.js';
import { DeviceClient } from '../../src/client/device-client.js';
import { wakeCount } from '../../src/lib/wakes.js';
import type {
  DeviceEvent,
  DeviceInit,
  DeviceKind,
  DeviceRequest,
  EventPolicy,
  ExclusiveReply,
  FaultInjection,
  FaultReply,
  GupReply,
  KernelMessage,
  MigrateReply,
  MirrorSummary,
} from '../../src/devices/protocol.js';
import {
  DevSub,
  invokeCall,
  invokeEnd,
  type CommandHandler,
  type DevRange,
  type DeviceHost,
  type FaultRequest,
  type IntervalHandler,
  type MmHandler,
  type VmaInfo,
} from './host.js';

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class WorkerHost implements DeviceHost {
  readonly deviceId: number;
  readonly pid: number;
  readonly kind: DeviceKind;
  readonly name: string;
  readonly policy: EventPolicy;
  readonly options: Record<string, unknown>;
  readonly sanitizer: Sanitizer;
  readonly counters: Record<string, number> = {};
  private readonly hot = new HotCounters();
  /** The mailbox loop's own counters (fixed shape: bumped per call and per access). */
  private readonly loopCounters = this.hot.add({ invalidations: 0, dma_bytes: 0, acks_first: 0 });
  readonly data: Uint8Array;
  readonly ramFrames: number;
  private readonly mb: Int32Array;
  private readonly kc: Int32Array;
  private readonly subs = new Map<number, DevSub>();
  /**
   * The subscription the last call or end named (a device usually has one): a compare instead of
   * a Map lookup on the way to the answer. Cleared when a subscription is removed; adding one
   * cannot make it stale (the kernel never reuses an id).
   */
  private lastSub: DevSub | undefined = undefined;
  /** curSeq of invalidations taken for a subscription whose insert reply has not arrived yet. */
  private readonly earlySeq = new Map<number, number>();
  private readonly pending = new Map<number, Pending>();
  private readonly commands = new Map<string, CommandHandler>();
  private nextReq = 1;
  private stopped = false;
  faults: FaultInjection = {};
  mirrorSummary: () => MirrorSummary = () => ({ pages: 0, writable: 0, devicePages: 0, objects: 0 });
  /**
   * Timer work that needs this thread's event loop on time. Periods (ms) of declared periodic work
   * (DMA ticks, restore delays) bound how long a park may block; `immediateWork` counts pending
   * sub-millisecond sleeps (setImmediate), during which the loop does not block at all.
   */
  private readonly timerPeriods: number[] = [];
  private immediateWork = 0;
  /** performance.now() deadlines of pending sleeps of a millisecond or more. */
  private readonly sleeps: number[] = [];
  private callTail = 0;
  private endTail = 0;
  /** Calls whose handler returned a promise that has not settled (it needs the event loop). */
  private asyncPending = 0;
  /** No injected fault delays or withholds answers (hang, ackDelayUs): calls may be answered first. */
  private plainAnswers = true;

  /** The notifier channel, when the kernel serves one (see insertInterval). */
  private readonly channelReady: Promise<DeviceClient> | null = null;
  private channelClient: DeviceClient | null = null;

  constructor(init: DeviceInit = workerData as DeviceInit) {
    this.deviceId = init.deviceId;
    this.pid = init.pid;
    this.kind = init.kind;
    this.name = init.name;
    this.policy = init.policy;
    this.callTail = this.endTail = (init.ringStart ?? 0) | 0;
    this.options = init.options ?? {};
    // Views of the kernel's lengths (the buffers are whole WebAssembly pages: src/lib/aligned-sab.ts).
    this.mb = new Int32Array(init.mailbox, 0, MB_WORDS);
    this.kc = new Int32Array(init.kc, 0, KC_WORDS);
    this.data = new Uint8Array(init.data);
    this.ramFrames = new Int32Array(init.meta)[HDR.RAM_FRAMES];
    this.sanitizer = new Sanitizer(init.meta, init.deviceId);
    this.sanitizer.onFinding = (finding) => this.emit({ t: 'finding', finding });
    parentPort?.on('message', (m: KernelMessage) => {
      // Everything the kernel posted to the mailbox before this message is taken first (a reply
      // or a command must never overtake the invalidations and ends that preceded it).
      this.pump();
      this.onMessage(m);
    });
    this.onCommand('inject', (args) => {
      this.faults = { ...this.faults, ...(args as FaultInjection) };
      const f = this.faults;
      this.plainAnswers = !f.hang && !(f.ackDelayUs !== undefined && f.ackDelayUs > 0);
      return true;
    });
    this.onCommand('stats', () => this.snapshot());
    if (init.channel) {
      const c = new DeviceClient({ url: init.channel.url, token: init.channel.token, name: init.name, kind: init.kind, capabilities: ['worker'] });
      this.channelClient = c;
      this.immediateWork++;
      this.channelReady = c.connect().then(
        () => {
          this.immediateWork--;
          return c;
        },
        (e: Error) => {
          this.immediateWork--;
          this.log('error', `cannot reach the notifier channel: ${e.message}`);
          throw e;
        },
      );
      this.channelReady.catch(() => undefined);
    }
  }

  private emit(m: DeviceEvent | DeviceRequest, transfer?: ArrayBuffer[]): void {
    parentPort?.postMessage(m, transfer as never);
  }

  private request<T>(m: DeviceRequest): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.set(m.req, { resolve: resolve as (v: unknown) => void, reject });
      this.emit(m);
    });
  }

  private req(): number {
    return this.nextReq++;
  }

  private onMessage(m: KernelMessage): void {
    if (m.t === 'reply') {
      const p = this.pending.get(m.req);
      if (!p) return;
      this.pending.delete(m.req);
      if (m.ok) p.resolve(m.value);
      else p.reject(Object.assign(new Error(m.error?.message ?? 'error'), { code: m.error?.code, details: m.error?.details }));
      return;
    }
    if (m.t === 'command') {
      if (m.name === 'crash') {
        // Fault injection: die mid-whatever, like a driver oops.
        process.exit(3);
      }
      void this.runCommand(m.req, m.name, m.args);
      return;
    }
    if (m.t === 'stop') {
      this.stopped = true;
      void this.channelClient?.close();
    }
  }

  private async runCommand(req: number, name: string, args: Record<string, unknown>): Promise<void> {
    const fn = this.commands.get(name);
    try {
      if (!fn) throw Object.assign(new Error(`unknown command ${name}`), { code: 'DM_ERR_VALIDATION' });
      const value = await fn(args);
      this.emit({ t: 'reply', req, ok: true, value });
    } catch (e) {
      const err = e as Error & { code?: string; details?: Record<string, unknown> };
      this.emit({ t: 'reply', req, ok: false, error: { code: err.code ?? 'DM_ERR_INTERNAL', message: err.message, details: err.details } });
    }
  }

  onCommand(name: string, fn: CommandHandler): void {
    this.commands.set(name, fn);
  }

  log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>): void {
    this.emit({ t: 'log', level, msg, data });
  }

  sleepUs(us: number): Promise<void> {
    if (us < 1000) {
      this.immediateWork++;
      return new Promise<void>((r) =>
        setImmediate(() => {
          this.immediateWork--;
          r();
        }),
      );
    }
    const at = performance.now() + us / 1000;
    this.sleeps.push(at);
    return new Promise<void>((r) =>
      setTimeout(() => {
        this.sleeps.splice(this.sleeps.indexOf(at), 1);
        r();
      }, us / 1000),
    );
  }

  holdTimers(on: boolean, periodMs: number): void {
    if (on) this.timerPeriods.push(periodMs);
    else {
      const i = this.timerPeriods.indexOf(periodMs);
      if (i >= 0) this.timerPeriods.splice(i, 1);
    }
  }

  /** How long a park may block: until the next timer that must fire on time, at most IDLE_BLOCK_MS. */
  private blockMs(): number {
    let ms = IDLE_BLOCK_MS;
    for (const p of this.timerPeriods) ms = Math.min(ms, p);
    if (this.sleeps.length > 0) {
      const now = performance.now();
      for (const at of this.sleeps) ms = Math.min(ms, Math.max(0, at - now));
    }
    return ms;
  }

  private sleepDue(): boolean {
    if (this.sleeps.length === 0) return false;
    const now = performance.now();
    for (const at of this.sleeps) if (at <= now) return true;
    return false;
  }

  hotCounters<T extends Record<string, number>>(init: T): T {
    return this.hot.add(init);
  }

  counterSnapshot(): Record<string, number> {
    return this.hot.merge(this.counters);
  }

  snapshot(): { counters: Record<string, number>; sanitizer: ReturnType<WorkerHost['sanitizerSnapshot']>; mirror: MirrorSummary } {
    return { counters: this.counterSnapshot(), sanitizer: this.sanitizerSnapshot(), mirror: this.mirrorSummary() };
  }

  private sanitizerSnapshot(): { checked: number; findings: number; refaults: number; refaultFaults: number; refaultCauses: Record<string, number>; byKind: Record<string, number>; recent: Sanitizer['findings'] } {
    const s = this.sanitizer.stats;
    return { checked: s.checked, findings: s.findings, refaults: s.refaults, refaultFaults: s.refaultFaults, refaultCauses: { ...s.refaultCauses }, byKind: { ...s.byKind }, recent: this.sanitizer.findings.slice(-20) };
  }

  private lastStats = '';
  /** Sends counters to the kernel when they changed (tens of idle workers would otherwise post
   * hundreds of identical messages a second to the kernel's thread). */
  private reportStats(): void {
    const snap = this.snapshot();
    const msg = { t: 'stats' as const, counters: snap.counters, sanitizer: snap.sanitizer, mirror: snap.mirror };
    const key = JSON.stringify(msg);
    if (key === this.lastStats) return;
    this.lastStats = key;
    this.emit(msg);
  }

  // ---- subscriptions and requests --------------------------------------------------------------

  // Subscriptions go through the notifier channel when the kernel serves one (DeviceInit.channel),
  // else by postMessage (a DeviceManager without a server: unit tests, benchmarks). Either way the
  // kernel's subscription objects post this device's calls and ends to its mailbox.

  /** Keeps the device loop turning (not parked) while a channel request is out: its reply is a
   * WebSocket frame, which only the event loop delivers and which rings no doorbell. */
  private async viaChannel<T>(fn: (c: DeviceClient) => Promise<T>): Promise<T> {
    this.immediateWork++;
    try {
      return await fn(await this.channelReady!);
    } finally {
      this.immediateWork--;
    }
  }

  async insertInterval(start: number, length: number, handler: IntervalHandler, label: string): Promise<DevSub> {
    const r = this.channelReady
      ? await this.viaChannel(async (c) => {
          const x = await c.subscribeInterval({ pid: this.pid, start, length, label });
          return { id: x.subscriptionId, seq: x.seq };
        })
      : await this.request<{ id: number; seq: number }>({ t: 'insert', req: this.req(), start, length, label });
    // An invalidation of the new subscription can reach this thread before the insert reply does
    // (the mailbox is taken as soon as it is rung; the reply waits for the event loop). The
    // kernel's copy of the seq moved then, so this copy starts from there, or every readRetry on
    // the subscription fails until its next invalidation (a fault spinning to its 1 s deadline).
    const early = this.earlySeq.get(r.id);
    if (early !== undefined) this.earlySeq.delete(r.id);
    const sub = new DevSub(r.id, start, length, handler, early ?? r.seq);
    this.subs.set(r.id, sub);
    return sub;
  }

  async removeInterval(sub: DevSub): Promise<void> {
    if (this.channelReady) await this.viaChannel((c) => c.unsubscribe(sub.id));
    else await this.request({ t: 'remove', req: this.req(), sub: sub.id });
    this.subs.delete(sub.id);
    this.lastSub = undefined;
  }

  async registerMm(handler: MmHandler, label: string): Promise<DevSub> {
    const id = this.channelReady
      ? await this.viaChannel(async (c) => (await c.subscribeMm({ pid: this.pid, label })).subscriptionId)
      : (await this.request<{ id: number; seq: number }>({ t: 'register', req: this.req(), label })).id;
    const sub = new DevSub(id, 0, 2 ** 64, handler, 0);
    this.subs.set(id, sub);
    return sub;
  }

  async unregisterMm(sub: DevSub): Promise<void> {
    return this.removeInterval(sub);
  }

  readBegin(sub: DevSub): Promise<number> {
    return this.request<number>({ t: 'readBegin', req: this.req(), sub: sub.id });
  }

  async rangeFault(sub: DevSub, seq: number, start: number, end: number, req: FaultRequest): Promise<FaultReply> {
    const r = await this.request<FaultReply>({
      t: 'fault',
      req: this.req(),
      sub: sub.id,
      seq,
      start,
      end,
      defaultFlags: req.defaultFlags,
      mask: req.mask,
      input: req.input ?? null,
      ownerSelf: req.ownerSelf,
    });
    if (r.ret === 0) this.sanitizer.grantRangeFault(this.pid, start, r.pfns, r.gens, r.tick);
    return r;
  }

  async gup(va: number, write: boolean): Promise<GupReply> {
    const r = await this.request<GupReply>({ t: 'gup', req: this.req(), va, write });
    if (r.ret === 0) this.sanitizer.grantGup(this.pid, va, r);
    return r;
  }

  vma(va: number): Promise<VmaInfo | null> {
    return this.request<VmaInfo | null>({ t: 'vma', req: this.req(), va });
  }

  async migrate(dir: 'to' | 'from', start: number, end: number, allocFails = false): Promise<MigrateReply> {
    const r = await this.request<MigrateReply>({ t: 'migrate', req: this.req(), dir, start, end, allocFails });
    if (dir === 'to') this.sanitizer.grantPages(this.pid, r.pages, r.tick);
    return r;
  }

  evictDeviceMemory(): Promise<number> {
    return this.request<number>({ t: 'evict', req: this.req() });
  }

  async exclusive(va: number): Promise<ExclusiveReply> {
    const r = await this.request<ExclusiveReply>({ t: 'exclusive', req: this.req(), va });
    if (r.ret === 0) this.sanitizer.grant(this.pid, va, r.pfn, r.gen, true, r.tick);
    return r;
  }

  access(va: number, pfn: number, write: boolean, buf: Uint8Array, bufOff: number, off: number, len: number): void {
    const base = pfn * PAGE_SIZE + off;
    if (write) this.data.set(buf.subarray(bufOff, bufOff + len), base);
    else buf.set(this.data.subarray(base, base + len), bufOff);
    this.loopCounters.dma_bytes += len;
    this.sanitizer.check(this.pid, va, pfn, write);
  }

  forget(va: number): void {
    this.sanitizer.forget(this.pid, va);
  }

  // ---- the mailbox loop --------------------------------------------------------------------------

  private readRange(base: number): DevRange {
    const mb = this.mb;
    // The caller loaded the slot's SEQ (Atomics), which the kernel stores last: every word below
    // was written before it. (The op, subscription and curSeq are read by the caller: no wrapper
    // object on the path to the answer.)
    const flags = mb[base + CS.FLAGS];
    const owner = mb[base + CS.OWNER];
    return {
      id: mb[base + CS.ID],
      pid: mb[base + CS.PID],
      start: joinAddr(mb[base + CS.START_LO], mb[base + CS.START_HI]),
      end: joinAddr(mb[base + CS.END_LO], mb[base + CS.END_HI]),
      event: mb[base + CS.EVENT],
      flags,
      owner: owner === -1 ? null : owner,
      blockable: (flags & RANGE_BLOCKABLE) !== 0,
      origin: mb[base + CS.ORIGIN],
      tick: mb[base + CS.TICK],
      kept: false,
    };
  }

  private answer(slot: number, ok: boolean): void {
    const base = MB_CALLS_OFFSET + slot * CALL_SLOT_WORDS;
    // Dekker pair 2, device half: store ANSWER, then load KERNEL_PARKED. The kernel stores
    // KERNEL_PARKED before it re-polls the answers, so either its re-poll sees this answer or this
    // load sees it parked. Only then is ACK_DOORBELL bumped: a spinning kernel polls the answer
    // words themselves, so the fast path is one store and one load, no read-modify-write on a line
    // every device shares (each such RMW waits for the line to cross cores).
    Atomics.store(this.mb, base + CS.ANSWER, ok ? ANSWER.OK : ANSWER.REFUSED);
    if (Atomics.load(this.kc, KC.KERNEL_PARKED) === 0) return;
    // Parked: the add moves the doorbell away from the value the kernel waits on (its waitAsync
    // then returns at once), and WAKE_AT, stored before the wait began, says whether this answer
    // is the earliest that can complete a parked set (then it notifies; wrap-safe compare).
    const v = Atomics.add(this.kc, KC.ACK_DOORBELL, 1) + 1;
    if (((v - Atomics.load(this.kc, KC.WAKE_AT)) | 0) >= 0) Atomics.notify(this.kc, KC.ACK_DOORBELL);
  }

  /**
   * Answers a call, then does the bookkeeping, in the same synchronous step: the answer first, so
   * the kernel's wait ends as early as it can (this thread makes no device access in between: its
   * DMA runs on its own event loop, later). Then the sanitizer's window for the invalidation opens
   * and, if acknowledged, revokes the grants computed before it. Opening it here rather than on
   * receipt changes nothing the sanitizer sees: only acknowledged and ended windows act on grants,
   * and both come after this point.
   */
  private finish(slot: number, op: number, sub: DevSub | undefined, subId: number, range: DevRange, ok: boolean, answered: boolean): void {
    if (!answered) this.answer(slot, ok);
    if (op !== CALL_OP.INVALIDATE && op !== CALL_OP.MM_START) return;
    this.openWindow(sub, subId, range);
    if (ok) this.sanitizer.acked(range.id, subId, range.kept);
  }

  private openWindow(sub: DevSub | undefined, subId: number, range: DevRange): void {
    this.sanitizer.started(range.id, subId, range.pid, range.start, range.end, range.event, range.flags, range.tick, sub, range.owner, originOf(range.origin));
    this.loopCounters.invalidations++;
  }

  private handleCall(slot: number): void {
    const base = MB_CALLS_OFFSET + slot * CALL_SLOT_WORDS;
    const mb = this.mb;
    const op = mb[base + CS.OP];
    const subId = mb[base + CS.SUB];
    const sub = this.subscription(subId);
    // Acknowledge first (see IntervalHandler.ackFirst): a blockable invalidation of a subscription
    // whose personality is idle now. Nothing this thread does between the answer and the handler
    // below touches device memory (the pump is synchronous; DMA runs on this thread's event loop,
    // later, and none is in flight), so the handler's zap, done after the answer, is done before
    // the device's next access, which is all the kernel's rule asks of a device: the kernel may
    // change the PTEs from the answer on, and no access can translate through the old mirror.
    // What the answer's early store saves is the handler's time on the kernel's critical path.
    const early =
      op === CALL_OP.INVALIDATE &&
      sub !== undefined &&
      (mb[base + CS.FLAGS] & RANGE_BLOCKABLE) !== 0 &&
      this.asyncPending === 0 &&
      this.plainAnswers &&
      (sub.handler as IntervalHandler).ackFirst?.(sub) === true;
    if (early) {
      this.answer(slot, true);
      this.loopCounters.acks_first++;
    }
    const curSeq = mb[base + CS.CUR_SEQ];
    const range = this.readRange(base);
    const f = this.faults;
    if (!sub && op === CALL_OP.INVALIDATE) {
      if (this.earlySeq.size > 1024) this.earlySeq.clear();
      this.earlySeq.set(subId, curSeq);
    }
    if (f.hang) {
      // Never answers: the kernel evicts us after its deadline.
      if (op === CALL_OP.INVALIDATE || op === CALL_OP.MM_START) this.openWindow(sub, subId, range);
      return;
    }
    const refuse = f.refuseNonblock === true && !range.blockable && (op === CALL_OP.INVALIDATE || op === CALL_OP.MM_START);
    // A refusing device refuses before doing anything (drivers return -EAGAIN before they take a
    // lock): the kernel sends no end for a refused start, so a handler that had run would keep
    // the range in progress for ever.
    const result = refuse ? false : invokeCall(sub, op, range, curSeq);
    if (result instanceof Promise) {
      // A personality that said it could take the call at once had to wait after all: its answer
      // is already out, so the kernel may be changing the PTEs while it waits. A contract breach,
      // counted (and seen by the sanitizer if an access follows).
      if (early) this.ackFirstBroken('its invalidate returned a promise');
      this.asyncPending++;
      const settle = (v: boolean | void): void => {
        this.asyncPending--;
        this.done(slot, op, sub, subId, range, refuse, v, early);
      };
      void result.then(settle, () => settle(true));
    } else this.done(slot, op, sub, subId, range, refuse, result, early);
  }

  /** A personality broke IntervalHandler.ackFirst's promise (counted, logged once). */
  private ackFirstBroken(why: string): void {
    const n = (this.counters.ack_first_broken = (this.counters.ack_first_broken ?? 0) + 1);
    if (n === 1) this.log('error', `ackFirst: ${why} after its answer was given`);
  }

  private done(slot: number, op: number, sub: DevSub | undefined, subId: number, range: DevRange, refuse: boolean, v: boolean | void, answered: boolean): void {
    const ok = refuse ? false : op === CALL_OP.RELEASE ? true : v !== false;
    if (answered) {
      if (!ok) this.ackFirstBroken('its blockable invalidate refused');
      this.finish(slot, op, sub, subId, range, true, true);
      return;
    }
    const delay = this.faults.ackDelayUs;
    if (delay && delay > 0) void this.sleepUs(delay).then(() => this.finish(slot, op, sub, subId, range, ok, false));
    else this.finish(slot, op, sub, subId, range, ok, false);
  }

  private handleEnd(slot: number): void {
    const base = MB_ENDS_OFFSET + slot * END_SLOT_WORDS;
    const mb = this.mb;
    // Read after the slot's SEQ (Atomics), which the kernel stores last.
    const id = mb[base + ES.ID];
    const flags = mb[base + ES.FLAGS];
    const range: DevRange = {
      id,
      pid: mb[base + ES.PID],
      start: joinAddr(mb[base + ES.START_LO], mb[base + ES.START_HI]),
      end: joinAddr(mb[base + ES.END_LO], mb[base + ES.END_HI]),
      event: mb[base + ES.EVENT],
      flags,
      owner: null,
      blockable: (flags & RANGE_BLOCKABLE) !== 0,
      origin: 0,
      tick: mb[base + ES.TICK],
      kept: false,
    };
    const subId = mb[base + ES.SUB];
    this.sanitizer.ended(id, subId, range.tick);
    invokeEnd(this.subscription(subId), range);
  }

  private subscription(id: number): DevSub | undefined {
    const last = this.lastSub;
    if (last !== undefined && last.id === id) return last;
    const sub = this.subs.get(id);
    if (sub !== undefined) this.lastSub = sub;
    return sub;
  }

  /** The next call is published (its slot's SEQ is its position + 1; int32, wrap-safe). */
  private callReady(): boolean {
    return Atomics.load(this.mb, callSeqWord(this.callTail)) === ((this.callTail + 1) | 0);
  }

  private endReady(): boolean {
    return Atomics.load(this.mb, endSeqWord(this.endTail)) === ((this.endTail + 1) | 0);
  }

  /**
   * Takes every end published so far, in order, then publishes END_TAIL if it took any. This
   * thread is its only writer, and the kernel reads it only when the end ring looks full, so it is
   * stored once per batch. Atomics (release): every end slot taken here was read before the kernel
   * may reuse it. (The call tail is not published: the slots' SEQ and ANSWER words tell the kernel
   * all it needs.)
   */
  private takeEnds(): void {
    const ends0 = this.endTail;
    while (this.endReady()) {
      this.handleEnd(this.endTail & (END_SLOTS - 1));
      this.endTail = (this.endTail + 1) | 0;
    }
    if (this.endTail !== ends0) Atomics.store(this.mb, MB.END_TAIL, this.endTail);
  }

  /**
   * Takes every posted call, then every posted end.
   *
   * Calls first: the kernel waits for a call's answer, never for an end, so an end taken before a
   * call it preceded is time on the kernel's critical path: the end's handling, and the load of
   * the next end slot's SEQ, a line this device may not hold. On the AMD host's slower state (a
   * bare round trip of 0.6 us) taking ends first cost the in-process round 0.24 us (0.92 against
   * 0.69 us, docs/benchmarks.md). Taking a call before an end the kernel published earlier is an
   * interleaving the kernel itself allows: an end is the kernel's promise that the PTEs of its
   * range are final, and a device that learns it later only keeps the range invalid a little
   * longer (KVM keeps faulting it back off; its tracked range stays the union). Nothing the device
   * does in between can see the difference: this runs synchronously, with no device access, and
   * the sanitizer orders windows by the kernel's clock ticks in the slots, not by the order they
   * are taken here. An end is never taken before the call it closes: the kernel publishes it only
   * after that call's answer, so the call was taken earlier.
   *
   * Calls first, but not calls only: while calls keep coming, the ends posted so far are taken
   * after every ENDS_EVERY_CALLS calls (after their answers, so off the kernel's wait). A device
   * that falls behind a fast kernel finds the next call already posted after each one; taking no
   * end until it caught up, it let its end ring fill, the kernel queued the rest on a 1 ms timer
   * (up to 18,000 in one bench pass) and the sanitizer's open windows grew with them, which made
   * each call slower still: the N = 1 round stayed at p50 10 us for a whole pass (11-29, with the
   * acknowledge-first path; without it, a p90 of 16 us in 1 of 26 passes). See pump.test.ts.
   */
  pump(): void {
    let nc = 0;
    while (this.callReady()) {
      nc++;
      this.handleCall(this.callTail & (CALL_SLOTS - 1));
      this.callTail = (this.callTail + 1) | 0;
      // END_TAIL goes out with them (takeEnds), so the kernel sees the room at once.
      if ((nc & (ENDS_EVERY_CALLS - 1)) === 0) this.takeEnds();
    }
    this.takeEnds();
  }

  /**
   * Anything to take: a call, an end, a message, or a ring since `seen` was read. Every load is an
   * Atomics load of a word the kernel stores last (SEQ) or bumps after its post (MESSAGES,
   * DOORBELL); before a park this is the device half of Dekker pair 1.
   */
  private hasWork(seen: number, messages: number): boolean {
    return this.callReady() || this.endReady() || Atomics.load(this.mb, MB.MESSAGES) !== messages || Atomics.load(this.mb, MB.DOORBELL) !== seen;
  }

  /**
   * The device's main loop: runs until the kernel stops the worker. `attach` (subscribing, the
   * initial mirror) runs once the loop answers the handshake; then the kernel hears 'ready'.
   *
   * Waiting, in order of cost:
   *   1. spin on the next call's and end's SEQ words and MESSAGES for MB.SPIN_US (the kernel sets
   *      0 when there are more busy threads than cores: a spinner then steals the core the answer
   *      needs);
   *   2. turn the event loop once (replies, commands, timers, promise continuations all run);
   *   3. park: Atomics.wait on DOORBELL (a futex: the cheapest wake there is), bounded by the
   *      next timer that must fire on time (a DMA tick, a simulated latency, a restore delay; at
   *      most IDLE_BLOCK_MS, so the stats timer runs too); the loop turns after every timeout.
   *      While a sub-millisecond sleep is pending it does not block at all.
   * The kernel rings DOORBELL for a parked device (calls, postMessages, a full end ring; ends alone
   * after END_RING_DELAY_MS), and a device re-checks every word after it stores PARKED, so a parked
   * device never sleeps through anything addressed to it (see WorkerDevice.ring).
   */
  async run(attach: () => Promise<void>): Promise<void> {
    // A pending waitAsync does not keep a worker alive: the stats timer does.
    const stats = setInterval(() => this.reportStats(), 200);
    void attach().then(
      () => this.emit({ t: 'ready' }),
      (e: Error) => {
        this.log('error', `attach failed: ${e.message}`);
        process.exit(4);
      },
    );
    const mb = this.mb;
    let messages = Atomics.load(mb, MB.MESSAGES);
    let busyTurns = 0;
    /** wakeCount() at the last microtask drain before a park. */
    let drainedWakes = -1;
    /** When the event loop last had a full turn (timers run only then). */
    let lastTurn = performance.now();
    const turn = (): Promise<void> => {
      lastTurn = performance.now();
      // Nobody waits on HEARTBEAT: it only counts turns, for hang detection from outside.
      Atomics.add(mb, MB.HEARTBEAT, 1);
      return immediate();
    };
    try {
      while (!this.stopped && Atomics.load(mb, MB.STATE) === 0) {
        // Read before pumping: a ring after this moves DOORBELL away from `seen`.
        const seen = Atomics.load(mb, MB.DOORBELL);
        this.pump();
        const m = Atomics.load(mb, MB.MESSAGES);
        if (m !== messages) {
          // A postMessage is waiting: let the event loop deliver it.
          messages = m;
          busyTurns = 0;
          await turn();
          continue;
        }
        if (++busyTurns >= 64) {
          // Pumped for a while without parking: give timers and continuations a turn now and then.
          busyTurns = 0;
          if (performance.now() - lastTurn >= BUSY_TURN_MS) {
            await turn();
            continue;
          }
        }
        // Spinning only helps if the answer does not wait on this thread's own event loop.
        if (this.asyncPending === 0 && this.spinOn(seen, messages)) continue;
        busyTurns = 0;
        // Before parking, let the promise continuations of what we just handled run (a few levels:
        // a task this loop's synchronous work woke, such as one waiting for the device lock that an
        // invalidation released), but only when something was woken since the last yield: a task
        // that is not woken has no continuation queued, and even one yield costs the devices that
        // share this core about 5 us each (src/lib/wakes.ts). A whole event-loop turn costs more,
        // so it is taken only when a call is still unanswered, on timer work, on messages, and
        // after every timed-out park (Node runs the microtasks after each of those callbacks).
        const woken = wakeCount();
        if (woken !== drainedWakes) {
          for (let i = 0; i < MICROTASK_DRAIN; i++) await null;
          drainedWakes = woken;
          // The continuations woke further tasks: take another round before parking.
          if (wakeCount() !== woken) continue;
        }
        if (this.asyncPending > 0) await turn();
        if (this.hasWork(seen, messages)) continue;
        if (this.immediateWork > 0) {
          // A sub-millisecond sleep is pending: keep the loop turning instead of blocking.
          await turn();
          continue;
        }
        // A device kept busy by doorbells never times out its park: turn the event loop anyway
        // once its shortest timer period has passed, or its DMA ticks and stats would starve.
        const block = this.blockMs();
        if (performance.now() - lastTurn >= block) {
          await turn();
          continue;
        }
        Atomics.add(mb, MB.HEARTBEAT, 1);
        if (this.faults.parkRaceUs) busyWaitUs(this.faults.parkRaceUs);
        // Dekker pair 1, device half (diagram at WorkerDevice.ring): PARKED is stored before the
        // re-check of every word the kernel publishes; the kernel stores those before it loads
        // PARKED. Either this re-check sees the new word, or the kernel saw PARKED and moves
        // DOORBELL away from `seen` (the wait returns at once, or its notify wakes us).
        Atomics.store(mb, MB.PARKED, 1);
        if (this.hasWork(seen, messages)) {
          Atomics.store(mb, MB.PARKED, 0);
          continue;
        }
        const r = Atomics.wait(mb, MB.DOORBELL, seen, block);
        Atomics.store(mb, MB.PARKED, 0);
        // A call or a message that was there when the park timed out came without its ring: a
        // lost wake-up (ends alone are rung late on purpose, so they do not count).
        if (r === 'timed-out' && (this.callReady() || Atomics.load(mb, MB.MESSAGES) !== messages)) {
          this.counters.late_wakes = (this.counters.late_wakes ?? 0) + 1;
        }
        // A timer is due (or nothing came for a while): let the event loop run it.
        if (r === 'timed-out' || this.sleepDue()) {
          await turn();
        }
      }
    } finally {
      clearInterval(stats);
    }
  }

  /**
   * Spins until a call or an end is published, a message is posted or DOORBELL leaves `seen`, or
   * MB.SPIN_US passes; true if something came. The next call's SEQ is polled first: it sits in
   * the slot line the kernel writes, so the call arrives with one line transfer and is read from
   * the line just fetched. Ends are taken as soon as they come, while the kernel still finishes
   * its round, instead of on the next call's path.
   */
  private spinOn(seen: number, messages: number): boolean {
    const mb = this.mb;
    const us = Atomics.load(mb, MB.SPIN_US);
    if (us <= 0) return this.hasWork(seen, messages);
    const callWord = callSeqWord(this.callTail);
    const callSeq = (this.callTail + 1) | 0;
    const endWord = endSeqWord(this.endTail);
    const endSeq = (this.endTail + 1) | 0;
    // The clock is read once per 128 polls (a load is a few nanoseconds, a clock read about 40),
    // and not before the first 128: in a busy round the next end or call comes within them, and
    // this runs twice per round.
    //
    // The call's SEQ is polled on every turn, the rest on every eighth: only a call is on the
    // kernel's critical path. The end slot's line in particular is the one the kernel writes right
    // after its next call (WorkerDevice.pendingRange), so a load of it then misses and waits for
    // the line, while the call may already be there. Kernel-ab (N = 1, 11-29, two runs of six
    // passes): 0.221 to 0.231 and 0.220 to 0.271 us against 0.230 to 0.250 and 0.250 to 0.290 us
    // polling all four words on every turn (10 to 15 ns on the means).
    let until = -1;
    for (;;) {
      for (let i = 0; i < 128; i++) {
        // Acquire loads of words the kernel stores last (SEQ) or bumps (MESSAGES, DOORBELL).
        if (Atomics.load(mb, callWord) === callSeq) return true;
        if ((i & 7) === 7 && (Atomics.load(mb, endWord) === endSeq || Atomics.load(mb, MB.MESSAGES) !== messages || Atomics.load(mb, MB.DOORBELL) !== seen)) {
          return true;
        }
      }
      const t = performance.now();
      if (until < 0) until = t + us / 1000;
      else if (t >= until) return false;
    }
  }
}

/**
 * Longest a parked device blocks before its event loop turns. Every timer a device relies on is
 * declared (holdTimers, sleepUs) and bounds the block itself; this bound is for the 200 ms stats
 * timer only. Each timed-out park is a wake of an idle thread: with 64 workers on 2 cores, 10 ms
 * cost a measurable share of the cores.
 */
const IDLE_BLOCK_MS = 100;
/** A device that keeps finding work turns its event loop after this many ms (checked every 64 pumps). */
const BUSY_TURN_MS = 0.25;
/**
 * While calls keep coming, the pump also takes the posted ends after every this many calls (a
 * power of two; well under END_SLOTS / 2, where the kernel starts ringing for room).
 */
const ENDS_EVERY_CALLS = 8;
/** Microtask checkpoints before parking (continuations this many promises deep run at once). */
const MICROTASK_DRAIN = 4;
const immediate = (): Promise<void> => new Promise((r) => setImmediate(r));


export { CALL_SLOTS, END_SLOTS };
