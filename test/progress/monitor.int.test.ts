/**
 * The live service's progress oracle over a real channel client: a stuck acknowledgement, a
 * deadlock cycle (the device owes an acknowledgement while its own readBegin waits behind that
 * invalidation), a livelocked fault (EBUSY past the retry budget, named by origin), and
 * GET /v1/progress.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startHarness, type Harness } from '../channel/helpers.js';
import { PROT } from '../../src/kernel/vma.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

async function setup(hold: boolean): Promise<{ h: Harness; pid: number; addr: number; sub: number; seq: number; c: ReturnType<Harness['client']> }> {
  // The watchdog is short and its timer slow: the test calls check() itself.
  h = await startHarness({ deadlineMs: 60_000, progress: { watchdogMs: 100, retryBudget: 3, intervalMs: 60_000 } });
  const k = h.svc.kernel;
  const pid = k.createProcess('app').pid;
  const addr = await k.mmap(pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
  const c = h.client({ name: 'dev0' });
  // hold: never answer (a device stuck in its invalidate handler); else answer at once.
  c.onInvalidateStart(() => (hold ? new Promise<boolean>(() => undefined) : true));
  await c.connect();
  const s = await c.subscribeInterval({ pid, start: addr, length: 4 * PAGE, label: 'buf' });
  return { h, pid, addr, sub: s.subscriptionId, seq: s.seq, c };
}

describe('progress oracle (live service)', () => {
  it('reports an acknowledgement owed past the watchdog, then the deadlock cycle once the same device waits in readBegin', async () => {
    const { h, pid, addr, sub, c } = await setup(true);
    const k = h.svc.kernel;
    const munmap = k.munmap(pid, addr, PAGE);
    await eventually(() => expect(h.svc.channel.list()[0].pendingAckList().length).toBe(1));
    await new Promise((r) => setTimeout(r, 150));
    const first = h.svc.progress.check();
    expect(first.map((f) => f.kind)).toEqual(['stuck-ack']);
    expect(first[0].message).toMatch(/invalidation #\d+ has waited \d+ ms for dev0's acknowledgement/);
    // The device's fault path now waits in readBegin behind the invalidation it has not answered.
    void c.readBegin(sub).catch(() => undefined);
    await eventually(() => expect(h.svc.channel.list()[0].progress.waits.size).toBe(1));
    await new Promise((r) => setTimeout(r, 150));
    const second = h.svc.progress.check();
    const dl = second.find((f) => f.kind === 'deadlock');
    expect(dl, JSON.stringify(second)).toBeDefined();
    expect(dl!.graph!.cycle).toHaveLength(4);
    expect(dl!.message).toMatch(/invalidation #\d+ \(UNMAP from munmap.*-> device dev0 -\[owes an acknowledgement while its own fault waits in readBegin.*inferred\]-> dev0 readBegin .*-> invalidation #\d+/);
    // Reported once, and served with the graph.
    expect(h.svc.progress.check().filter((f) => f.kind === 'deadlock')).toHaveLength(0);
    const r = await h.app.inject({ method: 'GET', url: '/v1/progress' });
    expect(r.statusCode).toBe(200);
    const body = r.json();
    expect(body.findings.map((f: { kind: string }) => f.kind)).toEqual(expect.arrayContaining(['stuck-ack', 'deadlock']));
    expect(body.graph.cycle).toHaveLength(4);
    // The client goes away: the kernel goes on, and nothing is stuck any more.
    await c.close();
    await munmap;
    expect(h.svc.progress.graph().edges).toHaveLength(0);
  });

  it('reports a fault answered EBUSY past its retry budget while invalidations keep overlapping it, naming their origin', async () => {
    const { h, pid, addr, sub, c } = await setup(false);
    const k = h.svc.kernel;
    for (let i = 0; i < 3; i++) {
      const seq = await c.readBegin(sub);
      // The invalidation lands between readBegin and the range fault: the fault must retry.
      await k.mprotect(pid, addr, PAGE, i % 2 ? PROT.READ | PROT.WRITE : PROT.READ);
      const r = await c.rangeFault(sub, seq, addr, addr + PAGE, { defaultFlags: 0x80000000, mask: 0, ownerSelf: false });
      expect(r.error).not.toBe(0);
    }
    const f = h.svc.progress.check();
    expect(f.map((x) => x.kind)).toEqual(['livelock']);
    expect(f[0].message).toMatch(/answered EBUSY 3 times in a row: invalidations from mprotect kept overlapping it/);
    // A fault that gets through resets the budget.
    const seq = await c.readBegin(sub);
    expect((await c.rangeFault(sub, seq, addr, addr + PAGE, { defaultFlags: 0x80000000, mask: 0, ownerSelf: false })).error).toBe(0);
    expect(h.svc.channel.list()[0].progress.retries.get(sub)!.consecutive).toBe(0);
  });
});
