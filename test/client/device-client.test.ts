/**
 * DeviceClient's InvalidateStart path on a scripted socket (no server): the event a handler gets,
 * from the in-place reader (the common frame) and from the whole-frame decoder (a frame the
 * in-place reader declines, e.g. a range to ULONG_MAX); the acknowledgement each answer sends; and
 * the at-once acknowledgement without a handler.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { AckResult, decodeClientFrame, encodeServerFrame, encodeStartFields, WIRE_ULONG_MAX } from '../../src/channel/codec.js';
import { DeviceClient, type InvalidateStartEvent } from '../../src/client/device-client.js';

/** A socket that records what the client sends; the test plays the server with `deliver`. */
class ScriptedSocket extends EventEmitter {
  readyState = 1;
  readonly sent: Uint8Array[] = [];
  send(data: Uint8Array): void {
    this.sent.push(data);
  }
  close(): void {
    this.readyState = 3;
    this.emit('close', 1000, Buffer.from(''));
  }
  terminate(): void {
    this.close();
  }
  deliver(frame: Uint8Array): void {
    this.emit('message', Buffer.from(frame), true);
  }
}

async function connected(): Promise<{ client: DeviceClient; sock: ScriptedSocket }> {
  const sock = new ScriptedSocket();
  const client = new DeviceClient({ url: 'ws://unused', socket: () => sock as unknown as WebSocket });
  const welcome = client.connect();
  sock.emit('open');
  expect(decodeClientFrame(sock.sent[0]).body).toBe('hello');
  sock.deliver(encodeServerFrame({ welcome: { protocolVersion: 1, bootId: 9, clientId: 3, capabilities: [], maxFrameBytes: 1 << 20, maxSubscriptions: 10, maxPendingRequests: 10 } } as never));
  await welcome;
  sock.sent.length = 0;
  return { client, sock };
}

/** The acknowledgements the client sent, as plain objects. */
function acks(sock: ScriptedSocket): Array<Record<string, unknown>> {
  return sock.sent.map((b) => {
    const f = decodeClientFrame(b) as unknown as { body: string; invalidateAck: Record<string, unknown> };
    expect(f.body).toBe('invalidateAck');
    return f.invalidateAck;
  });
}

const BASE = 0x7f00_0000_0000;

describe('DeviceClient InvalidateStart', () => {
  it('hands a handler every field of a common start (read in place) and acknowledges its answer', async () => {
    const { client, sock } = await connected();
    const seen: InvalidateStartEvent[] = [];
    client.onInvalidateStart((e) => {
      seen.push({ ...e });
      if (e.invalidationId === 2) e.keptReads = true;
      return e.invalidationId !== 3;
    });
    sock.deliver(encodeStartFields(1, 1_000_001, 42, BASE, BASE + 4096, 1, 1, null, 11, 'madvise')!);
    sock.deliver(encodeStartFields(2, 1_000_001, 42, BASE, BASE + 8192, 4, 1, 5, 13, 'migrate')!);
    sock.deliver(encodeStartFields(3, 1_000_001, 42, BASE, BASE + 4096, 3, 0, null, 15, null)!);
    expect(seen).toEqual([
      { invalidationId: 1, subscriptionId: 1_000_001, pid: 42, start: BASE, end: BASE + 4096, event: 1, flags: 1, blockable: true, owner: null, curSeq: 11, origin: 'madvise' },
      { invalidationId: 2, subscriptionId: 1_000_001, pid: 42, start: BASE, end: BASE + 8192, event: 4, flags: 1, blockable: true, owner: 5, curSeq: 13, origin: 'migrate' },
      { invalidationId: 3, subscriptionId: 1_000_001, pid: 42, start: BASE, end: BASE + 4096, event: 3, flags: 0, blockable: false, owner: null, curSeq: 15, origin: '' },
    ]);
    expect(acks(sock)).toEqual([
      { invalidationId: 1, subscriptionId: 1_000_001, result: AckResult.OK, keptReads: false },
      { invalidationId: 2, subscriptionId: 1_000_001, result: AckResult.OK, keptReads: true },
      { invalidationId: 3, subscriptionId: 1_000_001, result: AckResult.WOULD_BLOCK, keptReads: false },
    ]);
  });

  it('takes a start the in-place reader declines (a range to ULONG_MAX) through the whole frame, to the same event', async () => {
    const { client, sock } = await connected();
    const seen: InvalidateStartEvent[] = [];
    client.onInvalidateStart(async (e) => {
      seen.push({ ...e });
      return true;
    });
    sock.deliver(encodeServerFrame({ invalidateStart: { invalidationId: 7, subscriptionId: 1_000_002, pid: 42, start: 0, end: WIRE_ULONG_MAX, event: 0, flags: 1, blockable: true, curSeq: 0, origin: { operation: 'exit_mmap' } } } as never));
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual([{ invalidationId: 7, subscriptionId: 1_000_002, pid: 42, start: 0, end: 2 ** 64, event: 0, flags: 1, blockable: true, owner: null, curSeq: 0, origin: 'exit_mmap' }]);
    expect(acks(sock)).toEqual([{ invalidationId: 7, subscriptionId: 1_000_002, result: AckResult.OK, keptReads: false }]);
  });

  it('acknowledges at once without a handler, and sends nothing once disconnected', async () => {
    const { sock } = await connected();
    sock.deliver(encodeStartFields(21, 1_000_003, 42, BASE, BASE + 4096, 1, 1, null, 41, 'madvise')!);
    sock.deliver(encodeStartFields(22, 1_000_003, 42, BASE, BASE + 4096, 1, 1, null, 43, 'madvise')!);
    expect(acks(sock)).toEqual([
      { invalidationId: 21, subscriptionId: 1_000_003, result: AckResult.OK, keptReads: false },
      { invalidationId: 22, subscriptionId: 1_000_003, result: AckResult.OK, keptReads: false },
    ]);
    sock.sent.length = 0;
    sock.readyState = 3;
    sock.deliver(encodeStartFields(23, 1_000_003, 42, BASE, BASE + 4096, 1, 1, null, 45, 'madvise')!);
    expect(sock.sent).toEqual([]);
  });
});
