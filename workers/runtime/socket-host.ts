/**
 * DeviceHost over the notifier channel: the same personality code (gpu, rdma, kvm, dmirror) that
 * runs in a worker thread runs in another process, talking to the kernel through a DeviceClient.
 *
 * Differences from the worker transport, and why they keep the semantics:
 * - invalidations arrive as frames and are answered with InvalidateAck frames (the personality's
 *   handler is the same; the answer is sent when it returns or resolves);
 * - memory is not shared: every device access is a Dma request that the kernel performs and the
 *   server-side sanitizer checks (the personality awaits it while the access is in flight);
 * - pfns, generations and ticks stay on the server: the shadow of this mirror is kept there, from
 *   the replies the server sent and the acknowledgements it received.
 */
import { DevmirrorError } from '../../src/errors.js';
import { CALL_OP, PAGE_SIZE } from '../../src/kernel/layout.js';
import type { DeviceClient, InvalidateStartEvent } from '../../src/client/device-client.js';
import type { DeviceKind, EventPolicy, ExclusiveReply, FaultInjection, FaultReply, GupReply, MigrateReply, MirrorSummary } from '../../src/devices/protocol.js';
import { HotCounters } from './hot-counters.js';
import { DevSub, invokeCall, invokeEnd, type CommandHandler, type DevRange, type DeviceHost, type FaultRequest, type IntervalHandler, type MmHandler, type VmaInfo } from './host.js';

export interface SocketHostOptions {
  pid: number;
  kind: DeviceKind;
  name: string;
  policy: EventPolicy;
  options: Record<string, unknown>;
  log?: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>) => void;
}

const YOUNG_OPS = [0, CALL_OP.CLEAR_FLUSH_YOUNG, CALL_OP.CLEAR_YOUNG, CALL_OP.TEST_YOUNG];

export class SocketHost implements DeviceHost {
  readonly pid: number;
  readonly kind: DeviceKind;
  readonly name: string;
  readonly policy: EventPolicy;
  readonly options: Record<string, unknown>;
  readonly counters: Record<string, number> = {};
  private readonly hot = new HotCounters();
  /** Bumped per call and per access: fixed shape (see HotCounters). */
  private readonly loopCounters = this.hot.add({ invalidations: 0, dma_bytes: 0 });
  readonly subs = new Map<number, DevSub>();
  faults: FaultInjection = {};
  mirrorSummary: () => MirrorSummary = () => ({ pages: 0, writable: 0, devicePages: 0, objects: 0 });
  /** Findings the server reported on this device's accesses (a correct device sees none). */
  findings = 0;
  private readonly commands = new Map<string, CommandHandler>();
  private readonly logFn: NonNullable<SocketHostOptions['log']>;

  /** Set when this attachment ended (the connection dropped): see live(). */
  private detached = false;

  /**
   * The client, for a request of this attachment. After a reconnection the connection belongs to
   * the next attachment: a request of the old personality (a DMA access that was faulting, a
   * deferred prefetch) must not go out on it with translations from the old session, which the
   * server would rightly call wrong-pfn. It fails here instead, as a request on a closed file would.
   */
  private live(): DeviceClient {
    if (this.detached) throw new DevmirrorError('DM_ERR_CONFLICT', `${this.name}: this attachment ended (the connection was dropped)`);
    return this.client;
  }

  /** Ends this attachment: every later request of this host fails, and it handles no more calls. */
  detach(): void {
    this.detached = true;
    this.dmaStop?.();
  }

  /** Set by the runner: stops the personality's DMA engine on detach. */
  dmaStop: (() => void) | null = null;

  constructor(
    readonly client: DeviceClient,
    o: SocketHostOptions,
  ) {
    this.pid = o.pid;
    this.kind = o.kind;
    this.name = o.name;
    this.policy = o.policy;
    this.options = o.options;
    this.logFn = o.log ?? (() => undefined);
    client.onInvalidateStart((e) => this.onStart(e));
    client.onInvalidateEnd((e) =>
      invokeEnd(this.subs.get(e.subscriptionId), { ...e, id: e.invalidationId, blockable: (e.flags & 1) !== 0, origin: 0, tick: 0, kept: false }),
    );
    client.onRelease(async (subId) => {
      await invokeCall(this.subs.get(subId), CALL_OP.RELEASE, this.blank(), 0);
    });
    client.onYoung(async (q) => {
      const r = await invokeCall(this.subs.get(q.subscriptionId), YOUNG_OPS[q.op] ?? CALL_OP.TEST_YOUNG, { ...this.blank(), start: q.start, end: q.end }, 0);
      return r === true;
    });
    this.onCommand('inject', (args) => {
      this.faults = { ...this.faults, ...(args as FaultInjection) };
      return true;
    });
    this.onCommand('stats', () => ({ counters: this.counterSnapshot(), mirror: this.mirrorSummary() }));
  }

  get deviceId(): number {
    return this.client.clientId;
  }

  get ramFrames(): number {
    return this.client.welcome?.ramFrames ?? 0;
  }

  private blank(): DevRange {
    return { id: 0, pid: this.pid, start: 0, end: 2 ** 64, event: -1, flags: 0, owner: null, blockable: true, origin: 0, tick: 0, kept: false };
  }

  private onStart(e: InvalidateStartEvent): boolean | Promise<boolean> {
    const sub = this.subs.get(e.subscriptionId);
    const range: DevRange = { ...e, id: e.invalidationId, origin: 0, tick: 0, kept: false };
    this.loopCounters.invalidations++;
    const f = this.faults;
    if (f.hang) return new Promise<boolean>(() => undefined);
    const op = sub && 'invalidate' in sub.handler ? CALL_OP.INVALIDATE : CALL_OP.MM_START;
    const refuse = f.refuseNonblock === true && !e.blockable;
    const finish = (v: boolean | void): boolean | Promise<boolean> => {
      const ok = refuse ? false : v !== false;
      // The personality downgraded instead of dropping: the acknowledgement says so.
      if (range.kept) e.keptReads = true;
      if (f.ackDelayUs && f.ackDelayUs > 0) return this.sleepUs(f.ackDelayUs).then(() => ok);
      return ok;
    };
    // Refuse before doing anything: no end follows a refused start (see worker-host.ts).
    const r = refuse ? false : invokeCall(sub, op, range, e.curSeq);
    return r instanceof Promise ? r.then(finish, () => finish(true)) : finish(r);
  }

  // ---- DeviceHost ------------------------------------------------------------------------------

  async insertInterval(start: number, length: number, handler: IntervalHandler, label: string): Promise<DevSub> {
    const r = await this.live().subscribeInterval({ pid: this.pid, start, length, label });
    const sub = new DevSub(r.subscriptionId, start, length, handler, r.seq);
    this.subs.set(r.subscriptionId, sub);
    return sub;
  }

  async removeInterval(sub: DevSub): Promise<void> {
    await this.client.unsubscribe(sub.id).catch(() => undefined);
    this.subs.delete(sub.id);
  }

  async registerMm(handler: MmHandler, label: string): Promise<DevSub> {
    const r = await this.live().subscribeMm({ pid: this.pid, wantsYoung: true, label });
    const sub = new DevSub(r.subscriptionId, 0, 2 ** 64, handler, 0);
    this.subs.set(r.subscriptionId, sub);
    return sub;
  }

  unregisterMm(sub: DevSub): Promise<void> {
    return this.removeInterval(sub);
  }

  readBegin(sub: DevSub): Promise<number> {
    return this.live().readBegin(sub.id);
  }

  async rangeFault(sub: DevSub, seq: number, start: number, end: number, req: FaultRequest): Promise<FaultReply> {
    const r = await this.live().rangeFault(sub.id, seq, start, end, { defaultFlags: req.defaultFlags, mask: req.mask, input: req.input ?? undefined, ownerSelf: req.ownerSelf });
    return { ret: r.error, pfns: r.pfns, gens: new Int32Array(r.pfns.length), tick: 0 };
  }

  async gup(va: number, write: boolean): Promise<GupReply> {
    const g = await this.live().gup(this.pid, va, write);
    return {
      ret: g.error,
      pfn: g.pfn,
      gen: 0,
      tick: 0,
      write: g.writable,
      huge: g.huge,
      ...(g.huge && g.hugePfns.length ? { headVa: g.headAddr, hugePfns: Int32Array.from(g.hugePfns), hugeGens: new Int32Array(g.hugePfns.length) } : {}),
    };
  }

  vma(va: number): Promise<VmaInfo | null> {
    return this.live().vma(this.pid, va);
  }

  async migrate(dir: 'to' | 'from', start: number, end: number, allocFails = false): Promise<MigrateReply> {
    const m = await this.live().migrate(this.pid, dir, start, end, allocFails);
    return { ret: m.error, collected: m.collected, moved: m.moved, pages: m.pages.map((p) => [p.addr, p.pfn, 0, p.writable]), tick: 0 };
  }

  async exclusive(va: number): Promise<ExclusiveReply> {
    const r = await this.live().exclusive(this.pid, va);
    return { ret: r.error, pfn: r.pfn, gen: 0, tick: 0 };
  }

  evictDeviceMemory(): Promise<number> {
    return this.live().evictDeviceMemory();
  }

  async access(va: number, pfn: number, write: boolean, buf: Uint8Array, bufOff: number, off: number, len: number): Promise<void> {
    const addr = va - (va % PAGE_SIZE) + off;
    if (write) {
      const r = await this.live().dmaWrite(this.pid, addr, pfn, buf.slice(bufOff, bufOff + len));
      if (r.finding) this.findings++;
    } else {
      const r = await this.live().dmaRead(this.pid, addr, pfn, len);
      if (r.finding) this.findings++;
      buf.set(r.data.subarray(0, len), bufOff);
    }
    this.loopCounters.dma_bytes += len;
  }

  forget(): void {
    // The server's shadow keeps the grant until an invalidation revokes it (conservative).
  }

  /** While set, commands from the server wait for it (see holdCommands). */
  private commandGate: Promise<void> | null = null;
  private openCommandGate: ((e?: Error) => void) | null = null;

  /**
   * Commands that arrive from now on wait until `attached()`. After a reconnection the server may
   * send a command (a DMA access) as soon as the new session is welcomed, while the new personality
   * is still attaching (its subscription, its mirror): run-device holds commands for that time.
   */
  holdCommands(): void {
    this.commandGate = new Promise<void>((resolve, reject) => {
      this.openCommandGate = (e) => (e ? reject(e) : resolve());
    });
    this.commandGate.catch(() => undefined);
  }

  /** The personality attached (or failed to: held and later commands fail with that error). */
  attached(err?: Error): void {
    this.openCommandGate?.(err);
    this.openCommandGate = null;
    if (!err) this.commandGate = null;
  }

  hotCounters<T extends Record<string, number>>(init: T): T {
    return this.hot.add(init);
  }

  counterSnapshot(): Record<string, number> {
    return this.hot.merge(this.counters);
  }

  onCommand(name: string, fn: CommandHandler): void {
    this.commands.set(name, fn);
    this.client.onCommand(name, async (args) => {
      if (this.commandGate) await this.commandGate;
      return fn(args);
    });
  }

  /** Runs a command locally (the CLI and tests drive the personality through this). */
  async command(name: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const fn = this.commands.get(name);
    if (!fn) throw new DevmirrorError('DM_ERR_VALIDATION', `unknown command ${name}`);
    return fn(args);
  }

  log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>): void {
    this.logFn(level, msg, data);
  }

  sleepUs(us: number): Promise<void> {
    return new Promise((r) => (us < 1000 ? setImmediate(r) : setTimeout(r, us / 1000)));
  }

  holdTimers(): void {
    // A normal event loop: timers run on their own.
  }

  /** Sends the counters and mirror summary to the server (dashboard, /metrics). */
  reportStats(): void {
    const m = this.mirrorSummary();
    this.client.sendStats(this.counterSnapshot(), { pages: m.pages, writable: m.writable, objects: m.objects });
  }
}
