/**
 * Every built-in personality, under its default (faithful) policy, passes the conformance suite
 * over both transports: as a worker thread and as a `devmirror device` client process (which runs
 * the compiled CLI: `npm run build` first).
 */
import { describe, expect, it } from 'vitest';
import { runConformance } from '../../src/conformance/runner.js';
import type { DeviceKind } from '../../src/devices/protocol.js';

const KINDS: DeviceKind[] = ['gpu', 'rdma', 'kvm', 'dmirror'];

describe('conformance of the built-in personalities', () => {
  for (const transport of ['worker', 'external'] as const) {
    for (const kind of KINDS) {
      it(`${kind} over the ${transport} transport passes every check`, async () => {
        const r = await runConformance({ mode: transport === 'worker' ? 'builtin-worker' : 'builtin-external', kind });
        const failed = r.checks.filter((c) => c.result === 'fail');
        expect(failed.map((c) => `${c.id}: ${c.evidence}`)).toEqual([]);
        expect(r.passed).toBe(true);
        expect(r.transport).toBe(transport);
        // Only the reconnection and the kernel restart are skipped, and only for workers (no
        // connection to drop).
        const skipped = r.checks.filter((c) => c.result === 'skip').map((c) => c.id);
        expect(skipped).toEqual(transport === 'worker' ? ['reconnect', 'restart'] : []);
        // The release check drove device writes through the exit (a worker dmirror or rdma, stopped
        // with its process, may refuse the first sweep already: 0 sweeps, then refused).
        expect(r.checks.find((c) => c.id === 'release')!.evidence).toMatch(/\d+ sweeps of 4 device writes during the \d+ ms exit/);
      }, 180_000);
    }
  }
});
