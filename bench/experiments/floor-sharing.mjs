/**
 * Experiment: two builds' N = 1 external rounds side by side (bench:channel's system, one
 * DeviceClient process each), with the ws echo and the protocol floor, in alternating blocks of 500
 * rounds, all client processes on this process's CPU (APART=1: on the other). Prints each subject's
 * p50 over the run and the ratios, REPS times.
 *
 *   npm run build && [FLOORS=<root>] [APART=1] node bench/experiments/floor-sharing.mjs <root A> <root B> [REPS=3] [BLOCKS=40]
 *
 * A root is this checkout or a copy of its build (dist, package.json, and links to node_modules,
 * proto and workers). FLOORS is the root whose src/loadgen/client-processes.js opens the floors
 * (default: this checkout). With builds before 11-29 afternoon (d407e57 and older) the protocol floor
 * used the codec module of its root: a system of the same root as FLOORS then shares the hot
 * codec's functions with the floor, and measured 2 to 6% slower than one that did not (in both
 * orders). Since then the floor loads a private instance of the codec (privateHotCodec in
 * src/loadgen/client-processes.ts). Comparing a root with a copy of itself shows the noise of the
 * method (the same code, two sets of optimized functions).
 */
import { fileURLToPath } from 'node:url';
import { openChannelSystem } from './channel-system.mjs';

const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const [A, Bv, reps = '3', blocksArg = '40'] = process.argv.slice(2);
if (!A || !Bv) throw new Error('usage: floor-sharing.mjs <root A> <root B> [reps] [blocks]');
const B = 500;
const { openFanoutFloor, openProtocolFloor } = await import(`${process.env.FLOORS ?? here}/dist/src/loadgen/client-processes.js`);
const { allowedCpus, setProcessAffinity } = await import(`${here}/dist/src/lib/affinity.js`);
const cpus = allowedCpus(); setProcessAffinity(process.pid, String(cpus[0]));
const pin = (pid) => setProcessAffinity(pid, String(process.env.APART ? cpus[1] : cpus[0]));
const echo = await openFanoutFloor(48, 1); for (const p of echo.pids) pin(p);
const proto = await openProtocolFloor({ end: false }); for (const p of proto.pids) pin(p);
const sa = await openChannelSystem(A, pin), sb = await openChannelSystem(Bv, pin);
const subjects = { echo: echo.round, proto: proto.round, A: sa.round, B: sb.round };
const names = Object.keys(subjects);
for (const n of names) for (let i = 0; i < 5000; i++) await subjects[n]();
const blocks = Number(blocksArg), bs = Number(B);
for (let rep = 0; rep < Number(reps); rep++) {
  const lat = Object.fromEntries(names.map((n) => [n, new Float64Array(blocks * bs)]));
  for (let b = 0; b < blocks; b++) {
    const order = b % 2 ? [...names].reverse() : names;
    for (const n of order) {
      const f = subjects[n], L = lat[n];
      for (let i = 0; i < bs; i++) { const t = process.hrtime.bigint(); await f(); L[b * bs + i] = Number(process.hrtime.bigint() - t) / 1000; if (i % 64 === 63) await new Promise((r) => setImmediate(r)); }
    }
  }
  const p50 = Object.fromEntries(names.map((n) => { const a = lat[n].sort(); return [n, a[a.length >> 1]]; }));
  console.log(names.map((n) => `${n} ${p50[n].toFixed(2)}`).join('  '), `|  A/echo ${(p50.A / p50.echo).toFixed(3)}  B/echo ${(p50.B / p50.echo).toFixed(3)}  B/A ${(p50.B / p50.A).toFixed(3)}  proto/echo ${(p50.proto / p50.echo).toFixed(3)}`);
}
await sa.close(); await sb.close(); await echo.close(); await proto.close(); process.exit(0);
