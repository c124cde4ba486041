/**
 * The devmirror service: one kernel, its event log, and (later) devices and the channel. The HTTP
 * layer talks to this object only.
 */
import { Kernel, type KernelConfig } from './kernel/kernel.js';
import { EventLog } from './notifier/event-log.js';

export interface ServiceOptions {
  kernel?: Partial<KernelConfig>;
  eventCapacity?: number;
}

export class Service {
  readonly kernel: Kernel;
  readonly events: EventLog;
  readonly startedAt = Date.now();
  private unobserve: () => void;
  ready = false;

  constructor(opts: ServiceOptions = {}) {
    this.kernel = new Kernel(opts.kernel);
    this.events = new EventLog(opts.eventCapacity ?? 10_000);
    this.unobserve = this.kernel.observe({ onInvalidation: (rec) => this.events.add(rec) });
  }

  get bootId(): number {
    return this.kernel.bootId;
  }

  async start(): Promise<void> {
    this.ready = true;
  }

  async stop(): Promise<void> {
    this.ready = false;
    this.unobserve();
  }
}
