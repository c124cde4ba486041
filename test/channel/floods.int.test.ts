/**
 * Floods on the notifier channel are bounded by the limits and do not starve other clients
 * (issue #8): connections (silent sockets without a token, one token's many clients, all
 * connections), subscriptions, and frames (the rate limit, the pending-request limit). In each
 * case a well-behaved client connecting during the flood subscribes and acknowledges an
 * invalidation from a kernel munmap within a generous deadline (seconds: not a performance
 * figure), and the kernel's audit is clean afterwards.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PROT } from '../../src/kernel/kernel.js';
import { CLOSE } from '../../src/channel/close-codes.js';
import type { ChannelLimits } from '../../src/channel/session.js';
import { startHarness, type Harness } from './helpers.js';
import { RawClient } from './raw-client.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const GOOD = 'good-token-1';
const FLOOD = 'flood-token-1';
const THIRD = 'third-token-1';
const TOKENS = `${GOOD}=good;${FLOOD}=flood,good;${THIRD}=*`;
/** How long the well-behaved client may take: far above any normal figure (milliseconds). */
const GENEROUS_MS = 10_000;

let h: Harness | null = null;
const raws: RawClient[] = [];
afterEach(async () => {
  for (const r of raws.splice(0)) r.terminate();
  await h?.close();
  h = null;
});

async function start(limits: Partial<ChannelLimits>): Promise<{ good: { pid: number; addr: number }; flood: { pid: number; addr: number } }> {
  h = await startHarness({ tokens: TOKENS, deadlineMs: 1500, channel: limits });
  const k = h.svc.kernel;
  const mk = async (name: string) => {
    const p = k.createProcess(name);
    const addr = await k.mmap(p.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
    return { pid: p.pid, addr };
  };
  return { good: await mk('good'), flood: await mk('flood') };
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_, j) => setTimeout(() => j(new Error(`${what} did not finish within ${ms} ms`)), ms))]);

/**
 * A well-behaved client connects now, subscribes to `good`, and acknowledges the invalidation of a
 * kernel munmap there; the munmap returns within the generous deadline.
 */
async function wellBehaved(good: { pid: number; addr: number }, page: number): Promise<void> {
  const c = h!.client({ token: GOOD, name: `good-${page}` });
  let acks = 0;
  c.onInvalidateStart(() => {
    acks++;
    return true;
  });
  await within(c.connect(), GENEROUS_MS, 'connect');
  await within(c.subscribeInterval({ pid: good.pid, start: good.addr, length: 64 * PAGE }), GENEROUS_MS, 'subscribe');
  await within(h!.svc.kernel.munmap(good.pid, good.addr + page * PAGE, PAGE), GENEROUS_MS, 'munmap');
  expect(acks).toBeGreaterThanOrEqual(1);
  expect(c.connected).toBe(true);
  await c.close();
}

/** Opens a socket; resolves with it, or with the refused upgrade's status. */
async function tryOpen(token?: string): Promise<RawClient | { status: number; body: string }> {
  try {
    const r = await RawClient.open(h!.url, token);
    raws.push(r);
    return r;
  } catch (e) {
    return e as { status: number; body: string };
  }
}
const isOpen = (x: RawClient | { status: number }): x is RawClient => x instanceof RawClient;

function clean(): void {
  expect(h!.svc.kernel.audit().problems).toEqual([]);
}

describe('connection floods', () => {
  it('silent sockets without a token: at most maxUnauthenticated at once, the rest 503; they go at the hello timeout; a client with a token gets in meanwhile', async () => {
    const { good } = await start({ maxUnauthenticated: 10, helloTimeoutMs: 1500 });
    const flood = await Promise.all(Array.from({ length: 40 }, () => tryOpen()));
    const open = flood.filter(isOpen);
    const refused = flood.filter((x) => !isOpen(x)) as Array<{ status: number; body: string }>;
    expect(open).toHaveLength(10);
    expect(refused).toHaveLength(30);
    for (const r of refused) {
      expect(r.status).toBe(503);
      expect(JSON.parse(r.body).code).toBe('DM_ERR_CHANNEL_LIMIT');
    }
    // The token at the upgrade is checked there: the silent flood does not lock this client out.
    await wellBehaved(good, 1);
    // The silent ones are closed at the hello timeout, which frees their places.
    for (const c of open) expect((await within(c.closed, GENEROUS_MS, 'hello timeout')).code).toBe(CLOSE.HELLO_TIMEOUT);
    await eventually(() => expect(h!.svc.channel.sessions.size).toBe(0));
    expect(isOpen(await tryOpen())).toBe(true);
    clean();
  });

  it("one token's clients: at most maxConnectionsPerToken (503 at the upgrade, 4429 at a Hello), and other tokens still get in", async () => {
    const { good } = await start({ maxConnectionsPerToken: 12 });
    const flood = await Promise.all(Array.from({ length: 20 }, () => tryOpen(FLOOD)));
    const open = flood.filter(isOpen);
    expect(open).toHaveLength(12);
    for (const r of flood.filter((x) => !isOpen(x)) as Array<{ status: number; body: string }>) {
      expect(r.status).toBe(503);
      expect(JSON.parse(r.body).code).toBe('DM_ERR_CHANNEL_LIMIT');
    }
    await Promise.all(open.map((c) => c.hello(FLOOD)));
    // The token only in the Hello: counted there.
    const late = await tryOpen();
    if (!isOpen(late)) throw new Error('a socket without a token was refused');
    late.send({ hello: { protocolVersions: [1], token: FLOOD } });
    expect((await within(late.closed, GENEROUS_MS, 'close')).code).toBe(CLOSE.RATE_LIMIT);
    await wellBehaved(good, 1);
    // One of the flood's clients leaves: its place is free again.
    open[0].terminate();
    await eventually(() => expect(h!.svc.channel.connectionsOf(FLOOD)).toBe(11));
    expect(isOpen(await tryOpen(FLOOD))).toBe(true);
    clean();
  });

  it('an SDK client refused at the upgrade by a limit (503) retries with backoff and gets in once there is room; a refused token (401) is not retried', async () => {
    await start({ maxConnectionsPerToken: 2 });
    const held = [await RawClient.open(h!.url, FLOOD), await RawClient.open(h!.url, FLOOD)];
    raws.push(...held);
    const c = h!.client({ token: FLOOD, name: 'patient', reconnect: { minMs: 20, maxMs: 100 } });
    const welcomed = new Promise<void>((r) => c.once('reconnected', () => r()));
    await expect(c.connect()).rejects.toMatchObject({ code: 'DM_ERR_CHANNEL_LIMIT' });
    await new Promise((r) => setTimeout(r, 300)); // a few refused attempts
    expect(c.connected).toBe(false);
    held[0].terminate();
    await within(welcomed, GENEROUS_MS, 'reconnection');
    expect(c.connected).toBe(true);
    // A wrong token: refused at the upgrade, reported as fatal, and not tried again.
    const bad = h!.client({ token: 'not-a-known-token', reconnect: { minMs: 20, maxMs: 100 } });
    const fatal = new Promise<Error>((r) => bad.once('fatal', r));
    let attempts = 0;
    const count = (): void => void attempts++;
    h!.app.server.on('upgrade', count);
    await expect(bad.connect()).rejects.toMatchObject({ code: 'DM_ERR_UNAUTHORIZED' });
    expect((await fatal).message).toMatch(/401/);
    await new Promise((r) => setTimeout(r, 300));
    h!.app.server.off('upgrade', count);
    expect(attempts).toBe(1);
  });

  it('all connections: at most maxConnections; the clients already connected carry on', async () => {
    const { good } = await start({ maxConnections: 16 });
    // The well-behaved client is connected before the flood, with an invalidation to answer during it.
    const c = h!.client({ token: GOOD, name: 'early' });
    let acks = 0;
    c.onInvalidateStart(() => {
      acks++;
      return true;
    });
    await c.connect();
    await c.subscribeInterval({ pid: good.pid, start: good.addr, length: 64 * PAGE });
    const flood = await Promise.all(Array.from({ length: 30 }, (_, i) => tryOpen(i % 2 ? THIRD : FLOOD)));
    expect(flood.filter(isOpen)).toHaveLength(15);
    for (const r of flood.filter((x) => !isOpen(x)) as Array<{ status: number; body: string }>) expect(r.status).toBe(503);
    await within(h!.svc.kernel.munmap(good.pid, good.addr + 2 * PAGE, PAGE), GENEROUS_MS, 'munmap');
    expect(acks).toBe(1);
    expect(c.connected).toBe(true);
    clean();
  });

  it('upgrade requests to any other path are answered 404 and closed, not held open', async () => {
    await start({});
    const port = h!.port;
    const answers = await Promise.all(
      ['/v1/processes', '/', '/v1/notifier/wss', '/nothing'].map(
        (path) =>
          new Promise<{ head: string; closed: boolean }>((resolve) => {
            const s = net.connect(port, '127.0.0.1');
            let head = '';
            const t = setTimeout(() => {
              s.destroy();
              resolve({ head, closed: false });
            }, GENEROUS_MS);
            s.on('data', (d) => (head += d.toString()));
            s.on('close', () => {
              clearTimeout(t);
              resolve({ head, closed: true });
            });
            s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
          }),
      ),
    );
    for (const a of answers) {
      expect(a.closed).toBe(true);
      expect(a.head).toMatch(/^HTTP\/1.1 404 /);
      expect(a.head).toContain('DM_ERR_NOT_FOUND');
    }
  });

  it('closed devices are kept for listing up to keepClosedDevices', async () => {
    await start({ keepClosedDevices: 5 });
    const ids: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await RawClient.open(h!.url, FLOOD);
      ids.push((await r.hello(FLOOD)).clientId);
      r.terminate();
      await r.closed;
    }
    await eventually(() => {
      expect(h!.svc.channel.list().filter((d) => d.alive)).toHaveLength(0);
      expect(h!.svc.channel.list()).toHaveLength(5);
    });
    // The most recent ones.
    expect(h!.svc.channel.list().map((d) => d.id)).toEqual(ids.slice(-5));
  });
});

describe('limits', () => {
  it('an option given as undefined keeps its default (the acknowledgement deadline stays on)', async () => {
    h = await startHarness({ deadlineMs: undefined, channel: { maxPending: undefined } });
    expect(h.svc.channel.limits.deadlineMs).toBe(1000);
    expect(h.svc.channel.limits.maxPending).toBe(256);
  });
});

describe('subscription floods', () => {
  it('beyond maxSubscriptions every Subscribe is refused; the flooder still answers, and the well-behaved client is served', async () => {
    const { good } = await start({ maxSubscriptions: 100 });
    const f = await RawClient.open(h!.url, FLOOD);
    raws.push(f);
    f.onFrame = (x) => {
      if (x.body === 'invalidateStart') f.send({ invalidateAck: { invalidationId: x.invalidateStart.invalidationId, subscriptionId: x.invalidateStart.subscriptionId } });
    };
    await f.hello(FLOOD);
    // 300 subscriptions of the process the good client uses, pipelined.
    const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => f.request({ subscribe: { kind: 2, pid: good.pid, start: good.addr + (i % 64) * PAGE, length: PAGE } })));
    expect(replies.filter((r) => r.body === 'subscribed')).toHaveLength(100);
    const refused = replies.filter((r) => r.body === 'error');
    expect(refused).toHaveLength(200);
    for (const r of refused) expect(r.body === 'error' && r.error.code).toBe('DM_ERR_CHANNEL_LIMIT');
    expect(h!.svc.kernel.process(good.pid).mm.notifier.subscriberCount).toBe(100);
    await wellBehaved(good, 5);
    expect(f.open).toBe(true);
    clean();
  });
});

describe('frame floods', () => {
  it('above the frame rate the flooder is closed with 4429; the well-behaved client is served meanwhile', async () => {
    const { good } = await start({ ratePerSec: 2000 });
    const f = await RawClient.open(h!.url, FLOOD);
    raws.push(f);
    await f.hello(FLOOD);
    const served = wellBehaved(good, 1);
    for (let i = 0; i < 20_000 && f.open; i++) {
      f.send({ stats: { counters: { i } } });
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    expect((await within(f.closed, GENEROUS_MS, 'close')).code).toBe(CLOSE.RATE_LIMIT);
    await served;
    clean();
  });

  it('beyond maxPending requests are refused; a flooder that also holds an invalidation is evicted at the deadline; the well-behaved client is served', async () => {
    const { good, flood } = await start({ maxPending: 8, ratePerSec: 1_000_000 });
    const f = await RawClient.open(h!.url, FLOOD);
    raws.push(f);
    await f.hello(FLOOD); // never acknowledges anything
    const s = await f.request({ subscribe: { kind: 2, pid: flood.pid, start: flood.addr, length: 64 * PAGE } });
    if (s.body !== 'subscribed') throw new Error('flood could not subscribe');
    const k = h!.svc.kernel;
    const held = k.munmap(flood.pid, flood.addr, PAGE); // waits for f, which does not answer
    await f.next((x) => x.body === 'invalidateStart');
    // ReadBegin waits for the open invalidation: each one stays pending.
    const replies = Array.from({ length: 200 }, () => f.request({ readBegin: { subscriptionId: s.subscribed.subscriptionId } }, GENEROUS_MS).catch(() => null));
    await eventually(() => expect(f.frames.filter((x) => x.body === 'error')).toHaveLength(192));
    for (const e of f.frames.filter((x) => x.body === 'error')) expect(e.body === 'error' && e.error.code).toBe('DM_ERR_CHANNEL_LIMIT');
    await wellBehaved(good, 1);
    // The flooder is evicted when its acknowledgement deadline passes, and the kernel carries on.
    expect((await within(f.closed, GENEROUS_MS, 'eviction')).code).toBe(CLOSE.DEADLINE);
    await within(held, GENEROUS_MS, 'the held munmap');
    await Promise.all(replies);
    clean();
  });
});
