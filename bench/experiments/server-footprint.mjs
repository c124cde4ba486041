/**
 * Experiment: does the memory the server touches in a round cost the client process that shares
 * its CPU? The protocol floor's round (client-processes.ts openProtocolFloor, no End), with the
 * client on this process's CPU, while the server also writes one word in every 64 bytes of KB KiB
 * per round, walking a 64 MiB buffer (fresh lines every round, as a bump allocator's nursery is).
 * For each KB, in phases of S seconds, prints the server's and the client's user and system CPU
 * per round (/proc/<pid>/stat) and the round's p50. If the client's user time grows with KB, the
 * server's footprint is paid by the client too (its caches refilled after every switch).
 *
 *   npm run build && node bench/experiments/server-footprint.mjs [S=3] [KB list=0,2,4,8,32]
 *
 * Used in docs/benchmarks.md ("The codec's readers and writers").
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const PH = Number(process.argv[2] ?? 3) * 1000;
const KBS = (process.argv[3] ?? '0,2,4,8,32').split(',').map(Number);
const { openProtocolFloor } = await import(`${here}/dist/src/loadgen/client-processes.js`);
const { allowedCpus, setProcessAffinity } = await import(`${here}/dist/src/lib/affinity.js`);
const cpu = String(allowedCpus()[0]);
setProcessAffinity(process.pid, cpu);
const proto = await openProtocolFloor({ end: false });
for (const pid of proto.pids) setProcessAffinity(pid, cpu);
const big = new Float64Array((64 << 20) / 8);
let at = 0;
let acc = 0;
const touch = (kb) => {
  const words = (kb * 1024) / 8;
  for (let i = 0; i < words; i += 8) {
    big[at] += 1;
    at += 8;
    if (at >= big.length) at = 0;
  }
  acc += big[at];
};
const ticksOf = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { u: Number(f[11]), s: Number(f[12]) };
};
for (let i = 0; i < 5000; i++) await proto.round();
const client = proto.pids[0];
for (let pass = 0; pass < 2; pass++) {
  for (const kb of pass ? [...KBS].reverse() : KBS) {
    await new Promise((r) => setTimeout(r, 500));
    const s0 = ticksOf(process.pid);
    const c0 = ticksOf(client);
    const until = Date.now() + PH;
    let n = 0;
    const lat = [];
    while (Date.now() < until) {
      for (let j = 0; j < 64; j++) {
        const t = process.hrtime.bigint();
        touch(kb);
        await proto.round();
        lat.push(Number(process.hrtime.bigint() - t) / 1000);
        n++;
      }
      await new Promise((r) => setImmediate(r));
    }
    const s1 = ticksOf(process.pid);
    const c1 = ticksOf(client);
    const per = (a, b) => (((b - a) * 10000) / n).toFixed(2);
    lat.sort((x, y) => x - y);
    console.log(`KB ${String(kb).padStart(3)}: server user ${per(s0.u, s1.u)} sys ${per(s0.s, s1.s)}, client user ${per(c0.u, c1.u)} sys ${per(c0.s, c1.s)} us a round; p50 ${lat[lat.length >> 1].toFixed(1)} us (${n} rounds)`);
  }
}
await proto.close();
process.exit(acc >= 0 ? 0 : 1);
