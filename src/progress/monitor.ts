/**
 * The progress oracle of the running service, beside the sanitizer: where the sanitizer proves a
 * device never uses a page it was told to stop using, this one proves the system keeps moving.
 * Every `intervalMs` it looks at each device's kernel side (both transports):
 *
 *   - an acknowledgement owed for longer than `watchdogMs` (the kernel is waiting in
 *     invalidate_range_start; the deadline will evict the device later, this says why earlier);
 *   - a readBegin waiting for longer than `watchdogMs` (a device fault behind an open window);
 *   - a range fault answered EBUSY `retryBudget` times in a row (a livelock: invalidations keep
 *     overlapping the fault, named by origin).
 *
 * Each stuck report carries the wait-for graph of the moment (src/progress/wait-for.ts); a cycle
 * in it makes the finding a deadlock. Without a view of the device's own locks the device-side
 * edge is inferred, and marked so. Findings are kept in a bounded list (GET /v1/progress, the
 * dashboard), one per (device, kind, invalidation or subscription).
 */
import type { Kernel } from '../kernel/kernel.js';
import type { ProgressSource } from './counters.js';
import { buildWaitForGraph, type WaitForGraph } from './wait-for.js';

export type ProgressKind = 'deadlock' | 'stuck-ack' | 'stuck-readbegin' | 'livelock';

export interface ProgressFinding {
  id: number;
  kind: ProgressKind;
  device: string;
  message: string;
  /** Date.now() when it was reported. */
  at: number;
  graph: WaitForGraph | null;
}

export interface ProgressOptions {
  watchdogMs?: number;
  retryBudget?: number;
  intervalMs?: number;
  /** Findings kept (oldest dropped first). */
  keep?: number;
}

/** The default watchdog (DEVMIRROR_PROGRESS_WATCHDOG_MS): half the default acknowledgement deadline. */
export const DEFAULT_WATCHDOG_MS = 500;

export class ProgressMonitor {
  readonly watchdogMs: number;
  readonly retryBudget: number;
  readonly intervalMs: number;
  private readonly keep: number;
  readonly findings: ProgressFinding[] = [];
  /** Findings reported since start, including those aged out of the list. */
  reported = 0;
  private readonly seen = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  onFinding: ((f: ProgressFinding) => void) | null = null;

  constructor(
    private readonly kernel: Kernel,
    private readonly sources: () => ProgressSource[],
    o: ProgressOptions = {},
  ) {
    this.watchdogMs = o.watchdogMs ?? DEFAULT_WATCHDOG_MS;
    this.retryBudget = o.retryBudget ?? 16;
    this.intervalMs = o.intervalMs ?? Math.max(50, Math.min(1000, Math.floor(this.watchdogMs / 4)));
    this.keep = o.keep ?? 200;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The wait-for graph now (dashboards, GET /v1/progress). */
  graph(): WaitForGraph {
    return buildWaitForGraph({ kernel: this.kernel, devices: this.sources().filter((s) => s.alive).map((s) => ({ name: s.name, source: s })) });
  }

  /** One pass (the timer's; tests call it directly). */
  check(now = Date.now()): ProgressFinding[] {
    const out: ProgressFinding[] = [];
    let graph: WaitForGraph | null = null;
    const g = (): WaitForGraph => (graph ??= this.graph());
    for (const s of this.sources()) {
      if (!s.alive) continue;
      for (const a of s.pendingAckList()) {
        const age = now - a.sentMs;
        if (age < this.watchdogMs) continue;
        const gr = g();
        const inCycle = gr.cycle?.some((n) => n === `device ${s.name}`) ?? false;
        out.push(...this.report(`${s.name}:ack:${a.invalidationId}`, inCycle ? 'deadlock' : 'stuck-ack', s.name, inCycle ? `deadlock: ${gr.cycleText}` : `invalidation #${a.invalidationId} has waited ${age} ms for ${s.name}'s acknowledgement (subscription ${a.subscriptionId})`, gr, now));
      }
      for (const w of s.progress.waits.values()) {
        const age = now - w.sinceMs;
        if (age < this.watchdogMs) continue;
        const gr = g();
        const inCycle = gr.cycle?.some((n) => n.startsWith(`${s.name} readBegin`)) ?? false;
        out.push(...this.report(`${s.name}:rb:${w.subId}:${w.sinceMs}`, inCycle ? 'deadlock' : 'stuck-readbegin', s.name, inCycle ? `deadlock: ${gr.cycleText}` : `a readBegin of ${s.name} (subscription ${w.subId}) has waited ${age} ms for an invalidation window to close`, gr, now));
      }
      for (const [subId, r] of s.progress.retries) {
        if (r.consecutive < this.retryBudget) continue;
        out.push(...this.report(`${s.name}:retry:${subId}:${r.total - r.consecutive}`, 'livelock', s.name, `a range fault of ${s.name} (subscription ${subId}) was answered EBUSY ${r.consecutive} times in a row: invalidations from ${r.origins.join(', ') || '?'} kept overlapping it`, null, now));
      }
    }
    return out;
  }

  private report(key: string, kind: ProgressKind, device: string, message: string, graph: WaitForGraph | null, now: number): ProgressFinding[] {
    // The kind is part of the key: a wait first reported as stuck is reported again when it turns
    // out to be on a cycle (a deadlock).
    key = `${kind}:${key}`;
    if (this.seen.has(key)) return [];
    this.seen.add(key);
    // Bounded; forgetting the oldest keys (insertion order) at worst reports an old wait again.
    if (this.seen.size > 10_000) for (const k of [...this.seen].slice(0, 1000)) this.seen.delete(k);
    const f: ProgressFinding = { id: ++this.reported, kind, device, message, at: now, graph };
    this.findings.push(f);
    if (this.findings.length > this.keep) this.findings.shift();
    this.onFinding?.(f);
    return [f];
  }
}
