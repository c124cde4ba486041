/**
 * Load against a running kernel service (`devmirror bench --target URL --process NAME`): the load
 * generator of a heterogeneous system (docker compose), where the kernel, its worker devices and
 * external device clients run in other processes or containers.
 *
 * It drives the workload through the HTTP API on a process found by name, and measures each
 * syscall's round trip: the kernel answers only after every subscriber acknowledged the start and
 * the end was sent, so the latency includes the whole invalidation fan-out to the devices that
 * mirror the range (plus the HTTP hop, reported as such). The devices' own figures come from the
 * API before and after: notifier calls each got and answered, accesses the sanitizer checked,
 * findings, state.
 *
 * Operations stay inside a mapping: a named one of the process (`window`, non-destructive
 * operations only: madvise DONTNEED, mprotect toggles, clear_refs) or, for munmap, a scratch
 * mapping the load generator maps itself and unmaps at the end.
 */
import { performance } from 'node:perf_hooks';
import { DevmirrorError } from '../errors.js';
import { log2Histogram, machine, percentiles, type Percentiles } from '../lib/stats.js';
import { mulberry } from '../lib/random.js';
import { apiRequest as api } from '../client/api.js';
import { resolveByName } from '../client/resolve.js';
import { esc, fmtUs, histogram } from './svg.js';

const PAGE = 4096;

export type RemoteWorkload = 'madvise' | 'mprotect' | 'munmap' | 'soft-dirty' | 'mixed';
export const REMOTE_WORKLOADS: readonly RemoteWorkload[] = ['madvise', 'mprotect', 'munmap', 'soft-dirty', 'mixed'];

export interface RemoteOptions {
  /** http(s)://host:port of the kernel service. */
  target: string;
  process: string;
  /** A mapping of the process, by name: the devices' window. Without it, a scratch mapping. */
  window?: string;
  workload: RemoteWorkload;
  ops?: number;
  durationMs?: number;
  rangePages: number;
  /** Pages of the scratch mapping (munmap, or no window). */
  areaPages: number;
  seed: number;
  /** Concurrent requests (each its own syscall, as threads of the program would issue them). */
  concurrency: number;
  /** The token for a service whose API requires one (never written to the report). */
  token?: string;
}

interface DeviceRow {
  id: number;
  name: string;
  kind: string;
  transport: string;
  state: string;
  /** Notifier calls delivered to the device: invalidation starts (and, for kvm, its aging calls). */
  calls: number;
  /** Answered OK. */
  answered: number;
  /** Answered "no": a refused non-blockable start, or an aging call that found nothing young. */
  refused: number;
  checked: number;
  findings: number;
}

export interface RemoteReport {
  bench: 'devmirror-remote';
  machine: Record<string, unknown>;
  options: RemoteOptions;
  pid: number;
  area: { start: number; end: number; source: string };
  ops: number;
  errors: Record<string, number>;
  durationMs: number;
  opsPerSec: number;
  /** Per operation: its HTTP round trip, which includes the invalidation fan-out. */
  latency: Array<{ op: string; count: number; us: Percentiles; histogram: number[] }>;
  devices: DeviceRow[];
  /** The sanitizer's findings (the latest 20 per device) of every device that has any. */
  findings: Array<{ device: string; findings: unknown[] }>;
  totals: { calls: number; answered: number; refused: number; checked: number; findings: number; devicesNotRunning: number };
}



function deviceRows(items: Array<Record<string, unknown>>): Map<number, DeviceRow> {
  const out = new Map<number, DeviceRow>();
  for (const d of items) {
    const h = (d.handshake ?? {}) as Record<string, number>;
    const s = (d.sanitizer ?? {}) as Record<string, number>;
    out.set(d.id as number, {
      id: d.id as number,
      name: String(d.name),
      kind: String(d.kind),
      transport: String(d.transport),
      state: String(d.state),
      // Worker devices count calls/answered, external ones starts/acks.
      calls: h.calls ?? h.starts ?? 0,
      answered: h.answered ?? h.acks ?? 0,
      refused: h.refused ?? 0,
      checked: s.checked ?? 0,
      findings: s.findings ?? 0,
    });
  }
  return out;
}


export async function runRemote(o: RemoteOptions, progress?: (done: { elapsedMs: number; ops: number }) => void): Promise<RemoteReport> {
  if (o.ops === undefined && o.durationMs === undefined) throw new DevmirrorError('DM_ERR_VALIDATION', 'give a duration or an operation count');
  if (!REMOTE_WORKLOADS.includes(o.workload)) throw new DevmirrorError('DM_ERR_VALIDATION', `--target runs ${REMOTE_WORKLOADS.join(', ')}`);
  const base = o.target.replace(/\/+$/, '');
  const ep = { base, token: o.token };
  // munmap storms never touch a named mapping: they run on a scratch mapping of their own.
  const { pid, window } = await resolveByName(ep, o.process, o.workload !== 'munmap' ? o.window : undefined);
  let area: RemoteReport['area'];
  let scratch: { addr: number; length: number } | null = null;
  if (window) area = { ...window, source: `mapping ${o.window}` };
  else {
    const length = o.areaPages * PAGE;
    const { addr } = await api<{ addr: number }>(ep, 'POST', `/v1/processes/${pid}/mmap`, { length, prot: ['read', 'write'], populate: true, name: 'loadgen' });
    scratch = { addr, length };
    area = { start: addr, end: addr + length, source: 'scratch mapping loadgen' };
  }
  const pages = (area.end - area.start) / PAGE;
  const range = Math.max(1, Math.min(o.rangePages, pages));
  const rng = mulberry(o.seed);
  const before = deviceRows((await api<{ items: Array<Record<string, unknown>> }>(ep, 'GET', '/v1/devices')).items);
  const samples = new Map<string, number[]>();
  const errors: Record<string, number> = {};
  const order: RemoteWorkload[] = o.workload === 'mixed' ? ['madvise', 'mprotect', 'soft-dirty', ...(scratch ? (['munmap'] as const) : [])] : [o.workload];
  let issued = 0;
  let done = 0;
  const t0 = performance.now();
  const end = o.durationMs !== undefined ? t0 + o.durationMs : Infinity;
  let lastReport = t0;
  const timed = async (name: string, path: string, body: unknown): Promise<void> => {
    const t = performance.now();
    try {
      await api(ep, 'POST', path, body);
      let s = samples.get(name);
      if (!s) samples.set(name, (s = []));
      s.push((performance.now() - t) * 1000);
    } catch (e) {
      const key = `${name}: ${(e as { code?: string }).code ?? (e as Error).message}`;
      errors[key] = (errors[key] ?? 0) + 1;
    }
  };
  const one = async (n: number): Promise<void> => {
    const kind = order[n % order.length];
    const first = Math.floor(rng() * (pages - range + 1));
    const addr = area.start + first * PAGE;
    const length = range * PAGE;
    const p = `/v1/processes/${pid}`;
    switch (kind) {
      case 'madvise':
        return timed('madvise DONTNEED', `${p}/madvise`, { addr, length, advice: 'dontneed' });
      case 'mprotect':
        await timed('mprotect RO', `${p}/mprotect`, { addr, length, prot: ['read'] });
        return timed('mprotect RW', `${p}/mprotect`, { addr, length, prot: ['read', 'write'] });
      case 'soft-dirty':
        return timed('clear_refs soft-dirty', `${p}/clear_refs`, { mode: 'soft-dirty' });
      case 'munmap':
        // Unmap a piece of the scratch mapping and map it back in place (populated), as an
        // allocator returning and taking memory does.
        await timed('munmap', `${p}/munmap`, { addr, length });
        return timed('mmap (fixed, populate)', `${p}/mmap`, { addr, length, prot: ['read', 'write'], fixed: true, populate: true, name: 'loadgen' });
    }
  };
  const worker = async (): Promise<void> => {
    while (performance.now() < end && (o.ops === undefined || issued < o.ops)) {
      const n = issued++;
      await one(n);
      done++;
      const now = performance.now();
      if (progress && now - lastReport >= 1000) {
        lastReport = now;
        progress({ elapsedMs: now - t0, ops: done });
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, o.concurrency) }, () => worker()));
  } finally {
    if (scratch) await api(ep, 'POST', `/v1/processes/${pid}/munmap`, scratch).catch(() => undefined);
  }
  const durationMs = performance.now() - t0;
  const after = deviceRows((await api<{ items: Array<Record<string, unknown>> }>(ep, 'GET', '/v1/devices')).items);
  const devices: DeviceRow[] = [];
  for (const [id, a] of after) {
    const b = before.get(id);
    devices.push({
      ...a,
      calls: a.calls - (b?.calls ?? 0),
      answered: a.answered - (b?.answered ?? 0),
      refused: a.refused - (b?.refused ?? 0),
      checked: a.checked - (b?.checked ?? 0),
      // Findings are never forgotten: report the device's total, a correct device has none.
      findings: a.findings,
    });
  }
  // A finding is a bug (in a device, or in devmirror): the report carries the evidence.
  const findings: RemoteReport['findings'] = [];
  for (const d of devices) {
    if (d.findings === 0) continue;
    const one = await api<{ sanitizer?: { findings?: unknown[] } }>(ep, 'GET', `/v1/devices/${d.id}`).catch(() => null);
    findings.push({ device: d.name, findings: (one?.sanitizer?.findings ?? []).slice(-20) });
  }
  const latency = [...samples].map(([op, s]) => ({ op, count: s.length, us: percentiles(s), histogram: log2Histogram(s) }));
  return {
    bench: 'devmirror-remote',
    machine: machine(),
    // The token stays out of the JSON and HTML reports.
    options: { ...o, token: undefined },
    pid,
    area,
    ops: done,
    errors,
    durationMs,
    opsPerSec: Math.round((done / durationMs) * 1000),
    latency,
    devices,
    findings,
    totals: {
      calls: devices.reduce((x, d) => x + d.calls, 0),
      answered: devices.reduce((x, d) => x + d.answered, 0),
      refused: devices.reduce((x, d) => x + d.refused, 0),
      checked: devices.reduce((x, d) => x + d.checked, 0),
      findings: devices.reduce((x, d) => x + d.findings, 0),
      devicesNotRunning: devices.filter((d) => d.state !== 'running').length,
    },
  };
}

export function remoteSummary(r: RemoteReport): string {
  const lines = [
    `${r.ops} operations in ${(r.durationMs / 1000).toFixed(1)} s (${r.opsPerSec}/s) on ${r.options.process} (pid ${r.pid}), ${r.area.source}; ` +
      `devices got ${r.totals.calls} notifier calls, answered ${r.totals.answered} (${r.totals.refused} no); sanitizer ${r.totals.checked} accesses checked, ${r.totals.findings} findings` +
      (Object.keys(r.errors).length ? `; errors ${JSON.stringify(r.errors)}` : ''),
    '',
    'operation (HTTP round trip, includes the invalidation fan-out)   count  p50  p90  p99  p99_9  max',
    ...r.latency.map((l) => `  ${l.op.padEnd(58)} ${l.count}  ${fmtUs(l.us.p50)}  ${fmtUs(l.us.p90)}  ${fmtUs(l.us.p99)}  ${fmtUs(l.us.p99_9)}  ${fmtUs(l.us.max)}`),
    '',
    'device (transport)   state   calls  answered  refused  checked  findings',
    ...r.devices.map((d) => `  ${`${d.name} (${d.kind}, ${d.transport})`.padEnd(28)} ${d.state}  ${d.calls}  ${d.answered}  ${d.refused}  ${d.checked}  ${d.findings}`),
    ...r.findings.flatMap((f) => [`\nsanitizer findings of ${f.device} (latest ${f.findings.length}):`, ...f.findings.map((x) => `  ${JSON.stringify(x)}`)]),
  ];
  return lines.join('\n') + '\n';
}

/** One self-contained page: configuration, latency table and histograms, the devices. */
export function renderRemoteHtml(r: RemoteReport): string {
  const rows = r.latency
    .map((l) => `<tr><td>${esc(l.op)}</td><td>${l.count}</td>${[l.us.p50, l.us.p90, l.us.p99, l.us.p99_9, l.us.max].map((v) => `<td>${fmtUs(v)}</td>`).join('')}</tr>`)
    .join('');
  const devs = r.devices
    .map((d) => `<tr><td>${esc(d.name)}</td><td>${esc(d.kind)}</td><td>${esc(d.transport)}</td><td>${esc(d.state)}</td><td>${d.calls}</td><td>${d.answered}</td><td>${d.refused}</td><td>${d.checked}</td><td><b>${d.findings}</b></td></tr>`)
    .join('');
  const hists = r.latency.map((l) => `<figure>${histogram(l.op, l.histogram)}</figure>`).join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>devmirror load generator report</title>
<style>body{font:13px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.hists{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}pre{background:#f6f6f6;padding:.5em}</style></head><body>
<h1>devmirror load generator</h1><pre>${esc(JSON.stringify({ machine: r.machine, options: r.options, pid: r.pid, area: r.area }, null, 2))}</pre>
<p>${r.ops} operations in ${(r.durationMs / 1000).toFixed(1)} s (${r.opsPerSec}/s). Devices got ${r.totals.calls} notifier calls and answered ${r.totals.answered} (${r.totals.refused} no); the sanitizer checked ${r.totals.checked} accesses: <b>${r.totals.findings} findings</b>.</p>
<h2>Operations (HTTP round trip; the kernel answers after the invalidation fan-out)</h2>
<table><tr><th>operation</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99_9</th><th>max</th></tr>${rows}</table>
<div class="hists">${hists}</div>
<h2>Devices (during the run)</h2>
<table><tr><th>name</th><th>kind</th><th>transport</th><th>state</th><th>notifier calls</th><th>answered</th><th>answered no</th><th>accesses checked</th><th>findings</th></tr>${devs}</table>
</body></html>
`;
}
