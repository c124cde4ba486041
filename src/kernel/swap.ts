/**
 * The swap area: fixed-size slots holding the contents of swapped-out anonymous pages. A slot is
 * referenced by every swap PTE (and shmem file index) that points at it; it is freed when the last
 * reference goes. Kernel thread only.
 */
import { invariant } from '../errors.js';
import { HDR, PAGE_SIZE } from './layout.js';
import type { PhysicalMemory } from './phys-mem.js';

export class SwapArea {
  readonly slots: number;
  private readonly bytes: Uint8Array;
  private readonly refs: Int32Array;
  private readonly freeStack: Int32Array;
  private freeTop: number;

  constructor(private readonly mem: PhysicalMemory, slots: number) {
    this.slots = slots;
    this.bytes = new Uint8Array(mem.handles.swap);
    this.refs = new Int32Array(slots);
    this.freeStack = new Int32Array(slots);
    this.freeTop = slots;
    for (let i = 0; i < slots; i++) this.freeStack[i] = slots - 1 - i;
    this.publish();
  }

  private publish(): void {
    Atomics.store(this.mem.meta, HDR.FREE_SWAP, this.freeTop);
  }

  free(): number {
    return this.freeTop;
  }

  /** Writes the frame's contents into a new slot with `refs` references; -1 if swap is full. */
  swapOut(pfn: number, refs: number): number {
    if (this.freeTop === 0) return -1;
    const slot = this.freeStack[--this.freeTop];
    invariant(this.refs[slot] === 0, `swap slot ${slot} reused while referenced`);
    this.refs[slot] = refs;
    this.bytes.set(this.mem.page(pfn), slot * PAGE_SIZE);
    this.publish();
    return slot;
  }

  /** Copies a slot's contents into a frame. */
  read(slot: number, pfn: number): void {
    invariant(this.refs[slot] > 0, `read of free swap slot ${slot}`);
    this.mem.page(pfn).set(this.bytes.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE));
  }

  contents(slot: number): Uint8Array {
    return this.bytes.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE);
  }

  dup(slot: number): void {
    invariant(this.refs[slot] > 0, `dup of free swap slot ${slot}`);
    this.refs[slot]++;
  }

  refcount(slot: number): number {
    return this.refs[slot];
  }

  put(slot: number): void {
    invariant(this.refs[slot] > 0, `swap slot ${slot} refcount underflow`);
    if (--this.refs[slot] === 0) {
      this.freeStack[this.freeTop++] = slot;
      this.publish();
    }
  }

  used(): number {
    return this.slots - this.freeTop;
  }
}
