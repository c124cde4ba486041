/**
 * Experiment: what the channel's hot codec costs per call, warm and with cold caches: the server's
 * part of a round (encode an InvalidateStart, decode an InvalidateAck, encode an InvalidateEnd) and
 * the client's (decode the start whole, as DeviceClient did until 11-29, and in place, as it does
 * since; encode the ack), each timed alone.
 * THRASH_KB=n touches n KiB (one word every 64 bytes) before every call, as a client process run on
 * the same CPU between two rounds would. Prints the p50 of each, in ns (the second of two passes).
 *
 *   npm run build && THRASH_KB=256 taskset -c 0 node bench/experiments/codec-cold.mjs
 *   npm run build && LOOP=1 taskset -c 0 node bench/experiments/codec-cold.mjs
 *
 * LOOP=1 times 2,000,000 calls of each in a loop instead (no thrashing, no timer per call) and
 * prints the mean ns per call.
 *
 * Used in docs/benchmarks.md ("The protocol floor, on the Xeon host").
 */
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const hf = await import(`${here}/dist/src/channel/hot-frames.js`);
const { decodeServerFrame } = await import(`${here}/dist/src/channel/codec.js`);
const KB = Number(process.env.THRASH_KB ?? 256);
const junk = new Float64Array(KB * 128);
let acc = 0;
const thrash = () => {
  let s = 0;
  for (let i = 0; i < junk.length; i += 8) s += junk[i]++;
  acc += s;
};
const start = 0x7f0000000000;
let id = 1;
let sink = 0;
const ack = hf.encodeAckFields(5, 1_000_001, 0, false).slice();
const st = hf.encodeStartFields(5, 1_000_001, 100, start, start + 4096, 1, 1, null, 10, 'madvise').slice();
const tests = {
  nothing: () => {},
  'server: encode start': () => { sink += hf.encodeStartFields(++id, 1_000_001, 100, start, start + 4096, 1, 1, null, id * 2, 'madvise').length; },
  'server: decode ack': () => { sink += hf.decodeAckFields(ack).invalidationId; },
  'server: encode end': () => { sink += hf.encodeEndFields(++id, 1_000_001, 100, start, start + 4096, 1, 1, null).length; },
  'server: all three': () => {
    sink += hf.encodeStartFields(++id, 1_000_001, 100, start, start + 4096, 1, 1, null, id * 2, 'madvise').length;
    sink += hf.decodeAckFields(ack).invalidationId;
    sink += hf.encodeEndFields(id, 1_000_001, 100, start, start + 4096, 1, 1, null).length;
  },
  'client: decode start': () => { sink += decodeServerFrame(st).invalidateStart.pid; },
  // (Builds before 11-29 18:00 have no in-place reader: run from a copy of one with --preserve-symlinks-main.)
  ...(hf.decodeStartFields ? { 'client: start in place': () => { sink += hf.decodeStartFields(st).pid; } } : {}),
  'client: encode ack': () => { sink += hf.encodeAckFields(++id, 1_000_001, 0, false).length; },
};
if (process.env.LOOP) {
  for (let pass = 0; pass < 3; pass++) {
    for (const [name, fn] of Object.entries(tests)) {
      const N = 2_000_000;
      const t = process.hrtime.bigint();
      for (let i = 0; i < N; i++) fn();
      if (pass === 2) console.log(`${name.padEnd(22)} mean ${(Number(process.hrtime.bigint() - t) / N).toFixed(1)} ns`);
    }
  }
  process.exit(sink > 0 ? 0 : 1);
}
const N = 20000;
for (let pass = 0; pass < 2; pass++) {
  for (const [name, fn] of Object.entries(tests)) {
    const lat = new Float64Array(N);
    for (let i = 0; i < N; i++) {
      thrash();
      const t = process.hrtime.bigint();
      fn();
      lat[i] = Number(process.hrtime.bigint() - t);
    }
    lat.sort();
    if (pass === 1) console.log(`${name.padEnd(22)} p50 ${lat[N >> 1]} ns`);
  }
}
process.exit(acc >= 0 && sink > 0 ? 0 : 1);
