/**
 * `devmirror bench`: starts a configured system (device workers of each kind over one process's
 * area, their DMA engines running), drives a workload for a duration or an operation count, and
 * reports, per event and device kind: invalidations, the full start/ack/end round and each
 * subscriber's acknowledgement (p50/p90/p99/p99_9/max), throughput, refaults, device faults,
 * sanitizer checks and findings, evictions, and the machine.
 */
import { performance } from 'node:perf_hooks';
import { Kernel } from '../kernel/kernel.js';
import { PROT } from '../kernel/vma.js';
import { PAGE_SIZE } from '../kernel/layout.js';
import { EVENT_NAMES } from '../notifier/range.js';
import { DeviceManager } from '../devices/device-manager.js';
import { DEVICE_KINDS, MAX_GRANULARITY_PAGES, type DeviceKind, type EventPolicy } from '../devices/protocol.js';
import { DevmirrorError } from '../errors.js';
import { log2Histogram, machine, percentiles, type Percentiles } from '../lib/stats.js';
import { mulberry } from '../lib/random.js';
import { WORKLOADS, step, type Pattern, type WorkloadContext, type WorkloadName } from './workloads.js';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { ChildProcess } from 'node:child_process';
import { ChannelServer, CHANNEL_PATH } from '../channel/channel-server.js';
import { startClientProcesses, stopClientProcesses } from './client-processes.js';
import type { Baselines } from './baselines.js';
import type { ParsedTrace } from './strace.js';
import { parseStraceSharded } from './shards.js';
import { DEFAULT_REPLAY, replayTrace, type ReplayStats } from './replay.js';
import { planAddressSpaces } from './address-spaces.js';

export interface BenchOptions {
  /** Device workers per kind. */
  devices: Partial<Record<DeviceKind, number>>;
  /** External device clients (DeviceClient connections over the notifier channel), spread over at most four processes. */
  clients?: number;
  policy: EventPolicy;
  /** Device accesses per second, per device (0: DMA engines idle). */
  dmaRate: number;
  /** Fraction of device accesses that write (default 0.3). Event-aware devices keep read access
   * across a downgrade, so their advantage grows as the mix gets read-mostly. */
  writeMix?: number;
  workload: WorkloadName;
  /** Stop after this long (ms) ... */
  durationMs?: number;
  /** ... or after this many operations (whichever comes first). */
  ops?: number;
  /** Pages the devices mirror. */
  areaPages: number;
  /** Pages per operation. */
  rangePages: number;
  pattern: Pattern;
  seed: number;
  /** Acknowledgement deadline (ms): long, so a busy machine never evicts a healthy device. */
  deadlineMs: number;
  /** Replay a real program's strace instead of the workload (see replay.ts for the model). */
  replay?: {
    file: string;
    timeScale?: number;
    density?: number;
    maxTouchPages?: number;
    /**
     * Where the DMA engines work: `written` (default), the pages the replay wrote in the window
     * around the program's last touch; `window`, every page of that window (the model before
     * 2026-11-27 13:17, which also reads memory the program never wrote: the zero page).
     */
    dmaTarget?: 'written' | 'window';
    /** The address space the devices attach to (an index of the report's `replay.spaces`); default the main one. */
    space?: number;
  };
  /**
   * Device options per kind, given to every device of that kind (the scalar options of
   * `POST /v1/devices`): gpu { granularityPages, xnack }, rdma { implicit, write }. They override
   * what the run would choose itself.
   */
  deviceOptions?: Partial<Record<DeviceKind, Record<string, number | boolean>>>;
}

/** The device options a bench run takes, per kind, with their checks (as in POST /v1/devices). */
export const BENCH_DEVICE_OPTIONS: Partial<Record<DeviceKind, Record<string, (v: unknown) => boolean>>> = {
  gpu: { granularityPages: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= MAX_GRANULARITY_PAGES, xnack: (v) => typeof v === 'boolean' },
  rdma: { implicit: (v) => typeof v === 'boolean', write: (v) => typeof v === 'boolean' },
};

export const DEFAULT_BENCH: BenchOptions = {
  devices: { gpu: 1, rdma: 1, kvm: 1, dmirror: 1 },
  policy: 'faithful',
  dmaRate: 200,
  workload: 'mixed',
  durationMs: 5000,
  areaPages: 512,
  rangePages: 16,
  pattern: 'random',
  seed: 1,
  deadlineMs: 60_000,
};

export interface EventKindRow {
  event: string;
  deviceKind: string;
  invalidations: number;
  round: Percentiles;
  ack: Percentiles;
}

export interface BenchReport {
  bench: 'devmirror';
  machine: Record<string, unknown>;
  options: BenchOptions;
  durationMs: number;
  ops: number;
  opsPerSec: number;
  invalidations: number;
  invalidationsPerSec: number;
  /** Every invalidation's full start/ack/end round. */
  round: Percentiles;
  /** Per event: the full start/ack/end round (all subscribers). */
  events: Array<{ event: string; invalidations: number; refused: number; round: Percentiles }>;
  /** Log2 histograms (bucket i: [2^i, 2^(i+1)) µs) keyed `round|EVENT` and `ack|EVENT|KIND`. */
  histograms: Record<string, number[]>;
  /** Same-run baselines (with --baselines). */
  baselines?: Baselines;
  /** Per event and device kind: rounds that reached that kind, and its acknowledgements. */
  byEventAndKind: EventKindRow[];
  /**
   * refaults: refaulted pages (grants of pages an invalidation had taken); refaultFaults: device
   * faults that refaulted at least one page (a gpu's fault of a 2 MiB range is one, with up to 512
   * refaulted pages); refaultCauses: refaulted pages by the `EVENT:origin` of the invalidation that
   * took them; options: what a worker device was created with (its personality's options).
   */
  devices: Array<{ name: string; kind: string; state: string; stateReason?: string; options?: Record<string, unknown>; faults: number; refaults: number; refaultFaults: number; refaultCauses: Record<string, number>; invalidations: number; checked: number; findings: number }>;
  /** With --replay: what was replayed. */
  replay?: Omit<ReplayStats, 'writableRanges'> & { file: string; events: number; tasks: number };
  totals: { deviceFaults: number; refaults: number; refaultFaults: number; checked: number; findings: number; evictions: number };
}

export function validateBench(o: BenchOptions): void {
  const bad = (m: string): never => {
    throw new DevmirrorError('DM_ERR_VALIDATION', m);
  };
  // A scenario file holds any JSON or YAML: every option is checked for its type too, so that a run
  // never starts from (or throws a TypeError on) a value of the wrong type.
  const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (!WORKLOADS.includes(o.workload)) bad(`workload must be one of ${WORKLOADS.join(', ')}`);
  if (typeof o.devices !== 'object' || o.devices === null || Array.isArray(o.devices)) bad('devices must map device kinds to counts');
  if (!['faithful', 'aware', 'blind'].includes(o.policy)) bad('policy must be faithful, aware or blind');
  if (!isNum(o.dmaRate) || o.dmaRate < 0) bad('dmaRate must be a number >= 0');
  if (o.durationMs !== undefined && (!isNum(o.durationMs) || o.durationMs < 0)) bad('durationMs must be a number >= 0');
  if (o.ops !== undefined && (!Number.isSafeInteger(o.ops) || o.ops < 0)) bad('ops must be a non-negative integer');
  if (!Number.isSafeInteger(o.seed)) bad('seed must be an integer');
  if (!isNum(o.deadlineMs) || o.deadlineMs <= 0) bad('deadlineMs must be a number > 0');
  if (o.replay !== undefined) {
    const r = o.replay as Partial<NonNullable<BenchOptions['replay']>> | null;
    if (typeof r !== 'object' || r === null || typeof r.file !== 'string') bad('replay must be { file, timeScale?, density? }');
    if (r!.timeScale !== undefined && !isNum(r!.timeScale)) bad('replay time scale must be a number');
    if (r!.density !== undefined && (!isNum(r!.density) || r!.density < 0 || r!.density > 1)) bad('replay density must be between 0 and 1');
    if (r!.dmaTarget !== undefined && r!.dmaTarget !== 'written' && r!.dmaTarget !== 'window') bad('replay dmaTarget must be written or window');
    if (r!.space !== undefined && (!Number.isSafeInteger(r!.space) || r!.space < 0)) bad('replay space must be an address space number (0, 1, ...)');
  }
  if (o.deviceOptions !== undefined) {
    const d = o.deviceOptions as unknown;
    if (typeof d !== 'object' || d === null || Array.isArray(d)) bad('deviceOptions must map device kinds to options');
    for (const [kind, opts] of Object.entries(d as Record<string, unknown>)) {
      const known = BENCH_DEVICE_OPTIONS[kind as DeviceKind];
      if (!known) bad(`deviceOptions: no options for device kind ${kind} (${Object.keys(BENCH_DEVICE_OPTIONS).join(', ')} take some)`);
      if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) bad(`deviceOptions.${kind} must be an object`);
      for (const [key, v] of Object.entries(opts as Record<string, unknown>)) {
        if (!known![key]) bad(`deviceOptions.${kind}: unknown option ${key} (${Object.keys(known!).join(', ')})`);
        if (!known![key](v)) bad(`deviceOptions.${kind}.${key}: bad value ${JSON.stringify(v)}`);
      }
    }
  }
  for (const [k, n] of Object.entries(o.devices)) {
    if (!DEVICE_KINDS.includes(k as DeviceKind)) bad(`unknown device kind ${k}`);
    if (!Number.isInteger(n) || (n as number) < 0 || (n as number) > 256) bad(`devices.${k} must be 0..256`);
  }
  if (!Number.isInteger(o.areaPages) || o.areaPages < 1 || o.areaPages > 262_144) bad('areaPages must be 1..262144');
  if (o.clients !== undefined && (!Number.isInteger(o.clients) || o.clients < 0 || o.clients > 4000)) bad('clients must be 0..4000');
  if (!Number.isSafeInteger(o.rangePages) || o.rangePages < 1) bad('rangePages must be an integer of at least 1');
  if (o.durationMs === undefined && o.ops === undefined && !o.replay) bad('give a duration or an operation count');
  if (o.replay && (o.replay.timeScale ?? 0) < 0) bad('replay time scale must be >= 0');
  if (o.writeMix !== undefined && !(isNum(o.writeMix) && o.writeMix >= 0 && o.writeMix <= 1)) bad('write mix must be between 0 and 1');
  if (!['sequential', 'random', 'hotset'].includes(o.pattern)) bad('pattern must be sequential, random or hotset');
}

export interface Progress {
  (done: { elapsedMs: number; ops: number; invalidations: number }): void;
}

/** Runs one bench and returns its report (the caller prints it). */
export async function runBench(o: BenchOptions, progress?: Progress): Promise<BenchReport> {
  validateBench(o);
  const areaBytes = o.areaPages * PAGE_SIZE;
  // RAM: the area, a copy for COW (fork), and headroom for tables and migrations.
  const memoryBytes = Math.max(64, Math.ceil((areaBytes * 4) / 2 ** 20 / 2) * 2) * 2 ** 20;
  let trace: ParsedTrace | null = null;
  if (o.replay) {
    try {
      // Large traces are parsed on a piscina thread (src/loadgen/shards.ts).
      trace = await parseStraceSharded(readFileSync(o.replay.file, 'utf8'));
    } catch (e) {
      throw new DevmirrorError('DM_ERR_VALIDATION', `--replay ${o.replay.file}: ${(e as Error).message}`);
    }
    const n = planAddressSpaces(trace).spaces.length;
    if (o.replay.space !== undefined && o.replay.space >= n) {
      throw new DevmirrorError('DM_ERR_VALIDATION', `--replay-space ${o.replay.space}: ${o.replay.file} has ${n} address space${n === 1 ? '' : 's'} (0 to ${n - 1})`);
    }
  }
  const k = new Kernel({ memoryBytes: trace ? Math.max(memoryBytes, 512 * 2 ** 20) : memoryBytes, deviceMemoryBytes: 16 * 2 ** 20 });
  const p = k.createProcess(trace ? 'replay' : 'bench');
  let addr = 0;
  if (!trace) {
    addr = await k.mmap(p.pid, { length: areaBytes, prot: PROT.READ | PROT.WRITE, populate: true });
    await k.write(p.pid, addr, new Uint8Array(areaBytes).fill(1));
  }
  const mgr = new DeviceManager(k, { deadlineMs: o.deadlineMs });
  let channel: ChannelServer | null = null;
  let http: Server | null = null;
  let children: ChildProcess[] = [];
  const rounds = new Map<string, number[]>();
  const acks = new Map<string, { event: string; kind: string; rounds: number[]; acks: number[] }>();
  let invalidations = 0;
  const refused = new Map<string, number>();
  const unobserve = k.observe({
    onInvalidation: (rec) => {
      invalidations++;
      const ev = EVENT_NAMES[rec.range.event] ?? 'UNKNOWN';
      // A non-blockable start a subscriber refused (the OOM reaper retries later).
      if (rec.result !== 'ok') refused.set(ev, (refused.get(ev) ?? 0) + 1);
      const total = Math.max(0, rec.endedUs - rec.startedUs);
      let r = rounds.get(ev);
      if (!r) rounds.set(ev, (r = []));
      r.push(total);
      const seen = new Set<string>();
      for (const s of rec.subscribers) {
        const kind = s.info.deviceKind ?? 'kernel';
        const key = `${ev}|${kind}`;
        let a = acks.get(key);
        if (!a) acks.set(key, (a = { event: ev, kind, rounds: [], acks: [] }));
        a.acks.push(Math.max(0, s.ackUs));
        if (!seen.has(kind)) {
          seen.add(kind);
          a.rounds.push(total);
        }
      }
    },
  });
  try {
    for (const kind of DEVICE_KINDS) {
      for (let i = 0; i < (o.devices[kind] ?? 0); i++) {
        // A replayed program's mappings come and go: rdma uses an implicit MR (the whole address
        // space), kvm its whole-mm subscription only (no memslot), and DMA windows follow the
        // program's writable mappings.
        const options: Record<string, unknown> = trace
          ? kind === 'rdma'
            ? { implicit: true }
            : kind === 'kvm'
              ? { memslots: [] }
              : {}
          : kind === 'rdma'
            ? { mrs: [{ addr, length: areaBytes }] }
            : kind === 'kvm'
              ? { memslots: [{ id: 0, baseGfn: 0x100000, npages: o.areaPages, hva: addr }] }
              : {};
        Object.assign(options, o.deviceOptions?.[kind]);
        const dev = await mgr.create({ kind, pid: p.pid, policy: o.policy, options, name: `${kind}${i}` });
        if (o.dmaRate > 0 && !trace) await dev.command('dma', { rate: o.dmaRate, pattern: 'random', writeMix: o.writeMix ?? 0.3, start: addr, end: addr + areaBytes });
      }
    }
    if ((o.clients ?? 0) > 0) {
      if (trace) throw new DevmirrorError('DM_ERR_VALIDATION', '--clients with --replay is not supported yet');
      channel = new ChannelServer(k, { limits: { maxSubscriptions: 4096, deadlineMs: o.deadlineMs }, allocateId: () => mgr.allocateId() });
      http = createServer((_req, res) => res.writeHead(404).end());
      channel.attach(http);
      await new Promise<void>((r) => http!.listen(0, '127.0.0.1', () => r()));
      const port = (http.address() as { port: number }).port;
      children = await startClientProcesses(`ws://127.0.0.1:${port}${CHANNEL_PATH}`, 'devmirror-local', p.pid, addr, areaBytes, o.clients!);
    }
    const ctx: WorkloadContext = { k, p, addr, pages: o.areaPages, rangePages: o.rangePages, pattern: o.pattern, random: mulberry(o.seed), op: 0 };
    invalidations = 0;
    rounds.clear();
    acks.clear();
    refused.clear();
    const t0 = performance.now();
    let lastReport = t0;
    const end = o.durationMs !== undefined ? t0 + o.durationMs : Infinity;
    let replayed: BenchReport['replay'];
    if (trace) {
      const rng = mulberry(o.seed);
      const ro = { ...DEFAULT_REPLAY, ...o.replay };
      const st = await replayTrace(k, p, trace, ro, async (i, stats, writable, lastTouched, written) => {
        ctx.op = stats.replayed;
        // Every 50 calls, point each device's DMA engine at a window of at most 256 pages of the
        // writable memory the program works in now: around the page it last touched (a device
        // works on the buffers the program is using), else at a random live writable range; and
        // (dmaTarget written) at the pages of that window the program wrote: its data, not memory
        // it never touched, whose reads map the zero page.
        if (o.dmaRate > 0 && i % 50 === 0) {
          const w = writable();
          if (w.length > 0) {
            const hot = w.find(([a, b]) => lastTouched >= a && lastTouched < b);
            for (const d of mgr.list()) {
              const [s0, e0] = hot ?? w[Math.floor(rng() * w.length)];
              const pages = (e0 - s0) / PAGE_SIZE;
              const len = Math.min(pages, 256);
              const centre = hot ? Math.floor((lastTouched - s0) / PAGE_SIZE) - len / 2 : rng() * (pages - len + 1);
              const at = s0 + Math.max(0, Math.min(pages - len, Math.floor(centre))) * PAGE_SIZE;
              // An empty list lifts the restriction: a window the program wrote nothing in yet.
              const only = (o.replay?.dmaTarget ?? 'written') === 'written' ? written(at, at + len * PAGE_SIZE, 256) : [];
              await d.command('dma', { rate: o.dmaRate, pattern: 'random', writeMix: o.writeMix ?? 0.3, start: at, end: at + len * PAGE_SIZE, pages: only }).catch(() => undefined);
            }
          }
        }
        const now = performance.now();
        if (progress && now - lastReport >= 1000) {
          lastReport = now;
          progress({ elapsedMs: now - t0, ops: ctx.op, invalidations });
        }
      });
      const { writableRanges: _w, ...rest } = st;
      replayed = { ...rest, file: o.replay!.file, events: trace.events.length, tasks: trace.pids.length };
    }
    while (!trace && performance.now() < end && (o.ops === undefined || ctx.op < o.ops)) {
      await step(o.workload, ctx);
      ctx.op++;
      const now = performance.now();
      if (progress && now - lastReport >= 1000) {
        lastReport = now;
        progress({ elapsedMs: now - t0, ops: ctx.op, invalidations });
      }
      // Let device replies and the event loop in between operations.
      if (ctx.op % 16 === 0) await new Promise((r) => setImmediate(r));
    }
    const durationMs = performance.now() - t0;
    for (const d of mgr.list()) await d.command('dma', { rate: 0 }).catch(() => undefined);
    const devices: BenchReport['devices'] = [];
    for (const d of mgr.list()) {
      if (d.alive) await d.refresh().catch(() => undefined);
      const c = d.counters;
      devices.push({
        name: d.name,
        kind: d.kind,
        state: d.state,
        ...(d.stateReason ? { stateReason: d.stateReason } : {}),
        options: { ...d.options },
        faults: (c.faults ?? 0) + (c.page_faults ?? 0) + (c.pf_taken ?? 0),
        refaults: d.sanitizer?.refaults ?? 0,
        refaultFaults: d.sanitizer?.refaultFaults ?? 0,
        refaultCauses: { ...(d.sanitizer?.refaultCauses ?? {}) },
        invalidations: c.invalidations ?? 0,
        checked: d.sanitizer?.checked ?? 0,
        findings: d.sanitizer?.findings ?? 0,
      });
    }
    for (const d of channel?.list() ?? []) {
      devices.push({
        name: d.name,
        kind: d.kind,
        state: d.state,
        faults: 0,
        refaults: d.sanitizer.stats.refaults,
        refaultFaults: d.sanitizer.stats.refaultFaults,
        refaultCauses: { ...d.sanitizer.stats.refaultCauses },
        invalidations: d.handshake.starts,
        checked: d.sanitizer.stats.checked,
        findings: d.sanitizer.stats.findings,
      });
    }
    const sum = (f: (d: (typeof devices)[number]) => number) => devices.reduce((a, d) => a + f(d), 0);
    return {
      bench: 'devmirror',
      machine: machine(),
      options: o,
      durationMs: Math.round(durationMs),
      ops: ctx.op,
      opsPerSec: Math.round((ctx.op * 1000) / durationMs),
      invalidations,
      invalidationsPerSec: Math.round((invalidations * 1000) / durationMs),
      round: percentiles([...rounds.values()].flat()),
      events: [...rounds.entries()].map(([event, v]) => ({ event, invalidations: v.length, refused: refused.get(event) ?? 0, round: percentiles(v) })).sort((a, b) => b.invalidations - a.invalidations),
      histograms: Object.fromEntries([
        ...[...rounds.entries()].map(([event, v]) => [`round|${event}`, log2Histogram(v)] as const),
        ...[...acks.values()].map((a) => [`ack|${a.event}|${a.kind}`, log2Histogram(a.acks)] as const),
      ]),
      byEventAndKind: [...acks.values()]
        .map((a) => ({ event: a.event, deviceKind: a.kind, invalidations: a.rounds.length, round: percentiles(a.rounds), ack: percentiles(a.acks) }))
        .sort((a, b) => (a.event + a.deviceKind).localeCompare(b.event + b.deviceKind)),
      devices,
      ...(replayed ? { replay: replayed } : {}),
      totals: {
        deviceFaults: sum((d) => d.faults),
        refaults: sum((d) => d.refaults),
        refaultFaults: sum((d) => d.refaultFaults),
        checked: sum((d) => d.checked),
        findings: sum((d) => d.findings),
        evictions: mgr.list().filter((d) => d.state === 'evicted').length + (channel?.list().filter((d) => d.state === 'evicted').length ?? 0),
      },
    };
  } finally {
    unobserve();
    stopClientProcesses(children);
    await channel?.close();
    await new Promise<void>((r) => (http ? http.close(() => r()) : r()));
    await mgr.stopAll();
  }
}
