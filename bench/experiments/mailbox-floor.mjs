/**
 * Experiment: does the mailbox protocol itself cost anything over the bare Atomics round trip?
 * One worker, nothing but the line traffic, in one process, passes alternating:
 *
 *   spin       the bare one-line round trip (publisher stores a doorbell word, the worker spins on
 *              it and bumps an ACK word on the same line; the end is one more doorbell store)
 *   ring       devmirror's mailbox shape with no code around it: a ring of 64 one-line call slots
 *              (13 words, the answer cleared, SEQ stored last), the worker spinning on the next
 *              call's SEQ and the next end's SEQ, reading the slot and answering in it, the
 *              publisher polling the answer; then an end slot (10 words, SEQ last) in its own ring
 *   ring-noend the same without the end ring
 *   ring-sep   the call's SEQ on a separate doorbell line instead of in the slot
 *
 * Prints each mode's p50 round (microseconds) for every pass:
 *
 *   node bench/experiments/mailbox-floor.mjs [rounds per pass, default 200000]
 *
 * Used in docs/benchmarks.md (bench:handshake, where the N = 1 round goes).
 */
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

const CALL_BASE = 64;
const SLOTW = 16;
const NSLOT = 64;
const END_BASE = CALL_BASE + NSLOT * SLOTW;
const TOTAL = END_BASE + NSLOT * SLOTW;
const SEQ = 15;
const ANS = 14;
const ESEQ = 10;
const STOP = 2;
const DOORBELL = 4; // spin's doorbell; spin's ACK is word 1, on the same line
const SEP = 32; // ring-sep's doorbell line

if (isMainThread) {
  const ROUNDS = Number(process.argv[2] ?? 200_000);
  const MODES = ['spin', 'ring', 'ring-noend', 'ring-sep'];
  const run = async (mode) => {
    // WebAssembly memory is page-aligned: every slot is exactly one cache line.
    const sab = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer;
    const w = new Int32Array(sab, 0, TOTAL);
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { sab, mode } });
    await new Promise((r) => worker.once('online', r));
    const samples = new Float64Array(ROUNDS);
    const warm = 20_000;
    let t = 0;
    for (let i = 0; i < ROUNDS + warm; i++) {
      const t0 = process.hrtime.bigint();
      if (mode === 'spin') {
        Atomics.store(w, DOORBELL, 2 * (i + 1) - 1);
        while (Atomics.load(w, 1) !== i + 1);
        Atomics.store(w, DOORBELL, 2 * (i + 1));
      } else {
        const base = CALL_BASE + (t & (NSLOT - 1)) * SLOTW;
        for (let k = 1; k < 14; k++) w[base + k] = i + k;
        w[base + ANS] = 0;
        w[base] = i;
        t = (t + 1) | 0;
        Atomics.store(w, mode === 'ring-sep' ? SEP : base + SEQ, t);
        while (Atomics.load(w, base + ANS) === 0);
        if (mode !== 'ring-noend') {
          const eb = END_BASE + ((t - 1) & (NSLOT - 1)) * SLOTW;
          for (let k = 0; k < 10; k++) w[eb + k] = i + k;
          Atomics.store(w, eb + ESEQ, t);
        }
      }
      const dt = Number(process.hrtime.bigint() - t0) / 1000;
      if (i >= warm) samples[i - warm] = dt;
    }
    Atomics.store(w, STOP, 1);
    Atomics.store(w, DOORBELL, -1);
    await worker.terminate();
    samples.sort();
    return samples[ROUNDS >> 1];
  };
  const res = Object.fromEntries(MODES.map((m) => [m, []]));
  for (let pass = 0; pass < 3; pass++) for (const m of MODES) res[m].push((await run(m)).toFixed(3));
  for (const m of MODES) console.log(m.padEnd(11), 'p50 us', res[m].join('  '));
} else {
  const { sab, mode } = workerData;
  const w = new Int32Array(sab, 0, TOTAL);
  let sink = 0;
  if (mode === 'spin') {
    let seen = 0;
    for (;;) {
      let v;
      while ((v = Atomics.load(w, DOORBELL)) === seen) if (Atomics.load(w, STOP)) break;
      if (Atomics.load(w, STOP)) break;
      seen = v;
      if (v & 1) Atomics.add(w, 1, 1);
    }
  } else {
    let ct = 0;
    let et = 0;
    for (;;) {
      const base = CALL_BASE + (ct & (NSLOT - 1)) * SLOTW;
      const cw = mode === 'ring-sep' ? SEP : base + SEQ;
      const want = (ct + 1) | 0;
      let stop = false;
      for (;;) {
        if (Atomics.load(w, cw) === want) break;
        const ew = END_BASE + (et & (NSLOT - 1)) * SLOTW + ESEQ;
        if (mode !== 'ring-noend' && Atomics.load(w, ew) === ((et + 1) | 0)) {
          for (let k = 0; k < 10; k++) sink += w[ew - ESEQ + k];
          et = (et + 1) | 0;
          continue;
        }
        if (Atomics.load(w, STOP)) {
          stop = true;
          break;
        }
      }
      if (stop) break;
      for (let k = 0; k < 14; k++) sink += w[base + k];
      Atomics.store(w, base + ANS, 1);
      ct = want;
    }
  }
  if (sink === 0.5) console.log(sink); // keeps the reads
}
