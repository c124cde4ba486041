/**
 * rdma: an RDMA NIC with On-Demand Paging, after ib_umem_odp and mlx5 (infiniband/hw/mlx5/odp.c).
 *
 * Mirror: memory regions (MRs), each with one interval subscription and a pfn_list. Explicit MRs are
 * registered over an address range (registration maps what is present, without faulting: the
 * SNAPSHOT|ENABLE pass); an implicit MR covers the whole address space and creates 1 GiB child MRs
 * lazily on fault, each with its own subscription, destroyed by deferred work when an invalidation
 * leaves them empty.
 *
 * invalidate (mlx5_ib_invalidate_range), faithful: refuses (false) a non-blockable range; else takes
 * umem_mutex, sets the seq and zaps every valid page in range, for *every* event (RELEASE
 * included): the UMR completes synchronously, which is the quiesce. NIC page faults run
 * map_dma_and_lock (readBegin, hmm_range_fault, umem_mutex, readRetry) and program the MTTs.
 * Prefetch (ibv_advise_mr): PREFETCH maps read-only, PREFETCH_WRITE writable, PREFETCH_NO_FAULT only
 * what is present.
 *
 * Counters as rdma-netlink hwcounters: page_faults, page_invalidations, page_prefetch.
 */
import { PAGE_SIZE } from '../src/kernel/layout.js';
import { ERRNO, HMM_PFN } from '../src/kernel/hmm.js';
import { Mutex } from '../src/lib/locks.js';
import type { MirrorSummary } from '../src/devices/protocol.js';
import { Device } from './runtime/device.js';
import type { DevRange, DevSub, DeviceHost, IntervalHandler } from './runtime/host.js';

const GiB = 2 ** 30;

class Mr {
  readonly pfns: Int32Array;
  readonly write: Uint8Array;
  readonly umemMutex: Mutex;
  sub!: DevSub;
  npages = 0;
  dead = false;
  constructor(
    readonly id: number,
    readonly start: number,
    readonly end: number,
    readonly writable: boolean,
    readonly child: boolean,
  ) {
    const n = (end - start) / PAGE_SIZE;
    this.pfns = new Int32Array(n).fill(-1);
    this.write = new Uint8Array(n);
    this.umemMutex = new Mutex(`umem[${id}]`);
  }
  idx(va: number): number {
    return Math.floor((va - this.start) / PAGE_SIZE);
  }
}

export type AdviseMode = 'PREFETCH' | 'PREFETCH_WRITE' | 'PREFETCH_NO_FAULT';

export class Rdma extends Device implements IntervalHandler {
  readonly mrs = new Map<number, Mr>();
  private readonly bySub = new Map<number, Mr>();
  private nextMr = 1;
  implicit = false;
  private implicitWritable = true;

  constructor(host: DeviceHost) {
    super(host);
    for (const c of ['page_faults', 'page_invalidations', 'page_prefetch']) host.counters[c] = 0;
    host.onCommand('reg-mr', async (a) => ({ mr: (await this.regMr(Number(a.addr), Number(a.length), a.write !== false)).id }));
    host.onCommand('dereg-mr', async (a) => this.deregMr(Number(a.mr)));
    host.onCommand('advise', async (a) => this.advise(Number(a.addr), Number(a.length), String(a.advice ?? 'PREFETCH') as AdviseMode));
    host.onCommand('mrs', () => [...this.mrs.values()].map((m) => ({ id: m.id, start: m.start, end: m.end, npages: m.npages, child: m.child })));
  }

  async attach(): Promise<void> {
    const o = this.host.options;
    this.implicit = o.implicit === true;
    this.implicitWritable = o.write !== false;
    for (const m of (o.mrs as Array<{ addr: number; length: number; write?: boolean }> | undefined) ?? []) {
      await this.regMr(m.addr, m.length, m.write !== false);
    }
  }

  private async newMr(start: number, end: number, writable: boolean, child: boolean): Promise<Mr> {
    const mr = new Mr(this.nextMr++, start, end, writable, child);
    mr.sub = await this.host.insertInterval(start, end - start, this, `${child ? 'imr-child' : 'mr'}${mr.id}`);
    this.mrs.set(mr.id, mr);
    this.bySub.set(mr.sub.id, mr);
    return mr;
  }

  /** ibv_reg_mr with IBV_ACCESS_ON_DEMAND: subscribe, then map what is present (no faulting). */
  async regMr(addr: number, length: number, writable: boolean): Promise<Mr> {
    const start = Math.floor(addr / PAGE_SIZE) * PAGE_SIZE;
    const end = Math.ceil((addr + length) / PAGE_SIZE) * PAGE_SIZE;
    const mr = await this.newMr(start, end, writable, false);
    await this.mapDma(mr, start, end, false, false);
    return mr;
  }

  async deregMr(id: number): Promise<boolean> {
    const mr = this.mrs.get(id);
    if (!mr) return false;
    mr.dead = true;
    this.mrs.delete(id);
    this.bySub.delete(mr.sub.id);
    for (let va = mr.start; va < mr.end; va += PAGE_SIZE) if (mr.pfns[mr.idx(va)] >= 0) this.host.forget(va);
    await this.host.removeInterval(mr.sub);
    return true;
  }

  private findMr(va: number): Mr | undefined {
    for (const m of this.mrs.values()) if (!m.dead && va >= m.start && va < m.end) return m;
    return undefined;
  }

  /** Implicit ODP: the 1 GiB child covering va, created on demand. */
  private async childFor(va: number): Promise<Mr | undefined> {
    const found = this.findMr(va);
    if (found || !this.implicit) return found;
    const start = Math.floor(va / GiB) * GiB;
    return this.newMr(start, start + GiB, this.implicitWritable, true);
  }

  // ---- the notifier --------------------------------------------------------------------------

  /** The MR's umem mutex is free and the device quiet: invalidate below completes at once. */
  ackFirst(sub: DevSub): boolean {
    const mr = this.bySub.get(sub.id);
    return (mr === undefined || !mr.umemMutex.isLocked) && this.quiet();
  }

  invalidate(sub: DevSub, r: DevRange, curSeq: number): boolean | Promise<boolean> {
    // mlx5_ib_invalidate_range: cannot sleep, so refuse a non-blockable range.
    if (!r.blockable) return false;
    const mr = this.bySub.get(sub.id);
    if (!mr || this.ignores(r)) return true;
    const action = this.policy === 'aware' ? this.awareAction(r) : 'zap';
    if (action === 'skip') return true;
    const go = (): boolean | Promise<boolean> => {
      let zapped = 0;
      try {
        sub.setSeq(curSeq);
        if (mr.npages > 0) {
          const a = Math.max(r.start, mr.start);
          const b = Math.min(r.end, mr.end);
          for (let va = a; va < b; va += PAGE_SIZE) {
            const i = mr.idx(va);
            if (mr.pfns[i] < 0) continue;
            if (action === 'downgrade') {
              mr.write[i] = 0;
              continue;
            }
            mr.pfns[i] = -1;
            mr.write[i] = 0;
            mr.npages--;
            zapped++;
          }
        }
      } finally {
        mr.umemMutex.unlock();
      }
      this.inc('page_invalidations', zapped);
      // An implicit child left empty is destroyed by deferred work.
      if (mr.child && mr.npages === 0 && zapped > 0) queueMicrotask(() => this.background(this.deregMr(mr.id), "destroy an empty implicit child MR"));
      // The UMR zap completes synchronously with the in-flight work of the QP: drain it.
      const q = this.quiesce(r.start, Math.min(r.end, 2 ** 53));
      return q ? q.then(() => true) : true;
    };
    const locked = mr.umemMutex.lock('invalidate');
    return locked ? locked.then(go) : go();
  }

  // ---- faults and prefetch -------------------------------------------------------------------

  /**
   * ib_umem_odp_map_dma_and_lock over [start, end): readBegin, hmm_range_fault (REQ_FAULT only if
   * `fault`), umem_mutex, readRetry, program. Returns pages mapped, or -1.
   */
  private async mapDma(mr: Mr, start: number, end: number, fault: boolean, write: boolean): Promise<number> {
    const deadline = Date.now() + 1000;
    for (;;) {
      if (mr.dead) return -1;
      if (Date.now() > deadline) return -1;
      const seq = await this.host.readBegin(mr.sub);
      const r = await this.host.rangeFault(mr.sub, seq, start, end, {
        defaultFlags: fault ? HMM_PFN.REQ_FAULT | (write ? HMM_PFN.REQ_WRITE : 0) : 0,
        mask: 0,
        ownerSelf: false,
      });
      if (r.ret === ERRNO.EBUSY) continue;
      if (r.ret < 0) return -1;
      await mr.umemMutex.lock('map');
      try {
        if (mr.dead) return -1;
        if (this.retry(mr.sub, seq)) continue;
        let n = 0;
        for (let i = 0; i < r.pfns.length; i++) {
          const w = r.pfns[i];
          if (!(w & HMM_PFN.VALID)) continue;
          const j = mr.idx(start + i * PAGE_SIZE);
          if (mr.pfns[j] < 0) mr.npages++;
          mr.pfns[j] = w & HMM_PFN.PFN_MASK;
          mr.write[j] = w & HMM_PFN.WRITE && mr.writable && (write || !fault) ? 1 : 0;
          n++;
        }
        return n;
      } finally {
        mr.umemMutex.unlock();
      }
    }
  }

  lookup(va: number, write: boolean): number {
    const mr = this.findMr(va);
    if (!mr) return -1;
    const i = mr.idx(va);
    if (mr.pfns[i] < 0 || (write && !mr.write[i])) return -1;
    return mr.pfns[i];
  }

  /** A NIC page fault (pagefault_mr): map the page, for writing if the access writes. */
  async fault(va: number, write: boolean): Promise<boolean> {
    const mr = await this.childFor(va);
    if (!mr) return false;
    if (write && !mr.writable) return false;
    const page = Math.floor(va / PAGE_SIZE) * PAGE_SIZE;
    const n = await this.mapDma(mr, page, page + PAGE_SIZE, true, write);
    if (n <= 0) return false;
    this.inc('page_faults', n);
    return true;
  }

  /** ibv_advise_mr. */
  async advise(addr: number, length: number, advice: AdviseMode): Promise<{ pages: number }> {
    const start = Math.floor(addr / PAGE_SIZE) * PAGE_SIZE;
    const end = Math.ceil((addr + length) / PAGE_SIZE) * PAGE_SIZE;
    let pages = 0;
    for (let a = start; a < end; ) {
      const mr = await this.childFor(a);
      if (!mr) break;
      const b = Math.min(end, mr.end);
      const n =
        advice === 'PREFETCH_NO_FAULT'
          ? await this.mapDma(mr, a, b, false, false)
          : await this.mapDma(mr, a, b, true, advice === 'PREFETCH_WRITE' && mr.writable);
      if (n > 0) pages += n;
      a = b;
    }
    this.inc('page_prefetch', pages);
    return { pages };
  }

  dropPages(vas: number[]): void {
    for (const va of vas) {
      const mr = this.findMr(va);
      if (mr && mr.pfns[mr.idx(va)] >= 0) {
        mr.pfns[mr.idx(va)] = -1;
        mr.npages--;
      }
    }
  }

  areas(): Array<[number, number]> {
    const c = this.dma.config;
    if (c.start !== undefined && c.end !== undefined) return [[c.start, c.end]];
    return [...this.mrs.values()].filter((m) => !m.child).map((m) => [m.start, m.end]);
  }

  summary(): MirrorSummary {
    let pages = 0;
    let writable = 0;
    for (const m of this.mrs.values()) {
      pages += m.npages;
      for (let i = 0; i < m.write.length; i++) if (m.write[i] && m.pfns[i] >= 0) writable++;
    }
    return { pages, writable, devicePages: 0, objects: this.mrs.size };
  }
}
