/** Same-run baselines: the bare references, and with external clients the ws echo and fan-out floors. */
import { execSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { measureBaselines } from '../../src/loadgen/baselines.js';

const clientProcesses = (): number => {
  try {
    return execSync('pgrep -f loadgen/channel-clients', { encoding: 'utf8' }).trim().split('\n').filter(Boolean).length;
  } catch {
    return 0; // pgrep exits 1 when nothing matches
  }
};

describe('bench baselines', () => {
  it('measures the references at N workers and, with 6 clients, the ws floors over the same processes, then stops them', async () => {
    const before = clientProcesses();
    const b = await measureBaselines(2, 100, 6);
    expect(b.workers).toBe(2);
    for (const p of [b.atomicsBlocking, b.atomicsSpin, b.atomicsWaitAsync, b.postMessage, b.wsEcho!, b.wsFanout!.lat]) {
      expect(p.n).toBeGreaterThanOrEqual(50);
      expect(p.p50).toBeGreaterThan(0);
      expect(p.max).toBeGreaterThanOrEqual(p.p99);
    }
    expect(b.wsFanout!.clients).toBe(6);
    // The client processes were stopped (stdin closed): none of ours is left behind.
    await new Promise((r) => setTimeout(r, 500));
    expect(clientProcesses()).toBeLessThanOrEqual(before);
  }, 120_000);

  it('without external clients measures no ws floor', async () => {
    const b = await measureBaselines(1, 50, 0);
    expect(b.wsEcho).toBeUndefined();
    expect(b.wsFanout).toBeUndefined();
  }, 60_000);
});
