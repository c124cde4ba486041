/**
 * Experiment: what the channel protocol itself costs per round, without devmirror's kernel, core,
 * device or sessions, against the bare `ws` echo and devmirror's round (bench:channel's N = 1
 * round), all three set up at once and measured in alternating passes in one process.
 *
 *   echo      the floor of bench:channel: a 48-byte frame to the client, echoed back
 *   protocol  the protocol floor of bench:channel (openProtocolFloor in
 *             src/loadgen/client-processes.ts): the InvalidateStart from the hot encoder, decoded by
 *             the client as DeviceClient does, its InvalidateAck decoded here. No InvalidateEnd, as
 *             devmirror's clients subscribe with no_end (END=1: one after the round, corked with the
 *             next Start as a Session sends it, and decoded by the client).
 *   devmirror the service with one DeviceClient process subscribed (bench:channel's round)
 *
 * Every client process is pinned with this process on one CPU (`together`, the default) or on the
 * other (`apart`). So `protocol / echo` is the share of the 1.3x budget the protocol's frames and
 * codec take on this machine before any of devmirror's code runs.
 *
 * NOCORK=1 adds the protocol floor once more (`no cork`), on its own connection, writing each frame
 * at once instead of corking the socket until the next tick as a Session does.
 *
 *   npm run build && [NOCORK=1] node bench/experiments/protocol-floor.mjs [placement=together|apart] [passes=6] [rounds=20000]
 *        [variant=a patched copy of the build, as for channel-ab.mjs: measured as a fourth subject]
 *
 * Used in docs/benchmarks.md ("The protocol floor, on the Xeon host").
 */
import { fileURLToPath } from 'node:url';
import { alternatingP50, openChannelSystem, printRatios } from './channel-system.mjs';

const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const [placement = 'together', passesArg = '6', roundsArg = '20000', variantRoot] = process.argv.slice(2);
const PASSES = Number(passesArg);
const ROUNDS = Number(roundsArg);
const { openFanoutFloor, openProtocolFloor } = await import(`${here}/dist/src/loadgen/client-processes.js`);
const { allowedCpus, pinningUnavailable, setProcessAffinity } = await import(`${here}/dist/src/lib/affinity.js`);
const why = pinningUnavailable();
if (why !== null) throw new Error(`this experiment pins its processes: ${why}`);
const cpus = allowedCpus();
const there = String(placement === 'apart' ? cpus[1] : cpus[0]);
setProcessAffinity(process.pid, String(cpus[0]));
const pin = (pid) => setProcessAffinity(pid, there);

const end = process.env.END !== undefined;
const floors = [await openFanoutFloor(48, 1), await openProtocolFloor({ end }), ...(process.env.NOCORK ? [await openProtocolFloor({ end, cork: false })] : [])];
for (const f of floors) for (const pid of f.pids) pin(pid);
const systems = [await openChannelSystem(here, pin), ...(variantRoot ? [await openChannelSystem(variantRoot, pin)] : [])];
const subjects = {
  echo: floors[0].round,
  protocol: floors[1].round,
  ...(floors[2] ? { 'no cork': floors[2].round } : {}),
  devmirror: systems[0].round,
  ...(systems[1] ? { variant: systems[1].round } : {}),
};
for (const n of Object.keys(subjects)) for (let i = 0; i < 5000; i++) await subjects[n]();
const p50 = await alternatingP50(subjects, PASSES, ROUNDS, 64);
console.log(`placement ${placement} (this process on CPU ${cpus[0]}, clients on CPU ${there}); ${ROUNDS} rounds a pass`);
printRatios(p50, 'echo');
for (const s2 of systems) await s2.close();
for (const f of floors) await f.close();
process.exit(0);
