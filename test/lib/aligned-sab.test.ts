import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { alignedSab } from '../../src/lib/aligned-sab.js';

describe('alignedSab', () => {
  it('is a SharedArrayBuffer of whole 64 KiB pages, at least the size asked for, zeroed', () => {
    for (const bytes of [1, 8384, 65536, 65537, 300_000]) {
      const sab = alignedSab(bytes);
      expect(sab).toBeInstanceOf(SharedArrayBuffer);
      expect(sab.byteLength).toBeGreaterThanOrEqual(bytes);
      expect(sab.byteLength % 65536).toBe(0);
      expect(new Uint8Array(sab).every((b) => b === 0)).toBe(true);
    }
  });

  it('is shared with a worker: Atomics stores and wakes cross threads', async () => {
    const sab = alignedSab(64);
    const words = new Int32Array(sab, 0, 16);
    const w = new Worker(
      `const { workerData } = require('node:worker_threads');
       const a = new Int32Array(workerData, 0, 16);
       Atomics.wait(a, 0, 0);
       Atomics.store(a, 1, Atomics.load(a, 0) * 2);
       Atomics.notify(a, 1);`,
      { eval: true, workerData: sab },
    );
    try {
      await new Promise((r) => w.once('online', r));
      Atomics.store(words, 0, 21);
      Atomics.notify(words, 0);
      const r = Atomics.waitAsync(words, 1, 0, 10_000);
      if (r.async) await r.value;
      expect(Atomics.load(words, 1)).toBe(42);
    } finally {
      await w.terminate();
    }
  });
});
