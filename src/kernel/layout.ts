/**
 * The shared-memory layout: every slot of every SharedArrayBuffer devmirror shares between threads
 * is named here, and only here. Other modules index shared memory through these names, never with a
 * raw number. Bump LAYOUT_VERSION whenever a slot moves or changes meaning: readers in other
 * threads check the version word (always word 0 of the metadata buffer) before trusting anything.
 *
 * Buffers:
 *  - `meta` (Int32Array): header, then per-frame metadata, then the mm table.
 *  - `data` (bytes, also viewed as Int32Array for page-table entries): one 4 KiB page per frame,
 *    RAM frames first, then device-memory frames. Page-table pages are ordinary RAM frames whose
 *    first 2 KiB hold 512 32-bit entries.
 *  - `swap` (bytes): one 4 KiB slot per swap page.
 */

export const LAYOUT_VERSION = 1;

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
export const PAGE_MASK = PAGE_SIZE - 1;
/** Entries per page-table page (x86-64 style 9 bits per level). */
export const PTRS_PER_TABLE = 512;
export const PMD_SHIFT = 21;
export const PMD_SIZE = 1 << PMD_SHIFT;
export const PMD_PAGES = PMD_SIZE / PAGE_SIZE;
export const PUD_SHIFT = 30;
export const PUD_SIZE = 2 ** PUD_SHIFT;
export const PGDIR_SHIFT = 39;
/** Levels of the radix page table, leaf first. */
export const LEVEL = { PTE: 0, PMD: 1, PUD: 2, PGD: 3 } as const;
export const LEVEL_SHIFT = [PAGE_SHIFT, PMD_SHIFT, PUD_SHIFT, PGDIR_SHIFT] as const;
/** User addresses are 47-bit, as on x86-64 with 4-level paging. */
export const TASK_SIZE = 2 ** 47;
/**
 * ULONG_MAX as the end of a range covering the whole address space (RELEASE, exit's UNMAP,
 * clear_refs). 2^64 - 1 is not a double; 2^64 is, and compares greater than every address. Codecs
 * render it as "0xffffffffffffffff".
 */
export const ULONG_MAX = 2 ** 64;

/** Header words at the start of `meta`. */
export const HDR = {
  /** Must equal LAYOUT_VERSION. Written once before the buffer is shared. */
  LAYOUT_VERSION: 0,
  RAM_FRAMES: 1,
  DEVICE_FRAMES: 2,
  NUMA_NODES: 3,
  ZERO_PFN: 4,
  /** Free RAM frames (informational; the kernel thread is the only allocator). */
  FREE_RAM: 5,
  FREE_DEVICE: 6,
  MAX_MM: 7,
  /** Word index where frame metadata starts. */
  FRAME_META_OFFSET: 8,
  /** Word index where the mm table starts. */
  MM_TABLE_OFFSET: 9,
  /**
   * Global event clock: a total order over what the kernel hands out (fault replies, invalidation
   * starts and ends), which the sanitizer compares. Advanced only by the kernel thread
   * (PhysicalMemory.tick, plain stores); other threads read it.
   */
  CLOCK: 10,
  SWAP_SLOTS: 11,
  FREE_SWAP: 12,
  /** Low 31 bits of the boot id, so workers can tell a restarted kernel. */
  BOOT_ID: 13,
} as const;
export const HDR_WORDS = 16;

/** Per-frame metadata words; frame `pfn` starts at FRAME_META_OFFSET + pfn * FRAME_META_WORDS. */
export const FM = {
  /** References: one per mapping PTE/PMD plus transient kernel references (isolation, I/O). */
  REFCOUNT: 0,
  /** Number of page-table entries mapping this frame (a PMD mapping counts once per subpage). */
  MAPCOUNT: 1,
  /**
   * Changes (Atomics.add) whenever the frame is freed or handed out again. A device that recorded
   * the generation when it was granted a pfn can tell that the frame it is touching is no longer
   * the page it was given.
   */
  GENERATION: 2,
  FLAGS: 3,
  NODE: 4,
  /** Device id owning a device-memory frame (device-private pages), else 0. */
  OWNER: 5,
  /** Head pfn of the huge folio this frame belongs to (itself when not compound). */
  HEAD: 6,
  /** File id for page-cache frames, else 0. */
  MAPPING: 7,
} as const;
export const FRAME_META_WORDS = 8;

/** Frame flag bits (FM.FLAGS). */
export const FF = {
  FREE: 1 << 0,
  RESERVED: 1 << 1,
  PGTABLE: 1 << 2,
  ANON: 1 << 3,
  FILE: 1 << 4,
  /** Folio dirty (the software dirty bit of struct folio; PTE dirty bits are folded in). */
  DIRTY: 1 << 5,
  LRU: 1 << 6,
  ACTIVE: 1 << 7,
  REFERENCED: 1 << 8,
  LOCKED: 1 << 9,
  ZERO: 1 << 10,
  DEVICE: 1 << 11,
  KSM: 1 << 12,
  /** Part of a 2 MiB folio (HEAD says which). */
  COMPOUND: 1 << 13,
  /** Taken off the LRU by reclaim/migration/compaction while they work on it. */
  ISOLATED: 1 << 14,
  /** Never to be reused: a device that could not be stopped may still touch it. */
  QUARANTINED: 1 << 15,
  SHMEM: 1 << 16,
  /** Under writeback I/O. */
  WRITEBACK: 1 << 17,
  /** MADV_FREE: reclaim may drop it without swapping unless it is dirtied again. */
  LAZYFREE: 1 << 18,
} as const;

/** Per-mm slots in the mm table, so other threads can find a process's page table. */
export const MS = {
  /** 0 free, 1 live, 2 exiting. */
  STATE: 0,
  PID: 1,
  PGD_PFN: 2,
  /**
   * The interval notifier sequence (mmu_notifier_subscriptions->invalidate_seq): even when idle,
   * odd while an invalidation that hit an interval subscription is open. Written only by the
   * kernel thread, with plain stores (MM.publishSeq): a word to inspect, which no thread orders
   * itself on (a worker's readBegin asks the kernel; each call carries its curSeq).
   */
  INVALIDATE_SEQ: 3,
  ACTIVE_RANGES: 4,
  /**
   * Page-table generation: bumped after a table page is unlinked and before it is freed. Readers
   * walking without the mmap lock snapshot it before the walk and retry if it moved (seqcount).
   */
  PT_GEN: 5,
  RSS: 6,
  /** Bumped each time the slot is reused, so a stale slot index is detected. */
  SLOT_GEN: 7,
} as const;
export const MM_SLOT_WORDS = 8;
export const MM_STATE = { FREE: 0, LIVE: 1, EXITING: 2 } as const;

/**
 * Page-table entry bits. An entry is one 32-bit word (read and written with Atomics so no thread
 * ever sees a torn entry); the frame number sits above the flag bits.
 */
export const PTE = {
  PRESENT: 1 << 0,
  WRITE: 1 << 1,
  DIRTY: 1 << 2,
  YOUNG: 1 << 3,
  SOFT_DIRTY: 1 << 4,
  /** A leaf at PMD level mapping 2 MiB. */
  HUGE: 1 << 5,
  /** NUMA hinting: the frame stays but every access faults (PRESENT is clear). */
  PROTNONE: 1 << 6,
  /** Non-present swap entry: the pfn field holds the swap slot. */
  SWAP: 1 << 7,
  /** Non-present device-private entry: the pfn field holds a device-memory frame. */
  DEVICE_PRIVATE: 1 << 8,
  /** Non-present device-exclusive entry: the pfn field holds the RAM frame a device owns. */
  DEVICE_EXCLUSIVE: 1 << 9,
  /** Upper-level entry pointing to the next table page. */
  TABLE: 1 << 10,
  /**
   * Non-present migration entry: the pfn field holds the frame being migrated or reclaimed; a
   * fault on it waits for the folio lock (migration_entry_wait), then retries.
   */
  MIGRATION: 1 << 11,
} as const;
export const PTE_PFN_SHIFT = 12;
/** Largest frame number an entry can hold (20 bits: 4 GiB of frames). */
export const PTE_MAX_PFN = (1 << (32 - PTE_PFN_SHIFT)) - 1;
export const PTE_FLAGS_MASK = (1 << PTE_PFN_SHIFT) - 1;

/** Byte sizes of the shared buffers for a given configuration. */
export function metaWords(totalFrames: number, maxMm: number): number {
  return HDR_WORDS + totalFrames * FRAME_META_WORDS + maxMm * MM_SLOT_WORDS;
}
export function frameMetaIndex(metaBase: number, pfn: number, word: number): number {
  return metaBase + pfn * FRAME_META_WORDS + word;
}
export function mmSlotIndex(mmBase: number, slot: number, word: number): number {
  return mmBase + slot * MM_SLOT_WORDS + word;
}
/** Int32 index of entry `idx` of the table held in frame `pfn`. */
export function tableEntryIndex(pfn: number, idx: number): number {
  return pfn * (PAGE_SIZE / 4) + idx;
}

// ---- device mailboxes (the invalidate start/end handshake with device workers) ---------------------

/**
 * One mailbox SharedArrayBuffer per device worker (Int32Array). The kernel posts calls (invalidate
 * start, young queries, release) into the CALL ring and one-way ends into the END ring; each slot
 * is published by its SEQ word, stored last. A spinning device polls the next slot's SEQ itself,
 * so a call reaches it in one cache-line transfer; DOORBELL is rung only for a parked device. The
 * device answers each call in its slot (CS.ANSWER); while the kernel is parked it also bumps the
 * global KC.ACK_DOORBELL so the kernel, which waits for many devices at once, wakes once.
 */
export const MAILBOX_VERSION = 6;
export const MB = {
  // ---- line 0 (words 0..15): written by the kernel only ----
  /** Must equal MAILBOX_VERSION. */
  VERSION: 0,
  /** Kernel -> device: bumped (Atomics.add) to wake a parked device; it waits on this word. */
  DOORBELL: 1,
  /** 0 running, 1 stop requested (the device exits its loop). */
  STATE: 2,
  /** Kernel -> device: microseconds to spin before parking (0 when cores are short). */
  SPIN_US: 5,
  /**
   * Kernel -> device: postMessages sent to the device (monotonic), bumped after each send, before
   * the ring: a device spinning or about to park sees it and turns its event loop to receive.
   */
  MESSAGES: 6,
  // ---- line 1 (words 16..31): written by the device only. Kept off the kernel's line: a word
  // the other side writes in the same 64-byte line would bounce it between cores on every store
  // (false sharing), and the fast path is a handful of line transfers.
  /** Ends the device has taken (int32, wraps): the kernel reuses an end slot only behind it. */
  END_TAIL: 17,
  /**
   * Device: heartbeat counter, bumped on every event-loop turn and park (hang detection). Not on
   * every pump: nothing on the fast path should write more than it must.
   */
  HEARTBEAT: 20,
  // ---- line 2 (words 32..47): written by the device only when it parks or wakes ----
  /**
   * Device -> kernel: 1 while the device is parked (Atomics.wait) on DOORBELL. The kernel loads it
   * on every ring, after it stored the SEQ (or MESSAGES) it rings for; the device stores it
   * before it re-checks every SEQ and MESSAGES and then waits on the DOORBELL value it read
   * before, so one of the two always sees the other (sequentially consistent Atomics, Dekker's
   * pattern). Alone on its line: the kernel's load hits in its cache unless the device parked.
   */
  PARKED: 32,
} as const;
/** Three 64-byte lines: the kernel's, the device's and PARKED's (the mailbox is allocated line-aligned: src/lib/aligned-sab.ts). */
export const MB_HEADER_WORDS = 48;
export const CALL_SLOTS = 64;
export const END_SLOTS = 64;

/** Call opcodes (CS.OP). */
export const CALL_OP = {
  INVALIDATE: 1,
  MM_START: 2,
  RELEASE: 3,
  CLEAR_FLUSH_YOUNG: 4,
  CLEAR_YOUNG: 5,
  TEST_YOUNG: 6,
} as const;

/** Words of a call slot. Addresses are split into low and high 32-bit halves. */
export const CS = {
  /** Round id (invalidation id) low 31 bits. */
  ID: 0,
  OP: 1,
  SUB: 2,
  START_LO: 3,
  START_HI: 4,
  END_LO: 5,
  END_HI: 6,
  EVENT: 7,
  FLAGS: 8,
  /** Owner device id, or -1 for null. */
  OWNER: 9,
  CUR_SEQ: 10,
  PID: 11,
  /** Global clock tick when the kernel published the call (sanitizer ordering). */
  TICK: 12,
  /** Origin code (provenance). */
  ORIGIN: 13,
  /** 0 pending; 1 ok / true; 2 refused (would block) / false. Written by the device, last. */
  ANSWER: 14,
  /**
   * The call's ring position + 1 (int32, wraps), stored last by the kernel (Atomics) and loaded
   * first by the device: slot `t & (CALL_SLOTS - 1)` holds call t once its SEQ is `(t + 1) | 0`.
   */
  SEQ: 15,
} as const;
export const CALL_SLOT_WORDS = 16;
export const ANSWER = { PENDING: 0, OK: 1, REFUSED: 2 } as const;

/** Words of an end slot (one-way). */
export const ES = {
  /** Round id (invalidation id) low 31 bits. */
  ID: 0,
  SUB: 1,
  START_LO: 2,
  START_HI: 3,
  END_LO: 4,
  END_HI: 5,
  EVENT: 6,
  FLAGS: 7,
  PID: 8,
  /** Global clock tick when the end was published (after the PTEs changed). */
  TICK: 9,
  /** The end's ring position + 1 (int32, wraps), stored last by the kernel, as CS.SEQ. */
  SEQ: 10,
} as const;
/** 16 words: every slot is one 64-byte line, never two. */
export const END_SLOT_WORDS = 16;

export const MB_CALLS_OFFSET = MB_HEADER_WORDS;
export const MB_ENDS_OFFSET = MB_CALLS_OFFSET + CALL_SLOTS * CALL_SLOT_WORDS;
export const MB_WORDS = MB_ENDS_OFFSET + END_SLOTS * END_SLOT_WORDS;

/** Word index of the SEQ of call `t` (call slots are a power-of-two ring, so `&` wraps with int32). */
export function callSeqWord(t: number): number {
  return MB_CALLS_OFFSET + (t & (CALL_SLOTS - 1)) * CALL_SLOT_WORDS + CS.SEQ;
}
/** Word index of the SEQ of end `t`. */
export function endSeqWord(t: number): number {
  return MB_ENDS_OFFSET + (t & (END_SLOTS - 1)) * END_SLOT_WORDS + ES.SEQ;
}

/** The kernel's control buffer shared with every device worker (Int32Array). */
export const KC = {
  VERSION: 0,
  /**
   * Devices -> kernel: bumped after an answer stored while the kernel is parked (KERNEL_PARKED);
   * the kernel parks on it with waitAsync. A spinning kernel polls the answer words instead.
   */
  ACK_DOORBELL: 1,
  /**
   * Kernel: 1 while parked (or about to park) on ACK_DOORBELL. Dekker pairing with the answer: the
   * kernel stores it before it re-polls the answer words, a device stores its ANSWER before it
   * loads this word, so a device that sees 0 has answered in time for the re-poll.
   */
  KERNEL_PARKED: 16,
  /**
   * Kernel: while parked, the ACK_DOORBELL value at which a device must notify (stored before the
   * waitAsync begins). A device whose add brings the doorbell to it or past it notifies; the
   * others do not, so N answers wake the kernel once, not N times.
   */
  WAKE_AT: 17,
} as const;
/** KERNEL_PARKED sits on its own 64-byte line, away from the doorbell every device writes. */
export const KC_WORDS = 32;

/** Splits a user address (< 2^53) into two 32-bit halves; ULONG_MAX becomes all ones. */
export function addrLo(a: number): number {
  // ToInt32 is the integer modulo 2^32 (then signed), as `a % 2^32 | 0` is: the same word for
  // every address, without a floating-point remainder (about 6 ns here; the kernel splits four
  // addresses per invalidation round, two for the call and two for the end).
  return a >= ULONG_MAX ? -1 : a | 0;
}
export function addrHi(a: number): number {
  return a >= ULONG_MAX ? -1 : Math.floor(a / 0x100000000) | 0;
}
export function joinAddr(lo: number, hi: number): number {
  if (lo === -1 && hi === -1) return ULONG_MAX;
  return (hi >>> 0) * 0x100000000 + (lo >>> 0);
}
