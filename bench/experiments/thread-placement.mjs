// Why bench:handshake pins its threads at N = 1 (src/lib/affinity.ts).
//
// The bare spin round trip (bench/lib references, one worker) in blocks of 2,000 rounds, each after
// a 2 ms pause, as the interleaved schedule runs it, with a second reference alive and measured in
// alternating blocks. Every 250 rounds it reads which CPU the main thread and the worker last ran on
// (/proc/self/task/<tid>/stat, field 39) and counts the rounds slower than 5 us in the stretch
// before, by whether the two threads were on the same CPU at its end. Then the same with the main
// thread pinned to one CPU and the workers to the other.
//
//   npm run build && node bench/experiments/thread-placement.mjs [other=postMessage] [blocks=16]
import { readFileSync } from 'node:fs';
import { ReferenceFanout } from '../../dist/src/loadgen/references.js';
import { ThreadPinning, allowedCpus, threadIds } from '../../dist/src/lib/affinity.js';

const other = process.argv[2] ?? 'postMessage';
const BLOCKS = Number(process.argv[3] ?? 16);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tick = () => new Promise((r) => setImmediate(r));
const cpuOf = (t) => {
  try {
    const s = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[36];
  } catch {
    return '?';
  }
};

async function run(pin) {
  const cpus = allowedCpus();
  const pinning = new ThreadPinning(cpus[0], cpus[1]);
  const b = threadIds();
  const spin = new ReferenceFanout('spin', 1);
  await spin.ready();
  const worker = [...threadIds()].filter((t) => !b.has(t));
  const second = new ReferenceFanout(other, 1);
  await second.ready();
  if (pin) pinning.apply();
  for (const r of [spin, second]) for (let i = 0; i < 30000; i++) { await r.round(); if (i % 32 === 31) await tick(); }
  const tally = { same: [0, 0], apart: [0, 0] };
  const perBlock = [];
  for (let blk = 0; blk < BLOCKS; blk++) {
    for (const r of blk % 2 ? [second, spin] : [spin, second]) {
      await sleep(2);
      let slow = 0;
      let stretchSlow = 0;
      for (let i = 0; i < 2032; i++) {
        const us = await r.round();
        if (i % 32 === 31) await tick();
        if (r !== spin || i < 32) continue;
        if (us > 5) { slow++; stretchSlow++; }
        if ((i - 31) % 250 === 0) {
          const same = cpuOf(process.pid) === cpuOf(worker[0]);
          const t = same ? tally.same : tally.apart;
          t[0] += 250; t[1] += stretchSlow; stretchSlow = 0;
        }
      }
      if (r === spin) perBlock.push(slow / 2000);
    }
  }
  pinning.restore();
  await spin.close();
  await second.close();
  const pct = (t) => (t[0] ? `${((100 * t[1]) / t[0]).toFixed(1)}% of ${t[0]} rounds slow` : 'no rounds');
  console.log(`${pin ? 'pinned  ' : 'unpinned'}: blocks over half slow ${perBlock.filter((x) => x > 0.5).length} of ${BLOCKS}; threads on one CPU: ${pct(tally.same)}; apart: ${pct(tally.apart)}`);
}

await run(false);
await run(true);
process.exit(0);
