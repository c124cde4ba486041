/** Pure helpers over the 32-bit page-table entry format defined in layout.ts. */
import { PTE, PTE_FLAGS_MASK, PTE_MAX_PFN, PTE_PFN_SHIFT } from './layout.js';

export type Pte = number;

export const PTE_NONE = 0;

export function mkPte(pfn: number, flags: number): Pte {
  if (pfn < 0 || pfn > PTE_MAX_PFN) throw new RangeError(`pfn ${pfn} does not fit a page-table entry`);
  return ((pfn << PTE_PFN_SHIFT) | (flags & PTE_FLAGS_MASK)) | 0;
}
export function ptePfn(e: Pte): number {
  return e >>> PTE_PFN_SHIFT;
}
export function pteFlags(e: Pte): number {
  return e & PTE_FLAGS_MASK;
}
export function pteWithFlags(e: Pte, set: number, clear = 0): Pte {
  return ((e & ~clear) | set) | 0;
}
export const pteNone = (e: Pte): boolean => e === 0;
export const ptePresent = (e: Pte): boolean => (e & PTE.PRESENT) !== 0;
export const pteWrite = (e: Pte): boolean => (e & PTE.WRITE) !== 0;
export const pteDirty = (e: Pte): boolean => (e & PTE.DIRTY) !== 0;
export const pteYoung = (e: Pte): boolean => (e & PTE.YOUNG) !== 0;
export const pteSoftDirty = (e: Pte): boolean => (e & PTE.SOFT_DIRTY) !== 0;
export const pteHuge = (e: Pte): boolean => (e & PTE.HUGE) !== 0;
export const pteProtnone = (e: Pte): boolean => (e & PTE.PROTNONE) !== 0;
export const pteSwap = (e: Pte): boolean => (e & PTE.SWAP) !== 0;
export const pteDevicePrivate = (e: Pte): boolean => (e & PTE.DEVICE_PRIVATE) !== 0;
export const pteDeviceExclusive = (e: Pte): boolean => (e & PTE.DEVICE_EXCLUSIVE) !== 0;
export const pteTable = (e: Pte): boolean => (e & PTE.TABLE) !== 0;
export const pteMigration = (e: Pte): boolean => (e & PTE.MIGRATION) !== 0;
/**
 * A leaf that holds a reference on a frame: present, NUMA-hinted, device-exclusive, migration
 * (RAM frames) or device-private (a device-memory frame).
 */
export const pteMapsFrame = (e: Pte): boolean =>
  (e & (PTE.PRESENT | PTE.PROTNONE | PTE.DEVICE_EXCLUSIVE | PTE.MIGRATION | PTE.DEVICE_PRIVATE)) !== 0 &&
  (e & PTE.TABLE) === 0;
/** The CPU can use the entry without faulting (for reads). */
export const pteAccessible = (e: Pte): boolean => (e & (PTE.PRESENT | PTE.TABLE)) === PTE.PRESENT;

export function describePte(e: Pte): string {
  if (e === 0) return 'none';
  const names = Object.entries(PTE)
    .filter(([, bit]) => (e & bit) !== 0)
    .map(([n]) => n.toLowerCase());
  return `${names.join('|')} pfn=${ptePfn(e)}`;
}

/** Is `e` the migration entry of frame `pfn`? (Its permission bits may have changed since it was
 * installed: mprotect and clear_refs edit migration entries too.) */
export function isMigrationOf(e: Pte, pfn: number): boolean {
  return (e & PTE.MIGRATION) !== 0 && ptePfn(e) === pfn;
}

/**
 * remove_migration_ptes: the entry to put back for a migration entry `mig` of a page that was
 * mapped as `old`, pointing at `pfn`. Permission and dirty bits come from the migration entry (they
 * may have been changed while it was installed); presence (present or NUMA-hinted) from `old`.
 */
export function fromMigration(mig: Pte, old: Pte, pfn: number): Pte {
  const keep = PTE.WRITE | PTE.DIRTY | PTE.SOFT_DIRTY | PTE.YOUNG;
  return mkPte(pfn, (old & (PTE.PRESENT | PTE.PROTNONE)) | (mig & keep));
}
