/**
 * What a device's kernel side knows about its progress, kept by both transports (ExternalDevice
 * for channel clients, WorkerDevice for workers) and read by the progress oracle: the requests of
 * the device that are waiting (readBegin behind an open window) and, per interval subscription,
 * how many range faults in a row were answered EBUSY (an invalidation moved the seq each time).
 */
export interface ProgressWait {
  what: 'readBegin';
  subId: number;
  sinceMs: number;
}

export interface FaultRetries {
  consecutive: number;
  total: number;
  /** Origins of the invalidations that overlapped the retried faults (at most 8). */
  origins: string[];
}

export class ProgressCounters {
  readonly waits = new Map<number, ProgressWait>();
  readonly retries = new Map<number, FaultRetries>();
  private nextWait = 1;

  noteWait(what: 'readBegin', subId: number): number {
    const id = this.nextWait++;
    this.waits.set(id, { what, subId, sinceMs: Date.now() });
    return id;
  }

  endWait(id: number): void {
    this.waits.delete(id);
  }

  /** A range fault's answer: EBUSY counts against the fault's retry budget, success resets it. */
  noteFault(subId: number, busy: boolean, origins: readonly string[]): void {
    let r = this.retries.get(subId);
    if (!r) {
      if (!busy) return;
      r = { consecutive: 0, total: 0, origins: [] };
      this.retries.set(subId, r);
    }
    if (busy) {
      r.consecutive++;
      r.total++;
      for (const o of origins) if (!r.origins.includes(o) && r.origins.length < 8) r.origins.push(o);
    } else {
      r.consecutive = 0;
      r.origins = [];
    }
  }

  /** A subscription went away: its counters with it. */
  dropSub(subId: number): void {
    this.retries.delete(subId);
  }
}

/** The kernel side of one device, as the progress oracle and its wait-for graphs see it. */
export interface ProgressSource {
  readonly name: string;
  readonly alive: boolean;
  readonly progress: ProgressCounters;
  /** Acknowledgements the device owes, oldest first. */
  pendingAckList(): Array<{ invalidationId: number; subscriptionId: number; sentMs: number }>;
  /** The process and range of one of its subscriptions. */
  subRange(subId: number): { pid: number; start: number; end: number } | null;
}
