/**
 * Tracing of a Service: the recorder wired to its kernel and its devices, and the export used by
 * GET /v1/trace, `devmirror soak --trace` and tests.
 */
import { performance } from 'node:perf_hooks';
import type { Kernel } from '../kernel/kernel.js';
import { attachTracing } from './kernel-hooks.js';
import { TraceRecorder, type DeviceName, type TraceEntry } from './recorder.js';
import { toChromeTrace, type ChromeTrace } from './chrome-export.js';

/** Where device names come from (the service's device manager and channel). */
export interface DeviceDirectory {
  devices: { devices: Map<number, { name: string; kind: string }> };
  channel: { devices: Map<number, { name: string; kind: string }> };
}

/** Default number of entries an export holds (the newest), and the most one may ask for. */
export const DEFAULT_EXPORT_LIMIT = 10_000;

export function startTracing(k: Kernel, dir: DeviceDirectory, capacity: number): { recorder: TraceRecorder; stop: () => void } {
  const recorder = new TraceRecorder(capacity);
  recorder.resolveDevice = (id): DeviceName | null => {
    const w = dir.devices.devices.get(id);
    if (w) return { name: w.name, transport: 'worker', kind: w.kind };
    const e = dir.channel.devices.get(id);
    return e ? { name: e.name, transport: 'external', kind: e.kind } : null;
  };
  return { recorder, stop: attachTracing(k, recorder) };
}

export interface ExportOptions {
  since?: number;
  limit?: number;
  /** Entries of this process only (and the machine-wide ones). */
  pid?: number;
  /** Whether the reader may see an entry of this process (a token's grant). */
  visible?: (pid: number) => boolean;
  bootId?: number;
}

/** The Chrome trace of what `recorder` holds, filtered and paged as asked. */
export function exportTrace(k: Kernel, recorder: TraceRecorder, opts: ExportOptions = {}): ChromeTrace {
  const filter =
    opts.pid === undefined && opts.visible === undefined
      ? undefined
      : (e: TraceEntry): boolean => e.pid === null || ((opts.pid === undefined || e.pid === opts.pid) && (opts.visible === undefined || opts.visible(e.pid)));
  const page = recorder.query({ since: opts.since, limit: opts.limit ?? DEFAULT_EXPORT_LIMIT, filter });
  const names = {
    process: (pid: number) => k.processes.get(pid)?.name ?? recorder.processNames.get(pid),
    device: (id: number) => {
      recorder.noteDevice(id);
      return recorder.deviceNames.get(id);
    },
  };
  return toChromeTrace(page.entries, names, {
    exporter: 'devmirror',
    bootId: opts.bootId ?? k.bootId,
    clock: 'performance.now() of the kernel process, microseconds',
    timeOriginMs: performance.timeOrigin,
    exportedAt: new Date().toISOString(),
    entries: page.entries.length,
    nextSince: page.nextSince,
    dropped: page.dropped,
    recorded: recorder.recorded,
    capacity: recorder.capacity,
  });
}
