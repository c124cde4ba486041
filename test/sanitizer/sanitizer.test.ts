/**
 * The sanitizer's windows are per subscription: a device with several interval subscriptions gets
 * one call per subscription for the same invalidation (the kernel calls each subscription's
 * invalidate), acknowledges each on its own, and may go on using the pages of a subscription it
 * has not been told about yet. (A whole-address-space SOFT_DIRTY reaching a gpu with many SVM
 * ranges showed the bug this pins: the first acknowledgement revoked every grant.)
 */
import { describe, expect, it } from 'vitest';
import { Kernel } from '../../src/kernel/kernel.js';
import { MmuNotifierEvent, RANGE_UPDATE_TO_READ_ONLY } from '../../src/notifier/range.js';
import { Sanitizer } from '../../src/sanitizer/sanitizer.js';
import { HMM_PFN } from '../../src/kernel/hmm.js';

const PAGE = 4096;
const A = { start: 0x10000000, end: 0x10200000 };
const B = { start: 0x10200000, end: 0x10400000 };
const WHOLE = [0, 2 ** 64] as const;

function setup(): { s: Sanitizer; gen: (pfn: number) => number } {
  const k = new Kernel({ memoryBytes: 4 * 2 ** 20 });
  const s = new Sanitizer(k.mem.handles.meta, 7);
  return { s, gen: (pfn) => s.generation(pfn) };
}

describe('sanitizer windows', () => {
  it('an acknowledgement revokes only its own subscription\'s part of the range', () => {
    const { s, gen } = setup();
    const pid = 100;
    const vaA = A.start + PAGE;
    const vaB = B.start + PAGE;
    s.grant(pid, vaA, 10, gen(10), true, s.tick());
    s.grant(pid, vaB, 11, gen(11), true, s.tick());
    const t = s.tick();
    // One invalidation (id 5) over the whole address space, one call per subscription.
    s.started(5, 1, pid, ...WHOLE, MmuNotifierEvent.CLEAR, 0, t, A);
    s.started(5, 2, pid, ...WHOLE, MmuNotifierEvent.CLEAR, 0, t, B);
    s.acked(5, 1);
    // Sub 1's page is gone; sub 2 has not acknowledged yet, so its page is still the device's.
    expect(s.check(pid, vaA, 10, false)?.kind).toBe('stale');
    expect(s.check(pid, vaB, 11, true)).toBeNull();
    s.acked(5, 2);
    expect(s.check(pid, vaB, 11, false)?.kind).toBe('stale');
    s.ended(5, 1, s.tick());
    s.ended(5, 2, s.tick());
    expect(s.stats.findings).toBe(2);
  });

  it('a downgrade-only event (SOFT_DIRTY) takes write access per subscription, at its acknowledgement', () => {
    const { s, gen } = setup();
    const pid = 100;
    s.grant(pid, A.start, 20, gen(20), true, s.tick());
    s.grant(pid, B.start, 21, gen(21), true, s.tick());
    const t = s.tick();
    s.started(9, 1, pid, ...WHOLE, MmuNotifierEvent.SOFT_DIRTY, 0, t, A);
    s.started(9, 2, pid, ...WHOLE, MmuNotifierEvent.SOFT_DIRTY, 0, t, B);
    s.acked(9, 1);
    expect(s.check(pid, A.start, 20, false)).toBeNull(); // still readable
    expect(s.check(pid, A.start, 20, true)?.kind).toBe('write-ro');
    expect(s.check(pid, B.start, 21, true)).toBeNull(); // sub 2 not told yet: a legitimate write
    s.acked(9, 2);
    expect(s.check(pid, B.start, 21, true)?.kind).toBe('write-ro');
  });

  it('a dropped subscription takes only the grants no other subscription covers', () => {
    const { s, gen } = setup();
    const pid = 100;
    s.grant(pid, A.start, 30, gen(30), true, s.tick());
    s.grant(pid, B.start, 31, gen(31), true, s.tick());
    // Sub A goes, but a twin subscription over the same interval remains (a lost creation race).
    s.dropUncovered(pid, A.start, A.end, [[A.start, A.end], [B.start, B.end]]);
    expect(s.check(pid, A.start, 30, true)).toBeNull();
    // Now nothing covers A: its grant goes, B's stays.
    s.dropUncovered(pid, A.start, A.end, [[B.start, B.end]]);
    expect(s.check(pid, A.start, 30, false)?.kind).toBe('unmapped');
    expect(s.check(pid, B.start, 31, true)).toBeNull();
  });

  it('a whole-mm subscription (no interval) keeps the whole range', () => {
    const { s, gen } = setup();
    const pid = 100;
    s.grant(pid, A.start, 40, gen(40), true, s.tick());
    s.grant(pid, B.start, 41, gen(41), true, s.tick());
    s.started(11, 3, pid, A.start + PAGE, B.end, MmuNotifierEvent.CLEAR, 0, s.tick());
    s.acked(11, 3);
    expect(s.check(pid, A.start, 40, true)).toBeNull(); // before the range
    expect(s.check(pid, B.start, 41, false)?.kind).toBe('stale');
  });

  it('keeps every window of a long backlog apart: hundreds open at once, acknowledged newest, ended oldest first, one out of order', () => {
    // A device that fell behind a fast kernel takes a run of calls before their ends (WorkerHost.pump).
    const { s, gen } = setup();
    const pid = 100;
    const W = 300;
    const va = (i: number): number => A.start + (i % 512) * PAGE;
    for (let i = 0; i < W; i++) s.grant(pid, va(i), 10 + i, gen(10 + i), true, s.tick());
    for (let i = 0; i < W; i++) {
      s.started(i + 1, 1, pid, va(i), va(i) + PAGE, MmuNotifierEvent.CLEAR, 0, s.tick(), A);
      s.acked(i + 1, 1);
      // Its own page only: the next window's page is still the device's.
      expect(s.check(pid, va(i), 10 + i, false)?.kind).toBe('stale');
      if (i + 1 < W) expect(s.check(pid, va(i + 1), 11 + i, false)).toBeNull();
    }
    // Page 0 faulted back while its window (and all the others) is still open: current for now,
    // stale once its window ends (computed inside it).
    s.grant(pid, va(0), 500, gen(500), true, s.tick());
    expect(s.check(pid, va(0), 500, false)).toBeNull();
    // Page 150 faulted back too; its window ends first, out of order.
    s.grant(pid, va(150), 501, gen(501), true, s.tick());
    s.ended(151, 1, s.tick());
    expect(s.check(pid, va(150), 501, false)?.kind).toBe('stale');
    expect(s.check(pid, va(0), 500, false)).toBeNull();
    for (let i = 0; i < W; i++) if (i !== 150) s.ended(i + 1, 1, s.tick());
    expect(s.check(pid, va(0), 500, false)?.kind).toBe('stale');
    // Every window is closed: a page granted now stays the device's.
    s.grant(pid, va(7), 502, gen(502), true, s.tick());
    expect(s.check(pid, va(7), 502, true)).toBeNull();
    // An end for a window that is not open changes nothing.
    s.ended(151, 1, s.tick());
    expect(s.check(pid, va(7), 502, true)).toBeNull();
  });

  it('counts a refault once: not for a reply an invalidation made stale on its way, nor for a first fault that raced one', () => {
    const { s, gen } = setup();
    const pid = 100;
    const inval = (id: number): void => {
      s.started(id, 1, pid, A.start, A.end, MmuNotifierEvent.CLEAR, 0, s.tick(), A);
      s.acked(id, 1);
      s.ended(id, 1, s.tick());
    };
    // A first fault whose reply was computed before an invalidation: thrown away, asked again.
    const t0 = s.tick();
    inval(1);
    s.grant(pid, A.start, 50, gen(50), true, t0);
    s.grant(pid, A.start, 50, gen(50), true, s.tick());
    expect(s.stats.refaults).toBe(0); // the device never had the page before
    // The device loses it, faults again, and that reply races two more invalidations.
    inval(2);
    const t1 = s.tick();
    inval(3);
    s.grant(pid, A.start, 50, gen(50), true, t1);
    const t2 = s.tick();
    inval(4);
    s.grant(pid, A.start, 50, gen(50), true, t2);
    expect(s.stats.refaults).toBe(0); // both replies were stale on arrival
    s.grant(pid, A.start, 50, gen(50), true, s.tick());
    expect(s.stats.refaults).toBe(1); // one loss, one refault
    // A downgrade (SOFT_DIRTY) then a write fault: one refault; a grant nobody took: none.
    s.started(5, 1, pid, A.start, A.end, MmuNotifierEvent.SOFT_DIRTY, 0, s.tick(), A);
    s.acked(5, 1);
    s.ended(5, 1, s.tick());
    s.grant(pid, A.start, 50, gen(50), true, s.tick());
    s.grant(pid, A.start, 50, gen(50), true, s.tick());
    expect(s.stats.refaults).toBe(2);
  });

  it('counts a reply that refaults many pages as one refault fault (a gpu faulting a whole range back)', () => {
    const { s, gen } = setup();
    const pid = 100;
    // One range fault's reply (hmm_range_fault's pfn words), as the worker host and the channel grant it.
    const faultRange = (first: number, n: number, write: boolean): void => {
      const pfns = new Uint32Array(n);
      const gens = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        pfns[i] = HMM_PFN.VALID | (write ? HMM_PFN.WRITE : 0) | (200 + first + i);
        gens[i] = gen(200 + first + i);
      }
      s.grantRangeFault(pid, A.start + first * PAGE, pfns, gens, s.tick());
    };
    faultRange(0, 16, false); // first touch: no refault
    expect([s.stats.refaults, s.stats.refaultFaults]).toEqual([0, 0]);
    s.started(1, 1, pid, A.start, A.start + 16 * PAGE, MmuNotifierEvent.CLEAR, 0, s.tick(), A, null, 'thp_split');
    s.acked(1, 1);
    s.ended(1, 1, s.tick());
    faultRange(0, 16, false); // one fault brings the 16 pages back
    expect([s.stats.refaults, s.stats.refaultFaults]).toEqual([16, 1]);
    faultRange(16, 4, false); // pages the device never had: a fault, no refault
    expect(s.stats.refaultFaults).toBe(1);
    // Two pages lost, then faulted back one reply each: two refault faults.
    s.started(2, 1, pid, A.start, A.start + 2 * PAGE, MmuNotifierEvent.UNMAP, 0, s.tick(), A, null, 'munmap');
    s.acked(2, 1);
    s.ended(2, 1, s.tick());
    faultRange(0, 1, false);
    faultRange(1, 1, false);
    expect([s.stats.refaults, s.stats.refaultFaults]).toEqual([18, 3]);
  });

  it('a gup of a huge page, a migration back and a single grant each count one fault, and grant what they name', () => {
    const { s, gen } = setup();
    const pid = 100;
    const pfns = Int32Array.from([300, 301, 302, 303]);
    const gens = Int32Array.from(pfns, (p) => gen(p));
    const gup = (): void => s.grantGup(pid, A.start + 2 * PAGE, { pfn: 302, gen: gen(302), write: false, tick: s.tick(), headVa: A.start, hugePfns: pfns, hugeGens: gens });
    const take = (id: number): void => {
      s.started(id, 1, pid, A.start, A.start + 4 * PAGE, MmuNotifierEvent.CLEAR, 0, s.tick(), A, null, 'thp_split');
      s.acked(id, 1);
      s.ended(id, 1, s.tick());
    };
    gup();
    // The whole folio was granted: the device may read its first page.
    expect(s.check(pid, A.start, 300, false)).toBeNull();
    take(1);
    gup();
    expect([s.stats.refaults, s.stats.refaultFaults]).toEqual([4, 1]);
    take(2);
    s.grantPages(pid, [[A.start, 300, gen(300), true], [A.start + PAGE, 301, gen(301), true]], s.tick());
    expect([s.stats.refaults, s.stats.refaultFaults]).toEqual([6, 2]);
    s.grant(pid, A.start + 2 * PAGE, 302, gen(302), true, s.tick());
    expect([s.stats.refaults, s.stats.refaultFaults]).toEqual([7, 3]);
    // Without a huge folio a gup grants the page it was asked for.
    s.grantGup(pid, A.start + 3 * PAGE, { pfn: 303, gen: gen(303), write: false, tick: s.tick() });
    expect([s.stats.refaults, s.stats.refaultFaults]).toEqual([8, 4]);
  });

  it('counts the refault of a read page a downgrade covered: the device may have dropped it (a blind one does)', () => {
    const { s, gen } = setup();
    const pid = 100;
    s.grant(pid, A.start, 60, gen(60), false, s.tick());
    s.started(6, 1, pid, A.start, A.end, MmuNotifierEvent.SOFT_DIRTY, 0, s.tick(), A);
    s.acked(6, 1);
    s.ended(6, 1, s.tick());
    expect(s.check(pid, A.start, 60, false)).toBeNull(); // still a valid read translation
    s.grant(pid, A.start, 60, gen(60), false, s.tick()); // asked again anyway
    expect(s.stats.refaults).toBe(1);
    s.grant(pid, A.start + PAGE, 61, gen(61), false, s.tick()); // a first fault
    expect(s.stats.refaults).toBe(1);
  });

  it('a downgrade the device kept its reads through loses only write access: a read grant again is no refault, a write grant is', () => {
    const { s, gen } = setup();
    const pid = 100;
    const downgrade = (id: number, kept: boolean): void => {
      s.started(id, 1, pid, A.start, A.end, MmuNotifierEvent.PROTECTION_VMA, RANGE_UPDATE_TO_READ_ONLY, s.tick(), A, null, 'mprotect');
      s.acked(id, 1, kept);
      s.ended(id, 1, s.tick());
    };
    s.grant(pid, A.start, 80, gen(80), false, s.tick()); // read
    s.grant(pid, A.start + PAGE, 81, gen(81), true, s.tick()); // write
    downgrade(1, true);
    expect(s.check(pid, A.start + PAGE, 81, true)?.kind).toBe('write-ro'); // kept or not, write is gone
    // A gpu re-mapping its whole range hands both pages again, for reading: the device had them.
    s.grant(pid, A.start, 80, gen(80), false, s.tick());
    s.grant(pid, A.start + PAGE, 81, gen(81), false, s.tick());
    expect(s.stats.refaults).toBe(0);
    // The write access page 1 lost is still lost: taking it back is a refault, caused by the downgrade.
    s.grant(pid, A.start + PAGE, 81, gen(81), true, s.tick());
    expect(s.stats.refaultCauses).toEqual({ 'PROTECTION_VMA:mprotect': 1 });
    // Without the device's word the record stays conservative: a read grant again counts.
    downgrade(2, false);
    s.grant(pid, A.start, 80, gen(80), false, s.tick());
    expect(s.stats.refaults).toBe(2);
    // A device cannot keep what a CLEAR takes: kept is ignored there.
    s.started(3, 1, pid, A.start, A.end, MmuNotifierEvent.CLEAR, 0, s.tick(), A, null, 'madvise');
    s.acked(3, 1, true);
    s.ended(3, 1, s.tick());
    expect(s.check(pid, A.start, 80, false)?.kind).toBe('stale');
    s.grant(pid, A.start, 80, gen(80), false, s.tick());
    expect(s.stats.refaultCauses).toEqual({ 'PROTECTION_VMA:mprotect': 2, 'CLEAR:madvise': 1 });
  });

  it('attributes each refault to the invalidation that took the page (event and origin), across stale replies', () => {
    const { s, gen } = setup();
    const pid = 100;
    const inval = (id: number, event: MmuNotifierEvent, origin: string | null): void => {
      s.started(id, 1, pid, A.start, A.end, event, 0, s.tick(), A, null, origin);
      s.acked(id, 1);
      s.ended(id, 1, s.tick());
    };
    s.grant(pid, A.start, 70, gen(70), true, s.tick());
    s.grant(pid, A.start + PAGE, 71, gen(71), true, s.tick());
    inval(1, MmuNotifierEvent.CLEAR, 'thp_split');
    // Page 0: the next reply raced a PROTECTION_VMA and came stale; the refault that follows is
    // still the thp_split's (the page was lost to it, and the mprotect found nothing to take).
    const t = s.tick();
    inval(2, MmuNotifierEvent.PROTECTION_VMA, 'mprotect');
    s.grant(pid, A.start, 70, gen(70), true, t);
    s.grant(pid, A.start, 70, gen(70), true, s.tick());
    // Page 1: refaulted after the same CLEAR, with no race.
    s.grant(pid, A.start + PAGE, 71, gen(71), true, s.tick());
    expect(s.stats.refaults).toBe(2);
    expect(s.stats.refaultCauses).toEqual({ 'CLEAR:thp_split': 2 });
    // A downgrade with no origin recorded, then a write fault.
    inval(3, MmuNotifierEvent.SOFT_DIRTY, null);
    s.grant(pid, A.start, 70, gen(70), true, s.tick());
    expect(s.stats.refaultCauses).toEqual({ 'CLEAR:thp_split': 2, 'SOFT_DIRTY:?': 1 });
  });
});
