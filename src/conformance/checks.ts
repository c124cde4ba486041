/**
 * The mirror contract, one scripted scenario per check. Each drives the device under test only
 * through the service's HTTP API (DMA sweeps, the mirror map, fault injection) and judges it by
 * what the kernel side records: the sanitizer's findings (it never asks the device what it
 * believes), pagemap, and the event log. docs/conformance.md gives each check's kernel rationale.
 *
 * Timing: the races these checks provoke are made deterministic with a helper device (a worker
 * dmirror on the same process whose acknowledgements are delayed with `ackDelayUs`): while it holds
 * an invalidation open, the window between the device's acknowledgement and the end is wide
 * enough to act in, and a munmap elsewhere holds the mmap lock so that a device fault and an
 * invalidation queue behind it in a known order.
 */
import { Buffer } from 'node:buffer';
import type { Api, DeviceInfo, FindingInfo } from './api.js';
import { PAGE, sleep, type Target } from './target.js';

export type Outcome = 'pass' | 'fail' | 'skip';

export interface CheckResult {
  id: string;
  title: string;
  result: Outcome;
  evidence: string;
  ms: number;
  attempts: number;
}

/** A check's verdict; `retry` marks a run whose scenario did not happen as scripted (timing). */
export interface Verdict {
  result: Outcome;
  evidence: string;
  retry?: boolean;
}

export interface Check {
  id: string;
  title: string;
  run(ctx: Ctx): Promise<Verdict>;
}

const HELPER_NAME = 'conformance-holder';
/** How long the helper holds a window open, ms. Well under its deadline (set to 60 s). */
const HOLD_MS = 700;
/** How long after starting an operation its window is taken to be open and the device to have answered, ms. */
const SETTLE_MS = 200;

const hex = (n: number): string => `0x${n.toString(16)}`;

export function describeFinding(f: FindingInfo): string {
  const by = f.revokedBy ? ` after invalidation #${f.revokedBy.id} (${f.revokedBy.event})` : '';
  return `finding ${f.kind} va=${hex(f.va)} pfn=${f.pfn}${f.write ? ' (write)' : ''}${by}`;
}

/** What the checks share: the target, the helper device, finding marks. */
export class Ctx {
  private helperId: number | null = null;
  private auxAddr = 0;

  constructor(readonly t: Target) {}

  get api(): Api {
    return this.t.api;
  }
  get id(): number {
    return this.t.id;
  }
  page(i: number): number {
    return this.t.page(i);
  }
  get pid(): number {
    return this.t.pid;
  }

  /** The device's finding count now (a mark to compare with). */
  async mark(): Promise<number> {
    const d = (await this.api.devices()).find((x) => x.id === this.id);
    return d ? Number(d.sanitizer.findings) : 0;
  }

  /** Findings since `mark`: how many, and the newest of them (the API keeps the last 100). */
  async since(mark: number): Promise<{ count: number; list: FindingInfo[]; checked: number }> {
    const d: DeviceInfo = await this.api.device(this.id);
    const all = Array.isArray(d.sanitizer.findings) ? d.sanitizer.findings : [];
    const total = (await this.mark()) || all.length;
    const count = Math.max(0, total - mark);
    return { count, list: all.slice(Math.max(0, all.length - count)), checked: d.sanitizer.checked };
  }

  /** Fails with the first new finding, if any. */
  async noFindings(mark: number, what: string): Promise<Verdict | null> {
    const f = await this.since(mark);
    if (f.count === 0) return null;
    return { result: 'fail', evidence: `${f.list[0] ? describeFinding(f.list[0]) : `${f.count} findings`}${f.count > 1 ? ` (+${f.count - 1} more)` : ''} ${what}` };
  }

  async dma(i: number, write: boolean, pages = 1, holdUs?: number): Promise<{ ok: number; failed: number; faults: number }> {
    return this.api.dma(this.id, this.page(i), pages, write, holdUs);
  }

  /** The device maps page i for writing (faults it in). */
  async premap(i: number, pages = 1): Promise<void> {
    const r = await this.dma(i, true, pages);
    if (r.ok !== pages) throw new Error(`setup: the device could not write pages ${i}..${i + pages - 1} of the window (${r.ok}/${pages} accesses succeeded)`);
  }

  async madvise(i: number, pages: number, advice: string): Promise<void> {
    await this.api.post(`/v1/processes/${this.pid}/madvise`, { addr: this.page(i), length: pages * PAGE, advice });
  }

  /** CPU writes to pages [i, i + pages): present, writable, not zero pages. */
  async cpuWrite(i: number, pages: number, byte = 0x5a): Promise<void> {
    const data = Buffer.alloc(pages * PAGE, byte).toString('base64');
    await this.api.post(`/v1/processes/${this.pid}/memory/write`, { addr: this.page(i), data });
  }

  /** The helper: a worker dmirror on the same process (its subscription covers everything). */
  async helper(): Promise<number> {
    if (this.helperId !== null) return this.helperId;
    const r = await this.api.post<{ id: number }>('/v1/devices', { kind: 'dmirror', name: HELPER_NAME, pid: this.pid, policy: 'faithful', deadlineMs: 60_000 });
    this.helperId = r.id;
    return r.id;
  }

  /**
   * Runs `f` until the reattached personality answers it: a client's new session may answer its
   * first command while the old personality (detached, refusing with "this attachment ended") is
   * still the one its commands reach, until the new one has attached (a gpu has no subscription,
   * hence no pid to wait for, until it faults).
   */
  async untilAttached<T>(f: () => Promise<T>, ms = 10_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        return await f();
      } catch (e) {
        if (!/attachment ended/.test((e as Error).message) || Date.now() > deadline) throw e;
        await sleep(200);
      }
    }
  }

  /** Runs a device access until `want` accesses succeed or `ms` pass; the last result. */
  async untilOk(f: () => Promise<{ ok: number; failed: number; faults: number }>, want: number, ms = 5_000): Promise<{ ok: number; failed: number; faults: number }> {
    const deadline = Date.now() + ms;
    for (;;) {
      const r = await f();
      if (r.ok >= want || Date.now() > deadline) return r;
      await sleep(200);
    }
  }

  /** After a kernel restart: the helper and the aux mapping belonged to the old kernel. */
  forgetKernel(): void {
    this.helperId = null;
    this.auxAddr = 0;
  }

  async dropHelper(): Promise<void> {
    if (this.helperId === null) return;
    const id = this.helperId;
    this.helperId = null;
    await this.api.del(`/v1/devices/${id}`).catch(() => undefined);
  }

  /**
   * Runs `op` (an operation that invalidates) with the helper delaying its acknowledgement by
   * HOLD_MS, and `during` once the device has had SETTLE_MS to answer; `held` says whether the
   * window was still open when `during` ended.
   */
  async hold<T>(op: () => Promise<unknown>, during: () => Promise<T>): Promise<{ held: boolean; value: T; opError?: unknown }> {
    const h = await this.helper();
    await this.api.faults(h, { ackDelayUs: HOLD_MS * 1000 });
    try {
      let done = false;
      let opError: unknown;
      const p = op().then(
        () => void (done = true),
        (e) => {
          done = true;
          opError = e;
        },
      );
      await sleep(SETTLE_MS);
      const early = done;
      const value = await during();
      await p;
      return { held: !early, value, opError };
    } finally {
      await this.api.faults(h, { ackDelayUs: 0 });
    }
  }

  /** A one-page mapping away from the window: munmapping it invalidates only whole-mm subscriptions and the helper. */
  async aux(): Promise<number> {
    if (this.auxAddr) return this.auxAddr;
    const r = await this.api.post<{ addr: number }>(`/v1/processes/${this.pid}/mmap`, { length: PAGE, prot: ['read', 'write'], populate: true, name: 'conformance-aux' });
    this.auxAddr = r.addr;
    return r.addr;
  }
  unmapAux(): Promise<unknown> {
    const a = this.auxAddr;
    this.auxAddr = 0;
    return this.api.post(`/v1/processes/${this.pid}/munmap`, { addr: a, length: PAGE });
  }

  /** The device's acknowledgement latency for the last event of this kind over page i, µs. */
  async ackUs(since: number, event: string, i: number): Promise<number | null> {
    const va = this.page(i);
    const evs = await this.api.events(this.pid, since);
    for (let k = evs.length - 1; k >= 0; k--) {
      const e = evs[k];
      if (e.event !== event || e.start > va || (typeof e.end === 'number' && e.end <= va)) continue;
      const s = e.subscribers.find((x) => x.deviceId === this.id);
      if (s) return s.ackUs;
    }
    return null;
  }
}

// ---- 1. no mapping used inside a window ---------------------------------------------------------

const windowCheck: Check = {
  id: 'window',
  title: 'no mapping used between invalidate start and end',
  async run(c) {
    const i = 0;
    await c.premap(i);
    const m = await c.mark();
    const r = await c.hold(
      () => c.madvise(i, 1, 'dontneed'),
      async () => {
        const mirror = await c.api.mirror(c.id, c.page(i), 1);
        const t0 = Date.now();
        const d = await c.dma(i, true);
        return { mirror: mirror[0], d, waited: Date.now() - t0 };
      },
    );
    const after = await c.dma(i, true);
    const bad = await c.noFindings(m, 'from a device access inside the window of a CLEAR (madvise DONTNEED), after the device acknowledged it');
    if (bad) return bad;
    if (r.value.mirror >= 0 && r.held) {
      return { result: 'fail', evidence: `device still maps va=${hex(c.page(i))} to pfn ${r.value.mirror} inside the window of a CLEAR it acknowledged` };
    }
    if (!r.held) return { result: 'fail', evidence: 'the window closed before the device was probed (timing)', retry: true };
    if (after.ok !== 1) return { result: 'fail', evidence: `after the window closed the device could not map va=${hex(c.page(i))} again` };
    return { result: 'pass', evidence: `mapping dropped at the acknowledgement; an access inside the ${HOLD_MS} ms window waited ${r.value.d.ok ? `${r.value.waited} ms for the end and refaulted` : 'and failed'}; 0 findings` };
  },
};

// ---- 2. readRetry honoured -----------------------------------------------------------------------

const readRetryCheck: Check = {
  id: 'read-retry',
  title: 'a fault that raced an invalidation programs no stale pfn (readRetry)',
  async run(c) {
    const P = 1;
    const rounds = 3;
    const m = await c.mark();
    let raced = 0;
    for (let k = 0; k < rounds; k++) {
      // The device must not map P, and a fault over its range must not fault anything in the
      // kernel (a walk that faults restarts and sees the invalidation itself: EBUSY).
      await c.madvise(P, 1, 'dontneed');
      await c.cpuWrite(0, c.t.pages);
      await c.aux();
      // The munmap of the aux page holds the mmap lock (write) while the helper delays; the
      // device's fault queues on it (read), then the DONTNEED of P (read) behind the fault: the
      // fault's pfns are computed just before the invalidation that makes them stale starts.
      const r = await c.hold(
        () => c.unmapAux(),
        async () => {
          const fault = c.dma(P, true);
          await sleep(100);
          const inval = c.madvise(P, 1, 'dontneed');
          const [f] = await Promise.all([fault, inval]);
          return f;
        },
      );
      if (r.held) raced++;
      await c.dma(P, true);
      const bad = await c.noFindings(m, `after a device fault raced a CLEAR of va=${hex(c.page(P))} (round ${k + 1}: the fault's pfns predate the invalidation)`);
      if (bad) return bad;
    }
    // Whole-address-space subscriptions (dmirror) wait for the aux munmap in readBegin, which
    // takes the race away: a short storm of faults against invalidations covers them.
    const stormMs = 2500;
    const end = Date.now() + stormMs;
    let faults = 0;
    let invals = 0;
    let stop = false;
    const faulter = (async () => {
      while (!stop && Date.now() < end) {
        const r = await c.dma(P, true, 3);
        faults += r.faults;
      }
    })();
    const invalidator = (async () => {
      while (!stop && Date.now() < end) {
        await c.madvise(P, 3, 'dontneed');
        invals++;
        await new Promise((res) => setImmediate(res));
      }
    })();
    const watcher = (async () => {
      while (!stop && Date.now() < end) {
        await sleep(400);
        if ((await c.mark()) > m) stop = true;
      }
    })();
    await Promise.all([faulter, invalidator, watcher]);
    stop = true;
    await c.dma(P, true, 3);
    const bad = await c.noFindings(m, `after device faults raced CLEARs of the same pages (${faults} faults, ${invals} invalidations)`);
    if (bad) return bad;
    // A pass must have exercised the race at least once in the scripted rounds.
    if (raced === 0) return { result: 'fail', evidence: `no scripted round held a fault against a CLEAR (0/${rounds}; timing)`, retry: true };
    return { result: 'pass', evidence: `${raced}/${rounds} scripted fault/CLEAR races and a ${stormMs} ms storm (${faults} faults, ${invals} CLEARs): 0 findings` };
  },
};

// ---- 3. acknowledgement only after quiescing ---------------------------------------------------

const quiesceCheck: Check = {
  id: 'quiesce',
  title: 'acknowledgement only after in-flight DMA to the range drained',
  async run(c) {
    const i = 4;
    const holdMs = 400;
    await c.premap(i);
    const m = await c.mark();
    const since = await c.api.lastEventId();
    let done = false;
    const access = c.dma(i, true, 1, holdMs * 1000).then((r) => {
      done = true;
      return r;
    });
    await sleep(120);
    if (done) return { result: 'fail', evidence: 'the in-flight access ended before the invalidation (timing)', retry: true };
    await c.madvise(i, 1, 'dontneed');
    await access;
    const ack = await c.ackUs(since, 'CLEAR', i);
    const ackText = ack === null ? '' : `; the device answered after ${(ack / 1000).toFixed(0)} ms`;
    const bad = await c.noFindings(m, `: a write in flight (held ${holdMs} ms) when the CLEAR arrived landed after the acknowledgement${ackText}`);
    if (bad) return bad;
    return { result: 'pass', evidence: `a write held in flight ${holdMs} ms under a CLEAR completed before the acknowledgement${ackText}; 0 findings` };
  },
};

// ---- 5. dirty / soft-dirty for device writes ---------------------------------------------------

const softDirtyCheck: Check = {
  id: 'soft-dirty',
  title: 'a device write after clear_refs leaves the page dirty and soft-dirty',
  async run(c) {
    const i = 5;
    const va = c.page(i);
    await c.premap(i);
    await c.api.post(`/v1/processes/${c.pid}/clear_refs`, { mode: 'soft-dirty' });
    const [before] = await c.api.pagemap(c.pid, va, 1);
    if (before.softDirty) return { result: 'fail', evidence: 'clear_refs did not clear soft-dirty (setup)', retry: true };
    const m = await c.mark();
    const w = await c.dma(i, true);
    const [pm] = await c.api.pagemap(c.pid, va, 1);
    const bad = await c.noFindings(m, 'from a device write after clear_refs soft-dirty (SOFT_DIRTY)');
    const state = `present=${pm.present} write=${pm.write} dirty=${pm.dirty} softDirty=${pm.softDirty}`;
    if (bad) return { result: 'fail', evidence: `${bad.evidence}; pagemap ${state}` };
    if (w.ok !== 1) return { result: 'fail', evidence: `the device could not write va=${hex(va)} after SOFT_DIRTY (${w.failed} failed)` };
    if (!pm.present || !pm.dirty || !pm.softDirty) {
      return { result: 'fail', evidence: `after clear_refs soft-dirty and a device write, pagemap va=${hex(va)}: ${state} (the write bypassed the CPU page table)` };
    }
    return { result: 'pass', evidence: `device write refaulted (${w.faults} fault) after SOFT_DIRTY; pagemap ${state}` };
  },
};

// ---- per-event checks -------------------------------------------------------------------------

interface EventScenario {
  event: string;
  page: number;
  what: string;
  /** Invalidates page p; returns what restore needs, or a skip reason. */
  op(c: Ctx, p: number): Promise<{ restore?: () => Promise<unknown>; skip?: string }>;
}

const EVENT_SCENARIOS: EventScenario[] = [
  {
    event: 'UNMAP',
    page: 6,
    what: 'munmap',
    async op(c, p) {
      await c.api.post(`/v1/processes/${c.pid}/munmap`, { addr: c.page(p), length: PAGE });
      return { restore: () => c.api.post(`/v1/processes/${c.pid}/mmap`, { addr: c.page(p), length: PAGE, prot: ['read', 'write'], fixed: true, name: c.t.window.name }) };
    },
  },
  {
    event: 'CLEAR',
    page: 7,
    what: 'madvise DONTNEED',
    async op(c, p) {
      await c.madvise(p, 1, 'dontneed');
      return {};
    },
  },
  {
    event: 'PROTECTION_VMA',
    page: 8,
    what: 'mprotect read-only',
    async op(c, p) {
      await c.api.post(`/v1/processes/${c.pid}/mprotect`, { addr: c.page(p), length: PAGE, prot: ['read'] });
      return { restore: () => c.api.post(`/v1/processes/${c.pid}/mprotect`, { addr: c.page(p), length: PAGE, prot: ['read', 'write'] }) };
    },
  },
  {
    event: 'PROTECTION_PAGE',
    page: 9,
    what: 'fork (the parent is write-protected for COW)',
    async op(c) {
      const child = await c.api.post<{ pid: number }>(`/v1/processes/${c.pid}/fork`);
      return { restore: () => c.api.del(`/v1/processes/${child.pid}`) };
    },
  },
  {
    event: 'MIGRATE',
    page: 10,
    what: 'another device migrating the page to its memory',
    async op(c, p) {
      const h = await c.helper();
      const r = await c.api.post<{ cpages: number }>(`/v1/devices/${h}/dmirror/migrate-to-device`, { addr: c.page(p), npages: 1 }).catch((e: Error) => ({ cpages: 0, error: e.message }));
      return r.cpages === 1 ? {} : { skip: 'the helper device could not migrate the page' };
    },
  },
  {
    event: 'EXCLUSIVE',
    page: 11,
    what: 'another device taking exclusive access',
    async op(c, p) {
      const h = await c.helper();
      const r = await c.api.post<{ cpages: number }>(`/v1/devices/${h}/dmirror/exclusive`, { addr: c.page(p), npages: 1 }).catch(() => ({ cpages: 0 }));
      return r.cpages === 1 ? {} : { skip: 'the helper device could not take exclusive access' };
    },
  },
];

function eventCheck(s: EventScenario): Check {
  return {
    id: `event:${s.event}`,
    title: `no stale access after ${s.event} (${s.what})`,
    async run(c) {
      await c.premap(s.page);
      const m = await c.mark();
      const r = await s.op(c, s.page);
      if (r.skip) return { result: 'skip', evidence: r.skip };
      try {
        const w = await c.dma(s.page, true);
        const rd = await c.dma(s.page, false);
        const bad = await c.noFindings(m, `from a device access after ${s.what}`);
        if (bad) return bad;
        return { result: 'pass', evidence: `after ${s.what}: device write ${w.ok ? `refaulted (${w.faults})` : 'refused'}, read ${rd.ok ? 'ok' : 'refused'}; 0 findings` };
      } finally {
        await r.restore?.();
      }
    },
  };
}

// ---- 6. non-blockable refusals -----------------------------------------------------------------

const nonblockCheck: Check = {
  id: 'nonblock',
  title: 'only non-blockable ranges refused (OOM reaper); refusals recorded as EAGAIN',
  async run(c) {
    const m = await c.mark();
    const since0 = await c.api.lastEventId();
    await c.premap(0, 4);
    await c.api.post('/v1/kernel/oom-reap', { pid: c.pid, kill: false });
    const reaped = (await c.api.events(c.pid, since0)).filter((e) => !e.blockable);
    const own = (e: (typeof reaped)[number]): string | undefined => e.subscribers.find((s) => s.deviceId === c.id)?.result;
    const accepted = reaped.filter((e) => own(e) === 'ok').length;
    const refused = reaped.filter((e) => own(e) === 'would-block').length;
    // The legal refusal, forced: the reaper must record EAGAIN and leave the memory alone.
    await c.premap(0, 4);
    await c.api.faults(c.id, { refuseNonblock: true });
    const since1 = await c.api.lastEventId();
    try {
      await c.api.post('/v1/kernel/oom-reap', { pid: c.pid, kill: false });
    } finally {
      await c.api.faults(c.id, { refuseNonblock: false });
    }
    const forced = (await c.api.events(c.pid, since1)).filter((e) => !e.blockable);
    const eagain = forced.filter((e) => e.result === 'EAGAIN' && e.subscribers.some((s) => s.deviceId === c.id && s.result === 'would-block')).length;
    const after = await c.dma(0, true, 4);
    const bad = await c.noFindings(m, 'after the OOM reaper (non-blockable UNMAP)');
    if (bad) return bad;
    const all = await c.api.events(c.pid, c.t.runSince);
    const refusedBlockable = all.find((e) => e.blockable && e.subscribers.some((s) => s.deviceId === c.id && s.result !== 'ok'));
    if (refusedBlockable) {
      return { result: 'fail', evidence: `refused blockable invalidation #${refusedBlockable.id} (${refusedBlockable.event} ${hex(refusedBlockable.start)}): only non-blockable ranges may be refused` };
    }
    // Nothing non-blockable reached the device: the rules were not exercised.
    if (reaped.every((e) => own(e) === undefined) && forced.every((e) => !e.subscribers.some((s) => s.deviceId === c.id))) {
      return { result: 'fail', evidence: `no non-blockable invalidation of the OOM reaper reached the device (${reaped.length + forced.length} recorded, none to it)` };
    }
    if (forced.length > 0 && eagain === 0) return { result: 'fail', evidence: `with refuseNonblock the reaper's ${forced.length} non-blockable starts recorded no EAGAIN refusal of this device` };
    if (after.ok !== 4) return { result: 'fail', evidence: `after the reaper the device could not map its pages again (${after.ok}/4)` };
    return {
      result: 'pass',
      evidence: `OOM reaper: ${accepted} non-blockable starts accepted, ${refused} refused; forced refusal: ${eagain} recorded EAGAIN; no blockable range refused in ${all.length} events; 0 findings`,
    };
  },
};

// ---- 7. reconnect ---------------------------------------------------------------------------------

const reconnectCheck: Check = {
  id: 'reconnect',
  title: 'after a connection drop the device reattaches, resubscribes, and its mirror works',
  async run(c) {
    const t = c.t;
    if (t.transport === 'worker') return { result: 'skip', evidence: 'a worker device has no connection to drop' };
    const old = t.dev;
    const t0 = Date.now();
    await c.api.faults(old.id, { disconnect: true });
    t.dev = await t.waitAttached(old);
    const ms = Date.now() - t0;
    const m = await c.mark();
    await c.cpuWrite(0, 1, 0x42);
    // The new personality may still be re-registering its mirror (an rdma MR, a gpu range) when
    // the first access comes, and fail it; the check is that the mirror works once reattached, so
    // that first read is retried for a while (a device that never recovers still fails).
    const rd = await c.untilAttached(() => c.untilOk(() => c.dma(0, false), 1));
    // Once the new personality answers (the bug mode is the personality's, made again).
    await t.reapply();
    await c.madvise(0, 1, 'dontneed');
    const wr = await c.dma(0, true);
    const bad = await c.noFindings(m, 'after reattaching');
    if (bad) return bad;
    if (rd.ok !== 1 || wr.ok !== 1) return { result: 'fail', evidence: `reattached as device #${t.dev.id}, but its mirror does not work (read ${rd.ok}/1, write after CLEAR ${wr.ok}/1)` };
    return { result: 'pass', evidence: `reattached as device #${t.dev.id} (was #${old.id}) ${ms} ms after a server-side disconnect; read, CLEAR and refault ok; 0 findings` };
  },
};

// ---- 8. kernel restart ---------------------------------------------------------------------------

const restartCheck: Check = {
  id: 'restart',
  title: 'after a kernel restart (new boot id) the device reattaches from an empty mirror',
  async run(c) {
    const t = c.t;
    if (t.transport === 'worker') return { result: 'skip', evidence: 'a worker device has no connection to the kernel to lose' };
    if (!t.ownsKernel) return { result: 'skip', evidence: 'url mode: the suite does not own the kernel (restart it by hand and run the suite again)' };
    // The device maps pages 0-3 under the old kernel: every pfn it holds is meaningless after the
    // restart (the new kernel's frames are other frames), so a device that kept its mirror and
    // writes through it is caught by the new kernel's sanitizer (`unmapped` / `wrong-pfn`).
    const n = 4;
    await c.premap(0, n);
    const old = t.dev;
    const t0 = Date.now();
    const boot = await t.restartKernel();
    c.forgetKernel();
    if (boot.newBoot === boot.oldBoot) return { result: 'fail', evidence: `setup: the restarted kernel has the same boot id ${boot.oldBoot}` };
    t.dev = await t.waitAttached(old, true);
    const ms = Date.now() - t0;
    t.runSince = await c.api.lastEventId();
    const m = await c.mark();
    // Accesses first, before any CPU write: a stale translation is used at once.
    const first = await c.untilAttached(() => c.dma(0, true, n));
    // Once the new personality answers (the bug mode is the personality's, made again).
    await t.reapply();
    await c.cpuWrite(0, 1, 0x42);
    const rd = await c.dma(0, false);
    await c.madvise(0, 1, 'dontneed');
    const wr = await c.dma(0, true);
    const bad = await c.noFindings(m, `after reattaching to the restarted kernel (boot ${boot.oldBoot} -> ${boot.newBoot})`);
    if (bad) return bad;
    const d = await t.refresh();
    const pids = d.pids ?? (d.pid !== undefined ? [d.pid] : []);
    if (!pids.includes(t.pid)) return { result: 'fail', evidence: `reattached as device #${d.id} but subscribed to no range of the new process ${t.pid} (pids ${pids.join(',') || 'none'})` };
    if (first.ok !== n || rd.ok !== 1 || wr.ok !== 1) {
      return { result: 'fail', evidence: `reattached as device #${d.id}, but its mirror does not work (writes ${first.ok}/${n}, read ${rd.ok}/1, write after CLEAR ${wr.ok}/1)` };
    }
    return {
      result: 'pass',
      evidence: `kernel restarted (boot ${boot.oldBoot} -> ${boot.newBoot}, pid ${boot.oldPid} -> ${t.pid}); reattached as device #${d.id} ${ms} ms later, subscribed to pid ${t.pid}; ${first.faults} refaults, writes, read, CLEAR ok; 0 findings`,
    };
  },
};

// ---- 9. progress (no deadlock between a fault and an invalidation) ----------------------------

interface ProgressInfo {
  watchdogMs: number;
  findings: Array<{ id: number; kind: string; device: string; message: string }>;
}

const progressCheck: Check = {
  id: 'progress',
  title: 'a fault waiting for an open invalidation does not block the next invalidation (no deadlock)',
  async run(c) {
    const t = c.t;
    const X = 12;
    const Y = 13;
    const Z = 14;
    const progress = (): Promise<ProgressInfo | null> => c.api.get<ProgressInfo>('/v1/progress').catch(() => null);
    const p0 = await progress();
    const seen = new Set((p0?.findings ?? []).map((f) => f.id));
    const mine = (p: ProgressInfo | null): ProgressInfo['findings'] => (p?.findings ?? []).filter((f) => !seen.has(f.id) && f.device === t.dev.name);
    await c.premap(Z);
    await c.madvise(Y, 1, 'dontneed');
    const m = await c.mark();
    // A CLEAR of X is held open by the helper; inside it the device faults Y (its readBegin waits
    // for the window to close), then a CLEAR of Z starts while that fault waits. A driver that
    // holds its lock across readBegin (lock-across-fault) cannot answer Z: the fault waits for Z
    // to end, Z for the device's answer, the answer for the lock.
    const limitMs = 3000;
    let settled = false;
    const r = await c.hold(
      () => c.madvise(X, 1, 'dontneed'),
      async () => {
        const fault = c.dma(Y, true).catch((e: Error) => ({ ok: 0, failed: 1, faults: 0, error: e.message }));
        await sleep(100);
        const inval = c.madvise(Z, 1, 'dontneed').catch(() => undefined);
        const both = Promise.all([fault, inval]).then(([f]) => {
          settled = true;
          return f;
        });
        const t0 = Date.now();
        const f = await Promise.race([both, sleep(limitMs).then(() => null)]);
        return { f, ms: Date.now() - t0, both };
      },
    );
    if (!settled) {
      // Stuck: the progress oracle (its watchdog) names the wait; the ack deadline evicts later.
      const wd = p0?.watchdogMs ?? 2000;
      let found: ProgressInfo['findings'] = [];
      for (let k = 0; k < 20 && found.length === 0; k++) {
        found = mine(await progress());
        if (found.length === 0) await sleep(Math.max(100, wd / 10));
      }
      await r.value.both.catch(() => undefined);
      const f = found.find((x) => x.kind === 'deadlock') ?? found[0];
      return { result: 'fail', evidence: `the fault of va=${hex(c.page(Y))} and the CLEAR of va=${hex(c.page(Z))} did not complete within ${limitMs} ms${f ? `; progress oracle: ${f.message.startsWith(f.kind) ? f.message : `${f.kind}: ${f.message}`}` : ' (no progress finding)'}` };
    }
    // Completed: only a cycle is a failure (a readBegin waiting out the helper's held window is
    // reported as stuck by a watchdog shorter than HOLD_MS, and is how the scenario works).
    const cycle = mine(await progress()).find((x) => x.kind === 'deadlock');
    if (cycle) return { result: 'fail', evidence: `progress oracle: ${cycle.message}` };
    const bad = await c.noFindings(m, 'after a fault raced two CLEARs');
    if (bad) return bad;
    if (!r.held) return { result: 'fail', evidence: 'the window closed before the fault and the second CLEAR were issued (timing)', retry: true };
    const f = r.value.f!;
    return { result: 'pass', evidence: `a fault inside a held CLEAR window and a second CLEAR while it waited both completed (${r.value.ms} ms, fault ${f.ok ? 'ok' : 'failed'}); no progress finding; 0 findings` };
  },
};

// ---- 4. RELEASE ---------------------------------------------------------------------------------

const releaseCheck: Check = {
  id: 'release',
  title: 'process exit (RELEASE): the device drops everything and touches no memory afterwards',
  async run(c) {
    const t = c.t;
    // Pages 0-3: the ones the earlier checks leave mapped as they found them.
    const n = 4;
    const pre = await c.dma(0, true, n);
    if (pre.ok === 0) return { result: 'fail', evidence: `setup: the device could map none of pages 0..${n - 1} before the exit` };
    const m = await c.mark();
    // The helper delays its answers to the exit's RELEASE (and UNMAP) by HOLD_MS: the RELEASE
    // window stays open after the device under test answered it, and device writes to the pages
    // it had mapped are driven all through the exit. A device that answered RELEASE without
    // dropping its mirror and draining its DMA (ignore-event:RELEASE) writes through revoked
    // grants before the exit's UNMAP (a `stale` finding revoked by RELEASE); a clean one answers
    // only once its DMA drained, and its later accesses fault and fail (the mm is exiting).
    const h = await c.helper();
    await c.api.faults(h, { ackDelayUs: HOLD_MS * 1000 });
    let exited = false;
    let exitError: unknown = null;
    const exit = c.api.del(`/v1/processes/${c.pid}`).then(
      () => void (exited = true),
      (e) => {
        exited = true;
        exitError = e;
      },
    );
    let during = 0;
    let completed = 0;
    let refused = '';
    const t0 = Date.now();
    while (!exited && Date.now() - t0 < 15_000) {
      const r = await c.dma(0, true, n).catch((e: Error) => {
        refused = e.message.replace(/^POST \S+: /, '');
        return null;
      });
      // The device is gone (a worker stops with its process) or refuses: nothing more to drive.
      if (!r) break;
      during++;
      completed += r.ok;
    }
    await exit;
    await c.dropHelper();
    if (exitError) return { result: 'fail', evidence: `the exit failed: ${(exitError as Error).message}` };
    let d = await t.refresh().catch(() => t.dev);
    for (let k = 0; k < 50 && t.transport === 'worker' && d.state === 'stopping'; k++) {
      await sleep(100);
      d = await t.refresh().catch(() => t.dev);
    }
    if (d.state === 'evicted' || d.state === 'crashed') return { result: 'fail', evidence: `device ${d.state} at exit (${d.stateReason ?? 'no reason'}): it did not answer the release` };
    const duringText = `${during} sweeps of ${n} device writes during the ${Date.now() - t0} ms exit (${completed} completed${refused ? `; then refused: ${refused}` : ''})`;
    const bad = await c.noFindings(m, `around the exit of its process (${duringText})`);
    if (bad) return bad;
    if (t.transport === 'external' && d.state === 'running') {
      const mirror = await c.api.mirror(c.id, c.page(0), n);
      const kept = mirror.filter((p) => p >= 0).length;
      const after = await c.dma(0, true, n).catch(() => ({ ok: 0 }));
      const bad2 = await c.noFindings(m, 'after its process exited');
      if (bad2) return bad2;
      if (kept > 0) return { result: 'fail', evidence: `device still maps ${kept}/${n} pages of the window after its process exited (e.g. va=${hex(c.page(mirror.findIndex((p) => p >= 0)))})` };
      if (after.ok > 0) return { result: 'fail', evidence: `device completed ${after.ok} accesses to the window after its process exited` };
      return { result: 'pass', evidence: `exit answered; ${duringText}; mirror empty afterwards (${n} pages checked), accesses after exit refused; 0 findings` };
    }
    return { result: 'pass', evidence: `exit answered, device ${d.state}; ${duringText}; 0 findings` };
  },
};

export const CHECKS: Check[] = [windowCheck, readRetryCheck, quiesceCheck, softDirtyCheck, ...EVENT_SCENARIOS.map(eventCheck), progressCheck, nonblockCheck, reconnectCheck, restartCheck, releaseCheck];
export const CHECK_IDS = CHECKS.map((c) => c.id);
