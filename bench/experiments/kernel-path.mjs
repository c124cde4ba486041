/**
 * Experiment: what the kernel's side of an invalidation round costs without a device. The same
 * round as bench:handshake (Kernel.notify of a one-page CLEAR, then notifyEnd) with one interval
 * subscription whose callback answers synchronously in this thread (setSeq, no worker, no mailbox,
 * no sanitizer). Prints nanoseconds per round for each pass; the first pass warms up.
 *
 *   npm run build && node bench/experiments/kernel-path.mjs [rounds per pass, default 1000000]
 *
 * Used in docs/benchmarks.md (bench:handshake, where the N = 1 round goes).
 */
import { Kernel, PROT } from '../../dist/src/kernel/kernel.js';
import { MmuIntervalNotifier } from '../../dist/src/notifier/subscriptions.js';
import { MmuNotifierEvent } from '../../dist/src/notifier/range.js';

const PAGE = 4096;
const WINDOW = 64;
const ROUNDS = Number(process.argv[2] ?? 1_000_000);
const k = new Kernel({ memoryBytes: 64 << 20 });
const p = k.createProcess('bench');
const a = await k.mmap(p.pid, { length: WINDOW * PAGE, prot: PROT.READ | PROT.WRITE });
const sub = new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), true) }, { label: 'bench' });
p.mm.notifier.insertInterval(sub, a, WINDOW * PAGE);
for (let pass = 0; pass < 3; pass++) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ROUNDS; i++) {
    const r = k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    if (r instanceof Promise) throw new Error('a synchronous subscriber answered asynchronously');
    k.notifyEnd(p.mm, r);
  }
  console.log(`pass ${pass}${pass === 0 ? ' (warm-up)' : ''}: ${(Number(process.hrtime.bigint() - t0) / ROUNDS).toFixed(1)} ns/round`);
}
