/**
 * Experiment: the in-process round at N = 1 (bench:handshake's round: Kernel.notify / notifyEnd of
 * a one-page CLEAR, one dmirror worker answering through its mailbox) of two builds side by side
 * with the bare spin reference, in one process, pinned as bench:handshake pins N = 1 (this thread
 * on the first allowed CPU, every worker on the second). The builds alternate their order from pass
 * to pass, so neither always runs right after the reference.
 *
 * Two builds of one tree load as two module graphs (their dist/ paths differ): a change is measured
 * against the code before it in the same machine state, which on these hosts moves for minutes at a
 * time (the bare round trip 0.2 us or 0.6 us on the AMD host of 11-28). Make the base with
 * `git worktree add /tmp/base <commit> && (cd /tmp/base && npm ci && npm run build)`.
 *
 *   npm run build && node bench/experiments/kernel-ab.mjs [base=/tmp/base] [passes=5] [rounds=100000]
 *
 * Prints each pass's p50 (us) and its ratio to the spin reference's p50 of the same pass.
 */
import { fileURLToPath } from 'node:url';
import { oneDmirror } from './one-dmirror.mjs';

const [baseRoot = '/tmp/base', passesArg = '5', roundsArg = '100000'] = process.argv.slice(2);
const PASSES = Number(passesArg);
const ROUNDS = Number(roundsArg);
const PAGE = 4096;
const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

const { ReferenceFanout } = await import(`${here}/dist/src/loadgen/references.js`);
const { ThreadPinning, allowedCpus, pinningUnavailable } = await import(`${here}/dist/src/lib/affinity.js`);
const why = pinningUnavailable();
const cpus = allowedCpus();
if (why !== null || cpus.length < 2) throw new Error(`this experiment pins its threads on two CPUs: ${why ?? 'one CPU'}`);
const pinning = new ThreadPinning(cpus[0], cpus[1]);

/** One build's kernel with one dmirror worker mirroring the page the rounds invalidate. */
async function subject(name, root) {
  const { k, p, mgr, a } = await oneDmirror(root);
  const round = () => {
    const t = process.hrtime.bigint();
    // As bench:handshake: the kernel returns the range itself when the answer came inside its spin.
    const r = k.notify(p.mm, 1 /* CLEAR */, a, a + PAGE, 'madvise');
    if (r instanceof Promise) return r.then((x) => (k.notifyEnd(p.mm, x), Number(process.hrtime.bigint() - t)));
    k.notifyEnd(p.mm, r);
    return Number(process.hrtime.bigint() - t);
  };
  return { name, round, close: () => mgr.stopAll() };
}

const builds = [await subject('this tree', here), await subject(`base (${baseRoot})`, baseRoot)];
const ref = new ReferenceFanout('spin', 1);
await ref.ready();
const spin = { name: 'ref:spin', round: () => ref.round() * 1000, close: () => ref.close() };
pinning.apply();

const samples = new Float64Array(ROUNDS);
const tick = () => new Promise((r) => setImmediate(r));
async function p50(s) {
  for (let i = 0; i < ROUNDS; i++) {
    const v = s.round();
    samples[i] = typeof v === 'number' ? v : await v;
    if (i % 32 === 31) await tick();
  }
  return samples.sort()[ROUNDS >> 1] / 1000;
}

console.log(`pinned: this thread on CPU ${cpus[0]}, the workers on CPU ${cpus[1]}; ${ROUNDS} rounds per p50`);
for (let pass = 0; pass < PASSES; pass++) {
  const order = pass % 2 === 0 ? builds : [...builds].reverse();
  const ref50 = await p50(spin);
  const cells = [];
  for (const b of order) cells.push([b.name, await p50(b)]);
  cells.sort((x, y) => builds.findIndex((b) => b.name === x[0]) - builds.findIndex((b) => b.name === y[0]));
  console.log(`pass ${pass}: ref:spin ${ref50.toFixed(3)} us, ${cells.map(([n, v]) => `${n} ${v.toFixed(3)} us (${(v / ref50).toFixed(2)}x)`).join(', ')}`);
}
for (const s of [...builds, spin]) await s.close();
pinning.restore();
process.exit(0);
