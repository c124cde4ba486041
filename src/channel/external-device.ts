/**
 * The kernel's side of one external device client (a process on the other end of a WebSocket):
 * its subscriptions (kernel notifier objects whose callbacks send frames), the acknowledgements it
 * owes, its deadline, and the server-side shadow of its mirror that the sanitizer checks its DMA
 * against.
 *
 * An external client shares no memory with the kernel, so every byte it reads or writes goes
 * through a Dma request, executed here at the moment the frame is processed. Frames of one
 * connection are processed in order, so a Dma sent before an acknowledgement is checked before
 * the grant is revoked, and one sent after it is checked after: the order the client chose is
 * the order the sanitizer sees.
 *
 * Acknowledgement accounting: each InvalidateStart creates one SocketAck keyed by (invalidation
 * id, subscription id). An InvalidateAck must match a pending one exactly: an unknown, late
 * (already answered or forced by eviction), duplicate or foreign (another client's subscription)
 * acknowledgement is a protocol error, and so is refusing a blockable range.
 */
import { DevmirrorError } from '../errors.js';
import type { Kernel, Process } from '../kernel/kernel.js';
import { PAGE_SIZE } from '../kernel/layout.js';
import { MmuIntervalNotifier, MmuNotifier } from '../notifier/subscriptions.js';
import { ACK_OK, type PendingAck } from '../notifier/pending-ack.js';
import { RANGE_BLOCKABLE, type NotifierRange } from '../notifier/range.js';
import { Sanitizer, type Finding } from '../sanitizer/sanitizer.js';
import { DeviceServices } from '../devices/device-services.js';
import { ackKey, SocketAck, SocketAckTable, type SocketAckGroup } from './socket-ack.js';
import { ProgressCounters, type ProgressSource } from '../progress/counters.js';
import type { Grant } from './tokens.js';

/** What the device sends; implemented by the session (frames out, with backpressure). */
export interface ExternalPort {
  /**
   * InvalidateStart of `range` to subscription `subscriptionId` of process `pid`. The range itself,
   * not a message object: the round allocates nothing for it (the session encodes from its fields).
   */
  invalidateStart(subscriptionId: number, pid: number, range: NotifierRange, curSeq: number): void;
  /** InvalidateEnd of `range` (one-way). */
  invalidateEnd(subscriptionId: number, pid: number, range: NotifierRange): void;
  release(m: { invalidationId: number; subscriptionId: number; pid: number }): void;
  youngQuery(m: { queryId: number; subscriptionId: number; pid: number; op: number; start: number; end: number }): void;
  command(name: string, args: Record<string, unknown>, timeoutMs: number): Promise<unknown>;
  /** Close the connection (eviction). */
  close(code: number, reason: string): void;
}

export interface ExternalSub {
  id: number;
  pid: number;
  kind: 'mm' | 'interval';
  start: number;
  end: number;
  wantsYoung: boolean;
  /** An interval subscription that asked for no InvalidateEnd frames (Subscribe.no_end). */
  noEnd: boolean;
  notifier: MmuIntervalNotifier | MmuNotifier;
}

export type ExternalState = 'running' | 'evicted' | 'closed';

let nextSubId = 1_000_000;
let nextQueryId = 1;
/**
 * A Release is answered with an InvalidateAck, like an InvalidateStart, so its id shares the
 * invalidation id space on the wire. Invalidation ids come from the kernel's counter, from 1 up;
 * release ids are taken from [2^52, 2^53) so that the two never meet: an InvalidateAck then names
 * exactly one pending call, a release or an invalidation, whatever order the client answers in.
 */
const RELEASE_ID_BASE = 2 ** 52;
let nextReleaseId = RELEASE_ID_BASE;

/** See resetNotifierIds: the explorer numbers subscriptions the same way in every run. */
export function resetExternalIds(): void {
  nextSubId = 1_000_000;
  nextQueryId = 1;
  nextReleaseId = RELEASE_ID_BASE;
}

/** Release and young queries have no PendingAck: they are awaited with the same deadline. */
interface Waiter {
  resolve: (v: boolean) => void;
  sentMs: number;
  what: string;
}

export class ExternalDevice implements ProgressSource {
  readonly transport = 'external' as const;
  state: ExternalState = 'running';
  stateReason = '';
  readonly sanitizer: Sanitizer;
  readonly services: DeviceServices;
  readonly subs = new Map<number, ExternalSub>();
  /** Counters the client reported (DeviceStats) plus the server's own. */
  counters: Record<string, number> = {};
  mirror = { pages: 0, writable: 0, devicePages: 0, objects: 0 };
  readonly findings: Finding[] = [];
  readonly handshake = { starts: 0, acks: 0, refused: 0, ends: 0, protocolErrors: 0, evictions: 0, dmaReads: 0, dmaWrites: 0 };
  /** Pending acknowledgements by (invalidation id, subscription id). */
  private readonly acks = new SocketAckTable();
  /** Pending releases by ackKey(release id, subscription id) (the InvalidateAck that answers one names both). */
  private readonly releases = new Map<number | string, Waiter>();
  private readonly queries = new Map<number, Waiter>();
  private watchdog: NodeJS.Timeout | null = null;
  onFinding: ((d: ExternalDevice, f: Finding) => void) | null = null;
  onStateChange: ((d: ExternalDevice) => void) | null = null;
  /** The grant of the token the client connected with. */
  grant: Grant | null = null;

  constructor(
    private readonly k: Kernel,
    private readonly group: SocketAckGroup,
    readonly id: number,
    readonly name: string,
    readonly kind: string,
    readonly deadlineMs: number,
    private readonly port: ExternalPort,
  ) {
    this.services = new DeviceServices(k, id);
    this.sanitizer = new Sanitizer(k.mem.handles.meta, id);
    this.sanitizer.onFinding = (f) => {
      if (this.findings.length < 500) this.findings.push(f);
      this.onFinding?.(this, f);
    };
    this.watchdog = setInterval(() => this.checkDeadlines(), Math.max(5, Math.min(250, deadlineMs / 4)));
    this.watchdog.unref();
    // dev_pagemap_ops: before the kernel moves this device's pages back to RAM, the device drops them.
    k.pagemaps.set(id, {
      owner: id,
      migratingOut: async (mm, vas) => {
        if (this.alive && [...this.subs.values()].some((s) => s.pid === mm.pid)) {
          await this.port.command('migrating-out', { vas }, deadlineMs * 2).catch(() => undefined);
        }
      },
    });
  }

  get alive(): boolean {
    return this.state === 'running';
  }

  private info(label: string): { label: string; deviceId: number; deviceKind: string } {
    return { label: `${this.name}:${label}`, deviceId: this.id, deviceKind: this.kind };
  }

  // ---- subscriptions ---------------------------------------------------------------------------

  /**
   * `noEnd` (interval subscriptions only): the window still closes here (the sanitizer's window,
   * the handshake's count), but no InvalidateEnd frame goes to the client: the kernel's interval
   * notifiers have no end callback, and a client that does nothing at the end asks for none.
   */
  subscribe(proc: Process, kind: 'mm' | 'interval', start: number, length: number, wantsYoung: boolean, label: string, noEnd = false): ExternalSub {
    if (proc.mm.exiting) throw new DevmirrorError('DM_ERR_PROCESS_EXITING', `process ${proc.pid} is exiting`);
    const id = nextSubId++;
    const pid = proc.pid;
    let notifier: MmuIntervalNotifier | MmuNotifier;
    if (kind === 'interval') {
      const n = new MmuIntervalNotifier(
        {
          invalidate: (s, range, curSeq) => {
            // The client keeps its own copy of the seq (it sets it from cur_seq before acking);
            // the kernel's copy is set here, as the driver's setSeq would.
            s.setSeq(curSeq);
            return this.start(id, pid, range, curSeq) ?? true;
          },
          windowClosed: (_s, range) => this.end(id, pid, range, !noEnd),
        },
        this.info(label || 'interval'),
      );
      proc.mm.notifier.insertInterval(n, start, length);
      notifier = n;
    } else {
      const young = (op: number, s: number, e: number): Promise<boolean> => this.young(id, pid, op, s, e);
      const n = new MmuNotifier(
        {
          invalidateRangeStart: (_s, range) => this.start(id, pid, range, 0) ?? 0,
          invalidateRangeEnd: (_s, range) => this.end(id, pid, range, true),
          release: () => this.releaseCall(id, pid),
          ...(wantsYoung
            ? {
                clearFlushYoung: (_s: MmuNotifier, s: number, e: number) => young(1, s, e),
                clearYoung: (_s: MmuNotifier, s: number, e: number) => young(2, s, e),
                testYoung: (_s: MmuNotifier, a: number) => young(3, a, a + PAGE_SIZE),
              }
            : {}),
        },
        this.info(label || 'mm'),
      );
      proc.mm.notifier.register(n);
      notifier = n;
    }
    const sub: ExternalSub = { id, pid, kind, start: kind === 'interval' ? start : 0, end: kind === 'interval' ? start + length : 2 ** 64, wantsYoung, noEnd: kind === 'interval' && noEnd, notifier };
    this.subs.set(id, sub);
    return sub;
  }

  seqOf(sub: ExternalSub): number {
    return sub.notifier instanceof MmuIntervalNotifier ? sub.notifier.invalidateSeq : 0;
  }

  async unsubscribe(id: number): Promise<void> {
    const sub = this.subs.get(id);
    if (!sub) return;
    this.subs.delete(id);
    this.progress.dropSub(id);
    const proc = this.k.findProcess(sub.pid);
    if (!proc) return;
    if (sub.notifier instanceof MmuIntervalNotifier) await proc.mm.notifier.removeInterval(sub.notifier);
    else await proc.mm.notifier.unregister(sub.notifier);
    // Only what no remaining subscription of this process covers: the device keeps the rest (a
    // gpu that retires one SVM range, or loses a race to create one, still uses the others).
    const keep = [...this.subs.values()].filter((s) => s.pid === sub.pid).map((s) => [s.start, s.end] as const);
    this.sanitizer.dropUncovered(sub.pid, sub.start, sub.end, keep);
  }

  /** Sends the start; null when the device is gone (nothing to wait for). */
  private start(subId: number, pid: number, range: NotifierRange, curSeq: number): PendingAck | null {
    if (!this.alive) return null;
    const tick = this.k.mem.tick();
    const sub = this.subs.get(subId);
    this.sanitizer.started(range.id, subId, pid, range.start, range.end, range.event, range.flags, tick, sub?.kind === 'interval' ? sub : undefined, range.owner, range.origin);
    const ack = new SocketAck(this.group, range.id, subId, (range.flags & RANGE_BLOCKABLE) !== 0);
    this.acks.add(ack);
    this.handshake.starts++;
    this.port.invalidateStart(subId, pid, range, curSeq);
    return ack;
  }

  private end(subId: number, pid: number, range: NotifierRange, frame: boolean): void {
    if (!this.alive) return;
    this.sanitizer.ended(range.id, subId, this.k.mem.tick());
    this.handshake.ends++;
    if (frame) this.port.invalidateEnd(subId, pid, range);
  }

  private releaseCall(subId: number, pid: number): Promise<void> {
    if (!this.alive) return Promise.resolve();
    const id = nextReleaseId++;
    return new Promise<void>((resolve) => {
      this.releases.set(ackKey(id, subId), { resolve: () => resolve(), sentMs: Date.now(), what: 'release' });
      this.port.release({ invalidationId: id, subscriptionId: subId, pid });
    }).then(() => {
      // The mm going away (exit) drops every grant of the process. A release from unsubscribe
      // (the subscription is already out of `subs`) does not: unsubscribe drops only what no
      // remaining subscription covers, and an interval subscription of the same process keeps its
      // mirror.
      if (this.subs.has(subId)) this.sanitizer.dropPid(pid);
    });
  }

  private young(subId: number, pid: number, op: number, start: number, end: number): Promise<boolean> {
    if (!this.alive) return Promise.resolve(false);
    const queryId = nextQueryId++;
    return new Promise<boolean>((resolve) => {
      this.queries.set(queryId, { resolve, sentMs: Date.now(), what: 'young query' });
      this.port.youngQuery({ queryId, subscriptionId: subId, pid, op, start, end });
    });
  }

  // ---- frames from the client ------------------------------------------------------------------

  /** An InvalidateAck (or a release acknowledgement). Throws DM_ERR_CHANNEL_PROTOCOL if it matches nothing pending. */
  onAck(invalidationId: number, subscriptionId: number, ok: boolean, keptReads = false): void {
    // A release is matched on its (id, subscription) pair alone, not on the subscription still
    // being in `subs`: unsubscribe removes the subscription from `subs` before it unregisters the
    // notifier, and mmu_notifier_unregister calls release, so the client's answer to that release
    // names a subscription that is already gone and must still settle it (else the unsubscribe
    // closed the connection with 4000). Release ids never equal an invalidation id (see
    // RELEASE_ID_BASE), so this cannot take an invalidation's acknowledgement for a release.
    if (this.releases.size !== 0) {
      const key = ackKey(invalidationId, subscriptionId);
      const rel = this.releases.get(key);
      if (rel) {
        this.releases.delete(key);
        rel.resolve(true);
        return;
      }
    }
    const ack = this.acks.take(invalidationId, subscriptionId);
    if (ack === null) {
      this.handshake.protocolErrors++;
      const foreign = !this.subs.has(subscriptionId);
      throw new DevmirrorError(
        'DM_ERR_CHANNEL_PROTOCOL',
        foreign
          ? `acknowledgement for subscription ${subscriptionId}, which is not this client's`
          : `acknowledgement of invalidation ${invalidationId} on subscription ${subscriptionId}, which is not pending (late or duplicate)`,
      );
    }
    if (!ok) {
      // Refusal is only allowed for non-blockable ranges; the start told the client which.
      if (ack.blockable) {
        this.handshake.protocolErrors++;
        ack.settle(true);
        throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `invalidation ${invalidationId} is blockable: it cannot be refused`);
      }
      this.handshake.refused++;
    } else {
      this.sanitizer.acked(invalidationId, subscriptionId, keptReads);
      this.handshake.acks++;
    }
    ack.settle(ok);
  }

  onYoungReply(queryId: number, young: boolean): void {
    const q = this.queries.get(queryId);
    if (!q) {
      this.handshake.protocolErrors++;
      throw new DevmirrorError('DM_ERR_CHANNEL_PROTOCOL', `young reply ${queryId} answers no pending query`);
    }
    this.queries.delete(queryId);
    q.resolve(young);
  }

  /**
   * A DMA access by the client through its mirror: checked by the sanitizer against the grants,
   * then performed on the frame (reads return its bytes). Returns the finding kind or ''.
   */
  dma(pid: number, va: number, pfn: number, write: boolean, data: Uint8Array | null, length: number): { data: Uint8Array; finding: string } {
    const off = va % PAGE_SIZE;
    const len = write ? (data?.length ?? 0) : length;
    if (len <= 0 || off + len > PAGE_SIZE) throw new DevmirrorError('DM_ERR_VALIDATION', 'a DMA access must stay within one page and move at least one byte');
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.k.mem.totalFrames) throw new DevmirrorError('DM_ERR_VALIDATION', `pfn ${pfn} is not a frame`);
    // The check comes first: a stale write must never land in a frame that is someone else's now.
    const f = this.sanitizer.check(pid, va - off, pfn, write);
    // Every access of an external client passes here, so each one is traced (bounded by the ring).
    this.k.trace?.instant(`d:${this.id}`, write ? 'dma write' : 'dma read', pid, { va: '0x' + va.toString(16), pfn, length: len, finding: f ? f.kind : '' });
    const bytes = this.k.mem.data;
    const base = pfn * PAGE_SIZE + off;
    if (f) {
      // Reported, and not performed: a real device would have corrupted a page that is someone
      // else's now (stale, lost-write, wrong-pfn), or one it may only read (write-ro: a COW or KSM
      // page shared with other mappings), or read data it has no right to (unmapped).
      return { data: new Uint8Array(0), finding: f.kind };
    }
    if (write) {
      bytes.set(data!, base);
      this.handshake.dmaWrites++;
      return { data: new Uint8Array(0), finding: '' };
    }
    this.handshake.dmaReads++;
    return { data: bytes.slice(base, base + len), finding: '' };
  }

  /** Sends a command to the client's personality (test_hmm commands, DMA control, ...). */
  command<T = unknown>(name: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (!this.alive) return Promise.reject(new DevmirrorError('DM_ERR_CONFLICT', `device ${this.name} is ${this.state}`));
    return this.port.command(name, args, timeoutMs) as Promise<T>;
  }

  // ---- deadlines and teardown ------------------------------------------------------------------

  private checkDeadlines(): void {
    if (!this.alive) return;
    const now = Date.now();
    for (const a of this.acks.values()) {
      // Stamped here, the first time a watchdog pass finds it pending (see SocketAck.seenMs).
      if (a.seenMs === 0) a.seenMs = now;
      else if (now - a.seenMs > this.deadlineMs) {
        void this.evict(`no acknowledgement of invalidation ${a.invalidationId} within ${this.deadlineMs} ms`);
        return;
      }
    }
    for (const m of [this.releases, this.queries]) {
      for (const w of m.values()) {
        if (now - w.sentMs > this.deadlineMs) {
          void this.evict(`no answer to a ${w.what} within ${this.deadlineMs} ms`);
          return;
        }
      }
    }
  }

  /** The client stopped answering: close its connection (it can no longer DMA), then let the kernel go on. */
  async evict(reason: string): Promise<void> {
    if (!this.alive) return;
    this.handshake.evictions++;
    this.port.close(4408, reason.slice(0, 120));
    await this.gone('evicted', reason);
  }

  /** The connection closed (or was closed): everything pending counts as answered; the mirror is torn down. */
  async gone(state: ExternalState, reason: string): Promise<void> {
    if (this.state !== 'running') return;
    this.state = state;
    this.stateReason = reason;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    // The socket is closed: no frame of this client is processed any more, so it can no longer
    // touch memory; only now may the kernel change the PTEs it was waiting on.
    for (const a of this.acks.values()) a.settle(true);
    this.acks.clear();
    for (const w of this.releases.values()) w.resolve(true);
    this.releases.clear();
    for (const w of this.queries.values()) w.resolve(false);
    this.queries.clear();
    for (const id of [...this.subs.keys()]) await this.unsubscribe(id).catch(() => undefined);
    await this.k.releaseDevice(this.id);
    this.onStateChange?.(this);
  }

  // ---- progress (src/progress): what this device waits for, and faults that keep retrying ------

  /** readBegin waits and range-fault retry counts (the progress oracle). */
  readonly progress = new ProgressCounters();

  subRange(subId: number): { pid: number; start: number; end: number } | null {
    const s = this.subs.get(subId);
    return s ? { pid: s.pid, start: s.start, end: s.end } : null;
  }

  /**
   * Acknowledgements this device owes, oldest first, each with the time a watcher (this list or the
   * deadline watchdog) first saw it pending.
   */
  pendingAckList(): Array<{ invalidationId: number; subscriptionId: number; sentMs: number }> {
    const out: Array<{ invalidationId: number; subscriptionId: number; sentMs: number }> = [];
    const now = Date.now();
    for (const a of this.acks.values()) {
      if (a.poll() === ACK_OK) continue;
      // A watcher that sees it pending first stamps it (SocketAck.seenMs): its age counts from here.
      if (a.seenMs === 0) a.seenMs = now;
      out.push({ invalidationId: a.invalidationId, subscriptionId: a.subscriptionId, sentMs: a.seenMs });
    }
    return out.sort((x, y) => x.sentMs - y.sentMs);
  }

  /** Pending acknowledgements (for the dashboard and tests). */
  get pendingAcks(): number {
    let n = 0;
    for (const a of this.acks.values()) if (a.poll() !== ACK_OK) n++;
    return n;
  }
}
