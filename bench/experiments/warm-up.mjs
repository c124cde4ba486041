/**
 * Experiment: how many rounds bench:channel's N = 1 subjects need before their p50 stops falling.
 * One subject at a time, with its client process on this process's CPU (the `together`
 * placement), from its first round: the p50 of each CHUNK rounds (default 1,000), COUNT chunks.
 *
 *   npm run build && node bench/experiments/warm-up.mjs [sys|proto|echo] [COUNT=30] [CHUNK=1000]
 *
 * Used in docs/benchmarks.md ("Warm-up and the round's continuation") to set bench:channel's warm-up at N = 1.
 */
import { fileURLToPath } from 'node:url';
import { openTogether } from './channel-system.mjs';

const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const which = process.argv[2] ?? 'sys';
const count = Number(process.argv[3] ?? 30);
const chunk = Number(process.argv[4] ?? 1000);
const s = await openTogether(here, which, 0);
const p50s = [];
for (let c = 0; c < count; c++) {
  const lat = new Float64Array(chunk);
  for (let i = 0; i < chunk; i++) {
    const t = process.hrtime.bigint();
    await s.round();
    lat[i] = Number(process.hrtime.bigint() - t) / 1000;
    // As bench:channel: the event loop turns every 64 rounds.
    if (i % 64 === 63) await new Promise((r) => setImmediate(r));
  }
  lat.sort();
  p50s.push(lat[chunk >> 1].toFixed(1));
}
console.log(`${which}: p50 of each ${chunk} rounds from the first, us: ${p50s.join(' ')}`);
await s.close();
process.exit(0);
