/**
 * Triggering an invalidation origin on purpose (POST /v1/kernel/trigger, `devmirror trigger`).
 *
 * Each origin runs the real operation that produces it, restricted to the chosen range where the
 * kernel's own activity allows it (reclaim of those pages, compaction of those pages, a KSM pass
 * over that range...); whole-process operations (fork, exit, clear_refs, the OOM reaper) act on the
 * process. Before acting, the range is checked for what the operation needs, so that an origin
 * that cannot be produced there is refused (DM_ERR_NOT_TRIGGERABLE, with the reason) and changes
 * nothing, instead of doing work that notifies nobody. Two outcomes are only known after acting:
 * a khugepaged collapse that fails for every block (the pages changed under it) is refused after
 * the attempt, and a reclaim that finds every page referenced again (activated, nothing reclaimed)
 * succeeds with its counts in `result`: both change nothing that a real pass would not.
 */
import { Buffer } from 'node:buffer';
import { DevmirrorError } from '../errors.js';
import { FF, PAGE_SIZE, PMD_PAGES, PMD_SIZE, PTE } from './layout.js';
import type { Kernel, Process } from './kernel.js';
import { MMAP_BASE, MMAP_MIN_ADDR, type MM } from './mm.js';
import { ZERO_PFN } from './phys-mem.js';
import { ptePfn, type Pte } from './pte.js';
import { PROT, type Vma } from './vma.js';
import { userRange, changeProtection, touch, withRead } from './syscalls.js';
import { accessCheck } from './fault.js';
import { ORIGINS, type Origin } from '../notifier/range.js';
import { reclaimPages } from './activity/reclaim.js';
import { migratePage } from './activity/migrate.js';
import { hashPage, ksmScan } from './activity/ksm.js';
import { pageDirty, writebackFile } from './activity/writeback.js';
import { splitThpAt } from './activity/thp.js';

/**
 * The pgmap owner of the device_migration and device_exclusive triggers: no device has it, so
 * every device treats the MIGRATE/EXCLUSIVE as another device's (and invalidates), as it would
 * for a second GPU. Fits the frame metadata's 32-bit owner field.
 */
export const TRIGGER_OWNER = 0x7ffffff0;

/** The most pages a trigger inspects (content hashing for KSM, page-by-page searches). */
export const TRIGGER_MAX_PAGES = 1 << 18;

export interface TriggerArgs {
  origin: Origin;
  pid: number;
  addr: number;
  length: number;
  /** NUMA node: the target of migration; for numa_balancing, the CPU's node of the hinting access. */
  node?: number;
}

export interface TriggerResult {
  origin: Origin;
  pid: number;
  start: number;
  end: number;
  /** What was done, in words. */
  did: string;
  /** The operation's own figures (pages reclaimed, migrated, the child's pid, ...). */
  result: Record<string, unknown>;
}

/**
 * The origins a trigger may record besides its own: setup steps (a zero-page read before a COW,
 * make_device_exclusive before a restore), THP splits the operation needs, and what follows (the
 * OOM victim's exit). The caller keeps the invalidations of these origins from its window.
 */
export function triggerFamily(origin: Origin): Origin[] {
  const extra: Partial<Record<Origin, Origin[]>> = {
    exclusive_restore: ['device_exclusive', 'cow_fault'],
    device_exclusive: ['cow_fault'],
    oom_reaper: ['exit'],
  };
  return [origin, 'thp_split', ...(extra[origin] ?? [])];
}

const hex = (n: number): string => `0x${n.toString(16)}`;

function refuse(origin: Origin, start: number, end: number, why: string): never {
  throw new DevmirrorError('DM_ERR_NOT_TRIGGERABLE', `${origin} cannot be produced on [${hex(start)}, ${hex(end)}): ${why}`, { origin });
}

interface Leaf {
  va: number;
  e: Pte;
  level: number;
}

/** Every populated leaf in [start, end) (present, swap, migration, device entries). */
function leaves(mm: MM, start: number, end: number): Leaf[] {
  const out: Leaf[] = [];
  mm.pt.walk(start, end, (va, _idx, level, e) => {
    if (e !== 0 && !(e & PTE.TABLE)) out.push({ va, e, level });
  });
  return out;
}

/** The RAM frames mapped in [start, end) (each page of a huge leaf), zero page and device pages excluded. */
function frames(k: Kernel, mm: MM, start: number, end: number): number[] {
  const out: number[] = [];
  for (const l of leaves(mm, start, end)) {
    if (!(l.e & PTE.PRESENT) || l.e & PTE.DEVICE_PRIVATE) continue;
    const pfn = ptePfn(l.e);
    if (pfn === ZERO_PFN || k.mem.isDevicePfn(pfn)) continue;
    if (l.level === 1) for (let i = 0; i < PMD_PAGES; i++) out.push(pfn + i);
    else out.push(pfn);
  }
  return [...new Set(out)];
}

/** The parts of [start, end) inside VMAs that pass `ok`, clipped. */
function parts(mm: MM, start: number, end: number, ok: (v: Vma) => boolean): Array<{ v: Vma; s: number; e: number }> {
  return mm.vmas
    .overlapping(start, end)
    .filter(ok)
    .map((v) => ({ v, s: Math.max(start, v.start), e: Math.min(end, v.end) }));
}

const privateAnon = (v: Vma): boolean => v.anonymous && !v.shared;

/** Runs the operation behind `origin` on [addr, addr + length) of process `pid`. */
export async function trigger(k: Kernel, a: TriggerArgs): Promise<TriggerResult> {
  if (!ORIGINS.includes(a.origin)) throw new DevmirrorError('DM_ERR_VALIDATION', `unknown origin ${JSON.stringify(a.origin)} (one of ${ORIGINS.join(', ')})`);
  const p = k.process(a.pid);
  const r = userRange(a.addr, a.length, 'EINVAL', false);
  const [start, end] = r as [number, number];
  const mm = p.mm;
  if (mm.exiting) throw new DevmirrorError('DM_ERR_PROCESS_EXITING', `process ${p.pid} is exiting`);
  const no = (why: string): never => refuse(a.origin, start, end, why);
  if ((end - start) / PAGE_SIZE > TRIGGER_MAX_PAGES && ['ksm', 'cow_fault', 'exclusive_restore', 'device_exclusive'].includes(a.origin)) {
    throw new DevmirrorError('DM_ERR_TOO_LARGE', `a ${a.origin} trigger inspects at most ${TRIGGER_MAX_PAGES} pages`);
  }
  const mapped = (): void => {
    if (mm.vmas.overlapping(start, end).length === 0) no('nothing is mapped there');
  };
  const done = (did: string, result: Record<string, unknown> = {}): TriggerResult => ({ origin: a.origin, pid: p.pid, start, end, did, result });

  switch (a.origin) {
    case 'munmap': {
      mapped();
      await k.munmap(p.pid, start, end - start);
      return done('munmap of the range');
    }
    case 'mmap': {
      mapped();
      const prot = mm.vmas.overlapping(start, end)[0].prot;
      await k.mmap(p.pid, { addr: start, length: end - start, prot, fixed: true });
      return done('mmap(MAP_FIXED) of fresh anonymous memory over the range, with the first mapping\'s protection', { addr: start });
    }
    case 'mremap': {
      const v = mm.vmas.find(start);
      if (!v || end > v.end) no('mremap moves part of one mapping: the range must lie inside one VMA');
      const to = mm.vmas.findGapTopDown(end - start, MMAP_BASE, MMAP_MIN_ADDR, PAGE_SIZE);
      if (to < 0) no('no free address range to move it to');
      const addr = await k.mremap(p.pid, { addr: start, length: end - start, newLength: end - start, maymove: true, fixed: true, newAddr: to });
      return done(`mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of the range to ${hex(addr)}`, { newAddr: addr });
    }
    case 'mprotect': {
      mapped();
      if (leaves(mm, start, end).length === 0) no('nothing is populated: mprotect notifies only from the first populated page-table level');
      const v = mm.vmas.overlapping(start, end)[0];
      const prot = v.prot & PROT.WRITE ? v.prot & ~PROT.WRITE : v.prot | PROT.WRITE;
      await k.mprotect(p.pid, start, end - start, prot);
      return done(`mprotect of the range: write permission ${prot & PROT.WRITE ? 'added' : 'removed'}`, { prot });
    }
    case 'madvise': {
      mapped();
      const res = await k.madvise(p.pid, start, end - start, 'dontneed');
      return done('madvise(MADV_DONTNEED) of the range (anonymous contents are lost, as with the syscall)', { ...res });
    }
    case 'brk': {
      const top = Math.ceil(mm.brk / PAGE_SIZE) * PAGE_SIZE;
      if (end !== top || start < mm.brkStart) no(`brk releases the top of the heap: the range must end at the break (${hex(top)}) and start at or above the heap's start (${hex(mm.brkStart)})`);
      const brk = await k.brk(p.pid, start);
      return done(`brk(${hex(start)}): the heap shrinks to the start of the range`, { brk });
    }
    case 'fork': {
      const cow = parts(mm, start, end, (v) => !v.shared && v.anonVma);
      if (cow.length === 0) no('fork write-protects private mappings that hold anonymous pages: none overlaps the range');
      const child = await k.fork(p.pid);
      return done(`fork: a child process ${child.pid} (left running; DELETE /v1/processes/${child.pid} ends it). Every private mapping with anonymous pages is write-protected, not only the range`, { child: child.pid });
    }
    case 'exit': {
      await k.exit(p.pid);
      return done('exit of the process (the whole address space: RELEASE, then UNMAP)');
    }
    case 'clear_refs': {
      await k.clearRefs(p.pid, 'soft-dirty');
      return done('clear_refs soft-dirty (the whole address space, as /proc/PID/clear_refs "4")');
    }
    case 'msync':
    case 'writeback': {
      const files = parts(mm, start, end, (v) => v.sharedFile);
      if (files.length === 0) no('no shared file mapping in the range');
      const dirty = files.some(({ s, e }) => leaves(mm, s, e).some((l) => l.e & PTE.PRESENT && (l.e & PTE.DIRTY || pageDirty(k, ptePfn(l.e)))));
      if (!dirty) no('no dirty page of a shared file mapping in the range: clean pages are not notified');
      let written = 0;
      for (const { v, s, e } of files) {
        if (a.origin === 'msync') written += (await k.msync(p.pid, s, e - s)).written;
        else if (v.file) written += (await writebackFile(k, v.file, v.fileIndex(s), v.fileIndex(e - PAGE_SIZE), 'writeback')).written;
      }
      return done(a.origin === 'msync' ? 'msync of the shared file mappings in the range' : 'writeback (the flusher\'s page_mkclean and write) of the dirty file pages the range maps', { written });
    }
    case 'cow_fault':
      return cowFault(k, p, start, end, no, done);
    case 'exclusive_restore':
    case 'device_exclusive':
      return exclusive(k, p, a.origin, start, end, no, done);
    case 'device_migration': {
      const anon = parts(mm, start, end, privateAnon);
      if (anon.length === 0) no('migration to device memory needs private anonymous memory');
      const { s, e } = anon[0];
      const there = await k.migrateToDevice(p.pid, s, e, TRIGGER_OWNER);
      const back = await k.migrateToSystem(p.pid, s, e, TRIGGER_OWNER);
      return done(`migrate_vma of [${hex(s)}, ${hex(e)}) to device memory (owner ${TRIGGER_OWNER}) and back to RAM`, { toDevice: there.moved, toSystem: back.moved, owner: TRIGGER_OWNER });
    }
    case 'reclaim':
    case 'swap': {
      mapped();
      const swap = a.origin === 'swap';
      const pfns = frames(k, mm, start, end).filter((pfn) => {
        const fl = k.mem.flags(pfn);
        const file = k.fileOf(pfn);
        const swapBacked = (fl & FF.ANON && !(fl & FF.LAZYFREE)) || file?.kind === 'shmem';
        return swap ? swapBacked : !swapBacked && (file !== undefined || (fl & FF.LAZYFREE) !== 0);
      });
      if (pfns.length === 0) {
        no(swap ? 'no swap-backed page (anonymous or shmem) is resident there' : 'no file-backed or lazily freed page is resident there (reclaim of anonymous and shmem pages is a swap-out: origin swap)');
      }
      if (swap && k.swap.free() === 0) no('swap is full');
      const res = await reclaimPages(k, pfns, 'reclaim');
      return done(swap ? 'reclaim of the swap-backed pages of the range: swapped out' : 'reclaim of the file-backed and lazily freed pages of the range: written back if dirty, then dropped', { ...res });
    }
    case 'compaction': {
      mapped();
      const pfns = frames(k, mm, start, end).filter((pfn) => k.mem.flags(pfn) & (FF.ANON | FF.FILE));
      if (pfns.length === 0) no('no movable page is resident there');
      const res = { scanned: 0, migrated: 0, failed: 0 };
      for (const pfn of pfns) {
        if (k.mem.hasFlag(pfn, FF.FREE)) continue;
        res.scanned++;
        const node = k.mem.nodeOfPfn(pfn);
        if ((await migratePage(k, pfn, () => k.mem.tryAlloc(node, true, 0, false), 'compaction')) >= 0) res.migrated++;
        else res.failed++;
      }
      return done('compaction of the range\'s pages: each migrated to another free frame of its node', res);
    }
    case 'migration': {
      mapped();
      if (k.mem.numaNodes < 2 && a.node === undefined) no('one NUMA node: there is nowhere to migrate to');
      const pfns = frames(k, mm, start, end);
      const node = a.node ?? (k.mem.nodeOfPfn(pfns[0] ?? 0) + 1) % k.mem.numaNodes;
      if (!pfns.some((pfn) => k.mem.nodeOfPfn(pfn) !== node)) no(`no resident page off node ${node}`);
      const res = await k.migrate(p.pid, start, end - start, node);
      return done(`migration of the range's pages to node ${node} (migrate_pages)`, { node, ...res });
    }
    case 'numa_balancing':
      return numaBalancing(k, p, start, end, a.node, no, done);
    case 'ksm':
      return ksm(k, p, start, end, no, done);
    case 'khugepaged': {
      const first = Math.ceil(start / PMD_SIZE) * PMD_SIZE;
      const cands: number[] = [];
      for (let h = first; h + PMD_SIZE <= end; h += PMD_SIZE) {
        const v = mm.vmas.find(h);
        if (!v || !privateAnon(v) || v.huge === 'nohugepage' || h + PMD_SIZE > v.end) continue;
        const idx = mm.pt.pmdIndex(h);
        const pmd = idx >= 0 ? mm.pt.load(idx) : 0;
        if (pmd !== 0 && !(pmd & PTE.HUGE)) cands.push(h);
      }
      if (cands.length === 0) no('no 2 MiB-aligned block of private anonymous memory with a page table (not already huge) lies inside the range');
      const results: Record<string, string> = {};
      for (const h of cands) results[hex(h)] = await k.collapse(p.pid, h);
      const collapsed = Object.values(results).filter((x) => x === 'collapsed').length;
      if (collapsed === 0 && Object.values(results).every((x) => x !== 'raced')) no(`no block collapsed (${Object.entries(results).map(([h, x]) => `${h}: ${x}`).join(', ')})`);
      return done('collapse (khugepaged) of every 2 MiB block inside the range', { collapsed, results });
    }
    case 'thp_split': {
      const heads = new Set<number>();
      const hugePmds: number[] = [];
      for (const l of leaves(mm, start, end)) {
        if (!(l.e & PTE.PRESENT)) continue;
        if (l.level === 1) hugePmds.push(l.va);
        else if (k.mem.isCompound(ptePfn(l.e)) && !heads.has(k.mem.headOf(ptePfn(l.e)))) {
          heads.add(k.mem.headOf(ptePfn(l.e)));
          hugePmds.push(l.va);
        }
      }
      if (hugePmds.length === 0) no('no transparent huge page is mapped there');
      let split = 0;
      await mm.mmapLock.read('trigger thp_split');
      try {
        for (const va of hugePmds) if (await splitThpAt(k, mm, va)) split++;
      } finally {
        mm.mmapLock.readUnlock('trigger thp_split');
      }
      return done('split of every transparent huge page mapped in the range (its mappings, then the folio)', { split });
    }
    case 'oom_reaper': {
      const reapable = parts(mm, start, end, (v) => v.anonymous || !v.shared);
      if (reapable.length === 0) no('the OOM reaper unmaps anonymous and private mappings: none overlaps the range');
      const killed = await k.oomKill(p.pid);
      return done('OOM kill of the process: the reaper only runs on a dying task. It unmaps every anonymous or private VMA of the process (non-blockable UNMAP, whole VMA, retried on refusal), then the process exits in the background (RELEASE, UNMAP, recorded after this reply)', { killed });
    }
  }
  throw new DevmirrorError('DM_ERR_VALIDATION', `origin ${a.origin} cannot be triggered`);
}

type No = (why: string) => never;
type Done = (did: string, result?: Record<string, unknown>) => TriggerResult;

/**
 * A write to a page the process shares (the zero page, a page shared with a fork child, a KSM
 * page) copies it: CLEAR from wp_page_copy. The byte written is the byte read, so contents stay.
 * Without such a page, an unpopulated page of a private anonymous mapping is read first (the zero
 * page is mapped, silently) and then written.
 */
async function cowFault(k: Kernel, p: Process, start: number, end: number, no: No, done: Done): Promise<TriggerResult> {
  const mm = p.mm;
  let target = -1;
  for (const { v, s, e } of parts(mm, start, end, (v) => !v.shared && v.writable && v.readable)) {
    for (const l of leaves(mm, s, e)) {
      if (!(l.e & PTE.PRESENT) || l.e & PTE.WRITE || l.level !== 0) continue;
      const pfn = ptePfn(l.e);
      if (pfn === ZERO_PFN || k.mem.mapcount(pfn) > 1 || k.mem.hasFlag(pfn, FF.KSM)) {
        target = l.va;
        break;
      }
    }
    if (target < 0 && v.anonymous) {
      for (let va = s; va < e; va += PAGE_SIZE) {
        if (mm.pt.lookup(va) === 0) {
          target = va;
          break;
        }
      }
    }
    if (target >= 0) break;
  }
  if (target < 0) no('no shared (zero, forked, KSM) page and no unpopulated page of a private anonymous, readable and writable mapping: a write there reuses the page in place');
  // A write access that moves no data (the write fault breaks COW and dirties the entry): reading
  // a byte and writing it back would lose any write that landed in between.
  // An unpopulated page is read first (the zero page is mapped), so the write copies it.
  await withRead(p.mm, 'trigger', async () => {
    accessCheck(p.mm, target, true);
    await touch(k, p.mm, target, false, 0, () => undefined);
    await touch(k, p.mm, target, true, 0, () => undefined);
  });
  return done(`a CPU write access at ${hex(target)} (no data changed) on a copy-on-write page`, { addr: target });
}

async function exclusive(k: Kernel, p: Process, origin: 'exclusive_restore' | 'device_exclusive', start: number, end: number, no: No, done: Done): Promise<TriggerResult> {
  const mm = p.mm;
  if (origin === 'exclusive_restore') {
    const ex = leaves(mm, start, end).find((l) => l.e & PTE.DEVICE_EXCLUSIVE);
    if (ex) {
      await k.read(p.pid, ex.va, 1);
      return done(`a CPU read at ${hex(ex.va)}, a device-exclusive page: the CPU takes it back`, { addr: ex.va, made: false });
    }
  }
  const anon = parts(mm, start, end, (v) => privateAnon(v) && v.writable);
  if (anon.length === 0) no('device-exclusive access needs private anonymous writable memory');
  let va = -1;
  for (const { s, e } of anon) {
    for (let a = s; a < e && va < 0; a += PAGE_SIZE) if (!(mm.pt.lookup(a) & PTE.DEVICE_EXCLUSIVE)) va = a;
    if (va >= 0) break;
  }
  if (va < 0) no('every page there is already device-exclusive');
  const r = await k.makeDeviceExclusive(p.pid, va, TRIGGER_OWNER);
  if (origin === 'device_exclusive') {
    return done(`make_device_exclusive of ${hex(va)} for owner ${TRIGGER_OWNER} (the next CPU access takes it back: exclusive_restore)`, { addr: va, pfn: r.pfn, owner: TRIGGER_OWNER });
  }
  await k.read(p.pid, va, 1);
  return done(`make_device_exclusive of ${hex(va)} (owner ${TRIGGER_OWNER}), then a CPU read there: the CPU takes it back`, { addr: va, made: true });
}

/**
 * task_numa_work over the range only (change_prot_numa: PROTECTION_VMA). With `node`, a CPU of that
 * node then reads the first hinted page: the hinting fault restores it silently and migrates it if
 * it lives elsewhere (CLEAR).
 */
async function numaBalancing(k: Kernel, p: Process, start: number, end: number, node: number | undefined, no: No, done: Done): Promise<TriggerResult> {
  const mm = p.mm;
  if (node !== undefined && (node < 0 || node >= k.mem.numaNodes)) no(`no NUMA node ${node}`);
  const scan = parts(mm, start, end, (v) => v.readable && !(v.file && v.file.kind === 'file' && !v.writable));
  if (!scan.some(({ s, e }) => leaves(mm, s, e).length > 0)) no('no populated page in a mapping NUMA balancing scans (readable, not a read-only file mapping)');
  let hinted = 0;
  let first = -1;
  await mm.mmapLock.read('trigger numa_balancing');
  try {
    for (const { v, s, e } of scan) {
      hinted += await changeProtection(k, mm, v, s, e, v.prot, 'numa_balancing', true);
      if (first < 0) first = leaves(mm, s, e).find((l) => l.e & PTE.PROTNONE)?.va ?? -1;
    }
  } finally {
    mm.mmapLock.readUnlock('trigger numa_balancing');
  }
  let migrated = false;
  if (node !== undefined && first >= 0) {
    const before = ptePfn(mm.pt.lookup(first));
    await k.read(p.pid, first, 1, node);
    migrated = ptePfn(mm.pt.lookup(first)) !== before;
  }
  return done(`NUMA balancing scan of the range (hinting entries)${node !== undefined ? `, then a hinting fault at ${hex(first)} from node ${node}` : ''}`, { hinted, faultAt: first, migrated });
}

/** MADV_MERGEABLE on the range, then a ksmd pass over that range only. */
async function ksm(k: Kernel, p: Process, start: number, end: number, no: No, done: Done): Promise<TriggerResult> {
  const mm = p.mm;
  const anon = parts(mm, start, end, privateAnon);
  if (anon.length === 0) no('KSM merges private anonymous memory');
  // The pages ksmd would take (anonymous, mapped once, order 0), by content.
  const seen = new Map<number, number>();
  let twins = false;
  for (const { s, e } of anon) {
    for (const l of leaves(mm, s, e)) {
      if (!(l.e & PTE.PRESENT) || l.level !== 0) continue;
      const pfn = ptePfn(l.e);
      if (pfn === ZERO_PFN || k.mem.isCompound(pfn)) continue;
      const fl = k.mem.flags(pfn);
      if (!(fl & FF.ANON) || fl & FF.KSM || k.mem.mapcount(pfn) !== 1) continue;
      // ksmd's own hash, then the bytes (a hash match alone is not a twin).
      const h = hashPage(k, pfn);
      const same = seen.get(h);
      if (same === undefined) seen.set(h, pfn);
      else if (Buffer.compare(k.mem.page(same), k.mem.page(pfn)) === 0) twins = true;
    }
  }
  if (!twins) no('no two identical anonymous pages (each mapped once) are resident there');
  for (const { s, e } of anon) await k.madvise(p.pid, s, e - s, 'mergeable');
  const res = await ksmScan(k, { mm, start, end });
  return done('madvise(MADV_MERGEABLE) of the range, then a ksmd pass over it (write-protect, then replace each duplicate)', { ...res });
}
