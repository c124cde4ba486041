/**
 * Acknowledgements that arrive as WebSocket frames from external clients. They join the same
 * accounting as the workers' shared-memory answers (src/notifier/pending-ack.ts): the notifier core
 * publishes a start to every subscriber, then waits on every PendingAck at once, whatever the
 * transport.
 *
 * There is nothing to spin on here (a frame needs the event loop to arrive), so `spin` only checks,
 * and `park` resolves when the last awaited ack of a set has been answered (or forced by eviction).
 */
import { performance } from 'node:perf_hooks';
import { ACK_OK, ACK_PENDING, ACK_REFUSED, type AckGroup, type PendingAck } from '../notifier/pending-ack.js';

export class SocketAck implements PendingAck {
  state = ACK_PENDING;
  answeredAtUs?: number;
  /**
   * Date.now() when the deadline watchdog first saw this ack pending (0: not yet), as a worker
   * device's call slot keeps it: the deadline counts from there, at most one watchdog period after
   * the start was sent, and the round's path reads no clock for it (Date.now() was about 0.1 us of
   * the external round with the client on the server's CPU, 11-29).
   */
  seenMs = 0;
  /**
   * The parked sets that wait for this ack, kept on the ack itself: the kernel parks one set per
   * invalidation, so there is one waiter (a thousand clients used to cost a thousand map entries
   * and as many one-element lists per round). A second set, if any, goes to `moreWaiters`.
   */
  waiter: Parked | null = null;
  moreWaiters: Parked[] | null = null;
  constructor(
    readonly group: SocketAckGroup,
    readonly invalidationId: number,
    readonly subscriptionId: number,
    /** Refusing a blockable range is a protocol error. */
    readonly blockable: boolean,
  ) {}
  poll(): number {
    return this.state;
  }
  /** The client answered (or was evicted: forced OK, it can no longer touch memory). */
  settle(ok: boolean): void {
    if (this.state !== ACK_PENDING) return;
    this.state = ok ? ACK_OK : ACK_REFUSED;
    this.answeredAtUs = performance.now() * 1000;
    this.group.answered(this);
  }
}

interface Parked {
  left: number;
  resolve: () => void;
}

/** A connection whose socket holds frames back until it is released (see SocketAckGroup.holdStarts). */
export interface HeldSocket {
  uncork(): void;
}

export class SocketAckGroup implements AckGroup {
  /**
   * Connections whose socket is corked by an InvalidateStart of the invalidation being published.
   * waitAcks calls `spin` once the core has called every subscriber of the range, and spin releases
   * them first: the starts of one invalidation to one client (several of its subscriptions hit)
   * leave in one write, and a lone start costs a cork and an uncork, with no callback to schedule
   * (a process.nextTick per round was 1 to 2% of the external round with the client on the
   * server's CPU, 11-29). Every path that gets a SocketAck from a start hands it to waitAcks at
   * once (the core's blockable and non-blockable starts, and the exit release), so a held start
   * waits no longer than the core's own bookkeeping of that invalidation.
   */
  private held: HeldSocket[] = [];

  /** Holds `s` until the next spin (the caller corked its socket and uncorks it in `uncork`). */
  holdStarts(s: HeldSocket): void {
    this.held.push(s);
  }

  /** Uncorks every held connection: their frames are written now. */
  flushHeld(): void {
    const held = this.held;
    // A flush may fail synchronously and close its connection, which holds nothing more: the list
    // is walked by index and emptied by pop (a fresh array every round was garbage).
    for (let i = 0; i < held.length; i++) held[i].uncork();
    while (held.length > 0) held.pop();
  }

  spin(acks: readonly PendingAck[]): boolean {
    if (this.held.length > 0) this.flushHeld();
    for (const a of acks) if (a.poll() === ACK_PENDING) return false;
    return true;
  }

  /** `acks` are SocketAcks: waitAcks hands a group only the acks whose `group` it is. */
  park(acks: readonly PendingAck[]): Promise<void> {
    return new Promise<void>((resolve) => this.wait(acks, { left: 0, resolve }));
  }

  /**
   * park(acks).then(then) in one promise: `then` runs in the frame handler that takes the last
   * answer (SocketAck.settle), before the handler returns, and the promise resolves with its
   * value (or rejects with what it threw). The kernel's continuation after an external round is
   * then one reaction away from the ack, as a bare client's would be, instead of three.
   */
  parkThen<T>(acks: readonly PendingAck[], then: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) =>
      this.wait(acks, {
        left: 0,
        resolve: () => {
          try {
            resolve(then());
          } catch (e) {
            reject(e);
          }
        },
      }),
    );
  }

  /** Registers `p` with every pending ack of `acks`; resolves it now if none is pending. */
  private wait(acks: readonly PendingAck[], p: Parked): void {
    for (const pa of acks) {
      const a = pa as SocketAck;
      if (a.state !== ACK_PENDING) continue;
      p.left++;
      if (a.waiter === null) a.waiter = p;
      else (a.moreWaiters ??= []).push(p);
    }
    if (p.left === 0) p.resolve();
  }

  answered(a: SocketAck): void {
    const w = a.waiter;
    if (w === null) return;
    const more = a.moreWaiters;
    a.waiter = null;
    a.moreWaiters = null;
    if (--w.left === 0) w.resolve();
    if (more !== null) for (const p of more) if (--p.left === 0) p.resolve();
  }
}

/**
 * The key of a pending (invalidation or release id, subscription id) pair. A number while the pair
 * packs into 53 bits (ids below 2^32, subscriptions below 2^21: the first four billion invalidations
 * of a boot, and subscription ids, which start at 1,000,000, until about a million more were made),
 * else a string. Both forms never collide: a number key is never a string. A string key costs a
 * concatenation and a hash on every lookup; releases (ids from 2^52) take the string form.
 */
export function ackKey(id: number, subscriptionId: number): number | string {
  return id >= 0 && id < 4294967296 && subscriptionId >= 0 && subscriptionId < 2097152 ? id * 2097152 + subscriptionId : `${id}:${subscriptionId}`;
}

/**
 * A device's pending SocketAcks by (invalidation id, subscription id). It nearly always holds none
 * or one: a round's acknowledgement comes in before the next start. So the newest is kept in a slot
 * and only older ones go to a Map, by ackKey: a Map that goes from empty to one entry and back every
 * round reallocates its table each time (a set, a get and a delete cost 50 to 65 ns, warm, and
 * allocate, against 1.2 ns for the slot, on the Xeon host, 11-29: bench/experiments/ack-table.mjs).
 */
export class SocketAckTable {
  private newest: SocketAck | null = null;
  private readonly older = new Map<number | string, SocketAck>();

  /** A new pending ack (its pair is not in the table: an invalidation calls a subscription once). */
  add(a: SocketAck): void {
    const n = this.newest;
    if (n !== null) this.older.set(ackKey(n.invalidationId, n.subscriptionId), n);
    this.newest = a;
  }

  /** Removes and returns the ack of the pair, or null if none is pending. */
  take(invalidationId: number, subscriptionId: number): SocketAck | null {
    const n = this.newest;
    if (n !== null && n.invalidationId === invalidationId && n.subscriptionId === subscriptionId) {
      this.newest = null;
      return n;
    }
    if (this.older.size === 0) return null;
    const key = ackKey(invalidationId, subscriptionId);
    const a = this.older.get(key);
    if (a === undefined) return null;
    this.older.delete(key);
    return a;
  }

  get size(): number {
    return this.older.size + (this.newest === null ? 0 : 1);
  }

  /** The pending acks, oldest first (a copy: the caller may settle them as it walks). */
  values(): SocketAck[] {
    const out = [...this.older.values()];
    if (this.newest !== null) out.push(this.newest);
    return out;
  }

  clear(): void {
    this.newest = null;
    this.older.clear();
  }
}
