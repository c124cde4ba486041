/**
 * Acknowledgements that arrive as WebSocket frames from external clients. They join the same
 * accounting as the workers' shared-memory answers (src/notifier/pending-ack.ts): the notifier core
 * publishes a start to every subscriber, then waits on every PendingAck at once, whatever the
 * transport.
 *
 * There is nothing to spin on here (a frame needs the event loop to arrive), so `spin` only checks,
 * and `park` resolves when the last awaited ack of a set has been answered (or forced by eviction).
 */
import { ACK_OK, ACK_PENDING, ACK_REFUSED, type AckGroup, type PendingAck } from '../notifier/pending-ack.js';

export class SocketAck implements PendingAck {
  state = ACK_PENDING;
  answeredAtUs?: number;
  /** Date.now() when the start was sent (deadline). */
  readonly sentMs = Date.now();
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
  acks: readonly PendingAck[];
  left: number;
  resolve: () => void;
}

export class SocketAckGroup implements AckGroup {
  /** Parked sets by the acks they still wait for. */
  private readonly waiting = new Map<PendingAck, Parked[]>();

  spin(acks: readonly PendingAck[]): boolean {
    for (const a of acks) if (a.poll() === ACK_PENDING) return false;
    return true;
  }

  park(acks: readonly PendingAck[]): Promise<void> {
    return new Promise<void>((resolve) => {
      const p: Parked = { acks, left: 0, resolve };
      for (const a of acks) {
        if (a.poll() !== ACK_PENDING) continue;
        p.left++;
        const list = this.waiting.get(a);
        if (list) list.push(p);
        else this.waiting.set(a, [p]);
      }
      if (p.left === 0) resolve();
    });
  }

  answered(a: PendingAck): void {
    const list = this.waiting.get(a);
    if (!list) return;
    this.waiting.delete(a);
    for (const p of list) if (--p.left === 0) p.resolve();
  }
}
