/**
 * Busy-waits `us` microseconds on this thread (test hooks that widen a race window; never on a
 * path that runs outside tests).
 */
import { performance } from 'node:perf_hooks';
export function busyWaitUs(us: number): void {
  const until = performance.now() + us / 1000;
  while (performance.now() < until);
}
