/**
 * Shared memory whose first byte starts a cache line (and a page).
 *
 * `new SharedArrayBuffer(n)` gets its bytes from the allocator (calloc): on x86-64 glibc that is
 * 16-byte aligned, so a 64-byte mailbox slot laid out from word 0 spans two cache lines unless the
 * allocation happens to start on a line (one 16-byte offset in four does). Then a device that
 * polls a slot's SEQ word still misses on the slot's other words (a second line transfer per call),
 * and whether it does changes from one allocation to the next: measured 11-27, one dmirror device,
 * five mailboxes in one process, the in-process round's p50 was 0.72 us for three and 0.80 to
 * 0.82 us for two, and 0.713 to 0.723 us for all five with this allocation.
 *
 * A shared WebAssembly.Memory is reserved with mmap, so its buffer (a SharedArrayBuffer like any
 * other: it posts to workers, Atomics work on it) starts on a page. Its size is a multiple of the
 * 64 KiB WebAssembly page; views should say their length.
 */
const WASM_PAGE = 65536;
/** WebAssembly memories are indexed by 32 bits: at most 65,536 pages. */
const MAX_PAGES = 65536;

/** The part of the WebAssembly API used here (this project's TypeScript libs do not declare it). */
interface SharedWasmMemory {
  readonly buffer: SharedArrayBuffer;
}
const { WebAssembly: Wasm } = globalThis as unknown as {
  WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: true }) => SharedWasmMemory };
};

export function alignedSab(bytes: number): SharedArrayBuffer {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
  if (pages > MAX_PAGES) return new SharedArrayBuffer(bytes); // beyond 4 GiB: large allocations are page-aligned mmaps anyway
  return new Wasm.Memory({ initial: pages, maximum: pages, shared: true }).buffer;
}
