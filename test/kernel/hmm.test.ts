import { describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { ERRNO, HMM_PFN, hmmPfnOrder, hmmPfnToPfn, type HmmRange } from '../../src/kernel/hmm.js';
import { ZERO_PFN } from '../../src/kernel/phys-mem.js';
import { MmuIntervalNotifier } from '../../src/notifier/subscriptions.js';
import { recordingInterval } from '../helpers/recorder.js';

const PAGE = 4096;
const MiB = 1024 * 1024;

async function setup(length = 16 * PAGE, prot = PROT.READ | PROT.WRITE) {
  const k = new Kernel({ memoryBytes: 32 * MiB });
  const p = k.createProcess('hmm');
  const addr = await k.mmap(p.pid, { length, prot });
  const { sub, calls } = recordingInterval(p.mm.notifier, 0, 2 ** 47);
  return { k, p, addr, sub, calls };
}

function range(sub: MmuIntervalNotifier, seq: number, start: number, pages: number, opts: Partial<HmmRange> = {}): HmmRange {
  return {
    notifier: sub,
    notifierSeq: seq,
    start,
    end: start + pages * PAGE,
    hmmPfns: new Uint32Array(pages),
    defaultFlags: 0,
    pfnFlagsMask: 0,
    devPrivateOwner: null,
    ...opts,
  };
}

const flags = (w: number): string[] =>
  [w & HMM_PFN.VALID ? 'V' : '', w & HMM_PFN.WRITE ? 'W' : '', w & HMM_PFN.ERROR ? 'E' : ''].filter(Boolean);

describe('hmm_range_fault', () => {
  it('snapshots without faulting: none 0, zero page valid read-only, writable page valid+write, no VMA and PROT_NONE are ERROR', async () => {
    const { k, p, addr, sub } = await setup(8 * PAGE);
    await k.read(p.pid, addr + PAGE, 1); // zero page
    await k.write(p.pid, addr + 2 * PAGE, new Uint8Array([1])); // private page
    await k.mprotect(p.pid, addr + 4 * PAGE, 2 * PAGE, PROT.NONE);
    await k.munmap(p.pid, addr + 6 * PAGE, PAGE);
    const r = range(sub, await sub.readBegin(), addr, 8);
    expect(await k.rangeFault(p.pid, r)).toBe(0);
    const w = [...r.hmmPfns];
    expect(flags(w[0])).toEqual([]);
    expect(w[0]).toBe(0);
    expect(flags(w[1])).toEqual(['V']);
    expect(hmmPfnToPfn(w[1])).toBe(ZERO_PFN);
    expect(flags(w[2])).toEqual(['V', 'W']);
    expect(w[3]).toBe(0);
    expect(flags(w[4])).toEqual(['E']);
    expect(flags(w[5])).toEqual(['E']);
    expect(flags(w[6])).toEqual(['E']); // hole between VMAs
    expect(w[7]).toBe(0);
    expect(k.pagemap(p.pid, addr, 8).filter((e) => e.present)).toHaveLength(2); // nothing faulted
  });

  it('faults a whole hole when any page of it requests a fault', async () => {
    const { k, p, addr, sub } = await setup(8 * PAGE);
    const r = range(sub, await sub.readBegin(), addr, 4, { pfnFlagsMask: HMM_PFN.REQ_FAULT });
    r.hmmPfns[1] = HMM_PFN.REQ_FAULT;
    expect(await k.rangeFault(p.pid, r)).toBe(0);
    // No page table yet: hmm_vma_walk_hole faults the hole from its start (to the range end).
    expect(k.pagemap(p.pid, addr, 8).map((e) => e.present)).toEqual([true, true, true, true, false, false, false, false]);
  });

  it('faults from the first requesting PTE to the end of the chunk, then restarts internally', async () => {
    const { k, p, addr, sub } = await setup(8 * PAGE);
    await k.write(p.pid, addr + 7 * PAGE, new Uint8Array([1])); // the PTE table exists now
    const r = range(sub, await sub.readBegin(), addr, 4, { pfnFlagsMask: HMM_PFN.REQ_FAULT });
    r.hmmPfns[1] = HMM_PFN.REQ_FAULT;
    expect(await k.rangeFault(p.pid, r)).toBe(0);
    expect(k.pagemap(p.pid, addr, 8).map((e) => e.present)).toEqual([false, true, true, true, false, false, false, true]);
    expect(flags(r.hmmPfns[1])).toEqual(['V']); // read fault of anonymous memory: the zero page
    expect(r.hmmPfns[0]).toBe(0);
  });

  it('returns EFAULT for a requested page with no VMA or in a PROT_NONE VMA, EPERM for a write request on a read-only VMA', async () => {
    const { k, p, addr, sub } = await setup(4 * PAGE);
    const seq = await sub.readBegin();
    expect(await k.rangeFault(p.pid, range(sub, seq, addr + 8 * PAGE, 1, { defaultFlags: HMM_PFN.REQ_FAULT }))).toBe(ERRNO.EFAULT);
    await k.mprotect(p.pid, addr, PAGE, PROT.NONE);
    await k.mprotect(p.pid, addr + PAGE, PAGE, PROT.READ);
    const s2 = await sub.readBegin();
    expect(await k.rangeFault(p.pid, range(sub, s2, addr, 1, { defaultFlags: HMM_PFN.REQ_FAULT }))).toBe(ERRNO.EFAULT);
    expect(await k.rangeFault(p.pid, range(sub, s2, addr + PAGE, 1, { defaultFlags: HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE }))).toBe(ERRNO.EPERM);
    expect(await k.rangeFault(p.pid, range(sub, s2, addr + PAGE, 1, { defaultFlags: HMM_PFN.REQ_FAULT }))).toBe(0);
  });

  it('a write fault on the zero page invalidates the caller itself: one EBUSY, then success with WRITE', async () => {
    const { k, p, addr, sub, calls } = await setup(4 * PAGE);
    await k.read(p.pid, addr, 1);
    let seq = await sub.readBegin();
    const req = { defaultFlags: HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE };
    expect(await k.rangeFault(p.pid, range(sub, seq, addr, 1, req))).toBe(ERRNO.EBUSY);
    expect(calls.map((c) => [c.event, c.start, c.end, c.origin])).toEqual([['CLEAR', addr, addr + PAGE, 'cow_fault']]);
    seq = await sub.readBegin();
    const r = range(sub, seq, addr, 1, req);
    expect(await k.rangeFault(p.pid, r)).toBe(0);
    expect(flags(r.hmmPfns[0])).toEqual(['V', 'W']);
    expect(sub.readRetry(seq)).toBe(false);
  });

  it('returns EBUSY only when an invalidation collided with the sequence', async () => {
    const { k, p, addr, sub } = await setup(4 * PAGE);
    await k.write(p.pid, addr, new Uint8Array(4 * PAGE).fill(3));
    const seq = await sub.readBegin();
    await k.mprotect(p.pid, addr, PAGE, PROT.READ); // collides (PROTECTION_VMA hits the subscriber)
    expect(await k.rangeFault(p.pid, range(sub, seq, addr, 4))).toBe(ERRNO.EBUSY);
    const r = range(sub, await sub.readBegin(), addr, 4);
    expect(await k.rangeFault(p.pid, r)).toBe(0);
    expect([...r.hmmPfns].map((w) => flags(w).join(''))).toEqual(['V', 'VW', 'VW', 'VW']);
  });

  it('reports huge mappings with map order 9', async () => {
    const k = new Kernel({ memoryBytes: 32 * MiB, thp: 'madvise' });
    const p = k.createProcess('thp');
    const addr = await k.mmap(p.pid, { length: 2 * MiB, prot: PROT.READ | PROT.WRITE, hugepage: true });
    expect(addr % (2 * MiB)).toBe(0);
    await k.write(p.pid, addr, new Uint8Array([1]));
    expect(k.pagemap(p.pid, addr, 1)[0].huge).toBe(true);
    const sub = new MmuIntervalNotifier({ invalidate: (s, _r, c) => (s.setSeq(c), true) }, { label: 'x' });
    p.mm.notifier.insertInterval(sub, addr, 2 * MiB);
    const r = range(sub, await sub.readBegin(), addr + 4 * PAGE, 2);
    expect(await k.rangeFault(p.pid, r)).toBe(0);
    expect(hmmPfnOrder(r.hmmPfns[0])).toBe(9);
    expect(hmmPfnToPfn(r.hmmPfns[1])).toBe(hmmPfnToPfn(r.hmmPfns[0]) + 1);
  });

  it('reports device-private pages of dev_private_owner as valid without faulting, and migrates other owners back', async () => {
    const { k, p, addr, sub } = await setup(4 * PAGE);
    await k.write(p.pid, addr, new Uint8Array(4 * PAGE).fill(5));
    const mig = await k.migrateToDevice(p.pid, addr, addr + 4 * PAGE, 7);
    expect(mig.moved).toBe(4);
    expect(k.pagemap(p.pid, addr, 4).every((e) => e.devicePrivate === 7)).toBe(true);
    const own = range(sub, await sub.readBegin(), addr, 4, { defaultFlags: HMM_PFN.REQ_FAULT, devPrivateOwner: 7 });
    expect(await k.rangeFault(p.pid, own)).toBe(0);
    expect(own.hmmPfns.every((w) => (w & HMM_PFN.VALID) !== 0 && k.mem.isDevicePfn(hmmPfnToPfn(w)))).toBe(true);
    expect(k.pagemap(p.pid, addr, 4).every((e) => e.devicePrivate === 7)).toBe(true);
    let seq = await sub.readBegin();
    const other = range(sub, seq, addr, 1, { defaultFlags: HMM_PFN.REQ_FAULT, devPrivateOwner: 8 });
    // Faulting migrates the page back (MIGRATE, owner 7), which collides with our own sequence.
    expect(await k.rangeFault(p.pid, other)).toBe(ERRNO.EBUSY);
    seq = await sub.readBegin();
    const again = range(sub, seq, addr, 1, { defaultFlags: HMM_PFN.REQ_FAULT, devPrivateOwner: 8 });
    expect(await k.rangeFault(p.pid, again)).toBe(0);
    expect(k.mem.isDevicePfn(hmmPfnToPfn(again.hmmPfns[0]))).toBe(false);
    expect([...(await k.read(p.pid, addr, 4))]).toEqual([5, 5, 5, 5]);
    expect(k.audit().problems).toEqual([]);
  });

  it('reports a NUMA-hinted (protnone) page with its pfn but without VALID, and faults it back on request', async () => {
    const { k, p, addr, sub } = await setup(4 * PAGE);
    await k.write(p.pid, addr, new Uint8Array([1]));
    await k.numaBalance(p.pid);
    expect(k.pagemap(p.pid, addr, 1)[0].protnone).toBe(true);
    const snap = range(sub, await sub.readBegin(), addr, 1);
    expect(await k.rangeFault(p.pid, snap)).toBe(0);
    expect(snap.hmmPfns[0] & HMM_PFN.VALID).toBe(0);
    expect(hmmPfnToPfn(snap.hmmPfns[0])).toBe(k.pagemap(p.pid, addr, 1)[0].pfn);
    const f = range(sub, await sub.readBegin(), addr, 1, { defaultFlags: HMM_PFN.REQ_FAULT });
    expect(await k.rangeFault(p.pid, f)).toBe(0);
    expect(flags(f.hmmPfns[0])).toEqual(['V', 'W']);
    expect(k.pagemap(p.pid, addr, 1)[0].protnone).toBe(false);
  });
});
