/**
 * DeviceClient: the TypeScript SDK for external device clients of the notifier channel.
 *
 *   const c = new DeviceClient({ url: 'ws://127.0.0.1:8080/v1/notifier/ws', token: 's3cret', kind: 'gpu' });
 *   c.onInvalidateStart(async (inv) => { await stopUsing(inv.start, inv.end); return true; });
 *   await c.connect();
 *   const sub = await c.subscribeInterval({ pid: 42, start: addr, length: 2 << 20 });
 *   const seq = await c.readBegin(sub.subscriptionId);
 *   const { error, pfns } = await c.rangeFault(sub.subscriptionId, seq, addr, addr + 4096, { defaultFlags: HMM_PFN_REQ_FAULT });
 *
 * Handlers answer the kernel: the value (or promise) an invalidate-start handler returns is sent as
 * the acknowledgement (true = stopped using the range, false = refused, only for non-blockable
 * ranges); with no handler the client acknowledges at once. Requests resolve with the server's
 * reply or reject with a DevmirrorError carrying the server's code.
 *
 * With `reconnect` on, a dropped connection is retried with exponential backoff (100 ms doubling to
 * 5 s, with jitter). The server drops a client's subscriptions when its connection ends, so after
 * every reconnection the client emits 'reconnected' ({ bootChanged }) and the application must
 * subscribe and fault again (a new boot id also means every pfn it held is meaningless).
 */
import { commandJson, parseCommandJson } from '../channel/command-json.js';
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { DevmirrorError } from '../errors.js';
import {
  AckResult,
  MigrateDirection,
  PROTOCOL_VERSION,
  SubscriptionKind,
  decodeServerFrame,
  decodeStartFields,
  encodeAckFields,
  encodeClientFrame,
  WIRE_ULONG_MAX,
  type ClientFrameIn,
  type ServerFrame,
  type U64,
  type Welcome,
} from '../channel/codec.js';
import { CLOSE } from '../channel/close-codes.js';

export interface DeviceClientOptions {
  /** ws://HOST:PORT/v1/notifier/ws */
  url: string;
  token?: string;
  /** Shown in logs and the dashboard. */
  name?: string;
  /** Personality, for display (gpu, rdma, kvm, dmirror, ...). */
  kind?: string;
  capabilities?: string[];
  /** Reconnect after a dropped connection (default false). */
  reconnect?: boolean | { minMs?: number; maxMs?: number };
  /** Per-request timeout, ms (default 30 s). */
  requestTimeoutMs?: number;
  /**
   * Makes the connection instead of dialling `url` (the interleaving explorer's in-memory pipe,
   * whose frames a scheduler delivers). It must behave as a `ws` client socket: 'open', 'message',
   * 'close' events, send/close/terminate, readyState.
   */
  socket?: () => WebSocket;
}

export interface InvalidateStartEvent {
  invalidationId: number;
  subscriptionId: number;
  pid: number;
  start: number;
  /** 2^64 for a whole address space (ULONG_MAX). */
  end: number;
  event: number;
  flags: number;
  blockable: boolean;
  owner: number | null;
  curSeq: number;
  origin: string;
  /**
   * Set it (before the handler returns or resolves) when the device downgraded its mappings in the
   * range instead of dropping them: the acknowledgement then carries `kept_reads`, and the server
   * counts no refault when such a page is granted again for reading.
   */
  keptReads?: boolean;
}

export type InvalidateEndEvent = Omit<InvalidateStartEvent, 'blockable' | 'curSeq' | 'origin' | 'keptReads'>;

export interface YoungQueryEvent {
  subscriptionId: number;
  pid: number;
  /** 1 clear_flush_young, 2 clear_young, 3 test_young. */
  op: number;
  start: number;
  end: number;
}

const ULONG_MAX_NUM = 2 ** 64;
const addr = (v: U64): number => (typeof v === 'bigint' ? (v === WIRE_ULONG_MAX ? ULONG_MAX_NUM : Number(v)) : v);
const wireAddr = (a: number): U64 => (a >= ULONG_MAX_NUM ? WIRE_ULONG_MAX : a);
const n = (v: U64): number => Number(v);

/** A Command frame from the server. */
type CommandFrame = Extract<ServerFrame, { body: 'command' }>;
/** What onStart reads of an InvalidateStart: the whole frame's message or the in-place reader's fields. */
type StartFrame = Pick<Extract<ServerFrame, { body: 'invalidateStart' }>['invalidateStart'], 'invalidationId' | 'subscriptionId' | 'pid' | 'start' | 'end' | 'event' | 'flags' | 'blockable' | 'curSeq'>;
type Pending = { resolve: (f: ServerFrame) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export class DeviceClient extends EventEmitter {
  welcome: Welcome | null = null;
  private ws: WebSocket | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private startHandler: ((e: InvalidateStartEvent) => boolean | Promise<boolean>) | null = null;
  private endHandler: ((e: InvalidateEndEvent) => void) | null = null;
  private releaseHandler: ((subscriptionId: number, pid: number) => void | Promise<void>) | null = null;
  private youngHandler: ((q: YoungQueryEvent) => boolean | Promise<boolean>) | null = null;
  private readonly commandHandlers = new Map<string, (args: Record<string, unknown>) => unknown>();
  /** While set, incoming commands wait for it before their handler is looked up (see holdCommands). */
  private commandHold: Promise<unknown> | null = null;
  private closedByUser = false;
  /** The upgrade was refused with 401: not retried. */
  private tokenRefused = false;
  private attempt = 0;
  private lastBootId: U64 | null = null;
  /** Whether the last Welcome carried a different boot id than the one before. */
  bootChanged = false;

  constructor(readonly opts: DeviceClientOptions) {
    super();
  }

  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN && this.welcome !== null;
  }

  get clientId(): number {
    return this.welcome?.clientId ?? 0;
  }

  onInvalidateStart(h: (e: InvalidateStartEvent) => boolean | Promise<boolean>): this {
    this.startHandler = h;
    return this;
  }
  onInvalidateEnd(h: (e: InvalidateEndEvent) => void): this {
    this.endHandler = h;
    return this;
  }
  onRelease(h: (subscriptionId: number, pid: number) => void | Promise<void>): this {
    this.releaseHandler = h;
    return this;
  }
  onYoung(h: (q: YoungQueryEvent) => boolean | Promise<boolean>): this {
    this.youngHandler = h;
    return this;
  }
  onCommand(name: string, h: (args: Record<string, unknown>) => unknown): this {
    this.commandHandlers.set(name, h);
    return this;
  }

  /**
   * Holds incoming commands until `until` settles, then runs them in arrival order. A client is
   * listed on the server as soon as its Welcome is sent, before the code behind it has registered
   * its command handlers (a personality being built, after the first connection or a
   * reconnection): a command arriving in that gap would otherwise be answered 'unknown command'.
   * A later call replaces the hold; commands held by the earlier one still wait for theirs.
   */
  holdCommands(until: Promise<unknown>): void {
    const hold: Promise<unknown> = until.then(
      () => undefined,
      () => undefined,
    );
    this.commandHold = hold;
    void hold.then(() => {
      if (this.commandHold === hold) this.commandHold = null;
    });
  }

  // ---- connection ------------------------------------------------------------------------------

  /** Connects and completes Hello/Welcome. */
  connect(): Promise<Welcome> {
    this.closedByUser = false;
    this.tokenRefused = false;
    return new Promise<Welcome>((resolve, reject) => {
      const headers = this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : undefined;
      const ws = this.opts.socket ? this.opts.socket() : new WebSocket(this.opts.url, { headers, perMessageDeflate: false });
      ws.binaryType = 'nodebuffer';
      this.ws = ws;
      let welcomed = false;
      ws.on('open', () => {
        this.sendFrame({
          requestId: 0,
          hello: {
            protocolVersions: [PROTOCOL_VERSION],
            token: this.opts.token ?? '',
            clientName: this.opts.name ?? '',
            deviceKind: this.opts.kind ?? '',
            capabilities: this.opts.capabilities ?? [],
          },
        });
      });
      ws.on('message', (data: Buffer) => {
        // The round's start (one per round and subscription) is read in place, without the frame
        // object: a client process on the kernel's CPU runs this between the kernel's write and its
        // read. Anything else, and any start the in-place reader declines, is decoded whole.
        const s = decodeStartFields(data);
        if (s !== null) return this.onStart(s, s.owner, s.operation);
        let f: ServerFrame;
        try {
          f = decodeServerFrame(data);
        } catch (e) {
          this.emit('error', e);
          ws.close(CLOSE.INVALID_PAYLOAD, 'malformed server frame');
          return;
        }
        if (f.body === 'welcome') {
          welcomed = true;
          this.welcome = f.welcome;
          this.attempt = 0;
          const bootChanged = this.lastBootId !== null && this.lastBootId !== f.welcome.bootId;
          this.bootChanged = bootChanged;
          this.lastBootId = f.welcome.bootId;
          resolve(f.welcome);
          this.emit('welcome', f.welcome, { bootChanged });
          return;
        }
        this.onFrame(f);
      });
      ws.on('unexpected-response', (_req, res) => {
        const status = res.statusCode ?? 0;
        const code = status === 401 ? 'DM_ERR_UNAUTHORIZED' : status === 503 ? 'DM_ERR_CHANNEL_LIMIT' : 'DM_ERR_CONFLICT';
        const err = new DevmirrorError(code, `upgrade refused: HTTP ${status}`);
        if (!welcomed) reject(err);
        // A refused token is refused again; a limit (503: too many connections, the server shutting
        // down) may pass later, so with `reconnect` the client tries again with backoff.
        if (status === 401) {
          this.tokenRefused = true;
          this.emit('fatal', err);
        }
        // Ends the attempt: 'close' follows (1006), and with it the reconnection.
        ws.terminate();
      });
      ws.on('error', (e) => {
        if (!welcomed) reject(e);
      });
      ws.on('close', (code, reason) => {
        this.welcome = null;
        const why = reason.toString();
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.reject(new DevmirrorError('DM_ERR_CONFLICT', `disconnected (${code}${why ? `: ${why}` : ''})`));
        }
        this.pending.clear();
        if (!welcomed) reject(new DevmirrorError(code === CLOSE.UNAUTHORIZED ? 'DM_ERR_UNAUTHORIZED' : 'DM_ERR_CONFLICT', `closed before Welcome (${code}${why ? `: ${why}` : ''})`));
        this.emit('close', code, why);
        if (this.ws === ws) this.ws = null;
        this.maybeReconnect(code);
      });
    });
  }

  private maybeReconnect(code: number): void {
    const r = this.opts.reconnect;
    if (!r || this.closedByUser || this.tokenRefused) return;
    if (code === CLOSE.UNAUTHORIZED || code === CLOSE.VERSION) {
      this.emit('fatal', new DevmirrorError('DM_ERR_UNAUTHORIZED', `not reconnecting after close code ${code}`));
      return;
    }
    const min = typeof r === 'object' ? (r.minMs ?? 100) : 100;
    const max = typeof r === 'object' ? (r.maxMs ?? 5000) : 5000;
    const delay = Math.min(max, min * 2 ** this.attempt++) * (0.75 + Math.random() * 0.5);
    setTimeout(() => {
      if (this.closedByUser) return;
      // Commands of the new session wait until the 'reconnected' listeners have run (they
      // rebuild what answers commands, and hold commands themselves while they do).
      let release!: () => void;
      this.holdCommands(new Promise<void>((r) => (release = r)));
      this.connect().then(
        (w) => {
          try {
            this.emit('reconnected', { bootChanged: this.bootChanged, welcome: w });
          } finally {
            release();
          }
        },
        () => release(), // the close handler schedules the next attempt
      );
    }, delay); // ref'd on purpose: a reconnecting client keeps its process alive
  }

  /** Closes the connection for good (no reconnection). */
  close(): Promise<void> {
    this.closedByUser = true;
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(CLOSE.NORMAL, 'bye');
      setTimeout(() => ws.terminate(), 1000).unref();
    });
  }

  // ---- frames ----------------------------------------------------------------------------------

  /** An InvalidateAck (nothing once disconnected: the server has dropped the subscription's acks). */
  private sendAck(invalidationId: number, subscriptionId: number, ok: boolean, keptReads: boolean): void {
    if (!this.connected) return;
    const result = ok ? AckResult.OK : AckResult.WOULD_BLOCK;
    // From the fields (one frame per round); ids out of the common range take the frame object.
    // kept_reads only when set (an unset bool is not sent: the frame stays as short as before).
    const hot = encodeAckFields(invalidationId, subscriptionId, result, keptReads);
    if (hot !== null) return this.ws!.send(hot);
    const body = { invalidationId, subscriptionId, result };
    this.sendFrame({ invalidateAck: keptReads ? { ...body, keptReads: true } : body });
  }

  private sendFrame(f: ClientFrameIn): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new DevmirrorError('DM_ERR_CONFLICT', 'not connected');
    ws.send(encodeClientFrame(f));
  }

  private request(body: Omit<ClientFrameIn, 'requestId'>): Promise<ServerFrame> {
    const id = this.nextId++;
    return new Promise<ServerFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new DevmirrorError('ETIME', `no reply to request ${id} within ${this.opts.requestTimeoutMs ?? 30_000} ms`));
      }, this.opts.requestTimeoutMs ?? 30_000);
      timer.unref();
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.sendFrame({ requestId: id, ...body });
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e);
      }
    });
  }

  /** Runs a Command frame now, or once the current hold settles (and then any hold after it). */
  private dispatchCommand(f: CommandFrame): void {
    const hold = this.commandHold;
    if (hold) void hold.then(() => this.dispatchCommand(f));
    else this.runCommand(f);
  }

  /** Answers one Command frame with its handler (a frame of this connection only). */
  private runCommand(f: CommandFrame): void {
    const c = f.command;
    const id = f.requestId;
    const h = this.commandHandlers.get(c.name);
    // A command held across a reconnection is answered on neither connection: the server that
    // sent it dropped it with the old session.
    const ws = this.ws;
    const answer = (ok: boolean, value: unknown, e?: { code?: string; message?: string }): void => {
      if (!this.connected || this.ws !== ws) return;
      this.sendFrame({
        requestId: id,
        commandReply: ok ? { ok: true, valueJson: commandJson(value) } : { ok: false, errorCode: e?.code ?? 'DM_ERR_VALIDATION', errorMessage: e?.message ?? '' },
      });
    };
    if (!h) return answer(false, null, { code: 'DM_ERR_VALIDATION', message: `unknown command ${c.name}` });
    let args: Record<string, unknown> = {};
    try {
      args = c.argsJson ? (parseCommandJson(c.argsJson) as Record<string, unknown>) : {};
    } catch {
      return answer(false, null, { code: 'DM_ERR_VALIDATION', message: 'arguments are not JSON' });
    }
    void Promise.resolve()
      .then(() => h(args))
      .then((v) => answer(true, v), (e: Error & { code?: string }) => answer(false, null, e));
  }

  /**
   * An InvalidateStart, from the in-place reader or the whole frame (`s` is read here, before
   * anything else runs: the in-place reader's object is overwritten by the next frame).
   */
  private onStart(s: StartFrame, owner: number | null, origin: string): void {
    // No handler: acknowledged at once, from the frame's ids (no event object, no closure).
    const h = this.startHandler;
    if (!h) return this.sendAck(n(s.invalidationId), n(s.subscriptionId), true, false);
    const e: InvalidateStartEvent = {
      invalidationId: n(s.invalidationId),
      subscriptionId: n(s.subscriptionId),
      pid: s.pid,
      start: addr(s.start),
      end: addr(s.end),
      event: s.event,
      flags: s.flags,
      blockable: s.blockable,
      owner,
      curSeq: n(s.curSeq),
      origin,
    };
    const ack = (ok: boolean): void => this.sendAck(e.invalidationId, e.subscriptionId, ok, ok && e.keptReads === true);
    let r: boolean | Promise<boolean>;
    try {
      r = h(e);
    } catch (err) {
      this.emit('error', err);
      return ack(true);
    }
    if (r instanceof Promise) void r.then((ok) => ack(ok !== false), (err) => (this.emit('error', err), ack(true)));
    else ack(r !== false);
  }

  private onFrame(f: ServerFrame): void {
    switch (f.body) {
      case 'invalidateStart': {
        const s = f.invalidateStart;
        return this.onStart(s, s.owner ?? null, s.origin?.operation ?? '');
      }
      case 'invalidateEnd': {
        const s = f.invalidateEnd;
        this.endHandler?.({ invalidationId: n(s.invalidationId), subscriptionId: n(s.subscriptionId), pid: s.pid, start: addr(s.start), end: addr(s.end), event: s.event, flags: s.flags, owner: s.owner ?? null });
        return;
      }
      case 'release': {
        const r = f.release;
        const done = (): void => {
          if (this.connected) this.sendFrame({ invalidateAck: { invalidationId: r.invalidationId, subscriptionId: r.subscriptionId, result: AckResult.OK } });
        };
        void Promise.resolve(this.releaseHandler?.(n(r.subscriptionId), r.pid)).then(done, done);
        return;
      }
      case 'youngQuery': {
        const q = f.youngQuery;
        const reply = (young: boolean): void => {
          if (this.connected) this.sendFrame({ youngReply: { queryId: q.queryId, young } });
        };
        const h = this.youngHandler;
        const v = h ? h({ subscriptionId: n(q.subscriptionId), pid: q.pid, op: q.op, start: addr(q.start), end: addr(q.end) }) : false;
        void Promise.resolve(v).then((y) => reply(!!y), () => reply(false));
        return;
      }
      case 'command': {
        return this.dispatchCommand(f);
      }
      default: {
        const id = n(f.requestId);
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        clearTimeout(p.timer);
        if (f.body === 'error') p.reject(new DevmirrorError(f.error.code as never, f.error.message));
        else p.resolve(f);
      }
    }
  }

  // ---- requests --------------------------------------------------------------------------------

  private async expect<B extends ServerFrame['body']>(body: Omit<ClientFrameIn, 'requestId'>, want: B): Promise<Extract<ServerFrame, { body: B }>> {
    const f = await this.request(body);
    if (f.body !== want) throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `expected ${want}, got ${f.body}`);
    return f as Extract<ServerFrame, { body: B }>;
  }

  /** An interval subscription over [start, start + length) of a process (pid, or name). */
  /**
   * An interval subscription. `noEnd`: the server sends no InvalidateEnd for it (the kernel's
   * interval notifiers have no end callback; the sequence protocol tells when an invalidation
   * ended), so onInvalidateEnd is not called for this subscription. For a client that does nothing
   * at the end: one frame less per invalidation. The result's `noEnd` says whether the server
   * honours it (a server older than no_end ignores the request and sends every end).
   */
  async subscribeInterval(a: { pid?: number; process?: string; start: number; length: number; label?: string; noEnd?: boolean }): Promise<{ subscriptionId: number; pid: number; seq: number; noEnd: boolean }> {
    const f = await this.expect(
      { subscribe: { kind: SubscriptionKind.INTERVAL, pid: a.pid ?? 0, process: a.process ?? '', start: a.start, length: a.length, label: a.label ?? '', ...(a.noEnd ? { noEnd: true } : {}) } },
      'subscribed',
    );
    return { subscriptionId: n(f.subscribed.subscriptionId), pid: f.subscribed.pid, seq: n(f.subscribed.seq), noEnd: f.subscribed.noEnd === true };
  }

  /** A whole-mm subscription (with the young queries if asked). */
  async subscribeMm(a: { pid?: number; process?: string; wantsYoung?: boolean; label?: string }): Promise<{ subscriptionId: number; pid: number }> {
    const f = await this.expect({ subscribe: { kind: SubscriptionKind.MM, pid: a.pid ?? 0, process: a.process ?? '', wantsYoung: a.wantsYoung ?? false, label: a.label ?? '' } }, 'subscribed');
    return { subscriptionId: n(f.subscribed.subscriptionId), pid: f.subscribed.pid };
  }

  async unsubscribe(subscriptionId: number): Promise<void> {
    await this.expect({ unsubscribe: { subscriptionId } }, 'unsubscribed');
  }

  /** mmu_interval_read_begin: resolves when no invalidation is running on the subscription. */
  async readBegin(subscriptionId: number): Promise<number> {
    return n((await this.expect({ readBegin: { subscriptionId } }, 'readBeginReply')).readBeginReply.seq);
  }

  /** hmm_range_fault: error 0 or a negative errno (-16 EBUSY: readBegin again). */
  async rangeFault(
    subscriptionId: number,
    seq: number,
    start: number,
    end: number,
    o: { defaultFlags?: number; mask?: number; input?: ArrayLike<number>; ownerSelf?: boolean } = {},
  ): Promise<{ error: number; pfns: Uint32Array }> {
    const f = await this.expect(
      {
        rangeFault: {
          subscriptionId,
          notifierSeq: seq,
          start,
          end,
          defaultFlags: o.defaultFlags ?? 0,
          pfnFlagsMask: o.mask ?? 0,
          input: o.input ? Array.from(o.input) : [],
          ownerSelf: o.ownerSelf ?? false,
        },
      },
      'rangeFaultReply',
    );
    return { error: f.rangeFaultReply.error, pfns: Uint32Array.from(f.rangeFaultReply.pfns) };
  }

  async gup(pid: number, address: number, write: boolean) {
    const g = (await this.expect({ gup: { pid, addr: address, write } }, 'gupReply')).gupReply;
    return { error: g.error, pfn: g.pfn, writable: g.writable, huge: g.huge, headAddr: n(g.headAddr), hugePfns: g.hugePfns };
  }

  async vma(pid: number, address: number) {
    const v = (await this.expect({ vma: { pid, addr: address } }, 'vmaReply')).vmaReply;
    return v.found ? { start: n(v.start), end: n(v.end), prot: v.prot, shared: v.shared, file: v.file } : null;
  }

  async migrate(pid: number, dir: 'to' | 'from', start: number, end: number, allocFails = false) {
    const m = (await this.expect({ migrate: { pid, direction: dir === 'to' ? MigrateDirection.TO_DEVICE : MigrateDirection.TO_SYSTEM, start, end, allocFails } }, 'migrateReply')).migrateReply;
    return { error: m.error, collected: m.collected, moved: m.moved, pages: (m.pages ?? []).map((p) => ({ addr: n(p.addr), pfn: p.pfn, writable: p.writable })) };
  }

  async exclusive(pid: number, address: number) {
    const e = (await this.expect({ exclusive: { pid, addr: address } }, 'exclusiveReply')).exclusiveReply;
    return { error: e.error, pfn: e.pfn };
  }

  async evictDeviceMemory(): Promise<number> {
    return (await this.expect({ evictDeviceMemory: {} }, 'evictDeviceMemoryReply')).evictDeviceMemoryReply.pages;
  }

  /** Device DMA read through the mirror's translation (va -> pfn); within one page. */
  async dmaRead(pid: number, address: number, pfn: number, length: number): Promise<{ data: Uint8Array; finding: string }> {
    const r = (await this.expect({ dma: { pid, addr: address, pfn, write: false, length } }, 'dmaReply')).dmaReply;
    return { data: r.data, finding: r.finding };
  }

  async dmaWrite(pid: number, address: number, pfn: number, data: Uint8Array): Promise<{ finding: string }> {
    const r = (await this.expect({ dma: { pid, addr: address, pfn, write: true, data } }, 'dmaReply')).dmaReply;
    return { finding: r.finding };
  }

  /** One-way statistics for the dashboard and /metrics. */
  sendStats(counters: Record<string, number>, mirror: { pages: number; writable: number; objects: number }): void {
    if (!this.connected) return;
    const c: Record<string, number> = {};
    for (const [k, v] of Object.entries(counters)) if (Number.isFinite(v) && v >= 0) c[k] = Math.floor(v);
    this.sendFrame({ stats: { counters: c, mappedPages: mirror.pages, writablePages: mirror.writable, objects: mirror.objects } });
  }

  /** Sends raw bytes (tests of the server's handling of bad input). */
  sendRaw(data: Uint8Array | string): void {
    this.ws?.send(data);
  }
}

export { wireAddr };
