/**
 * An independent shadow model of user memory contents, for data-integrity tests. It knows nothing
 * about page tables, frames, swap or devices: only, for every (pid, page address), which protection
 * the page has, what backs it (private anonymous memory, a shared object page, or a private mapping
 * of a file page) and, for private pages that were written, their private contents. Page contents
 * are immutable Uint8Arrays (a write makes a new one), so fork can share them freely.
 *
 * Semantics modelled (Linux):
 * - private anonymous pages read as zeros until written;
 * - shared mappings (MAP_SHARED of a file, or MAP_SHARED|MAP_ANONYMOUS shmem) read and write the
 *   object's page, visible to every mapping of it and to read()/write() of the file;
 * - private file mappings read the file's current page until the first write gives them a private
 *   copy (COW); MADV_DONTNEED drops the private copy (the page reads the file again);
 * - fork copies the child's view (private pages become copy-on-write: later writes are private);
 * - a file page at or beyond EOF raises SIGBUS.
 */
import { Buffer } from 'node:buffer';
export const PAGE_SIZE = 4096;
export const ZERO_PAGE = new Uint8Array(PAGE_SIZE);
export const PROT_READ = 1;
export const PROT_WRITE = 2;

export class ShadowObject {
  readonly pages = new Map<number, Uint8Array>();
  constructor(
    readonly name: string,
    readonly kind: 'file' | 'shmem',
    /** Pages before EOF (Infinity for shmem, which the tests never truncate). */
    readonly sizePages: number,
    readonly fileId: number | null,
  ) {}

  get(index: number): Uint8Array {
    return this.pages.get(index) ?? ZERO_PAGE;
  }

  /** Stores bytes at a byte offset in the object (pwrite). */
  writeBytes(offset: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const index = Math.floor(pos / PAGE_SIZE);
      const off = pos % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, data.length - done);
      const page = new Uint8Array(this.get(index));
      page.set(data.subarray(done, done + n), off);
      this.pages.set(index, page);
      done += n;
    }
  }

  readBytes(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / PAGE_SIZE);
      const off = pos % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, length - done);
      out.set(this.get(index).subarray(off, off + n), done);
      done += n;
    }
    return out;
  }
}

export type Backing =
  | { t: 'anon' }
  | { t: 'shared'; obj: ShadowObject; index: number }
  | { t: 'privfile'; obj: ShadowObject; index: number };

export interface ShadowPage {
  prot: number;
  backing: Backing;
  /** Private contents (anonymous data, or the COW copy of a private file page); null = not written. */
  priv: Uint8Array | null;
}

export type AccessOutcome = { ok: true } | { ok: false; code: 'SIGSEGV'; siCode: 'SEGV_MAPERR' | 'SEGV_ACCERR'; va: number } | { ok: false; code: 'SIGBUS'; va: number };

export class ShadowProcess {
  readonly pages = new Map<number, ShadowPage>();
  /** Every page address that was ever mapped (to probe unmapped addresses later). */
  readonly everMapped = new Set<number>();
  constructor(readonly pid: number) {}

  isMapped(va: number): boolean {
    return this.pages.has(va);
  }

  /** True if every page of [start, end) is mapped. */
  covers(start: number, end: number): boolean {
    for (let va = start; va < end; va += PAGE_SIZE) if (!this.pages.has(va)) return false;
    return true;
  }

  anyMapped(start: number, end: number): boolean {
    for (let va = start; va < end; va += PAGE_SIZE) if (this.pages.has(va)) return true;
    return false;
  }

  contents(va: number): Uint8Array {
    const pg = this.pages.get(va);
    if (!pg) throw new Error(`shadow: 0x${va.toString(16)} is not mapped in pid ${this.pid}`);
    return pageContents(pg);
  }

  map(start: number, nPages: number, prot: number, backing: (i: number) => Backing): void {
    for (let i = 0; i < nPages; i++) {
      const va = start + i * PAGE_SIZE;
      this.pages.set(va, { prot, backing: backing(i), priv: null });
      this.everMapped.add(va);
    }
  }

  unmap(start: number, end: number): void {
    for (let va = start; va < end; va += PAGE_SIZE) this.pages.delete(va);
  }

  /** The outcome a CPU access of [addr, addr + len) must have (checked before anything changes). */
  accessOutcome(addr: number, len: number, write: boolean): AccessOutcome {
    const first = Math.floor(addr / PAGE_SIZE) * PAGE_SIZE;
    for (let va = first; va < addr + len; va += PAGE_SIZE) {
      const pg = this.pages.get(va);
      if (!pg) return { ok: false, code: 'SIGSEGV', siCode: 'SEGV_MAPERR', va };
      if (!(pg.prot & (write ? PROT_WRITE : PROT_READ))) return { ok: false, code: 'SIGSEGV', siCode: 'SEGV_ACCERR', va };
    }
    for (let va = first; va < addr + len; va += PAGE_SIZE) {
      const pg = this.pages.get(va) as ShadowPage;
      if (beyondEof(pg)) return { ok: false, code: 'SIGBUS', va };
    }
    return { ok: true };
  }

  /** Applies a successful CPU store. */
  write(addr: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const pos = addr + done;
      const va = Math.floor(pos / PAGE_SIZE) * PAGE_SIZE;
      const off = pos - va;
      const n = Math.min(PAGE_SIZE - off, data.length - done);
      const pg = this.pages.get(va) as ShadowPage;
      const page = new Uint8Array(pageContents(pg));
      page.set(data.subarray(done, done + n), off);
      if (pg.backing.t === 'shared') pg.backing.obj.pages.set(pg.backing.index, page);
      else pg.priv = page;
      done += n;
    }
  }

  read(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const pos = addr + done;
      const va = Math.floor(pos / PAGE_SIZE) * PAGE_SIZE;
      const off = pos - va;
      const n = Math.min(PAGE_SIZE - off, len - done);
      out.set(this.contents(va).subarray(off, off + n), done);
      done += n;
    }
    return out;
  }

  /** MADV_DONTNEED (and the old range of MREMAP_DONTUNMAP): private contents are dropped. */
  dropPrivate(start: number, end: number): void {
    for (let va = start; va < end; va += PAGE_SIZE) {
      const pg = this.pages.get(va);
      if (pg) pg.priv = null;
    }
  }

  setProt(start: number, end: number, prot: number): void {
    for (let va = start; va < end; va += PAGE_SIZE) {
      const pg = this.pages.get(va);
      if (pg) pg.prot = prot;
    }
  }

  /**
   * fork: the child sees the same contents; its pages are its own from now on. `skip`: a range
   * the parent advised MADV_DONTFORK, which the child does not get at all.
   */
  forkInto(child: ShadowProcess, skip: readonly [number, number] | null = null): void {
    for (const [va, pg] of this.pages) {
      if (skip && va >= skip[0] && va < skip[1]) continue;
      child.pages.set(va, { prot: pg.prot, backing: pg.backing, priv: pg.priv });
      child.everMapped.add(va);
    }
  }

  /**
   * mremap of [from, from + oldLen) to [to, to + newLen) (to may equal from for growth in place):
   * pages move, growth continues the backing of the first page, the old range is unmapped unless
   * `dontunmap` (then it keeps its backing without private contents).
   */
  move(from: number, oldLen: number, to: number, newLen: number, dontunmap: boolean): void {
    const old: ShadowPage[] = [];
    for (let va = from; va < from + oldLen; va += PAGE_SIZE) old.push(this.pages.get(va) as ShadowPage);
    const first = old[0];
    const moved: ShadowPage[] = [];
    for (let i = 0; i < newLen / PAGE_SIZE; i++) {
      if (i < old.length) moved.push({ prot: old[i].prot, backing: old[i].backing, priv: old[i].priv });
      else moved.push({ prot: first.prot, backing: extend(first.backing, i), priv: null });
    }
    if (to !== from) {
      if (dontunmap) {
        for (const pg of old) pg.priv = null;
      } else {
        this.unmap(from, from + oldLen);
      }
    }
    moved.forEach((pg, i) => {
      const va = to + i * PAGE_SIZE;
      this.pages.set(va, pg);
      this.everMapped.add(va);
    });
  }

  /** Maximal run of contiguous mapped pages around va: [start, end). */
  runAround(va: number): [number, number] {
    let s = va;
    while (this.pages.has(s - PAGE_SIZE)) s -= PAGE_SIZE;
    let e = va + PAGE_SIZE;
    while (this.pages.has(e)) e += PAGE_SIZE;
    return [s, e];
  }

  sortedPages(): number[] {
    return [...this.pages.keys()].sort((a, b) => a - b);
  }
}

function extend(b: Backing, i: number): Backing {
  if (b.t === 'anon') return b;
  return { t: b.t, obj: b.obj, index: b.index + i };
}

export function beyondEof(pg: ShadowPage): boolean {
  return pg.backing.t !== 'anon' && pg.priv === null && pg.backing.index >= pg.backing.obj.sizePages;
}

export function pageContents(pg: ShadowPage): Uint8Array {
  if (pg.priv) return pg.priv;
  if (pg.backing.t === 'anon') return ZERO_PAGE;
  return pg.backing.obj.get(pg.backing.index);
}

export function describeBacking(b: Backing): string {
  return b.t === 'anon' ? 'anon' : `${b.t}(${b.obj.name}[${b.index}])`;
}

/** Index of the first differing byte, or -1. */
export function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  if (Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
