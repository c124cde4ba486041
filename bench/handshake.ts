/**
 * npm run bench:handshake
 *
 * 1. The full invalidate round (publish start to every subscribed device worker, wait for every
 *    acknowledgement, publish end) through the real kernel path: Kernel.notify / notifyEnd of a
 *    one-page CLEAR, the subscription list, the worker mailboxes, the dmirror personality with the
 *    sanitizer on, for N = 1, 2, 4, ..., 64 device workers. Measured with the DMA engines idle and
 *    with them running on the invalidated window.
 * 2. In the same run, at each N, references doing the same fan-out with nothing else in the way
 *    (bench/lib/references.ts): blocking Atomics, spin-then-park Atomics, the same carrying a range
 *    in a call slot (spin-range: the real round's line transfers without its code), the publisher
 *    in waitAsync, postMessage.
 * 3. An mprotect-heavy workload (mprotect RO, device read sweep, mprotect RW, device write sweep)
 *    on gpu and dmirror devices with each event policy: refaults and invalidation work.
 *
 * Options: --ns=1,2,4,8,16,32,64 --rounds=20000 (rounds at N=1; fewer at larger N)
 *          --dma-total=16000 (device accesses/s in all, split evenly over the N devices, while DMA
 *          runs: the same traffic at every N, so N does not also scale the load) --mprotect-rounds=40
 *          --only=handshake|mprotect --json=path
 *          --warm=3000 (rounds before each measurement: every device handler must be optimized first)
 *          --warm-ms=300 (and at least this many milliseconds of them: at N = 1, 3,000 rounds are
 *          over in 2 ms, before V8's background compiler has had a core; see warmFor)
 *          --trace=on (the trace recorder attached to the kernel, as the service has it by default;
 *          docs/trace.md: compare with a run without it)
 *          --repeat=R (the whole N sequence R times in this process, fresh workers each time; a
 *          summary gives each N's ratio to the better bare Atomics strategy over the R passes:
 *          min, median, max and how many passes were above 1.5x. One pass is one sample of a
 *          shared machine; the goal is judged on all of them)
 *          --pin=auto|all|off (auto: at N = 1 the kernel thread and the worker each on a CPU of its own,
 *          for every variant alike, when taskset and 2 CPUs are there; src/lib/affinity.ts says why.
 *          all: at every N, the kernel thread on the first CPU and every worker on the others, a
 *          placement study: docs/benchmarks.md, "Where the threads run")
 *          --schedule=sequential|interleaved (default sequential: each variant on its own fresh
 *          workers, warmed up, then all its rounds in one stretch, one variant after the other;
 *          interleaved: at each N the references and devmirror with DMA idle all exist at once and
 *          are measured in --blocks=10 alternating blocks of rounds (src/lib/interleave.ts), and
 *          each N's devmirror / best-reference ratio is also given block by block. The DMA-running
 *          variant is always measured on its own, after the others: its engines would load the
 *          references' blocks. docs/benchmarks.md compares the two schedules on this machine)
 */
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Kernel, PROT } from '../src/kernel/kernel.js';
import { DeviceManager } from '../src/devices/device-manager.js';
import type { WorkerDevice } from '../src/devices/worker-device.js';
import type { EventPolicy } from '../src/devices/protocol.js';
import { MmuNotifierEvent } from '../src/notifier/range.js';
import { fmt, machine, percentiles, spread, table, usSince, type Percentiles } from './lib/stats.js';
import { interleave, warmUp, type Contender } from '../src/lib/interleave.js';
import { ReferenceFanout, type RefMode } from './lib/references.js';
import { ThreadPinning, allowedCpus, pinningUnavailable } from '../src/lib/affinity.js';
import { attachTracing } from '../src/trace/kernel-hooks.js';
import { TraceRecorder } from '../src/trace/recorder.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const NS = (args.get('ns') ?? '1,2,4,8,16,32,64').split(',').map(Number);
const ROUNDS = Number(args.get('rounds') ?? 20000);
const DMA_TOTAL = Number(args.get('dma-total') ?? 16000);
const MPROTECT_ROUNDS = Number(args.get('mprotect-rounds') ?? 40);
const ONLY = args.get('only');
const TRACE = args.get('trace') === 'on';
const REPEAT = Number(args.get('repeat') ?? 1);
if (!Number.isSafeInteger(REPEAT) || REPEAT < 1) {
  console.error(`--repeat must be a positive integer, got ${JSON.stringify(args.get('repeat'))}`);
  process.exit(2);
}
/** The in-process goal: devmirror's p50 within this factor of the better bare Atomics strategy. */
const GOAL_RATIO = 1.5;
/** The kernel thread yields to its event loop every YIELD_EVERY rounds (it serves HTTP, faults). */
const YIELD_EVERY = 32;
const WINDOW_PAGES = 64;
/** Rounds run before each measurement, at least (--warm). */
const WARM_ROUNDS = Number(args.get('warm') ?? 3000);
/** And milliseconds of rounds before each measurement, at least (--warm-ms). */
const WARM_MS = Number(args.get('warm-ms') ?? 300);
if (!Number.isFinite(WARM_MS) || WARM_MS < 0) {
  console.error(`--warm-ms must be a number of milliseconds, got ${JSON.stringify(args.get('warm-ms'))}`);
  process.exit(2);
}
const PIN = args.get('pin') ?? 'auto';
if (PIN !== 'auto' && PIN !== 'off' && PIN !== 'all') {
  console.error(`--pin must be auto, all or off, got ${JSON.stringify(PIN)}`);
  process.exit(2);
}
const CPUS = allowedCpus();
/** Why this run cannot pin (null: it can), asked once. */
const PIN_UNAVAILABLE = PIN === 'off' ? '--pin=off' : pinningUnavailable();
/**
 * Pinning (src/lib/affinity.ts) at N = 1, where the kernel thread and the one worker can each have
 * a CPU of their own: the kernel thread on the first allowed CPU, the worker on the second, for every
 * variant alike. At larger N the spinning threads outnumber the CPUs of this machine, and the
 * scheduler shares them out as it would in use (--pin=all pins there too, every worker on the CPUs
 * after the first: one placement among many, which favours the references at N >= 16).
 */
const pinAt = (n: number): ThreadPinning | null => (PIN_UNAVAILABLE === null && (n === 1 || PIN === 'all') ? new ThreadPinning(CPUS[0], CPUS.slice(1)) : null);
const SCHEDULE = args.get('schedule') ?? 'sequential';
const BLOCKS = Number(args.get('blocks') ?? 10);
if (SCHEDULE !== 'interleaved' && SCHEDULE !== 'sequential') {
  console.error(`--schedule must be interleaved or sequential, got ${JSON.stringify(SCHEDULE)}`);
  process.exit(2);
}
if (!Number.isSafeInteger(BLOCKS) || BLOCKS < 1) {
  console.error(`--blocks must be a positive integer, got ${JSON.stringify(args.get('blocks'))}`);
  process.exit(2);
}

const roundsAt = (n: number): number => Math.max(1000, Math.floor(ROUNDS / n));
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

interface Result {
  variant: string;
  n: number;
  rounds: number;
  lat: Percentiles;
  perSec: number;
  /** CPU time of the whole process (every thread, user + system) per round, microseconds. */
  cpuUs: number;
  /** Of which the bench's main thread (the kernel thread for devmirror), from /proc (Linux only). */
  mainCpuUs: number;
  /** Context switches per round of every thread: voluntary (parks) and involuntary (preempted). */
  switches: { voluntary: number; involuntary: number };
  /** The kernel thread pinned to one CPU and the workers to the others (--pin). */
  pinned?: boolean;
  /** --schedule=interleaved: the p50 of each block, in block order. */
  blockP50?: number[];
  extra?: Record<string, unknown>;
}

/**
 * Per-thread figures from /proc/self/task (Linux): the main thread's CPU time (clock ticks, so only
 * meaningful over thousands of rounds) and every live thread's context switches. Threads that exit
 * during a measurement drop out of the sums, so measure only while the set of threads is stable.
 */
function threadTimes(): { main: number; vol: number; invol: number } {
  const out = { main: 0, vol: 0, invol: 0 };
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  const tickUs = 1e6 / 100; // USER_HZ is 100 on Linux
  for (const tid of tids) {
    try {
      if (Number(tid) === process.pid) {
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        out.main = (Number(f[11]) + Number(f[12])) * tickUs; // utime, stime (fields 14, 15)
      }
      const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
      out.vol += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      out.invol += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    } catch {
      // the thread exited between readdir and read
    }
  }
  return out;
}

/**
 * Rounds before a measurement, not kept: at least WARM_ROUNDS (or a tenth of the measured rounds)
 * and at least WARM_MS of them. Every device thread must reach steady state (its handlers
 * optimized) before the clock starts: each device sees every round, so the warm-up counts rounds,
 * not a share of them. With 250 warm rounds at N = 8 the p50 was 177 to 187 us and the CPU per
 * round 406 to 410 us, with 2,500 it was 137 to 140 us and 213 to 214 us (the JIT still compiling
 * device code, 11-27). The time bound is for small N: 3,000 rounds at N = 1 last 2 ms, while the
 * kernel and device threads spin on both cores, so V8's background compiler had hardly run when
 * the clock started. N = 1, 11-28 at about 01:40 UTC: a 3,000-round warm-up gave devmirror p50
 * 0.649 to 0.691 us and p90 0.916 to 1.287 us over six passes; 100,000 rounds (about 65 ms),
 * 0.607 to 0.648 us and 0.684 to 0.741 us over five; this bound, 0.605 to 0.634 us and 0.698 to
 * 0.790 us over five.
 */
function warmFor(rounds: number, round: () => number | Promise<number>): Promise<void> {
  return warmUp(round, { warm: warmRounds(rounds), warmMs: WARM_MS, yieldEvery: YIELD_EVERY, tick });
}

const warmRounds = (rounds: number): number => Math.max(WARM_ROUNDS, Math.floor(rounds / 10));

async function measure(variant: string, n: number, rounds: number, round: () => number | Promise<number>): Promise<Result> {
  await warmFor(rounds, round);
  const samples = new Float64Array(rounds);
  const cpu0 = process.cpuUsage();
  const th0 = threadTimes();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    samples[i] = await round();
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await tick();
  }
  const secs = usSince(t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const th1 = threadTimes();
  return {
    variant,
    n,
    rounds,
    lat: percentiles(samples),
    perSec: rounds / secs,
    cpuUs: (cpu.user + cpu.system) / rounds,
    mainCpuUs: (th1.main - th0.main) / rounds,
    switches: { voluntary: (th1.vol - th0.vol) / rounds, involuntary: (th1.invol - th0.invol) / rounds },
  };
}

/** A variant of the round, set up and ready to run: its round, what it adds to its result, its teardown. */
interface Subject extends Contender {
  /** Adds the variant's own figures to its result (after its last round). */
  finish?(res: Result, seconds: number): Promise<void>;
  close(): Promise<void>;
}

async function referenceSubject(mode: RefMode, n: number): Promise<Subject> {
  const ref = new ReferenceFanout(mode, n);
  try {
    await ref.ready();
  } catch (e) {
    await ref.close();
    throw e;
  }
  return { name: `ref:${mode}`, round: () => ref.round(), close: () => ref.close() };
}

async function devmirrorSubject(n: number, dma: boolean): Promise<Subject> {
  const k = new Kernel({ memoryBytes: 64 * MiB });
  if (TRACE) attachTracing(k, new TraceRecorder());
  const p = k.createProcess('bench');
  const mgr = new DeviceManager(k, { deadlineMs: 60_000 });
  try {
    const a = await k.mmap(p.pid, { length: WINDOW_PAGES * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(WINDOW_PAGES * PAGE).fill(7));
    const devs: WorkerDevice[] = [];
    for (let i = 0; i < n; i++) devs.push(await mgr.create({ kind: 'dmirror', pid: p.pid }));
    for (const d of devs) await d.command('read', { addr: a, npages: WINDOW_PAGES });
    if (dma) {
      for (const d of devs) {
        await d.command('dma', { rate: DMA_TOTAL / n, pattern: 'random', writeMix: 0.3, start: a, end: a + WINDOW_PAGES * PAGE, transferUs: 0, bytes: 64 });
      }
    }
    const before = await Promise.all(devs.map((d) => d.refresh().then(() => d.sanitizer.checked)));
    const round = async (): Promise<number> => {
      const t = process.hrtime.bigint();
      // The kernel returns the range itself when every answer came inside its spin: awaiting a
      // plain value would time a microtask turn of this harness, which the references do not pay.
      let r = k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
      if (r instanceof Promise) r = await r;
      k.notifyEnd(p.mm, r);
      return usSince(t);
    };
    const finish = async (res: Result, seconds: number): Promise<void> => {
      if (dma) for (const d of devs) await d.command('dma', { rate: 0 });
      await tick();
      let checked = 0;
      let findings = 0;
      for (let i = 0; i < devs.length; i++) {
        await devs[i].refresh();
        checked += devs[i].sanitizer.checked - before[i];
        findings += devs[i].sanitizer.findings;
      }
      const g = mgr.group;
      // The DMA rate actually reached while the rounds ran (the configured total is DMA_TOTAL/s).
      res.extra = { sanitizerChecked: checked, dmaAccessesPerSec: Math.round(checked / seconds), findings, kernelSpins: g.spins, kernelParks: g.parks, kernelWakes: g.wakes, deviceWakes: g.deviceWakes, evictions: devs.filter((d) => d.state === 'evicted').length };
      if (findings > 0) throw new Error(`sanitizer findings in the handshake bench: ${findings}`);
    };
    return { name: dma ? 'devmirror (DMA running)' : 'devmirror (DMA idle)', round, finish, close: () => mgr.stopAll() };
  } catch (e) {
    await mgr.stopAll();
    throw e;
  }
}

/** Sets up, measures on its own (warm-up, then every round in one stretch) and tears down one variant. */
async function measureAlone(n: number, make: () => Promise<Subject>): Promise<Result> {
  const pinning = pinAt(n);
  const s = await make();
  try {
    pinning?.apply();
    const t0 = performance.now();
    const res = await measure(s.name, n, roundsAt(n), () => s.round());
    res.pinned = pinning !== null;
    await s.finish?.(res, (performance.now() - t0) / 1000);
    return res;
  } finally {
    await s.close();
    pinning?.restore();
  }
}

/**
 * Measures variants that all exist at once in alternating blocks (src/lib/interleave.ts). CPU time
 * and context switches are summed over each variant's own blocks; the other variants' threads are
 * parked meanwhile (devmirror's devices wake every IDLE_BLOCK_MS, 100 ms, while parked: a few
 * switches a second, against thousands a second in a block).
 */
async function measureInterleaved(subjects: readonly Subject[], n: number): Promise<Result[]> {
  const rounds = roundsAt(n);
  const acc = new Map<string, { cpu: number; main: number; vol: number; invol: number }>();
  const probe = {
    before: () => ({ cpu: process.cpuUsage(), th: threadTimes() }),
    after: (name: string, s: { cpu: NodeJS.CpuUsage; th: ReturnType<typeof threadTimes> }) => {
      const c = process.cpuUsage(s.cpu);
      const th = threadTimes();
      const a = acc.get(name) ?? { cpu: 0, main: 0, vol: 0, invol: 0 };
      a.cpu += c.user + c.system;
      a.main += th.main - s.th.main;
      a.vol += th.vol - s.th.vol;
      a.invol += th.invol - s.th.invol;
      acc.set(name, a);
    },
  };
  const measured = await interleave(subjects, { rounds, blocks: BLOCKS, warm: warmRounds(rounds), warmMs: WARM_MS, yieldEvery: YIELD_EVERY, tick, probe });
  const out: Result[] = [];
  for (let i = 0; i < measured.length; i++) {
    const m = measured[i];
    const a = acc.get(m.name) ?? { cpu: 0, main: 0, vol: 0, invol: 0 };
    const k = m.samples.length;
    const res: Result = {
      variant: m.name,
      n,
      rounds: k,
      lat: m.lat,
      perSec: k / (m.measuredMs / 1000),
      cpuUs: a.cpu / k,
      mainCpuUs: a.main / k,
      switches: { voluntary: a.vol / k, involuntary: a.invol / k },
      blockP50: m.blockP50,
    };
    await subjects[i].finish?.(res, m.measuredMs / 1000);
    out.push(res);
  }
  return out;
}

const REF_MODES: RefMode[] = ['blocking', 'spin', 'spin-range', 'waitAsync', 'postMessage'];

/** The references and devmirror with DMA idle at N, by --schedule; then devmirror with DMA running, alone. */
async function measureAt(n: number): Promise<{ refs: Record<string, Result>; idle: Result; busy: Result }> {
  const refs: Record<string, Result> = {};
  let idle: Result;
  if (SCHEDULE === 'interleaved') {
    const subjects: Subject[] = [];
    const pinning = pinAt(n);
    try {
      for (const mode of REF_MODES) subjects.push(await referenceSubject(mode, n));
      subjects.push(await devmirrorSubject(n, false));
      pinning?.apply();
      const res = await measureInterleaved(subjects, n);
      for (const r of res) r.pinned = pinning !== null;
      for (const r of res.slice(0, REF_MODES.length)) refs[r.variant.slice('ref:'.length)] = r;
      idle = res[REF_MODES.length];
    } finally {
      for (const s of subjects) await s.close();
      pinning?.restore();
    }
  } else {
    for (const mode of REF_MODES) refs[mode] = await measureAlone(n, () => referenceSubject(mode, n));
    idle = await measureAlone(n, () => devmirrorSubject(n, false));
  }
  const busy = await measureAlone(n, () => devmirrorSubject(n, true));
  return { refs, idle, busy };
}

interface MprotectRow {
  kind: string;
  policy: EventPolicy;
  rounds: number;
  refaults: number;
  invalidations: number;
  pagesUnmapped: number;
  pagesDowngraded: number;
  wallMs: number;
  checked: number;
  findings: number;
}

async function mprotectWorkload(kind: 'gpu' | 'dmirror', policy: EventPolicy): Promise<MprotectRow> {
  const NPAGES = 256;
  const k = new Kernel({ memoryBytes: 64 * MiB });
  const p = k.createProcess('bench');
  const mgr = new DeviceManager(k, { deadlineMs: 60_000 });
  try {
    const len = NPAGES * PAGE;
    const a = await k.mmap(p.pid, { length: len, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(len).fill(1));
    const options = kind === 'gpu' ? { xnack: true, granularityPages: NPAGES } : {};
    const d = await mgr.create({ kind, pid: p.pid, policy, options });
    const sweep = (write: boolean): Promise<{ ok: number; failed: number; faults: number }> =>
      d.command('dma-sweep', { addr: a, npages: NPAGES, write });
    await sweep(true);
    await d.refresh();
    const c0 = { ...d.counters };
    const checked0 = d.sanitizer.checked;
    let refaults = 0;
    const t0 = performance.now();
    for (let i = 0; i < MPROTECT_ROUNDS; i++) {
      await k.mprotect(p.pid, a, len, PROT.READ);
      const r = await sweep(false);
      await k.mprotect(p.pid, a, len, PROT.READ | PROT.WRITE);
      const w = await sweep(true);
      if (r.failed || w.failed) throw new Error(`${kind}/${policy}: device accesses failed`);
      refaults += r.faults + w.faults;
    }
    const wallMs = performance.now() - t0;
    await d.refresh();
    const delta = (c: string): number => (d.counters[c] ?? 0) - (c0[c] ?? 0);
    return {
      kind,
      policy,
      rounds: MPROTECT_ROUNDS,
      refaults,
      invalidations: delta('invalidations'),
      pagesUnmapped: delta('inv_pages_unmapped'),
      pagesDowngraded: delta('inv_pages_downgraded'),
      wallMs,
      checked: d.sanitizer.checked - checked0,
      findings: d.sanitizer.findings,
    };
  } finally {
    await mgr.stopAll();
  }
}

function latRow(r: Result, best: number, pm: number, wa: number, range: number): Record<string, string | number> {
  return {
    N: r.n,
    variant: r.variant,
    rounds: r.rounds,
    p50: fmt(r.lat.p50),
    p90: fmt(r.lat.p90),
    p99: fmt(r.lat.p99),
    p99_9: fmt(r.lat.p99_9),
    max: fmt(r.lat.max),
    'rounds/s': Math.round(r.perSec).toLocaleString('en-US'),
    'cpu/round': fmt(r.cpuUs),
    'main cpu': fmt(r.mainCpuUs),
    'vol/invol sw': `${r.switches.voluntary.toFixed(1)}/${r.switches.involuntary.toFixed(1)}`,
    'p50/best-atomics': (r.lat.p50 / best).toFixed(2),
    'p50/waitAsync': (r.lat.p50 / wa).toFixed(2),
    'p50/spin-range': (r.lat.p50 / range).toFixed(2),
    'postMessage/p50': (pm / r.lat.p50).toFixed(1),
  };
}

async function main(): Promise<void> {
  const config = {
    bench: 'handshake',
    machine: machine(),
    device: 'dmirror worker (test_hmm personality), faithful policy',
    sanitizer: 'on (every device access checked; grants revoked at acknowledgement)',
    metrics: 'in-process handshake and device counters on; no HTTP exporter in this process',
    event: 'CLEAR of one page inside a 64-page window every device mirrors',
    dmaRunning: `${DMA_TOTAL} device accesses/s in all (split over the N devices), random over the 64-page window that is invalidated, 30% writes`,
    kernelWait: 'adaptive spin, then Atomics.waitAsync (the kernel thread never blocks)',
    schedule: SCHEDULE === 'interleaved' ? `interleaved: the references and devmirror (DMA idle) all live at once, ${BLOCKS} alternating blocks each; devmirror (DMA running) alone after them` : 'sequential: each variant on its own fresh workers, one after the other',
    pinning:
      PIN_UNAVAILABLE !== null
        ? `off (${PIN_UNAVAILABLE})`
        : PIN === 'all'
          ? `every N: the kernel thread on CPU ${CPUS[0]}, every worker on CPUs ${CPUS.slice(1).join(',')}, every variant alike`
          : `N = 1: the kernel thread on CPU ${CPUS[0]}, the worker on CPU ${CPUS[1]}, every variant alike; larger N unpinned`,
    yieldEvery: YIELD_EVERY,
    ns: NS,
    roundsAtN1: ROUNDS,
    warmUp: `at least ${WARM_ROUNDS} rounds (or a tenth of the measured ones) and ${WARM_MS} ms of them, per variant`,
    repeat: REPEAT,
  };
  console.log(JSON.stringify(config, null, 2));
  const out: Record<string, unknown> = { config };
  if (ONLY !== 'mprotect') {
    const passes: Result[][] = [];
    /** Per N, devmirror's p50 over the better bare Atomics strategy's, one entry per pass. */
    const ratios = new Map<number, number[]>(NS.map((n) => [n, []]));
    for (let pass = 0; pass < REPEAT; pass++) {
      if (REPEAT > 1) console.log(`\n=== pass ${pass + 1} of ${REPEAT} ===`);
      const rows: Array<Record<string, string | number>> = [];
      const results: Result[] = [];
      for (const n of NS) {
        const { refs, idle, busy } = await measureAt(n);
        const best = Math.min(refs.blocking.lat.p50, refs.spin.lat.p50);
        const pm = refs.postMessage.lat.p50;
        const wa = refs.waitAsync.lat.p50;
        for (const r of [refs.blocking, refs.spin, refs['spin-range'], refs.waitAsync, refs.postMessage, idle, busy]) {
          rows.push(latRow(r, best, pm, wa, refs['spin-range'].lat.p50));
          results.push(r);
        }
        ratios.get(n)?.push(idle.lat.p50 / best);
        console.log(table(rows.slice(-7)));
        if (idle.blockP50 && refs.blocking.blockP50 && refs.spin.blockP50) {
          // The same ratio block by block (each block's devmirror p50 over the better reference's
          // p50 in that block): how much of the pooled ratio is the machine moving under it.
          const per = idle.blockP50.map((v, b) => v / Math.min(refs.blocking.blockP50![b], refs.spin.blockP50![b]));
          const sp = spread(per, GOAL_RATIO);
          idle.extra = { ...idle.extra, blockRatio: { min: sp.min, median: sp.median, max: sp.max, above: sp.above, blocks: sp.n } };
          const range = (r: Result): string => `${fmt(Math.min(...r.blockP50!))} to ${fmt(Math.max(...r.blockP50!))}`;
          console.log(`  block p50s (${BLOCKS} blocks each): blocking ${range(refs.blocking)}, spin ${range(refs.spin)}, waitAsync ${range(refs.waitAsync)}, devmirror ${range(idle)}`);
          console.log(`  devmirror / better bare Atomics, block by block: min ${sp.min.toFixed(2)}, median ${sp.median.toFixed(2)}, max ${sp.max.toFixed(2)}`);
        }
        console.log(`  idle: ${JSON.stringify(idle.extra)}\n  dma:  ${JSON.stringify(busy.extra)}\n`);
      }
      console.log('\nAll N (latencies per round, microseconds):\n' + table(rows));
      passes.push(results);
    }
    out.handshake = passes[0];
    if (REPEAT > 1) {
      out.passes = passes;
      const summary = NS.map((n) => ({ ...spread(ratios.get(n) ?? [], GOAL_RATIO), devices: n, ratios: ratios.get(n) ?? [] }));
      out.ratioSummary = summary;
      console.log(`\ndevmirror p50 / the better bare Atomics strategy over ${REPEAT} passes (goal: within ${GOAL_RATIO}x at every N):\n` + table(summary.map((r) => ({ N: r.devices, min: r.min.toFixed(2), median: r.median.toFixed(2), max: r.max.toFixed(2), [`above ${GOAL_RATIO}x`]: `${r.above} of ${r.n}` }))));
    }
  }
  if (ONLY !== 'handshake') {
    const mrows: MprotectRow[] = [];
    for (const kind of ['gpu', 'dmirror'] as const) {
      for (const policy of ['faithful', 'aware', 'blind'] as EventPolicy[]) mrows.push(await mprotectWorkload(kind, policy));
    }
    const faithful = (kind: string): MprotectRow => mrows.find((r) => r.kind === kind && r.policy === 'faithful') as MprotectRow;
    console.log(
      `\nmprotect-heavy workload: ${MPROTECT_ROUNDS} x (mprotect RO, device read sweep, mprotect RW, device write sweep) over 256 pages\n` +
        table(
          mrows.map((r) => ({
            device: r.kind,
            policy: r.policy,
            refaults: r.refaults,
            'refaults/faithful': (r.refaults / Math.max(1, faithful(r.kind).refaults)).toFixed(2),
            invalidations: r.invalidations,
            'pages unmapped': r.pagesUnmapped,
            'pages downgraded': r.pagesDowngraded,
            wall: fmt(r.wallMs * 1000),
            'wall/faithful': (r.wallMs / faithful(r.kind).wallMs).toFixed(2),
            'accesses checked': r.checked,
            findings: r.findings,
          })),
        ),
    );
    out.mprotect = mrows;
  }
  const json = args.get('json');
  if (json) writeFileSync(json, JSON.stringify(out, null, 2));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
