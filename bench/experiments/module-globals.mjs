/**
 * Experiment: what reading Node's accessor globals costs in optimized code. `performance`, `Buffer`
 * and `process` are getters on globalThis in Node 20, so a hot function that reads one calls the
 * getter every time (a LoadGlobalIC miss in perf); through an import the binding is a constant.
 * test/lib/module-globals.test.ts keeps devmirror's modules on the imports.
 *
 *   node bench/experiments/module-globals.mjs
 *
 * Used in docs/benchmarks.md ("Accessor globals").
 */
import { performance as perf } from 'node:perf_hooks';
import { Buffer as Buf } from 'node:buffer';

const N = 5e6;
function globalPerformance() { let s = 0; for (let i = 0; i < N; i++) s += performance.now(); return s; }
function importedPerformance() { let s = 0; for (let i = 0; i < N; i++) s += perf.now(); return s; }
function globalBuffer() { let s = 0; for (let i = 0; i < N; i++) s += Buffer.allocUnsafe(8).length; return s; }
function importedBuffer() { let s = 0; for (let i = 0; i < N; i++) s += Buf.allocUnsafe(8).length; return s; }
const cases = [['global performance.now()', globalPerformance], ['imported performance.now()', importedPerformance], ['global Buffer.allocUnsafe(8)', globalBuffer], ['imported Buffer.allocUnsafe(8)', importedBuffer]];
for (let pass = 0; pass < 3; pass++) {
  for (const [name, f] of cases) {
    const t = process.hrtime.bigint();
    f();
    const ns = Number(process.hrtime.bigint() - t) / N;
    if (pass === 2) console.log(`${name.padEnd(32)} ${ns.toFixed(1)} ns a call`);
  }
}
