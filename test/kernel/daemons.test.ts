import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DAEMON_NAMES } from '../../src/kernel/activity/daemons.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
let k: Kernel;
afterEach(() => k?.daemons.stopAll());

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('kernel daemons', () => {
  it('lists every daemon, rejects bad rates, and runs each activity in the background', async () => {
    k = new Kernel({ memoryBytes: 8 * MiB, swapBytes: 16 * MiB });
    expect(k.daemons.list().map((d) => d.name)).toEqual([...DAEMON_NAMES]);
    expect(() => k.daemons.set('kswapd', -1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => k.daemons.set('nope' as 'kswapd', 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));

    const p = k.createProcess('d');
    // Fill memory past the low watermark: kswapd must bring it back up.
    const big = await k.mmap(p.pid, { length: 7.75 * MiB, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, big, new Uint8Array(7.75 * MiB).fill(3));
    expect(k.mem.freeFrames()).toBeLessThan(k.mem.ramFrames * 0.05);
    k.daemons.set('kswapd', 200);
    await until(() => k.mem.freeFrames() >= k.mem.ramFrames * 0.05);
    expect(k.stats.swapOuts).toBeGreaterThan(0);
    k.daemons.set('kswapd', 0);

    // ksmd merges identical pages of a mergeable area.
    const m = await k.mmap(p.pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, m, new Uint8Array(4 * PAGE).fill(7));
    await k.madvise(p.pid, m, 4 * PAGE, 'mergeable');
    k.daemons.set('ksmd', 200);
    await until(() => k.stats.ksmMerged >= 3);
    expect([...(await k.read(p.pid, m + 3 * PAGE, 4))]).toEqual([7, 7, 7, 7]);

    // The flusher writes back dirty shared file pages.
    const f = k.createFile(2 * PAGE);
    const fm = await k.mmap(p.pid, { length: 2 * PAGE, prot: PROT.READ | PROT.WRITE, shared: true, file: { id: f.id } });
    await k.write(p.pid, fm, new Uint8Array([42]));
    k.daemons.set('flusher', 200);
    await until(() => f.disk.get(0)?.[0] === 42);

    // NUMA balancing turns mapped pages into hinting entries.
    k.daemons.set('numa', 200);
    await until(() => k.pagemap(p.pid, m, 1)[0].protnone || k.daemons.list().find((d) => d.name === 'numa')!.runs > 3);
    expect(k.daemons.list().find((d) => d.name === 'numa')!.runs).toBeGreaterThan(0);

    k.daemons.stopAll();
    const runs = k.daemons.list().map((d) => d.runs);
    await new Promise((r) => setTimeout(r, 50));
    expect(k.daemons.list().map((d) => d.runs)).toEqual(runs);
    expect(k.audit().problems).toEqual([]);
  });

  it('khugepaged collapses a recently used THP area; kcompactd frees a 2 MiB block', async () => {
    k = new Kernel({ memoryBytes: 16 * MiB });
    const p = k.createProcess('t');
    const a = await k.mmap(p.pid, { length: 2 * MiB, prot: PROT.READ | PROT.WRITE, hugepage: true });
    // Fault it in with 4 KiB pages by making huge pages unavailable, then let khugepaged run.
    await k.madvise(p.pid, a, 2 * MiB, 'nohugepage');
    await k.write(p.pid, a, new Uint8Array(2 * MiB).fill(1));
    expect(k.pagemap(p.pid, a, 1)[0].huge).toBe(false);
    await k.madvise(p.pid, a, 2 * MiB, 'hugepage');
    k.daemons.set('khugepaged', 200);
    await until(() => k.pagemap(p.pid, a, 1)[0].huge);
    expect([...(await k.read(p.pid, a + MiB, 2))]).toEqual([1, 1]);
    k.daemons.set('kcompactd', 100);
    await until(() => k.daemons.list().find((d) => d.name === 'kcompactd')!.runs > 0);
    expect(k.audit().problems).toEqual([]);
  });
});
