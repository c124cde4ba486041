/**
 * Section 7 of shared/reference/kernel-mmu-notifier.md ("Which kernel operation fires what"), row
 * by row: every operation runs on a fresh Kernel with recording subscribers, and the test asserts
 * the exact calls they receive ({op, event, start, end, blockable, owner}).
 *
 * Not covered (not modelled): hugetlbfs, userfaultfd / UFFDIO_*, uprobes, PAGEMAP_SCAN, hwpoison,
 * memory hotplug, longterm pin, file truncation / hole punch.
 *
 * Where the kernel and the emulator differ, the test asserts the kernel; where the emulator
 * documents a deliberate approximation, the test asserts the emulator and says so.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT, type KernelConfig } from '../../src/kernel/kernel.js';
import { BRK_BASE } from '../../src/kernel/mm.js';
import { PUD_SIZE, TASK_SIZE } from '../../src/kernel/layout.js';
import { OOM_REAPER } from '../../src/kernel/activity/oom.js';
import { HMM_PFN } from '../../src/kernel/hmm.js';
import { recordingInterval, recordingMm, fill, MiB, PAGE } from '../helpers/recorder.js';
import {
  as,
  cfy,
  inv,
  pageInv,
  pagePair,
  pair,
  sharedLog,
  startOnly,
  take,
  testYoung,
  type Ev,
} from '../helpers/event-table.js';

const RW = PROT.READ | PROT.WRITE;
const RO = PROT.READ;
const ULM = 'ULONG_MAX';
const THP = 2 * MiB;

function boot(cfg: Partial<KernelConfig> = {}, young = false) {
  const k = new Kernel({ memoryBytes: 32 * MiB, ...cfg });
  const p = k.createProcess();
  const m = recordingMm({ young });
  p.mm.notifier.register(m.sub);
  /** Interval subscriber over the whole user address space. */
  const all = recordingInterval(p.mm.notifier, 0, TASK_SIZE);
  return { k, p, pid: p.pid, mm: m.calls, iv: all.calls };
}

/** The interval view of a whole-mm sequence: one invalidate per start, no ends. */
function invsOf(evs: Ev[]): Ev[] {
  return evs.filter((e) => e.op === 'start').map((e) => ({ ...e, op: 'invalidate' as const }));
}

function pages(n: number): number {
  return n * PAGE;
}

// ------------------------------------------------------------------------------------------------
describe('populating never notifies', () => {
  it('demand-zero read fault maps the zero page without a notification', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    const data = await k.read(pid, a, pages(4));
    expect(data.every((b) => b === 0)).toBe(true);
    expect(k.pagemap(pid, a, 4).every((e) => e.present && e.zeroPage)).toBe(true);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('write fault on a none PTE allocates an anonymous page without a notification', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 1));
    expect(k.pagemap(pid, a, 4).every((e) => e.present && e.kind === 'anon' && e.write)).toBe(true);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('file read faults (shared and private mappings) and a private write to a never-mapped file page (do_cow_fault) do not notify', async () => {
    const { k, pid, mm, iv } = boot();
    const f = k.createFile(pages(4));
    const content = fill(pages(4), 2);
    await k.fileWrite(f.id, 0, content);
    const s = await k.mmap(pid, { length: pages(4), prot: RO, shared: true, file: { id: f.id } });
    const pr = await k.mmap(pid, { length: pages(4), prot: RW, file: { id: f.id } });
    expect(Buffer.from(await k.read(pid, s, pages(4))).equals(Buffer.from(content))).toBe(true);
    expect(Buffer.from(await k.read(pid, pr, pages(2))).equals(Buffer.from(content.subarray(0, pages(2))))).toBe(true);
    // Page 3 of the private mapping was never mapped: the write fault fills a none PTE with an
    // anonymous copy (do_cow_fault), which is populating.
    await k.write(pid, pr + pages(3), new Uint8Array([9]));
    expect(k.pagemap(pid, pr + pages(3), 1)[0].kind).toBe('anon');
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('MAP_POPULATE does not notify', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(8), prot: RW, populate: true });
    expect(k.pagemap(pid, a, 8).every((e) => e.present && e.kind === 'anon')).toBe(true);
    const f = k.createFile(pages(2));
    const s = await k.mmap(pid, { length: pages(2), prot: RW, shared: true, file: { id: f.id }, populate: true });
    expect(k.pagemap(pid, s, 2).every((e) => e.present)).toBe(true);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('swap-in after MADV_PAGEOUT does not notify', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    const data = fill(pages(2), 3);
    await k.write(pid, a, data);
    await k.madvise(pid, a, pages(2), 'pageout');
    expect(k.pagemap(pid, a, 2).every((e) => e.swapped)).toBe(true);
    take(mm);
    take(iv);
    expect(Buffer.from(await k.read(pid, a, pages(2))).equals(Buffer.from(data))).toBe(true);
    expect(k.pagemap(pid, a, 2).every((e) => e.present && !e.swapped)).toBe(true);
    // A write after the read-only swap-in reuses the exclusive page: no notification either.
    await k.write(pid, a, new Uint8Array([1]));
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('swap-in after reclaim does not notify', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    const data = fill(pages(2), 4);
    await k.write(pid, a, data);
    await k.clearRefs(pid, 'referenced');
    const r = await k.reclaim(2);
    expect(r.swappedOut).toBe(2);
    expect(k.pagemap(pid, a, 2).every((e) => e.swapped)).toBe(true);
    take(mm);
    take(iv);
    await k.write(pid, a + pages(1), fill(PAGE, 5)); // write fault on a swap entry
    expect(Buffer.from(await k.read(pid, a, PAGE)).equals(Buffer.from(data.subarray(0, PAGE)))).toBe(true);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('mremap growing in place, then touching the new pages, does not notify', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 6));
    const b = await k.mremap(pid, { addr: a, length: pages(2), newLength: pages(4) });
    expect(b).toBe(a);
    await k.write(pid, a, fill(pages(4), 7));
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('brk growth and touching the heap do not notify', async () => {
    const { k, pid, mm, iv } = boot();
    await k.brk(pid, BRK_BASE + pages(4));
    await k.write(pid, BRK_BASE, fill(pages(4), 8));
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('a device read fault through hmm_range_fault (FAULT_FLAG_REMOTE) does not notify', async () => {
    const { k, p, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(2), 9));
    const dev = recordingInterval(p.mm.notifier, a, pages(4));
    const seq = await dev.sub.readBegin();
    const ret = await k.rangeFault(pid, {
      notifier: dev.sub,
      notifierSeq: seq,
      start: a,
      end: a + pages(4),
      hmmPfns: new Uint32Array(4),
      defaultFlags: HMM_PFN.REQ_FAULT,
      pfnFlagsMask: 0,
      devPrivateOwner: null,
    });
    expect(ret).toBe(0);
    expect(k.pagemap(pid, a, 4).every((e) => e.present)).toBe(true);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
    expect(take(dev.calls)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('munmap and friends (unmap_vmas): UNMAP, one pair over the caller range', () => {
  it('one UNMAP pair over the whole munmap range, across VMAs and holes', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(8), prot: RW });
    await k.write(pid, a, fill(pages(8), 10));
    await k.munmap(pid, a + pages(2), pages(2));
    expect(take(mm)).toEqual(pair('UNMAP', a + pages(2), a + pages(4)));
    expect(take(iv)).toEqual([inv('UNMAP', a + pages(2), a + pages(4))]);
    // Two VMAs left, with a hole between them: still a single pair over the caller's range.
    await k.munmap(pid, a, pages(8));
    expect(take(mm)).toEqual(pair('UNMAP', a, a + pages(8)));
    expect(take(iv)).toEqual([inv('UNMAP', a, a + pages(8))]);
  });

  it('munmap of a mapped but never touched VMA still sends UNMAP (unmap_vmas is unconditional)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.munmap(pid, a, pages(4));
    expect(take(mm)).toEqual(pair('UNMAP', a, a + pages(4)));
    expect(take(iv)).toEqual([inv('UNMAP', a, a + pages(4))]);
  });

  it('munmap of a range with no mapping sends nothing', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 11));
    await k.munmap(pid, 0x100000000000, pages(16));
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('munmap of part of a PMD-mapped THP: CLEAR over the aligned 2 MiB first (split), then UNMAP', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW, hugepage: true });
    expect(a % THP).toBe(0);
    await k.write(pid, a, new Uint8Array([1]));
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(true);
    await k.munmap(pid, a + MiB, pages(4));
    const want = [...pair('CLEAR', a, a + THP), ...pair('UNMAP', a + MiB, a + MiB + pages(4))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(false);
  });

  it('munmap splitting a small-page VMA that covers an aligned 2 MiB: the kernel still opens CLEAR over that 2 MiB, then UNMAP', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW }); // 2 MiB aligned, 4 KiB pages
    expect(a % THP).toBe(0);
    await k.write(pid, a, new Uint8Array([1])); // page tables exist down to the PMD
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(false);
    take(mm);
    take(iv);
    await k.munmap(pid, a + MiB, pages(4));
    // Kernel (mm/vma.c __split_vma -> vma_adjust_trans_huge -> split_huge_pmd_if_needed): the
    // new boundary a + 1 MiB is unaligned and the VMA covers [a, a + 2 MiB), so
    // split_huge_pmd_address runs; mm_find_pmd only needs the PUD present and __split_huge_pmd
    // opens CLEAR [a, a + 2 MiB) before it looks at the PMD. The second split (at the end, on
    // the VMA [a + 1 MiB, a + 2 MiB)) no longer covers the aligned 2 MiB: nothing.
    const want = [...pair('CLEAR', a, a + THP), ...pair('UNMAP', a + MiB, a + MiB + pages(4))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
  });

  it('brk shrink unmaps the tail of the heap: UNMAP [new end, old end)', async () => {
    const { k, pid, mm, iv } = boot();
    await k.brk(pid, BRK_BASE + pages(4));
    await k.write(pid, BRK_BASE, fill(pages(4), 12));
    await k.brk(pid, BRK_BASE + pages(1));
    expect(take(mm)).toEqual(pair('UNMAP', BRK_BASE + pages(1), BRK_BASE + pages(4)));
    expect(take(iv)).toEqual([inv('UNMAP', BRK_BASE + pages(1), BRK_BASE + pages(4))]);
  });

  it('mmap MAP_FIXED over an existing mapping sends UNMAP over the new range; over a free range nothing', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 13));
    await k.mmap(pid, { addr: a + pages(1), length: pages(2), prot: RW, fixed: true });
    expect(take(mm)).toEqual(pair('UNMAP', a + pages(1), a + pages(3)));
    expect(take(iv)).toEqual([inv('UNMAP', a + pages(1), a + pages(3))]);
    await k.mmap(pid, { addr: 0x100000000000, length: pages(2), prot: RW, fixed: true });
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('exit_mmap', () => {
  it('interval subscriber: RELEASE [0, ULONG_MAX] then UNMAP [0, ULONG_MAX); whole-mm subscriber: release once, no UNMAP', async () => {
    const { k, p, pid, mm } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 14));
    const dev = recordingInterval(p.mm.notifier, a, pages(4));
    await k.exit(pid);
    expect(take(dev.calls)).toEqual([inv('RELEASE', 0, ULM), inv('UNMAP', 0, ULM)]);
    expect(take(mm)).toEqual([{ op: 'release' }]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('OOM reaper: UNMAP, non-blockable, one per anonymous or private VMA', () => {
  /** A: private anon (written), B: shared anon (written), C: private file (read), D: shared
   * file (written), E: private anon (never touched). */
  async function victim(k: Kernel, pid: number) {
    const f = k.createFile(pages(2));
    await k.fileWrite(f.id, 0, fill(pages(2), 15));
    const A = await k.mmap(pid, { length: pages(2), prot: RW, name: 'A' });
    await k.write(pid, A, fill(pages(2), 16));
    const B = await k.mmap(pid, { length: pages(2), prot: RW, shared: true, name: 'B' });
    await k.write(pid, B, fill(pages(2), 17));
    const C = await k.mmap(pid, { length: pages(2), prot: RO, file: { id: f.id }, name: 'C' });
    await k.read(pid, C, pages(2));
    const D = await k.mmap(pid, { length: pages(2), prot: RW, shared: true, file: { id: f.id }, name: 'D' });
    await k.write(pid, D, fill(pages(2), 18));
    const E = await k.mmap(pid, { length: pages(2), prot: RW, name: 'E' });
    // Reaped: A, C, E (anonymous or !VM_SHARED), in address order.
    const reaped = [A, C, E].sort((x, y) => x - y);
    return { A, B, C, D, E, reaped };
  }

  it('k.oomReap: one non-blockable UNMAP pair per reaped VMA over [vm_start, vm_end)', async () => {
    const { k, pid, mm, iv } = boot();
    const { reaped } = await victim(k, pid);
    take(mm);
    take(iv);
    const res = await k.oomReap(pid);
    expect(res.complete).toBe(true);
    const want = reaped.flatMap((s) => pair('UNMAP', s, s + pages(2), { blockable: false }));
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
  });

  it('k.oomKill: the reaper pairs, then exit_mmap (release / RELEASE + UNMAP)', async () => {
    const { k, p, pid, mm, iv } = boot();
    const { reaped } = await victim(k, pid);
    take(mm);
    take(iv);
    expect(await k.oomKill(pid)).toBe(true);
    // oomKill lets the victim exit in the background; exit is idempotent, so this awaits it.
    // (Reaping before the exit is the emulator's schedule: in the kernel the reaper runs from a
    // timer and may race the exit.)
    await k.exitProcess(p);
    const reap = reaped.flatMap((s) => pair('UNMAP', s, s + pages(2), { blockable: false }));
    expect(take(mm)).toEqual([...reap, { op: 'release' }]);
    expect(take(iv)).toEqual([...invsOf(reap), inv('RELEASE', 0, ULM), inv('UNMAP', 0, ULM)]);
  });

  describe('a subscriber refusing the non-blockable start', () => {
    const saved = { ...OOM_REAPER };
    afterEach(() => Object.assign(OOM_REAPER, saved));

    it('gets a start per VMA and attempt, no end, and the PTEs stay', async () => {
      OOM_REAPER.maxRetries = 2;
      OOM_REAPER.retryDelayMs = 0;
      const k = new Kernel({ memoryBytes: 32 * MiB });
      const p = k.createProcess();
      const refusing = recordingMm({ refuseNonblock: true });
      p.mm.notifier.register(refusing.sub);
      const A = await k.mmap(p.pid, { length: pages(2), prot: RW, name: 'A' });
      const E = await k.mmap(p.pid, { length: pages(2), prot: RW, name: 'E' });
      await k.write(p.pid, A, fill(pages(2), 19));
      take(refusing.calls);
      const res = await k.oomReap(p.pid);
      expect(res.complete).toBe(false);
      expect(res.attempts).toBe(2);
      const once = [E, A].sort((x, y) => x - y).map((s) => startOnly('UNMAP', s, s + pages(2), { blockable: false }));
      expect(take(refusing.calls)).toEqual([...once, ...once]);
      expect(k.pagemap(p.pid, A, 2).every((e) => e.present)).toBe(true);
    });
  });
});

// ------------------------------------------------------------------------------------------------
describe('mremap', () => {
  const DEST = 0x200000000000; // PMD aligned, the source is not: no PMD realignment of the range

  it('move: UNMAP on the old range (move_page_tables), then a second UNMAP pair (munmap of the old VMA); nothing for the new range', async () => {
    const { k, p, pid, mm } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    const data = fill(pages(4), 20);
    await k.write(pid, a, data);
    const oldIv = recordingInterval(p.mm.notifier, a, pages(4));
    const newIv = recordingInterval(p.mm.notifier, DEST, pages(4));
    const to = await k.mremap(pid, { addr: a, length: pages(4), newLength: pages(4), maymove: true, fixed: true, newAddr: DEST });
    expect(to).toBe(DEST);
    expect(take(mm)).toEqual([...pair('UNMAP', a, a + pages(4)), ...pair('UNMAP', a, a + pages(4))]);
    expect(take(oldIv.calls)).toEqual([inv('UNMAP', a, a + pages(4)), inv('UNMAP', a, a + pages(4))]);
    expect(take(newIv.calls)).toEqual([]);
    // The moved PTEs are present at the destination: reading them does not notify either.
    expect(Buffer.from(await k.read(pid, DEST, pages(4))).equals(Buffer.from(data))).toBe(true);
    expect(take(mm)).toEqual([]);
    expect(take(newIv.calls)).toEqual([]);
  });

  it('move with MREMAP_DONTUNMAP: only the move_page_tables UNMAP pair', async () => {
    const { k, p, pid, mm } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 21));
    const newIv = recordingInterval(p.mm.notifier, DEST, pages(4));
    const to = await k.mremap(pid, {
      addr: a,
      length: pages(4),
      newLength: pages(4),
      maymove: true,
      fixed: true,
      dontunmap: true,
      newAddr: DEST,
    });
    expect(to).toBe(DEST);
    expect(take(mm)).toEqual(pair('UNMAP', a, a + pages(4)));
    expect(take(newIv.calls)).toEqual([]);
    // The old VMA stays, empty: reading it maps zero pages, silently.
    expect((await k.read(pid, a, PAGE)).every((b) => b === 0)).toBe(true);
    expect(take(mm)).toEqual([]);
  });

  it('shrink: UNMAP over the removed tail', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 22));
    expect(await k.mremap(pid, { addr: a, length: pages(4), newLength: pages(1) })).toBe(a);
    expect(take(mm)).toEqual(pair('UNMAP', a + pages(1), a + pages(4)));
    expect(take(iv)).toEqual([inv('UNMAP', a + pages(1), a + pages(4))]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('mprotect (change_protection): PROTECTION_VMA', () => {
  it('populated range: one PROTECTION_VMA pair over the range (per VMA), for downgrades and upgrades', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 23));
    await k.mprotect(pid, a, pages(4), RO);
    expect(take(mm)).toEqual(pair('PROTECTION_VMA', a, a + pages(4)));
    expect(take(iv)).toEqual([inv('PROTECTION_VMA', a, a + pages(4))]);
    await k.mprotect(pid, a + pages(1), pages(2), RW);
    expect(take(mm)).toEqual(pair('PROTECTION_VMA', a + pages(1), a + pages(3)));
    expect(take(iv)).toEqual([inv('PROTECTION_VMA', a + pages(1), a + pages(3))]);
  });

  it('never touched range (no page table in its PUDs) sends nothing', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.mprotect(pid, a, pages(4), RO);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('unchanged protection sends nothing (mprotect_fixup returns early)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 24));
    await k.mprotect(pid, a, pages(4), RW);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('lazy start: the range begins at the first populated PUD', async () => {
    const { k, pid, mm, iv } = boot();
    const X = 2 ** 40 + PUD_SIZE; // a PUD boundary inside one PGD entry
    await k.mmap(pid, { addr: X - pages(4), length: pages(8), prot: RW, fixed: true });
    await k.write(pid, X, new Uint8Array([1])); // only the upper PUD gets page tables
    take(mm);
    take(iv);
    await k.mprotect(pid, X - pages(4), pages(8), RO);
    expect(take(mm)).toEqual(pair('PROTECTION_VMA', X, X + pages(4)));
    expect(take(iv)).toEqual([inv('PROTECTION_VMA', X, X + pages(4))]);
  });

  it('an untouched VMA that shares a populated PUD still gets PROTECTION_VMA (laziness is per PUD)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW, name: 'touched' });
    const b = await k.mmap(pid, { length: pages(4), prot: RW, name: 'untouched' });
    expect(Math.floor(a / PUD_SIZE)).toBe(Math.floor(b / PUD_SIZE));
    await k.write(pid, a, fill(pages(4), 25));
    take(mm);
    take(iv);
    await k.mprotect(pid, b, pages(4), RO);
    expect(take(mm)).toEqual(pair('PROTECTION_VMA', b, b + pages(4)));
    expect(take(iv)).toEqual([inv('PROTECTION_VMA', b, b + pages(4))]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('clear_refs', () => {
  it('soft-dirty ("4"): one SOFT_DIRTY pair over [0, ULONG_MAX)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 26));
    await k.clearRefs(pid, 'soft-dirty');
    expect(take(mm)).toEqual(pair('SOFT_DIRTY', 0, ULM));
    expect(take(iv)).toEqual([inv('SOFT_DIRTY', 0, ULM)]);
  });

  it('soft-dirty notifies even when nothing is mapped', async () => {
    const { k, pid, mm, iv } = boot();
    await k.clearRefs(pid, 'soft-dirty');
    expect(take(mm)).toEqual(pair('SOFT_DIRTY', 0, ULM));
    expect(take(iv)).toEqual([inv('SOFT_DIRTY', 0, ULM)]);
  });

  it('referenced ("1") sends nothing (no invalidation, no young callback)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 27));
    await k.clearRefs(pid, 'referenced');
    expect(k.pagemap(pid, a, 4).some((e) => e.young)).toBe(false);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('fork (copy_page_range): PROTECTION_PAGE on the parent, whole VMA, COW VMAs with anonymous pages', () => {
  it('private VMAs holding anonymous pages are notified over the whole VMA; shared, zero-page-only and untouched ones are not', async () => {
    const { k, pid, mm, iv } = boot();
    const f = k.createFile(pages(4));
    await k.fileWrite(f.id, 0, fill(pages(4), 28));
    const A = await k.mmap(pid, { length: pages(4), prot: RW, name: 'A' }); // private anon, written
    await k.write(pid, A, fill(pages(2), 29));
    const B = await k.mmap(pid, { length: pages(4), prot: RW, shared: true, name: 'B' }); // shared anon
    await k.write(pid, B, fill(pages(4), 30));
    const C = await k.mmap(pid, { length: pages(4), prot: RW, name: 'C' }); // zero pages only
    await k.read(pid, C, pages(4));
    const D = await k.mmap(pid, { length: pages(4), prot: RW, file: { id: f.id }, name: 'D' }); // private file, COWed
    await k.read(pid, D, pages(4));
    await k.write(pid, D + pages(1), new Uint8Array([1]));
    await k.mmap(pid, { length: pages(4), prot: RW, name: 'E' }); // never touched
    const S = await k.mmap(pid, { length: pages(4), prot: RW, shared: true, file: { id: f.id }, name: 'S' });
    await k.write(pid, S, new Uint8Array([2]));
    take(mm);
    take(iv);
    const child = await k.fork(pid);
    const want = [A, D].sort((x, y) => x - y).flatMap((s) => pair('PROTECTION_PAGE', s, s + pages(4)));
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    // The child starts without subscriptions.
    expect(child.mm.notifier.subscriberCount).toBe(0);
  });

  it('COW after fork: a write by either side gives CLEAR one page in the writer\'s mm; the last user reuses silently; shared mappings never COW', async () => {
    const { k, pid, mm, iv } = boot();
    const A = await k.mmap(pid, { length: pages(2), prot: RW, name: 'A' });
    await k.write(pid, A, fill(pages(2), 31));
    const B = await k.mmap(pid, { length: pages(1), prot: RW, shared: true, name: 'B' });
    await k.write(pid, B, fill(pages(1), 32));
    const child = await k.fork(pid);
    take(mm);
    take(iv);
    const cm = recordingMm();
    child.mm.notifier.register(cm.sub);
    const civ = recordingInterval(child.mm.notifier, 0, TASK_SIZE);

    await k.write(child.pid, A, new Uint8Array([1])); // child breaks COW on page 0
    expect(take(cm.calls)).toEqual(pagePair('CLEAR', A));
    expect(take(civ.calls)).toEqual([pageInv('CLEAR', A)]);
    expect(take(mm)).toEqual([]);

    await k.write(pid, A + pages(1), new Uint8Array([2])); // parent breaks COW on page 1
    expect(take(mm)).toEqual(pagePair('CLEAR', A + pages(1)));
    expect(take(iv)).toEqual([pageInv('CLEAR', A + pages(1))]);
    expect(take(cm.calls)).toEqual([]);

    // Each original page now has a single user left: wp_page_reuse, no notification.
    await k.write(pid, A, new Uint8Array([3]));
    await k.write(child.pid, A + pages(1), new Uint8Array([4]));
    // Shared mapping: the child faults it in (populating) and writes the shared page.
    await k.write(child.pid, B, new Uint8Array([5]));
    expect((await k.read(pid, B, 1))[0]).toBe(5);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
    expect(take(cm.calls)).toEqual([]);
    expect(take(civ.calls)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('MADV_DONTFORK (VM_DONTCOPY): fork leaves the VMA out, without copying or notifying it', () => {
  it('splits the VMA at the range, keeps it out of the child and out of the fork\'s PROTECTION_PAGE (no COW for its pages after); MADV_DOFORK undoes it', async () => {
    const { k, p, pid, mm, iv } = boot();
    const A = await k.mmap(pid, { length: pages(4), prot: RW, name: 'A' });
    await k.write(pid, A, fill(pages(4), 40));
    const vmas = () => p.mm.vmas.overlapping(A, A + pages(4)).map((v) => [v.start - A, v.end - A, v.dontFork]);
    await k.madvise(pid, A + pages(1), pages(2), 'dontfork');
    expect(vmas()).toEqual([
      [0, pages(1), false],
      [pages(1), pages(3), true],
      [pages(3), pages(4), false],
    ]);
    // No notification for the advice itself: it changes no PTE.
    expect(take(mm)).toEqual([]);
    take(iv);
    const child = await k.fork(pid);
    const want = [...pair('PROTECTION_PAGE', A, A + pages(1)), ...pair('PROTECTION_PAGE', A + pages(3), A + pages(4))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    expect(child.mm.vmas.find(A + pages(1))).toBeNull();
    expect(child.mm.vmas.find(A)).not.toBeNull();
    // The parent's page a device would be writing was never shared: writing it COWs nothing.
    const before = k.pagemap(pid, A + pages(1), 1)[0].pfn;
    await k.write(pid, A + pages(1), new Uint8Array([1]));
    expect(take(mm)).toEqual([]);
    expect(k.pagemap(pid, A + pages(1), 1)[0].pfn).toBe(before);
    // A copied page does COW.
    await k.write(pid, A, new Uint8Array([1]));
    expect(take(mm)).toEqual(pagePair('CLEAR', A));
    // DOFORK: one VMA again, copied (and notified) whole by the next fork.
    await k.madvise(pid, A + pages(1), pages(2), 'dofork');
    expect(vmas()).toEqual([[0, pages(4), false]]);
    take(iv);
    await k.fork(pid);
    expect(take(mm)).toEqual(pair('PROTECTION_PAGE', A, A + pages(4)));
    expect(k.audit().problems).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('write-protect faults: wp_page_copy (CLEAR, one page) vs wp_page_reuse (nothing)', () => {
  it('writing to a zero page (after a read fault) gives CLEAR one page', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.read(pid, a, pages(4));
    await k.write(pid, a + pages(2), new Uint8Array([1]));
    expect(take(mm)).toEqual(pagePair('CLEAR', a + pages(2)));
    expect(take(iv)).toEqual([pageInv('CLEAR', a + pages(2))]);
  });

  it('writing to a private file page that was read gives CLEAR one page', async () => {
    const { k, pid, mm, iv } = boot();
    const f = k.createFile(pages(2));
    await k.fileWrite(f.id, 0, fill(pages(2), 33));
    const a = await k.mmap(pid, { length: pages(2), prot: RW, file: { id: f.id } });
    await k.read(pid, a, pages(2));
    await k.write(pid, a + pages(1), new Uint8Array([1]));
    expect(take(mm)).toEqual(pagePair('CLEAR', a + pages(1)));
    expect(take(iv)).toEqual([pageInv('CLEAR', a + pages(1))]);
    expect(k.fileRead(f.id, PAGE, 1)[0]).toBe(fill(pages(2), 33)[PAGE]); // the file is untouched
  });

  it('writing to an exclusive anonymous page write-protected by clear_refs reuses it: nothing', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 34));
    await k.clearRefs(pid, 'soft-dirty');
    expect(k.pagemap(pid, a, 2).some((e) => e.write)).toBe(false);
    take(mm);
    take(iv);
    await k.write(pid, a, fill(pages(2), 35));
    expect(k.pagemap(pid, a, 2).every((e) => e.write && e.softDirty)).toBe(true);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('madvise', () => {
  async function twoVmas(k: Kernel, pid: number) {
    // Top-down placement: the second mapping ends where the first begins.
    const hi = await k.mmap(pid, { length: pages(2), prot: RW, name: 'hi' });
    const lo = await k.mmap(pid, { length: pages(2), prot: RW, name: 'lo' });
    expect(lo + pages(2)).toBe(hi);
    return { lo, hi };
  }

  it('DONTNEED: one CLEAR pair per VMA part, even where nothing is mapped', async () => {
    const { k, pid, mm, iv } = boot();
    const { lo, hi } = await twoVmas(k, pid);
    await k.write(pid, hi, fill(pages(2), 36)); // lo stays empty
    take(mm);
    take(iv);
    await k.madvise(pid, lo + pages(1), pages(2), 'dontneed');
    const want = [...pair('CLEAR', lo + pages(1), hi), ...pair('CLEAR', hi, hi + pages(1))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    expect(k.pagemap(pid, hi, 2).map((e) => e.present)).toEqual([false, true]);
  });

  it('DONTNEED on part of a THP: the 2 MiB split CLEAR nests inside the zap CLEAR', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW, hugepage: true });
    await k.write(pid, a, new Uint8Array([1]));
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(true);
    take(mm);
    take(iv);
    await k.madvise(pid, a + pages(8), pages(4), 'dontneed');
    const outer = pair('CLEAR', a + pages(8), a + pages(12));
    const split = pair('CLEAR', a, a + THP);
    const want = [outer[0], ...split, outer[1]];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
  });

  it('FREE: one CLEAR pair per VMA part, even where nothing is mapped', async () => {
    const { k, pid, mm, iv } = boot();
    const { lo, hi } = await twoVmas(k, pid);
    await k.write(pid, lo, fill(pages(2), 37)); // hi stays empty
    take(mm);
    take(iv);
    await k.madvise(pid, lo, pages(4), 'free');
    const want = [...pair('CLEAR', lo, hi), ...pair('CLEAR', hi, hi + pages(2))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
  });

  it('PAGEOUT: CLEAR per page through reclaim (no young callbacks); zero and empty pages are skipped', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(2), 38)); // pages 0, 1 anonymous
    await k.read(pid, a + pages(2), PAGE); // page 2 zero page, page 3 empty
    take(mm);
    take(iv);
    const r = await k.madvise(pid, a, pages(4), 'pageout');
    expect(r.pages).toBe(2);
    const want = [...pagePair('CLEAR', a), ...pagePair('CLEAR', a + pages(1))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    expect(k.pagemap(pid, a, 2).every((e) => e.swapped)).toBe(true);
  });

  it('hugepage, nohugepage, mergeable and willneed change no PTE: nothing', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(4), 39));
    for (const adv of ['hugepage', 'nohugepage', 'mergeable', 'willneed'] as const) await k.madvise(pid, a, pages(4), adv);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('reclaim (try_to_unmap_one): CLEAR per (folio, VMA), after clear_flush_young aging', () => {
  it('pages that are not young: clear_flush_young, then a CLEAR pair, page by page', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 40));
    await k.clearRefs(pid, 'referenced');
    take(mm);
    take(iv);
    const r = await k.reclaim(2);
    expect(r.reclaimed).toBe(2);
    expect(take(mm)).toEqual([
      cfy(a),
      ...pagePair('CLEAR', a),
      cfy(a + pages(1)),
      ...pagePair('CLEAR', a + pages(1)),
    ]);
    // Young callbacks go to whole-mm subscribers only.
    expect(take(iv)).toEqual([pageInv('CLEAR', a), pageInv('CLEAR', a + pages(1))]);
  });

  it('a secondary MMU reporting the page young keeps it: no invalidation at all', async () => {
    const { k, pid, mm, iv } = boot({}, true);
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 41));
    await k.clearRefs(pid, 'referenced');
    take(mm);
    take(iv);
    const r = await k.reclaim(2);
    expect(r.reclaimed).toBe(0);
    const got = take(mm);
    expect(got.length).toBeGreaterThan(0);
    expect(got.filter((c) => c.op !== 'clear_flush_young')).toEqual([]);
    expect(take(iv)).toEqual([]);
    expect(k.pagemap(pid, a, 2).every((e) => e.present)).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------------
describe('migration, compaction, NUMA (try_to_migrate_one): CLEAR per folio', () => {
  it('k.migrate to another node: CLEAR one page per migrated page, remap silent', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    const data = fill(pages(2), 42);
    await k.write(pid, a, data);
    expect(k.pagemap(pid, a, 2).map((e) => e.node)).toEqual([0, 0]);
    take(mm);
    take(iv);
    const r = await k.migrate(pid, a, pages(2), 1);
    expect(r.migrated).toBe(2);
    const want = [...pagePair('CLEAR', a), ...pagePair('CLEAR', a + pages(1))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    expect(k.pagemap(pid, a, 2).map((e) => e.node)).toEqual([1, 1]);
    expect(Buffer.from(await k.read(pid, a, pages(2))).equals(Buffer.from(data))).toBe(true);
    expect(take(mm)).toEqual([]);
  });

  it('compaction: CLEAR one page per page moved out of the block, in pfn order', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: 4 * MiB, prot: RW }); // PMD aligned, small pages
    expect(a % THP).toBe(0);
    // 512 pages in one page table: the first block fills up and the last pages land in the next
    // block, which holds nothing but them (page tables were allocated first, in block 0).
    await k.write(pid, a, fill(THP, 43));
    const before = k.pagemap(pid, a, 512);
    const inBlock1 = before.filter((e) => e.pfn !== null && e.pfn >= 512 && e.pfn < 1024).sort((x, y) => x.pfn! - y.pfn!);
    expect(inBlock1.length).toBeGreaterThan(0);
    take(mm);
    take(iv);
    const r = await k.compact(0);
    expect(r.block).toBe(1);
    expect(r.migrated).toBe(inBlock1.length);
    const want = inBlock1.flatMap((e) => pagePair('CLEAR', e.addr));
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    for (const e of inBlock1) expect(k.pagemap(pid, e.addr, 1)[0].pfn).not.toBe(e.pfn);
  });

  it('NUMA balancing scan: PROTECTION_VMA over the VMA; the hinting fault restores silently; a misplaced page migrates with CLEAR one page', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(2), 44));
    take(mm);
    take(iv);
    const r = await k.numaBalance(pid);
    expect(r.hinted).toBe(2);
    expect(take(mm)).toEqual(pair('PROTECTION_VMA', a, a + pages(4)));
    expect(take(iv)).toEqual([inv('PROTECTION_VMA', a, a + pages(4))]);
    expect(k.pagemap(pid, a, 2).every((e) => e.protnone)).toBe(true);

    // CPU on node 0 touches page 0 (on node 0): do_numa_page restores the PTE, no notification.
    await k.read(pid, a, 1, 0);
    expect(k.pagemap(pid, a, 1)[0].protnone).toBe(false);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);

    // CPU on node 1 touches page 1 (on node 0): the restore is silent and the page migrates to
    // node 1, which sends exactly one CLEAR (try_to_migrate_one) for the page. (The emulator
    // migrates on the first misplaced access; the kernel's two-pass filter may defer it, but a
    // migration is always this one CLEAR and the restore never notifies.)
    await k.read(pid, a + pages(1), 1, 1);
    expect(k.pagemap(pid, a + pages(1), 1)[0]).toMatchObject({ protnone: false, node: 1 });
    expect(take(mm)).toEqual(pagePair('CLEAR', a + pages(1)));
    expect(take(iv)).toEqual([pageInv('CLEAR', a + pages(1))]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('KSM: write_protect_page and replace_page, CLEAR one page each', () => {
  it('merging two identical pages, then a write breaking the merge (COW)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(3), prot: RW });
    const same = fill(PAGE, 45);
    await k.write(pid, a, same);
    await k.write(pid, a + pages(1), same);
    await k.write(pid, a + pages(2), fill(PAGE, 46)); // unique: never touched by KSM
    await k.madvise(pid, a, pages(3), 'mergeable');
    take(mm);
    take(iv);
    const r = await k.ksm();
    expect(r.merged).toBe(1);
    // One page is write-protected and becomes the KSM page; the other is write-protected and
    // replaced. Which of the two is kept is a scan-order detail (this is the emulator's order,
    // lowest address kept; the reference fixes only "CLEAR, 1 page each").
    const want = [...pagePair('CLEAR', a), ...pagePair('CLEAR', a + pages(1)), ...pagePair('CLEAR', a + pages(1))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    const pm = k.pagemap(pid, a, 2);
    expect(pm.map((e) => e.kind)).toEqual(['ksm', 'ksm']);
    expect(pm[0].pfn).toBe(pm[1].pfn);

    await k.write(pid, a + pages(1), new Uint8Array([1]));
    expect(take(mm)).toEqual(pagePair('CLEAR', a + pages(1)));
    expect(take(iv)).toEqual([pageInv('CLEAR', a + pages(1))]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('THP split and collapse: CLEAR over the aligned 2 MiB', () => {
  it('k.splitThp of a PMD-mapped THP: CLEAR [haddr, haddr + 2 MiB)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW, hugepage: true });
    await k.write(pid, a, fill(pages(8), 47));
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(true);
    take(mm);
    take(iv);
    expect(await k.splitThp(pid, a + pages(5))).toBe(true);
    expect(take(mm)).toEqual(pair('CLEAR', a, a + THP));
    expect(take(iv)).toEqual([inv('CLEAR', a, a + THP)]);
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(false);
  });

  it('k.splitThp of a PTE-mapped THP folio: unmap_folio (try_to_migrate) sends CLEAR over the folio', async () => {
    const { k, p, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW, hugepage: true });
    await k.write(pid, a, fill(pages(8), 48));
    await k.splitHugePmd(p.mm, a); // __split_huge_pmd: the folio stays large, PTE-mapped
    expect(take(mm)).toEqual(pair('CLEAR', a, a + THP));
    take(iv);
    expect(await k.splitThp(pid, a)).toBe(true);
    // Kernel: split_huge_page -> __folio_split -> unmap_folio -> try_to_migrate, which sends
    // CLEAR [address, vma_address_end) = the folio's 2 MiB in this VMA, then remaps silently.
    expect(take(mm)).toEqual(pair('CLEAR', a, a + THP));
    expect(take(iv)).toEqual([inv('CLEAR', a, a + THP)]);
  });

  it('MADV_COLLAPSE of 4 KiB pages in a hugepage VMA: CLEAR [haddr, haddr + 2 MiB), install silent', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW }); // not THP-eligible yet: small pages
    expect(a % THP).toBe(0);
    const data = fill(pages(2), 49);
    await k.write(pid, a, data);
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(false);
    await k.madvise(pid, a, THP, 'hugepage');
    take(mm);
    take(iv);
    const r = await k.madvise(pid, a, THP, 'collapse');
    expect(r.pages).toBe(512);
    expect(take(mm)).toEqual(pair('CLEAR', a, a + THP));
    expect(take(iv)).toEqual([inv('CLEAR', a, a + THP)]);
    expect(k.pagemap(pid, a, 1)[0].huge).toBe(true);
    expect(Buffer.from(await k.read(pid, a, pages(2))).equals(Buffer.from(data))).toBe(true);
    expect(take(mm)).toEqual([]);
  });

  it('k.collapse (khugepaged collapse_huge_page on one PMD): CLEAR [haddr, haddr + 2 MiB)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW }); // small pages first
    await k.write(pid, a + pages(3), fill(pages(3), 50));
    await k.madvise(pid, a, THP, 'hugepage');
    take(mm);
    take(iv);
    expect(await k.collapse(pid, a + pages(7))).toBe('collapsed');
    expect(take(mm)).toEqual(pair('CLEAR', a, a + THP));
    expect(take(iv)).toEqual([inv('CLEAR', a, a + THP)]);
  });

  it('khugepaged with young PTEs: no test_young needed, CLEAR [haddr, haddr + 2 MiB)', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW });
    await k.write(pid, a, fill(pages(2), 51));
    await k.madvise(pid, a, THP, 'hugepage');
    take(mm);
    take(iv);
    expect((await k.khugepaged()).collapsed).toBe(1);
    expect(take(mm)).toEqual(pair('CLEAR', a, a + THP));
    expect(take(iv)).toEqual([inv('CLEAR', a, a + THP)]);
  });

  it('khugepaged without young PTEs asks test_young for each mapped page and does not collapse if no one says young', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: THP, prot: RW });
    await k.write(pid, a, fill(pages(2), 52));
    await k.madvise(pid, a, THP, 'hugepage');
    await k.clearRefs(pid, 'referenced');
    take(mm);
    take(iv);
    expect((await k.khugepaged()).collapsed).toBe(0);
    expect(take(mm)).toEqual([testYoung(a), testYoung(a + pages(1))]);
    expect(take(iv)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('writeback (page_mkclean): PROTECTION_PAGE per dirty page and shared VMA', () => {
  it('msync of a MAP_SHARED file mapping: one PROTECTION_PAGE per dirty page, clean pages silent', async () => {
    const { k, pid, mm, iv } = boot();
    const f = k.createFile(pages(4));
    const a = await k.mmap(pid, { length: pages(4), prot: RW, shared: true, file: { id: f.id } });
    await k.write(pid, a, new Uint8Array([1])); // page 0 dirty
    await k.read(pid, a + pages(1), PAGE); // page 1 mapped, clean
    await k.write(pid, a + pages(3), new Uint8Array([3])); // page 3 dirty
    expect(take(mm)).toEqual([]);
    take(iv);
    const r = await k.msync(pid, a, pages(4));
    expect(r.written).toBe(2);
    const want = [...pagePair('PROTECTION_PAGE', a), ...pagePair('PROTECTION_PAGE', a + pages(3))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
    expect(k.fileRead(f.id, 0, 1)[0]).toBe(1);

    // Clean now: a second msync sends nothing.
    await k.msync(pid, a, pages(4));
    expect(take(mm)).toEqual([]);
    // Writing again is a write-notify upgrade (silent); the flusher then cleans it again.
    await k.write(pid, a, new Uint8Array([2]));
    expect(take(mm)).toEqual([]);
    await k.writeback();
    expect(take(mm)).toEqual(pagePair('PROTECTION_PAGE', a));
    expect(take(iv)).toEqual([pageInv('PROTECTION_PAGE', a)]);
  });

  it('a dirty page cache page mapped only privately is written back without a notification', async () => {
    const { k, pid, mm, iv } = boot();
    const f = k.createFile(pages(2));
    const a = await k.mmap(pid, { length: pages(2), prot: RW, file: { id: f.id } });
    await k.read(pid, a, pages(2));
    await k.fileWrite(f.id, 0, fill(pages(2), 53)); // dirty through write(2)
    take(mm);
    take(iv);
    const r = await k.writeback();
    expect(r.written).toBe(2);
    expect(take(mm)).toEqual([]);
    expect(take(iv)).toEqual([]);
  });

  it('page_mkclean visits every shared VMA of the file at that offset, also one where the page is not mapped', async () => {
    const { k, pid, mm } = boot();
    const f = k.createFile(pages(2));
    const a = await k.mmap(pid, { length: pages(2), prot: RW, shared: true, file: { id: f.id } });
    await k.write(pid, a, new Uint8Array([1]));
    const other = k.createProcess('other');
    const om = recordingMm();
    other.mm.notifier.register(om.sub);
    const b = await k.mmap(other.pid, { length: pages(2), prot: RW, shared: true, file: { id: f.id } }); // never touched
    take(mm);
    await k.writeback();
    expect(take(mm)).toEqual(pagePair('PROTECTION_PAGE', a));
    // Kernel: folio_mkclean -> rmap_walk_file visits every VMA in i_mmap covering the index;
    // page_vma_mkclean_one brackets its walk with PROTECTION_PAGE whether or not a PTE is found.
    expect(take(om.calls)).toEqual(pagePair('PROTECTION_PAGE', b));
  });
});

// ------------------------------------------------------------------------------------------------
describe('device memory: MIGRATE and EXCLUSIVE carry the owner', () => {
  const GPU = 7;
  const NIC = 9;

  it('migrateToDevice of populated pages: one MIGRATE pair over [start, end), owner = the device', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(4), prot: RW });
    await k.write(pid, a, fill(pages(2), 54));
    take(mm);
    take(iv);
    const r = await k.migrateToDevice(pid, a, a + pages(2), GPU);
    expect(r.moved).toBe(2);
    expect(take(mm)).toEqual(pair('MIGRATE', a, a + pages(2), { owner: GPU }));
    expect(take(iv)).toEqual([inv('MIGRATE', a, a + pages(2), { owner: GPU })]);
    expect(k.pagemap(pid, a, 2).map((e) => e.devicePrivate)).toEqual([GPU, GPU]);
  });

  it('migrateToDevice with a hole: collect MIGRATE [start, end), then MIGRATE [first hole, end) while filling holes', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(3), prot: RW });
    await k.write(pid, a, new Uint8Array([1]));
    await k.write(pid, a + pages(2), new Uint8Array([3])); // page 1 is a hole
    take(mm);
    take(iv);
    const r = await k.migrateToDevice(pid, a, a + pages(3), GPU);
    expect(r.moved).toBe(3);
    const want = [...pair('MIGRATE', a, a + pages(3), { owner: GPU }), ...pair('MIGRATE', a + pages(1), a + pages(3), { owner: GPU })];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
  });

  it('a CPU read of a device-private page migrates it back: MIGRATE one page, owner = the device', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    const data = fill(pages(2), 55);
    await k.write(pid, a, data);
    await k.migrateToDevice(pid, a, a + pages(2), GPU);
    take(mm);
    take(iv);
    expect(Buffer.from(await k.read(pid, a + pages(1), PAGE)).equals(Buffer.from(data.subarray(PAGE)))).toBe(true);
    expect(take(mm)).toEqual(pagePair('MIGRATE', a + pages(1), { owner: GPU }));
    expect(take(iv)).toEqual([pageInv('MIGRATE', a + pages(1), { owner: GPU })]);
    expect(k.pagemap(pid, a, 2).map((e) => e.devicePrivate)).toEqual([GPU, null]);
  });

  it('migrateToSystem (driver-initiated): MIGRATE over [start, end), owner = the device', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 56));
    await k.migrateToDevice(pid, a, a + pages(2), GPU);
    take(mm);
    take(iv);
    const r = await k.migrateToSystem(pid, a, a + pages(2), GPU);
    expect(r.moved).toBe(2);
    expect(take(mm)).toEqual(pair('MIGRATE', a, a + pages(2), { owner: GPU }));
    expect(take(iv)).toEqual([inv('MIGRATE', a, a + pages(2), { owner: GPU })]);
  });

  it('migrateToSystem of a range holding no device page still brackets the collect walk with MIGRATE', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 57));
    take(mm);
    take(iv);
    const r = await k.migrateToSystem(pid, a, a + pages(2), GPU);
    expect(r.moved).toBe(0);
    // Kernel: migrate_vma_setup -> migrate_vma_collect always opens MIGRATE [start, end) around
    // its walk, whether or not it finds pages to collect.
    expect(take(mm)).toEqual(pair('MIGRATE', a, a + pages(2), { owner: GPU }));
    expect(take(iv)).toEqual([inv('MIGRATE', a, a + pages(2), { owner: GPU })]);
  });

  it('evicting device memory (migrate_device_range): CLEAR one page per page, no owner', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 58));
    await k.migrateToDevice(pid, a, a + pages(2), GPU);
    take(mm);
    take(iv);
    expect(await k.evictDeviceMemory(GPU)).toBe(2);
    const want = [...pagePair('CLEAR', a), ...pagePair('CLEAR', a + pages(1))];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
  });

  it('make_device_exclusive: EXCLUSIVE one page with the caller as owner; the CPU access after it: CLEAR one page, owner null', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(2), prot: RW });
    await k.write(pid, a, fill(pages(2), 59));
    take(mm);
    take(iv);
    await k.makeDeviceExclusive(pid, a + pages(1), NIC);
    expect(take(mm)).toEqual(pagePair('EXCLUSIVE', a + pages(1), { owner: NIC }));
    expect(take(iv)).toEqual([pageInv('EXCLUSIVE', a + pages(1), { owner: NIC })]);
    expect(k.pagemap(pid, a + pages(1), 1)[0].exclusive).toBe(true);

    await k.read(pid, a + pages(1), 1);
    expect(take(mm)).toEqual(pagePair('CLEAR', a + pages(1)));
    expect(take(iv)).toEqual([pageInv('CLEAR', a + pages(1))]);
    expect(k.pagemap(pid, a + pages(1), 1)[0].exclusive).toBe(false);
    await k.write(pid, a + pages(1), new Uint8Array([1]));
    expect(take(mm)).toEqual([]);
  });

  it('make_device_exclusive on a zero page: the write fault COWs first (CLEAR, owner null), then EXCLUSIVE', async () => {
    const { k, pid, mm, iv } = boot();
    const a = await k.mmap(pid, { length: pages(1), prot: RW });
    await k.read(pid, a, 1);
    take(mm);
    take(iv);
    await k.makeDeviceExclusive(pid, a, NIC);
    const want = [...pagePair('CLEAR', a), ...pagePair('EXCLUSIVE', a, { owner: NIC })];
    expect(take(mm)).toEqual(want);
    expect(take(iv)).toEqual(invsOf(want));
  });
});

// ------------------------------------------------------------------------------------------------
describe('delivery order', () => {
  async function scene() {
    const k = new Kernel({ memoryBytes: 32 * MiB });
    const p = k.createProcess();
    const a = await k.mmap(p.pid, { length: pages(4), prot: RW });
    await k.write(p.pid, a, fill(pages(4), 60));
    const { log, mm, interval } = sharedLog();
    const subs = p.mm.notifier;
    interval(subs, 'I-hi', a + pages(2), pages(2)); // inserted first, higher address
    interval(subs, 'I-lo', a, pages(2));
    mm(subs, 'M-old'); // registered first
    mm(subs, 'M-new');
    return { k, p, a, log };
  }

  it('start: interval tree by address, then whole-mm newest first; end: whole-mm newest first; ranges unclipped', async () => {
    const { k, p, a, log } = await scene();
    await k.munmap(p.pid, a, pages(4));
    const [s, e] = pair('UNMAP', a, a + pages(4));
    expect(take(log)).toEqual([
      ...as('I-lo', [inv('UNMAP', a, a + pages(4))]),
      ...as('I-hi', [inv('UNMAP', a, a + pages(4))]),
      ...as('M-new', [s]),
      ...as('M-old', [s]),
      ...as('M-new', [e]),
      ...as('M-old', [e]),
    ]);
  });

  it('only intersecting interval subscribers are called; whole-mm ones always are', async () => {
    const { k, p, a, log } = await scene();
    await k.write(p.pid, a, fill(PAGE, 61)); // exclusive: reuse, nothing
    await k.madvise(p.pid, a + pages(3), pages(1), 'dontneed');
    const [s, e] = pair('CLEAR', a + pages(3), a + pages(4));
    expect(take(log)).toEqual([
      ...as('I-hi', [inv('CLEAR', a + pages(3), a + pages(4))]),
      ...as('M-new', [s]),
      ...as('M-old', [s]),
      ...as('M-new', [e]),
      ...as('M-old', [e]),
    ]);
  });

  it('exit: RELEASE to the tree (by address), release to the list (newest first), then UNMAP to the tree only', async () => {
    const { k, p, log } = await scene();
    await k.exit(p.pid);
    expect(take(log)).toEqual([
      ...as('I-lo', [inv('RELEASE', 0, ULM)]),
      ...as('I-hi', [inv('RELEASE', 0, ULM)]),
      { who: 'M-new', op: 'release' },
      { who: 'M-old', op: 'release' },
      ...as('I-lo', [inv('UNMAP', 0, ULM)]),
      ...as('I-hi', [inv('UNMAP', 0, ULM)]),
    ]);
  });
});
