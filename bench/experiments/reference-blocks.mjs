/**
 * Experiment: how the bare references move from one stretch of rounds to the next on this machine.
 * The spin-then-park and the blocking reference (src/loadgen/references.ts) at N workers, both
 * alive at once, measured in alternating blocks (src/lib/interleave.ts); prints every block's p50
 * and the share of slow rounds (above 5 us) per block.
 *
 *   npm run build && node bench/experiments/reference-blocks.mjs [N, default 1] [rounds per reference, default 20000] [modes, default spin,blocking]
 *
 * On the 2-vCPU VM of 11-27 the same code switched between states that last whole blocks (tens of
 * milliseconds to seconds): the spin reference's round trip at 0.46 to 0.52 us, or 0.22 to 0.24 us
 * (the two threads then share a physical core's caches); the blocking reference at 65 to 81 us, or
 * 5.7 to 8 us (a woken vCPU that had not really gone to sleep). docs/benchmarks.md, bench:handshake.
 */
import { ReferenceFanout } from '../../dist/src/loadgen/references.js';
import { interleave } from '../../dist/src/lib/interleave.js';

const N = Number(process.argv[2] ?? 1);
const ROUNDS = Number(process.argv[3] ?? 20000);
const modes = (process.argv[4] ?? 'spin,blocking').split(',');
const refs = [];
for (const m of modes) {
  const r = new ReferenceFanout(m, N);
  await r.ready();
  refs.push(r);
}
const res = await interleave(
  refs.map((r, i) => ({ name: modes[i], round: () => r.round() })),
  { rounds: ROUNDS, blocks: 10, warm: 3000 },
);
for (const r of res) {
  const per = r.samples.length / 10;
  const slow = [];
  for (let b = 0; b < 10; b++) {
    let n = 0;
    for (let i = b * per; i < (b + 1) * per; i++) if (r.samples[i] > 5) n++;
    slow.push(`${((100 * n) / per).toFixed(0)}%`);
  }
  console.log(`N=${N} ${r.name.padEnd(9)} p50 ${r.lat.p50.toFixed(2)} us  p90 ${r.lat.p90.toFixed(2)} us`);
  console.log(`  block p50s (us): ${r.blockP50.map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`  slow rounds per block: ${slow.join(' ')}`);
}
for (const r of refs) await r.close();
process.exit(0);
