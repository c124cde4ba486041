/**
 * Property: under random interleavings of device faults (readBegin / hmm_range_fault / driver lock /
 * readRetry), invalidations from many syscalls and kernel activities, and interval subscriptions
 * being removed and re-inserted, a driver that follows the sequence protocol never installs a pfn
 * that the CPU page table no longer maps, and never keeps one after an invalidation.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { HMM_PFN, hmmPfnToPfn, ERRNO } from '../../src/kernel/hmm.js';
import { PTE } from '../../src/kernel/layout.js';
import { ptePfn } from '../../src/kernel/pte.js';
import { MmuIntervalNotifier } from '../../src/notifier/subscriptions.js';

const PAGE = 4096;
const PAGES = 8;

type Cmd =
  | { t: 'fault'; drv: number; page: number; write: boolean }
  | { t: 'munmap'; page: number }
  | { t: 'dontneed'; page: number }
  | { t: 'cpuwrite'; page: number }
  | { t: 'pageout'; page: number }
  | { t: 'migrate'; page: number }
  | { t: 'mprotect'; page: number }
  | { t: 'reinsert'; drv: number }
  | { t: 'fork' };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('fault' as const), drv: fc.integer({ min: 0, max: 1 }), page: fc.integer({ min: 0, max: PAGES - 1 }), write: fc.boolean() }) },
  fc.record({ t: fc.constant('munmap' as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }),
  fc.record({ t: fc.constant('dontneed' as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }),
  { weight: 2, arbitrary: fc.record({ t: fc.constant('cpuwrite' as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }) },
  fc.record({ t: fc.constant('pageout' as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }),
  fc.record({ t: fc.constant('migrate' as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }),
  fc.record({ t: fc.constant('mprotect' as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }),
  fc.record({ t: fc.constant('reinsert' as const), drv: fc.integer({ min: 0, max: 1 }) }),
  fc.record({ t: fc.constant('fork' as const) }),
);

function property(skipRetry: boolean) {
  return fc.asyncProperty(fc.scheduler(), fc.array(cmdArb, { minLength: 1, maxLength: 14 }), async (s, cmds) => {
        const k = new Kernel({ memoryBytes: 8 * 1024 * 1024, swapBytes: 8 * 1024 * 1024, deviceMemoryBytes: 0 });
        const p = k.createProcess('prop');
        const base = await k.mmap(p.pid, { length: PAGES * PAGE, prot: PROT.READ | PROT.WRITE });
        await k.write(p.pid, base, new Uint8Array(PAGES * PAGE).fill(1));
        const violations: string[] = [];
        let installs = 0;

        const drivers = [0, 1].map((d) => {
          const mirror = new Map<number, number>();
          const make = (): MmuIntervalNotifier =>
            new MmuIntervalNotifier(
              {
                // The device takes time to quiesce: its acknowledgement is scheduled.
                invalidate: (sub, range, cur) =>
                  s.schedule(Promise.resolve(true), `inv d${d}`).then(() => {
                    sub.setSeq(cur); // driver lock held: setSeq then zap
                    for (const va of [...mirror.keys()]) if (va >= range.start && va < range.end) mirror.delete(va);
                    return true;
                  }),
              },
              { label: `drv${d}` },
            );
          const drv = { mirror, sub: make(), make };
          p.mm.notifier.insertInterval(drv.sub, base, PAGES * PAGE);
          return drv;
        });

        const fault = async (d: number, page: number, write: boolean): Promise<void> => {
          const drv = drivers[d];
          const va = base + page * PAGE;
          for (let attempt = 0; attempt < 20; attempt++) {
            const sub = drv.sub;
            if (!sub.subscriptions) return;
            const seq = await sub.readBegin();
            await s.schedule(Promise.resolve(), `d${d} after readBegin`);
            const pfns = new Uint32Array(1);
            let r: number;
            try {
              r = await k.rangeFault(p.pid, {
                notifier: sub,
                notifierSeq: seq,
                start: va,
                end: va + PAGE,
                hmmPfns: pfns,
                defaultFlags: HMM_PFN.REQ_FAULT | (write ? HMM_PFN.REQ_WRITE : 0),
                pfnFlagsMask: 0,
                devPrivateOwner: null,
              });
            } catch {
              return; // process gone
            }
            if (r === ERRNO.EBUSY) continue;
            if (r < 0) return;
            await s.schedule(Promise.resolve(), `d${d} before lock`);
            // Driver lock: readRetry and install are one critical section.
            if ((!skipRetry && sub.readRetry(seq)) || sub !== drv.sub) continue;
            const pfn = hmmPfnToPfn(pfns[0]);
            const e = p.mm.pt.lookup(va);
            installs++;
            if (!(e & PTE.PRESENT) || ptePfn(e) !== pfn) {
              violations.push(`d${d} installed pfn ${pfn} for page ${page}, CPU maps ${e === 0 ? 'nothing' : ptePfn(e)}`);
            }
            drv.mirror.set(va, pfn);
            return;
          }
        };

        const run = async (c: Cmd): Promise<void> => {
          const va = base + ('page' in c ? c.page : 0) * PAGE;
          try {
            switch (c.t) {
              case 'fault':
                return await fault(c.drv, c.page, c.write);
              case 'munmap':
                await k.munmap(p.pid, va, PAGE);
                await k.mmap(p.pid, { addr: va, fixed: true, length: PAGE, prot: PROT.READ | PROT.WRITE });
                return;
              case 'dontneed':
                await k.madvise(p.pid, va, PAGE, 'dontneed');
                return;
              case 'cpuwrite':
                await k.write(p.pid, va, new Uint8Array([7]));
                return;
              case 'pageout':
                await k.madvise(p.pid, va, PAGE, 'pageout');
                return;
              case 'migrate':
                await k.migrate(p.pid, va, PAGE, 1);
                return;
              case 'mprotect':
                await k.mprotect(p.pid, va, PAGE, PROT.READ);
                await k.mprotect(p.pid, va, PAGE, PROT.READ | PROT.WRITE);
                return;
              case 'fork': {
                const child = await k.fork(p.pid);
                await k.exit(child.pid);
                return;
              }
              case 'reinsert': {
                const drv = drivers[c.drv];
                const old = drv.sub;
                drv.sub = drv.make();
                await p.mm.notifier.removeInterval(old);
                drv.mirror.clear();
                p.mm.notifier.insertInterval(drv.sub, base, PAGES * PAGE);
                return;
              }
            }
          } catch (e) {
            // Syscalls may legitimately fail (e.g. EINVAL races); protection faults too.
            if (!(e as { code?: string }).code) throw e;
          }
        };

        let finished = false;
        const all = Promise.all(cmds.map((c) => run(c))).then(() => (finished = true));
        for (let spins = 0; !finished; spins++) {
          if (s.count() > 0) await s.waitOne();
          else await new Promise((r) => setImmediate(r));
          if (spins > 100_000) throw new Error(`stuck: ${s.report()}`);
        }
        await all;
        // Final: every mirror entry still matches the CPU page table.
        for (const [d, drv] of drivers.entries()) {
          for (const [va, pfn] of drv.mirror) {
            const e = p.mm.pt.lookup(va);
            if (!(e & PTE.PRESENT) || ptePfn(e) !== pfn) violations.push(`d${d} kept stale pfn ${pfn} at page ${(va - base) / PAGE}`);
          }
        }
        expect(violations).toEqual([]);
        const a = k.audit();
        expect(a.problems).toEqual([]);
        expect(installs).toBeGreaterThanOrEqual(0);
  });
}

describe('interval sequence protocol under random interleavings', () => {
  it('never lets a driver install or keep a pfn the CPU no longer maps', async () => {
    await fc.assert(property(false), { numRuns: 150 });
  });

  it('catches a driver that skips readRetry (the property can fail)', async () => {
    // A fixed seed: with a random one, 300 runs found no counterexample once in a fresh-clone run
    // (2026-11-27), and this test must show that the property can fail, every time. Up to 1,000
    // runs: fast-check stops at the first failure, so a seed that fails early costs nothing more.
    await expect(fc.assert(property(true), { numRuns: 1000, seed: 20261127 })).rejects.toThrow(/Property failed/);
  });
});
