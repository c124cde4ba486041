/**
 * Reverse mappings: which (mm, address) map each frame. A PTE mapping is recorded on its frame; a
 * PMD (huge) mapping is recorded once, on the folio's head frame. Kernel thread only.
 */
import { PAGE_SIZE } from './layout.js';
import type { MM } from './mm.js';

export interface Mapping {
  mm: MM;
  /** Address of this frame in mm (for a huge mapping reported by `of`, the subpage's address). */
  va: number;
  huge: boolean;
}

export class Rmap {
  private readonly map = new Map<number, Mapping[]>();

  add(pfn: number, mm: MM, va: number, huge = false): void {
    const list = this.map.get(pfn);
    const m = { mm, va, huge };
    if (list) list.push(m);
    else this.map.set(pfn, [m]);
  }

  remove(pfn: number, mm: MM, va: number, huge = false): boolean {
    const list = this.map.get(pfn);
    if (!list) return false;
    const i = list.findIndex((m) => m.mm === mm && m.va === va && m.huge === huge);
    if (i < 0) return false;
    list.splice(i, 1);
    if (list.length === 0) this.map.delete(pfn);
    return true;
  }

  /** Mappings recorded directly on pfn (PTE mappings, or PMD mappings if pfn is a head). */
  direct(pfn: number): readonly Mapping[] {
    return this.map.get(pfn) ?? [];
  }

  /**
   * Every mapping of frame `pfn`: its PTE mappings plus the PMD mappings of its folio (`head`),
   * with the address of this subpage.
   */
  of(pfn: number, head = pfn): Mapping[] {
    const out: Mapping[] = [];
    for (const m of this.map.get(pfn) ?? []) if (!m.huge) out.push(m);
    if (head !== pfn || this.map.has(head)) {
      for (const m of this.map.get(head) ?? []) {
        if (m.huge) out.push({ mm: m.mm, va: m.va + (pfn - head) * PAGE_SIZE, huge: true });
      }
    }
    return out;
  }

  /** PMD mappings of the folio at `head`. */
  hugeMappings(head: number): Mapping[] {
    return (this.map.get(head) ?? []).filter((m) => m.huge);
  }

  entries(): IterableIterator<[number, Mapping[]]> {
    return this.map.entries();
  }

  get size(): number {
    return this.map.size;
  }
}
