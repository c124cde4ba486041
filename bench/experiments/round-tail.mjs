/**
 * Experiment: where the slow rounds of bench:channel's N = 1 round fall, the client on the
 * server's CPU: 60,000 rounds of devmirror (or, with `floor`, of the bare ws echo) alone, the event
 * loop turning every 64 rounds as in the bench. Prints the percentiles, how many rounds took more
 * than K times the p50 and where they fall in the 64-round cycle, the gaps between them, and a
 * histogram of their latencies.
 *
 *   npm run build && node bench/experiments/round-tail.mjs [sys|floor] [K=3]
 *
 * Used in docs/benchmarks.md ("Separate runs").
 */
import { fileURLToPath } from 'node:url';
import { openTogether } from './channel-system.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const which = process.argv[2] ?? 'sys';
const K = Number(process.argv[3] ?? 3);
const subject = await openTogether(root, which === 'sys' ? 'sys' : 'echo');
const N = 60_000;
const lat = new Float64Array(N);
const at = new Float64Array(N);
const t0 = process.hrtime.bigint();
for (let i = 0; i < N; i++) {
  const t = process.hrtime.bigint();
  await subject.round();
  lat[i] = Number(process.hrtime.bigint() - t) / 1000;
  at[i] = Number(t - t0) / 1000;
  if (i % 64 === 63) await new Promise((r) => setImmediate(r));
}
const sorted = Float64Array.from(lat).sort();
const q = (p) => sorted[Math.min(N - 1, Math.floor(p * N))];
console.log(`${which}: p50 ${q(0.5).toFixed(1)} p90 ${q(0.9).toFixed(1)} p99 ${q(0.99).toFixed(1)} p99_9 ${q(0.999).toFixed(1)} max ${sorted[N - 1].toFixed(1)} us`);
const limit = K * q(0.5);
const slow = [];
for (let i = 0; i < N; i++) if (lat[i] > limit) slow.push(i);
const cycle = new Array(64).fill(0);
for (const i of slow) cycle[i % 64]++;
console.log(`rounds over ${limit.toFixed(1)} us (${K}x the p50): ${slow.length}; by position in the 64-round cycle: ${cycle.join(' ')}`);
const gaps = slow.slice(1).map((x, k) => at[x] - at[slow[k]]).sort((a, b) => a - b);
const g = (p) => (gaps.length ? gaps[Math.floor(p * (gaps.length - 1))].toFixed(0) : '-');
console.log(`gaps between them: p10 ${g(0.1)}, p50 ${g(0.5)}, p90 ${g(0.9)} us`);
console.log(`their latencies: ${[100, 200, 500, 1000, 5000].map((b) => `under ${b} us ${slow.filter((i) => lat[i] < b).length}`).join(', ')}`);
await subject.close();
process.exit(0);
