/**
 * In-memory files. `file` objects behave like files on a disk-backed filesystem: their contents live
 * on an emulated disk, the page cache holds frames for pages in use, dirty pages are written back
 * (and cleaned with page_mkclean first), and clean pages can simply be dropped by reclaim. `shmem`
 * objects back MAP_SHARED|MAP_ANONYMOUS areas: no disk, their pages go to swap instead.
 *
 * Kernel thread only.
 */
import { PAGE_SIZE } from './layout.js';

export type FileKind = 'file' | 'shmem';

export class MemFile {
  /** Page index -> frame in the page cache. */
  readonly cache = new Map<number, number>();
  /** shmem only: page index -> swap slot. */
  readonly swapped = new Map<number, number>();
  /** file only: page index -> contents on the emulated disk (absent = zeros). */
  readonly disk = new Map<number, Uint8Array>();
  unlinked = false;

  constructor(
    readonly id: number,
    public size: number,
    readonly kind: FileKind,
  ) {}

  get pages(): number {
    return Math.ceil(this.size / PAGE_SIZE);
  }

  readDisk(index: number, into: Uint8Array): void {
    const d = this.disk.get(index);
    if (d) into.set(d);
    else into.fill(0);
  }

  writeDisk(index: number, from: Uint8Array): void {
    let d = this.disk.get(index);
    if (!d) {
      d = new Uint8Array(PAGE_SIZE);
      this.disk.set(index, d);
    }
    d.set(from);
  }
}

export class FileTable {
  private readonly files = new Map<number, MemFile>();
  private nextId = 1;

  create(size: number, kind: FileKind = 'file'): MemFile {
    const f = new MemFile(this.nextId++, size, kind);
    this.files.set(f.id, f);
    return f;
  }

  get(id: number): MemFile | undefined {
    return this.files.get(id);
  }

  delete(id: number): void {
    this.files.delete(id);
  }

  list(): MemFile[] {
    return [...this.files.values()];
  }

  byFrame(): Map<number, { file: MemFile; index: number }> {
    const m = new Map<number, { file: MemFile; index: number }>();
    for (const f of this.files.values()) for (const [index, pfn] of f.cache) m.set(pfn, { file: f, index });
    return m;
  }
}
