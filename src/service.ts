/**
 * The devmirror service: one kernel, its event log, its device workers and the notifier channel
 * for external devices. The HTTP layer talks to this object only.
 */
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { Kernel, type KernelConfig } from './kernel/kernel.js';
import { DEFAULT_EVENT_ROWS, EventLog } from './notifier/event-log.js';
import { DeviceManager, type DeviceManagerOptions } from './devices/device-manager.js';
import { CHANNEL_PATH, ChannelServer } from './channel/channel-server.js';
import type { ChannelLimits } from './channel/session.js';
import { TokenTable } from './channel/tokens.js';
import { ProgressMonitor, type ProgressOptions } from './progress/monitor.js';
import { startTracing } from './trace/service-trace.js';
import type { TraceRecorder } from './trace/recorder.js';

type Log = NonNullable<DeviceManagerOptions['log']>;

export interface ServiceOptions {
  kernel?: Partial<KernelConfig>;
  /** Entries GET /v1/events keeps (default 10,000). */
  eventCapacity?: number;
  /** Subscriber rows GET /v1/events keeps, summed over its entries (default 250,000; see EventLog). */
  eventRows?: number;
  /** DEVMIRROR_TOKENS syntax; undefined = the embedded local default. */
  tokens?: string;
  /** Whether the HTTP API requires a token (DEVMIRROR_API_AUTH); default: exactly when `tokens` is set. */
  apiAuth?: boolean;
  channel?: Partial<ChannelLimits>;
  /** Acknowledgement deadline of worker devices, ms. */
  deadlineMs?: number;
  /** The progress oracle's watchdog and retry budget (src/progress/monitor.ts). */
  progress?: ProgressOptions;
  log?: Log;
  /** pino logger: the service logs through it, each device through a child logger. */
  logger?: Logger;
  /**
   * Trace ring size in entries (GET /v1/trace, docs/trace.md); 0 or absent: tracing off (its cost on
   * the kernel thread is in docs/trace.md); DEFAULT_TRACE_CAPACITY is a good size.
   */
  traceEvents?: number;
}

export class Service {
  readonly kernel: Kernel;
  readonly events: EventLog;
  readonly startedAt = Date.now();
  readonly devices: DeviceManager;
  readonly channel: ChannelServer;
  /** The progress oracle: stuck acknowledgements and readBegins, livelocked faults, deadlock cycles. */
  readonly progress: ProgressMonitor;
  private unobserve: () => void;
  /** The trace recorder (null when tracing is off). */
  readonly trace: TraceRecorder | null = null;
  private untrace: () => void = () => undefined;
  ready = false;
  /** The HTTP API requires a token of the channel's table (src/http/auth.ts). */
  readonly apiAuth: boolean;

  constructor(opts: ServiceOptions = {}) {
    const logger = opts.logger;
    const log: Log = opts.log ?? (logger ? (level, msg, data) => logger[level](data ?? {}, msg) : () => undefined);
    this.kernel = new Kernel(opts.kernel);
    this.events = new EventLog(opts.eventCapacity ?? 10_000, opts.eventRows ?? DEFAULT_EVENT_ROWS);
    // Deferred: the log takes the records in batches (at most 10 ms late), not inside every round;
    // every read of the log flushes first.
    this.events.sync = () => this.kernel.flushObservers();
    this.unobserve = this.kernel.observe({ deferred: true, onInvalidation: (rec) => this.events.add(rec) });
    this.devices = new DeviceManager(this.kernel, { deadlineMs: opts.deadlineMs, log, logger });
    const tokens = TokenTable.parse(opts.tokens);
    this.apiAuth = opts.apiAuth ?? !tokens.usingDefault;
    if (tokens.usingDefault) log('warn', 'DEVMIRROR_TOKENS is not set: the notifier channel accepts the embedded local token "devmirror-local" for every process (local use only)');
    this.channel = new ChannelServer(this.kernel, {
      tokens,
      limits: { deadlineMs: opts.deadlineMs, ...opts.channel },
      allocateId: () => this.devices.allocateId(),
      bindWorker: (token) => this.devices.workerByToken(token),
      log,
      logger,
    });
    const traceEvents = opts.traceEvents ?? 0;
    if (traceEvents > 0) ({ recorder: this.trace, stop: this.untrace } = startTracing(this.kernel, this, traceEvents));
    this.progress = this.startProgress(opts, log);
  }

  private startProgress(opts: ServiceOptions, log: Log): ProgressMonitor {
    const m = new ProgressMonitor(this.kernel, () => [...this.devices.list(), ...this.channel.list()], opts.progress);
    m.onFinding = (f) => log('warn', `progress: ${f.kind} on ${f.device}: ${f.message}`);
    m.start();
    return m;
  }

  /** Serves the notifier channel (/v1/notifier/ws) on the HTTP server. */
  attach(server: Server): void {
    this.channel.attach(server);
    // Device workers created once the server listens subscribe through the channel.
    this.devices.channelUrl = () => {
      const a = server.address();
      if (!a || typeof a !== 'object') return null;
      const host = a.family === 'IPv6' ? `[${a.address === '::' ? '::1' : a.address}]` : a.address === '0.0.0.0' ? '127.0.0.1' : a.address;
      return `ws://${host}:${a.port}${CHANNEL_PATH}`;
    };
  }

  get bootId(): number {
    return this.kernel.bootId;
  }

  async start(): Promise<void> {
    this.ready = true;
  }

  /**
   * Graceful shutdown: not ready (no new work), the channel refuses new connections and closes the
   * open ones (1001; their pending acknowledgements are released), then every worker device is
   * unregistered (release, waiting for invalidations in flight) and stopped.
   */
  async stop(): Promise<void> {
    this.ready = false;
    this.progress.stop();
    this.devices.closed = true;
    await this.channel.close();
    await this.devices.stopAll();
    this.unobserve();
    this.untrace();
  }
}
