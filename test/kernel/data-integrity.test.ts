/**
 * "Data is never lost": a seeded random mix of syscalls, CPU loads/stores, fork/exit and kernel
 * activity (reclaim and swap, compaction, NUMA migration, KSM, THP collapse/split, writeback,
 * device-memory migration) against a small kernel, checked against an independent shadow model
 * (src/soak/shadow-memory.ts) that predicts the contents of every mapped page.
 *
 * Replay a failure with DEVMIRROR_SEED=<seed> npx vitest run test/kernel/data-integrity.test.ts
 * (DEVMIRROR_SEED=1,2,3 runs several). Soak: DEVMIRROR_OPS=<n> operations per seed. Debugging:
 * DEVMIRROR_LOG_TAIL=<n> operations in the failure message, DEVMIRROR_DUMP_OP=<i> prints the VMA
 * lists around operation i, DEVMIRROR_VERBOSE=1 prints the kernel's counters.
 */
import { describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DevmirrorError } from '../../src/errors.js';
import { Rng, testSeeds } from '../helpers/prng.js';
import {
  PAGE_SIZE,
  ShadowObject,
  ShadowProcess,
  describeBacking,
  firstDiff,
  pageContents,
  type AccessOutcome,
  type Backing,
} from '../../src/soak/shadow-memory.js';

const MiB = 1024 * 1024;
const PMD = 2 * MiB;
const OWNER = 1;
const FILE_PAGES = 48;
const OPS = Number(process.env.DEVMIRROR_OPS ?? 400);
const CHECK_EVERY = 25;
const MAX_PROCS = 3;
/** Keep the total mapped footprint well below RAM + swap (16 + 64 MiB), so the OOM killer never runs. */
const MAX_MODEL_PAGES = 9000;

type Outcome<T> = { ok: true; value: T } | { ok: false; err: DevmirrorError };

async function attempt<T>(f: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await f() };
  } catch (e) {
    if (e instanceof DevmirrorError) return { ok: false, err: e };
    throw e;
  }
}

function hex(n: number): string {
  return '0x' + n.toString(16);
}

class Fail extends Error {}

interface World {
  k: Kernel;
  rng: Rng;
  procs: Map<number, ShadowProcess>;
  files: ShadowObject[];
  shmemCount: number;
  hugeMaps: number;
  log: string[];
}

function totalModelPages(w: World): number {
  let n = 0;
  for (const p of w.procs.values()) n += p.pages.size;
  return n;
}

function pickProc(w: World): ShadowProcess {
  return w.rng.pick([...w.procs.values()]);
}

/** A random mapped page of p, or null. */
function pickPage(w: World, p: ShadowProcess): number | null {
  if (p.pages.size === 0) return null;
  // Map iteration is insertion ordered: choose by index.
  const i = w.rng.int(p.pages.size);
  let j = 0;
  for (const va of p.pages.keys()) if (j++ === i) return va;
  return null;
}

/** A random sub-range [s, e) of the run of mapped pages around a random page, at most maxPages. */
function pickSubrange(w: World, p: ShadowProcess, maxPages: number): [number, number] | null {
  const va = pickPage(w, p);
  if (va === null) return null;
  const [rs, re] = p.runAround(va);
  const runPages = (re - rs) / PAGE_SIZE;
  const n = w.rng.range(1, Math.min(maxPages, runPages));
  const firstIdx = w.rng.int(runPages - n + 1);
  const s = rs + firstIdx * PAGE_SIZE;
  return [s, s + n * PAGE_SIZE];
}

function expectOutcome<T>(what: string, got: Outcome<T>, want: AccessOutcome | { ok: false; code: string }): void {
  if (want.ok) {
    if (!got.ok) throw new Fail(`${what}: expected success, got ${got.err.code} ${got.err.message}`);
    return;
  }
  if (got.ok) throw new Fail(`${what}: expected ${want.code}, but it succeeded`);
  if (got.err.code !== want.code) throw new Fail(`${what}: expected ${want.code}, got ${got.err.code} ${got.err.message}`);
  if ('siCode' in want && got.err.details?.si_code !== want.siCode) {
    throw new Fail(`${what}: expected si_code ${want.siCode}, got ${String(got.err.details?.si_code)}`);
  }
}

function describePage(w: World, pid: number, va: number): string {
  try {
    const e = w.k.pagemap(pid, va, 1)[0];
    const bits = Object.entries(e)
      .filter(([key, v]) => key !== 'addr' && v !== false && v !== null)
      .map(([key, v]) => (v === true ? key : `${key}=${String(v)}`));
    const vma = w.k.process(pid).mm.vmas.find(va);
    const v = vma ? `vma[${hex(vma.start)}-${hex(vma.end)} prot=${vma.prot}${vma.shared ? ' shared' : ''}${vma.file ? ` file#${vma.file.id}/${vma.file.kind}@${vma.pgoff}` : ''}]` : 'no vma';
    return `pte{${bits.join(' ')}} ${v}`;
  } catch (e) {
    return `(pagemap failed: ${(e as Error).message})`;
  }
}

/** Debugging aid (DEVMIRROR_DUMP_OP=<op index>): the kernel's VMA lists. */
function dumpVmas(w: World): string {
  const out: string[] = [];
  for (const p of w.k.liveProcesses()) {
    out.push(`pid ${p.pid}:`);
    for (const v of p.mm.vmas.items) {
      out.push(`  ${hex(v.start)}-${hex(v.end)} prot=${v.prot}${v.shared ? ' shared' : ''}${v.file ? ` file#${v.file.id}@${v.pgoff}` : ''} huge=${v.huge}${v.mergeable ? ' mergeable' : ''}${v.anonVma ? ' anonVma' : ''}`);
    }
  }
  return out.join('\n');
}

// ---- the check ----------------------------------------------------------------------------------

async function checkAll(w: World, where: string): Promise<void> {
  const { k, rng } = w;
  for (const sp of w.procs.values()) {
    for (const va of sp.sortedPages()) {
      const pg = sp.pages.get(va)!;
      const want = sp.accessOutcome(va, PAGE_SIZE, false);
      if (!want.ok) {
        // Not readable (or beyond EOF): check a sample, the read must fault.
        if (rng.chance(0.2)) expectOutcome(`${where}: read pid ${sp.pid} ${hex(va)}`, await attempt(() => k.read(sp.pid, va, PAGE_SIZE)), want);
        continue;
      }
      const got = await attempt(() => k.read(sp.pid, va, PAGE_SIZE, rng.int(2)));
      if (!got.ok) {
        throw new Fail(`${where}: read pid ${sp.pid} ${hex(va)} (${describeBacking(pg.backing)}) failed: ${got.err.code} ${got.err.message}; ${describePage(w, sp.pid, va)}`);
      }
      const expected = pageContents(pg);
      const d = firstDiff(got.value, expected);
      if (d >= 0) {
        throw new Fail(
          `${where}: DATA MISMATCH pid ${sp.pid} page ${hex(va)} (${describeBacking(pg.backing)}, prot ${pg.prot}, ` +
            `${pg.priv ? 'private copy' : 'no private copy'}) at byte ${d}: got ${got.value[d]}, want ${expected[d]}; ` +
            `${describePage(w, sp.pid, va)}`,
        );
      }
    }
    // Addresses that were mapped once and are not any more must fault with SEGV_MAPERR.
    const gone = [...sp.everMapped].filter((va) => !sp.pages.has(va));
    for (let i = 0; i < Math.min(16, gone.length); i++) {
      const va = rng.pick(gone);
      const got = await attempt(() => k.read(sp.pid, va, 1));
      if (got.ok) throw new Fail(`${where}: pid ${sp.pid} ${hex(va)} should be unmapped but reads; ${describePage(w, sp.pid, va)}`);
      expectOutcome(`${where}: read of unmapped ${hex(va)}`, got, { ok: false, code: 'SIGSEGV', siCode: 'SEGV_MAPERR', va });
    }
  }
  for (const f of w.files) {
    const got = k.fileRead(f.fileId!, 0, f.sizePages * PAGE_SIZE);
    const want = f.readBytes(0, f.sizePages * PAGE_SIZE);
    const d = firstDiff(got, want);
    if (d >= 0) throw new Fail(`${where}: file ${f.name} differs at byte ${d} (page ${Math.floor(d / PAGE_SIZE)}): got ${got[d]}, want ${want[d]}`);
  }
  const a = k.audit();
  if (!a.ok) throw new Fail(`${where}: audit failed:\n  ${a.problems.join('\n  ')}`);
  if (k.stats.oomKills !== 0) throw new Fail(`${where}: the OOM killer ran (${k.stats.oomKills} kills): the test's footprint is too large`);
}

// ---- operations ----------------------------------------------------------------------------------

type Op = (w: World) => Promise<string>;

function randomProt(rng: Rng): number {
  return rng.weighted({ rw: 8, r: 2, none: 1 }) === 'rw' ? PROT.READ | PROT.WRITE : rng.chance(0.67) ? PROT.READ : PROT.NONE;
}

const ops: Record<string, { weight: number; run: Op }> = {
  mmapAnon: {
    weight: 6,
    run: async (w) => {
      const p = pickProc(w);
      if (totalModelPages(w) > MAX_MODEL_PAGES) return 'skip';
      const huge = w.hugeMaps < 4 && w.rng.chance(0.12);
      const pages = huge ? 1024 : w.rng.range(1, 24);
      const prot = huge ? PROT.READ | PROT.WRITE : randomProt(w.rng);
      const populate = w.rng.chance(0.2);
      const addr = await w.k.mmap(p.pid, { length: pages * PAGE_SIZE, prot, hugepage: huge, populate });
      if (huge) w.hugeMaps++;
      if (p.anyMapped(addr, addr + pages * PAGE_SIZE)) throw new Fail(`mmap returned ${hex(addr)} over mapped pages`);
      p.map(addr, pages, prot, () => ({ t: 'anon' }));
      return `mmap anon pid ${p.pid} ${hex(addr)} +${pages}p prot ${prot}${huge ? ' hugepage' : ''}${populate ? ' populate' : ''}`;
    },
  },
  mmapBig: {
    // A few MiB written in one store: with 16 MiB of RAM this drives direct reclaim and swap.
    weight: 1,
    run: async (w) => {
      const p = pickProc(w);
      const pages = w.rng.range(256, 1024);
      if (totalModelPages(w) + pages > MAX_MODEL_PAGES) return 'skip';
      const addr = await w.k.mmap(p.pid, { length: pages * PAGE_SIZE, prot: PROT.READ | PROT.WRITE });
      p.map(addr, pages, PROT.READ | PROT.WRITE, () => ({ t: 'anon' }));
      const data = w.rng.bytes(pages * PAGE_SIZE);
      await w.k.write(p.pid, addr, data, w.rng.int(2));
      p.write(addr, data);
      return `mmap+write big anon pid ${p.pid} ${hex(addr)} +${pages}p`;
    },
  },
  mmapShared: {
    weight: 3,
    run: async (w) => {
      const p = pickProc(w);
      if (totalModelPages(w) > MAX_MODEL_PAGES) return 'skip';
      const pages = w.rng.range(1, 16);
      const prot = randomProt(w.rng);
      const addr = await w.k.mmap(p.pid, { length: pages * PAGE_SIZE, prot, shared: true, populate: w.rng.chance(0.2) });
      const obj = new ShadowObject(`shmem${w.shmemCount++}`, 'shmem', Infinity, null);
      p.map(addr, pages, prot, (i) => ({ t: 'shared', obj, index: i }));
      return `mmap shared anon pid ${p.pid} ${hex(addr)} +${pages}p prot ${prot} (${obj.name})`;
    },
  },
  mmapFile: {
    weight: 5,
    run: async (w) => {
      const p = pickProc(w);
      if (totalModelPages(w) > MAX_MODEL_PAGES) return 'skip';
      const f = w.rng.pick(w.files);
      const pages = w.rng.range(1, 16);
      const off = w.rng.int(FILE_PAGES - pages + 1);
      const shared = w.rng.chance(0.5);
      const prot = randomProt(w.rng);
      const addr = await w.k.mmap(p.pid, { length: pages * PAGE_SIZE, prot, shared, file: { id: f.fileId!, offset: off * PAGE_SIZE } });
      p.map(addr, pages, prot, (i) => ({ t: shared ? 'shared' : 'privfile', obj: f, index: off + i }));
      return `mmap file ${f.name}@${off} ${shared ? 'shared' : 'private'} pid ${p.pid} ${hex(addr)} +${pages}p prot ${prot}`;
    },
  },
  mmapFixed: {
    weight: 2,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 8);
      if (!r) return 'skip';
      // Sometimes stick out past the run into unmapped space.
      const end = r[1] + (w.rng.chance(0.3) ? w.rng.range(1, 4) * PAGE_SIZE : 0);
      const pages = (end - r[0]) / PAGE_SIZE;
      const shared = w.rng.chance(0.3);
      const prot = PROT.READ | PROT.WRITE;
      const addr = await w.k.mmap(p.pid, { addr: r[0], length: end - r[0], prot, fixed: true, shared });
      if (addr !== r[0]) throw new Fail(`MAP_FIXED returned ${hex(addr)}, not ${hex(r[0])}`);
      p.unmap(r[0], end);
      if (shared) {
        const obj = new ShadowObject(`shmem${w.shmemCount++}`, 'shmem', Infinity, null);
        p.map(addr, pages, prot, (i) => ({ t: 'shared', obj, index: i }));
      } else {
        p.map(addr, pages, prot, () => ({ t: 'anon' }));
      }
      return `mmap MAP_FIXED ${shared ? 'shared' : 'anon'} pid ${p.pid} ${hex(addr)} +${pages}p`;
    },
  },
  munmap: {
    weight: 3,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 12);
      if (!r) return 'skip';
      const end = r[1] + (w.rng.chance(0.2) ? PAGE_SIZE : 0);
      await w.k.munmap(p.pid, r[0], end - r[0]);
      p.unmap(r[0], end);
      return `munmap pid ${p.pid} ${hex(r[0])} +${(end - r[0]) / PAGE_SIZE}p`;
    },
  },
  mremap: {
    weight: 5,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 16);
      if (!r) return 'skip';
      const [addr, oldEnd] = r;
      const oldLen = oldEnd - addr;
      const oldPages = oldLen / PAGE_SIZE;
      const kind = w.rng.weighted({ grow: 3, shrink: 2, dontunmap: 2, fixed: 2 });
      const first = p.pages.get(addr)!;
      let newPages = oldPages;
      if (kind === 'grow') newPages = oldPages + w.rng.range(1, 8);
      else if (kind === 'shrink') newPages = oldPages > 1 ? w.rng.range(1, oldPages - 1) : 1;
      else if (kind === 'fixed') newPages = w.rng.range(1, oldPages + 4);
      // Growing a file mapping past EOF would make SIGBUS pages: stay inside the file.
      if (newPages > oldPages && first.backing.t !== 'anon' && first.backing.obj.kind === 'file') {
        newPages = Math.max(oldPages, Math.min(newPages, first.backing.obj.sizePages - first.backing.index));
      }
      if (newPages > oldPages && totalModelPages(w) > MAX_MODEL_PAGES) return 'skip';
      const newLen = newPages * PAGE_SIZE;
      let newAddr: number | undefined;
      if (kind === 'fixed') {
        const target = w.rng.chance(0.5) ? pickPage(w, p) : null;
        newAddr = target ?? 0x200000000000 + w.rng.int(1 << 16) * PAGE_SIZE;
        if (newAddr < addr + oldLen && addr < newAddr + newLen) newAddr = 0x300000000000 + w.rng.int(1 << 16) * PAGE_SIZE;
      }
      const args = {
        addr,
        length: oldLen,
        newLength: newLen,
        maymove: true,
        dontunmap: kind === 'dontunmap' || (kind === 'fixed' && newPages === oldPages && w.rng.chance(0.3)),
        fixed: kind === 'fixed',
        newAddr,
      };
      const desc = `mremap pid ${p.pid} ${hex(addr)} ${oldPages}p -> ${newPages}p ${kind}${args.dontunmap ? ' DONTUNMAP' : ''}${newAddr !== undefined ? ` to ${hex(newAddr)}` : ''}`;
      // The old range must lie in one VMA (else EFAULT): that is the one VMA fact taken from the
      // kernel; the model must agree that the whole range is mapped.
      const vma = w.k.process(p.pid).mm.vmas.find(addr);
      const oneVma = vma !== null && addr + oldLen <= vma.end;
      const got = await attempt(() => w.k.mremap(p.pid, args));
      if (!oneVma) {
        expectOutcome(desc, got, { ok: false, code: 'EFAULT' });
        return `${desc} -> EFAULT (spans VMAs)`;
      }
      if (!got.ok) throw new Fail(`${desc}: failed with ${got.err.code} ${got.err.message}`);
      const to = got.value;
      if (args.fixed) {
        if (to !== newAddr) throw new Fail(`${desc}: MREMAP_FIXED returned ${hex(to)}`);
        p.unmap(newAddr!, newAddr! + newLen);
        if (newPages < oldPages) {
          p.unmap(addr + newLen, addr + oldLen);
          p.move(addr, newLen, to, newLen, args.dontunmap);
        } else {
          p.move(addr, oldLen, to, newLen, args.dontunmap);
        }
      } else if (newPages < oldPages) {
        if (to !== addr) throw new Fail(`${desc}: shrink moved to ${hex(to)}`);
        p.unmap(addr + newLen, addr + oldLen);
      } else {
        if (to !== addr && p.anyMapped(to, to + newLen)) throw new Fail(`${desc}: moved onto mapped pages at ${hex(to)}`);
        if (to === addr && args.dontunmap) throw new Fail(`${desc}: DONTUNMAP did not move`);
        if (to === addr && p.anyMapped(addr + oldLen, addr + newLen)) throw new Fail(`${desc}: grew in place over mapped pages`);
        p.move(addr, oldLen, to, newLen, args.dontunmap);
      }
      return `${desc} => ${hex(to)}`;
    },
  },
  mprotect: {
    weight: 4,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 12);
      if (!r) return 'skip';
      const end = r[1] + (w.rng.chance(0.1) ? PAGE_SIZE : 0);
      // Mostly restore read-write, so writes keep landing.
      const prot = w.rng.chance(0.55) ? PROT.READ | PROT.WRITE : w.rng.chance(0.7) ? PROT.READ : PROT.NONE;
      const got = await attempt(() => w.k.mprotect(p.pid, r[0], end - r[0], prot));
      const desc = `mprotect pid ${p.pid} ${hex(r[0])} +${(end - r[0]) / PAGE_SIZE}p prot ${prot}`;
      if (!p.covers(r[0], end)) {
        // As Linux (do_mprotect_pkey): the pages before the first hole get the new protection,
        // then the call fails with ENOMEM (a hole at the start changes nothing).
        expectOutcome(desc, got, { ok: false, code: 'ENOMEM' });
        let holeAt = r[0];
        while (holeAt < end && p.isMapped(holeAt)) holeAt += PAGE_SIZE;
        p.setProt(r[0], holeAt, prot);
        return `${desc} -> ENOMEM`;
      }
      expectOutcome(desc, got, { ok: true });
      p.setProt(r[0], end, prot);
      return desc;
    },
  },
  write: {
    weight: 30,
    run: async (w) => {
      const p = pickProc(w);
      const va = pickPage(w, p);
      if (va === null) return 'skip';
      const off = w.rng.int(PAGE_SIZE);
      const len = w.rng.chance(0.15) ? w.rng.range(1, 2 * PAGE_SIZE) : w.rng.range(1, 512);
      let addr = va + off;
      let data = w.rng.bytes(len);
      if (w.rng.chance(0.15)) {
        // Whole pages of a common pattern, so KSM finds duplicates.
        addr = va;
        data = new Uint8Array(PAGE_SIZE).fill(w.rng.pick([0, 0x55, 0xaa]));
      }
      const want = p.accessOutcome(addr, data.length, true);
      if (!want.ok && want.code === 'SIGBUS') return 'skip';
      const node = w.rng.int(2);
      const got = await attempt(() => w.k.write(p.pid, addr, data, node));
      const desc = `write pid ${p.pid} ${hex(addr)} +${data.length}B node ${node}`;
      expectOutcome(desc, got, want);
      if (want.ok) p.write(addr, data);
      return want.ok ? desc : `${desc} -> ${want.code}`;
    },
  },
  read: {
    weight: 10,
    run: async (w) => {
      const p = pickProc(w);
      const va = pickPage(w, p);
      if (va === null) return 'skip';
      const addr = va + w.rng.int(PAGE_SIZE);
      const len = w.rng.range(1, 2 * PAGE_SIZE);
      const want = p.accessOutcome(addr, len, false);
      if (!want.ok && want.code === 'SIGBUS') return 'skip';
      const got = await attempt(() => w.k.read(p.pid, addr, len, w.rng.int(2)));
      const desc = `read pid ${p.pid} ${hex(addr)} +${len}B`;
      expectOutcome(desc, got, want);
      if (got.ok) {
        const exp = p.read(addr, len);
        const d = firstDiff(got.value, exp);
        if (d >= 0) {
          const pva = Math.floor((addr + d) / PAGE_SIZE) * PAGE_SIZE;
          throw new Fail(`${desc}: DATA MISMATCH at ${hex(addr + d)}: got ${got.value[d]}, want ${exp[d]}; ${describePage(w, p.pid, pva)}`);
        }
      }
      return want.ok ? desc : `${desc} -> ${want.code}`;
    },
  },
  fork: {
    weight: 3,
    run: async (w) => {
      if (w.procs.size >= MAX_PROCS) return 'skip';
      const parent = pickProc(w);
      if (totalModelPages(w) + parent.pages.size > MAX_MODEL_PAGES) return 'skip';
      const child = await w.k.fork(parent.pid);
      const sc = new ShadowProcess(child.pid);
      parent.forkInto(sc);
      w.procs.set(child.pid, sc);
      return `fork pid ${parent.pid} -> ${child.pid}`;
    },
  },
  exit: {
    weight: 1.5,
    run: async (w) => {
      if (w.procs.size < 2) return 'skip';
      const p = pickProc(w);
      await w.k.exit(p.pid);
      w.procs.delete(p.pid);
      return `exit pid ${p.pid}`;
    },
  },
  spawn: {
    weight: 1,
    run: async (w) => {
      if (w.procs.size >= MAX_PROCS) return 'skip';
      const np = w.k.createProcess();
      w.procs.set(np.pid, new ShadowProcess(np.pid));
      return `createProcess ${np.pid}`;
    },
  },
  dontneed: {
    weight: 3,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 12);
      if (!r) return 'skip';
      const end = r[1] + (w.rng.chance(0.1) ? PAGE_SIZE : 0);
      const got = await attempt(() => w.k.madvise(p.pid, r[0], end - r[0], 'dontneed'));
      const desc = `madvise DONTNEED pid ${p.pid} ${hex(r[0])} +${(end - r[0]) / PAGE_SIZE}p`;
      // The mapped part is advised even when the range has a hole (then ENOMEM).
      p.dropPrivate(r[0], end);
      expectOutcome(desc, got, p.covers(r[0], end) ? { ok: true } : { ok: false, code: 'ENOMEM' });
      return desc;
    },
  },
  pageout: {
    weight: 3,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 64);
      if (!r) return 'skip';
      const res = await w.k.madvise(p.pid, r[0], r[1] - r[0], 'pageout');
      return `madvise PAGEOUT pid ${p.pid} ${hex(r[0])} +${(r[1] - r[0]) / PAGE_SIZE}p (${res.pages} reclaimed)`;
    },
  },
  mergeable: {
    weight: 2,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 32);
      if (!r) return 'skip';
      await w.k.madvise(p.pid, r[0], r[1] - r[0], 'mergeable');
      const res = await w.k.ksm();
      return `madvise MERGEABLE pid ${p.pid} ${hex(r[0])} +${(r[1] - r[0]) / PAGE_SIZE}p; ksm merged ${res.merged}`;
    },
  },
  hugepage: {
    weight: 1,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 600);
      if (!r) return 'skip';
      await w.k.madvise(p.pid, r[0], r[1] - r[0], w.rng.chance(0.8) ? 'hugepage' : 'nohugepage');
      return `madvise (NO)HUGEPAGE pid ${p.pid} ${hex(r[0])} +${(r[1] - r[0]) / PAGE_SIZE}p`;
    },
  },
  reclaim: {
    weight: 3,
    run: async (w) => {
      const res = await w.k.reclaim(w.rng.range(16, 256));
      return `reclaim: ${res.reclaimed} reclaimed, ${res.swappedOut} swapped out`;
    },
  },
  compact: {
    weight: 1.5,
    run: async (w) => {
      const res = await w.k.compact(w.rng.int(2));
      return `compact: block ${res.block} migrated ${res.migrated} failed ${res.failed}`;
    },
  },
  migrate: {
    weight: 2,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 64);
      if (!r) return 'skip';
      const node = w.rng.int(2);
      const res = await w.k.migrate(p.pid, r[0], r[1] - r[0], node);
      return `migrate pid ${p.pid} ${hex(r[0])} +${(r[1] - r[0]) / PAGE_SIZE}p -> node ${node}: ${res.migrated}/${res.scanned}`;
    },
  },
  numa: {
    weight: 1,
    run: async (w) => {
      const p = pickProc(w);
      const res = await w.k.numaBalance(p.pid);
      return `numaBalance pid ${p.pid}: ${res.hinted} hinted`;
    },
  },
  ksm: {
    weight: 1,
    run: async (w) => `ksm: merged ${(await w.k.ksm()).merged}`,
  },
  khugepaged: {
    weight: 1,
    run: async (w) => `khugepaged: collapsed ${(await w.k.khugepaged()).collapsed}`,
  },
  collapse: {
    weight: 2,
    run: async (w) => {
      const p = pickProc(w);
      const va = pickPage(w, p);
      if (va === null) return 'skip';
      const res = await w.k.collapse(p.pid, va);
      return `collapse pid ${p.pid} ${hex(Math.floor(va / PMD) * PMD)}: ${res}`;
    },
  },
  splitThp: {
    weight: 2,
    run: async (w) => {
      const p = pickProc(w);
      const va = pickPage(w, p);
      if (va === null) return 'skip';
      const res = await w.k.splitThp(p.pid, va);
      return `splitThp pid ${p.pid} ${hex(va)}: ${res}`;
    },
  },
  writeback: {
    weight: 1.5,
    run: async (w) => {
      if (w.rng.chance(0.5)) return `writeback: ${(await w.k.writeback()).written} written`;
      const p = pickProc(w);
      const r = pickSubrange(w, p, 32);
      if (!r) return 'skip';
      const res = await w.k.msync(p.pid, r[0], r[1] - r[0]);
      return `msync pid ${p.pid} ${hex(r[0])} +${(r[1] - r[0]) / PAGE_SIZE}p: ${res.written} written`;
    },
  },
  toDevice: {
    weight: 3,
    run: async (w) => {
      const p = pickProc(w);
      const r = pickSubrange(w, p, 32);
      if (!r) return 'skip';
      const vma = w.k.process(p.pid).mm.vmas.find(r[0]);
      const inOne = vma !== null && r[1] <= vma.end;
      const got = await attempt(() => w.k.migrateToDevice(p.pid, r[0], r[1], OWNER));
      const desc = `migrateToDevice pid ${p.pid} ${hex(r[0])} +${(r[1] - r[0]) / PAGE_SIZE}p`;
      expectOutcome(desc, got, inOne ? { ok: true } : { ok: false, code: 'EINVAL' });
      return got.ok ? `${desc}: moved ${got.value.moved}` : `${desc} -> EINVAL`;
    },
  },
  toSystem: {
    weight: 1.5,
    run: async (w) => {
      if (w.rng.chance(0.2)) return `evictDeviceMemory: ${await w.k.evictDeviceMemory(OWNER)}`;
      const p = pickProc(w);
      const r = pickSubrange(w, p, 64);
      if (!r) return 'skip';
      const res = await w.k.migrateToSystem(p.pid, r[0], r[1], OWNER);
      return `migrateToSystem pid ${p.pid} ${hex(r[0])} +${(r[1] - r[0]) / PAGE_SIZE}p: moved ${res.moved}`;
    },
  },
  fileWrite: {
    weight: 2,
    run: async (w) => {
      const f = w.rng.pick(w.files);
      const len = w.rng.range(1, 2 * PAGE_SIZE);
      const off = w.rng.int(FILE_PAGES * PAGE_SIZE - len);
      const data = w.rng.bytes(len);
      await w.k.fileWrite(f.fileId!, off, data);
      f.writeBytes(off, data);
      return `fileWrite ${f.name} @${off} +${len}B`;
    },
  },
  fileRead: {
    weight: 1,
    run: async (w) => {
      const f = w.rng.pick(w.files);
      const len = w.rng.range(1, 3 * PAGE_SIZE);
      const off = w.rng.int(FILE_PAGES * PAGE_SIZE - len);
      const got = w.k.fileRead(f.fileId!, off, len);
      const d = firstDiff(got, f.readBytes(off, len));
      if (d >= 0) throw new Fail(`fileRead ${f.name} @${off}: mismatch at +${d}`);
      return `fileRead ${f.name} @${off} +${len}B`;
    },
  },
};

const weights = Object.fromEntries(Object.entries(ops).map(([name, o]) => [name, o.weight])) as Record<string, number>;

async function runSeed(seed: number): Promise<{ k: Kernel; log: string[] }> {
  const k = new Kernel({ memoryBytes: 16 * MiB, swapBytes: 64 * MiB, deviceMemoryBytes: 4 * MiB, bootId: 1 });
  const w: World = { k, rng: new Rng(seed), procs: new Map(), files: [], shmemCount: 0, hugeMaps: 0, log: [] };
  for (let i = 0; i < 2; i++) {
    const f = k.createFile(FILE_PAGES * PAGE_SIZE);
    const sf = new ShadowObject(`file${f.id}`, 'file', FILE_PAGES, f.id);
    // Start with some contents on "disk" through the page cache.
    const init = w.rng.bytes(FILE_PAGES * PAGE_SIZE);
    await k.fileWrite(f.id, 0, init);
    sf.writeBytes(0, init);
    w.files.push(sf);
  }
  for (let i = 0; i < 2; i++) {
    const p = k.createProcess();
    w.procs.set(p.pid, new ShadowProcess(p.pid));
  }
  let i = 0;
  let current = '';
  const ooms: string[] = [];
  k.observe({
    onOomKill: (victim, reason) =>
      ooms.push(
        `OOM kill of pid ${victim.pid} during op #${i} (${current}): ${reason}; free frames ${k.mem.freeFrames()}, ` +
          `free swap slots ${k.swap.free()}/${k.swap.slots}, lru active ${k.lru.active.size} inactive ${k.lru.inactive.size}`,
      ),
  });
  try {
    for (; i < OPS; i++) {
      const name = w.rng.weighted(weights);
      current = name;
      const dump = process.env.DEVMIRROR_DUMP_OP === String(i);
      if (dump) console.log(`before #${i}:\n${dumpVmas(w)}`);
      const desc = await ops[name].run(w);
      if (dump) console.log(`after #${i} (${desc}):\n${dumpVmas(w)}`);
      w.log.push(`#${i} ${desc === 'skip' ? `${name} (skipped)` : desc}`);
      if ((i + 1) % CHECK_EVERY === 0) await checkAll(w, `checkpoint after op #${i}`);
    }
    await checkAll(w, 'final check');
    // Exit everything: nothing may be left behind.
    for (const p of [...w.procs.values()]) {
      await k.exit(p.pid);
      w.procs.delete(p.pid);
    }
    const a = k.audit();
    if (!a.ok) throw new Fail(`audit after every process exited:\n  ${a.problems.join('\n  ')}`);
  } catch (e) {
    const tail = w.log.slice(-Number(process.env.DEVMIRROR_LOG_TAIL ?? 25)).join('\n  ');
    let msg = e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
    if (ooms.length) msg += `\n  ${ooms.join('\n  ')}`;
    const mem = `free frames ${k.mem.freeFrames()}, free swap ${k.swap.free()}, stats ${JSON.stringify(k.stats)}`;
    const err = new Error(`data-integrity seed=${seed} failed at op #${i} (${current}): ${msg}\n  ${mem}\n  last ops:\n  ${tail}\n  replay: DEVMIRROR_SEED=${seed} npx vitest run test/kernel/data-integrity.test.ts`);
    if (e instanceof Error) err.stack = `${err.message}\n${e.stack ?? ''}`;
    console.error(err.message);
    throw err;
  }
  return { k, log: w.log };
}

describe('data integrity: an independent shadow model predicts every page', () => {
  for (const seed of testSeeds([1, 2, 3, 4, 5])) {
    it(`seed ${seed}: ${OPS} random operations, checked every ${CHECK_EVERY}`, async () => {
      const { k } = await runSeed(seed);
      if (process.env.DEVMIRROR_VERBOSE) console.log(`seed ${seed} stats`, JSON.stringify(k.stats));
      // The run must really have exercised the interesting paths.
      expect(k.stats.swapOuts, 'swap-outs').toBeGreaterThan(0);
      expect(k.stats.swapIns, 'swap-ins').toBeGreaterThan(0);
      expect(k.stats.cowFaults, 'COW faults').toBeGreaterThan(0);
      expect(k.stats.oomKills).toBe(0);
    });
  }
});
