/**
 * Experiment: the server's side of one external round (bench:channel's N = 1 round, a one-page
 * CLEAR to one interval subscription) without sockets, in one thread: Kernel.notify reaches the
 * real ExternalDevice, whose port encodes the InvalidateStart; a microtask later the client's
 * InvalidateAck is encoded, decoded as the session does and handed to onAck; notifyEnd encodes the
 * InvalidateEnd. Against a floor of one microtask per round. What is left of the channel round's
 * extra server time above this is the sockets, ws, and the caches a client on the same CPU cools.
 *
 *   npm run build && node bench/experiments/server-path.mjs [root=this checkout] [rounds=200000]
 *
 * Prints wall and CPU nanoseconds per round for floor, devmirror, floor, devmirror, devmirror.
 * Used in docs/benchmarks.md ("The external round on the Xeon host").
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = process.argv[2] ? resolve(process.argv[2]) : fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const ROUNDS = Number(process.argv[3] ?? 200000);
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
  invalidateStart(m) {
    const f = hf.encodeStartFields(m.invalidationId, m.subscriptionId, m.pid, m.start, m.end, m.event, m.flags, m.owner, m.curSeq, m.origin);
    sink += f.length;
    const ackBuf = hf.encodeAckFields(m.invalidationId, m.subscriptionId, 0, false);
    queueMicrotask(() => { const x = hf.decodeAckFields(ackBuf); dev.onAck(x.invalidationId, x.subscriptionId, x.result === 0, x.keptReads); });
  },
  invalidateEnd(m) { const f = hf.encodeEndFields(m.invalidationId, m.subscriptionId, m.pid, m.start, m.end, m.event, m.flags, m.owner); sink += f.length; },
  release() {}, youngQuery() {}, command: async () => null, close() {},
};
dev = new ExternalDevice(k, new SocketAckGroup(), 7, 'x', 'bench', 60000, port);
dev.subscribe(p, 'interval', a, 16 * PAGE, false, 'w');
const sys = async () => { const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise'); k.notifyEnd(p.mm, r); };
const floor = async () => { await new Promise((r) => queueMicrotask(r)); };
for (const [name, fn] of [['floor', floor], ['sys', sys], ['floor', floor], ['sys', sys], ['sys', sys]]) {
  const c0 = process.cpuUsage(); const t0 = process.hrtime.bigint();
  for (let i = 0; i < ROUNDS; i++) { await fn(); if ((i & 63) === 0) await new Promise((r) => setImmediate(r)); }
  const ns = Number(process.hrtime.bigint() - t0) / ROUNDS; const c = process.cpuUsage(c0);
  console.log(name.padEnd(6), 'wall ns/round', ns.toFixed(0), 'cpu ns/round', (((c.user + c.system) * 1000) / ROUNDS).toFixed(0));
}
process.exit(sink > 0 ? 0 : 1);
