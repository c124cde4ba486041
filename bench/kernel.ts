/**
 * npm run bench:kernel
 *
 * 1. Syscall throughput: mmap + touch every page + munmap of 1 MiB, with one whole-mm subscriber.
 * 2. The cost of one invalidation that hits one interval subscription among N non-overlapping ones
 *    (N = 1, 100, 10,000, 100,000), through the interval tree, and in the same run through a
 *    linear scan of the same subscriptions (the baseline a tree must beat): the ratio N/1 shows
 *    whether cost grows with subscriptions that do not intersect.
 * 3. The same invalidation end to end through the kernel (madvise DONTNEED of one populated page).
 */
import process from 'node:process';
import { Kernel, PROT } from '../src/kernel/kernel.js';
import { MmuIntervalNotifier, MmuNotifier, MmuNotifierSubscriptions } from '../src/notifier/subscriptions.js';
import { makeRange, MmuNotifierEvent, type NotifierRange } from '../src/notifier/range.js';
import { fmt, machine, percentiles, table, usSince, type Percentiles } from './lib/stats.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
import { writeFileSync } from 'node:fs';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const ITER = Number(args.get('iterations') ?? 20000);
const SIZES = (args.get('sizes') ?? '1,100,10000,100000').split(',').map(Number);

function noopInterval(): MmuIntervalNotifier {
  return new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), true) }, { label: 'bench' });
}

async function syscallThroughput(): Promise<Record<string, unknown>> {
  const k = new Kernel({ memoryBytes: 64 * MiB });
  const p = k.createProcess('bench');
  let starts = 0;
  p.mm.notifier.register(new MmuNotifier({ invalidateRangeStart: () => (starts++, 0), invalidateRangeEnd: () => undefined }, { label: 'one' }));
  const page = new Uint8Array(1);
  const rounds = Number(args.get('rounds') ?? 300);
  const samples = new Float64Array(rounds);
  // Warm up.
  for (let i = 0; i < 20; i++) {
    const a = await k.mmap(p.pid, { length: MiB, prot: PROT.READ | PROT.WRITE });
    for (let off = 0; off < MiB; off += PAGE) await k.write(p.pid, a + off, page);
    await k.munmap(p.pid, a, MiB);
  }
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    const t = process.hrtime.bigint();
    const a = await k.mmap(p.pid, { length: MiB, prot: PROT.READ | PROT.WRITE });
    for (let off = 0; off < MiB; off += PAGE) await k.write(p.pid, a + off, page);
    await k.munmap(p.pid, a, MiB);
    samples[i] = usSince(t);
  }
  const total = usSince(t0) / 1e6;
  const audit = k.audit();
  if (!audit.ok) throw new Error(`audit failed: ${audit.problems.join('; ')}`);
  return {
    rounds,
    roundsPerSec: rounds / total,
    syscallsPerSec: (rounds * 2) / total,
    pageFaultsPerSec: (rounds * (MiB / PAGE)) / total,
    invalidations: starts,
    round: percentiles(samples),
  };
}

function invalidationCost(n: number): { tree: Percentiles; linear: Percentiles } {
  const subs = new MmuNotifierSubscriptions(1);
  const all: MmuIntervalNotifier[] = [];
  for (let i = 0; i < n; i++) {
    const s = noopInterval();
    subs.insertInterval(s, 0x10000000 + i * 2 * PAGE, PAGE);
    all.push(s);
  }
  const target = 0x10000000 + Math.floor(n / 2) * 2 * PAGE;
  const ranges: NotifierRange[] = [];
  const tree = new Float64Array(ITER);
  for (let i = 0; i < ITER + 1000; i++) {
    const r = makeRange(1, MmuNotifierEvent.CLEAR, target, target + PAGE, 'munmap');
    const t = process.hrtime.bigint();
    subs.invalidateRangeStart(r);
    subs.invalidateRangeEnd(r);
    const us = usSince(t);
    if (i >= 1000) tree[i - 1000] = us;
    if (ranges.length < 1) ranges.push(r);
  }
  // Baseline: the same subscriptions found by a linear scan, same callback and seq work.
  let seq = 2;
  const linear = new Float64Array(ITER);
  for (let i = 0; i < ITER + 1000; i++) {
    const r = makeRange(1, MmuNotifierEvent.CLEAR, target, target + PAGE, 'munmap');
    const t = process.hrtime.bigint();
    let hit = false;
    for (const s of all) {
      if (s.start <= r.end - 1 && s.last >= r.start) {
        if (!hit) seq |= 1;
        hit = true;
        s.ops.invalidate(s, r, seq);
      }
    }
    if (hit) seq++;
    const us = usSince(t);
    if (i >= 1000) linear[i - 1000] = us;
  }
  return { tree: percentiles(tree), linear: percentiles(linear) };
}

async function kernelInvalidation(n: number): Promise<Percentiles> {
  const k = new Kernel({ memoryBytes: 32 * MiB });
  const p = k.createProcess('inv');
  const base = 0x100000000;
  for (let i = 0; i < n; i++) p.mm.notifier.insertInterval(noopInterval(), base + i * 2 * PAGE, PAGE);
  const target = base + Math.floor(n / 2) * 2 * PAGE;
  await k.mmap(p.pid, { addr: target, fixed: true, length: PAGE, prot: PROT.READ | PROT.WRITE });
  const rounds = Math.min(ITER, 5000);
  const samples = new Float64Array(rounds);
  const one = new Uint8Array([1]);
  for (let i = 0; i < rounds + 200; i++) {
    await k.write(p.pid, target, one);
    const t = process.hrtime.bigint();
    await k.madvise(p.pid, target, PAGE, 'dontneed');
    if (i >= 200) samples[i - 200] = usSince(t);
  }
  return percentiles(samples);
}

async function main(): Promise<void> {
  const config = { iterations: ITER, sizes: SIZES, subscriberCallback: 'synchronous no-op (setSeq)', sanitizer: 'n/a', devices: 'none' };
  console.log('devmirror bench:kernel', JSON.stringify({ machine: machine(), config }));
  const sys = await syscallThroughput();
  const round = sys.round as Percentiles;
  console.log(`\nmmap + touch 256 pages + munmap of 1 MiB, one whole-mm subscriber (${sys.rounds} rounds)`);
  console.log(
    table([
      {
        'rounds/s': (sys.roundsPerSec as number).toFixed(0),
        'syscalls/s': (sys.syscallsPerSec as number).toFixed(0),
        'faults/s': (sys.pageFaultsPerSec as number).toFixed(0),
        p50: fmt(round.p50),
        p90: fmt(round.p90),
        p99: fmt(round.p99),
        p99_9: fmt(round.p99_9),
        max: fmt(round.max),
      },
    ]),
  );

  const inv: Record<number, { tree: Percentiles; linear: Percentiles; kernel: Percentiles }> = {};
  for (const n of SIZES) {
    const c = invalidationCost(n);
    inv[n] = { ...c, kernel: await kernelInvalidation(n) };
  }
  const base = inv[SIZES[0]];
  console.log(`\none invalidation hitting 1 of N non-overlapping interval subscriptions (${ITER} samples each)`);
  console.log(
    table(
      SIZES.map((n) => ({
        N: n,
        'tree p50': fmt(inv[n].tree.p50),
        'tree p99': fmt(inv[n].tree.p99),
        'tree p99_9': fmt(inv[n].tree.p99_9),
        'tree max': fmt(inv[n].tree.max),
        'tree N/1 (p50)': (inv[n].tree.p50 / base.tree.p50).toFixed(2),
        'linear p50': fmt(inv[n].linear.p50),
        'linear N/1 (p50)': (inv[n].linear.p50 / base.linear.p50).toFixed(2),
        'linear/tree (p50)': (inv[n].linear.p50 / inv[n].tree.p50).toFixed(2),
        'kernel madvise p50': fmt(inv[n].kernel.p50),
        'kernel N/1 (p50)': (inv[n].kernel.p50 / base.kernel.p50).toFixed(2),
      })),
    ),
  );
  const goal = inv[10000] ? inv[10000].tree.p50 / base.tree.p50 : NaN;
  console.log(`\ngoal: tree cost at N=10,000 within 1.5x of N=1 -> ratio ${goal.toFixed(2)} ${goal <= 1.5 ? 'MET' : 'MISSED'}`);
  const out = { machine: machine(), config, syscalls: sys, invalidation: inv };
  console.log('\nJSON ' + JSON.stringify(out));
  const json = args.get('json');
  if (json) writeFileSync(json, JSON.stringify(out, null, 2));
}

void main();
