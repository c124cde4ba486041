/**
 * NUMA balancing (task_numa_work): periodically turn a window of a process's memory into NUMA
 * hinting entries (change_prot_numa: PROTECTION_VMA, lazily from the first populated PUD), so the
 * next access faults, restores the entry without notifying, and migrates the page to the node of
 * the CPU that touched it (CLEAR through try_to_migrate).
 */
import type { Kernel, Process } from '../kernel.js';
import { changeProtection } from '../syscalls.js';

export interface NumaScanResult {
  scannedBytes: number;
  hinted: number;
}

/** One scan window (numa_balancing_scan_size_mb, 256 MiB by default). */
export async function numaScan(k: Kernel, p: Process, windowBytes = 256 * 1024 * 1024): Promise<NumaScanResult> {
  const mm = p.mm;
  const res: NumaScanResult = { scannedBytes: 0, hinted: 0 };
  if (!mm.mmapLock.tryRead('task_numa_work')) return res;
  try {
    if (mm.exiting) return res;
    let start = mm.numaScanOffset;
    let vmas = mm.vmas.items.filter((v) => v.end > start);
    if (vmas.length === 0) {
      start = 0;
      vmas = mm.vmas.items;
    }
    for (const v of vmas) {
      if (res.scannedBytes >= windowBytes) break;
      // Inaccessible areas and read-only file mappings (shared libraries) are skipped.
      if (!v.readable || (v.file && v.file.kind === 'file' && !v.writable)) continue;
      const s = Math.max(start, v.start);
      const e = Math.min(v.end, s + (windowBytes - res.scannedBytes));
      res.hinted += await changeProtection(k, mm, v, s, e, v.prot, 'numa_balancing', true);
      res.scannedBytes += e - s;
      mm.numaScanOffset = e;
    }
    if (res.scannedBytes === 0) mm.numaScanOffset = 0;
  } finally {
    mm.mmapLock.readUnlock('task_numa_work');
  }
  return res;
}
