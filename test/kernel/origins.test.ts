/**
 * Provenance (issue #9): the origin each kernel path puts on its invalidations, where the choice is
 * not obvious from the operation's name.
 */
import { describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { recordingInterval, PAGE, MiB } from '../helpers/recorder.js';

const RW = PROT.READ | PROT.WRITE;

async function setup() {
  const k = new Kernel({ memoryBytes: 16 * MiB, bootId: 91 });
  const p = k.createProcess('o');
  const rec = recordingInterval(p.mm.notifier, 0, 2 ** 47);
  return { k, p, calls: rec.calls };
}

describe('invalidation origins', () => {
  it('the LRU reclaims anonymous pages as swap and file pages as reclaim', async () => {
    const { k, p, calls } = await setup();
    const anon = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
    await k.write(p.pid, anon, new Uint8Array(4 * PAGE).fill(1));
    const f = k.createFile(4 * PAGE);
    const file = await k.mmap(p.pid, { length: 4 * PAGE, prot: PROT.READ, file: { id: f.id } });
    await k.read(p.pid, file, 4 * PAGE);
    // Not referenced twice: reclaim takes them on the second look at the latest.
    await k.clearRefs(p.pid, 'referenced');
    for (let i = 0; i < 4; i++) await k.reclaim(64);
    const origin = (lo: number) => new Set(calls.filter((c) => c.event === 'CLEAR' && (c.start as number) >= lo && (c.start as number) < lo + 4 * PAGE).map((c) => c.origin));
    expect(origin(anon)).toEqual(new Set(['swap']));
    expect(origin(file)).toEqual(new Set(['reclaim']));
  });

  it('MADV_PAGEOUT and MADV_COLLAPSE carry madvise, the syscall', async () => {
    const { k, p, calls } = await setup();
    const a = await k.mmap(p.pid, { length: 4 * MiB, prot: RW });
    const h = Math.ceil(a / (2 * MiB)) * 2 * MiB;
    await k.write(p.pid, h, new Uint8Array(8 * PAGE).fill(2));
    await k.madvise(p.pid, h, 2 * MiB, 'collapse');
    expect(calls.map((c) => [c.event, c.start, c.end, c.origin])).toEqual([['CLEAR', h, h + 2 * MiB, 'madvise']]);
    calls.length = 0;
    const other = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
    await k.write(p.pid, other, new Uint8Array(2 * PAGE).fill(4));
    calls.length = 0;
    await k.madvise(p.pid, other, 2 * PAGE, 'pageout');
    expect(calls.map((c) => [c.event, c.start, c.origin])).toEqual([
      ['CLEAR', other, 'madvise'],
      ['CLEAR', other + PAGE, 'madvise'],
    ]);
  });
});
