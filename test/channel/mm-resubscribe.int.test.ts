/**
 * Regression: unsubscribing a whole-mm subscription (which calls its release, as
 * mmu_notifier_unregister does) after an invalidation, then subscribing again, must not be taken
 * for a foreign acknowledgement (close 4000).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PROT } from '../../src/kernel/kernel.js';
import { HMM_PFN } from '../../src/kernel/hmm.js';
import type { InvalidateStartEvent } from '../../src/client/device-client.js';
import { startHarness, type Harness } from './helpers.js';
import { RawClient } from './raw-client.js';

const PAGE = 4096;
const RW = PROT.READ | PROT.WRITE;
let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('whole-mm subscription: unsubscribe and subscribe again', () => {
  it('the SDK client stays connected through invalidate, unsubscribe (release), resubscribe, invalidate', async () => {
    h = await startHarness();
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: RW });
    await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(1));
    const c = h.client({ name: 'mm-resub' });
    const starts: InvalidateStartEvent[] = [];
    const releases: number[] = [];
    const closes: Array<[number, string]> = [];
    c.on('close', (code: number, reason: string) => closes.push([code, reason]));
    c.on('error', () => undefined);
    c.onInvalidateStart((e) => (starts.push(e), true));
    c.onRelease((id) => void releases.push(id));
    await c.connect();
    for (let round = 0; round < 3; round++) {
      const s = await c.subscribeMm({ pid: p.pid });
      await k.mprotect(p.pid, a + round * PAGE, PAGE, PROT.READ);
      expect(starts.at(-1)?.subscriptionId).toBe(s.subscriptionId);
      await c.unsubscribe(s.subscriptionId);
      expect(releases.at(-1)).toBe(s.subscriptionId);
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(closes).toEqual([]);
    expect(c.connected).toBe(true);
    const dev = h.svc.channel.list()[0];
    expect(dev.state).toBe('running');
    expect(dev.handshake.protocolErrors).toBe(0);
  });
});

describe('release acknowledgements', () => {
  it('an invalidation acknowledged while a release is pending is not taken for the release, whatever the ids', async () => {
    h = await startHarness({ deadlineMs: 3000 });
    const k = h.svc.kernel;
    const p1 = k.createProcess('one');
    const p2 = k.createProcess('two');
    const a2 = await k.mmap(p2.pid, { length: 32 * PAGE, prot: RW });
    await k.write(p2.pid, a2, new Uint8Array(32 * PAGE).fill(2));
    const c = await RawClient.open(h.url);
    let holdRelease = true;
    c.onFrame = (f) => {
      // Every start is acknowledged at once; the release waits until the test answers it.
      if (f.body === 'invalidateStart') c.send({ invalidateAck: { invalidationId: f.invalidateStart.invalidationId, subscriptionId: f.invalidateStart.subscriptionId } });
      if (f.body === 'release' && !holdRelease) c.send({ invalidateAck: { invalidationId: f.release.invalidationId, subscriptionId: f.release.subscriptionId } });
    };
    await c.hello('devmirror-local', { clientName: 'raw' });
    const s1 = await c.request({ subscribe: { kind: 1, pid: p1.pid } });
    const s2 = await c.request({ subscribe: { kind: 1, pid: p2.pid } });
    if (s1.body !== 'subscribed' || s2.body !== 'subscribed') throw new Error('could not subscribe');
    const sub1 = Number(s1.subscribed.subscriptionId);
    const sub2 = Number(s2.subscribed.subscriptionId);
    // Unsubscribing s1 sends its release; the answer is held.
    const unsub = c.request({ unsubscribe: { subscriptionId: sub1 } });
    const rel = await c.next((f) => f.body === 'release');
    if (rel.body !== 'release') throw new Error('no release');
    expect(Number(rel.release.subscriptionId)).toBe(sub1);
    const relId = Number(rel.release.invalidationId);
    // Invalidations of s2 meanwhile, acknowledged at once: each one must complete (its
    // acknowledgement must not be consumed as the release's, whatever ids the two get).
    const invIds: number[] = [];
    for (let i = 0; i < 24; i++) {
      const before = c.frames.length;
      await k.mprotect(p2.pid, a2 + i * PAGE, PAGE, PROT.READ);
      for (const f of c.frames.slice(before)) if (f.body === 'invalidateStart') invIds.push(Number(f.invalidateStart.invalidationId));
    }
    expect(invIds.length).toBeGreaterThanOrEqual(24);
    expect(invIds).not.toContain(relId);
    // Now the release is answered: the unsubscribe completes and the connection stays up.
    holdRelease = false;
    c.send({ invalidateAck: { invalidationId: rel.release.invalidationId, subscriptionId: rel.release.subscriptionId } });
    const r = await unsub;
    expect(r.body).toBe('unsubscribed');
    // And a fresh subscription of p1 works as the first one did.
    const s3 = await c.request({ subscribe: { kind: 1, pid: p1.pid } });
    expect(s3.body).toBe('subscribed');
    expect(c.open).toBe(true);
    const dev = h.svc.channel.list()[0];
    expect(dev.state).toBe('running');
    expect(dev.handshake.protocolErrors).toBe(0);
    expect(dev.subs.has(sub2)).toBe(true);
    c.terminate();
  });

  it('the release of an unsubscribed MM subscription keeps the grants of an interval subscription of the same process', async () => {
    h = await startHarness();
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: RW });
    await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(3));
    const c = h.client({ name: 'both' });
    await c.connect();
    const si = await c.subscribeInterval({ pid: p.pid, start: a, length: 16 * PAGE });
    const sm = await c.subscribeMm({ pid: p.pid });
    const seq = await c.readBegin(si.subscriptionId);
    const r = await c.rangeFault(si.subscriptionId, seq, a, a + 4 * PAGE, { defaultFlags: HMM_PFN.REQ_FAULT });
    expect(r.error).toBe(0);
    const pfn = r.pfns[0] & HMM_PFN.PFN_MASK;
    await c.unsubscribe(sm.subscriptionId);
    const d = await c.dmaRead(p.pid, a, pfn, 8);
    expect(d.finding).toBe('');
    expect(Array.from(d.data)).toEqual(new Array(8).fill(3));
    expect(h.svc.channel.list()[0].sanitizer.shadow()).toEqual({ pages: 4, writable: 4 });
    // The last subscription gone, nothing is left.
    await c.unsubscribe(si.subscriptionId);
    expect(h.svc.channel.list()[0].sanitizer.shadow().pages).toBe(0);
  });
});
