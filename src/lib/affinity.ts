/**
 * CPU affinity of this process's threads, for benchmarks (Linux; util-linux's `taskset`, since Node
 * has no affinity call).
 *
 * Why a bench pins: a round trip between two threads that spin is only fast when each has a CPU of
 * its own. On this 2-vCPU machine the guest scheduler sometimes wakes a thread that was parked onto
 * the CPU of the thread that woke it, and then it takes the load balancer milliseconds to move one
 * of them: meanwhile every round costs two context switches (about 30 us instead of the bare spin
 * round trip's 0.45 us). Which stretch of a measurement gets the shared CPU is a lottery that moves
 * the ratio of two contenders measured in different stretches, whatever their code.
 *
 * Measured 11-28 (bench/experiments/thread-placement.mjs, two runs): the spin round trip in blocks
 * of 2,000 rounds, each after a 2 ms pause, with a postMessage reference alive and measured in
 * alternating blocks. Unpinned, 5 and 6 of 16 blocks had over half their rounds slower than 5 us;
 * of the rounds that ended with the two threads on one CPU 99.7% and 99.6% were that slow, of the
 * rounds that ended with them apart 6.7% and 6.8%. Pinned (the main thread on one CPU, the workers
 * on the other): no block over half slow, 0.8% and 0.7% of the rounds slow.
 * Pinning only makes sense while every spinning thread can have a CPU of its own.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** The thread ids of this process now. */
export function threadIds(): Set<number> {
  try {
    return new Set(readdirSync('/proc/self/task').map(Number));
  } catch {
    return new Set();
  }
}

/** The CPUs a thread of this process may run on (its `Cpus_allowed_list`), or [] if unknown. */
export function allowedCpus(tid: number = process.pid): number[] {
  let list: string | undefined;
  try {
    list = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1];
  } catch {
    return [];
  }
  return list === undefined ? [] : parseCpuList(list);
}

/** "0-2,5" -> [0, 1, 2, 5]. */
export function parseCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    for (let c = lo; c <= hi; c++) out.push(c);
  }
  return out;
}

/** Why pinning cannot be used here, or null if it can (Linux with `taskset` and at least 2 CPUs). */
export function pinningUnavailable(): string | null {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (allowedCpus().length < 2) return 'fewer than 2 CPUs allowed';
  try {
    execFileSync('taskset', ['-pc', String(process.pid)], { stdio: 'pipe' });
  } catch (e) {
    return `taskset (util-linux) does not run: ${(e as Error).message.split('\n')[0]}`;
  }
  return null;
}

/** Sets one thread's affinity (a `taskset` CPU list such as "1" or "0-1"). Throws if taskset fails. */
export function setAffinity(tid: number, cpus: string): void {
  execFileSync('taskset', ['-pc', cpus, String(tid)], { stdio: 'pipe' });
}

/**
 * Pins the main thread to one CPU and every thread the process started since this object was made
 * (the workers of what was set up in between) to another; `restore` gives the main thread back its
 * former CPUs. Threads started by a pinned thread inherit its mask, so make the next set of workers
 * only after `restore`; a thread started in between that outlives what was measured (a pool's
 * thread) keeps the mask it was given.
 */
export class ThreadPinning {
  private readonly before = threadIds();
  private readonly mainCpus = allowedCpus();
  private applied = false;

  constructor(
    readonly mainCpu: number,
    /** The CPU, or CPUs, for the threads started since. */
    readonly othersCpu: number | readonly number[],
  ) {}

  /** Pins; returns the ids of the threads pinned to `othersCpu`. */
  apply(): number[] {
    const started = [...threadIds()].filter((t) => !this.before.has(t));
    setAffinity(process.pid, String(this.mainCpu));
    this.applied = true;
    for (const t of started) {
      try {
        setAffinity(t, typeof this.othersCpu === 'number' ? String(this.othersCpu) : this.othersCpu.join(','));
      } catch (e) {
        // A thread that exited in between has nothing to pin; any other failure is real.
        if (threadIds().has(t)) throw e;
      }
    }
    return started;
  }

  restore(): void {
    if (!this.applied) return;
    this.applied = false;
    setAffinity(process.pid, this.mainCpus.length > 0 ? this.mainCpus.join(',') : '0-1023');
  }
}

/**
 * Sets the affinity of every thread of a process (`taskset -a`), this one or a child. Threads it
 * starts later inherit the mask of the thread that starts them.
 */
export function setProcessAffinity(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-pc', cpus, String(pid)], { stdio: 'pipe' });
}
