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

/** Whether every ack of `acks` is in one group, which it returns (null when there are several). */
function oneGroup(acks: readonly PendingAck[]): AckGroup | null {
  const g0 = acks[0].group;
  for (let i = 1; i < acks.length; i++) if (acks[i].group !== g0) return null;
  return g0;
}

/** The acks of each group, in first-seen order. */
function byGroup(acks: readonly PendingAck[]): Map<AckGroup, PendingAck[]> {
  const groups = new Map<AckGroup, PendingAck[]>();
  for (const a of acks) {
    const list = groups.get(a.group);
    if (list) list.push(a);
    else groups.set(a.group, [a]);
  }
  return groups;
}

/**
 * The first half of waitAcks: spins each group of `acks` (non-empty); true when every ack was
 * answered inside the spins. The caller then settles at once, or parks with parkAcksThen: so the
 * continuation it hands to parkAcksThen is made only when there is something to wait for (a
 * worker's round answered inside the spin allocates no closure).
 */
export function spinAcks(acks: readonly PendingAck[], timed = true): boolean {
  const g = oneGroup(acks);
  if (g !== null) return g.spin(acks, timed);
  let all = true;
  for (const [grp, list] of byGroup(acks)) if (!grp.spin(list, timed)) all = false;
  return all;
}

/**
 * The second half, after spinAcks returned false: resolves with then() once every ack is answered.
 * Through the group's parkThen when all acks share a group that has one (then runs where the last
 * answer is taken: no reaction in between), else a reaction to the groups' parks (a group whose
 * acks are all answered resolves its park at once).
 */
export function parkAcksThen<T>(acks: readonly PendingAck[], then: () => T): Promise<T> {
  const g = oneGroup(acks);
  if (g !== null) return g.parkThen !== undefined ? g.parkThen(acks, then) : g.park(acks).then(then);
  return Promise.all([...byGroup(acks)].map(([grp, list]) => grp.park(list))).then(then);
}

/** Waits for a set of PendingAcks, grouped by their AckGroup. */
export function waitAcks(acks: readonly PendingAck[], timed = true): Promise<void> | null {
  if (acks.length === 0) return null;
  const g0 = oneGroup(acks);
  if (g0 !== null) return g0.spin(acks, timed) ? null : g0.park(acks);
  const parked: Promise<void>[] = [];
  for (const [g, list] of byGroup(acks)) if (!g.spin(list, timed)) parked.push(g.park(list));
  if (parked.length === 0) return null;
  return parked.length === 1 ? parked[0] : Promise.all(parked).then(() => undefined);
}
