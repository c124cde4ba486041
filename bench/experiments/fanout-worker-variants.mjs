/**
 * Experiment: does the shape of a device worker's loop explain the devmirror handshake's extra CPU
 * at N >= 2? The bare fan-out (publisher parked in Atomics.waitAsync, N workers blocking in
 * Atomics.wait, one start and one end doorbell per round), with the worker loop as:
 *   plain  the reference loop (src/loadgen/references.ts);
 *   async  inside an async function with four `await null` after each call and a 100 ms timed wait
 *          (as workers/runtime/worker-host.ts waits);
 *   timed  a 100 ms timed Atomics.wait;
 *   heap   300,000 live objects in the worker's heap (a device's module graph and mirror);
 *   alloc  50 small objects allocated per wake.
 * Prints the round p50, the process CPU per round and the wall time per round; two passes.
 *
 *   node bench/experiments/fanout-worker-variants.mjs N ROUNDS [variants]     e.g. 8 3000
 *
 * Findings are in docs/benchmarks.md (bench:handshake).
 */
import { Worker } from 'node:worker_threads';
const N = Number(process.argv[2] ?? 8), ROUNDS = Number(process.argv[3] ?? 3000);
const variants = (process.argv[4] ?? 'plain,async,timed,heap,alloc').split(',');
const src = (v) => `
const { workerData } = require('node:worker_threads');
const { sab, index } = workerData; const w = new Int32Array(sab);
const ACKS = 0, STOP = 1, DB = 8 + index * 16;
const V = ${JSON.stringify(v)};
let keep = [];
if (V === 'heap') { for (let i = 0; i < 300000; i++) keep.push({ a: i, b: 'x' + i, c: [i] }); }
async function loop() {
  let seen = 0;
  for (;;) {
    let v = Atomics.load(w, DB);
    if (v === seen) { if (V === 'timed' || V === 'async') Atomics.wait(w, DB, seen, 100); else Atomics.wait(w, DB, seen); v = Atomics.load(w, DB); }
    if (Atomics.load(w, STOP)) break;
    if (v === seen) continue;
    seen = v;
    if (V === 'alloc') { const o = []; for (let i = 0; i < 50; i++) o.push({ i, s: 'k' + i }); keep = o; }
    if (v & 1) { Atomics.add(w, ACKS, 1); Atomics.notify(w, ACKS); }
    if (V === 'async') for (let i = 0; i < 4; i++) await null;
  }
}
loop();
`;
async function run(v) {
  const sab = new SharedArrayBuffer(4 * (8 + 16 * N)); const w = new Int32Array(sab);
  const ws = []; for (let i = 0; i < N; i++) ws.push(new Worker(src(v), { eval: true, workerData: { sab, index: i } }));
  await new Promise(r => setTimeout(r, 500));
  let acks = 0;
  const round = async () => {
    const target = acks + N;
    for (let i = 0; i < N; i++) { Atomics.add(w, 8 + i * 16, 1); Atomics.notify(w, 8 + i * 16); }
    for (;;) { const a = Atomics.load(w, 0); if (a >= target) break; const r = Atomics.waitAsync(w, 0, a, 50); if (r.async) await r.value; }
    acks = target;
    for (let i = 0; i < N; i++) { Atomics.add(w, 8 + i * 16, 1); Atomics.notify(w, 8 + i * 16); }
  };
  for (let i = 0; i < 200; i++) await round();
  const c0 = process.cpuUsage(); const t0 = performance.now(); const s = [];
  for (let i = 0; i < ROUNDS; i++) { const t = performance.now(); await round(); s.push(performance.now() - t); }
  const el = performance.now() - t0; const c = process.cpuUsage(c0);
  s.sort((a, b) => a - b);
  console.log(`N=${N} ${v.padEnd(6)} p50 ${(s[s.length >> 1] * 1000).toFixed(0)} us  cpu/round ${((c.user + c.system) / ROUNDS).toFixed(0)} us  wall/round ${(el * 1000 / ROUNDS).toFixed(0)} us`);
  Atomics.store(w, 1, 1); for (let i = 0; i < N; i++) { Atomics.add(w, 8 + i * 16, 1); Atomics.notify(w, 8 + i * 16); }
  await Promise.all(ws.map(x => x.terminate()));
}
for (let rep = 0; rep < 2; rep++) for (const v of variants) await run(v);
process.exit(0);
