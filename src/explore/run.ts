/**
 * One explorer run: a fresh kernel service, the scenario's processes and mappings, each device as
 * the real personality code on a SocketHost whose DeviceClient talks to a real channel Session
 * through an in-memory pipe, and the scenario's threads, all stepped by the scheduler under one
 * policy. Oracles are checked after every step: the server-side sanitizer (stale, lost-write,
 * write-ro, unmapped, wrong-pfn), CPU loads with an expected value, exceptions that are not
 * kernel errnos, progress (nothing runnable while a thread has not finished: a deadlock, with its
 * wait-for graph; a step budget exhausted: a livelock), and after the threads end, a quiesce of
 * every device's DMA and the kernel's frame and swap audit.
 */
import { Service } from '../service.js';
import { DeviceClient } from '../client/device-client.js';
import { windowOptions } from '../client/resolve.js';
import { DevmirrorError } from '../errors.js';
import { PAGE_SIZE } from '../kernel/layout.js';
import { protFromNames } from '../kernel/vma.js';
import { Mutex } from '../lib/locks.js';
import { OOM_REAPER } from '../kernel/activity/oom.js';
import { SocketHost } from '../../workers/runtime/socket-host.js';
import { PERSONALITIES } from '../../workers/personalities.js';
import type { Device } from '../../workers/runtime/device.js';
import { resetExternalIds, type ExternalDevice } from '../channel/external-device.js';
import { resetNotifierIds } from '../notifier/subscriptions.js';
import { pipePair } from './pipe-socket.js';
import { Scheduler, type Policy, type TakenStep } from './scheduler.js';
import { describeOp, type DeviceSpec, type OpSpec, type Scenario } from './scenario.js';
import { buildWaitForGraph, type WaitForGraph } from '../progress/wait-for.js';
import { DEFAULT_TRACE_CAPACITY } from '../trace/recorder.js';
import { exportTrace } from '../trace/service-trace.js';
import type { ChromeTrace } from '../trace/chrome-export.js';

export type Oracle = 'sanitizer' | 'data' | 'crash' | 'deadlock' | 'stuck' | 'livelock' | 'audit';

export interface Finding {
  oracle: Oracle;
  /** The sanitizer's finding kind, or the oracle again. */
  kind: string;
  device: string | null;
  message: string;
  /** Index in the step list where it was detected. */
  step: number;
  graph?: WaitForGraph;
}

export interface RunResult {
  finding: Finding | null;
  steps: TakenStep[];
  /** Thread operations and how each ended ("ok", an errno, ...), in completion order. */
  ops: string[];
  /** With RunOptions.trace: the run's trace, up to the finding. */
  trace?: ChromeTrace;
}

export interface RunOptions {
  policy: Policy;
  /** Steps before the run counts as not making progress. */
  maxSteps?: number;
  /**
   * Range faults of one subscription answered EBUSY in a row (an invalidation moved the seq each
   * time) before the progress oracle calls it a livelock (default 8).
   */
  retryBudget?: number;
  /** Record a trace of the run (Chrome trace / Perfetto JSON in RunResult.trace). */
  trace?: boolean;
}

/** The explorer's device transport: DMA transfers finish when the scheduler says so. */
class ExploreHost extends SocketHost {
  sched!: Scheduler;
  override sleepUs(): Promise<void> {
    return this.sched.gate(`${this.name} dma-transfer`, `${this.name} DMA transfer completes`);
  }
}

interface Live {
  spec: DeviceSpec;
  host: ExploreHost;
  device: Device;
  ext: ExternalDevice;
  seenFindings: number;
}

interface Mapping {
  pid: number;
  addr: number;
  pages: number;
}

const ERRNO = /^E[A-Z]+$/;

export async function runScenario(sc: Scenario, o: RunOptions): Promise<RunResult> {
  resetNotifierIds();
  resetExternalIds();
  const sched = new Scheduler({ kind: 'default' });
  const svc = new Service({
    kernel: { memoryBytes: 4 << 20, deviceMemoryBytes: 2 << 20, swapBytes: 8 << 20, numaNodes: 2, thp: 'madvise', bootId: 1 },
    // Nothing may time out during a run: deadlines are wall-clock, choices are not.
    deadlineMs: 600_000,
    channel: { ratePerSec: 10_000_000, helloTimeoutMs: 600_000 },
    traceEvents: o.trace ? DEFAULT_TRACE_CAPACITY : 0,
    // The explorer has its own progress oracle; the service's would only add a timer.
    progress: { intervalMs: 3_600_000 },
  });
  const k = svc.kernel;
  // Device locks and whose they are: a lock is first taken by the device whose step (a frame to
  // or from it, or a thread operation naming it) led to the acquisition.
  const mutexes = new Map<Mutex, string | null>();
  const savedGate = Mutex.gate;
  Mutex.gate = (m, who) => {
    if (!mutexes.has(m) || mutexes.get(m) === null) mutexes.set(m, deviceOfLastStep());
    return sched.gate(`lock ${m.name} by ${who}`, `${m.name}: ${who} may take the lock`);
  };
  const savedSleep = OOM_REAPER.sleep;
  OOM_REAPER.sleep = () => sched.gate('oom_reaper retry', 'the OOM reaper tries again');
  /** Which device the last step belongs to, if any (frame keys name it; threads name it per op). */
  const threadDevice = new Map<string, string | null>();
  const deviceOfLastStep = (): string | null => {
    const key = sched.taken[sched.taken.length - 1]?.key ?? '';
    const frame = /^kernel→(.+)$|^(.+)→kernel$/.exec(key);
    if (frame) return frame[1] ?? frame[2];
    if (key.startsWith('thread ')) return threadDevice.get(key.slice(7)) ?? null;
    const gateDev = /^(\S+) dma-transfer#/.exec(key);
    if (gateDev) return gateDev[1];
    for (const [m, owner] of mutexes) if (owner && key.startsWith(`lock ${m.name} by `)) return owner;
    return null;
  };
  const live: Live[] = [];
  const ops: string[] = [];
  let finding: Finding | null = null;
  const found = (f: Omit<Finding, 'step'>): void => {
    if (!finding) finding = { ...f, step: sched.taken.length };
  };

  /** Runs default steps until `p` settles (set-up and tear-down are not part of the schedule). */
  const drive = async <T>(p: Promise<T>, budget = 10_000): Promise<T> => {
    let done = false;
    const q = p.finally(() => (done = true));
    q.catch(() => undefined);
    for (let i = 0; i < budget; i++) {
      await sched.settle();
      if (done) break;
      if (!sched.step()) await sched.settle();
    }
    return q;
  };

  try {
    // ---- processes, mappings, devices (deterministic set-up under the default policy) ---------
    const pids = new Map<string, number>();
    for (const name of sc.processes) pids.set(name, k.createProcess(name).pid);
    const maps = new Map<string, Mapping>();
    for (const m of sc.mappings) {
      const pid = pids.get(m.process)!;
      const file = m.file ? { id: k.createFile(m.pages * PAGE_SIZE).id } : undefined;
      const addr = await drive(k.mmap(pid, { length: m.pages * PAGE_SIZE, prot: protFromNames(m.prot), shared: m.shared || m.file, populate: m.populate, file, name: m.name }));
      maps.set(m.name, { pid, addr, pages: m.pages });
    }
    for (const spec of sc.devices) {
      const pipe = pipePair(sched, spec.name);
      svc.channel.adopt(pipe.server, null, `explore:${spec.name}`);
      const client = new DeviceClient({ url: 'pipe:', token: 'devmirror-local', name: spec.name, kind: spec.kind, socket: () => pipe.client, requestTimeoutMs: 600_000 });
      await drive(client.connect());
      const win = maps.get(spec.window)!;
      const options = { ...windowOptions(spec.kind, { start: win.addr, end: win.addr + win.pages * PAGE_SIZE }), ...(spec.kind === 'gpu' ? { xnack: true } : {}), ...spec.options };
      const host = new ExploreHost(client, { pid: pids.get(spec.process)!, kind: spec.kind, name: spec.name, policy: spec.policy, options });
      host.sched = sched;
      const device = PERSONALITIES[spec.kind](host);
      host.mirrorSummary = () => device.summary();
      await drive(device.attach());
      device.dma.configure({ transferUs: spec.transferUs, start: win.addr, end: win.addr + win.pages * PAGE_SIZE });
      device.bug = spec.bug;
      const ext = svc.channel.list().find((d) => d.name === spec.name && d.alive);
      if (!ext) throw new DevmirrorError('DM_ERR_CONFLICT', `explorer: device ${spec.name} did not attach`);
      live.push({ spec, host, device, ext, seenFindings: 0 });
    }
    await drive(Promise.resolve());

    // ---- the scheduled part -----------------------------------------------------------------
    sched.taken.length = 0;
    sched.policy = o.policy;
    const addrOf = (op: OpSpec): { m: Mapping; va: number; len: number } => {
      const m = maps.get(op.map!)!;
      const page = op.page ?? 0;
      const pages = op.pages ?? Math.max(1, m.pages - page);
      return { m, va: m.addr + page * PAGE_SIZE, len: pages * PAGE_SIZE };
    };
    const dev = (op: OpSpec): Live => live.find((l) => l.spec.name === op.device)!;
    const pidOf = (op: OpSpec): number => {
      if (op.process) {
        const p = pids.get(op.process);
        if (p === undefined) throw new DevmirrorError('DM_ERR_NOT_FOUND', `no process ${op.process} (not forked yet)`);
        return p;
      }
      return op.map ? maps.get(op.map)!.pid : pids.get(sc.processes[0])!;
    };
    const exec = async (op: OpSpec): Promise<string> => {
      switch (op.op) {
        case 'store': {
          const { m, va } = addrOf(op);
          await k.write(m.pid, va, Uint8Array.of(op.value ?? 1));
          return 'ok';
        }
        case 'load': {
          const { m, va } = addrOf(op);
          const b = (await k.read(m.pid, va, 1))[0];
          if (op.expect !== undefined && b !== op.expect) found({ oracle: 'data', kind: 'data', device: null, message: `load of ${op.map}[${op.page ?? 0}] read ${b}, expected ${op.expect}` });
          return `read ${b}`;
        }
        case 'munmap': {
          const { m, va, len } = addrOf(op);
          await k.munmap(m.pid, va, len);
          return 'ok';
        }
        case 'mprotect': {
          const { m, va, len } = addrOf(op);
          await k.mprotect(m.pid, va, len, protFromNames(op.prot!));
          return 'ok';
        }
        case 'madvise': {
          const { m, va, len } = addrOf(op);
          await k.madvise(m.pid, va, len, op.advice!);
          return 'ok';
        }
        case 'reclaim': {
          const { m, va, len } = addrOf(op);
          await k.madvise(m.pid, va, len, 'pageout');
          return 'ok';
        }
        case 'mmap': {
          const spec = sc.mappings.find((x) => x.name === op.map)!;
          const pid = pids.get(spec.process)!;
          const addr = await k.mmap(pid, { length: spec.pages * PAGE_SIZE, prot: protFromNames(op.prot ?? spec.prot), populate: spec.populate, name: spec.name });
          maps.set(spec.name, { pid, addr, pages: spec.pages });
          return `at 0x${addr.toString(16)}`;
        }
        case 'fork': {
          const child = await k.fork(pidOf(op));
          pids.set(op.child ?? `${op.process ?? sc.processes[0]}-child`, child.pid);
          return `pid ${child.pid}`;
        }
        case 'exit':
          await k.exit(pidOf(op));
          return 'ok';
        case 'clear_refs':
          await k.clearRefs(pidOf(op), 'soft-dirty');
          return 'ok';
        case 'msync': {
          const { m, va, len } = addrOf(op);
          return `written ${(await k.msync(m.pid, va, len)).written}`;
        }
        case 'migrate': {
          const { m, va, len } = addrOf(op);
          return `migrated ${(await k.migrate(m.pid, va, len, op.node ?? 1)).migrated}`;
        }
        case 'compact':
          return `moved ${JSON.stringify(await k.compact(op.node ?? 0)).slice(0, 60)}`;
        case 'ksm':
          return `ksm ${JSON.stringify(await k.ksm()).slice(0, 60)}`;
        case 'collapse': {
          const { m, va } = addrOf(op);
          return `collapse ${JSON.stringify(await k.collapse(m.pid, va))}`;
        }
        case 'thp_split': {
          const { m, va } = addrOf(op);
          return `split ${await k.splitThp(m.pid, va)}`;
        }
        case 'writeback':
          return `writeback ${JSON.stringify(await k.writeback()).slice(0, 60)}`;
        case 'numa_balance':
          return `scan ${JSON.stringify(await k.numaBalance(pidOf(op))).slice(0, 60)}`;
        case 'oom_reap':
          return `killed ${await k.oomKill(pidOf(op))}`;
        case 'fault': {
          const { va } = addrOf(op);
          return (await dev(op).device.fault(va, op.write === true)) ? 'mapped' : 'failed';
        }
        case 'dma': {
          const { va } = addrOf(op);
          return (await dev(op).device.dma.access(va, op.write === true)) ? 'done' : 'failed';
        }
        case 'dmirror': {
          const { va } = addrOf(op);
          const d = dev(op);
          const npages = op.pages ?? 1;
          const args: Record<string, unknown> = { addr: va, npages };
          if (op.cmd === 'write') args.data = new Uint8Array(npages * PAGE_SIZE).fill(op.value ?? 0x5a);
          const r = (await d.host.command(op.cmd!, args)) as { cpages?: number };
          return `cpages ${r?.cpages ?? '?'}`;
        }
      }
    };

    const threads = sc.threads.map((t) => ({ name: t.name, ops: t.ops, next: 0, running: false }));
    const launch = (t: (typeof threads)[number]): void => {
      if (t.next >= t.ops.length) return;
      const op = t.ops[t.next];
      sched.enqueue(`thread ${t.name}`, `${t.name}: ${describeOp(op)}`, () => {
        t.running = true;
        threadDevice.set(t.name, op.device ?? null);
        exec(op).then(
          (r) => {
            ops.push(`${t.name}: ${describeOp(op)} -> ${r}`);
          },
          (e: Error) => {
            // An errno (a DevmirrorError, or a test_hmm command's errno code) is a result of the
            // operation; anything else escaping an operation is a crash of the code under test.
            const code = e instanceof DevmirrorError ? e.code : typeof (e as unknown as { code?: unknown }).code === "string" ? (e as unknown as { code: string }).code : '';
            const errno = ERRNO.test(code) ? code : '';
            if (e instanceof DevmirrorError || errno) ops.push(`${t.name}: ${describeOp(op)} -> ${errno || code || e.message}`);
            else found({ oracle: 'crash', kind: 'crash', device: op.device ?? null, message: `${t.name}: ${describeOp(op)} threw ${e?.stack ?? String(e)}` });
          },
        ).finally(() => {
          t.running = false;
          t.next++;
          launch(t);
        });
      });
    };
    for (const t of threads) launch(t);

    const retryBudget = o.retryBudget ?? 8;
    const checkFindings = (): void => {
      for (const l of live) {
        for (const [subId, r] of l.ext.progress.retries) {
          if (r.consecutive >= retryBudget) {
            found({ oracle: 'livelock', kind: 'retry-budget', device: l.spec.name, message: `a range fault of ${l.spec.name} (subscription ${subId}) was answered EBUSY ${r.consecutive} times in a row: invalidations from ${r.origins.join(', ') || '?'} kept overlapping it` });
          }
        }
        const fs = l.ext.findings;
        if (fs.length > l.seenFindings) {
          const f = fs[l.seenFindings];
          l.seenFindings = fs.length;
          found({ oracle: 'sanitizer', kind: f.kind, device: l.spec.name, message: f.message });
        }
      }
    };
    const maxSteps = o.maxSteps ?? 3000;
    const threadsDone = (): boolean => threads.every((t) => t.next >= t.ops.length && !t.running);
    for (;;) {
      await sched.settle();
      checkFindings();
      if (finding) break;
      if (threadsDone()) break;
      if (sched.taken.length >= maxSteps) {
        found({ oracle: 'livelock', kind: 'livelock', device: null, message: `no thread finished within ${maxSteps} steps: ${threads.filter((t) => t.next < t.ops.length).map((t) => `${t.name} at ${describeOp(t.ops[t.next])}`).join('; ')}` });
        break;
      }
      if (!sched.step()) {
        const graph = buildWaitForGraph({
          kernel: k,
          devices: live.map((l) => ({ name: l.spec.name, source: l.ext })),
          mutexes: [...mutexes].map(([m, owner]) => ({ m, owner })),
          threads: threads.filter((t) => t.running).map((t) => ({ name: t.name, op: describeOp(t.ops[t.next]) })),
        });
        // A cycle is a deadlock; without one, something waits for what no step will ever do
        // (a lost wake-up, a promise nobody settles): still no progress, reported as stuck.
        const waiting = threads.filter((t) => t.running).map((t) => t.name).join(', ');
        found(
          graph.cycle
            ? { oracle: 'deadlock', kind: 'deadlock', device: null, message: `nothing can run and ${waiting} have not finished: ${graph.cycleText}`, graph }
            : { oracle: 'stuck', kind: 'stuck', device: null, message: `nothing can run and ${waiting} have not finished; no wait-for cycle (${graph.edges.length ? graph.edges.map((e) => `${e.from} -> ${e.to}`).join('; ') : 'no known waits'})`, graph },
        );
        break;
      }
    }

    // ---- after the threads: let everything in flight finish, then the end-of-run oracles ----
    if (!finding) {
      sched.policy = { kind: 'default' };
      const mark = sched.taken.length;
      for (const l of live) await drive(l.device.dma.quiesce(), 2000);
      await drive(Promise.resolve(), 2000);
      sched.taken.length = mark;
      checkFindings();
      if (!finding) {
        const audit = k.audit() as { ok?: boolean; problems?: string[] };
        if (audit.problems && audit.problems.length > 0) found({ oracle: 'audit', kind: 'audit', device: null, message: audit.problems.slice(0, 3).join('; ') });
      }
    }
    const trace = o.trace && svc.trace ? exportTrace(k, svc.trace, { limit: svc.trace.capacity }) : undefined;
    return { finding, steps: [...sched.taken], ops, ...(trace ? { trace } : {}) };
  } finally {
    Mutex.gate = savedGate;
    OOM_REAPER.sleep = savedSleep;
    for (const l of live) l.device.dma.stop();
    // Closing frames are not part of the run: deliver whatever the shutdown sends, unscheduled.
    sched.policy = { kind: 'default' };
    const stopping = svc.stop();
    for (let i = 0; i < 200 && !sched.idle; i++) {
      sched.step();
      await sched.settle(20);
    }
    await stopping.catch(() => undefined);
  }
}
