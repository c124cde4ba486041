/**
 * The fidelity manifest: for every event, syscall, kernel activity, device personality and notable
 * mechanism, how closely the emulation follows Linux and which kernel it follows. This table is the
 * single source: docs/fidelity.md is generated from it (test/fidelity.test.ts fails when the file is
 * stale, and rewrites it with UPDATE_FIDELITY=1), and GET /v1/fidelity serves both.
 *
 * Classification rule: `exact` means the notifier traffic (event, range, blockability, owner, order)
 * and the page-table outcome are the kernel's for everything the item covers, as far as the tests
 * check it (test/kernel/event-table.test.ts, the hmm-tests); `approximate` means the notifications
 * are right but the policy around them (which pages, when, how many) is simplified, and `how` says
 * where; `not-modelled` means absent. Timings are never kernel or hardware timings.
 */
import type { Origin } from './notifier/range.js';
import type { EventName } from './notifier/range.js';
import type { DaemonName } from './kernel/activity/daemons.js';

export type FidelityKind = 'event' | 'syscall' | 'activity' | 'personality' | 'mechanism';
export type Fidelity = 'exact' | 'approximate' | 'not-modelled';

export interface FidelityItem {
  kind: FidelityKind;
  name: string;
  fidelity: Fidelity;
  /** What is modelled and, when not exact, how it differs. */
  how: string;
  /** The kernel (or driver) version whose behaviour it follows. */
  kernelVersion: string;
  /** The invalidation origin this item produces (src/notifier/range.ts ORIGINS). */
  origin?: Origin;
  /** The background daemon that runs it (src/kernel/activity/daemons.ts). */
  daemon?: DaemonName;
  /** Where it lives. */
  code: string;
}

/** docs/semantics.md: the project follows mainline of this era. */
export const KERNEL_VERSION = 'Linux 6.15–6.17';
const K = KERNEL_VERSION;

const item = (kind: FidelityKind, name: string, fidelity: Fidelity, code: string, how: string, extra: Partial<FidelityItem> = {}): FidelityItem => ({
  kind,
  name,
  fidelity,
  how,
  kernelVersion: extra.kernelVersion ?? K,
  code,
  ...extra,
});

const ev = (name: EventName, fidelity: Fidelity, how: string, extra: Partial<FidelityItem> = {}): FidelityItem => item('event', name, fidelity, 'src/notifier/range.ts', how, extra);

export const FIDELITY: readonly FidelityItem[] = [
  // ---- events ----------------------------------------------------------------------------------
  ev('UNMAP', 'exact', 'munmap (one pair over the whole range, edge THPs split first), exit_mmap ([0, ULONG_MAX) after release), mremap (old range), mmap MAP_FIXED, brk shrink, and the OOM reaper (non-blockable, per VMA). Not sent for hugetlbfs (not modelled).'),
  ev('CLEAR', 'approximate', 'Every modelled sender with the kernel\'s range: MADV_DONTNEED/FREE, reclaim and migration (one page per mapping), COW, KSM, THP split and collapse (2 MiB), device-memory eviction, exclusive restore. Differs: a THP is split (CLEAR 2 MiB) before reclaim or migration and then handled page by page, where the kernel unmaps the folio whole; senders not modelled: truncate and hole punch, uprobes, UFFDIO_MOVE, hwpoison, longterm pinning, memory hotplug.'),
  ev('PROTECTION_VMA', 'exact', 'mprotect and NUMA hinting (change_protection), opened lazily at the first populated PUD, per VMA, nothing for an unpopulated range. RANGE_UPDATE_TO_READ_ONLY is a devmirror flag restoring what mmu_notifier_range_update_to_read_only() told drivers in 5.2–6.2. Senders not modelled: UFFDIO_WRITEPROTECT, PAGEMAP_SCAN.'),
  ev('PROTECTION_PAGE', 'exact', 'fork (parent, whole VMA, private VMAs with anonymous pages) and page_mkclean (one page per dirty page per shared file mapping). hugetlb fork (CLEAR) is not modelled.'),
  ev('SOFT_DIRTY', 'exact', 'clear_refs "4": one pair over [0, ULONG_MAX).'),
  ev('RELEASE', 'exact', 'mmu_notifier_release at exit: RELEASE [0, ULONG_MAX] to interval subscriptions, `release` to whole-mm ones, which are then unlinked and get no UNMAP.'),
  ev('MIGRATE', 'approximate', 'migrate_vma_setup (owner = the device, a second MIGRATE from the first hole when holes are filled) and the CPU fault on a device-private page (one page, owner = that device). Differs: huge PMDs are split before the MIGRATE pair (the kernel splits inside it).', { kernelVersion: `${K} (owner field since 5.14)` }),
  ev('EXCLUSIVE', 'exact', 'make_device_exclusive: one page, owner = the caller, after a write fault (which may COW first).', { kernelVersion: `${K} (the 6.15 rework)` }),

  // ---- syscalls --------------------------------------------------------------------------------
  item('syscall', 'munmap', 'exact', 'src/kernel/syscalls.ts', 'do_munmap: VMA splits (split_huge_pmd at unaligned edges: CLEAR 2 MiB), one UNMAP over the range, free_pgtables.', { origin: 'munmap' }),
  item('syscall', 'mmap', 'approximate', 'src/kernel/syscalls.ts', 'MAP_FIXED over mappings sends the UNMAP of do_munmap; MAP_POPULATE populates without notifying; anonymous, shared anonymous (shmem) and file mappings. Differs: the address choice (top down from a fixed base, 2 MiB alignment for large anonymous mappings) is a simplification of get_unmapped_area; no file or shmem THPs, no MAP_HUGETLB, MAP_LOCKED, MAP_NORESERVE.', { origin: 'mmap' }),
  item('syscall', 'mremap', 'approximate', 'src/kernel/syscalls.ts', 'Move (UNMAP of the old range, then a second UNMAP unless MREMAP_DONTUNMAP; the new range is not notified), shrink (UNMAP of the tail), grow in place (nothing), MREMAP_FIXED. Differs: the source range is never realigned down to a PMD boundary, so the kernel\'s UNMAP may start below the emulator\'s.', { origin: 'mremap' }),
  item('syscall', 'mprotect', 'exact', 'src/kernel/syscalls.ts', 'change_protection per VMA whose protection changes, PROTECTION_VMA lazily from the first populated PUD; a hole stops the change with ENOMEM after the part before it.', { origin: 'mprotect' }),
  item('syscall', 'madvise', 'approximate', 'src/kernel/syscalls.ts', 'DONTNEED and FREE (CLEAR per VMA part), PAGEOUT (reclaim of the range, one CLEAR per page and mapping, origin madvise), COLLAPSE (CLEAR 2 MiB, origin madvise), HUGEPAGE, NOHUGEPAGE, MERGEABLE, DONTFORK and DOFORK (VMA flags, no notification; with DONTFORK (VM_DONTCOPY) a fork leaves the VMA out of the child, with no copy and no PROTECTION_PAGE). Differs: WILLNEED does nothing (no readahead or swap-in); COLD, REMOVE, WIPEONFORK, POPULATE_*, GUARD_* and UNMERGEABLE are not modelled.', { origin: 'madvise' }),
  item('syscall', 'brk', 'exact', 'src/kernel/syscalls.ts', 'Shrink: UNMAP of the released part of the heap; grow: nothing.', { origin: 'brk' }),
  item('syscall', 'fork', 'exact', 'src/kernel/process-ops.ts', 'copy_page_range: PROTECTION_PAGE on the parent over each private VMA that holds anonymous pages while its writable PTEs become COW; shared mappings are not copied; a VM_DONTCOPY VMA (MADV_DONTFORK) is left out of the child, neither copied nor notified. The child starts without subscriptions. hugetlb is not modelled.', { origin: 'fork' }),
  item('syscall', 'exit', 'exact', 'src/kernel/process-ops.ts', 'exit_mmap: mmu_notifier_release (RELEASE, `release`), then UNMAP [0, ULONG_MAX) to what remains, zap, free page tables.', { origin: 'exit' }),
  item('syscall', 'clear_refs', 'approximate', 'src/kernel/syscalls.ts', 'Mode 4 (soft-dirty: one SOFT_DIRTY pair over [0, ULONG_MAX), PTEs write-protected) and mode 1 (referenced: young bits cleared, no notifier) are exact; modes 2, 3 and 5 are not modelled.', { origin: 'clear_refs' }),
  item('syscall', 'msync', 'approximate', 'src/kernel/syscalls.ts', 'Writeback of the shared file pages of the range through page_mkclean (PROTECTION_PAGE per dirty page per shared mapping); an unmapped part fails with ENOMEM after syncing the rest. Differs: MS_ASYNC and MS_INVALIDATE are not distinguished: every call writes back synchronously.', { origin: 'msync' }),

  // ---- kernel activities (faults included) ------------------------------------------------------
  item('activity', 'cow_fault', 'exact', 'src/kernel/fault.ts', 'wp_page_copy: CLEAR over one page when a write copies a shared, KSM or zero page; an exclusive page is reused in place without notification (wp_page_reuse); a COW of a huge page splits it first.', { origin: 'cow_fault' }),
  item('activity', 'exclusive_restore', 'exact', 'src/kernel/fault.ts', 'A CPU fault on a device-exclusive entry restores the PTE under CLEAR with no owner, one page (before 6.15: EXCLUSIVE with no owner).', { origin: 'exclusive_restore', kernelVersion: `${K} (6.15+ behaviour)` }),
  item('activity', 'reclaim', 'approximate', 'src/kernel/activity/reclaim.ts', 'shrink_folio_list with aging: the PTE young bit, then clear_flush_young to whole-mm subscribers (OR-ed, folio_referenced), second chance through the referenced flag; one CLEAR per (page, mapping) through try_to_unmap; dirty file pages are written, clean ones dropped, lazily freed ones discarded. Origin reclaim for file and lazily freed pages. Differs: two plain LRU lists (no multi-gen LRU, no swappiness or anon/file balancing, no zones or per-zone watermarks: kswapd wakes below 5 % of RAM free and stops at 10 %); direct reclaim approximates do_try_to_free_pages\' priority loop; THPs are split first.', { origin: 'reclaim', daemon: 'kswapd' }),
  item('activity', 'swap', 'approximate', 'src/kernel/swap.ts', 'Reclaim of a swap-backed page (anonymous, shmem) writes it to a swap slot and leaves swap entries; the unmapping is the reclaim CLEAR with origin swap. Swap-in on fault populates without notifying. Differs: no swap cache (a swapped page shared after fork is read back into a private copy per process), no readahead, no zswap, no swap priorities or clusters.', { origin: 'swap' }),
  item('activity', 'compaction', 'approximate', 'src/kernel/activity/migrate.ts', 'Pages move by migrate_pages (try_to_migrate_one: CLEAR per page and mapping, remapped silently). Differs: no zones or pageblock migratetypes: a pass picks the most nearly free 2 MiB block of a node whose pages are all movable and migrates them to free frames elsewhere on the node, highest first (the free scanner); no compaction deferral, fragmentation index or proactiveness; kcompactd runs at a rate, not on wakeups.', { origin: 'compaction', daemon: 'kcompactd' }),
  item('activity', 'migration', 'approximate', 'src/kernel/activity/migrate.ts', 'migrate_pages / move_pages of a range to a node: one CLEAR per page and mapping while the PTE becomes a migration entry; the copy and remap happen after. Differs: THPs are split first (the kernel migrates them whole when it can); nodes are ranges of frames without distances.', { origin: 'migration' }),
  item('activity', 'numa_balancing', 'approximate', 'src/kernel/activity/numa.ts', 'task_numa_work: change_prot_numa over a 256 MiB window (numa_balancing_scan_size_mb) of the next process, PROTECTION_VMA lazily from the first populated PUD, KSM and zero pages skipped; the hinting fault restores the entry silently and migrates a misplaced anonymous page to the faulting CPU\'s node (CLEAR). Differs: the scan period is the daemon\'s fixed rate (no adaptive scan delay), no two-stage filter, shared-fault or task-placement logic; huge pages are not migrated on hinting faults.', { origin: 'numa_balancing', daemon: 'numa' }),
  item('activity', 'ksm', 'approximate', 'src/kernel/activity/ksm.ts', 'write_protect_page then replace_page, each one CLEAR over one page; merged pages are read-only KSM pages and a write breaks COW (CLEAR). Differs: each pass hashes every candidate page of every MADV_MERGEABLE area and merges equal ones at once: no stable and unstable trees, no "unchanged since the last scan" checksum rule, no max_page_sharing, no use_zero_pages; ksmd runs at a rate.', { origin: 'ksm', daemon: 'ksmd' }),
  item('activity', 'khugepaged', 'approximate', 'src/kernel/activity/thp.ts', 'collapse_huge_page: CLEAR over the aligned 2 MiB around detaching the PTE table, copy and huge PMD install after the end; the referenced check asks test_young when no PTE is young, before and after the invalidation. Differs: only anonymous memory (no file or shmem collapse); max_ptes_none is effectively 511, max_ptes_swap and max_ptes_shared 0 (a swap entry or a shared page refuses); a pass scans every process and stops after 8 collapses.', { origin: 'khugepaged', daemon: 'khugepaged' }),
  item('activity', 'thp_split', 'approximate', 'src/kernel/kernel.ts', '__split_huge_pmd (CLEAR over the aligned 2 MiB) and split_huge_page (unmap_folio: one CLEAR per mapping, then remapped as 512 pages silently), as VMA splits, partial munmap/madvise/mprotect, COW, reclaim, migration and device migration need them. Origin thp_split even when a syscall caused the split. Differs: no deferred split queue or its shrinker; PUD THPs are not modelled.', { origin: 'thp_split' }),
  item('activity', 'writeback', 'approximate', 'src/kernel/activity/writeback.ts', 'folio_mkclean before the write: PROTECTION_PAGE per dirty page for every shared VMA covering its file offset; clean pages are not notified. Differs: the flusher writes every dirty page of every file on each run (no dirty_expire_centisecs, dirty thresholds or balance_dirty_pages throttling).', { origin: 'writeback', daemon: 'flusher' }),
  item('activity', 'oom_reaper', 'exact', 'src/kernel/activity/oom.ts', '__oom_reap_task_mm: a non-blockable UNMAP over each anonymous or private VMA; a refusal leaves that VMA untouched with no end, and the whole mm is tried again, 10 times 100 ms apart (MAX_OOM_REAP_RETRIES, HZ/10). The victim then exits. Differs (not the notifications): the victim is the largest rss + swap, without oom_score_adj or page-table pages.', { origin: 'oom_reaper' }),
  item('activity', 'device_migration', 'approximate', 'src/kernel/migrate-device.ts', 'migrate_vma_setup/pages/finalize to device-private memory (MIGRATE, owner), back on a CPU fault (migrate_to_ram through the owner\'s hook, MIGRATE one page) or by eviction (CLEAR, no owner). Differs: huge PMDs are split before the MIGRATE pair; device THPs only for whole 2 MiB chunks.', { origin: 'device_migration' }),
  item('activity', 'device_exclusive', 'exact', 'src/kernel/migrate-device.ts', 'make_device_exclusive: a write fault (may COW), then EXCLUSIVE over one page with the caller as owner; anonymous memory only.', { origin: 'device_exclusive', kernelVersion: `${K} (the 6.15 rework)` }),

  // ---- device personalities ---------------------------------------------------------------------
  item('personality', 'dmirror', 'exact', 'workers/dmirror.ts', 'lib/test_hmm.c: one interval subscription over the whole address space, an xarray-like mirror, the driver mutex (trylock when not blockable), its own MIGRATE skipped without set_seq, erasure one page past the end as the kernel does; the ioctls as commands with cpages and faults; the hmm-tests run against it. Differs: device-private only (the device-coherent dmirror 2–3 are not modelled).', { kernelVersion: `${K} lib/test_hmm.c` }),
  item('personality', 'gpu', 'approximate', 'workers/gpu.ts', 'amdgpu KFD SVM: granularity-aligned ranges with their own interval subscriptions, retry faults (read_begin, hmm_range_fault, range lock, read_retry) serialized per range on its migrate_mutex and dropped as already restored when the range was validated less than 2 ms (AMDGPU_SVM_RANGE_RETRY_FAULT_PENDING) after the fault arrived (a dropped fault whose page is still unmapped is replayed after the window, as the hardware retries), the VMA permission checked at the fault address, and the range validated VMA by VMA, each part mapped with its own VMA\'s permission (a writable VMA is faulted for writing even on a read fault, as KFD does), no blockable check, RELEASE ignored by the SVM callback (the queue stop of kfd_process_notifier_release is modelled there: DMA drains and the queues stop for good), UNMAP split/remove by deferred work, XNACK on (unmap) and off (quiesce every queue, restore after 1 ms), no owner filter, migration to VRAM. Differs: no real GPU page tables; the fence wait and TLB flush of an unmap are modelled as draining the DMA in flight; no TTM eviction; the svm_range attribute machinery is reduced to ranges; userptr BOs not modelled; timings are not hardware timings.', { kernelVersion: `${K} drivers/gpu/drm/amd/amdkfd/kfd_svm.c` }),
  item('personality', 'rdma', 'approximate', 'workers/rdma.ts', 'mlx5 ODP: explicit MRs (registration maps what is present), implicit ODP with lazily created 1 GiB children destroyed by deferred work, refusal of non-blockable ranges, umem_mutex + seq + zap for every event, NIC page faults through map_dma_and_lock, prefetch (PREFETCH, PREFETCH_WRITE, PREFETCH_NO_FAULT). Differs: no packets, RNR, retransmission or UMR latency; MTT and KSM mkey hierarchies are per-page arrays; the MEMORY page-fault scheme is not modelled.', { kernelVersion: `${K} drivers/infiniband/hw/mlx5/odp.c` }),
  item('personality', 'kvm', 'approximate', 'workers/kvm.ts', 'KVM secondary MMU: one whole-mm subscription per VM, the event ignored, mmu_lock only when a memslot is hit, in_progress and one widened gfn range, mmu_invalidate_seq on end, vCPU faults that retry without sleeping, 4 KiB and 2 MiB SPTEs, aging through clear_flush_young, clear_young and test_young, release zaps all. Differs: no guest or vCPU execution (accesses come from the DMA engine), no EPT hardware (accessed bits are flags), memslot updates do not wait for invalidations in progress (no mn_active_invalidate_count), no pfncache, no guest_memfd.', { kernelVersion: `${K} virt/kvm/kvm_main.c` }),

  // ---- mechanisms -------------------------------------------------------------------------------
  item('mechanism', 'interval sequence protocol', 'exact', 'src/notifier/subscriptions.ts', 'mmu_interval_notifier: the global invalidate_seq (starts at 2, odd while a range hitting an interval is active), set_seq, read_begin (waits while the window is open), read_retry, deferred inserts and removes while frozen. A blockable start is published to every subscriber before any answer is awaited, as the 2026 two-pass invalidate_start/invalidate_finish.', { kernelVersion: `${K} mm/mmu_notifier.c; two-pass delivery as in the 2026 drm-xe pull` }),
  item('mechanism', 'hmm_range_fault', 'exact', 'src/kernel/hmm.ts', 'Requests as (input & mask) | default, faulting from the first page needing it to the end of the 2 MiB chunk, EBUSY only on a notifier collision, device-private pages of dev_private_owner valid and never faulted, protnone without VALID, EPERM for a write request on a read-only VMA, ERROR/EFAULT where there is no VMA. Differs in representation only: 32-bit pfn words inside the emulator, the kernel\'s 64-bit layout on the wire; the DMA_MAPPED/P2PDMA bits are not modelled.', { kernelVersion: `${K} mm/hmm.c` }),
  item('mechanism', 'blockable / non-blockable', 'exact', 'src/notifier/subscriptions.ts', 'Only the OOM reaper is non-blockable. A refusal (EAGAIN or false) stops the interval walk; list subscribers that started get end. Differs deliberately: when an interval subscriber succeeded and a list subscriber refuses, the tree window is closed too (the kernel leaves it open: a caveat in the reference). A failed blockable start is reported as DM_ERR_SUBSCRIBER_BUG and the invalidation completes, as the kernel WARNs.'),
  item('mechanism', 'device-private memory', 'approximate', 'src/kernel/phys-mem.ts', 'A pool of device frames with an owner (pgmap owner), device-private swap-like entries, migrate_to_ram through the owner\'s dev_pagemap_ops hook, eviction when a device goes. Differs: no struct page / ZONE_DEVICE refcount lifecycle or page_free callback; device-coherent and P2P memory are not modelled.'),
  item('mechanism', 'exclusive access', 'exact', 'src/kernel/migrate-device.ts', 'Device-exclusive entries (make_device_exclusive, EXCLUSIVE with owner) and their restore on CPU fault (CLEAR, no owner).', { kernelVersion: `${K} (the 6.15 rework)` }),
  item('mechanism', 'THP', 'approximate', 'src/kernel/kernel.ts', 'PMD-sized anonymous THPs (enabled: always, madvise, never), the huge zero page, splits and collapses with their CLEARs. Differs: anonymous only (no file or shmem THPs), no PUD or mTHP sizes, no deferred split; reclaim and migration split them first.'),
  item('mechanism', 'swap', 'approximate', 'src/kernel/swap.ts', 'Slots referenced by swap PTEs and shmem indexes, swap-out by reclaim, swap-in on fault without notification. Differs: no swap cache, readahead, zswap or swap priorities.'),
  item('mechanism', 'KSM', 'approximate', 'src/kernel/activity/ksm.ts', 'Merging identical MADV_MERGEABLE anonymous pages into read-only KSM pages with the kernel\'s two CLEARs per merged page; COW breaks them. Differs: content hashing per pass instead of the stable/unstable trees.'),
  item('mechanism', 'young callbacks', 'approximate', 'src/notifier/subscriptions.ts', 'clear_flush_young (reclaim aging, OR-ed over every subscriber, all called) and test_young (khugepaged, first true wins) are exact. clear_young is implemented in the core and by the kvm personality, but no emulated kernel activity calls it (DAMON, idle page tracking and MGLRU aging are not modelled).'),
  item('mechanism', 'mmu_notifier_get / put', 'not-modelled', 'src/notifier/subscriptions.ts', 'Subscriptions are registered and unregistered directly; the get/put reference-counted form (alloc_notifier, free_notifier) is not modelled.'),
  item('mechanism', 'arch_invalidate_secondary_tlbs', 'not-modelled', 'src/notifier/subscriptions.ts', 'Devices sharing the CPU page table (IOMMU SVA) are out of scope.'),
  item('mechanism', 'hugetlbfs, userfaultfd, uprobes, PAGEMAP_SCAN, hwpoison, hotplug, longterm pinning, truncation', 'not-modelled', 'docs/semantics.md', 'Out of scope (docs/semantics.md, Not modelled): none of their invalidations are sent.'),
  item('mechanism', 'timing', 'not-modelled', 'src/devices', 'Latencies are those of the emulator (worker threads, the channel), not kernel or hardware timings; the personalities\' fixed delays (the gpu\'s 1 ms restore) are the drivers\' constants, not measurements.'),
];

const TITLES: Record<FidelityKind, string> = {
  event: 'Events',
  syscall: 'Syscalls',
  activity: 'Kernel activities (and the faults that invalidate)',
  personality: 'Device personalities',
  mechanism: 'Mechanisms',
};

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** docs/fidelity.md, generated from FIDELITY. */
export function fidelityMarkdown(): string {
  const out: string[] = [
    '# Fidelity',
    '',
    '<!-- Generated from src/fidelity.ts: edit the table there, then UPDATE_FIDELITY=1 npx vitest run test/fidelity.test.ts. -->',
    '',
    `devmirror follows mainline ${KERNEL_VERSION} (see [semantics.md](semantics.md)). For every event, syscall, kernel`,
    'activity, device personality and notable mechanism: whether the emulation is **exact** (the',
    "kernel's notifications and page-table outcome for everything the item covers), **approximate** (the",
    'notifications are right, the policy around them is simplified: the row says how) or **not modelled**.',
    'Timings are never kernel or hardware timings. The same table is served as JSON by `GET /v1/fidelity`.',
    '',
    '| fidelity | count |',
    '|---|---|',
  ];
  for (const f of ['exact', 'approximate', 'not-modelled'] as Fidelity[]) out.push(`| ${f} | ${FIDELITY.filter((i) => i.fidelity === f).length} |`);
  for (const kind of Object.keys(TITLES) as FidelityKind[]) {
    out.push('', `## ${TITLES[kind]}`, '', '| name | fidelity | how | follows | code |', '|---|---|---|---|---|');
    for (const i of FIDELITY.filter((x) => x.kind === kind)) {
      const name = i.origin && i.origin !== i.name ? `${i.name} (origin \`${i.origin}\`)` : i.origin ? `\`${i.name}\`` : i.name;
      const daemon = i.daemon ? ` Daemon: \`${i.daemon}\`.` : '';
      out.push(`| ${cell(name)} | ${i.fidelity} | ${cell(i.how + daemon)} | ${cell(i.kernelVersion)} | \`${i.code}\` |`);
    }
  }
  return out.join('\n') + '\n';
}
