/**
 * Thread pinning for benchmarks (src/lib/affinity.ts): the CPU-list parser, and a real pin of this
 * process's main thread and a worker it started, read back from /proc, then undone.
 */
import { spawnSync } from 'node:child_process';
import { Worker, isMainThread } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { ThreadPinning, allowedCpus, parseCpuList, pinningUnavailable, threadIds } from '../../src/lib/affinity.js';

const linux = process.platform === 'linux';
const hasTaskset = linux && spawnSync('taskset', ['-pc', String(process.pid)]).status === 0;
if (linux && !hasTaskset && process.env.CI === 'true') throw new Error('taskset is required under CI=true (apt-get install util-linux)');
const twoCpus = allowedCpus().length >= 2;

describe('parseCpuList', () => {
  it('expands ranges and single CPUs, in order, and ignores what is not a CPU list', () => {
    expect(parseCpuList('0-2,5')).toEqual([0, 1, 2, 5]);
    expect(parseCpuList(' 3 ')).toEqual([3]);
    expect(parseCpuList('1,x,4-3,7')).toEqual([1, 7]);
    expect(parseCpuList('')).toEqual([]);
  });
});

describe.skipIf(!hasTaskset || !twoCpus)('ThreadPinning', () => {
  it('pins the main thread to one CPU and the threads started since to another, and restores the main thread', async () => {
    // The pinned thread must be the one running this test (vitest's forks pool).
    expect(isMainThread).toBe(true);
    expect(pinningUnavailable()).toBeNull();
    const before = allowedCpus();
    const [a, b] = before;
    const pinning = new ThreadPinning(a, b);
    // A worker that reports its own thread id and stays alive until terminated.
    const w = new Worker(
      `const { parentPort } = require('node:worker_threads');
       const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
       parentPort.postMessage(tid);
       setInterval(() => {}, 1000);`,
      { eval: true },
    );
    try {
      const tid = await new Promise<number>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      expect(threadIds().has(tid)).toBe(true);
      const pinned = pinning.apply();
      expect(pinned).toContain(tid);
      expect(pinned).not.toContain(process.pid);
      expect(allowedCpus(process.pid)).toEqual([a]);
      expect(allowedCpus(tid)).toEqual([b]);
      pinning.restore();
      expect(allowedCpus(process.pid)).toEqual(before);
      // Restoring twice is harmless.
      pinning.restore();
      expect(allowedCpus(process.pid)).toEqual(before);
    } finally {
      pinning.restore();
      await w.terminate();
    }
  });
});

describe('allowedCpus', () => {
  it.skipIf(!linux)('reads this thread’s CPUs from /proc, and none for a thread that does not exist', () => {
    expect(allowedCpus().length).toBeGreaterThan(0);
    expect(allowedCpus(2 ** 30)).toEqual([]);
  });
});
