/**
 * Experiment: the CPU each process spends per external round (bench:channel's N = 1 round), from
 * /proc/<pid>/stat (user and system, all threads): the bare ws echo for S seconds, then devmirror's
 * round for S seconds (between them, with PHASES' default, the protocol floor of
 * client-processes.ts for S seconds), the server and the client process pinned to one CPU (or, with APART=1, the
 * clients on the second). It prints the processes' pids before the phases, so strace -c or perf can
 * be attached to one phase. (NOEND=1, which sent no InvalidateEnd, is gone: the clients subscribe
 * with no_end since 11-29, so there is none to leave out.)
 *
 *   npm run build && [APART=1] [PHASES=floor,proto,sys] node bench/experiments/channel-cpu.mjs [S=6]
 *
 * Used in docs/benchmarks.md ("The external round on the Xeon host").
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openChannelSystem } from './channel-system.mjs';

const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const PH = Number(process.argv[2] ?? 6) * 1000;
const clients = await import(`${here}/dist/src/loadgen/client-processes.js`);
const { allowedCpus, setProcessAffinity } = await import(`${here}/dist/src/lib/affinity.js`);
const cpus = allowedCpus();
setProcessAffinity(process.pid, String(cpus[0]));
const there = String(process.env.APART ? cpus[1] : cpus[0]);
const pin = (pid) => setProcessAffinity(pid, there);
const system = await openChannelSystem(here, pin);
const floor = await clients.openFanoutFloor(48, 1);
for (const pid of floor.pids) pin(pid);
const proto = await clients.openProtocolFloor({ end: false });
for (const pid of proto.pids) pin(pid);
const sys = system.round;
for (let i = 0; i < 5000; i++) { await floor.round(); await proto.round(); await sys(); }
console.log(JSON.stringify({ server: process.pid, client: system.pids, floorClient: floor.pids, protoClient: proto.pids }));
const ticksOf = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return { u: Number(f[11]), s: Number(f[12]) }; };
const cl = { floor: floor.pids[0], proto: proto.pids[0], sys: system.pids[0] };
for (const [name, fn] of [['floor', () => floor.round()], ['proto', () => proto.round()], ['sys', sys]].filter(([n]) => (process.env.PHASES ?? 'floor,proto,sys').split(',').includes(n))) {
  await new Promise((r) => setTimeout(r, 1500));
  console.log('phase', name, 'start', Date.now());
  const s0 = ticksOf(process.pid), c0 = ticksOf(cl[name]);
  const until = Date.now() + PH; let n = 0; const lat = [];
  while (Date.now() < until) { for (let j = 0; j < 64; j++) { const t = process.hrtime.bigint(); await fn(); lat.push(Number(process.hrtime.bigint() - t) / 1000); n++; } await new Promise((r) => setImmediate(r)); }
  const s1 = ticksOf(process.pid), c1 = ticksOf(cl[name]);
  const per = (a, b) => (((b - a) * 10000) / n).toFixed(2);
  console.log(name, 'us/round server user', per(s0.u, s1.u), 'sys', per(s0.s, s1.s), 'client user', per(c0.u, c1.u), 'sys', per(c0.s, c1.s));
  lat.sort((x, y) => x - y);
  console.log('phase', name, 'end', Date.now(), 'rounds', n, 'p50', lat[lat.length >> 1].toFixed(1));
}
await floor.close(); await proto.close(); await system.close();
process.exit(0);
