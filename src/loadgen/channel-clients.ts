/**
 * A client process for bench:channel and devmirror bench --clients. Modes:
 *   clients URL TOKEN PID START LENGTH COUNT : COUNT DeviceClient connections, each with one interval
 *                                             subscription (no_end: no InvalidateEnd frames),
 *                                             acknowledging every start at once;
 *   echo URL [COUNT]                         : COUNT (default 1) bare `ws` connections, each echoing
 *                                             every frame back;
 *   protocol URL                             : one bare `ws` connection that speaks the least of the
 *                                             protocol a round needs: every server frame decoded as
 *                                             DeviceClient decodes it, an InvalidateStart answered
 *                                             with its InvalidateAck (the protocol floor, see
 *                                             openProtocolFloor).
 * Prints "ready" when set up; exits when stdin closes.
 */
import WebSocket from 'ws';
import { DeviceClient } from '../client/device-client.js';
import { decodeServerFrame, decodeStartFields, encodeAckFields } from '../channel/codec.js';

const [mode, url, ...rest] = process.argv.slice(2);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

if (mode === 'echo') {
  const count = Number(rest[0] ?? 1);
  let open = 0;
  for (let i = 0; i < count; i++) {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('message', (d: Buffer) => ws.send(d));
    ws.on('open', () => {
      if (++open === count) process.stdout.write('ready\n');
    });
  }
} else if (mode === 'protocol') {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('message', (d: Buffer) => {
    // As DeviceClient reads a frame: a start in place, anything else whole.
    const s = decodeStartFields(d);
    if (s !== null) return ws.send(encodeAckFields(s.invalidationId, s.subscriptionId, 0, false)!);
    const f = decodeServerFrame(d);
    if (f.body === 'invalidateStart') ws.send(encodeAckFields(Number(f.invalidateStart.invalidationId), Number(f.invalidateStart.subscriptionId), 0, false)!);
  });
  ws.on('open', () => process.stdout.write('ready\n'));
} else {
  const [token, pid, start, length, count] = rest.map((x, i) => (i === 0 ? x : Number(x))) as [string, number, number, number, number];
  const clients: DeviceClient[] = [];
  for (let i = 0; i < count; i++) clients.push(new DeviceClient({ url, token, name: `bench-${process.pid}-${i}`, kind: 'bench' }));
  // Connect in batches: a thousand simultaneous upgrades would only measure the accept queue.
  for (let i = 0; i < clients.length; i += 50) {
    await Promise.all(
      clients.slice(i, i + 50).map(async (c) => {
        await c.connect();
        // No end handler, so no End frames: an interval notifier gets none from the kernel either.
        await c.subscribeInterval({ pid, start, length, noEnd: true });
      }),
    );
  }
  process.stdout.write('ready\n');
}
