/**
 * Table pages share physical memory with data, so a device that writes after acknowledging an
 * invalidation can land a stray write in a frame that was freed and reused as a table page (the
 * chaos soak's ack-before-quiesce device did, and the audit died with a RangeError). The audit must
 * report such an entry, teardown must not follow it, and a fault through it must not kill the
 * kernel: as the kernel's pmd_clear_bad does, the bad entry is reported, cleared, and the fault
 * goes on with a fresh table.
 */
import { describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { PTE, PTE_MAX_PFN } from '../../src/kernel/layout.js';
import { mkPte, ptePfn } from '../../src/kernel/pte.js';

const PAGE = 4096;

describe('a table entry that points outside memory (a stray write into a table page)', () => {
  function corrupted(): { k: Kernel; pid: number } {
    const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
    const p = k.createProcess('victim');
    const pt = p.mm.pt;
    const outside = k.mem.totalFrames + 7;
    expect(outside).toBeLessThanOrEqual(PTE_MAX_PFN);
    const e = mkPte(outside, PTE.PRESENT | PTE.TABLE);
    expect(ptePfn(e)).toBe(outside);
    // An unused top-level slot (the last one: user mappings here sit far below it).
    const idx = pt.pgd * (PAGE / 4) + 511;
    expect(pt.load(idx)).toBe(0);
    pt.store(idx, e);
    return { k, pid: p.pid };
  }

  it('the audit reports it instead of throwing', async () => {
    const { k, pid } = corrupted();
    const a = await k.mmap(pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(pid, a, new Uint8Array(4 * PAGE).fill(1));
    const report = k.audit();
    expect(report.problems.some((m) => m.includes('outside memory') && m.includes(`pid ${pid}`))).toBe(true);
  });

  it('walks and teardown skip it: munmap over it and exit still work', async () => {
    const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
    const p = k.createProcess('victim');
    const base = 0x40000000; // 1 GiB aligned: base and base + 2 MiB share a PMD table
    const a = await k.mmap(p.pid, { addr: base, fixed: true, length: 4 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(4 * PAGE).fill(2));
    const pt = p.mm.pt;
    const pmd = pt.pmdIndex(base + 2 * 1024 * 1024);
    expect(pmd).toBeGreaterThanOrEqual(0);
    expect(pt.load(pmd)).toBe(0);
    pt.store(pmd, mkPte(k.mem.totalFrames + 3, PTE.PRESENT | PTE.TABLE));
    // The unmap walks [base, base + 4 MiB), across the corrupt PMD entry.
    await k.munmap(p.pid, base, 4 * 1024 * 1024);
    expect(k.audit().problems.some((m) => m.includes('outside memory'))).toBe(true);
    await k.exitProcess(p);
    expect(k.liveProcesses().some((q) => q.pid === p.pid)).toBe(false);
  });

  it('a fault through it replaces the bad entry with a fresh table and the access succeeds', async () => {
    const k = new Kernel({ memoryBytes: 16 * 1024 * 1024 });
    const p = k.createProcess('victim');
    const base = 0x40000000;
    const a = await k.mmap(p.pid, { addr: base, fixed: true, length: 4 * 1024 * 1024, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(4 * PAGE).fill(3)); // the PMD table exists now
    const pt = p.mm.pt;
    const far = base + 2 * 1024 * 1024; // same PMD table, its own (still missing) PTE table
    const pmd = pt.pmdIndex(far);
    expect(pt.load(pmd)).toBe(0);
    pt.store(pmd, mkPte(k.mem.totalFrames + 5, PTE.PRESENT | PTE.TABLE));
    // Lookups treat it as missing instead of indexing outside memory.
    expect(pt.lookup(far)).toBe(0);
    // A CPU store faults through it: the entry is replaced, the data lands and reads back.
    await k.write(p.pid, far, new Uint8Array(PAGE).fill(9));
    expect((await k.read(p.pid, far, PAGE)).every((b) => b === 9)).toBe(true);
    expect(ptePfn(pt.load(pmd))).toBeLessThan(k.mem.totalFrames);
    expect(k.stats.badTableEntries).toBe(1);
    // The earlier pages are untouched, and the tables are consistent again.
    expect((await k.read(p.pid, a, 4 * PAGE)).every((b) => b === 3)).toBe(true);
    expect(k.audit().problems.filter((m) => m.includes('outside memory'))).toEqual([]);
    await k.exitProcess(p);
  });
});
