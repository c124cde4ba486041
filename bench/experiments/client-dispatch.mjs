/**
 * Experiment: the JavaScript a client process runs per InvalidateStart, without ws and without a
 * socket: DeviceClient's frame handler (decode, the start event, the acknowledgement's encoding,
 * its send) on a fake socket, against the protocol floor's client handler (decode, encode, send;
 * src/loadgen/channel-clients.ts `protocol`). Tells whether DeviceClient's own code is what a
 * client process spends more per round than the protocol floor's (bench/experiments/channel-cpu.mjs).
 *
 *   npm run build && taskset -c 1 node bench/experiments/client-dispatch.mjs
 *
 * Prints nanoseconds per frame, four passes after two of warm-up. Used in docs/benchmarks.md
 * ("Separate runs").
 */
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const { DeviceClient } = await import(`${root}/dist/src/client/device-client.js`);
const codec = await import(`${root}/dist/src/channel/codec.js`);
const hot = await import(`${root}/dist/src/channel/hot-frames.js`);

/** What DeviceClient needs of a ws client socket (see DeviceClientOptions.socket). */
class FakeSocket extends EventEmitter {
  readyState = 1;
  binaryType = 'nodebuffer';
  sent = 0;
  send() {
    this.sent++;
  }
  close() {}
  terminate() {}
}
let fake;
const client = new DeviceClient({
  url: 'ws://unused',
  socket: () => {
    fake = new FakeSocket();
    queueMicrotask(() => fake.emit('open'));
    return fake;
  },
});
const connected = client.connect();
await new Promise((r) => setTimeout(r, 5));
fake.emit('message', Buffer.from(codec.encodeServerFrame({ requestId: 0, welcome: { protocolVersion: 1, clientId: 5, bootId: 9, serverName: 's', limits: {} } })));
await connected;

const BASE = 0x7f0000000000;
const frames = Array.from({ length: 64 }, (_, i) => Buffer.from(hot.encodeStartFields(1000 + i, 1, 100, BASE, BASE + 4096, 1, 1, null, 2 * i, 'madvise')));
const protocolHandler = (d) => {
  const f = codec.decodeServerFrame(d);
  if (f.body === 'invalidateStart') fake.send(codec.encodeAckFields(Number(f.invalidateStart.invalidationId), Number(f.invalidateStart.subscriptionId), 0, false));
};
const deviceClientHandler = fake.listeners('message')[0];
const N = 200_000;
const nsPerFrame = (fn) => {
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) fn(frames[i & 63]);
  return Number(process.hrtime.bigint() - t) / N;
};
const before = fake.sent;
for (let pass = 0; pass < 6; pass++) {
  const dc = nsPerFrame(deviceClientHandler);
  const proto = nsPerFrame(protocolHandler);
  if (pass >= 2) console.log(`DeviceClient ${dc.toFixed(0)} ns, protocol floor client ${proto.toFixed(0)} ns per frame`);
}
if (fake.sent - before !== 12 * N) throw new Error(`expected every start acknowledged, ${fake.sent - before} sends`);
