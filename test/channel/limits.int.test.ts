/**
 * Channel limits: subscriptions per client, pending requests, message rate, slow consumers and
 * heartbeats. Each is refused or closed with its documented code, and the kernel carries on.
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { PROT } from '../../src/kernel/kernel.js';
import { CLOSE } from '../../src/channel/close-codes.js';
import { encodeClientFrame } from '../../src/channel/codec.js';
import { HMM_PFN } from '../../src/kernel/hmm.js';
import { closed, startHarness, type Harness } from './helpers.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

async function proc(hh: Harness) {
  const k = hh.svc.kernel;
  const p = k.createProcess('app');
  const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(8 * PAGE).fill(9));
  return { k, p, a };
}

describe('channel limits', () => {
  it('refuses a subscription beyond the limit and stays connected', async () => {
    h = await startHarness({ channel: { maxSubscriptions: 2 } });
    const { p } = await proc(h);
    const c = h.client();
    expect((await c.connect()).maxSubscriptions).toBe(2);
    await c.subscribeMm({ pid: p.pid });
    await c.subscribeMm({ pid: p.pid });
    await expect(c.subscribeMm({ pid: p.pid })).rejects.toMatchObject({ code: 'DM_ERR_CHANNEL_LIMIT' });
    expect(c.connected).toBe(true);
  });

  it('refuses requests beyond the pending limit', async () => {
    h = await startHarness({ channel: { maxPending: 1 } });
    const { k, p, a } = await proc(h);
    const c = h.client();
    let release!: () => void;
    const held = new Promise<boolean>((r) => (release = () => r(true)));
    c.onInvalidateStart(() => held); // keeps the invalidation window open
    await c.connect();
    const sub = await c.subscribeInterval({ pid: p.pid, start: a, length: 8 * PAGE });
    const munmap = k.munmap(p.pid, a, PAGE);
    await eventually(() => h!.svc.channel.list()[0].pendingAcks === 1);
    const first = c.readBegin(sub.subscriptionId); // waits for the window to close: pending
    await expect(c.readBegin(sub.subscriptionId)).rejects.toMatchObject({ code: 'DM_ERR_CHANNEL_LIMIT' });
    release();
    await munmap;
    expect(typeof (await first)).toBe('number');
  });

  it('closes a client that sends faster than the rate limit with 4429', async () => {
    h = await startHarness({ channel: { ratePerSec: 50 } });
    const c = h.client();
    await c.connect();
    const gone = closed(c);
    for (let i = 0; i < 200 && c.connected; i++) c.sendRaw(encodeClientFrame({ stats: { counters: { i } } }));
    expect((await gone).code).toBe(CLOSE.RATE_LIMIT);
  });

  it('keeps a client within the rate limit: the bucket refills while it waits, even after it was nearly spent', async () => {
    h = await startHarness({ channel: { ratePerSec: 50 } });
    const c = h.client();
    await c.connect();
    let code: number | null = null;
    void closed(c).then((e) => (code = e.code));
    // 45 of the 50 tokens at once, then 20 more 0.6 s later: the refill (30 tokens by then) covers
    // them only if the bucket refills when it runs out.
    for (let i = 0; i < 45; i++) c.sendRaw(encodeClientFrame({ stats: { counters: { i } } }));
    await new Promise((r) => setTimeout(r, 600));
    for (let i = 0; i < 20; i++) c.sendRaw(encodeClientFrame({ stats: { counters: { i } } }));
    // A request answered after them: every frame before it was taken, none closed the client.
    await c.readBegin(0).catch(() => undefined);
    expect(code).toBeNull();
    expect(c.connected).toBe(true);
  });

  it('disconnects a client that does not read (slow consumer, 4503) and releases the kernel', async () => {
    h = await startHarness({ channel: { maxBufferedBytes: 64 * 1024, ratePerSec: 1_000_000, maxPending: 100_000 } });
    const { k, p, a } = await proc(h);
    const ws = new WebSocket(h.url, { headers: { authorization: 'Bearer devmirror-local' } });
    await new Promise<void>((r) => ws.once('open', () => r()));
    const frames: Buffer[] = [];
    ws.on('message', (d: Buffer) => frames.push(d));
    ws.send(encodeClientFrame({ hello: { protocolVersions: [1] } }));
    ws.send(encodeClientFrame({ requestId: 1, subscribe: { kind: 2, pid: p.pid, start: a, length: 8 * PAGE } }));
    await eventually(() => frames.length >= 2);
    const dev = h.svc.channel.list()[0];
    const subId = [...dev.subs.keys()][0];
    ws.send(encodeClientFrame({ requestId: 2, readBegin: { subscriptionId: subId } }));
    await eventually(() => frames.length >= 3);
    const seqReply = (await import('../../src/channel/codec.js')).decodeServerFrame(frames[2]);
    const seq = seqReply.body === 'readBeginReply' ? seqReply.readBeginReply.seq : 0;
    ws.send(encodeClientFrame({ requestId: 3, rangeFault: { subscriptionId: subId, notifierSeq: seq, start: a, end: a + PAGE, defaultFlags: HMM_PFN.REQ_FAULT } }));
    await eventually(() => frames.length >= 4);
    const pfn = h.svc.kernel.pagemap(p.pid, a, 1)[0].pfn;
    // Stop reading, then ask for far more data than the limit.
    (ws as unknown as { _socket: { pause(): void } })._socket.pause();
    for (let i = 0; i < 3000; i++) ws.send(encodeClientFrame({ requestId: 10 + i, dma: { pid: p.pid, addr: a, pfn, length: PAGE } }));
    await eventually(() => dev.state !== 'running', 20_000);
    expect(dev.stateReason).toMatch(/send queue/);
    // The kernel is not stuck on this client.
    await k.munmap(p.pid, a, 8 * PAGE);
    ws.terminate();
  });

  it('closes a client that stops answering pings (4409)', async () => {
    h = await startHarness({ channel: { heartbeatMs: 100 } });
    const ws = new WebSocket(h.url, { headers: { authorization: 'Bearer devmirror-local' }, autoPong: false } as WebSocket.ClientOptions);
    await new Promise<void>((r) => ws.once('open', () => r()));
    const code = new Promise<number>((r) => ws.once('close', (c) => r(c)));
    ws.send(encodeClientFrame({ hello: { protocolVersions: [1] } }));
    expect(await code).toBe(CLOSE.HEARTBEAT);
    await eventually(() => h!.svc.channel.list()[0]?.state === 'closed');
  });
});
