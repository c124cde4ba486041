/**
 * How the server writes an invalidation's starts (Session.sendStart, SocketAckGroup.holdStarts):
 * the starts of one invalidation to one client leave in one socket write, and that write is made
 * before the kernel's notify returns (when waitAcks spins), not at the end of the event loop's turn.
 * An InvalidateEnd and the next start, sent in one turn, still leave together at the end of it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { MmuNotifierEvent } from '../../src/notifier/range.js';
import { DEFAULT_TOKEN } from '../../src/channel/tokens.js';
import { DeviceClient } from '../../src/client/device-client.js';
import type { ChannelServer } from '../../src/channel/channel-server.js';
import { openChannel } from '../helpers/channel.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
  cleanup = [];
});

interface CountedSocket {
  writes: number;
  corked(): number;
}

/** Counts the writes that reach the server side of the one session's socket (each is one syscall). */
function countWrites(channel: ChannelServer): CountedSocket {
  expect(channel.sessions.size).toBe(1);
  const session = [...channel.sessions][0];
  const sock = (session as unknown as { ws: { _socket: Record<string, unknown> & { writableCorked: number } } }).ws._socket;
  const counted: CountedSocket = { writes: 0, corked: () => sock.writableCorked };
  for (const name of ['_write', '_writev']) {
    const orig = sock[name] as (...a: unknown[]) => unknown;
    sock[name] = function (this: unknown, ...a: unknown[]) {
      counted.writes++;
      return orig.apply(this, a);
    };
  }
  return counted;
}

async function setup(noEnd: boolean): Promise<{ k: Kernel; pid: number; a: number; c: DeviceClient; channel: ChannelServer; starts: number[]; ends: number[] }> {
  const k = new Kernel({ memoryBytes: 16 << 20 });
  const p = k.createProcess('app');
  const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: PROT.READ | PROT.WRITE });
  const { channel, url } = await openChannel(k, cleanup);
  const c = new DeviceClient({ url, token: DEFAULT_TOKEN, name: 'writes', kind: 'test' });
  cleanup.push(() => c.close());
  const starts: number[] = [];
  const ends: number[] = [];
  c.onInvalidateStart((e) => (starts.push(e.invalidationId), true));
  if (!noEnd) c.onInvalidateEnd((e) => ends.push(e.invalidationId));
  await c.connect();
  return { k, pid: p.pid, a, c, channel, starts, ends };
}

describe('the server\'s writes of InvalidateStart', () => {
  it('writes the starts of one invalidation to one client (two subscriptions hit) in one write, before notify returns', async () => {
    const { k, pid, a, c, channel, starts } = await setup(true);
    await c.subscribeInterval({ pid, start: a, length: 8 * PAGE, noEnd: true });
    await c.subscribeInterval({ pid, start: a, length: 4 * PAGE, noEnd: true });
    const sock = countWrites(channel);
    const mm = k.findProcess(pid)!.mm;

    const pending = k.notify(mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    // Synchronously after the call: both starts are on the wire, in one write, and nothing is
    // left corked for the end of the turn.
    expect(sock.writes).toBe(1);
    expect(sock.corked()).toBe(0);
    const r = await pending;
    k.notifyEnd(mm, r);
    expect(starts).toEqual([r.id, r.id]);
    expect(channel.list()[0].pendingAcks).toBe(0);
  });

  it('writes an End and the next start, sent in one turn, together at the end of that turn', async () => {
    const { k, pid, a, c, channel, starts, ends } = await setup(false);
    await c.subscribeInterval({ pid, start: a, length: 8 * PAGE });
    const mm = k.findProcess(pid)!.mm;
    const r1 = await k.notify(mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
    const sock = countWrites(channel);

    k.notifyEnd(mm, r1);
    const pending = k.notify(mm, MmuNotifierEvent.CLEAR, a + PAGE, a + 2 * PAGE, 'madvise');
    // The End corked the socket for the turn; the start joined it and waits for the same write.
    expect(sock.writes).toBe(0);
    expect(sock.corked()).toBe(1);
    const r2 = await pending;
    expect(sock.writes).toBe(1);
    k.notifyEnd(mm, r2);
    await eventually(() => expect(ends).toEqual([r1.id, r2.id]));
    expect(starts).toEqual([r1.id, r2.id]);
  });
});
