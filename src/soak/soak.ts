/**
 * `devmirror soak`: the chaos soak. One kernel serving its HTTP API and notifier channel, the four
 * device kinds both as worker threads and as external client processes (each role mirroring its
 * own mapping, its DMA engine writing journalled stamps), a seeded stream of operations on a soak
 * process and its forked children (CPU stores and loads, device stores and loads through dmirror,
 * mprotect, madvise, munmap/mmap, clear_refs, fork, exit, the OOM killer, and the kernel's own
 * activity: reclaim, swap, compaction, migration, NUMA balancing, KSM, khugepaged, THP splits,
 * writeback), and injected faults (crashed, hung and slow devices, refusals of non-blockable
 * ranges, dropped connections, server-side evictions).
 *
 * Operations run one at a time, so the shadow model of user memory (shadow-memory.ts) knows every
 * CPU and device store exactly; the concurrency comes from the DMA engines and the devices. Every
 * loaded page is compared with the model at once, and at each checkpoint (DMA quiesced, no
 * invalidation open) the soak checks:
 * - no lost write: every page of every process equals the model, and every page a device wrote
 *   holds that device's last journalled stamp;
 * - no stale access: the sanitizer found nothing (every device access is checked as it happens);
 * - every invalidation finished within the deadline bound (the acknowledgement deadline, plus the
 *   time allowed to stop an evicted device);
 * - frames and swap balanced (the audit), no subscription left by a device that is gone;
 * - resident memory: sampled at the end of the warm-up (the first minute) and at the end.
 *
 * Everything is recorded (record.ts) with the seed; `devmirror replay FILE` runs the recorded
 * operations and faults again (replay.ts).
 */
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import type { FastifyInstance } from 'fastify';
import { readFileSync, writeFileSync } from 'node:fs';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Service } from '../service.js';
import { buildServer } from '../http/server.js';
import { PROT } from '../kernel/vma.js';
import { PAGE_SIZE } from '../kernel/layout.js';
import { EVENT_NAMES } from '../notifier/range.js';
import { mulberry } from '../lib/random.js';
import { CLOSE } from '../channel/close-codes.js';
import { DEVICE_KINDS, type BugMode } from '../devices/protocol.js';
import type { InvalidationRecord } from '../notifier/subscriptions.js';
import type { Finding } from '../sanitizer/sanitizer.js';
import { OOM_REAPER } from '../kernel/activity/oom.js';
import { DEFAULT_TRACE_CAPACITY } from '../trace/recorder.js';
import { exportTrace } from '../trace/service-trace.js';
import { PROT_READ, PROT_WRITE, ShadowProcess, firstDiff, type AccessOutcome } from './shadow-memory.js';
import { Recorder, type RecordedOp } from './record.js';
import { Role, clientPids, ensureIncarnation, killClient, quiesceDma, startDma, stopRoles, type RoleEnv } from './roles.js';

const MiB = 1024 * 1024;
const RW = PROT.READ | PROT.WRITE;

export interface SoakOptions {
  /** Stop generating operations after this long (ignored when replaying a script). */
  durationMs: number;
  seed: number;
  memoryMb: number;
  /** Acknowledgement deadline before a device is evicted, ms. */
  deadlineMs: number;
  /** Checkpoint period, ms. */
  checkEveryMs: number;
  /** Run the four kinds as external client processes too. */
  external: boolean;
  /** Inject faults, about one per `faultEvery` operations. */
  faults: boolean;
  faultEvery: number;
  /** DMA engine of every device: accesses per second, write fraction, transfer time. */
  dma: { rate: number; writeMix: number; transferUs: number };
  /** Pages of the CPU area of the soak process, and of each device's window. */
  cpuPages: number;
  windowPages: number;
  /** Where the record goes (null: no record). */
  record: string | null;
  /** A deliberately buggy role (to prove the checks): role name (e.g. gpu-w) and bug mode. */
  bug: { role: string; mode: BugMode } | null;
  /** Warm-up: resident memory is compared between its end and the end of the run. */
  warmupMs: number;
  /** Replay: run these operations (from a record) instead of generating them, checkpoints at these indices. */
  script?: { ops: RecordedOp[]; checkAt: number[] } | null;
  progress?: (line: string) => void;
  /** Write the run's trace (Chrome trace JSON, docs/trace.md) here at the end; tracing is off without it. */
  trace?: string | null;
}

export const DEFAULT_SOAK: SoakOptions = {
  durationMs: 60_000,
  seed: 1,
  memoryMb: 64,
  deadlineMs: 2000,
  checkEveryMs: 15_000,
  external: true,
  faults: true,
  faultEvery: 120,
  dma: { rate: 200, writeMix: 0.5, transferUs: 100 },
  cpuPages: 1024,
  windowPages: 64,
  record: null,
  bug: null,
  warmupMs: 60_000,
};

export interface SoakProblem {
  category: 'lost-write' | 'stale-access' | 'deadline' | 'frames' | 'leaked-subscription' | 'memory-growth' | 'model' | 'stuck';
  /** Operation index at which it was detected. */
  op: number;
  detail: string;
}

export interface SoakReport {
  ok: boolean;
  seed: number;
  durationMs: number;
  operations: number;
  operationsByKind: Record<string, number>;
  skipped: number;
  /** dmirror reads and writes that gave up with EBUSY (test_hmm's one-second retry budget). */
  busy: number;
  /** Wall time spent in each kind of operation, ms. */
  operationMs: Record<string, number>;
  invalidations: number;
  invalidationsByEvent: Record<string, number>;
  maxInvalidationMs: number;
  deadlineBoundMs: number;
  faultsInjected: Record<string, number>;
  /** Injected faults after which the system went on (every later checkpoint passed its checks). */
  faultsSurvived: number;
  deviceIncarnations: number;
  unplannedEvictions: number;
  checks: number;
  pagesVerified: number;
  deviceWritesVerified: number;
  sanitizerChecked: number;
  findings: Record<string, number>;
  problems: SoakProblem[];
  problemsByCategory: Record<string, number>;
  /**
   * Resident memory of this process after the warm-up: the trend line's values at the first and
   * last sample and the growth between them; the raw medians of the first and last three samples;
   * the client processes at the end.
   */
  rss: { warmupMb: number; endMb: number; growthPct: number; samples: number; firstMb: number; lastMb: number; clientsEndMb: number };
  record: string | null;
}

type Op = Record<string, unknown> & { k: string };

interface Slot {
  pid: number;
  shadow: ShadowProcess;
}

const FAULTS = ['crash', 'hang', 'slow', 'refuse', 'disconnect', 'evict'] as const;
type FaultKind = (typeof FAULTS)[number];

/**
 * Resident memory after a full garbage collection of the kernel's heap, so that the growth check
 * compares live memory, not how far the collector happened to have got (the worker threads'
 * heaps are collected on their own schedule).
 */
function residentAfterGc(): number {
  try {
    (runInNewContext('gc') as () => void)();
  } catch {
    // No collector hook: the figure is noisier, not wrong.
  }
  return process.memoryUsage().rss;
}

/**
 * Makes every page of the emulated memory resident now (RAM, device memory, swap): they are
 * preallocated but become resident only when first written, so a run that swaps more and more
 * would otherwise look like a leak of up to their size.
 */
function touchSharedMemory(svc: Service): void {
  const h = svc.kernel.mem.handles;
  for (const sab of [h.meta, h.data, h.swap]) {
    const bytes = new Uint8Array(sab);
    for (let i = 0; i < bytes.length; i += 4096) Atomics.or(bytes, i, 0);
  }
}

/** Least-squares line through [x, y] points. */
function fitLine(pts: Array<[number, number]>): { at(x: number): number } {
  const n = pts.length;
  const mx = pts.reduce((a, [x]) => a + x, 0) / n;
  const my = pts.reduce((a, [, y]) => a + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const [x, y] of pts) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
  }
  const b = sxx > 0 ? sxy / sxx : 0;
  return { at: (x) => my + b * (x - mx) };
}

/** The median of the samples (resident memory is noisy from one checkpoint to the next). */
function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Resident set of another process, MiB (0 if it is gone). */
function rssOfPid(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

export async function runSoak(partial: Partial<SoakOptions> = {}): Promise<SoakReport> {
  const o: SoakOptions = { ...DEFAULT_SOAK, ...partial, dma: { ...DEFAULT_SOAK.dma, ...partial.dma } };
  return new Soak(o).run();
}

class Soak {
  private svc!: Service;
  private app!: FastifyInstance;
  private rec: Recorder;
  private readonly rnd: () => number;
  private readonly roles: Role[] = [];
  private slots: Array<Slot | null> = [null, null, null, null];
  private cpuStart = 0;
  private opIndex = 0;
  private t0 = 0;
  private readonly problems: SoakProblem[] = [];
  private readonly opsByKind: Record<string, number> = {};
  private skipped = 0;
  /** dmirror commands that ran out of test_hmm's retry budget (EBUSY). */
  private busy = 0;
  private readonly opMs: Record<string, number> = {};
  private invalidations = 0;
  private readonly byEvent: Record<string, number> = {};
  private maxInvUs = 0;
  private readonly faultsInjected: Record<string, number> = {};
  private faultsTotal = 0;
  private faultsAtLastGoodCheck = 0;
  private checks = 0;
  private pagesVerified = 0;
  private readonly findings: Record<string, number> = {};
  /** Resident memory after collections, at every checkpoint. */
  private readonly rssSamples: Array<{ ms: number; rss: number }> = [];
  private plannedEvictions = new Set<number>();
  private unplannedEvictions = 0;
  private env!: RoleEnv;
  private victims = 0;
  private slowEnds: Array<{ at: number; role: string }> = [];

  constructor(private readonly o: SoakOptions) {
    this.rnd = mulberry(o.seed);
    this.rec = new Recorder(o.record);
  }

  private get deadlineBoundUs(): number {
    // One deadline for the acknowledgement, then the eviction may wait as long again (at least
    // 1 s) for the device to stop before its pending calls count as answered, plus scheduling slack.
    return (this.o.deadlineMs + Math.max(1000, this.o.deadlineMs) + 1000) * 1000;
  }

  private ms(): number {
    return Math.round(performance.now() - this.t0);
  }

  private say(line: string): void {
    this.o.progress?.(line);
  }

  private problem(category: SoakProblem['category'], detail: string): void {
    const p = { category, op: this.opIndex, detail };
    if (this.problems.length < 1000) this.problems.push(p);
    this.rec.write({ t: 'problem', i: this.opIndex, ms: this.ms(), category, detail });
    this.say(`PROBLEM [${category}] at operation ${this.opIndex}: ${detail}`);
  }

  // ---- setup -----------------------------------------------------------------------------------

  private async setup(): Promise<void> {
    const o = this.o;
    // V8 flags are per process: the worker threads started from here on get a gc() too.
    v8.setFlagsFromString('--expose-gc');
    this.svc = new Service({
      kernel: { memoryBytes: o.memoryMb * MiB, deviceMemoryBytes: 16 * MiB, swapBytes: o.memoryMb * 2 * MiB, bootId: (o.seed % 0x7ffffffe) + 1 },
      deadlineMs: o.deadlineMs,
      channel: { deadlineMs: o.deadlineMs },
      // Off unless asked for: a filling ring would show as memory growth in the leak check.
      traceEvents: o.trace ? DEFAULT_TRACE_CAPACITY : 0,
    });
    touchSharedMemory(this.svc);
    this.app = await buildServer(this.svc, { logger: false });
    await this.app.listen({ host: '127.0.0.1', port: 0 });
    await this.svc.start();
    const addr = this.app.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const k = this.svc.kernel;
    const onInv = (rec: InvalidationRecord): void => {
      this.invalidations++;
      const ev = EVENT_NAMES[rec.range.event] ?? String(rec.range.event);
      this.byEvent[ev] = (this.byEvent[ev] ?? 0) + 1;
      const us = rec.endedUs - rec.startedUs;
      if (us > this.maxInvUs) this.maxInvUs = us;
      if (us > this.deadlineBoundUs) this.problem('deadline', `${ev} [0x${rec.range.start.toString(16)}, 0x${rec.range.end.toString(16)}) of pid ${rec.range.pid} took ${(us / 1000).toFixed(0)} ms (bound ${this.deadlineBoundUs / 1000} ms)`);
      this.rec.write({ t: 'inv', i: this.opIndex, ev, pid: rec.range.pid, s: rec.range.start, e: rec.range.end === 2 ** 64 ? 'max' : rec.range.end, o: rec.range.origin, us: Math.round(us), n: rec.subscribers.length, r: rec.result });
    };
    k.observe({ onInvalidation: onInv });
    const onFinding = (d: { id: number; name: string }, f: Finding): void => {
      this.findings[f.kind] = (this.findings[f.kind] ?? 0) + 1;
      this.problem('stale-access', `${d.name} (device ${d.id}): ${f.kind} at 0x${f.va.toString(16)}${f.revokedBy ? ` (revoked by ${f.revokedBy.event})` : ''}`);
    };
    this.svc.devices.onFinding = onFinding;
    this.svc.channel.onFinding = onFinding;
    const onGone = (d: { id: number; name: string; state: string; stateReason: string }): void => {
      if (d.state === 'evicted' && !this.plannedEvictions.has(d.id)) {
        this.unplannedEvictions++;
        this.say(`note: ${d.name} evicted without an injected fault (${d.stateReason})`);
        this.rec.write({ t: 'note', i: this.opIndex, what: 'unplanned-eviction', device: d.name, reason: d.stateReason });
      }
    };
    this.svc.devices.onChange = onGone;
    this.svc.channel.onChange = onGone;

    // The soak process: a CPU area (with a THP-eligible part) and one window per role.
    const p = k.createProcess('soak');
    this.cpuStart = await k.mmap(p.pid, { length: o.cpuPages * PAGE_SIZE, prot: RW, name: 'cpu' });
    const shadow = new ShadowProcess(p.pid);
    shadow.map(this.cpuStart, o.cpuPages, PROT_READ | PROT_WRITE, () => ({ t: 'anon' }));
    this.slots[0] = { pid: p.pid, shadow };
    const transports = o.external ? (['worker', 'external'] as const) : (['worker'] as const);
    for (const transport of transports) {
      for (const kind of DEVICE_KINDS) {
        const name = `win-${kind}-${transport === 'worker' ? 'w' : 'x'}`;
        const start = await k.mmap(p.pid, { length: o.windowPages * PAGE_SIZE, prot: RW, name });
        const role = new Role(kind, transport, { name, start, end: start + o.windowPages * PAGE_SIZE });
        if (o.bug && o.bug.role === role.name) role.bug = o.bug.mode;
        this.roles.push(role);
      }
    }
    this.env = {
      svc: this.svc,
      pid: p.pid,
      processName: 'soak',
      url: `http://127.0.0.1:${port}`,
      dma: o.dma,
      log: (m) => this.say(m),
    };
    for (const r of this.roles) await ensureIncarnation(r, this.env);
    // External clients start in their own processes; give them time to attach.
    const until = performance.now() + 60_000;
    while (this.roles.some((r) => !r.alive) && performance.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
      for (const r of this.roles) if (!r.alive) await ensureIncarnation(r, this.env);
    }
    const missing = this.roles.filter((r) => !r.alive).map((r) => r.name);
    if (missing.length) throw new Error(`soak: devices did not attach within 60 s: ${missing.join(', ')}`);
  }

  // ---- operations ------------------------------------------------------------------------------

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)];
  }

  private int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  private liveSlots(): number[] {
    return this.slots.map((s, i) => (s ? i : -1)).filter((i) => i >= 0);
  }

  /** A page-aligned subrange of the CPU area: [offset pages, count pages). */
  private subrange(maxPages = 64): { off: number; pages: number } {
    const pages = 1 + this.int(Math.min(maxPages, this.o.cpuPages));
    return { off: this.int(this.o.cpuPages - pages + 1), pages };
  }

  private generate(): Op {
    const o = this.o;
    if (this.slowEnds.length && this.slowEnds[0].at <= this.opIndex) return { k: 'fault', fault: 'slow-end', role: this.slowEnds.shift()!.role };
    if (o.faults && this.rnd() < 1 / o.faultEvery) {
      const fault = this.pick(FAULTS);
      const candidates = this.roles.filter((r) => fault !== 'disconnect' || r.transport === 'external');
      if (candidates.length) return { k: 'fault', fault, role: this.pick(candidates).name, quiesceFirst: this.rnd() < 0.5, delayUs: 500 + this.int(4500) };
    }
    const slot = this.pick(this.liveSlots());
    const r = this.rnd() * 100;
    const { off, pages } = this.subrange();
    const cpu = (x: number): number => this.cpuStart + x * PAGE_SIZE;
    if (r < 24) {
      const len = 1 + this.int(2 * PAGE_SIZE);
      return { k: 'write', slot, addr: cpu(off) + this.int(PAGE_SIZE - 16), len };
    }
    if (r < 38) return { k: 'read', slot, addr: cpu(off), len: Math.min(pages, 8) * PAGE_SIZE };
    if (r < 45) return { k: 'dev-write', addr: cpu(off), npages: Math.min(pages, 4) };
    if (r < 49) return { k: 'dev-read', addr: cpu(off), npages: Math.min(pages, 4) };
    if (r < 52) return { k: 'dev-migrate', addr: cpu(off), npages: Math.min(pages, 16) };
    if (r < 57) return { k: 'mprotect', slot, addr: cpu(off), len: pages * PAGE_SIZE, prot: this.pick([RW, RW, PROT.READ, PROT.NONE]) };
    if (r < 65) return { k: 'madvise', slot, addr: cpu(off), len: pages * PAGE_SIZE, advice: this.pick(['dontneed', 'pageout', 'pageout', 'hugepage', 'mergeable', 'collapse', 'willneed'] as const) };
    if (r < 68) return { k: 'remap', slot, addr: cpu(off), len: pages * PAGE_SIZE };
    if (r < 70) return { k: 'clear-refs', slot };
    if (r < 72) {
      // About a third of the forks first advise a subrange of the parent MADV_DONTFORK (from the
      // subrange drawn above: no extra draw, so a seed's other operations stay as they were).
      if (!this.slots.some((s) => s === null)) return { k: 'exit', slot: 1 + this.int(3) };
      return pages <= 20 ? { k: 'fork', dontfork: { addr: cpu(off), len: pages * PAGE_SIZE } } : { k: 'fork' };
    }
    if (r < 73.5) return { k: 'exit', slot: 1 + this.int(3) };
    if (r < 74.5) return { k: 'oom-kill', slot: 1 + this.int(3) };
    if (r < 80) return { k: 'reclaim', pages: 32 + this.int(256) };
    if (r < 82) return { k: 'compact', node: this.int(2) };
    if (r < 87) {
      // Anywhere, devices' windows included: MIGRATE events on mirrored pages.
      const role = this.pick(this.roles);
      const inWindow = this.rnd() < 0.6;
      const start = inWindow ? role.window.start + this.int(this.o.windowPages) * PAGE_SIZE : cpu(off);
      const len = inWindow ? Math.min(role.window.end - start, (1 + this.int(16)) * PAGE_SIZE) : pages * PAGE_SIZE;
      return { k: 'migrate', addr: start, len, node: this.int(2) };
    }
    if (r < 89) return { k: 'numa-balance' };
    if (r < 92) return { k: 'ksm' };
    if (r < 94) return { k: 'khugepaged' };
    if (r < 96) return { k: 'thp-split', slot, addr: cpu(off) };
    if (r < 97) return { k: 'writeback' };
    if (r < 99) return { k: 'window-mprotect', role: this.pick(this.roles).name };
    return { k: 'window-pageout', role: this.pick(this.roles).name };
  }

  private pattern(i: number, len: number): Uint8Array {
    const data = new Uint8Array(len).fill(((i * 31 + 7) & 0xff) | 1);
    if (len >= 4) new DataView(data.buffer).setUint32(0, i >>> 0, true);
    return data;
  }

  private expectOutcome(what: string, predicted: AccessOutcome, err: unknown): void {
    const code = (err as { code?: string } | null)?.code ?? null;
    if (predicted.ok && err) this.problem('model', `${what}: the model allows it, the kernel said ${code ?? String(err)}`);
    else if (!predicted.ok && !err) this.problem('model', `${what}: the model predicts ${predicted.code}, the kernel allowed it`);
    else if (!predicted.ok && code !== predicted.code) this.problem('model', `${what}: the model predicts ${predicted.code}, the kernel said ${code}`);
  }

  private role(name: string): Role | undefined {
    return this.roles.find((r) => r.name === name);
  }

  private get dmirror(): Role | undefined {
    return this.roles.find((r) => r.kind === 'dmirror' && r.transport === 'worker' && r.alive);
  }

  /** Applies one operation; returns false when it could not apply now (skipped, recorded as such). */
  private async apply(op: Op): Promise<boolean> {
    const k = this.svc.kernel;
    const i = this.opIndex;
    const slot = typeof op.slot === 'number' ? this.slots[op.slot] : this.slots[0];
    const tryK = async (f: () => Promise<unknown>): Promise<unknown> => {
      try {
        await f();
        return null;
      } catch (e) {
        return e;
      }
    };
    switch (op.k) {
      case 'write': {
        if (!slot) return false;
        const addr = op.addr as number;
        const data = this.pattern(i, op.len as number);
        const predicted = slot.shadow.accessOutcome(addr, data.length, true);
        const err = await tryK(() => k.write(slot.pid, addr, data));
        this.expectOutcome(`write of ${data.length} bytes at 0x${addr.toString(16)} (pid ${slot.pid})`, predicted, err);
        if (!err && predicted.ok) slot.shadow.write(addr, data);
        return true;
      }
      case 'read': {
        if (!slot) return false;
        const addr = op.addr as number;
        const len = op.len as number;
        const predicted = slot.shadow.accessOutcome(addr, len, false);
        let got: Uint8Array | null = null;
        const err = await tryK(async () => {
          got = await k.read(slot.pid, addr, len);
        });
        this.expectOutcome(`read of ${len} bytes at 0x${addr.toString(16)} (pid ${slot.pid})`, predicted, err);
        if (got && predicted.ok) this.compare(slot, addr, got);
        return true;
      }
      case 'dev-write':
      case 'dev-read': {
        const d = this.dmirror?.device;
        const s0 = this.slots[0]!;
        const addr = op.addr as number;
        const npages = op.npages as number;
        const write = op.k === 'dev-write';
        // Only where the model says the whole range is accessible: a device store that fails
        // half way leaves a prefix written, which the model cannot tell.
        if (!d || !s0.shadow.accessOutcome(addr, npages * PAGE_SIZE, write).ok) return false;
        // test_hmm livelocks writing its own device-private page made read-only by fork: hmm_range_fault
        // reports the owner's entry as it is, without faulting (as Linux does), and dmirror_write
        // faults again forever. A real driver migrates the page back first; the soak leaves it.
        if (write && k.pagemap(s0.pid, addr, npages).some((e) => e.devicePrivate !== null && !e.write)) return false;
        const data = write ? this.pattern(i, npages * PAGE_SIZE) : null;
        try {
          const r = await d.command<{ cpages: number; data?: Uint8Array }>(op.k === 'dev-write' ? 'write' : 'read', data ? { addr, npages, data } : { addr, npages }, 60_000);
          if (data) s0.shadow.write(addr, data);
          else if (r.data) this.compare(s0, addr, r.data);
        } catch (e) {
          if (!d.alive) return false;
          // test_hmm copies page by page and reports how many it did (cpages) when it stops.
          const cpages = Number((e as { details?: { cpages?: number } }).details?.cpages ?? 0);
          if (data && cpages > 0) s0.shadow.write(addr, data.subarray(0, cpages * PAGE_SIZE));
          // EBUSY: its range fault kept retrying past test_hmm's one-second budget (invalidations
          // kept hitting the range); anything else is unexpected where the model allows the access.
          if ((e as { code?: string }).code === 'EBUSY') this.busy++;
          else this.problem('model', `dmirror ${op.k} of ${npages} pages at 0x${addr.toString(16)} failed: ${(e as Error).message}`);
        }
        return true;
      }
      case 'dev-migrate': {
        const d = this.dmirror?.device;
        if (!d) return false;
        await d.command('migrate-to-device', { addr: op.addr, npages: op.npages }, 60_000).catch(() => undefined);
        return true;
      }
      case 'mprotect': {
        if (!slot) return false;
        const err = await tryK(() => k.mprotect(slot.pid, op.addr as number, op.len as number, op.prot as number));
        if (err) this.problem('model', `mprotect failed: ${(err as Error).message}`);
        else slot.shadow.setProt(op.addr as number, (op.addr as number) + (op.len as number), op.prot as number);
        return true;
      }
      case 'madvise': {
        if (!slot) return false;
        const err = await tryK(() => k.madvise(slot.pid, op.addr as number, op.len as number, op.advice as 'dontneed'));
        if (err) {
          // collapse of a range that cannot become huge is refused, as in Linux
          if (op.advice !== 'collapse') this.problem('model', `madvise ${String(op.advice)} failed: ${(err as Error).message}`);
        } else if (op.advice === 'dontneed') slot.shadow.dropPrivate(op.addr as number, (op.addr as number) + (op.len as number));
        return true;
      }
      case 'remap': {
        if (!slot) return false;
        const addr = op.addr as number;
        const len = op.len as number;
        const err = await tryK(async () => {
          await k.munmap(slot.pid, addr, len);
          await k.mmap(slot.pid, { addr, length: len, prot: RW, fixed: true, name: 'cpu' });
        });
        if (err) this.problem('model', `munmap+mmap failed: ${(err as Error).message}`);
        slot.shadow.unmap(addr, addr + len);
        slot.shadow.map(addr, len / PAGE_SIZE, PROT_READ | PROT_WRITE, () => ({ t: 'anon' }));
        return true;
      }
      case 'clear-refs':
        if (!slot) return false;
        await k.clearRefs(slot.pid, 'soft-dirty');
        return true;
      case 'fork': {
        const free = this.slots.indexOf(null);
        if (free < 0) return false;
        const parent = this.slots[0]!;
        const df = op.dontfork as { addr: number; len: number } | undefined;
        if (df) {
          const err = await tryK(() => k.madvise(parent.pid, df.addr, df.len, 'dontfork'));
          if (err) this.problem('model', `madvise dontfork failed: ${(err as Error).message}`);
        }
        const child = await k.fork(parent.pid);
        const shadow = new ShadowProcess(child.pid);
        parent.shadow.forkInto(shadow, df ? [df.addr, df.addr + df.len] : null);
        this.slots[free] = { pid: child.pid, shadow };
        if (df) {
          // VM_DONTCOPY: the child has no mapping there (a read faults, SEGV_MAPERR). Then it maps
          // fresh memory there, so its window is whole again for the operations that follow, and
          // the parent's range goes back to being copied by the next fork (MADV_DOFORK). Meanwhile
          // its pages were never write-protected for the fork: the dmirror device mirroring the
          // parent keeps them, and a parent write does not COW them (the sanitizer checks both).
          const predicted = shadow.accessOutcome(df.addr, 1, false);
          const err = await tryK(() => k.read(child.pid, df.addr, 1));
          this.expectOutcome(`read of a MADV_DONTFORK page at 0x${df.addr.toString(16)} in the child (pid ${child.pid})`, predicted, err);
          const remap = await tryK(() => k.mmap(child.pid, { addr: df.addr, length: df.len, prot: RW, fixed: true, name: 'cpu' }));
          if (remap) this.problem('model', `mmap over the child's MADV_DONTFORK hole failed: ${(remap as Error).message}`);
          shadow.map(df.addr, df.len / PAGE_SIZE, RW, () => ({ t: 'anon' }));
          const undo = await tryK(() => k.madvise(parent.pid, df.addr, df.len, 'dofork'));
          if (undo) this.problem('model', `madvise dofork failed: ${(undo as Error).message}`);
        }
        return true;
      }
      case 'exit':
      case 'oom-kill': {
        const n = op.slot as number;
        const s = this.slots[n];
        if (!s || n === 0) return false;
        if (op.k === 'exit') await k.exit(s.pid);
        else await k.oomKill(s.pid);
        this.slots[n] = null;
        return true;
      }
      case 'reclaim':
        await k.reclaim(op.pages as number);
        return true;
      case 'compact':
        await k.compact(op.node as number);
        return true;
      case 'migrate':
        await tryK(() => k.migrate(this.slots[0]!.pid, op.addr as number, op.len as number, op.node as number));
        return true;
      case 'numa-balance':
        await k.numaBalance(this.slots[0]!.pid);
        return true;
      case 'ksm':
        await k.ksm();
        return true;
      case 'khugepaged':
        await k.khugepaged();
        return true;
      case 'thp-split':
        if (!slot) return false;
        await tryK(() => k.splitThp(slot.pid, op.addr as number));
        return true;
      case 'writeback':
        await k.writeback();
        return true;
      case 'window-mprotect': {
        // Read-only and back: the device loses write access (PROTECTION_VMA) and faults it back.
        const r = this.role(op.role as string);
        if (!r) return false;
        const len = r.window.end - r.window.start;
        await k.mprotect(this.slots[0]!.pid, r.window.start, len, PROT.READ);
        await k.mprotect(this.slots[0]!.pid, r.window.start, len, RW);
        return true;
      }
      case 'window-pageout': {
        const r = this.role(op.role as string);
        if (!r) return false;
        await k.madvise(this.slots[0]!.pid, r.window.start, r.window.end - r.window.start, 'pageout');
        return true;
      }
      case 'fault':
        return this.fault(op);
      default:
        throw new Error(`soak: unknown operation ${op.k}`);
    }
  }

  private compare(slot: Slot, addr: number, got: Uint8Array): void {
    const want = slot.shadow.read(addr, got.length);
    const at = firstDiff(want, got);
    this.pagesVerified += Math.ceil(got.length / PAGE_SIZE);
    if (at >= 0) {
      this.problem('lost-write', `pid ${slot.pid} at 0x${(addr + at).toString(16)}: memory has 0x${got[at].toString(16)}, the model 0x${want[at].toString(16)} (written by operation ${this.writerOf(want, at)})`);
    }
  }

  /** The operation that wrote the model's byte (pattern() puts the index in the first word). */
  private writerOf(page: Uint8Array, at: number): string {
    const start = at - (at % PAGE_SIZE);
    return page[at] === 0 ? 'none (zero)' : `#${new DataView(page.buffer, page.byteOffset).getUint32(start, true)}?`;
  }

  /** The open invalidations of every process, for stuck reports. */
  private openInvalidations(): string {
    const parts: string[] = [];
    for (const p of this.svc.kernel.liveProcesses()) {
      const n = p.mm.notifier;
      for (const r of n.openRanges()) parts.push(`pid ${p.pid} ${EVENT_NAMES[r.event]} #${r.id} [0x${r.start.toString(16)}, 0x${r.end.toString(16)}) from ${r.origin}`);
      if (n.isInvalidating() && n.openRanges().length === 0) parts.push(`pid ${p.pid} seq ${n.invalidateSeq} odd with no open range`);
      const l = p.mm.mmapLock;
      if (l.writeLocked || l.readLocked > 0 || l.waiting > 0) parts.push(`pid ${p.pid} mmap lock: ${l.writeLocked ? 'write-held' : `${l.readLocked} readers`}, ${l.waiting} waiting`);
    }
    for (const f of this.svc.kernel.folioLocks.held()) parts.push(`folio ${f.key} locked by ${f.holder} (${f.waiters} waiting)`);
    for (const r of this.roles) if (r.device && r.alive) parts.push(`${r.name}: ${r.device.state}`);
    return parts.length ? `open: ${parts.join('; ')}` : 'no invalidation open';
  }

  // ---- faults ----------------------------------------------------------------------------------

  private async fault(op: Op): Promise<boolean> {
    const role = this.role(op.role as string);
    const fault = op.fault as FaultKind | 'slow-end';
    if (!role || !role.alive) return false;
    const d = role.device!;
    if (fault === 'slow-end') {
      await d.command('inject', { ackDelayUs: 0 }, 10_000).catch(() => undefined);
      return true;
    }
    // Half of the faults hit an idle device (its journal taken first, so its window stays
    // checked), half hit it in the middle of its DMA (its window is unknown afterwards).
    const lethal = fault !== 'slow' && fault !== 'refuse';
    if (lethal && op.quiesceFirst) await quiesceDma(role);
    this.faultsInjected[fault] = (this.faultsInjected[fault] ?? 0) + 1;
    this.faultsTotal++;
    const k = this.svc.kernel;
    switch (fault) {
      case 'crash':
        if (role.transport === 'worker') await (d as import('../devices/worker-device.js').WorkerDevice).inject({ crash: true });
        else killClient(role);
        break;
      case 'hang':
        this.plannedEvictions.add(d.id);
        // The kernel calls only the subscribers whose intervals the range meets, and a device
        // that mirrors nothing has none (a gpu makes its svm ranges on its first fault): a fresh
        // incarnation, its DMA quiesced before it touched a page, would never be asked and never
        // evicted. A read of the window's first page makes it mirror something first (a read
        // leaves the role's write journal as it is).
        await d.command('dma-access', { addr: role.window.start, write: false }, 10_000).catch(() => undefined);
        await d.command('inject', { hang: true }, 10_000).catch(() => undefined);
        // Something must ask it: a soft-dirty clear calls every subscriber of the process.
        await k.clearRefs(this.slots[0]!.pid, 'soft-dirty');
        break;
      case 'slow':
        await d.command('inject', { ackDelayUs: op.delayUs as number }, 10_000).catch(() => undefined);
        this.slowEnds.push({ at: this.opIndex + 40, role: role.name });
        break;
      case 'disconnect': {
        const s = [...this.svc.channel.sessions].find((x) => x.device === d);
        if (!s) return false;
        s.close(CLOSE.NORMAL, 'soak: connection dropped');
        break;
      }
      case 'evict':
        this.plannedEvictions.add(d.id);
        await d.evict('soak: server-side eviction');
        break;
      case 'refuse':
        await this.refusingVictim();
        break;
    }
    if (lethal) {
      // Wait until it is gone (a hang takes the deadline), then let the role bring the next one.
      const until = performance.now() + this.o.deadlineMs * 3 + 5000;
      while (d.alive && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
      if (d.alive) this.problem('stuck', `${d.name} is still alive ${this.o.deadlineMs * 3 + 5000} ms after a ${fault}`);
    }
    return true;
  }

  /**
   * A process whose only device refuses every non-blockable invalidation, killed by the OOM
   * killer: the reaper's non-blockable unmap is refused (it retries, then leaves the memory to the
   * exit path), and the process still exits, blockably, with every frame returned.
   */
  private async refusingVictim(): Promise<void> {
    const k = this.svc.kernel;
    const v = k.createProcess(`victim-${this.victims++}`);
    const a = await k.mmap(v.pid, { length: 16 * PAGE_SIZE, prot: RW });
    await k.write(v.pid, a, new Uint8Array(16 * PAGE_SIZE).fill(9));
    const dev = await this.svc.devices.create({ kind: 'dmirror', pid: v.pid, name: `victim-${this.victims}` });
    await dev.command('read', { addr: a, npages: 16 }, 30_000);
    await dev.inject({ refuseNonblock: true });
    await k.oomKill(v.pid);
    const until = performance.now() + 30_000;
    while (dev.alive && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
    if (dev.alive) {
      this.problem('stuck', `the device of OOM-killed ${v.name} is still attached after its exit`);
      await dev.stop().catch(() => undefined);
    }
  }

  // ---- checkpoints -----------------------------------------------------------------------------

  private async checkpoint(final: boolean): Promise<void> {
    const k = this.svc.kernel;
    this.checks++;
    const problemsBefore = this.problems.length;
    // A device that died since the last operation (a hang evicted, a client gone) may have written
    // after its last journal: its role forgets that window before anything is compared.
    for (const r of this.roles) if (!r.alive) await ensureIncarnation(r, this.env);
    for (const why of await Promise.all(this.roles.map((r) => quiesceDma(r)))) if (why) this.problem('stuck', `${why}; ${this.openInvalidations()}`);
    // No invalidation may be open while the books are audited.
    const until = performance.now() + 30_000;
    while (k.liveProcesses().some((p) => p.mm.notifier.isInvalidating()) && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
    // 1. Every page of every process equals the model (CPU and dmirror stores).
    for (const s of this.slots) {
      if (!s) continue;
      for (const va of s.shadow.sortedPages()) {
        if (!s.shadow.accessOutcome(va, PAGE_SIZE, false).ok) continue;
        try {
          this.compare(s, va, await k.read(s.pid, va, PAGE_SIZE));
        } catch (e) {
          this.problem('model', `checkpoint read of 0x${va.toString(16)} (pid ${s.pid}) failed: ${(e as Error).message}`);
        }
      }
    }
    // 2. Every page a device wrote holds its last journalled stamp.
    const pid = this.slots[0]!.pid;
    for (const r of this.roles) {
      for (const [va, want] of r.expected) {
        const got = await k.read(pid, va, 8);
        const dv = new DataView(got.buffer, got.byteOffset, 8);
        const tag = dv.getUint32(0, true);
        const seq = dv.getUint32(4, true);
        r.stats.verified++;
        if (tag !== want.tag || seq !== want.seq) this.problem('lost-write', `${r.name}: page 0x${va.toString(16)} holds [device ${tag}, write ${seq}], the device's last write was [${want.tag}, ${want.seq}]`);
      }
    }
    // 3. Frames and swap slots balanced.
    const a = k.audit();
    for (const p of a.problems) this.problem('frames', p);
    // 4. No subscription of a device that is gone.
    for (const p of k.liveProcesses()) {
      for (const info of p.mm.notifier.subscribers()) {
        const id = info.deviceId;
        const alive = id !== undefined && (this.svc.devices.devices.get(id)?.alive || this.svc.channel.devices.get(id)?.alive);
        if (!alive) this.problem('leaked-subscription', `pid ${p.pid}: ${info.label} (device ${id ?? '?'}) is gone but still subscribed`);
      }
    }
    // 5. Resident memory, after a collection of every heap of this process.
    await Promise.all(this.roles.map((r) => (r.transport === 'worker' && r.alive ? r.device!.command('gc', {}, 10_000).catch(() => undefined) : undefined)));
    this.rssSamples.push({ ms: this.ms(), rss: residentAfterGc() });
    const ok = this.problems.length === problemsBefore;
    if (ok) this.faultsAtLastGoodCheck = this.faultsTotal;
    const rssMb = Math.round(this.rssSamples[this.rssSamples.length - 1].rss / MiB);
    this.rec.write({ t: 'check', i: this.opIndex, ms: this.ms(), ok, rssMb });
    this.say(
      `check ${this.checks} at ${(this.ms() / 1000).toFixed(0)} s: ${ok ? 'ok' : 'PROBLEMS'}; ${this.opIndex} operations, ${this.invalidations} invalidations, ${this.faultsTotal} faults, ${this.pagesVerified} pages verified, rss ${rssMb} MiB`,
    );
    if (!final) for (const r of this.roles) await startDma(r, this.env);
  }

  // ---- the run ---------------------------------------------------------------------------------

  async run(): Promise<SoakReport> {
    const o = this.o;
    const saved = { ...OOM_REAPER };
    // The reaper gives up on a refusing device after a few quick retries (the exit path frees the memory).
    OOM_REAPER.retryDelayMs = 20;
    OOM_REAPER.maxRetries = 5;
    // Not the trace file: a replay of the record must not overwrite the original run's trace.
    const { progress: _p, script, trace: _t, ...recorded } = o;
    this.rec.write({ t: 'header', version: 1, seed: o.seed, options: { ...recorded, script: script ? 'replay' : null }, startedAt: new Date().toISOString(), node: process.version });
    try {
      await this.setup();
      this.t0 = performance.now();
      let nextCheck = this.t0 + o.checkEveryMs;
      const checkAt = new Set(script?.checkAt ?? []);
      const total = script ? script.ops.length : Infinity;
      while (this.opIndex < total) {
        const now = performance.now();
        if (!script && now - this.t0 >= o.durationMs) break;
        if (script ? checkAt.has(this.opIndex) : now >= nextCheck) {
          await this.checkpoint(false);
          nextCheck = performance.now() + o.checkEveryMs;
        }
        for (const r of this.roles) if (!r.alive) await ensureIncarnation(r, this.env);
        const op = script ? script.ops[this.opIndex].op : this.generate();
        this.rec.write({ t: 'op', i: this.opIndex, ms: this.ms(), op });
        let applied: boolean;
        const t = performance.now();
        // The watchdog: an operation that takes far longer than any deadline is stuck; say what
        // the kernel is waiting for (the open invalidations) while it still waits.
        const stuckMs = Math.max(10_000, this.o.deadlineMs * 3 + 5000);
        const watchdog = setTimeout(() => this.problem('stuck', `operation ${op.k} has run ${stuckMs} ms: ${this.openInvalidations()}`), stuckMs);
        try {
          applied = await this.apply(op);
        } catch (e) {
          // An operation the kernel refused outright: a model problem only if it should not have.
          this.problem('model', `operation ${op.k} threw ${(e as { code?: string }).code ?? ''} ${(e as Error).message}`);
          applied = true;
        }
        clearTimeout(watchdog);
        this.opMs[op.k] = (this.opMs[op.k] ?? 0) + performance.now() - t;
        if (applied) this.opsByKind[op.k] = (this.opsByKind[op.k] ?? 0) + 1;
        else this.skipped++;
        this.opIndex++;
        // Let timers, sockets and device messages in between operations.
        if (this.opIndex % 8 === 0) await new Promise((r) => setImmediate(r));
      }
      for (const r of this.roles) if (!r.alive) await ensureIncarnation(r, this.env);
      await this.checkpoint(true);
      return await this.report();
    } finally {
      Object.assign(OOM_REAPER, saved);
      // Written whatever the outcome: the trace of a failed run is the one worth opening.
      if (o.trace && this.svc?.trace) writeFileSync(o.trace, JSON.stringify(exportTrace(this.svc.kernel, this.svc.trace, { limit: this.svc.trace.capacity })));
      await this.rec.close();
      await stopRoles(this.roles).catch(() => undefined);
      await this.svc?.stop().catch(() => undefined);
      await this.app?.close().catch(() => undefined);
    }
  }

  private async report(): Promise<SoakReport> {
    const o = this.o;
    // The trend of every sample after the warm-up (least squares), from its value at the first of
    // them to its value at the last: one sample swings by +-10% with the collectors of a dozen
    // heaps and the threads that come and go, while a leak moves the whole series.
    const post = this.rssSamples.filter((x) => x.ms >= o.warmupMs);
    const trend = post.length >= 4 ? fitLine(post.map((x) => [x.ms, x.rss])) : null;
    const warm = trend ? trend.at(post[0].ms) : 0;
    const endRss = trend ? trend.at(post[post.length - 1].ms) : residentAfterGc();
    const growthPct = warm > 0 ? ((endRss - warm) / warm) * 100 : 0;
    if (warm > 0 && growthPct >= 10) this.problem('memory-growth', `resident memory grew ${growthPct.toFixed(1)}% (trend ${(warm / MiB).toFixed(0)} -> ${(endRss / MiB).toFixed(0)} MiB) after the warm-up`);
    const firstMb = post.length ? Math.round(median(post.slice(0, 3).map((x) => x.rss)) / MiB) : 0;
    const lastMb = post.length ? Math.round(median(post.slice(-3).map((x) => x.rss)) / MiB) : 0;
    const clientsEndMb = clientPids(this.roles).reduce((s, p) => s + rssOfPid(p), 0);
    let sanitizerChecked = 0;
    for (const d of this.svc.devices.list()) {
      if (d.alive) await d.refresh().catch(() => undefined);
      sanitizerChecked += d.sanitizer?.checked ?? 0;
    }
    for (const d of this.svc.channel.list()) sanitizerChecked += d.sanitizer.stats.checked;
    const byCat: Record<string, number> = {};
    for (const p of this.problems) byCat[p.category] = (byCat[p.category] ?? 0) + 1;
    const r: SoakReport = {
      ok: this.problems.length === 0,
      seed: o.seed,
      durationMs: this.ms(),
      operations: this.opIndex,
      operationsByKind: this.opsByKind,
      skipped: this.skipped,
      busy: this.busy,
      operationMs: Object.fromEntries(Object.entries(this.opMs).map(([k, v]) => [k, Math.round(v)])),
      invalidations: this.invalidations,
      invalidationsByEvent: this.byEvent,
      maxInvalidationMs: Math.round(this.maxInvUs / 100) / 10,
      deadlineBoundMs: this.deadlineBoundUs / 1000,
      faultsInjected: this.faultsInjected,
      faultsSurvived: this.problems.length === 0 ? this.faultsTotal : this.faultsAtLastGoodCheck,
      deviceIncarnations: this.roles.reduce((s, x) => s + x.stats.incarnations, 0),
      unplannedEvictions: this.unplannedEvictions,
      checks: this.checks,
      pagesVerified: this.pagesVerified,
      deviceWritesVerified: this.roles.reduce((s, x) => s + x.stats.verified, 0),
      sanitizerChecked,
      findings: this.findings,
      problems: this.problems.slice(0, 50),
      problemsByCategory: byCat,
      rss: { warmupMb: Math.round(warm / MiB), endMb: Math.round(endRss / MiB), growthPct: Math.round(growthPct * 10) / 10, samples: post.length, firstMb, lastMb, clientsEndMb: Math.round(clientsEndMb) },
      record: o.record,
    };
    this.rec.write({ t: 'summary', ...r });
    await this.rec.close();
    return r;
  }
}
