/**
 * Paired measurement: several contenders (the system under test and its references) that all exist
 * at once, measured in alternating blocks of rounds instead of one after the other.
 *
 * Why: on a shared 2-vCPU machine the same code drifts by tens of percent over seconds, so a
 * reference measured a few seconds before the system under test is a sample of other conditions.
 * Measured in blocks that take turns, every contender sees the same drift, and the p50 of each
 * block shows how much of a ratio is the machine moving under it. It does not remove every
 * effect: a state of the machine can also last one block and not the next (on the VM of 11-27
 * the bare spin round trip ran at 0.46 to 0.52 us in some blocks and 0.22 to 0.24 us in others,
 * bench/experiments/reference-blocks.mjs), and contenders that share a process can change each
 * other's conditions (docs/benchmarks.md, bench:handshake, compares both schedules).
 *
 * Before each block, `settle` lets the previous contender's threads stop (a device or a reference
 * worker spins for a while after its last round before it parks; a spinner left over from the last
 * block would take a core from this one). Then come `reentry` rounds that are not kept: the
 * contender's threads were parked while the others ran, and the first rounds wake them from cold.
 * The order of the contenders rotates from block to block, so none always runs right after the
 * same neighbour.
 */
import { performance } from 'node:perf_hooks';
import { percentiles, type Percentiles } from './stats.js';

export interface Contender {
  readonly name: string;
  /** One round; returns its latency in microseconds. */
  round(): number | Promise<number>;
}

export interface BlockProbe<S> {
  /** Read before a contender's measured rounds of a block (e.g. CPU time, context switches). */
  before(): S;
  /** Adds what happened since `before` to the contender's totals. */
  after(name: string, since: S): void;
}

export interface InterleaveOptions<S> {
  /** Measured rounds per contender, in all (split evenly over the blocks). */
  rounds: number;
  /** Blocks per contender (at least 1). */
  blocks: number;
  /** Rounds at the start of each block that are not kept. */
  reentry?: number;
  /** Rounds per contender before the first block, not kept (JIT, caches, parked threads). */
  warm?: number;
  /**
   * And at least this many milliseconds of them per contender (default 0): a count alone can be
   * over before the JIT's background compiler had a core (see bench/handshake.ts, warmFor).
   */
  warmMs?: number;
  /** Called every `yieldEvery` rounds to let the event loop turn (the kernel thread serves I/O). */
  yieldEvery?: number;
  tick?: () => Promise<void>;
  /** Awaited before each block (default: a 2 ms timer, longer than any spin before a park here). */
  settle?: () => Promise<void>;
  probe?: BlockProbe<S>;
}

export interface InterleavedResult {
  name: string;
  /** Every kept round, in the order measured. */
  samples: Float64Array;
  lat: Percentiles;
  /** p50 of each block, in block order. */
  blockP50: number[];
  /** Wall time of the kept rounds, milliseconds (the re-entry rounds excluded). */
  measuredMs: number;
}

const defaultTick = (): Promise<void> => new Promise((r) => setImmediate(r));
const defaultSettle = (): Promise<void> => new Promise((r) => setTimeout(r, 2));

/**
 * Rounds not kept: at least `warm` of them and at least `warmMs` milliseconds of them, the event
 * loop turning every `yieldEvery` (interleave's warm-up, and bench:handshake's sequential one).
 */
export async function warmUp(
  round: () => number | Promise<number>,
  opts: { warm: number; warmMs?: number; yieldEvery?: number; tick?: () => Promise<void> },
): Promise<void> {
  const warmMs = Math.max(0, opts.warmMs ?? 0);
  const yieldEvery = Math.max(1, Math.floor(opts.yieldEvery ?? 32));
  const tick = opts.tick ?? defaultTick;
  const t0 = performance.now();
  for (let i = 0; i < opts.warm || performance.now() - t0 < warmMs; i++) {
    await round();
    if (i % yieldEvery === yieldEvery - 1) await tick();
  }
}

export async function interleave<S>(contenders: readonly Contender[], opts: InterleaveOptions<S>): Promise<InterleavedResult[]> {
  if (contenders.length === 0) return [];
  const blocks = Math.max(1, Math.floor(opts.blocks));
  const per = Math.max(1, Math.floor(opts.rounds / blocks));
  const reentry = Math.max(0, Math.floor(opts.reentry ?? 32));
  const warm = Math.max(0, Math.floor(opts.warm ?? 0));
  const yieldEvery = Math.max(1, Math.floor(opts.yieldEvery ?? 32));
  const tick = opts.tick ?? defaultTick;
  const settle = opts.settle ?? defaultSettle;
  const run = async (c: Contender, n: number, keep: Float64Array | null, at: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const us = await c.round();
      if (keep) keep[at + i] = us;
      if (i % yieldEvery === yieldEvery - 1) await tick();
    }
  };
  for (const c of contenders) await warmUp(() => c.round(), { warm, warmMs: opts.warmMs, yieldEvery, tick });
  const samples = contenders.map(() => new Float64Array(per * blocks));
  const blockP50 = contenders.map(() => [] as number[]);
  const measuredMs = contenders.map(() => 0);
  for (let b = 0; b < blocks; b++) {
    for (let j = 0; j < contenders.length; j++) {
      const i = (j + b) % contenders.length;
      const c = contenders[i];
      await settle();
      await run(c, reentry, null, 0);
      const since = opts.probe?.before();
      const t0 = performance.now();
      await run(c, per, samples[i], b * per);
      measuredMs[i] += performance.now() - t0;
      if (opts.probe && since !== undefined) opts.probe.after(c.name, since);
      blockP50[i].push(percentiles(samples[i].subarray(b * per, (b + 1) * per)).p50);
    }
  }
  return contenders.map((c, i) => ({ name: c.name, samples: samples[i], lat: percentiles(samples[i]), blockP50: blockP50[i], measuredMs: measuredMs[i] }));
}
