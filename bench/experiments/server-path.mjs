/**
 * Experiment: the server's side of one external round (bench:channel's N = 1 round, a one-page
 * CLEAR to one interval subscription) without sockets, in one thread: Kernel.notify reaches the
 * real ExternalDevice, whose port encodes the InvalidateStart; a microtask later the client's
 * InvalidateAck is encoded, decoded as the session does and handed to onAck; notifyEnd encodes the
 * InvalidateEnd. Against a floor of one microtask per round. What is left of the channel round's
 * extra server time above this is the sockets, ws, and the caches a client on the same CPU cools.
 *
 *   npm run build && [THRASH_KB=1024] node bench/experiments/server-path.mjs [root=this checkout] [rounds=50000]
 *
 * Prints the p50 and mean nanoseconds per round of floor, devmirror, floor, devmirror (pin it with
 * taskset to keep it on one CPU). THRASH_KB=n fills n KiB of the caches before every round.
 * Used in docs/benchmarks.md ("The external round on the Xeon host").
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = process.argv[2] ? resolve(process.argv[2]) : fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const ROUNDS = Number(process.argv[3] ?? 50000);
const PAGE = 4096;
const { Kernel, PROT } = await import(`${root}/dist/src/kernel/kernel.js`);
const { ExternalDevice } = await import(`${root}/dist/src/channel/external-device.js`);
const { SocketAckGroup } = await import(`${root}/dist/src/channel/socket-ack.js`);
const { MmuNotifierEvent } = await import(`${root}/dist/src/notifier/range.js`);
const hf = await import(`${root}/dist/src/channel/hot-frames.js`);
const k = new Kernel({ memoryBytes: 64 << 20 });
const p = k.createProcess('bench');
const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE });
let dev;
let sink = 0;
const port = {
  invalidateStart(sub, pid, r, curSeq) {
    const f = hf.encodeStartFields(r.id, sub, pid, r.start, r.end, r.event, r.flags, r.owner, curSeq, r.origin);
    sink += f.length;
    const ackBuf = hf.encodeAckFields(r.id, sub, 0, false);
    queueMicrotask(() => { const x = hf.decodeAckFields(ackBuf); dev.onAck(x.invalidationId, x.subscriptionId, x.result === 0, x.keptReads); });
  },
  invalidateEnd(sub, pid, r) { const f = hf.encodeEndFields(r.id, sub, pid, r.start, r.end, r.event, r.flags, r.owner); sink += f.length; },
  release() {}, youngQuery() {}, command: async () => null, close() {},
};
dev = new ExternalDevice(k, new SocketAckGroup(), 7, 'x', 'bench', 60000, port);
dev.subscribe(p, 'interval', a, 16 * PAGE, false, 'w');
const sys = async () => { const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise'); k.notifyEnd(p.mm, r); };
const floor = async () => { await new Promise((r) => queueMicrotask(r)); };
// THRASH_KB: before every round, touch one word in every 64 bytes of this much memory, so the
// round runs with the caches something else just filled (the time measured is the round's alone).
const junk = new Float64Array((Number(process.env.THRASH_KB ?? 0) * 1024) / 8);
let acc = 0;
const thrash = () => {
  for (let i = 0; i < junk.length; i += 8) acc += junk[i]++;
};
for (const [name, fn] of [['floor', floor], ['sys', sys], ['floor', floor], ['sys', sys]]) {
  const lat = new Float64Array(ROUNDS);
  for (let i = 0; i < ROUNDS; i++) {
    thrash();
    const t = process.hrtime.bigint();
    await fn();
    lat[i] = Number(process.hrtime.bigint() - t);
    if ((i & 63) === 0) await new Promise((r) => setImmediate(r));
  }
  lat.sort();
  const mean = lat.reduce((x, y) => x + y, 0) / ROUNDS;
  console.log(`${(name === 'sys' ? 'devmirror' : 'floor').padEnd(9)} p50 ${lat[ROUNDS >> 1]} ns  mean ${mean.toFixed(0)} ns`);
}
process.exit(acc >= 0 && sink > 0 ? 0 : 1);
