/**
 * Experiment: the external round (N = 1, bench:channel's round: a one-page CLEAR to one DeviceClient
 * process) of two builds of devmirror side by side with the bare `ws` echo floor, in one process, in
 * alternating passes, with every process pinned: this process on the first allowed CPU, the client
 * processes on the same CPU (`together`, the default) or on the second (`apart`).
 *
 * Two builds of one tree load as two module graphs (their dist/ paths differ), so a change is
 * measured against the code before it on the same machine state, which moves from hour to hour
 * here (the echo floor, together, was 13.2 to 13.9 us at 04:3x on 11-28 and 19.1 to 21.0 us at
 * 10:xx). Make the base with `git worktree add /tmp/base <commit> && (cd /tmp/base && npm ci &&
 * npm run build)`.
 *
 *   npm run build && node bench/experiments/channel-ab.mjs [base=/tmp/base] [placement=together|apart]
 *        [passes=6] [rounds=20000]
 *
 * Prints each pass's p50 (us) and its ratio to the floor's p50 of the same pass.
 */
import { fileURLToPath } from 'node:url';

const [baseRoot = '/tmp/base', placement = 'together', passesArg = '6', roundsArg = '20000'] = process.argv.slice(2);
const PASSES = Number(passesArg);
const ROUNDS = Number(roundsArg);
const PAGE = 4096;
const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

async function load(root) {
  return {
    Service: (await import(`${root}/dist/src/service.js`)).Service,
    buildServer: (await import(`${root}/dist/src/http/server.js`)).buildServer,
    PROT: (await import(`${root}/dist/src/kernel/kernel.js`)).PROT,
    CLEAR: (await import(`${root}/dist/src/notifier/range.js`)).MmuNotifierEvent.CLEAR,
    clients: await import(`${root}/dist/src/loadgen/client-processes.js`),
  };
}

const { allowedCpus, pinningUnavailable, setProcessAffinity } = await import(`${here}/dist/src/lib/affinity.js`);
const why = pinningUnavailable();
if (why !== null) throw new Error(`this experiment pins its processes: ${why}`);
const cpus = allowedCpus();
if (placement === 'apart' && cpus.length < 2) throw new Error('apart needs two CPUs');
const there = String(placement === 'apart' ? cpus[1] : cpus[0]);
setProcessAffinity(process.pid, String(cpus[0]));

async function system(m) {
  const svc = new m.Service({ kernel: { memoryBytes: 64 * 1024 * 1024 }, channel: { maxSubscriptions: 4096 }, deadlineMs: 60_000 });
  const app = await m.buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const k = svc.kernel;
  const p = k.createProcess('bench');
  const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: m.PROT.READ | m.PROT.WRITE });
  const children = await m.clients.startClientProcesses(`ws://127.0.0.1:${app.server.address().port}/v1/notifier/ws`, 'devmirror-local', p.pid, a, 16 * PAGE, 1);
  for (const c of children) setProcessAffinity(c.pid, there);
  return {
    round: async () => {
      const r = await k.notify(p.mm, m.CLEAR, a, a + PAGE, 'madvise');
      k.notifyEnd(p.mm, r);
    },
    close: async () => {
      for (const c of children) c.stdin.end();
      await svc.stop();
      await app.close();
    },
  };
}

const mine = await load(here);
const floor = await mine.clients.openFanoutFloor(48, 1);
for (const pid of floor.pids) setProcessAffinity(pid, there);
const subjects = {
  floor: { round: () => floor.round(), close: () => floor.close() },
  base: await system(await load(baseRoot)),
  this: await system(mine),
};
const names = Object.keys(subjects);
for (const n of names) for (let i = 0; i < 5000; i++) await subjects[n].round();
const p50 = Object.fromEntries(names.map((n) => [n, []]));
for (let pass = 0; pass < PASSES; pass++) {
  // The order turns every pass, so neither build always follows the floor.
  for (const n of pass % 2 ? [...names].reverse() : names) {
    const lat = new Float64Array(ROUNDS);
    for (let i = 0; i < ROUNDS; i++) {
      const t = process.hrtime.bigint();
      await subjects[n].round();
      lat[i] = Number(process.hrtime.bigint() - t) / 1000;
    }
    lat.sort();
    p50[n].push(lat[ROUNDS >> 1]);
  }
}
console.log(`placement ${placement} (this process on CPU ${cpus[0]}, clients on CPU ${there}); base ${baseRoot}; ${ROUNDS} rounds a pass`);
for (const n of names) {
  const ratios = n === 'floor' ? '' : `   /floor ${p50[n].map((x, i) => (x / p50.floor[i]).toFixed(2)).join(' ')}`;
  console.log(`${n.padEnd(6)} p50 ${p50[n].map((x) => x.toFixed(1)).join(' ')}${ratios}`);
}
for (const n of names) await subjects[n].close();
process.exit(0);
