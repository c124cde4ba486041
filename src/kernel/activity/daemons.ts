/**
 * Kernel daemons: each kernel activity can also run in the background at a rate (runs per second),
 * like kswapd, kcompactd, task_numa_work, ksmd, khugepaged and the writeback flusher. A run never
 * overlaps the previous one of the same daemon. Timers are unref'd: daemons never keep the process
 * alive.
 */
import { kerr } from '../../errors.js';
import type { Kernel } from '../kernel.js';
import { shrink } from './reclaim.js';
import { compact } from './migrate.js';
import { numaScan } from './numa.js';
import { ksmScan } from './ksm.js';
import { khugepagedScan } from './thp.js';
import { writebackAll } from './writeback.js';

export const DAEMON_NAMES = ['kswapd', 'kcompactd', 'numa', 'ksmd', 'khugepaged', 'flusher'] as const;
export type DaemonName = (typeof DAEMON_NAMES)[number];

export interface DaemonState {
  name: DaemonName;
  /** Runs per second; 0 = off. */
  rate: number;
  runs: number;
  errors: number;
  running: boolean;
  lastResult: unknown;
  description: string;
}

const DESCRIPTIONS: Record<DaemonName, string> = {
  kswapd: 'reclaims (ages, swaps, drops) pages while free memory is below the low watermark',
  kcompactd: 'compacts a 2 MiB block when no huge page is free but enough memory is',
  numa: 'NUMA balancing: turns a 256 MiB window of the next process into hinting faults',
  ksmd: 'merges identical pages of MADV_MERGEABLE areas',
  khugepaged: 'collapses recently used 2 MiB ranges of THP-enabled areas into huge pages',
  flusher: 'writes back dirty file pages (page_mkclean first)',
};

export const MAX_DAEMON_RATE = 1000;

export class Daemons {
  private readonly states = new Map<DaemonName, DaemonState>();
  private readonly timers = new Map<DaemonName, NodeJS.Timeout>();
  private numaCursor = 0;

  constructor(private readonly k: Kernel) {
    for (const name of DAEMON_NAMES) {
      this.states.set(name, { name, rate: 0, runs: 0, errors: 0, running: false, lastResult: null, description: DESCRIPTIONS[name] });
    }
  }

  list(): DaemonState[] {
    return DAEMON_NAMES.map((n) => ({ ...(this.states.get(n) as DaemonState) }));
  }

  set(name: DaemonName, rate: number): DaemonState {
    const st = this.states.get(name);
    if (!st) throw kerr('EINVAL', `no daemon ${String(name)}`);
    if (!Number.isFinite(rate) || rate < 0 || rate > MAX_DAEMON_RATE) throw kerr('EINVAL', `rate must be between 0 and ${MAX_DAEMON_RATE}`);
    st.rate = rate;
    const old = this.timers.get(name);
    if (old) clearInterval(old);
    this.timers.delete(name);
    if (rate > 0) {
      // A tiny rate is a long period, capped at the longest a timer takes (2^31 - 1 ms): above it,
      // node runs the timer every millisecond instead (TimeoutOverflowWarning).
      const t = setInterval(() => void this.tick(name), Math.min(2 ** 31 - 1, Math.max(1, Math.round(1000 / rate))));
      t.unref();
      this.timers.set(name, t);
    }
    return { ...st };
  }

  private async tick(name: DaemonName): Promise<void> {
    const st = this.states.get(name) as DaemonState;
    if (st.running) return;
    try {
      await this.runOnce(name);
    } catch {
      st.errors++;
    }
  }

  /** Runs the daemon's work once, now. */
  async runOnce(name: DaemonName): Promise<unknown> {
    const st = this.states.get(name);
    if (!st) throw kerr('EINVAL', `no daemon ${String(name)}`);
    st.running = true;
    try {
      const r = await this.work(name);
      st.runs++;
      st.lastResult = r;
      return r;
    } finally {
      st.running = false;
    }
  }

  private async work(name: DaemonName): Promise<unknown> {
    const k = this.k;
    switch (name) {
      case 'kswapd': {
        const low = Math.ceil(k.mem.ramFrames * 0.05);
        const high = Math.ceil(k.mem.ramFrames * 0.1);
        const free = k.mem.freeFrames();
        if (free >= low) return { free, reclaimed: 0 };
        return shrink(k, high - free);
      }
      case 'kcompactd': {
        const results = [];
        for (let n = 0; n < k.mem.numaNodes; n++) results.push(await compact(k, n));
        return results;
      }
      case 'numa': {
        const procs = k.liveProcesses();
        if (procs.length === 0) return null;
        const p = procs[this.numaCursor++ % procs.length];
        return { pid: p.pid, ...(await numaScan(k, p)) };
      }
      case 'ksmd':
        return ksmScan(k);
      case 'khugepaged':
        return khugepagedScan(k);
      case 'flusher':
        return writebackAll(k);
    }
  }

  stopAll(): void {
    for (const name of DAEMON_NAMES) this.set(name, 0);
  }
}
