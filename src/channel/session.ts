/**
 * One WebSocket connection of the notifier channel: authentication, limits, decoding, and the
 * dispatch of each ClientFrame to the client's ExternalDevice and the kernel.
 *
 * Every frame of a connection is handled in arrival order, synchronously up to its first await, so
 * acknowledgements and DMA accesses reach the kernel in the order the client sent them. Requests
 * that wait (readBegin, range faults, migrations) are answered when done, tagged with the client's
 * request id; they count against the pending-request limit meanwhile.
 *
 * Failure handling: malformed bytes close the connection with 1007, text frames with 1003, protocol
 * violations with 4000; refused requests (a process the token does not grant, a limit) get an Error
 * frame and the connection stays up. When a connection ends for any reason, the client's
 * outstanding acknowledgements count as answered only after the socket is closed (it can no longer
 * touch memory) and its subscriptions are removed as on unregister.
 */
import process from 'node:process';
import { commandJson, parseCommandJson } from './command-json.js';
import type { WebSocket } from 'ws';
import { DevmirrorError, ERRORS, type ErrorCode } from '../errors.js';
import type { Kernel, Process } from '../kernel/kernel.js';
import { PAGE_SIZE, ULONG_MAX } from '../kernel/layout.js';
import { MmuIntervalNotifier } from '../notifier/subscriptions.js';
import {
  PROTOCOL_VERSION,
  SubscriptionKind,
  MigrateDirection,
  addrFromWire,
  addrToWire,
  decodeAckFields,
  decodeClientFrame,
  encodeEndFields,
  encodeServerFrame,
  encodeStartFields,
  type ClientFrame,
  type ServerFrameIn,
  type U64,
} from './codec.js';
import { CLOSE } from './close-codes.js';
import { ERRNO } from '../kernel/hmm.js';
import { ExternalDevice, type ExternalPort } from './external-device.js';
import type { NotifierRange } from '../notifier/range.js';
import type { SocketAckGroup } from './socket-ack.js';
import { TokenTable, type Grant } from './tokens.js';

export interface ChannelLimits {
  /** Largest frame accepted, bytes (the WebSocket maxPayload). */
  maxPayload: number;
  maxSubscriptions: number;
  /** Requests in flight per client. */
  maxPending: number;
  /** Frames per second a client may send (token bucket, burst = one second's worth). */
  ratePerSec: number;
  heartbeatMs: number;
  helloTimeoutMs: number;
  /** Bytes queued to a client before it counts as a slow consumer and is disconnected. */
  maxBufferedBytes: number;
  /** Unanswered invalidation older than this evicts the client. */
  deadlineMs: number;
  /** Open connections (external clients and bound workers, authenticated or not); more are refused
   * at the upgrade with HTTP 503 DM_ERR_CHANNEL_LIMIT. */
  maxConnections: number;
  /** Connections whose token is not checked yet (none at the upgrade, no Hello yet); more are
   * refused at the upgrade with HTTP 503. A client that presents its token at the upgrade is
   * checked there and does not count, so a flood of silent sockets cannot lock it out. */
  maxUnauthenticated: number;
  /** Open connections per token (counted from the upgrade when the token comes with it, else from
   * the Hello): more are refused at the upgrade with HTTP 503, or closed at the Hello with 4429, so
   * that one token's clients cannot take every connection. */
  maxConnectionsPerToken: number;
  /** Disconnected or evicted external devices kept for listing (the most recent ones). */
  keepClosedDevices: number;
}

export const DEFAULT_LIMITS: ChannelLimits = {
  maxPayload: 1024 * 1024,
  maxSubscriptions: 1024,
  maxPending: 256,
  ratePerSec: 100_000,
  heartbeatMs: 5000,
  helloTimeoutMs: 5000,
  maxBufferedBytes: 16 * 1024 * 1024,
  deadlineMs: 1000,
  maxConnections: 4096,
  maxUnauthenticated: 256,
  maxConnectionsPerToken: 2048,
  keepClosedDevices: 256,
};

/** A device worker's side of the kernel, for a worker that subscribes through the channel. */
export interface WorkerBinding {
  readonly id: number;
  readonly pid: number;
  readonly name: string;
  channelSubscribe(kind: 'interval' | 'mm', start: number, length: number, label: string): { id: number; seq: number };
  channelUnsubscribe(id: number): Promise<void>;
}

export interface SessionHost {
  /** Open connections that use this (non-worker) token, this one excluded. */
  connectionsOf(token: string, except: Session): number;
  /** The worker a `worker:<id>:<secret>` token belongs to. */
  bindWorker(token: string): WorkerBinding | null;
  readonly kernel: Kernel;
  readonly tokens: TokenTable;
  readonly limits: ChannelLimits;
  readonly group: SocketAckGroup;
  allocateId(): number;
  attached(dev: ExternalDevice, s: Session): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>): void;
}

type Log = SessionHost['log'];

/** Ids and counts: must fit in 2^53. */
const num = (v: U64): number => {
  if (typeof v === 'bigint') throw new DevmirrorError('DM_ERR_VALIDATION', `value ${v} is out of range`);
  return v;
};
/**
 * Addresses and lengths: ULONG_MAX (2^64 - 1) is the kernel's ULONG_MAX; other values above 2^53
 * (bounds such as "the whole address space" minus a page) are rounded to the nearest double, which
 * is exact for page multiples; the emulated user address space ends at 2^47 anyway.
 */
const addrOf = (v: U64): number => (typeof v === 'bigint' ? addrFromWire(v, ULONG_MAX) : v);

/**
 * Sessions corked in this turn (see Session.cork). The list is swapped out before it is walked: a
 * session that corks while it is walked (a write that fails synchronously and sends a close) goes
 * to the other list and queues its own tick. Two lists that take turns, emptied by pop: a fresh
 * array every turn (and its backing store, grown at the first push) was garbage on every round.
 */
let toUncork: Session[] = [];
let spareUncork: Session[] = [];
function uncorkAll(): void {
  const list = toUncork;
  toUncork = spareUncork;
  spareUncork = list;
  for (let i = 0; i < list.length; i++) list[i].uncork();
  while (list.length > 0) list.pop(); // `length = 0` is a runtime call, pop is inlined
}

export class Session implements ExternalPort {
  state: 'hello' | 'open' | 'closed' = 'hello';
  device: ExternalDevice | null = null;
  /** Set when this connection is a device worker's (its handshake stays on the mailbox). */
  worker: WorkerBinding | null = null;
  grant: Grant | null = null;
  clientName = '';
  /** The upgrade request carried a token and it was checked there. */
  readonly checkedAtUpgrade: boolean;

  /** The token this connection uses (counted against maxConnectionsPerToken); worker tokens are not. */
  get token(): string | null {
    if (this.grant) return this.grant.token;
    if (this.worker || !this.checkedAtUpgrade || this.headerToken!.startsWith('worker:')) return null;
    return this.headerToken;
  }
  private pending = 0;
  private tokens: number;
  private lastRefill = Date.now();
  private alive = true;
  private heartbeat: NodeJS.Timeout | null = null;
  private helloTimer: NodeJS.Timeout | null;
  private readonly commands = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout | null }>();
  private nextCommand = 1;
  private log: Log;
  /** Logs of this connection go to the external device's child logger once it is known. */
  setLog(log: Log): void {
    this.log = log;
  }

  constructor(
    private readonly ws: WebSocket,
    private readonly host: SessionHost,
    /** The token from the upgrade request (Authorization: Bearer, or ?token=), if any. */
    private readonly headerToken: string | null,
    readonly remote: string,
  ) {
    this.log = host.log;
    this.checkedAtUpgrade = headerToken !== null && headerToken !== '';
    this.tokens = host.limits.ratePerSec;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on('close', (code, reason) => void this.onClose(code, reason.toString()));
    ws.on('error', (e) => this.log('debug', 'channel socket error', { remote, err: e.message }));
    ws.on('pong', () => (this.alive = true));
    this.helloTimer = setTimeout(() => this.close(CLOSE.HELLO_TIMEOUT, 'no Hello in time'), host.limits.helloTimeoutMs);
    this.helloTimer.unref();
  }

  // ---- sending ---------------------------------------------------------------------------------

  private send(f: ServerFrameIn): void {
    if (this.state === 'closed') return;
    this.sendBytes(encodeServerFrame(f));
  }

  private sendBytes(frame: Uint8Array): void {
    if (!this.mayQueue()) return;
    this.cork();
    this.ws.send(frame);
  }

  /** False when the frame must not be sent: the connection is closed, or closed now as too slow. */
  private mayQueue(): boolean {
    if (this.state === 'closed') return false;
    // Backpressure: a client that does not read would make the kernel buffer without bound. Its
    // invalidations cannot be dropped (the kernel waits for them), so it is disconnected instead.
    if (this.ws.bufferedAmount > this.host.limits.maxBufferedBytes) {
      this.close(CLOSE.SLOW_CONSUMER, `send queue above ${this.host.limits.maxBufferedBytes} bytes`);
      return false;
    }
    return true;
  }

  /**
   * An InvalidateStart: held in the corked socket until the ack group's next spin, which waitAcks
   * calls once every subscriber of the invalidation has been called (SocketAckGroup.holdStarts).
   * A socket already corked for this turn (an End before it) keeps that cork: the start leaves
   * with the End at the end of the turn, in one write, as before.
   */
  private sendStart(frame: Uint8Array): void {
    if (!this.mayQueue()) return;
    if (this.corkSocket()) this.host.group.holdStarts(this);
    this.ws.send(frame);
  }

  private corked: { uncork(): void } | null = null;
  /**
   * Frames produced in one turn of the event loop leave in one write: the socket is corked at the
   * first frame and uncorked after the current microtasks (process.nextTick runs after them). A
   * small socket write costs tens of microseconds here, so an invalidation's end and the next
   * start, or the replies to a batch of requests, share one. (A start that finds the socket
   * uncorked is held only until the kernel has called every subscriber: see sendStart.) Every session corked in a turn is uncorked by one
   * tick callback (uncorkAll): a round that reaches a thousand clients queues one tick, not a
   * thousand closures.
   */
  private cork(): void {
    if (this.corkSocket() && toUncork.push(this) === 1) process.nextTick(uncorkAll);
  }

  /** Corks the socket unless this session already has; true when it corked it now. */
  private corkSocket(): boolean {
    if (this.corked !== null) return false;
    const sock = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (!sock) return false;
    this.corked = sock;
    sock.cork();
    return true;
  }

  /** @internal called by uncorkAll and by the ack group (HeldSocket) only: what is held leaves now. */
  uncork(): void {
    const sock = this.corked;
    this.corked = null;
    sock?.uncork();
  }

  private error(requestId: U64, e: unknown): void {
    const err = e instanceof DevmirrorError ? e : new DevmirrorError('DM_ERR_INTERNAL', (e as Error)?.message ?? String(e));
    this.send({ requestId, error: { code: err.code, message: err.message } });
  }

  close(code: number, reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    try {
      this.ws.close(code, reason.slice(0, 120));
    } catch {
      this.ws.terminate();
    }
    // A peer that does not complete the closing handshake is cut off.
    setTimeout(() => this.ws.terminate(), 1000).unref();
    void this.teardown(code === CLOSE.DEADLINE ? 'evicted' : 'closed', reason);
  }

  // ExternalPort: frames to the client.
  invalidateStart(subscriptionId: number, pid: number, r: NotifierRange, curSeq: number): void {
    // From the fields (one frame per client and round); addresses at or above 2^53 (a range to
    // ULONG_MAX) and anything else out of the common case take the frame object below.
    const hot = encodeStartFields(r.id, subscriptionId, pid, r.start, r.end, r.event, r.flags, r.owner, curSeq, r.origin);
    if (hot !== null) return this.sendStart(hot);
    this.sendStart(encodeServerFrame({
      invalidateStart: {
        invalidationId: r.id,
        subscriptionId,
        pid,
        start: addrToWire(r.start),
        end: addrToWire(r.end),
        event: r.event,
        flags: r.flags,
        blockable: (r.flags & 1) !== 0,
        owner: r.owner,
        curSeq,
        origin: { operation: r.origin },
      },
    }));
  }

  invalidateEnd(subscriptionId: number, pid: number, r: NotifierRange): void {
    const hot = encodeEndFields(r.id, subscriptionId, pid, r.start, r.end, r.event, r.flags, r.owner);
    if (hot !== null) return this.sendBytes(hot);
    this.send({ invalidateEnd: { invalidationId: r.id, subscriptionId, pid, start: addrToWire(r.start), end: addrToWire(r.end), event: r.event, flags: r.flags, owner: r.owner } });
  }

  release(m: Parameters<ExternalPort['release']>[0]): void {
    this.send({ release: m });
  }

  youngQuery(m: Parameters<ExternalPort['youngQuery']>[0]): void {
    this.send({ youngQuery: { ...m, start: addrToWire(m.start), end: addrToWire(m.end) } });
  }

  command(name: string, args: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
    if (this.state !== 'open') return Promise.reject(new DevmirrorError('DM_ERR_CONFLICT', 'the client is not connected'));
    const id = this.nextCommand++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = timeoutMs > 0 ? setTimeout(() => {
        this.commands.delete(id);
        reject(new DevmirrorError('ETIME', `command ${name} got no reply within ${timeoutMs} ms`));
      }, timeoutMs) : null;
      timer?.unref();
      this.commands.set(id, { resolve, reject, timer });
      this.send({ requestId: id, command: { name, argsJson: commandJson(args) } });
    });
  }

  // ---- receiving -------------------------------------------------------------------------------

  /**
   * A token bucket of ratePerSec tokens, refilled lazily: the clock is read only when the tokens
   * run out, not on every frame (Date.now() was about 0.1 us of the external round, 11-29). The
   * refill then adds everything since the last one, capped at the bucket. So a client that spends
   * its tokens slowly and then fast may pass one bucket more than with a refill on every frame: at
   * most ratePerSec * (2 + T) frames in any window of T seconds, instead of ratePerSec * (1 + T);
   * a sustained rate above ratePerSec is still cut off.
   */
  private rateOk(): boolean {
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    const now = Date.now();
    const rate = this.host.limits.ratePerSec;
    this.tokens = Math.min(rate, this.tokens + ((now - this.lastRefill) * rate) / 1000);
    this.lastRefill = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.state === 'closed') return;
    if (!isBinary) return this.close(CLOSE.UNSUPPORTED_DATA, 'text frames are not part of the protocol');
    if (!this.rateOk()) return this.close(CLOSE.RATE_LIMIT, `more than ${this.host.limits.ratePerSec} frames per second`);
    // The round's acknowledgement is read in place and handed to the device, without the frame
    // object and the dispatch below (one per client and round); anything else, and any ack the fast
    // reader declines, takes the general path, which decides what is malformed.
    if (this.device !== null && this.worker === null && this.state === 'open') {
      const a = decodeAckFields(data);
      if (a !== null) {
        const requestId = a.requestId;
        try {
          // A late, duplicate or foreign acknowledgement throws DM_ERR_CHANNEL_PROTOCOL.
          this.device.onAck(a.invalidationId, a.subscriptionId, a.result === 0, a.keptReads);
        } catch (e) {
          this.failed(requestId, e);
        }
        return;
      }
    }
    let f: ClientFrame;
    try {
      f = decodeClientFrame(data);
    } catch (e) {
      return this.close(CLOSE.INVALID_PAYLOAD, (e as Error).message);
    }
    try {
      this.dispatch(f);
    } catch (e) {
      this.failed(f.requestId, e);
    }
  }

  /** A frame's handling threw: a protocol violation closes the connection, anything else is answered with an Error frame. */
  private failed(requestId: U64, e: unknown): void {
    const err = e as DevmirrorError;
    if (err.code === 'DM_ERR_CHANNEL_PROTOCOL') return this.close(CLOSE.PROTOCOL, err.message);
    this.error(requestId, e);
  }

  private dispatch(f: ClientFrame): void {
    if (this.state === 'hello') {
      if (f.body !== 'hello') throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `the first frame must be a Hello, not ${f.body}`);
      return this.hello(f.requestId, f.hello);
    }
    if (this.worker) {
      if (f.body === 'hello') throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', 'a second Hello');
      return this.workerRequest(f);
    }
    const dev = this.device!;
    switch (f.body) {
      case 'hello':
        throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', 'a second Hello');
      case 'invalidateAck':
        // A late, duplicate or foreign acknowledgement throws DM_ERR_CHANNEL_PROTOCOL.
        return dev.onAck(num(f.invalidateAck.invalidationId), num(f.invalidateAck.subscriptionId), f.invalidateAck.result === 0, f.invalidateAck.keptReads === true);
      case 'youngReply':
        return dev.onYoungReply(num(f.youngReply.queryId), f.youngReply.young);
      case 'stats': {
        const c: Record<string, number> = {};
        for (const [k, v] of Object.entries(f.stats.counters ?? {})) c[k] = Number(v);
        dev.counters = c;
        dev.mirror = { pages: Number(f.stats.mappedPages), writable: Number(f.stats.writablePages), devicePages: 0, objects: Number(f.stats.objects) };
        return;
      }
      case 'commandReply': {
        const w = this.commands.get(num(f.requestId));
        if (!w) throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `command reply ${f.requestId} answers no command`);
        this.commands.delete(num(f.requestId));
        if (w.timer) clearTimeout(w.timer);
        const r = f.commandReply;
        // The waiter is settled whatever the reply holds (a code outside the catalogue, a value that
        // is not JSON): throwing first left the control-plane request waiting forever.
        if (!r.ok) {
          const known = Object.hasOwn(ERRORS, r.errorCode);
          const message = known || !r.errorCode ? r.errorMessage : `the device failed with code ${JSON.stringify(r.errorCode.slice(0, 64))}: ${r.errorMessage}`;
          w.reject(new DevmirrorError(known ? (r.errorCode as ErrorCode) : 'DM_ERR_INTERNAL', message));
          return;
        }
        let value: unknown;
        try {
          value = r.valueJson ? parseCommandJson(r.valueJson) : null;
        } catch (e) {
          const err = new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `command reply ${f.requestId}: value_json is not JSON (${(e as Error).message})`);
          w.reject(err);
          throw err;
        }
        w.resolve(value);
        return;
      }
      default:
        return this.request(f);
    }
  }

  private hello(requestId: U64, h: Extract<ClientFrame, { body: 'hello' }>['hello']): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    if (!h.protocolVersions.includes(PROTOCOL_VERSION)) {
      return this.close(CLOSE.VERSION, `no common protocol version (server speaks ${PROTOCOL_VERSION})`);
    }
    const token = h.token || this.headerToken || '';
    if (token.startsWith('worker:')) return this.helloWorker(requestId, token);
    const grant = this.host.tokens.check(token);
    if (!grant) return this.close(CLOSE.UNAUTHORIZED, 'missing or unknown token');
    const max = this.host.limits.maxConnectionsPerToken;
    if (this.host.connectionsOf(grant.token, this) >= max) return this.close(CLOSE.RATE_LIMIT, `more than ${max} connections with this token`);
    this.grant = grant;
    // Names end up in logs, the dashboard and (the kind) metric labels: bounded here.
    this.clientName = (h.clientName || `client@${this.remote}`).slice(0, 64);
    const kind = /^[A-Za-z0-9._-]{1,32}$/.test(h.deviceKind) ? h.deviceKind : 'external';
    const id = this.host.allocateId();
    const lim = this.host.limits;
    this.device = new ExternalDevice(this.host.kernel, this.host.group, id, this.clientName, kind, lim.deadlineMs, this);
    // The device belongs to its token: the control plane shows it to that token (docs/control-plane.md).
    this.device.grant = grant;
    this.state = 'open';
    this.host.attached(this.device, this);
    const pids = [...this.host.kernel.processes.values()].filter((p) => TokenTable.allows(grant, p)).map((p) => p.pid);
    this.send({
      requestId,
      welcome: {
        protocolVersion: PROTOCOL_VERSION,
        bootId: this.host.kernel.bootId,
        clientId: id,
        capabilities: ['young', 'dma', 'commands', 'migrate', 'exclusive'].filter((c) => h.capabilities.length === 0 || h.capabilities.includes(c)),
        maxFrameBytes: lim.maxPayload,
        maxSubscriptions: lim.maxSubscriptions,
        maxPendingRequests: lim.maxPending,
        heartbeatMs: lim.heartbeatMs,
        ackDeadlineMs: lim.deadlineMs,
        pageSize: PAGE_SIZE,
        pids,
        ramFrames: this.host.kernel.mem.ramFrames,
      },
    });
    this.heartbeat = setInterval(() => {
      if (!this.alive) return this.close(CLOSE.HEARTBEAT, 'no pong for two heartbeats');
      this.alive = false;
      try {
        this.ws.ping();
      } catch {
        /* closed meanwhile */
      }
    }, lim.heartbeatMs);
    this.heartbeat.unref();
    this.log('info', 'external device connected', { device: this.clientName, deviceId: id, kind: this.device.kind, remote: this.remote });
  }

  /**
   * A device worker of this kernel: it subscribes through the channel; its invalidations, answers
   * and ends stay on its shared-memory mailbox (the binding's subscriptions post there).
   */
  private helloWorker(requestId: U64, token: string): void {
    const w = this.host.bindWorker(token);
    if (!w) return this.close(CLOSE.UNAUTHORIZED, 'unknown worker token');
    this.worker = w;
    this.clientName = w.name;
    this.state = 'open';
    const lim = this.host.limits;
    this.send({
      requestId,
      welcome: {
        protocolVersion: PROTOCOL_VERSION,
        bootId: this.host.kernel.bootId,
        clientId: w.id,
        capabilities: ['worker'],
        maxFrameBytes: lim.maxPayload,
        maxSubscriptions: lim.maxSubscriptions,
        maxPendingRequests: lim.maxPending,
        heartbeatMs: lim.heartbeatMs,
        ackDeadlineMs: lim.deadlineMs,
        pageSize: PAGE_SIZE,
        pids: [w.pid],
        ramFrames: this.host.kernel.mem.ramFrames,
      },
    });
    this.log('debug', 'device worker bound to the channel', { device: w.name, deviceId: w.id });
  }

  /** Requests of a device worker: subscriptions only (everything else travels by postMessage). */
  private workerRequest(f: ClientFrame): void {
    const w = this.worker!;
    if (f.body === 'subscribe') {
      const s = f.subscribe;
      if ((s.pid || w.pid) !== w.pid) throw new DevmirrorError('DM_ERR_FORBIDDEN', `a worker subscribes only to its own process ${w.pid}`);
      const kind = s.kind === SubscriptionKind.INTERVAL ? 'interval' : s.kind === SubscriptionKind.MM ? 'mm' : null;
      if (!kind) throw new DevmirrorError('DM_ERR_VALIDATION', 'subscription kind must be MM or INTERVAL');
      const r = w.channelSubscribe(kind, addrOf(s.start), addrOf(s.length), s.label);
      return this.send({ requestId: f.requestId, subscribed: { subscriptionId: r.id, pid: w.pid, seq: r.seq } });
    }
    if (f.body === 'unsubscribe') {
      const id = num(f.unsubscribe.subscriptionId);
      const rid = f.requestId;
      w.channelUnsubscribe(id).then(
        () => this.send({ requestId: rid, unsubscribed: { subscriptionId: id } }),
        (e) => this.error(rid, e),
      );
      return;
    }
    throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `a device worker does not send ${f.body} on the channel`);
  }

  /** A process this client may act on, by pid or name. */
  private proc(pid: number, name = ''): Process {
    const p = this.host.kernel.findProcess(pid > 0 ? pid : name);
    if (!p || !TokenTable.allows(this.grant!, p)) {
      // The same answer whether the process does not exist or is not granted: no probing.
      throw new DevmirrorError('DM_ERR_FORBIDDEN', `process ${pid > 0 ? pid : JSON.stringify(name)} is not granted to this token`);
    }
    return p;
  }

  /** A process this client subscribed to (DMA and kernel services need a subscription to revoke grants). */
  private subscribedProc(pid: number): Process {
    const p = this.proc(pid);
    for (const s of this.device!.subs.values()) if (s.pid === pid) return p;
    throw new DevmirrorError('DM_ERR_FORBIDDEN', `subscribe to process ${pid} first`);
  }

  private intervalSub(id: U64) {
    const sub = this.device!.subs.get(num(id));
    if (!sub) throw new DevmirrorError('DM_ERR_FORBIDDEN', `subscription ${id} is not this client's`);
    if (!(sub.notifier instanceof MmuIntervalNotifier)) throw new DevmirrorError('DM_ERR_VALIDATION', `subscription ${id} is not an interval subscription`);
    return { sub, notifier: sub.notifier };
  }

  private request(f: ClientFrame): void {
    if (this.pending >= this.host.limits.maxPending) {
      throw new DevmirrorError('DM_ERR_CHANNEL_LIMIT', `more than ${this.host.limits.maxPending} requests in flight`);
    }
    const dev = this.device!;
    const rid = f.requestId;
    // Synchronous validation throws to onMessage (an Error frame); the asynchronous part answers
    // with its own Error frame.
    let work: Promise<ServerFrameIn> | ServerFrameIn;
    switch (f.body) {
      case 'subscribe': {
        const s = f.subscribe;
        const p = this.proc(s.pid, s.process);
        if (dev.subs.size >= this.host.limits.maxSubscriptions) throw new DevmirrorError('DM_ERR_CHANNEL_LIMIT', `at most ${this.host.limits.maxSubscriptions} subscriptions`);
        if (s.kind === SubscriptionKind.INTERVAL) {
          const start = addrOf(s.start);
          const length = addrOf(s.length);
          if (length <= 0 || start % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) {
            throw new DevmirrorError('DM_ERR_VALIDATION', 'an interval subscription needs a page-aligned start and a non-zero page-aligned length');
          }
          const sub = dev.subscribe(p, 'interval', start, length, false, s.label, s.noEnd === true);
          work = { subscribed: { subscriptionId: sub.id, pid: p.pid, seq: dev.seqOf(sub), ...(sub.noEnd ? { noEnd: true } : {}) } };
        } else if (s.kind === SubscriptionKind.MM) {
          const sub = dev.subscribe(p, 'mm', 0, 0, s.wantsYoung, s.label);
          work = { subscribed: { subscriptionId: sub.id, pid: p.pid, seq: 0 } };
        } else throw new DevmirrorError('DM_ERR_VALIDATION', 'subscription kind must be MM or INTERVAL');
        break;
      }
      case 'unsubscribe': {
        const id = num(f.unsubscribe.subscriptionId);
        if (!dev.subs.has(id)) throw new DevmirrorError('DM_ERR_FORBIDDEN', `subscription ${id} is not this client's`);
        work = dev.unsubscribe(id).then(() => ({ unsubscribed: { subscriptionId: id } }));
        break;
      }
      case 'readBegin': {
        const { sub, notifier } = this.intervalSub(f.readBegin.subscriptionId);
        const seq = notifier.readBegin();
        if (typeof seq === 'number') work = Promise.resolve({ readBeginReply: { subscriptionId: sub.id, seq } });
        else {
          // Waiting for an open window to close: the progress oracle's wait-for graph shows it.
          const w = dev.progress.noteWait('readBegin', sub.id);
          work = seq.then((v) => ({ readBeginReply: { subscriptionId: sub.id, seq: v } })).finally(() => dev.progress.endWait(w));
        }
        break;
      }
      case 'rangeFault': {
        const r = f.rangeFault;
        const { sub, notifier } = this.intervalSub(r.subscriptionId);
        const start = addrOf(r.start);
        const end = addrOf(r.end);
        if (start % PAGE_SIZE || end % PAGE_SIZE || end <= start || start < sub.start || end > sub.end) {
          throw new DevmirrorError('DM_ERR_VALIDATION', 'a range fault must cover whole pages inside its subscription');
        }
        const pages = (end - start) / PAGE_SIZE;
        if (pages * 5 + 64 > this.host.limits.maxPayload) throw new DevmirrorError('DM_ERR_TOO_LARGE', 'the reply would not fit in a frame: fault in chunks');
        if (r.input.length !== 0 && r.input.length !== pages) throw new DevmirrorError('DM_ERR_VALIDATION', 'input must hold one word per page, or none');
        const args = {
          seq: num(r.notifierSeq),
          start,
          end,
          defaultFlags: r.defaultFlags,
          mask: r.pfnFlagsMask,
          input: r.input.length ? Uint32Array.from(r.input) : null,
          ownerSelf: r.ownerSelf,
        };
        work = dev.services.rangeFault(sub.pid, notifier, args).then((rep) => {
          if (rep.ret === 0) dev.sanitizer.grantRangeFault(sub.pid, start, rep.pfns, rep.gens, rep.tick);
          // A retry budget per fault (src/progress): EBUSY means an invalidation moved the seq.
          if (rep.ret === 0 || rep.ret === ERRNO.EBUSY) dev.progress.noteFault(sub.id, rep.ret === ERRNO.EBUSY, rep.ret === ERRNO.EBUSY ? this.host.kernel.findProcess(sub.pid)?.mm.notifier.recentOrigins(start, end) ?? [] : []);
          return { rangeFaultReply: { error: rep.ret, pfns: Array.from(rep.pfns) } };
        });
        break;
      }
      case 'gup': {
        const p = this.subscribedProc(f.gup.pid);
        const va = addrOf(f.gup.addr);
        work = dev.services.gup(p.pid, va - (va % PAGE_SIZE), f.gup.write).then((g) => {
          if (g.ret === 0) dev.sanitizer.grantGup(p.pid, va - (va % PAGE_SIZE), g);
          return {
            gupReply: { error: g.ret, pfn: g.pfn, writable: g.write, huge: g.huge, headAddr: g.headVa ?? 0, hugePfns: g.hugePfns ? Array.from(g.hugePfns) : [] },
          };
        });
        break;
      }
      case 'vma': {
        const p = this.proc(f.vma.pid);
        const v = dev.services.vma(p.pid, addrOf(f.vma.addr));
        work = { vmaReply: v ? { found: true, start: v.start, end: v.end, prot: v.prot, shared: v.shared, file: v.file } : { found: false } };
        break;
      }
      case 'migrate': {
        const m = f.migrate;
        const p = this.subscribedProc(m.pid);
        const dir = m.direction === MigrateDirection.TO_DEVICE ? 'to' : m.direction === MigrateDirection.TO_SYSTEM ? 'from' : null;
        if (!dir) throw new DevmirrorError('DM_ERR_VALIDATION', 'migrate direction must be TO_DEVICE or TO_SYSTEM');
        const mStart = addrOf(m.start);
        const mEnd = addrOf(m.end);
        // migrate_vma_setup takes whole pages (-EINVAL otherwise): an unaligned end moved the page it
        // cut into, outside the range the MIGRATE invalidation announced.
        if (mStart % PAGE_SIZE || mEnd % PAGE_SIZE || mEnd <= mStart) throw new DevmirrorError('DM_ERR_VALIDATION', 'a migration must cover whole pages (aligned start and end, end > start)');
        work = dev.services.migrate(p.pid, dir, mStart, mEnd, m.allocFails).then((r) => {
          if (dir === 'to') dev.sanitizer.grantPages(p.pid, r.pages, r.tick);
          return { migrateReply: { error: r.ret, collected: r.collected, moved: r.moved, pages: r.pages.map(([addr, pfn, , writable]) => ({ addr, pfn, writable })) } };
        });
        break;
      }
      case 'exclusive': {
        const p = this.subscribedProc(f.exclusive.pid);
        const va = addrOf(f.exclusive.addr);
        work = dev.services.exclusive(p.pid, va).then((r) => {
          if (r.ret === 0) dev.sanitizer.grant(p.pid, va - (va % PAGE_SIZE), r.pfn, r.gen, true, r.tick);
          return { exclusiveReply: { error: r.ret, pfn: r.pfn } };
        });
        break;
      }
      case 'evictDeviceMemory':
        work = dev.services.evictDeviceMemory().then((pages) => ({ evictDeviceMemoryReply: { pages } }));
        break;
      case 'dma': {
        const d = f.dma;
        const p = this.subscribedProc(d.pid);
        const r = dev.dma(p.pid, addrOf(d.addr), d.pfn, d.write, d.write ? d.data : null, d.length);
        work = { dmaReply: { error: 0, data: r.data, finding: r.finding } };
        break;
      }
      default:
        throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `a client does not send ${f.body}`);
    }
    if (!(work instanceof Promise)) {
      this.send({ requestId: rid, ...work });
      return;
    }
    this.pending++;
    work.then(
      (frame) => {
        this.pending--;
        this.send({ requestId: rid, ...frame });
      },
      (e) => {
        this.pending--;
        this.error(rid, e);
      },
    );
  }

  // ---- end of the connection -------------------------------------------------------------------

  private async onClose(code: number, reason: string): Promise<void> {
    if (this.state !== 'closed') {
      this.state = 'closed';
      this.log('info', 'external device disconnected', { device: this.clientName, code, reason });
    }
    await this.teardown('closed', `connection closed (${code}${reason ? `: ${reason}` : ''})`);
  }

  private tornDown = false;
  private async teardown(state: 'closed' | 'evicted', reason: string): Promise<void> {
    if (this.tornDown) return;
    this.tornDown = true;
    if (this.helloTimer) clearTimeout(this.helloTimer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const w of this.commands.values()) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(new DevmirrorError('DM_ERR_CONFLICT', 'the client disconnected'));
    }
    this.commands.clear();
    await this.device?.gone(state, reason);
  }
}
