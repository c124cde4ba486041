/**
 * Replay of real programs' address-space histories (strace fixtures captured on this kind of
 * machine, and one captured live when strace is installed) with devices attached.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_BENCH, runBench } from '../../src/loadgen/runner.js';
import { parseStrace } from '../../src/loadgen/strace.js';
import { replayTrace } from '../../src/loadgen/replay.js';
import { Kernel } from '../../src/kernel/kernel.js';

const hasStrace = spawnSync('strace', ['-V']).status === 0;
if (!hasStrace && process.env.CI === 'true') throw new Error('strace is required under CI=true (apt-get install strace)');

describe('strace replay', () => {
  // Each program's signature: how many mappings it makes at least, and the event its history is
  // made of (see bench/fixtures/strace/README.md).
  const fixtures = [
    { name: 'node-alloc', minMappings: 100, event: 'UNMAP' },
    { name: 'python-list', minMappings: 100, event: 'UNMAP' },
    { name: 'java-collections', minMappings: 100, event: 'PROTECTION_VMA' },
    { name: 'boehm-gc-incremental', minMappings: 40, event: 'PROTECTION_VMA' },
  ];
  for (const { name: fixture, minMappings, event } of fixtures) {
    it(`replays ${fixture} with all four devices attached, sanitizer-clean`, async () => {
      const r = await runBench({ ...DEFAULT_BENCH, durationMs: undefined, ops: undefined, dmaRate: 500, replay: { file: `bench/fixtures/strace/${fixture}.strace` } });
      expect(r.replay!.events).toBeGreaterThan(900);
      expect(r.replay!.replayed / r.replay!.calls).toBeGreaterThan(0.8);
      expect(r.replay!.mappings).toBeGreaterThan(minMappings);
      expect(r.replay!.touchedPages).toBeGreaterThan(100);
      expect(r.events.map((e) => e.event)).toContain(event);
      expect(r.totals.findings).toBe(0);
      expect(r.totals.checked).toBeGreaterThan(0);
      expect(r.devices.map((d) => `${d.name}:${d.state}${d.stateReason ? ` (${d.stateReason})` : ''}`)).toEqual(r.devices.map((d) => `${d.name}:running`));
    });
  }

  it.skipIf(!hasStrace)('captures a program live with strace and replays it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'devmirror-strace-'));
    const out = join(dir, 'live.strace');
    execFileSync('strace', ['-f', '-tt', '-e', 'trace=memory,openat,close', '-o', out, 'python3', '-c', 'x = bytearray(32 << 20); x[::4096] = b"a" * len(x[::4096]); del x'], { stdio: 'ignore' });
    const t = parseStrace(readFileSync(out, 'utf8'));
    expect(t.events.some((e) => e.op.kind === 'mmap' && e.op.length >= 32 << 20)).toBe(true); // the 32 MiB bytearray
    const k = new Kernel({ memoryBytes: 256 << 20 });
    const p = k.createProcess('live');
    const s = await replayTrace(k, p, t);
    expect(s.replayed).toBeGreaterThan(0.8 * s.calls);
    expect(k.audit().problems).toEqual([]);
  });
});
