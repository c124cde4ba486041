/**
 * Experiment helper: a neighbour that keeps the memory system busy, to see how a benchmark's ratio
 * moves when something else on the host fills the shared caches and memory bandwidth (as other
 * guests of a shared host do). Touches one word in every 64 bytes of a buffer of M MiB, over and
 * over, until killed; pins itself to CPU C (util-linux taskset) when given.
 *
 *   node bench/experiments/thrasher.mjs [M=64] [C] &
 *   node dist/bench/channel.js --ns=1 --placement=together --runs=7 ...
 *   kill %1
 *
 * Used in docs/benchmarks.md ("Separate runs").
 */
import { execFileSync } from 'node:child_process';

const mib = Number(process.argv[2] ?? 64);
const cpu = process.argv[3];
if (cpu !== undefined) execFileSync('taskset', ['-a', '-p', '-c', cpu, String(process.pid)], { stdio: 'ignore' });
const words = new Float64Array((mib * 1024 * 1024) / 8);
let sum = 0;
for (;;) {
  for (let i = 0; i < words.length; i += 8) sum += words[i]++;
  if (sum < 0) break; // never: keeps the loop's work observable
}
