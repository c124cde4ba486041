/**
 * Experiment: an external client's round after it idled. The service of this checkout's build and
 * one DeviceClient process (src/loadgen/channel-clients.js, as bench:channel starts it, with the
 * Node options in CLIENT_FLAGS), both pinned to this process's first CPU (bench:channel's
 * `together` placement). WARM rounds, then PHASES phases of S seconds of rounds, each after PAUSE
 * ms of nothing. Per phase: the round's p50, the user CPU of the client and of the server per
 * round (/proc/<pid>/stat, 10 ms ticks), and the server's GC time per round.
 *
 *   npm run build && [WARM=5000] [PHASES=2] [PAUSE=20000] [CLIENT_FLAGS=--no-memory-reducer] \
 *     node bench/experiments/idle-client.mjs [S=4]
 *
 * It prints the client's pid first, so `perf record -p` can be attached to a phase. Used in
 * docs/benchmarks.md ("The start's write, the round's continuation and the warm-up"): after 20 s
 * of idling, V8's memory reducer had the client's object literals with a computed first key (ws's
 * send options, Node's nextTick) take the runtime from then on.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { openChannelService } from './channel-system.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const { MmuNotifierEvent } = await import(`${root}/dist/src/notifier/range.js`);
const { allowedCpus, setProcessAffinity } = await import(`${root}/dist/src/lib/affinity.js`);

const PAGE = 4096;
const S = Number(process.argv[2] ?? 4) * 1000;
const WARM = Number(process.env.WARM ?? 5000);
const PHASES = Number(process.env.PHASES ?? 2);
const PAUSE = Number(process.env.PAUSE ?? 20_000);
const flags = (process.env.CLIENT_FLAGS ?? '').split(' ').filter(Boolean);

const { svc, app, k, p, a, window, url } = await openChannelService(root);
// Spawned here, not by startClientProcesses: with the Node options of CLIENT_FLAGS.
const client = spawn(process.execPath, [...flags, `${root}/dist/src/loadgen/channel-clients.js`, 'clients', url, 'devmirror-local', String(p.pid), String(a), String(window), '1'], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
await new Promise((r) => client.stdout.on('data', (d) => d.toString().includes('ready') && r()));
const cpu = String(allowedCpus()[0]);
setProcessAffinity(process.pid, cpu);
setProcessAffinity(client.pid, cpu);
console.log(JSON.stringify({ server: process.pid, client: client.pid, clientFlags: flags }));

const userTicks = (pid) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[11]);
let gcMs = 0;
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });
const round = async () => {
  const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
  k.notifyEnd(p.mm, r);
};

for (let i = 0; i < WARM; i++) await round();
for (let phase = 0; phase < PHASES; phase++) {
  if (PAUSE > 0) await new Promise((r) => setTimeout(r, PAUSE));
  const c0 = userTicks(client.pid);
  const s0 = userTicks(process.pid);
  const g0 = gcMs;
  const lat = [];
  const until = Date.now() + S;
  while (Date.now() < until) {
    for (let j = 0; j < 64; j++) {
      const t = process.hrtime.bigint();
      await round();
      lat.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    await new Promise((r) => setImmediate(r));
  }
  const n = lat.length;
  lat.sort((x, y) => x - y);
  const perRound = (ticks) => ((ticks * 10_000) / n).toFixed(2);
  console.log(
    `phase ${phase} (after ${PAUSE} ms idle): ${n} rounds, p50 ${lat[n >> 1].toFixed(1)} us; user us a round: client ${perRound(userTicks(client.pid) - c0)}, server ${perRound(userTicks(process.pid) - s0)}; server GC ${(((gcMs - g0) * 1000) / n).toFixed(3)} us a round`,
  );
}
client.stdin.end();
await new Promise((r) => client.on('exit', r));
await svc.stop();
await app.close();
process.exit(0);
