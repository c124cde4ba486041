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
import { alternatingP50, openChannelSystem, printRatios } from './channel-system.mjs';

const [baseRoot = '/tmp/base', placement = 'together', passesArg = '6', roundsArg = '20000'] = process.argv.slice(2);
const PASSES = Number(passesArg);
const ROUNDS = Number(roundsArg);
const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

const { allowedCpus, pinningUnavailable, setProcessAffinity } = await import(`${here}/dist/src/lib/affinity.js`);
const why = pinningUnavailable();
if (why !== null) throw new Error(`this experiment pins its processes: ${why}`);
const cpus = allowedCpus();
if (placement === 'apart' && cpus.length < 2) throw new Error('apart needs two CPUs');
const there = String(placement === 'apart' ? cpus[1] : cpus[0]);
setProcessAffinity(process.pid, String(cpus[0]));

const { openFanoutFloor } = await import(`${here}/dist/src/loadgen/client-processes.js`);
const pin = (pid) => setProcessAffinity(pid, there);
const floor = await openFanoutFloor(48, 1);
for (const pid of floor.pids) pin(pid);
const base = await openChannelSystem(baseRoot, pin);
const mine = await openChannelSystem(here, pin);
const subjects = { floor: floor.round, base: base.round, this: mine.round };
for (const n of Object.keys(subjects)) for (let i = 0; i < 5000; i++) await subjects[n]();
// The order turns every pass, so neither build always follows the floor.
const p50 = await alternatingP50(subjects, PASSES, ROUNDS);
console.log(`placement ${placement} (this process on CPU ${cpus[0]}, clients on CPU ${there}); base ${baseRoot}; ${ROUNDS} rounds a pass`);
printRatios(p50, 'floor');
for (const s of [base, mine, floor]) await s.close();
process.exit(0);
