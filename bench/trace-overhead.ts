/**
 * node dist/bench/trace-overhead.js [--rounds=100000] [--trials=7] [--capacity=50000] [--mprotect-rounds=N]
 *
 * What tracing costs the kernel thread, without device workers (whose cross-thread wake-ups
 * dominate a handshake round and drown a sub-microsecond difference; bench:handshake --trace=on
 * measures that round): trials alternate between a kernel traced into a TraceRecorder and one
 * that is not, and each reports the median over trials of
 *   - an invalidation round (Kernel.notify + notifyEnd of one page) with one synchronous interval
 *     subscriber: the recorder's cost per completed invalidation;
 *   - an mprotect RW <-> RO round of one page (a syscall span + its PROTECTION_VMA invalidation),
 *     --mprotect-rounds of them (default rounds / 20, at least 1000: a short phase, in which one slow
 *     scavenge on a loaded machine weighs a lot; 20000 gives steadier figures).
 */
import process from 'node:process';
import { Kernel, PROT } from '../src/kernel/kernel.js';
import { MmuIntervalNotifier } from '../src/notifier/subscriptions.js';
import { MmuNotifierEvent } from '../src/notifier/range.js';
import { attachTracing } from '../src/trace/kernel-hooks.js';
import { TraceRecorder } from '../src/trace/recorder.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const ROUNDS = Number(args.get('rounds') ?? 100_000);
const TRIALS = Number(args.get('trials') ?? 7);
const CAPACITY = Number(args.get('capacity') ?? 50_000);
const PAGE = 4096;

async function trial(traced: boolean): Promise<{ invNs: number; mprotectNs: number }> {
  const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
  if (traced) attachTracing(k, new TraceRecorder(CAPACITY));
  const p = k.createProcess('bench');
  const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(1));
  const sub = new MmuIntervalNotifier({ invalidate: (s, _r, seq) => (s.setSeq(seq), true) }, { label: 'bench', deviceId: 1, deviceKind: 'gpu' });
  p.mm.notifier.insertInterval(sub, a, 16 * PAGE);
  let t = process.hrtime.bigint();
  for (let i = 0; i < ROUNDS; i++) {
    const r = k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    k.notifyEnd(p.mm, r instanceof Promise ? await r : r);
  }
  const invNs = Number(process.hrtime.bigint() - t) / ROUNDS;
  const n = Number(args.get('mprotect-rounds') ?? Math.max(1000, ROUNDS / 20));
  t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await k.mprotect(p.pid, a, PAGE, i & 1 ? PROT.READ | PROT.WRITE : PROT.READ);
  const mprotectNs = Number(process.hrtime.bigint() - t) / n;
  return { invNs, mprotectNs };
}

const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const off: Array<{ invNs: number; mprotectNs: number }> = [];
const on: Array<{ invNs: number; mprotectNs: number }> = [];
await trial(false); // warm-up (JIT)
for (let i = 0; i < TRIALS; i++) {
  off.push(await trial(false));
  on.push(await trial(true));
}
const row = (what: 'invNs' | 'mprotectNs'): string => {
  const a = median(off.map((x) => x[what]));
  const b = median(on.map((x) => x[what]));
  return `${what === 'invNs' ? 'invalidation round' : 'mprotect round    '}  off ${(a / 1000).toFixed(3)} us  on ${(b / 1000).toFixed(3)} us  ratio ${(b / a).toFixed(3)}  (+${((b - a) / 1000).toFixed(3)} us)`;
};
console.log(`trace overhead, ring of ${CAPACITY} entries, ${ROUNDS} rounds x ${TRIALS} trials each way (medians)`);
console.log(row('invNs'));
console.log(row('mprotectNs'));
