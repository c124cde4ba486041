/**
 * Experiment: does a per-wake memory footprint explain the devmirror handshake's extra CPU at N >= 2?
 * The bare fan-out of src/loadgen/references.ts (publisher parked in Atomics.waitAsync, workers
 * blocking in Atomics.wait), where every worker touches KB kilobytes of its own memory (one load per
 * cache line) each time it is woken, as a device touches its isolate. Prints the round p50 and the
 * process CPU per round.
 *
 *   node bench/experiments/fanout-working-set.mjs N KB     e.g. 32 1024
 *
 * Findings are in docs/benchmarks.md (bench:handshake).
 */
import { Worker } from 'node:worker_threads';
const [nStr, kbStr] = process.argv.slice(2); const N = +nStr; const KB = +kbStr;
const sab = new SharedArrayBuffer(4 * (8 + N));
const w = new Int32Array(sab);
const src = `
const { workerData } = require('node:worker_threads');
const w = new Int32Array(workerData.sab); const i = workerData.i; const KB = workerData.kb;
const mem = new Float64Array(KB * 128); let acc = 0;
let seen = 0; for (;;) {
  const v = Atomics.load(w, 8 + i);
  if (v === seen) { Atomics.wait(w, 8 + i, seen, 100); continue; }
  seen = v;
  // Touch a working set of KB kilobytes (one load per cache line), as a device's handler touches its isolate.
  for (let j = 0; j < mem.length; j += 8) acc += mem[j];
  Atomics.add(w, 1, 1); Atomics.notify(w, 1);
  if (acc < 0) console.log(acc);
}
`;
for (let i = 0; i < N; i++) new Worker(src, { eval: true, workerData: { sab, i, kb: KB } }).unref();
await new Promise(r => setTimeout(r, 1000));
const keep = setInterval(() => {}, 1 << 30);
let target = 0;
async function round() { target += N; for (let i = 0; i < N; i++) { Atomics.add(w, 8 + i, 1); Atomics.notify(w, 8 + i); }
  let v = Atomics.load(w, 1); while (v < target) { const r = Atomics.waitAsync(w, 1, v); if (r.async) await r.value; v = Atomics.load(w, 1); } }
for (let i = 0; i < 100; i++) await round();
const c0 = process.cpuUsage(); const t0 = performance.now(); const R = 600; const lat = [];
for (let i = 0; i < R; i++) { const t = performance.now(); await round(); lat.push(performance.now() - t); }
const c = process.cpuUsage(c0); lat.sort((a, b) => a - b);
console.log(`N ${N} working set ${KB} KB: p50 ${(lat[R >> 1] * 1000).toFixed(0)} us, cpu/round ${((c.user + c.system) / R).toFixed(0)} us`);
process.exit(0);
