import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { OOM_REAPER } from '../../src/kernel/activity/oom.js';
import { MmuIntervalNotifier, MmuNotifier } from '../../src/notifier/subscriptions.js';
import { rangeBlockable } from '../../src/notifier/range.js';
import { describeRange, type Call } from '../helpers/recorder.js';

const PAGE = 4096;
const saved = { ...OOM_REAPER };
beforeEach(() => {
  OOM_REAPER.retryDelayMs = 1;
  OOM_REAPER.maxRetries = 5;
});
afterEach(() => Object.assign(OOM_REAPER, saved));

async function victim(k: Kernel): Promise<{ pid: number; addr: number }> {
  const p = k.createProcess();
  const addr = await k.mmap(p.pid, { length: 8 * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, addr, new Uint8Array(8 * PAGE).fill(9));
  return { pid: p.pid, addr };
}

function presentPages(k: Kernel, pid: number, addr: number): number {
  return k.pagemap(pid, addr, 8).filter((e) => e.present).length;
}

describe('the OOM reaper (the one non-blockable caller)', () => {
  it('leaves the PTEs of a VMA untouched when an interval subscriber refuses, and retries later', async () => {
    const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
    const { pid, addr } = await victim(k);
    const calls: Call[] = [];
    const refuse = new MmuIntervalNotifier(
      { invalidate: (_s, r) => (calls.push({ op: 'invalidate', ...describeRange(r) }), rangeBlockable(r)) },
      { label: 'refusing' },
    );
    k.process(pid).mm.notifier.insertInterval(refuse, addr, 8 * PAGE);
    const before = k.process(pid).mm.rss;
    const res = await k.oomReap(pid);
    expect(res.complete).toBe(false);
    expect(res.attempts).toBe(OOM_REAPER.maxRetries);
    expect(presentPages(k, pid, addr)).toBe(8);
    expect(k.process(pid).mm.rss).toBe(before);
    expect(calls).toEqual(
      Array.from({ length: OOM_REAPER.maxRetries }, () => ({ op: 'invalidate', event: 'UNMAP', start: addr, end: addr + 8 * PAGE, blockable: false, owner: null })),
    );
    const n = k.process(pid).mm.notifier;
    expect(n.activeInvalidateRanges).toBe(0);
    expect(n.invalidateSeq % 2).toBe(0);
    expect(k.stats.oomReapRetries).toBe(OOM_REAPER.maxRetries);
    const events = k.stats.invalidationsRefused;
    expect(events).toBe(OOM_REAPER.maxRetries);
    expect(k.audit().problems).toEqual([]);
  });

  it('calls end only on the list subscribers whose start succeeded', async () => {
    const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
    const { pid, addr } = await victim(k);
    const log: string[] = [];
    const good = new MmuNotifier(
      {
        invalidateRangeStart: (_s, r) => (log.push(`good:start:${rangeBlockable(r)}`), 0),
        invalidateRangeEnd: () => void log.push('good:end'),
      },
      { label: 'good' },
    );
    const bad = new MmuNotifier({ invalidateRangeStart: (_s, r) => (log.push('bad:start'), rangeBlockable(r) ? 0 : -11) }, { label: 'bad' });
    const mm = k.process(pid).mm;
    mm.notifier.register(good);
    mm.notifier.register(bad);
    OOM_REAPER.maxRetries = 2;
    const res = await k.oomReap(pid);
    expect(res.complete).toBe(false);
    expect(log).toEqual(['bad:start', 'good:start:false', 'good:end', 'bad:start', 'good:start:false', 'good:end']);
    expect(presentPages(k, pid, addr)).toBe(8);
  });

  it('reaps once the subscriber stops refusing, freeing the memory', async () => {
    const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
    const { pid, addr } = await victim(k);
    let refusals = 2;
    const sub = new MmuIntervalNotifier(
      {
        invalidate: (s, r, seq) => {
          if (!rangeBlockable(r) && refusals-- > 0) return false;
          s.setSeq(seq);
          return true;
        },
      },
      { label: 'flaky' },
    );
    k.process(pid).mm.notifier.insertInterval(sub, addr, 8 * PAGE);
    const free = k.mem.freeFrames();
    const res = await k.oomReap(pid);
    expect(res).toMatchObject({ complete: true, attempts: 3 });
    expect(presentPages(k, pid, addr)).toBe(0);
    expect(k.mem.freeFrames()).toBe(free + 8);
    expect(k.audit().problems).toEqual([]);
  });

  it('the OOM killer picks the largest process, reaps it and lets it exit', async () => {
    const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
    const small = await victim(k);
    const big = k.createProcess('big');
    const a = await k.mmap(big.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(big.pid, a, new Uint8Array(64 * PAGE).fill(1));
    expect(await k.oomKill()).toBe(true);
    for (let i = 0; i < 50 && k.findProcess('big'); i++) await new Promise((r) => setTimeout(r, 1));
    expect(k.findProcess('big')).toBeUndefined();
    expect(k.findProcess(small.pid)).toBeDefined();
    expect(k.stats.oomKills).toBe(1);
    expect(k.audit().problems).toEqual([]);
  });
});
