/**
 * What the kernel does for a device's requests, whatever the transport (a worker's postMessage or
 * an external client's WebSocket frame): hmm_range_fault, get_user_pages, find_vma, migrate_vma and
 * make_device_exclusive, with the frame generations and the clock tick the sanitizer needs to
 * record what was granted. Errors the kernel would return to a driver come back as `ret` (negative
 * errno), never as exceptions.
 */
import { PAGE_SIZE } from '../kernel/layout.js';
import type { Kernel } from '../kernel/kernel.js';
import { HMM_PFN } from '../kernel/hmm.js';
import type { MmuIntervalNotifier } from '../notifier/subscriptions.js';
import type { DevmirrorError } from '../errors.js';
import type { DeviceRequest, ExclusiveReply, FaultReply, GupReply, MigrateReply } from './protocol.js';
import { nowUs } from '../trace/recorder.js';

const hex = (n: number): string => '0x' + n.toString(16);

/** The arguments of a range fault, as a device sends them (see DeviceRequest 'fault'). */
export type RangeFaultArgs = Omit<Extract<DeviceRequest, { t: 'fault' }>, 't' | 'req' | 'sub'>;

export interface VmaReplyInfo {
  start: number;
  end: number;
  prot: number;
  shared: boolean;
  file: boolean;
}

const errnoOf = (e: unknown, fallback: number): number => {
  switch ((e as DevmirrorError)?.code) {
    case 'EINVAL':
      return -22;
    case 'ENOMEM':
      return -12;
    case 'EBUSY':
      return -16;
    case 'EPERM':
      return -1;
    case 'DM_ERR_NO_SUCH_PROCESS':
      return -14;
    default:
      return fallback;
  }
};

export class DeviceServices {
  constructor(
    readonly k: Kernel,
    /** The device id: the owner of its migrations and exclusive accesses. */
    readonly deviceId: number,
  ) {}

  /** hmm_range_fault over an interval subscription of process `pid`. */
  async rangeFault(pid: number, sub: MmuIntervalNotifier, m: RangeFaultArgs): Promise<FaultReply> {
    const k = this.k;
    const pages = (m.end - m.start) / PAGE_SIZE;
    const pfns = m.input ?? new Uint32Array(pages);
    const r = {
      notifier: sub,
      notifierSeq: m.seq,
      start: m.start,
      end: m.end,
      hmmPfns: pfns,
      defaultFlags: m.defaultFlags,
      pfnFlagsMask: m.mask,
      devPrivateOwner: m.ownerSelf ? this.deviceId : null,
      tick: 0,
    };
    let ret: number;
    const t0 = k.trace ? nowUs() : 0;
    try {
      ret = await k.rangeFault(pid, r);
    } catch (e) {
      ret = errnoOf(e, -22);
    }
    // EBUSY here is the kernel-side half of a failed readRetry: the sequence moved under the fault.
    k.trace?.deviceSpan(this.deviceId, ret === 0 ? 'hmm_range_fault' : `hmm_range_fault ${ret === -16 ? 'EBUSY' : ret}`, t0, pid, {
      start: hex(m.start),
      end: hex(m.end),
      seq: m.seq,
      write: (m.defaultFlags & HMM_PFN.REQ_WRITE) !== 0,
      result: ret,
    });
    const gens = new Int32Array(pages);
    if (ret === 0) {
      for (let i = 0; i < pages; i++) if (pfns[i] & HMM_PFN.VALID) gens[i] = k.mem.generation(pfns[i] & HMM_PFN.PFN_MASK);
    }
    return { ret, pfns, gens, tick: r.tick ?? 0 };
  }

  /** get_user_pages of one page; a huge mapping also returns the frames of all its pages. */
  async gup(pid: number, va: number, write: boolean): Promise<GupReply> {
    const k = this.k;
    const t0 = k.trace ? nowUs() : 0;
    try {
      const g = await k.gup(pid, va, write);
      k.trace?.deviceSpan(this.deviceId, 'gup', t0, pid, { va: hex(va), write, huge: g.huge });
      if (!g.huge || g.pfn === 0) return { ret: 0, ...g };
      const headVa = Math.floor(va / (512 * PAGE_SIZE)) * 512 * PAGE_SIZE;
      const first = g.pfn - (va - headVa) / PAGE_SIZE;
      const hugePfns = new Int32Array(512);
      const hugeGens = new Int32Array(512);
      for (let i = 0; i < 512; i++) {
        hugePfns[i] = first + i;
        hugeGens[i] = k.mem.generation(first + i);
      }
      return { ret: 0, ...g, headVa, hugePfns, hugeGens };
    } catch (e) {
      const ret = errnoOf(e, -14) === -12 ? -12 : -14;
      k.trace?.deviceSpan(this.deviceId, 'gup', t0, pid, { va: hex(va), write, result: ret });
      return { ret, pfn: 0, gen: 0, tick: 0, write: false, huge: false };
    }
  }

  vma(pid: number, va: number): VmaReplyInfo | null {
    const v = this.k.findProcess(pid)?.mm.vmas.find(va);
    return v ? { start: v.start, end: v.end, prot: v.prot, shared: v.shared, file: v.file !== null } : null;
  }

  /** migrate_vma to this device's memory ('to') or back to RAM ('from'). */
  async migrate(pid: number, dir: 'to' | 'from', start: number, end: number, allocFails: boolean): Promise<MigrateReply> {
    const k = this.k;
    const t0 = k.trace ? nowUs() : 0;
    const span = (args: Record<string, unknown>): void => k.trace?.deviceSpan(this.deviceId, `migrate_vma ${dir === 'to' ? 'to device' : 'to system'}`, t0, pid, { start: hex(start), end: hex(end), ...args });
    try {
      const res =
        dir === 'to'
          ? await k.migrateToDevice(pid, start, end, this.deviceId, { hugeAllocFails: allocFails })
          : await k.migrateToSystem(pid, start, end, this.deviceId);
      const mm = k.process(pid).mm;
      const pages: Array<[number, number, number, boolean]> = res.pages
        .filter((pg) => pg.dst >= 0)
        .map((pg) => [pg.va, pg.dst, k.mem.generation(pg.dst), (mm.pt.lookup(pg.va) & 2) !== 0]);
      span({ collected: res.collected, moved: res.moved, result: 0 });
      return { ret: 0, collected: res.collected, moved: res.moved, pages, tick: res.tick };
    } catch (e) {
      span({ result: errnoOf(e, -14) });
      return { ret: errnoOf(e, -14), collected: 0, moved: 0, pages: [], tick: 0 };
    }
  }

  async exclusive(pid: number, va: number): Promise<ExclusiveReply> {
    const t0 = this.k.trace ? nowUs() : 0;
    try {
      const r = await this.k.makeDeviceExclusive(pid, va, this.deviceId);
      this.k.trace?.deviceSpan(this.deviceId, 'make_device_exclusive', t0, pid, { va: hex(va), result: 0 });
      return { ret: 0, pfn: r.pfn, gen: this.k.mem.generation(r.pfn), tick: r.tick };
    } catch {
      this.k.trace?.deviceSpan(this.deviceId, 'make_device_exclusive', t0, pid, { va: hex(va), result: -16 });
      return { ret: -16, pfn: 0, gen: 0, tick: 0 };
    }
  }

  evictDeviceMemory(): Promise<number> {
    return this.k.evictDeviceMemory(this.deviceId);
  }
}
