/**
 * The OOM killer and the OOM reaper, the one non-blockable caller of the notifiers.
 *
 * The reaper walks the victim's VMAs that are anonymous or private and, for each, opens a
 * non-blockable UNMAP over the whole VMA. A subscriber that cannot act without sleeping refuses
 * (EAGAIN): the reaper leaves that VMA's PTEs untouched, skips it, and tries the whole mm again
 * later (MAX_OOM_REAP_RETRIES times, HZ/10 apart), as __oom_reap_task_mm does.
 */
import { PTE } from '../layout.js';
import type { Kernel, Process } from '../kernel.js';
import { EAGAIN } from '../../notifier/subscriptions.js';
import { makeRange, MmuNotifierEvent } from '../../notifier/range.js';

export const OOM_REAPER = {
  /** MAX_OOM_REAP_RETRIES */
  maxRetries: 10,
  /** HZ/10 */
  retryDelayMs: 100,
  /**
   * The reaper's wait between attempts (schedule_timeout_idle). The interleaving explorer replaces
   * it with a scheduler step: a wall-clock timer would make its runs depend on time, not on the seed.
   */
  sleep: (ms: number): Promise<void> => new Promise<void>((r) => setTimeout(r, ms)),
};

export interface ReapResult {
  pid: number;
  attempts: number;
  /** VMAs whose UNMAP was refused on the last attempt. */
  skippedVmas: number;
  reapedVmas: number;
  /** Leaves zapped over all attempts. */
  zapped: number;
  complete: boolean;
}

/** One pass over the mm (__oom_reap_task_mm); false if a VMA was skipped. */
async function reapOnce(k: Kernel, p: Process, res: ReapResult): Promise<boolean> {
  const mm = p.mm;
  if (!mm.mmapLock.tryRead('oom_reaper')) return false;
  let ok = true;
  res.skippedVmas = 0;
  try {
    for (const vma of [...mm.vmas.items]) {
      if (!(vma.anonymous || !vma.shared)) continue;
      const range = makeRange(mm.pid, MmuNotifierEvent.UNMAP, vma.start, vma.end, 'oom_reaper');
      const hasNotifiers = mm.notifier.subscriberCount > 0 || mm.notifier.hasItree;
      if (hasNotifiers) {
        const r = await mm.notifier.invalidateRangeStart(range, false);
        if (r === EAGAIN) {
          ok = false;
          res.skippedVmas++;
          continue; // PTEs untouched, no end
        }
      }
      // unmap_page_range: private/anonymous memory only; huge PMDs inside a VMA are whole.
      mm.pt.walk(vma.start, vma.end, (va, idx, _level, e) => {
        if (e & PTE.MIGRATION) return;
        k.zapLeaf(mm, va, idx, e);
        res.zapped++;
      });
      res.reapedVmas++;
      if (hasNotifiers) mm.notifier.invalidateRangeEnd(range);
    }
  } finally {
    mm.mmapLock.readUnlock('oom_reaper');
  }
  return ok;
}

/** oom_reap_task: retry until every VMA was reaped or the retries run out. */
export async function oomReap(k: Kernel, p: Process): Promise<ReapResult> {
  const res: ReapResult = { pid: p.pid, attempts: 0, skippedVmas: 0, reapedVmas: 0, zapped: 0, complete: false };
  while (res.attempts < OOM_REAPER.maxRetries && !p.mm.dead) {
    res.attempts++;
    if (await reapOnce(k, p, res)) {
      res.complete = true;
      break;
    }
    k.stats.oomReapRetries++;
    await OOM_REAPER.sleep(OOM_REAPER.retryDelayMs);
  }
  p.mm.oomSkip = true;
  return res;
}

/** Picks the process with the largest footprint (oom_badness: rss + swap + page tables). */
export function selectVictim(k: Kernel): Process | null {
  let best: Process | null = null;
  let bestScore = 0;
  for (const p of k.liveProcesses()) {
    if (p.oomKilled || p.state !== 'running' || p.mm.exiting) continue;
    const score = p.mm.rss + p.mm.swapEntries;
    if (score > bestScore) {
      best = p;
      bestScore = score;
    }
  }
  return best;
}

/**
 * out_of_memory: kill the largest process, reap its memory, and let it exit in the background.
 * Resolves true if a victim was found.
 */
export async function oomKill(
  k: Kernel,
  reason: string,
  exitProcess: (p: Process) => Promise<void>,
  victim: Process | null = selectVictim(k),
): Promise<boolean> {
  if (!victim) return false;
  victim.oomKilled = true;
  k.stats.oomKills++;
  k.emit('onOomKill', victim, reason);
  await oomReap(k, victim);
  // The victim itself exits (exit_mmap: release, then UNMAP everything). It may need the mmap
  // lock a stuck allocation holds, so nobody waits for it here.
  void exitProcess(victim).catch(() => undefined);
  return true;
}
