/**
 * Subscribe.no_end: an interval subscription that asks for no InvalidateEnd gets its starts and
 * none of the ends (the kernel's interval notifiers have no end callback), while the server still
 * closes each invalidation's window (the handshake's count, the sanitizer's window). Another
 * interval subscription of the same client, and an MM subscription (for which no_end means
 * nothing), get every end as before.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DEFAULT_TOKEN } from '../../src/channel/tokens.js';
import { DeviceClient } from '../../src/client/device-client.js';
import { openChannel } from '../helpers/channel.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
  cleanup = [];
});

describe('no_end interval subscriptions', () => {
  it('get every start and no end; the same client\'s other subscriptions get both; the server closes every window', async () => {
    const k = new Kernel({ memoryBytes: 16 << 20 });
    const p = k.createProcess('app');
    const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(8 * PAGE).fill(1)); // populated: every operation below notifies
    const { channel, url } = await openChannel(k, cleanup);
    const c = new DeviceClient({ url, token: DEFAULT_TOKEN, name: 'ends', kind: 'test' });
    cleanup.push(() => c.close());
    const starts = new Map<number, number>();
    const ends = new Map<number, number>();
    const bump = (m: Map<number, number>, id: number): void => void m.set(id, (m.get(id) ?? 0) + 1);
    c.onInvalidateStart((e) => (bump(starts, e.subscriptionId), true));
    c.onInvalidateEnd((e) => bump(ends, e.subscriptionId));
    await c.connect();
    const quiet = await c.subscribeInterval({ pid: p.pid, start: a, length: 8 * PAGE, noEnd: true });
    const loud = await c.subscribeInterval({ pid: p.pid, start: a, length: 8 * PAGE });
    const mm = await c.subscribeMm({ pid: p.pid });
    // The server says which requests it honours.
    expect(quiet.noEnd).toBe(true);
    expect(loud.noEnd).toBe(false);

    await k.madvise(p.pid, a, PAGE, 'dontneed');
    await k.mprotect(p.pid, a + PAGE, PAGE, PROT.READ);
    await k.munmap(p.pid, a + 2 * PAGE, PAGE);
    // A marker after the three: once the loud subscription has its end, every earlier frame is in.
    await k.madvise(p.pid, a + 3 * PAGE, PAGE, 'dontneed');
    await eventually(() => expect(ends.get(loud.subscriptionId)).toBe(4));

    expect(starts.get(quiet.subscriptionId)).toBe(4);
    expect(starts.get(loud.subscriptionId)).toBe(4);
    expect(starts.get(mm.subscriptionId)).toBe(4);
    expect(ends.get(quiet.subscriptionId)).toBeUndefined();
    expect(ends.get(mm.subscriptionId)).toBe(4);
    // The server ended all twelve windows, the quiet subscription's included.
    const dev = channel.list()[0];
    expect(dev.handshake.starts).toBe(12);
    expect(dev.handshake.ends).toBe(12);
    expect(dev.pendingAcks).toBe(0);
    // The seq protocol still serves the quiet subscription: readBegin answers (no invalidation is
    // running) with the seq of the last one, the same as the loud subscription's.
    const seq = await c.readBegin(quiet.subscriptionId);
    expect(seq).not.toBe(quiet.seq);
    expect(seq).toBe(await c.readBegin(loud.subscriptionId));
  });
});
