/**
 * Experiment: which layer of the kernel's side of an in-process round at N = 1 costs what, with the
 * real dmirror worker answering. Four rounds, measured in turn in one process (p50 of each, then
 * the ratio to the spin reference of the same pass):
 *
 *   raw    the mailbox alone: the WorkerDevice's post of one call, the ack group's spin (park if
 *          it fails), the end written into the end ring; one NotifierRange reused
 *   ops    the subscription's callbacks, as the notifier core calls them: a fresh range, the
 *          interval subscription's `invalidate` (setSeq, post), the wait, `windowClosed` (the end)
 *   strip  `ops` plus what the core cannot do without: the tree search, the tree's count and seq,
 *          the subscription's in-flight count; none of the core's records, settle or observers
 *   strip+alloc  `strip` plus the objects the core allocates after the post (record, open range,
 *          outcome, lists), kept alive a while as the core's are
 *   core   the notifier core: MmuNotifierSubscriptions.invalidateRangeStart / invalidateRangeEnd
 *          (the interval tree search, the open range's record, the settle, the tree's end)
 *   kernel Kernel.notify / notifyEnd, what bench:handshake measures
 *
 * It reaches into private members (post, writeEnd, subs, itree) to drive the mailbox without the
 * core, so it follows the code it measures, not a stable interface. The threads are pinned as
 * bench:handshake pins them at N = 1 (this thread on the first allowed CPU, the workers on the
 * second) when taskset is there.
 *
 *   npm run build && node bench/experiments/round-layers.mjs [rounds per pass, default 100000]
 *
 * Used in docs/benchmarks.md (bench:handshake, where the N = 1 round goes).
 */
import { fileURLToPath } from 'node:url';
import { oneDmirror } from './one-dmirror.mjs';
import { MmuNotifierEvent, makeRange } from '../../dist/src/notifier/range.js';
import { ReferenceFanout } from '../../dist/src/loadgen/references.js';
import { CALL_OP } from '../../dist/src/kernel/layout.js';
import { ThreadPinning, allowedCpus, pinningUnavailable } from '../../dist/src/lib/affinity.js';

const PAGE = 4096;
const ROUNDS = Number(process.argv[2] ?? 100_000);
const cpus = allowedCpus();
const pinning = pinningUnavailable() === null && cpus.length >= 2 ? new ThreadPinning(cpus[0], cpus[1]) : null;
const { k, p, mgr, a, d } = await oneDmirror(fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, ''));
const ref = new ReferenceFanout('spin', 1);
await ref.ready();
const [subId, sub] = [...d.subs][0];
const g = mgr.group;
const nt = p.mm.notifier;
pinning?.apply();
console.log(pinning ? `pinned: this thread on CPU ${cpus[0]}, the workers on CPU ${cpus[1]}` : `not pinned (${pinningUnavailable() ?? 'one CPU'})`);
// Ids far above the core's, so the device's sanitizer windows never collide with a core round's.
let id = 1 << 29;
const tick = () => new Promise((r) => setImmediate(r));
const samples = new Float64Array(ROUNDS);
const ns = (t) => Number(process.hrtime.bigint() - t);

const one = makeRange(p.pid, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise', null);
one.flags = 1; // RANGE_BLOCKABLE
const hits = [];
const kept = new Array(16);
let keptAt = 0;
/** The stripped round (see the header); `alloc` adds the core's post-publish allocations. */
async function strip(alloc) {
  const t = process.hrtime.bigint();
  const r = makeRange(p.pid, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise', null);
  r.flags = 1;
  r.id = ++id;
  nt.activeInvalidateRanges++;
  nt.itree.overlapping(r.start, r.end - 1, hits);
  const hit = hits[0];
  hits.pop();
  nt.invalidateSeq |= 1;
  hit.inFlight++;
  const ack = hit.ops.invalidate(hit, r, nt.invalidateSeq);
  if (alloc) {
    const outcome = { info: hit.info, kind: 'interval', result: 'ok', ackUs: 0 };
    const record = { range: r, result: 'ok', subscribers: [outcome], startedUs: 0, ackedUs: 0, endedUs: 0 };
    kept[keptAt++ & 15] = { record, index: 0, intervals: [hit], started: null, treeCounted: true, results: [ack] };
  }
  if (!g.spin([ack], false)) await g.park([ack]);
  hit.inFlight--;
  ack.poll();
  hit.ops.windowClosed(hit, r);
  nt.activeInvalidateRanges--;
  nt.invalidateSeq++;
  return ns(t);
}

const rounds = {
  raw: async () => {
    const t = process.hrtime.bigint();
    one.id = ++id;
    const ack = d.post(CALL_OP.INVALIDATE, subId, one, sub.invalidateSeq | 1);
    if (!g.spin([ack], false)) await g.park([ack]);
    ack.poll();
    d.writeEnd(subId, one, k.mem.tick());
    return ns(t);
  },
  ops: async () => {
    const t = process.hrtime.bigint();
    const r = makeRange(p.pid, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise', null);
    r.flags = 1;
    r.id = ++id;
    const ack = sub.ops.invalidate(sub, r, sub.invalidateSeq | 1);
    if (!g.spin([ack], false)) await g.park([ack]);
    ack.poll();
    sub.ops.windowClosed(sub, r);
    return ns(t);
  },
  strip: async () => strip(false),
  'strip+alloc': async () => strip(true),
  core: async () => {
    const t = process.hrtime.bigint();
    const r = makeRange(p.pid, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise', null);
    const x = nt.invalidateRangeStart(r, true);
    if (x instanceof Promise) await x;
    nt.invalidateRangeEnd(r);
    return ns(t);
  },
  kernel: async () => {
    const t = process.hrtime.bigint();
    let r = k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    if (r instanceof Promise) r = await r;
    k.notifyEnd(p.mm, r);
    return ns(t);
  },
  spin: async () => ref.round() * 1000,
};

async function p50(round) {
  for (let i = 0; i < ROUNDS; i++) {
    samples[i] = await round();
    if (i % 32 === 31) await tick();
  }
  const s = Float64Array.from(samples).sort();
  return s[ROUNDS >> 1] / 1000;
}

for (let pass = 0; pass < 4; pass++) {
  const r = {};
  for (const [name, round] of Object.entries(rounds)) r[name] = await p50(round);
  const cells = ['raw', 'ops', 'strip', 'strip+alloc', 'core', 'kernel'].map((n) => `${n} ${r[n].toFixed(3)} (${(r[n] / r.spin).toFixed(2)}x)`);
  console.log(`pass ${pass}${pass === 0 ? ' (warm-up)' : ''}: spin ${r.spin.toFixed(3)} us, ${cells.join(', ')}`);
}
await mgr.stopAll();
await ref.close();
pinning?.restore();
process.exit(0);
