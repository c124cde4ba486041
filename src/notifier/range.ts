/**
 * `NotifierRange` and the event enum, as in include/linux/mmu_notifier.h.
 */
import { ULONG_MAX } from '../kernel/layout.js';

/** enum mmu_notifier_event, values 0..7 as in the kernel. */
export const MmuNotifierEvent = {
  UNMAP: 0,
  CLEAR: 1,
  PROTECTION_VMA: 2,
  PROTECTION_PAGE: 3,
  SOFT_DIRTY: 4,
  RELEASE: 5,
  MIGRATE: 6,
  EXCLUSIVE: 7,
} as const;
export type MmuNotifierEvent = (typeof MmuNotifierEvent)[keyof typeof MmuNotifierEvent];
export type EventName = keyof typeof MmuNotifierEvent;
export const EVENT_NAMES: readonly EventName[] = [
  'UNMAP',
  'CLEAR',
  'PROTECTION_VMA',
  'PROTECTION_PAGE',
  'SOFT_DIRTY',
  'RELEASE',
  'MIGRATE',
  'EXCLUSIVE',
];

export function eventName(e: MmuNotifierEvent): EventName {
  return EVENT_NAMES[e];
}

/** MMU_NOTIFIER_RANGE_BLOCKABLE. */
export const RANGE_BLOCKABLE = 1 << 0;
/**
 * The update leaves the range readable: set on PROTECTION_VMA when the VMA keeps VM_READ, i.e.
 * what mmu_notifier_range_update_to_read_only() told drivers in 5.2 - 6.2 (computed there from
 * range->vma, which the range no longer carries). Event-aware devices use it to keep read access.
 */
export const RANGE_UPDATE_TO_READ_ONLY = 1 << 1;

/**
 * Why the kernel changed the page table: the syscall or kernel activity that sent an invalidation
 * (provenance). Not a kernel concept; devices must not depend on it.
 */
export type Origin =
  | 'munmap'
  | 'mremap'
  | 'mprotect'
  | 'madvise'
  | 'brk'
  | 'fork'
  | 'exit'
  | 'clear_refs'
  | 'msync'
  | 'cow_fault'
  | 'exclusive_restore'
  | 'reclaim'
  | 'swap'
  | 'compaction'
  | 'migration'
  | 'numa_balancing'
  | 'ksm'
  | 'khugepaged'
  | 'thp_split'
  | 'writeback'
  | 'oom_reaper'
  | 'device_migration'
  | 'device_exclusive'
  | 'mmap';

/** Every origin, in a fixed order: its index is the origin's code in shared memory and on the wire. */
export const ORIGINS: readonly Origin[] = [
  'munmap',
  'mremap',
  'mprotect',
  'madvise',
  'brk',
  'fork',
  'exit',
  'clear_refs',
  'msync',
  'cow_fault',
  'exclusive_restore',
  'reclaim',
  'swap',
  'compaction',
  'migration',
  'numa_balancing',
  'ksm',
  'khugepaged',
  'thp_split',
  'writeback',
  'oom_reaper',
  'device_migration',
  'device_exclusive',
  'mmap',
];
export const ORIGIN_CODES: Record<string, number> = Object.fromEntries(ORIGINS.map((o, i) => [o, i + 1]));
export function originOf(code: number): Origin | null {
  return ORIGINS[code - 1] ?? null;
}

export interface NotifierRange {
  /** Process whose address space changes. */
  readonly pid: number;
  /** Page aligned, half open: [start, end). `end` may be ULONG_MAX (whole address space). */
  readonly start: number;
  readonly end: number;
  readonly event: MmuNotifierEvent;
  /** RANGE_BLOCKABLE or 0. */
  flags: number;
  /** Set only for MIGRATE and EXCLUSIVE: the device (pgmap owner) that caused it, else null. */
  readonly owner: number | null;
  readonly origin: Origin;
  /** Invalidation id, unique per boot (assigned by the notifier core). */
  id: number;
}

export function rangeBlockable(r: NotifierRange): boolean {
  return (r.flags & RANGE_BLOCKABLE) !== 0;
}

export function makeRange(
  pid: number,
  event: MmuNotifierEvent,
  start: number,
  end: number,
  origin: Origin,
  owner: number | null = null,
): NotifierRange {
  return { pid, start, end, event, flags: 0, owner, origin, id: 0 };
}

export function formatEnd(end: number): number | string {
  return end >= ULONG_MAX ? '0xffffffffffffffff' : end;
}
