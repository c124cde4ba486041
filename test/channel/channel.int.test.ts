/**
 * The notifier channel end to end: an external client over a real WebSocket subscribes, faults,
 * does DMA through its mirror and acknowledges invalidations; the kernel waits for it, the
 * sanitizer checks it, and misbehaviour is refused or closed with the documented codes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PROT } from '../../src/kernel/kernel.js';
import { HMM_PFN } from '../../src/kernel/hmm.js';
import { MmuNotifierEvent } from '../../src/notifier/range.js';
import { CLOSE } from '../../src/channel/close-codes.js';
import type { InvalidateStartEvent } from '../../src/client/device-client.js';
import { closed, startHarness, type Harness } from './helpers.js';

const PAGE = 4096;
const RW = PROT.READ | PROT.WRITE;
let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

async function setup(opts: Parameters<typeof startHarness>[0] = {}) {
  h = await startHarness(opts);
  const k = h.svc.kernel;
  const p = k.createProcess('app');
  const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: RW });
  await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(0x5a));
  return { h, k, p, a };
}

/** Subscribes and faults `pages` pages in; returns the pfns. */
async function mirror(c: ReturnType<Harness['client']>, pid: number, a: number, pages: number) {
  const sub = await c.subscribeInterval({ pid, start: a, length: 16 * PAGE });
  for (;;) {
    const seq = await c.readBegin(sub.subscriptionId);
    const r = await c.rangeFault(sub.subscriptionId, seq, a, a + pages * PAGE, { defaultFlags: HMM_PFN.REQ_FAULT });
    if (r.error === -16) continue;
    expect(r.error).toBe(0);
    return { sub, pfns: Array.from(r.pfns, (w) => w & HMM_PFN.PFN_MASK) };
  }
}

describe('notifier channel', () => {
  it('an external client mirrors, reads through DMA, and acknowledges an UNMAP before the PTEs change', async () => {
    const { h, k, p, a } = await setup();
    const c = h.client({ name: 'ext0' });
    const starts: InvalidateStartEvent[] = [];
    const ends: number[] = [];
    let presentAtStart = -1;
    c.onInvalidateStart((e) => {
      starts.push(e);
      presentAtStart = k.pagemap(p.pid, a, 1)[0].present ? 1 : 0;
      return true;
    });
    c.onInvalidateEnd((e) => ends.push(e.invalidationId));
    const w = await c.connect();
    expect(w.protocolVersion).toBe(1);
    expect(Number(w.bootId)).toBe(k.bootId);
    expect(w.pids).toContain(p.pid);
    const { pfns } = await mirror(c, p.pid, a, 4);
    expect(h.svc.channel.list()[0].sanitizer.shadow()).toEqual({ pages: 4, writable: 4 }); // the server's shadow of the mirror
    const r = await c.dmaRead(p.pid, a + 100, pfns[0], 16);
    expect(Array.from(r.data)).toEqual(new Array(16).fill(0x5a));
    expect(r.finding).toBe('');
    await k.munmap(p.pid, a, 4 * PAGE);
    expect(starts).toHaveLength(1);
    expect(starts[0].event).toBe(MmuNotifierEvent.UNMAP);
    expect([starts[0].start, starts[0].end]).toEqual([a, a + 4 * PAGE]);
    expect(starts[0].blockable).toBe(true);
    expect(presentAtStart).toBe(1); // the start came before the PTEs changed
    await new Promise((r) => setTimeout(r, 50));
    expect(ends).toEqual([starts[0].invalidationId]);
    const dev = h.svc.channel.list()[0];
    expect(dev.sanitizer.stats.checked).toBe(1);
    expect(dev.sanitizer.stats.findings).toBe(0);
    expect(dev.handshake.acks).toBe(1);
    expect(dev.sanitizer.shadow().pages).toBe(0); // the UNMAP revoked every grant
  });

  it('the sanitizer catches a client that keeps using a page after acknowledging', async () => {
    const { h, k, p, a } = await setup();
    const c = h.client({ name: 'buggy' });
    await c.connect();
    const { pfns } = await mirror(c, p.pid, a, 2);
    await k.madvise(p.pid, a, PAGE, 'dontneed'); // acked at once by the default handler
    const late = await c.dmaWrite(p.pid, a, pfns[0], new Uint8Array(8).fill(1));
    expect(['stale', 'lost-write']).toContain(late.finding); // a write to a freed frame is also lost
    const dev = h.svc.channel.list()[0];
    expect(dev.sanitizer.stats.findings).toBe(1);
    expect(dev.findings[0].kind).toBe(late.finding);
    expect(dev.findings[0].revokedBy?.event).toBe('CLEAR');
    // The stale write was not performed: the page the kernel freed is not corrupted.
    expect(k.pagemap(p.pid, a, 1)[0].present).toBe(false);
  });

  it('refuses DMA writes through a read-only grant or to a frame it was not given, leaving memory intact', async () => {
    const { h, k, p, a } = await setup();
    const c = h.client();
    await c.connect();
    await k.mprotect(p.pid, a, 16 * PAGE, PROT.READ);
    const { pfns } = await mirror(c, p.pid, a, 2); // read-only PTEs: read-only grants
    const ro = await c.dmaWrite(p.pid, a, pfns[0], new Uint8Array(8).fill(0xff));
    expect(ro.finding).toBe('write-ro');
    const wrong = await c.dmaWrite(p.pid, a, pfns[1], new Uint8Array(8).fill(0xff)); // page 1's frame at page 0
    expect(wrong.finding).not.toBe('');
    const bytes = await k.read(p.pid, a, 2 * PAGE);
    expect(bytes.every((b) => b === 0x5a)).toBe(true);
    expect(h.svc.channel.list()[0].handshake.dmaWrites).toBe(0);
  });

  it('a client that disconnects mid-handshake does not hang the kernel', async () => {
    const { h, k, p, a } = await setup();
    const c = h.client();
    c.onInvalidateStart(() => {
      void c.close();
      return new Promise<boolean>(() => undefined); // never answers
    });
    await c.connect();
    await mirror(c, p.pid, a, 2);
    await k.munmap(p.pid, a, 2 * PAGE); // completes once the socket is gone
    expect(k.pagemap(p.pid, a, 1)[0].present).toBe(false);
    expect(h.svc.channel.list()[0].state).toBe('closed');
    expect(h.svc.channel.list()[0].subs.size).toBe(0);
  });

  it('a client that stops answering is evicted after the deadline with close code 4408', async () => {
    const { h, k, p, a } = await setup({ deadlineMs: 300 });
    const c = h.client();
    c.onInvalidateStart(() => new Promise<boolean>(() => undefined));
    await c.connect();
    await mirror(c, p.pid, a, 2);
    const gone = closed(c);
    const t0 = Date.now();
    await k.munmap(p.pid, a, 2 * PAGE);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect((await gone).code).toBe(CLOSE.DEADLINE);
    const dev = h.svc.channel.list()[0];
    expect(dev.state).toBe('evicted');
    expect(dev.handshake.evictions).toBe(1);
  });

  it('refuses processes the token does not grant, and an unknown token at the upgrade', async () => {
    const { h, k, p } = await setup({ tokens: 'token-for-app=app;token-for-other=other' });
    const other = k.createProcess('other');
    const c = h.client({ token: 'token-for-app' });
    const w = await c.connect();
    expect(w.pids).toEqual([p.pid]);
    await expect(c.subscribeMm({ pid: other.pid })).rejects.toMatchObject({ code: 'DM_ERR_FORBIDDEN' });
    await expect(c.subscribeMm({ process: 'other' })).rejects.toMatchObject({ code: 'DM_ERR_FORBIDDEN' });
    await expect(c.gup(p.pid, 0x1000, false)).rejects.toMatchObject({ code: 'DM_ERR_FORBIDDEN' }); // not subscribed
    expect(c.connected).toBe(true); // refused, not disconnected
    const s = await c.subscribeMm({ pid: p.pid });
    expect(s.pid).toBe(p.pid);
    const bad = h.client({ token: 'not-a-token' });
    await expect(bad.connect()).rejects.toMatchObject({ code: 'DM_ERR_UNAUTHORIZED' });
  });

  it("refuses DMA into a process the token does not grant, and closes a client that acknowledges another client's invalidation", async () => {
    const { h, k, p, a } = await setup({ tokens: 'token-app-1=app;token-other=other' });
    const other = k.createProcess('other');
    const b = await k.mmap(other.pid, { length: 4 * PAGE, prot: RW });
    await k.write(other.pid, b, new Uint8Array(4 * PAGE).fill(0x11));
    const victim = h.client({ token: 'token-other', name: 'victim' });
    let seen: InvalidateStartEvent | null = null;
    victim.onInvalidateStart((e) => {
      seen = e;
      return true;
    });
    await victim.connect();
    await mirror(victim, other.pid, b, 1).catch(() => undefined);
    const intruder = h.client({ token: 'token-app-1', name: 'intruder' });
    await intruder.connect();
    await mirror(intruder, p.pid, a, 1);
    const pfn = k.pagemap(other.pid, b, 1)[0].pfn;
    await expect(intruder.dmaRead(other.pid, b, pfn, 16)).rejects.toMatchObject({ code: 'DM_ERR_FORBIDDEN' });
    await expect(intruder.dmaWrite(p.pid, a, pfn, new Uint8Array(4))).resolves.toMatchObject({ finding: 'wrong-pfn' });
    await k.madvise(other.pid, b, PAGE, 'dontneed');
    expect(seen).not.toBeNull();
    const gone = closed(intruder);
    const { encodeClientFrame } = await import('../../src/channel/codec.js');
    intruder.sendRaw(encodeClientFrame({ invalidateAck: { invalidationId: seen!.invalidationId, subscriptionId: seen!.subscriptionId, result: 0 } }));
    const r = await gone;
    expect(r.code).toBe(CLOSE.PROTOCOL);
    expect(r.reason).toMatch(/not this client's/);
    expect((await k.read(other.pid, b + PAGE, 16)).every((x) => x === 0x11)).toBe(true);
  });

  it('a foreign or duplicate acknowledgement is a protocol error (close 4000)', async () => {
    const { h, k, p, a } = await setup();
    const c = h.client();
    let first: InvalidateStartEvent | null = null;
    c.onInvalidateStart((e) => {
      first ??= e;
      return true;
    });
    await c.connect();
    await mirror(c, p.pid, a, 2);
    await k.madvise(p.pid, a, PAGE, 'dontneed');
    const gone = closed(c);
    // Replay the acknowledgement the client already sent.
    const { encodeClientFrame } = await import('../../src/channel/codec.js');
    c.sendRaw(encodeClientFrame({ invalidateAck: { invalidationId: first!.invalidationId, subscriptionId: first!.subscriptionId, result: 0 } }));
    const r = await gone;
    expect(r.code).toBe(CLOSE.PROTOCOL);
    expect(r.reason).toMatch(/not pending/);
  });
});
