/**
 * Acknowledgements that arrive through shared memory. A subscription callback may answer an
 * invalidation with a PendingAck instead of a promise: the core first publishes the start to every
 * subscriber, then asks the PendingAcks' group to wait for all of them at once, which spins briefly
 * (an answer from a worker on another core arrives in well under a microsecond) and only then
 * parks. When everything is answered inside the spin, the whole invalidation completes without a
 * single promise or event-loop turn.
 */

export const ACK_PENDING = 0;
export const ACK_OK = 1;
export const ACK_REFUSED = 2;

export interface PendingAck {
  /** ACK_PENDING, ACK_OK or ACK_REFUSED; cheap, called in spin loops. */
  poll(): number;
  readonly group: AckGroup;
  /** performance.now() in microseconds when the group first saw the answer, if it was timed. */
  answeredAtUs?: number;
}

export interface AckGroup {
  /**
   * Spins until every ack is answered or the spin budget is spent. Returns true if all are
   * answered. Never blocks (the caller may be the thread that serves I/O). With `timed` false
   * the answers need no time stamp (the caller keeps no record of them).
   */
  spin(acks: readonly PendingAck[], timed?: boolean): boolean;
  /** Resolves when every ack is answered (or given up by eviction: then they poll as answered). */
  park(acks: readonly PendingAck[]): Promise<void>;
  /**
   * Optional: park(acks).then(then), with `then` run where the last answer is taken (a socket
   * ack's frame handler) instead of in a reaction a microtask later, and one promise instead of
   * two. For a group whose answers arrive on the event loop.
   */
  parkThen?<T>(acks: readonly PendingAck[], then: () => T): Promise<T>;
}

export function isPendingAck(x: unknown): x is PendingAck {
  return typeof x === 'object' && x !== null && typeof (x as PendingAck).poll === 'function' && 'group' in x;
}

/**
 * waitAcks(acks, timed), then `then`: its value at once when every ack was answered inside the
 * spin, else a promise of it (through the group's parkThen when all acks share a group that has
 * one: no reaction between the last answer and `then`).
 */
export function waitAcksThen<T>(acks: readonly PendingAck[], timed: boolean, then: () => T): T | Promise<T> {
  const g0 = acks[0].group;
  if (g0.parkThen !== undefined) {
    let one = true;
    for (let i = 1; i < acks.length && one; i++) one = acks[i].group === g0;
    if (one) return g0.spin(acks, timed) ? then() : g0.parkThen(acks, then);
  }
  const w = waitAcks(acks, timed);
  return w === null ? then() : w.then(then);
}

/** Waits for a set of PendingAcks, grouped by their AckGroup. */
export function waitAcks(acks: readonly PendingAck[], timed = true): Promise<void> | null {
  if (acks.length === 0) return null;
  const g0 = acks[0].group;
  let one = true;
  for (let i = 1; i < acks.length && one; i++) one = acks[i].group === g0;
  if (one) return g0.spin(acks, timed) ? null : g0.park(acks);
  const groups = new Map<AckGroup, PendingAck[]>();
  for (const a of acks) {
    const list = groups.get(a.group);
    if (list) list.push(a);
    else groups.set(a.group, [a]);
  }
  const parked: Promise<void>[] = [];
  for (const [g, list] of groups) if (!g.spin(list, timed)) parked.push(g.park(list));
  if (parked.length === 0) return null;
  return parked.length === 1 ? parked[0] : Promise.all(parked).then(() => undefined);
}
