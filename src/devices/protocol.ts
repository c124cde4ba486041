/**
 * Messages between the kernel and a device worker, beside the shared-memory handshake (which
 * carries invalidate start/answer/end and the young and release calls; see layout.ts MB/CS/ES).
 * These are requests a device makes of the kernel (subscribe, readBegin, range fault, migrate,
 * ...) and commands the kernel forwards to a device (test_hmm commands, DMA control, fault
 * injection). Structured-clone over postMessage.
 */

export type DeviceKind = 'gpu' | 'rdma' | 'kvm' | 'dmirror';
export const DEVICE_KINDS: readonly DeviceKind[] = ['gpu', 'rdma', 'kvm', 'dmirror'];

/** How a device uses the event context. */
export type EventPolicy = 'faithful' | 'aware' | 'blind';
export const EVENT_POLICIES: readonly EventPolicy[] = ['faithful', 'aware', 'blind'];
/** The largest gpu SVM granule a device may be given (`options.granularityPages`; 1 GiB, as amdgpu's cap). */
export const MAX_GRANULARITY_PAGES = 1 << 18;

/** Deliberate bugs, to prove the sanitizer and the tools catch them. */
/** lock-across-fault: dmirror only (its fault path), for the progress oracle's deadlock. */
export type BugMode = 'ack-before-quiesce' | 'skip-seq-retry' | 'lock-across-fault' | `ignore-event:${string}`;

export interface DmaConfig {
  /** Accesses per second (0 = idle). */
  rate: number;
  pattern: 'sequential' | 'random' | 'hotset';
  /** Fraction of accesses that are writes. */
  writeMix: number;
  /** Address window the engine works on (defaults to the device's mapped areas). */
  start?: number;
  end?: number;
  /**
   * Only these pages (addresses, rounded down to the page) of that window, when set and not empty
   * (an empty list lifts the restriction): a device working on the buffers a program wrote, not
   * on memory it never touched (the replay aims engines this way).
   */
  pages?: number[];
  /** Simulated transfer time of one access, microseconds (the in-flight window). */
  transferUs: number;
  /** Bytes touched per access. */
  bytes: number;
  /**
   * Journal tag (the soak's lost-write check): when set, every write stores `[tag, seq]` (two
   * little-endian u32) at the start of the page and the engine journals the last write applied to
   * each page, so that a checker can compare memory with what the device wrote.
   */
  journalTag?: number;
}

/** The reply of the `dma-quiesce` command: DMA stopped, nothing in flight, and the journal. */
export interface DmaQuiesced {
  /** [va, tag, seq] of every page written since the previous `dma-quiesce`, the last write each. */
  journal: Array<[number, number, number]>;
  stats: Record<string, number>;
}

export interface FaultInjection {
  /** Delay before each answer, microseconds. */
  ackDelayUs?: number;
  /** Stop answering the handshake (the kernel evicts after its deadline). */
  hang?: boolean;
  /** Crash the worker. */
  crash?: boolean;
  /** Refuse every non-blockable invalidation (even where the driver would not). */
  refuseNonblock?: boolean;
  /** Drop the connection (external clients only). */
  disconnect?: boolean;
  /**
   * Worker devices, tests only (not on the HTTP API): busy-wait this long just before storing
   * MB.PARKED, widening the window in which a call can arrive after the device's last check.
   * The re-check after the store must catch every such call (test/devices/handshake.int.test.ts).
   */
  parkRaceUs?: number;
  bug?: BugMode | null;
}

export interface DeviceInit {
  deviceId: number;
  kind: DeviceKind;
  name: string;
  pid: number;
  policy: EventPolicy;
  options: Record<string, unknown>;
  mailbox: SharedArrayBuffer;
  kc: SharedArrayBuffer;
  meta: SharedArrayBuffer;
  data: SharedArrayBuffer;
  bootId: number;
  /** First ring position of calls and ends (int32, wraps; the kernel's heads start there too). */
  ringStart?: number;
  /**
   * When the kernel serves the notifier channel: the worker subscribes through it (a WebSocket to
   * `url`, authenticated as this worker by `token`); its handshake stays on the mailbox.
   */
  channel?: { url: string; token: string };
}

// ---- device -> kernel -----------------------------------------------------------------------------

export type DeviceRequest =
  | { t: 'insert'; req: number; start: number; length: number; label: string }
  | { t: 'remove'; req: number; sub: number }
  | { t: 'register'; req: number; label: string }
  | { t: 'unregister'; req: number; sub: number }
  | { t: 'readBegin'; req: number; sub: number }
  | {
      t: 'fault';
      req: number;
      sub: number;
      seq: number;
      start: number;
      end: number;
      defaultFlags: number;
      mask: number;
      input: Uint32Array | null;
      ownerSelf: boolean;
    }
  | { t: 'gup'; req: number; va: number; write: boolean }
  | { t: 'vma'; req: number; va: number }
  | { t: 'migrate'; req: number; dir: 'to' | 'from'; start: number; end: number; allocFails: boolean }
  | { t: 'exclusive'; req: number; va: number }
  | { t: 'evict'; req: number };

export type DeviceEvent =
  | { t: 'ready' }
  | { t: 'stats'; counters: Record<string, number>; sanitizer: SanitizerSnapshot; mirror: MirrorSummary }
  | { t: 'finding'; finding: import('../sanitizer/sanitizer.js').Finding }
  | { t: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string; data?: Record<string, unknown> }
  | { t: 'reply'; req: number; ok: boolean; value?: unknown; error?: { code: string; message: string; details?: Record<string, unknown> } };

export interface SanitizerSnapshot {
  checked: number;
  findings: number;
  /** Device refaults: grants of pages an invalidation had taken away before (refaulted pages). */
  refaults?: number;
  /** Device faults that refaulted at least one page (Sanitizer.stats.refaultFaults). */
  refaultFaults?: number;
  /** Refaults by cause, `EVENT:origin` of the invalidation that took the page (Sanitizer). */
  refaultCauses?: Record<string, number>;
  byKind: Record<string, number>;
  recent: import('../sanitizer/sanitizer.js').Finding[];
}

export interface MirrorSummary {
  /** Pages the device can currently access. */
  pages: number;
  writable: number;
  /** Pages held in device memory. */
  devicePages: number;
  /** Tracking structures (SVM ranges, MRs, memslots, one for dmirror). */
  objects: number;
}

// ---- kernel -> device -----------------------------------------------------------------------------

export type KernelMessage =
  | { t: 'reply'; req: number; ok: boolean; value?: unknown; error?: { code: string; message: string; details?: Record<string, unknown> } }
  | { t: 'command'; req: number; name: string; args: Record<string, unknown> }
  | { t: 'stop' };

export interface FaultReply {
  ret: number;
  pfns: Uint32Array;
  gens: Int32Array;
  tick: number;
}

export interface GupReply {
  ret: number;
  pfn: number;
  gen: number;
  tick: number;
  write: boolean;
  huge: boolean;
  /** For a huge mapping: the address of its first page and the frame and generation of each page. */
  headVa?: number;
  hugePfns?: Int32Array;
  hugeGens?: Int32Array;
}

export interface MigrateReply {
  ret: number;
  collected: number;
  moved: number;
  /** [va, dst pfn, dst generation, writable] for pages that moved. */
  pages: Array<[number, number, number, boolean]>;
  tick: number;
}

export interface ExclusiveReply {
  ret: number;
  pfn: number;
  gen: number;
  tick: number;
}
