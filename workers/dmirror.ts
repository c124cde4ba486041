/**
 * dmirror: the kernel's reference test device (lib/test_hmm.c), so the kernel's own hmm-tests can
 * run against the emulator.
 *
 * One interval subscription over the whole address space; a mirror `pt` (page -> frame, tagged
 * WRITE or ATOMIC); a mutex (the driver lock). invalidate: skip a MIGRATE this device caused (no
 * setSeq: the migration code updates the mirror), else lock (trylock when not blockable), setSeq,
 * erase the range *inclusive of the end page* (one page too many, as the kernel does), unlock.
 * Commands mirror the ioctls: read, write, migrate-to-device, migrate-to-system, snapshot,
 * exclusive, check-exclusive, release, flags; each returns `cpages` and `faults`.
 */
import { PAGE_SIZE, ULONG_MAX } from '../src/kernel/layout.js';
import { ERRNO, HMM_PFN, hmmPfnOrder } from '../src/kernel/hmm.js';
import { ZERO_PFN } from '../src/kernel/phys-mem.js';
import type { MirrorSummary } from '../src/devices/protocol.js';
import { Device } from './runtime/device.js';
import { PageMap } from './runtime/page-map.js';
import type { DevRange, DevSub, DeviceHost, IntervalHandler } from './runtime/host.js';

export const SNAPSHOT = {
  ERROR: 0xff,
  NONE: 0,
  READ: 1,
  WRITE: 2,
  PMD: 4,
  PUD: 8,
  ZERO: 0x10,
  DEV_PRIVATE_LOCAL: 0x20,
  DEV_PRIVATE_REMOTE: 0x30,
} as const;

export const DMIRROR_FLAG_FAIL_ALLOC = 1;

interface Entry {
  pfn: number;
  write: boolean;
  atomic: boolean;
}

const CHUNK_PAGES = 64;
const HUGE = 2 * 1024 * 1024;
const ERRNAME: Record<number, string> = { [-1]: 'EPERM', [-2]: 'ENOENT', [-12]: 'ENOMEM', [-14]: 'EFAULT', [-16]: 'EBUSY', [-22]: 'EINVAL' };

class CmdError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown>,
  ) {
    super(message);
  }
}

interface Cmd {
  addr: number;
  npages: number;
  cpages: number;
  faults: number;
}

/**
 * Mirror changes remembered for changedSince (migrate/exclusive replies racing a zap). A power of
 * two: the slot is the change number's low bits (a mask, not an integer division).
 */
const CHANGE_RING = 256;

export class Dmirror extends Device implements IntervalHandler {
  readonly pt = new PageMap<Entry>();
  sub!: DevSub;
  flags = 0;

  private readonly counters: { invalidations_zapped: number; inv_pages_unmapped: number; inv_pages_downgraded: number };

  constructor(host: DeviceHost) {
    super(host);
    this.counters = host.hotCounters({ invalidations_zapped: 0, inv_pages_unmapped: 0, inv_pages_downgraded: 0 });
    const cmd = (name: string, fn: (c: Cmd, args: Record<string, unknown>) => Promise<Uint8Array | void>): void =>
      host.onCommand(name, async (args) => {
        const c: Cmd = { addr: Number(args.addr), npages: Number(args.npages ?? 0), cpages: 0, faults: 0 };
        if (!Number.isSafeInteger(c.addr) || c.addr < 0 || c.addr % PAGE_SIZE !== 0 || !Number.isSafeInteger(c.npages) || c.npages < 0) {
          throw new CmdError('EINVAL', 'bad address or page count', { cpages: 0, faults: 0 });
        }
        try {
          const data = await fn(c, args);
          return { cpages: c.cpages, faults: c.faults, ...(data ? { data } : {}) };
        } catch (e) {
          if (e instanceof CmdError) {
            Object.assign(e.details, { cpages: c.cpages, faults: c.faults });
            throw e;
          }
          throw e;
        }
      });
    cmd('read', (c) => this.read(c));
    cmd('write', (c, a) => this.write(c, a.data as Uint8Array));
    cmd('migrate-to-device', (c) => this.migrateToDevice(c));
    cmd('migrate-to-system', (c) => this.migrateToSystem(c));
    cmd('snapshot', (c) => this.snapshot(c));
    cmd('exclusive', (c) => this.exclusive(c));
    cmd('check-exclusive', (c) => this.checkExclusive(c));
    cmd('release', async () => {
      await this.host.evictDeviceMemory();
    });
    host.onCommand('flags', (args) => {
      this.flags = Number(args.flags ?? 0);
      return { flags: this.flags };
    });
  }

  async attach(): Promise<void> {
    this.sub = await this.host.insertInterval(0, ULONG_MAX - PAGE_SIZE, this, 'dmirror');
  }

  // ---- the notifier --------------------------------------------------------------------------

  /** The driver lock is free and the device quiet: invalidate below completes at once. */
  ackFirst(): boolean {
    return !this.lock.isLocked && this.quiet();
  }

  invalidate(sub: DevSub, r: DevRange, curSeq: number): boolean | Promise<boolean> {
    const seen = this.seen(r);
    // test_hmm: a migration this device started updates the mirror itself.
    if (seen.event === 6 /* MIGRATE */ && seen.owner === this.host.deviceId) {
      this.inc('own_events_skipped');
      return true;
    }
    if (this.ignores(r)) return true;
    const action = this.policy === 'aware' ? this.awareAction(r) : 'zap';
    if (action === 'skip') return true;
    if (!r.blockable) {
      if (!this.lock.tryLock('invalidate')) return false;
      this.zap(sub, r, curSeq, action);
      return true;
    }
    const locked = this.lock.lock('invalidate');
    // No closure unless the lock is contended: this is the handshake's path.
    return locked ? locked.then(() => this.zapAndQuiesce(sub, r, curSeq, action)) : this.zapAndQuiesce(sub, r, curSeq, action);
  }

  private zapAndQuiesce(sub: DevSub, r: DevRange, curSeq: number, action: 'zap' | 'drop' | 'downgrade'): boolean | Promise<boolean> {
    this.zap(sub, r, curSeq, action);
    const q = this.quiesce(r.start, Math.min(r.end, 2 ** 53));
    return q ? q.then(() => true) : true;
  }

  private zap(sub: DevSub, r: DevRange, curSeq: number, action: 'zap' | 'drop' | 'downgrade'): void {
    try {
      sub.setSeq(curSeq);
      this.noteChange(r.start, r.end);
      const first = Math.floor(r.start / PAGE_SIZE);
      // dmirror_do_update: erase start >> PAGE_SHIFT .. end >> PAGE_SHIFT, inclusive.
      const last = r.end >= ULONG_MAX ? Number.MAX_SAFE_INTEGER : Math.floor(r.end / PAGE_SIZE);
      const downgrade = action === 'downgrade';
      const pt = this.pt;
      // Fixed-shape counters (host.hotCounters): a keyed store on the hot path costs more.
      const c = this.counters;
      c.invalidations_zapped++;
      if (pt.size === 0) {
        // Nothing mirrored: nothing to erase.
      } else if (last - first + 1 > pt.size) {
        this.zapWalk(first, last, downgrade);
      } else {
        let unmapped = 0;
        let downgraded = 0;
        for (let vpn = first; vpn <= last; vpn++) {
          const e = pt.get(vpn);
          if (!e) continue;
          if (!downgrade) {
            pt.delete(vpn);
            unmapped++;
          } else {
            if (e.write) downgraded++;
            e.write = false;
            e.atomic = false;
          }
        }
        c.inv_pages_unmapped += unmapped;
        c.inv_pages_downgraded += downgraded;
      }
    } finally {
      this.lock.unlock();
    }
  }

  /**
   * zap for a range wider than the mirror: walk the mirror instead of the range. Its own method:
   * the closure would otherwise give zap a context allocation on every call, the one-page
   * invalidations included.
   */
  private zapWalk(first: number, last: number, downgrade: boolean): void {
    const c = this.counters;
    const pt = this.pt;
    // Deleting the entry being visited is safe (PageMap.forEach).
    pt.forEach((e, vpn) => {
      if (vpn < first || vpn > last) return;
      if (!downgrade) {
        pt.delete(vpn);
        c.inv_pages_unmapped++;
      } else {
        if (e.write) c.inv_pages_downgraded++;
        e.write = false;
        e.atomic = false;
      }
    });
  }

  // ---- the device's view ---------------------------------------------------------------------

  lookup(va: number, write: boolean): number {
    const e = this.pt.get(Math.floor(va / PAGE_SIZE));
    if (!e || (write && !e.write)) return -1;
    return e.pfn;
  }

  async fault(va: number, write: boolean): Promise<boolean> {
    const start = Math.floor(va / PAGE_SIZE) * PAGE_SIZE;
    return (await this.rangeFault(start, start + PAGE_SIZE, write)) === 0;
  }

  areas(): Array<[number, number]> {
    const c = this.dma.config;
    return c.start !== undefined && c.end !== undefined ? [[c.start, c.end]] : [];
  }

  summary(): MirrorSummary {
    let writable = 0;
    let devicePages = 0;
    for (const e of this.pt.values()) {
      if (e.write) writable++;
      if (e.pfn >= this.ramFrames) devicePages++;
    }
    return { pages: this.pt.size, writable, devicePages, objects: 1 };
  }

  /** dmirror_range_fault: the section-5 loop, 1000 ms budget. */
  private async rangeFault(start: number, end: number, write: boolean): Promise<number> {
    // Deliberate bug (lock-across-fault): the driver lock is taken before readBegin and held to
    // the end, so an invalidation of the range waits for the lock while the fault waits in
    // readBegin for that invalidation to end: a deadlock (the progress oracle names the cycle).
    const held = this.bug === 'lock-across-fault';
    if (held) await this.lock.lock('fault');
    try {
      return await this.rangeFaultLoop(start, end, write, held);
    } finally {
      if (held) this.lock.unlock();
    }
  }

  private async rangeFaultLoop(start: number, end: number, write: boolean, held: boolean): Promise<number> {
    const deadline = Date.now() + 1000;
    for (;;) {
      if (Date.now() > deadline) return ERRNO.EBUSY;
      const seq = await this.host.readBegin(this.sub);
      const r = await this.host.rangeFault(this.sub, seq, start, end, {
        defaultFlags: HMM_PFN.REQ_FAULT | (write ? HMM_PFN.REQ_WRITE : 0),
        mask: 0,
        ownerSelf: true,
      });
      if (r.ret === ERRNO.EBUSY) continue;
      if (r.ret < 0) return r.ret;
      if (!held) await this.lock.lock('fault');
      try {
        if (this.retry(this.sub, seq)) continue;
        // dmirror_do_fault: store the pages, WRITE tag iff HMM_PFN_WRITE.
        for (let i = 0; i < r.pfns.length; i++) {
          const w = r.pfns[i];
          if (!(w & HMM_PFN.VALID)) continue;
          this.pt.set(start / PAGE_SIZE + i, { pfn: w & HMM_PFN.PFN_MASK, write: (w & HMM_PFN.WRITE) !== 0, atomic: false });
        }
        this.inc('faults');
        return 0;
      } finally {
        if (!held) this.lock.unlock();
      }
    }
  }

  /** dmirror_fault: 64-page chunks. */
  private async faultRange(start: number, end: number, write: boolean): Promise<number> {
    for (let a = start; a < end; ) {
      const next = Math.min(end, a + CHUNK_PAGES * PAGE_SIZE);
      const ret = await this.rangeFault(a, next, write);
      if (ret) return ret;
      a = next;
    }
    return 0;
  }

  /** dmirror_do_read / dmirror_do_write: copy page by page; -ENOENT at the first missing page. */
  private copy(c: Cmd, buf: Uint8Array, start: number, end: number, write: boolean): number | Promise<number> {
    for (let a = start; a < end; a += PAGE_SIZE) {
      const e = this.pt.get(a / PAGE_SIZE);
      if (!e || (write && !e.write)) return ERRNO.ENOENT;
      const off = a - c.addr;
      const pending = this.host.access(a, e.pfn, write, buf, off, 0, PAGE_SIZE);
      c.cpages++;
      // Through a socket the access completes later (still under the driver lock); in a worker
      // it is synchronous and the whole copy stays in one turn.
      if (pending) return pending.then(() => this.copy(c, buf, a + PAGE_SIZE, end, write));
    }
    return 0;
  }

  private fail(ret: number, what: string): never {
    throw new CmdError(ERRNAME[ret] ?? 'EINVAL', `${what} failed with ${ERRNAME[ret] ?? ret}`, {});
  }

  private async rw(c: Cmd, buf: Uint8Array, write: boolean): Promise<void> {
    const end = c.addr + c.npages * PAGE_SIZE;
    let start = c.addr;
    for (;;) {
      await this.lock.lock('rw');
      let ret: number;
      try {
        const r = this.copy(c, buf, start, end, write);
        ret = typeof r === 'number' ? r : await r;
      } finally {
        this.lock.unlock();
      }
      if (ret !== ERRNO.ENOENT) {
        if (ret) this.fail(ret, write ? 'write' : 'read');
        return;
      }
      start = c.addr + c.cpages * PAGE_SIZE;
      const f = await this.faultRange(start, end, write);
      if (f) this.fail(f, write ? 'write' : 'read');
      c.faults++;
    }
  }

  async read(c: Cmd): Promise<Uint8Array> {
    const buf = new Uint8Array(c.npages * PAGE_SIZE);
    await this.rw(c, buf, false);
    return buf;
  }

  async write(c: Cmd, data: Uint8Array): Promise<void> {
    const buf = new Uint8Array(c.npages * PAGE_SIZE);
    if (data) buf.set(data.subarray(0, buf.length));
    await this.rw(c, buf, true);
  }

  /** Reads back [start, end) for verification (the migrate and exclusive ioctls end with it). */
  private async readBack(c: Cmd): Promise<Uint8Array> {
    const buf = new Uint8Array(c.npages * PAGE_SIZE);
    c.cpages = 0;
    await this.lock.lock('readback');
    let ret: number;
    try {
      const r = this.copy(c, buf, c.addr, c.addr + c.npages * PAGE_SIZE, false);
      ret = typeof r === 'number' ? r : await r;
    } finally {
      this.lock.unlock();
    }
    if (ret) this.fail(ret, 'read back');
    return buf;
  }

  async migrateToDevice(c: Cmd): Promise<Uint8Array> {
    const end = c.addr + c.npages * PAGE_SIZE;
    for (let a = c.addr; a < end; ) {
      const vma = await this.host.vma(a);
      if (!vma || !(vma.prot & 1)) this.fail(ERRNO.EINVAL, 'migrate to device');
      // Chunks end at 2 MiB boundaries, so an aligned THP can move as one device THP.
      const next = Math.min(end, (Math.floor(a / HUGE) + 1) * HUGE, vma.end);
      const r = await this.host.migrate('to', a, next, (this.flags & DMIRROR_FLAG_FAIL_ALLOC) !== 0);
      // Counted from the reply: what the kernel did before it (splits, its own MIGRATE) is part of
      // the migration the reply describes; frames after it on the connection come after it.
      const since = this.changeGen;
      if (r.ret) this.fail(r.ret, 'migrate to device');
      // dmirror_migrate_finalize_and_map: the device pages go into the mirror. The kernel maps
      // them while the migrated pages are still locked (before migrate_vma_finalize), so nothing
      // can move them back in between; here the reply arrives after the kernel finalized, and a
      // fault elsewhere may already have moved a page back to RAM (migrating-out) or invalidated
      // it: such a page is not mapped (the explorer found this window, scenarios/explore).
      await this.lock.lock('migrate');
      try {
        for (const [va, pfn, , write] of r.pages) if (!this.changedSince(since, va)) this.pt.set(va / PAGE_SIZE, { pfn, write, atomic: false });
      } finally {
        this.lock.unlock();
      }
      this.inc('page_out', r.moved);
      a = next;
    }
    return this.readBack(c);
  }

  async migrateToSystem(c: Cmd): Promise<void> {
    const end = c.addr + c.npages * PAGE_SIZE;
    for (let a = c.addr; a < end; ) {
      const vma = await this.host.vma(a);
      if (!vma || !(vma.prot & 1)) this.fail(ERRNO.EINVAL, 'migrate to system');
      const next = Math.min(end, a + CHUNK_PAGES * PAGE_SIZE, vma.end);
      const r = await this.host.migrate('from', a, next);
      if (r.ret) this.fail(r.ret, 'migrate to system');
      c.cpages += r.moved;
      this.inc('page_in', r.moved);
      a = next;
    }
  }

  /** The kernel moves this device's pages back to RAM: drop them first (dmirror_devmem_fault). */
  dropPages(vas: number[]): void {
    for (const va of vas) {
      this.pt.delete(va / PAGE_SIZE);
      this.noteChange(va, va + PAGE_SIZE);
    }
  }

  /**
   * Ranges zapped or moved out recently, so a mapping computed before them is not installed after:
   * the last CHANGE_RING mirror changes (zaps and moves), as a ring indexed by change number: every
   * invalidation adds one, so this is on the handshake's path (an array trimmed from the front
   * cost about 2 us per invalidation once full).
   */
  private readonly changeStarts = new Float64Array(CHANGE_RING);
  private readonly changeEnds = new Float64Array(CHANGE_RING);
  private changeGen = 0;

  private noteChange(start: number, end: number): void {
    const i = ++this.changeGen & (CHANGE_RING - 1);
    this.changeStarts[i] = start;
    this.changeEnds[i] = end;
  }

  private changedSince(gen: number, va: number): boolean {
    // Older changes than the ring holds: assume changed (not mapping only costs a device fault).
    if (this.changeGen - gen > CHANGE_RING) return true;
    for (let g = gen + 1; g <= this.changeGen; g++) {
      const i = g & (CHANGE_RING - 1);
      if (va >= this.changeStarts[i] && va < this.changeEnds[i]) return true;
    }
    return false;
  }

  async snapshot(c: Cmd): Promise<Uint8Array> {
    const out = new Uint8Array(c.npages);
    const end = c.addr + c.npages * PAGE_SIZE;
    for (let a = c.addr; a < end; ) {
      const next = Math.min(end, a + CHUNK_PAGES * PAGE_SIZE);
      // A temporary interval subscription over exactly this chunk; its callback only sets seq.
      const tmp = await this.host.insertInterval(a, next - a, { invalidate: (s, _r, cur) => (s.setSeq(cur), true) }, 'snapshot');
      try {
        for (;;) {
          const seq = await this.host.readBegin(tmp);
          const r = await this.host.rangeFault(tmp, seq, a, next, { defaultFlags: 0, mask: 0, ownerSelf: true });
          if (r.ret === ERRNO.EBUSY) continue;
          if (r.ret) this.fail(r.ret, 'snapshot');
          await this.lock.lock('snapshot');
          try {
            if (tmp.readRetry(seq)) continue;
            for (let i = 0; i < r.pfns.length; i++) out[(a - c.addr) / PAGE_SIZE + i] = this.mkentry(r.pfns[i]);
          } finally {
            this.lock.unlock();
          }
          break;
        }
      } finally {
        await this.host.removeInterval(tmp);
      }
      c.cpages += (next - a) / PAGE_SIZE;
      a = next;
    }
    return out;
  }

  private mkentry(w: number): number {
    if (w & HMM_PFN.ERROR) return SNAPSHOT.ERROR;
    if (!(w & HMM_PFN.VALID)) return SNAPSHOT.NONE;
    const pfn = w & HMM_PFN.PFN_MASK;
    let perm = 0;
    if (pfn >= this.ramFrames) perm = SNAPSHOT.DEV_PRIVATE_LOCAL; // only our own pages come back valid
    else if (pfn === ZERO_PFN) perm = SNAPSHOT.ZERO;
    perm |= w & HMM_PFN.WRITE ? SNAPSHOT.WRITE : SNAPSHOT.READ;
    const order = hmmPfnOrder(w);
    if (order === 9) perm |= SNAPSHOT.PMD;
    else if (order === 18) perm |= SNAPSHOT.PUD;
    return perm;
  }

  async exclusive(c: Cmd): Promise<Uint8Array> {
    const end = c.addr + c.npages * PAGE_SIZE;
    for (let a = c.addr; a < end; a += PAGE_SIZE) {
      const r = await this.host.exclusive(a);
      const since = this.changeGen;
      if (r.ret) this.fail(ERRNO.EBUSY, 'exclusive');
      // dmirror_atomic_map. The kernel maps while make_device_exclusive's folio is still locked, so
      // no restoring fault can come in between; here a CPU or device fault may already have
      // restored the entry (CLEAR, exclusive_restore) and this mapping would be stale: skip it.
      await this.lock.lock('atomic');
      try {
        if (!this.changedSince(since, a)) this.pt.set(a / PAGE_SIZE, { pfn: r.pfn, write: true, atomic: true });
      } finally {
        this.lock.unlock();
      }
    }
    return this.readBack(c);
  }

  async checkExclusive(c: Cmd): Promise<void> {
    const end = c.addr + c.npages * PAGE_SIZE;
    await this.lock.lock('check');
    try {
      for (let a = c.addr; a < end; a += PAGE_SIZE) {
        if (this.pt.get(a / PAGE_SIZE)?.atomic) this.fail(ERRNO.EPERM, 'check exclusive');
      }
    } finally {
      this.lock.unlock();
    }
  }
}
