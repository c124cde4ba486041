/**
 * The stale-access sanitizer: proves that a device never uses a page it was told to stop using.
 *
 * It never asks the device what it believes. It keeps its own record, built only from what the
 * kernel sent: every pfn the kernel handed out (range-fault and migration replies, with the frame
 * generation and the global clock tick at which the kernel computed them) is a *grant*; every
 * invalidation the device acknowledged *revokes* the grants in its range (or downgrades them to
 * read-only for events that keep the frame mapped read-only: PROTECTION_PAGE, SOFT_DIRTY, and
 * PROTECTION_VMA when the update is to read-only); grants computed while an invalidation was open
 * are revoked when it ends. Then every device access is checked:
 *
 *   - no grant for (pid, page)         -> `unmapped` (the device invented a translation)
 *   - grant revoked                    -> `stale` (use after an acknowledged invalidation)
 *   - frame generation moved on        -> `stale` (the frame was freed or reused); a write there is
 *                                         also a `lost-write` (it went to a page nobody maps)
 *   - write through a read-only grant  -> `write-ro`
 *   - pfn differs from the grant       -> `wrong-pfn`
 *
 * Ordering uses the kernel's global clock (HDR.CLOCK): a reply computed before an invalidation
 * started is revoked by that invalidation's acknowledgement even if the reply reaches the device
 * after it (a reply races the start message).
 */
import { HMM_PFN } from '../kernel/hmm.js';
import { FM, FRAME_META_WORDS, HDR, PAGE_SIZE, ULONG_MAX } from '../kernel/layout.js';
import { eventName, MmuNotifierEvent, RANGE_UPDATE_TO_READ_ONLY } from '../notifier/range.js';

export { RANGE_UPDATE_TO_READ_ONLY };

export type FindingKind = 'stale' | 'lost-write' | 'write-ro' | 'unmapped' | 'wrong-pfn';

export interface Finding {
  kind: FindingKind;
  deviceId: number;
  pid: number;
  va: number;
  pfn: number;
  write: boolean;
  /** The clock when the access was checked (read, not advanced: several findings may share it). */
  tick: number;
  /** The grant it was checked against, if any. */
  grant: { pfn: number; gen: number; write: boolean; tick: number } | null;
  /** The invalidation that revoked the grant (stale findings). */
  revokedBy: { id: number; event: string; start: number; end: number; startTick: number } | null;
  message: string;
}

interface Grant {
  pfn: number;
  gen: number;
  write: boolean;
  tick: number;
  /** Set when revoked (or downgraded: write -> false with `downgradedBy`). */
  revokedBy: Window | null;
  downgradedBy: Window | null;
  /**
   * An acknowledged invalidation covered the grant: whatever it required (revoke, or only take
   * write access), the device may have dropped the page then (a blind device zaps on every event),
   * and a later grant of the page is a refault. A read grant under a downgrade is not revoked, but
   * it is covered, unless the device said it kept its reads through that downgrade (Window.kept).
   */
  covered: boolean;
  /** An invalidation that started after the reply was computed had already covered it on arrival. */
  staleOnArrival: boolean;
  /**
   * An invalidation had covered the device's previous grant of the page; carried over grants that
   * arrived stale, so that the refault is counted once, when a usable grant comes.
   */
  lostBefore: boolean;
  /** The first acknowledged invalidation that covered this grant (the cause of its refault). */
  coveredBy: Window | null;
  /**
   * A downgrade the device said it kept its read mappings through took write access from this
   * grant: a later write grant of the page is a refault (a read grant is not: the device still had
   * the page).
   */
  writeLostTo: Window | null;
  /** With lostBefore: the invalidation that took the device's previous usable grant. */
  lostTo: Window | null;
}

interface Window {
  id: number;
  /**
   * The subscription the call was for. A device with several interval subscriptions gets one call
   * per subscription for the same invalidation, each acknowledged on its own; a window covers its
   * subscription's part of the range only, so the first acknowledgement does not revoke grants the
   * device may still legitimately use under a subscription it has not been told about yet.
   */
  sub: number;
  pid: number;
  start: number;
  end: number;
  event: number;
  flags: number;
  /** Why the kernel invalidated (the range's origin: 'mprotect', 'cow_fault', 'thp_split', ...), if known. */
  origin: string | null;
  startTick: number;
  /** Clock tick when the end was published (after the PTEs changed); Infinity while open. */
  endTick: number;
  acked: boolean;
  ended: boolean;
  /**
   * The device said, when it acknowledged, that it downgraded instead of dropping: it kept its
   * read mappings in the range. Only refault accounting uses it, and only for an event that takes
   * write access only (a device cannot keep what a CLEAR takes): a read grant it covers is not lost.
   */
  kept: boolean;
}

const MAX_FINDINGS = 200;
/** Acknowledged windows remembered for replies that arrive late. */
const MAX_CLOSED_WINDOWS = 256;

export interface SanitizerStats {
  checked: number;
  findings: number;
  byKind: Record<FindingKind, number>;
  grants: number;
  /** Grants of pages an invalidation had revoked or downgraded before (refaulted pages). */
  refaults: number;
  /**
   * Device faults that refaulted: replies (a fault of a range, a gup, a migration, an exclusive
   * grab) that handed the device at least one page an invalidation had taken. A gpu that faults a
   * 2 MiB range back counts one here and up to 512 in `refaults`; dmirror, which faults page by
   * page, counts the same in both.
   */
  refaultFaults: number;
  /**
   * Refaults by what caused them: `EVENT:origin` of the first acknowledged invalidation that
   * covered the page (e.g. `CLEAR:thp_split`, `CLEAR:cow_fault`, `PROTECTION_VMA:mprotect`; `?`
   * for an origin the transport did not carry). Sums to `refaults`.
   */
  refaultCauses: Record<string, number>;
}

export class Sanitizer {
  private readonly meta: Int32Array;
  private readonly metaBase: number;
  private readonly grants = new Map<number, Map<number, Grant>>();
  /**
   * Open windows, in the order the device took their starts. Usually one or two, so a list beats a
   * Map on the per-invalidation path; but a device that falls behind a fast kernel takes a run of
   * calls before their ends (WorkerHost.pump takes calls first), and then hundreds are open. The
   * lookups stay O(1) anyway: an acknowledgement is for the window just opened (searched from the
   * newest), an end is for the oldest (searched from the oldest; ends come in start order), and
   * removing the oldest is a shift. A linear search from the wrong side made each call and end
   * cost O(open): a device that fell behind then fell further behind, and stayed there (the N = 1
   * round at p50 10 us instead of 0.3 us, docs/benchmarks.md).
   */
  private open: Window[] = [];
  private closed: Window[] = [];
  readonly findings: Finding[] = [];
  readonly stats: SanitizerStats = {
    checked: 0,
    findings: 0,
    byKind: { stale: 0, 'lost-write': 0, 'write-ro': 0, unmapped: 0, 'wrong-pfn': 0 },
    grants: 0,
    refaults: 0,
    refaultFaults: 0,
    refaultCauses: {},
  };
  /** The reply whose grants are being applied (one per grant* call), and the last one that refaulted. */
  private reply = 0;
  private lastRefaultReply = -1;
  /** Called for every new finding (to report it to the kernel). */
  onFinding: ((f: Finding) => void) | null = null;
  enabled = true;

  constructor(
    metaSab: SharedArrayBuffer,
    readonly deviceId: number,
  ) {
    this.meta = new Int32Array(metaSab);
    this.metaBase = this.meta[HDR.FRAME_META_OFFSET];
  }

  /**
   * Advances the clock: for a sanitizer that runs without a kernel (unit tests). Inside devmirror
   * only the kernel thread advances it (PhysicalMemory.tick); a device's sanitizer only reads it.
   */
  tick(): number {
    return Atomics.add(this.meta, HDR.CLOCK, 1) + 1;
  }

  /** The clock now, without advancing it (when a finding was made). */
  clockNow(): number {
    return Atomics.load(this.meta, HDR.CLOCK);
  }

  generation(pfn: number): number {
    return Atomics.load(this.meta, this.metaBase + pfn * FRAME_META_WORDS + FM.GENERATION);
  }

  private pidGrants(pid: number): Map<number, Grant> {
    let m = this.grants.get(pid);
    if (!m) {
      m = new Map();
      this.grants.set(pid, m);
    }
    return m;
  }

  /** Does this invalidation take write access only (the frame stays mapped, read-only)? */
  private static downgradeOnly(w: Window): boolean {
    return (
      w.event === MmuNotifierEvent.PROTECTION_PAGE ||
      w.event === MmuNotifierEvent.SOFT_DIRTY ||
      (w.event === MmuNotifierEvent.PROTECTION_VMA && (w.flags & RANGE_UPDATE_TO_READ_ONLY) !== 0)
    );
  }

  // ---- grants: one method per kind of kernel reply; each reply is one device fault ---------------
  // A reply that hands back several pages an invalidation had taken counts one refault fault (and
  // one refaulted page each): the reply boundary is drawn here, never by the callers. In each, the
  // kernel handed out pfn for (pid, va): `tick` is the clock when it computed it, `gen` the frame
  // generation it read then.

  /** One page granted by a reply of its own (an exclusive grab, tests). */
  grant(pid: number, va: number, pfn: number, gen: number, write: boolean, tick: number): void {
    this.reply++;
    this.grantPage(pid, va, pfn, gen, write, tick);
  }

  /** A range fault's reply: hmm_range_fault's pfn words for the pages from `start` (invalid ones granted nothing). */
  grantRangeFault(pid: number, start: number, pfns: ArrayLike<number>, gens: ArrayLike<number>, tick: number): void {
    this.reply++;
    for (let i = 0; i < pfns.length; i++) {
      const w = pfns[i];
      if (w & HMM_PFN.VALID) this.grantPage(pid, start + i * PAGE_SIZE, w & HMM_PFN.PFN_MASK, gens[i], (w & HMM_PFN.WRITE) !== 0, tick);
    }
  }

  /** A gup's reply for the page at `va`: that page, or every page of the huge folio it maps. */
  grantGup(pid: number, va: number, r: { pfn: number; gen: number; write: boolean; tick: number; headVa?: number; hugePfns?: ArrayLike<number>; hugeGens?: ArrayLike<number> }): void {
    this.reply++;
    if (r.hugePfns && r.hugeGens && r.headVa !== undefined) {
      for (let i = 0; i < r.hugePfns.length; i++) this.grantPage(pid, r.headVa + i * PAGE_SIZE, r.hugePfns[i], r.hugeGens[i], r.write, r.tick);
    } else this.grantPage(pid, va, r.pfn, r.gen, r.write, r.tick);
  }

  /** A reply that lists its pages (a migration back to system memory): [va, pfn, generation, writable]. */
  grantPages(pid: number, pages: ReadonlyArray<readonly [number, number, number, boolean]>, tick: number): void {
    this.reply++;
    for (const [va, pfn, gen, write] of pages) this.grantPage(pid, va, pfn, gen, write, tick);
  }

  private grantPage(pid: number, va: number, pfn: number, gen: number, write: boolean, tick: number): void {
    const g: Grant = { pfn, gen, write, tick, revokedBy: null, downgradedBy: null, covered: false, staleOnArrival: false, lostBefore: false, coveredBy: null, lostTo: null, writeLostTo: null };
    // Windows that started after the reply was computed and overlap it take it away at once if
    // they are acknowledged, or at their end if still open (the device may legitimately fetch
    // pfns inside a window; it must then fail readRetry).
    // A closed window revokes every grant computed before it ended (before it started: the ack
    // took it; inside it: the end did).
    let stale = false;
    for (const w of this.closed) {
      if (w.pid === pid && tick < w.endTick && va >= w.start && va < w.end) {
        this.apply(g, w);
        stale = true;
      }
    }
    for (const w of this.open) {
      if (w.pid === pid && w.acked && w.startTick > tick && va >= w.start && va < w.end) {
        this.apply(g, w);
        stale = true;
      }
    }
    const m = this.pidGrants(pid);
    const key = Math.floor(va / PAGE_SIZE);
    // A refault: the kernel hands the device a page an invalidation had taken away from it (or
    // downgraded) — the cost the event-aware policies try to avoid. A grant that an invalidation
    // already made stale on its way (computed before a window this loop just applied) is one the
    // device must throw away (its readRetry fails) and ask for again: it is not counted, and the
    // loss it repairs carries over to the grant that replaces it, so a fault that raced k
    // invalidations counts one refault, not k + 1, and a first fault that raced one counts none.
    // A page the device kept through a downgrade it reported (see Window.kept) is lost only for
    // writing: granting it again for reading (a gpu re-mapping its whole range after losing some
    // other page of it) is no refault.
    const prev = m.get(key);
    if (prev !== undefined) {
      if (prev.staleOnArrival) {
        g.lostBefore = prev.lostBefore;
        g.lostTo = prev.lostTo;
      } else if (prev.covered) {
        g.lostBefore = true;
        g.lostTo = prev.coveredBy;
      } else if (prev.writeLostTo) {
        if (write) {
          g.lostBefore = true;
          g.lostTo = prev.writeLostTo;
        } else g.writeLostTo ??= prev.writeLostTo; // still without the write access it lost
      }
    }
    g.staleOnArrival = stale;
    if (g.lostBefore && !g.staleOnArrival) {
      this.stats.refaults++;
      if (this.lastRefaultReply !== this.reply) {
        this.lastRefaultReply = this.reply;
        this.stats.refaultFaults++;
      }
      const w = g.lostTo;
      // A covered grant always has its window; `unknown` only guards the invariant.
      const cause = w ? `${eventName(w.event as MmuNotifierEvent)}:${w.origin ?? '?'}` : 'unknown';
      this.stats.refaultCauses[cause] = (this.stats.refaultCauses[cause] ?? 0) + 1;
    }
    m.set(key, g);
    this.stats.grants++;
  }

  /** The device dropped its translation on its own (no longer needed for checks). */
  forget(pid: number, va: number): void {
    this.grants.get(pid)?.delete(Math.floor(va / PAGE_SIZE));
  }

  private apply(g: Grant, w: Window): void {
    if (g.revokedBy) return; // covered by the revocation already
    if (Sanitizer.downgradeOnly(w)) {
      if (g.write) {
        g.write = false;
        g.downgradedBy = w;
        if (w.kept) g.writeLostTo ??= w;
      }
      if (w.kept) return; // the device kept the page for reading: not lost
    } else {
      g.revokedBy = w;
    }
    g.covered = true;
    g.coveredBy ??= w;
  }

  /**
   * An invalidation was delivered to the device for subscription `sub` (window opens). `within` is
   * the subscription's interval (none for a whole-mm subscription): the window covers only the part
   * of [start, end) the subscription covers.
   */
  started(
    id: number,
    sub: number,
    pid: number,
    start: number,
    end: number,
    event: number,
    flags: number,
    tick: number,
    within?: { start: number; end: number },
    owner: number | null = null,
    origin: string | null = null,
  ): void {
    // The device's own migration or exclusive access: the owner may skip it (test_hmm and the
    // drivers do) because it updates its mirror from the operation's reply. A page that did not
    // move keeps its frame, and the device may go on using it; a page that moved freed its frame,
    // whose new generation the access check catches. So no window: nothing is revoked at the ack.
    if (owner !== null && owner === this.deviceId && (event === MmuNotifierEvent.MIGRATE || event === MmuNotifierEvent.EXCLUSIVE)) return;
    const s = within ? Math.max(start, within.start) : start;
    const e = within ? Math.min(end, within.end) : end;
    this.open.push({ id, sub, pid, start: s, end: e, event, flags, origin, startTick: tick, endTick: Infinity, acked: false, ended: false, kept: false });
  }

  /** Index of the open window of (id, sub), searched from the newest; -1 if none. */
  private newestOpen(id: number, sub: number): number {
    const open = this.open;
    for (let i = open.length - 1; i >= 0; i--) if (open[i].id === id && open[i].sub === sub) return i;
    return -1;
  }

  /** Index of the open window of (id, sub), searched from the oldest; -1 if none. */
  private oldestOpen(id: number, sub: number): number {
    const open = this.open;
    for (let i = 0; i < open.length; i++) if (open[i].id === id && open[i].sub === sub) return i;
    return -1;
  }

  /** Applies window w to the grants in its range computed at ticks [fromTick, toTick). */
  private applyInRange(w: Window, fromTick: number, toTick: number): void {
    const m = this.grants.get(w.pid);
    if (!m || m.size === 0) return;
    const first = Math.floor(w.start / PAGE_SIZE);
    const last = w.end >= ULONG_MAX ? Number.MAX_SAFE_INTEGER : Math.ceil(w.end / PAGE_SIZE) - 1;
    if (last - first + 1 > m.size) {
      for (const [vpn, g] of m) if (vpn >= first && vpn <= last && g.tick >= fromTick && g.tick < toTick) this.apply(g, w);
    } else {
      for (let vpn = first; vpn <= last; vpn++) {
        const g = m.get(vpn);
        if (g && g.tick >= fromTick && g.tick < toTick) this.apply(g, w);
      }
    }
  }

  /**
   * The device acknowledged it: every grant in range computed before the window opened is gone
   * (or downgraded). The device's own MIGRATE/EXCLUSIVE opens no window (see started). `kept`: the
   * device downgraded instead of dropping (refault accounting only, see Window.kept).
   */
  acked(id: number, sub: number, kept = false): void {
    const i = this.newestOpen(id, sub);
    if (i < 0) return;
    const w = this.open[i];
    w.acked = true;
    w.kept = kept;
    this.applyInRange(w, -Infinity, w.startTick);
  }

  /** The invalidation ended (published at `tick`): grants computed inside the window are stale too. */
  ended(id: number, sub: number, tick: number): void {
    const i = this.oldestOpen(id, sub);
    if (i < 0) return;
    const open = this.open;
    const w = open[i];
    w.ended = true;
    w.endTick = tick;
    // Keep the start order (the searches above rely on it); the oldest goes by a shift.
    if (i === 0) open.shift();
    else open.splice(i, 1);
    // Only grants computed inside the window: one computed after the end was published (the
    // device may see the grant before it processes the end) reflects the new page tables.
    this.applyInRange(w, w.startTick, tick);
    this.closed.push(w);
    if (this.closed.length > MAX_CLOSED_WINDOWS) this.closed = this.closed.slice(-MAX_CLOSED_WINDOWS / 2);
  }

  /** Drops every window and grant of a process (it exited, or the device released it). */
  /**
   * The device's mirror as this record sees it: pages granted and neither revoked nor freed since
   * (the server's shadow of an external client's mirror, for the dashboard).
   */
  shadow(): { pages: number; writable: number } {
    let pages = 0;
    let writable = 0;
    for (const m of this.grants.values()) {
      for (const g of m.values()) {
        if (g.revokedBy || this.generation(g.pfn) !== g.gen) continue;
        pages++;
        if (g.write && !g.downgradedBy) writable++;
      }
    }
    return { pages, writable };
  }

  dropPid(pid: number): void {
    this.grants.delete(pid);
  }

  /**
   * The device gave up a subscription: it hears of no invalidation of [start, end) any more, so its
   * grants there go (a later access is `unmapped`), except where another of its subscriptions still
   * covers them (`keep`: [start, end) pairs). A device that drops one SVM range keeps using the
   * others.
   */
  dropUncovered(pid: number, start: number, end: number, keep: ReadonlyArray<readonly [number, number]>): void {
    const m = this.grants.get(pid);
    if (!m) return;
    for (const vpn of [...m.keys()]) {
      const va = vpn * PAGE_SIZE;
      if (va < start || va >= end) continue;
      if (keep.some(([a, b]) => va >= a && va < b)) continue;
      m.delete(vpn);
    }
    if (m.size === 0) this.grants.delete(pid);
  }

  /**
   * Checks one device access of the page at va through pfn. Returns the finding, or null. Call it
   * after the data moved, so a frame recycled during the access is caught by its generation.
   */
  check(pid: number, va: number, pfn: number, write: boolean): Finding | null {
    if (!this.enabled) return null;
    this.stats.checked++;
    const g = this.grants.get(pid)?.get(Math.floor(va / PAGE_SIZE));
    let kind: FindingKind | null = null;
    let message = '';
    if (!g) {
      kind = 'unmapped';
      message = 'access through a translation the kernel never granted';
    } else if (g.pfn !== pfn) {
      kind = 'wrong-pfn';
      message = `access through pfn ${pfn}, the kernel granted ${g.pfn}`;
    } else if (g.revokedBy) {
      kind = write ? 'lost-write' : 'stale';
      const w = g.revokedBy;
      message = `${write ? 'write' : 'read'} after the device acknowledged ${eventName(w.event as MmuNotifierEvent)} #${w.id}`;
    } else if (this.generation(pfn) !== g.gen) {
      kind = write ? 'lost-write' : 'stale';
      message = `frame ${pfn} was freed or reused since it was granted`;
    } else if (write && !g.write) {
      kind = 'write-ro';
      message = g.downgradedBy ? `write after ${eventName(g.downgradedBy.event as MmuNotifierEvent)} #${g.downgradedBy.id} made it read-only` : 'write through a read-only translation';
    }
    if (!kind) return null;
    const w = g?.revokedBy ?? g?.downgradedBy ?? null;
    const f: Finding = {
      kind,
      deviceId: this.deviceId,
      pid,
      va,
      pfn,
      write,
      tick: this.clockNow(),
      grant: g ? { pfn: g.pfn, gen: g.gen, write: g.write, tick: g.tick } : null,
      revokedBy: w ? { id: w.id, event: eventName(w.event as MmuNotifierEvent), start: w.start, end: w.end, startTick: w.startTick } : null,
      message,
    };
    this.stats.findings++;
    this.stats.byKind[kind]++;
    if (this.findings.length < MAX_FINDINGS) this.findings.push(f);
    this.onFinding?.(f);
    return f;
  }
}
