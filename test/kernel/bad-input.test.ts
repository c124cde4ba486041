/**
 * Every bad input is refused with the documented code (docs/errors.md) and changes nothing: the
 * frame and swap books (audit), the processes, their VMA lists, and every page's pagemap entry and
 * contents are compared before and after (test/helpers/state-snapshot.ts).
 */
import { describe, expect, it } from 'vitest';
import { Kernel, PROT, type Process } from '../../src/kernel/kernel.js';
import type { MemFile } from '../../src/kernel/files.js';
import { TASK_SIZE } from '../../src/kernel/layout.js';
import { settle, snapshot } from '../helpers/state-snapshot.js';
import { tsWorker } from '../helpers/ts-worker.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
const RW = PROT.READ | PROT.WRITE;
const FAR = 0x100000000; // never mapped by the fixture

interface Fx {
  k: Kernel;
  p: Process;
  /** 8 pages RW anonymous, page i filled with i + 1; page 6 on the device, page 7 swapped out. */
  rw: number;
  /** 4 pages of data, read-only. */
  ro: number;
  /** 2 pages of data, PROT_NONE. */
  none: number;
  /** 6 pages RW with page 2 unmapped. */
  holey: number;
  /** 4 pages: [0, 2) RW and [2, 4) read-only, two adjacent VMAs. */
  split: number;
  /** The file: 2 pages + 100 bytes (3 pages up to EOF), mapped shared RW over 5 pages. */
  file: MemFile;
  fileMap: number;
  /** Private read-only mapping of the same file, 5 pages. */
  privFileMap: number;
  /** 4 pages of shared anonymous memory. */
  shm: number;
}

function pattern(v: number, n = PAGE): Uint8Array {
  return new Uint8Array(n).fill(v);
}

async function fixture(): Promise<Fx> {
  const k = new Kernel({ memoryBytes: 8 * MiB, deviceMemoryBytes: 1 * MiB, swapBytes: 8 * MiB, bootId: 7 });
  const p = k.createProcess('p');
  const rw = await k.mmap(p.pid, { length: 8 * PAGE, prot: RW });
  for (let i = 0; i < 8; i++) await k.write(p.pid, rw + i * PAGE, pattern(i + 1));
  await k.migrateToDevice(p.pid, rw + 6 * PAGE, rw + 7 * PAGE, 1);
  await k.madvise(p.pid, rw + 7 * PAGE, PAGE, 'pageout');

  const ro = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
  await k.write(p.pid, ro, pattern(0x11, 4 * PAGE));
  await k.mprotect(p.pid, ro, 4 * PAGE, PROT.READ);

  const none = await k.mmap(p.pid, { length: 2 * PAGE, prot: RW });
  await k.write(p.pid, none, pattern(0x22, 2 * PAGE));
  await k.mprotect(p.pid, none, 2 * PAGE, PROT.NONE);

  const holey = await k.mmap(p.pid, { length: 6 * PAGE, prot: RW });
  await k.write(p.pid, holey, pattern(0x33, 6 * PAGE));
  await k.munmap(p.pid, holey + 2 * PAGE, PAGE);

  const split = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
  await k.write(p.pid, split, pattern(0x44, 4 * PAGE));
  await k.mprotect(p.pid, split + 2 * PAGE, 2 * PAGE, PROT.READ);

  const file = k.createFile(2 * PAGE + 100);
  await k.fileWrite(file.id, 0, pattern(0x5a, 2 * PAGE + 100));
  const fileMap = await k.mmap(p.pid, { length: 5 * PAGE, prot: RW, shared: true, file: { id: file.id } });
  const privFileMap = await k.mmap(p.pid, { length: 5 * PAGE, prot: PROT.READ, file: { id: file.id } });
  // Fault the first pages in, so later faults need no new page-table pages.
  await k.read(p.pid, fileMap, 1);
  await k.read(p.pid, privFileMap, 1);

  const shm = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW, shared: true });
  await k.write(p.pid, shm, pattern(0x66, 4 * PAGE));

  expect(k.audit().problems).toEqual([]);
  expect(k.pagemap(p.pid, rw + 6 * PAGE, 1)[0].devicePrivate).toBe(1);
  expect(k.pagemap(p.pid, rw + 7 * PAGE, 1)[0].swapped).toBe(true);
  return { k, p, rw, ro, none, holey, split, file, fileMap, privFileMap, shm };
}

/** The operation is refused with `match` and the kernel is exactly as before. */
async function expectRefused(fx: Fx, op: () => unknown, match: Record<string, unknown>): Promise<void> {
  const before = snapshot(fx.k);
  expect(before.audit.ok).toBe(true);
  await expect(settle(op)).rejects.toMatchObject(match);
  expect(snapshot(fx.k)).toEqual(before);
}

type Case = [string, (fx: Fx) => unknown, Record<string, unknown>];

const EINVAL = { code: 'EINVAL' };
const ENOMEM = { code: 'ENOMEM' };
const EFAULT = { code: 'EFAULT' };
const BAD = { code: 'DM_ERR_BAD_ADDRESS' };
const EINVAL_OR_EPERM = { code: expect.stringMatching(/^(EINVAL|EPERM)$/) };

// ---- unaligned addresses --------------------------------------------------------------------------

const unaligned: Case[] = [
  ['mmap MAP_FIXED at an unaligned address', (f) => f.k.mmap(f.p.pid, { addr: f.rw + 1, length: PAGE, prot: RW, fixed: true }), EINVAL],
  // Linux answers EPERM (security_mmap_addr) for an unprivileged caller; EINVAL is accepted too.
  ['mmap MAP_FIXED below mmap_min_addr', (f) => f.k.mmap(f.p.pid, { addr: PAGE, length: PAGE, prot: RW, fixed: true }), EINVAL_OR_EPERM],
  ['mremap MREMAP_FIXED below mmap_min_addr', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: PAGE, maymove: true, fixed: true, newAddr: PAGE }), EINVAL_OR_EPERM],
  ['mremap MREMAP_FIXED to address 0', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: PAGE, maymove: true, fixed: true, newAddr: 0 }), EINVAL_OR_EPERM],
  ['mmap of a file at an unaligned offset', (f) => f.k.mmap(f.p.pid, { length: PAGE, prot: RW, shared: true, file: { id: f.file.id, offset: 100 } }), EINVAL],
  ['munmap at an unaligned address', (f) => f.k.munmap(f.p.pid, f.rw + 1, PAGE), EINVAL],
  ['mprotect at an unaligned address', (f) => f.k.mprotect(f.p.pid, f.rw + 8, PAGE, PROT.READ), EINVAL],
  ['madvise at an unaligned address', (f) => f.k.madvise(f.p.pid, f.rw + 2048, PAGE, 'dontneed'), EINVAL],
  ['msync at an unaligned address', (f) => f.k.msync(f.p.pid, f.fileMap + 1, PAGE), EINVAL],
  ['mremap of an unaligned old address', (f) => f.k.mremap(f.p.pid, { addr: f.rw + 1, length: PAGE, newLength: 2 * PAGE, maymove: true }), EINVAL],
  ['mremap MREMAP_FIXED to an unaligned new address', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: PAGE, maymove: true, fixed: true, newAddr: FAR + 1 }), EINVAL],
  ['pagemap at an unaligned address', (f) => f.k.pagemap(f.p.pid, f.rw + 1, 1), EINVAL],
];

// ---- zero lengths -----------------------------------------------------------------------------------

const zeroLength: Case[] = [
  ['mmap of length 0', (f) => f.k.mmap(f.p.pid, { length: 0, prot: RW }), EINVAL],
  ['munmap of length 0', (f) => f.k.munmap(f.p.pid, f.rw, 0), EINVAL],
  ['mremap to new length 0', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: 0, maymove: true }), EINVAL],
  ['mremap of old length 0 (private mapping)', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: 0, newLength: PAGE, maymove: true }), EINVAL],
];

// ---- ranges leaving the user address space ------------------------------------------------------------

const outOfRange: Case[] = [
  ['munmap crossing TASK_SIZE', (f) => f.k.munmap(f.p.pid, TASK_SIZE - PAGE, 2 * PAGE), EINVAL],
  ['munmap starting at TASK_SIZE', (f) => f.k.munmap(f.p.pid, TASK_SIZE, PAGE), EINVAL],
  ['munmap of a huge length', (f) => f.k.munmap(f.p.pid, f.rw, Number.MAX_SAFE_INTEGER), EINVAL],
  ['mprotect crossing TASK_SIZE', (f) => f.k.mprotect(f.p.pid, TASK_SIZE - PAGE, 2 * PAGE, PROT.READ), ENOMEM],
  ['mprotect of a huge length', (f) => f.k.mprotect(f.p.pid, f.rw, Number.MAX_SAFE_INTEGER, PROT.READ), ENOMEM],
  ['madvise crossing TASK_SIZE', (f) => f.k.madvise(f.p.pid, TASK_SIZE - PAGE, 2 * PAGE, 'dontneed'), ENOMEM],
  ['msync crossing TASK_SIZE', (f) => f.k.msync(f.p.pid, TASK_SIZE - PAGE, 2 * PAGE), ENOMEM],
  ['mremap of a range crossing TASK_SIZE', (f) => f.k.mremap(f.p.pid, { addr: TASK_SIZE - PAGE, length: 2 * PAGE, newLength: PAGE }), EINVAL],
  ['mremap to a length larger than the address space', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: TASK_SIZE + PAGE, maymove: true }), EINVAL],
  ['mremap MREMAP_FIXED to a range crossing TASK_SIZE', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: 2 * PAGE, maymove: true, fixed: true, newAddr: TASK_SIZE - PAGE }), EINVAL],
  ['mmap MAP_FIXED crossing TASK_SIZE', (f) => f.k.mmap(f.p.pid, { addr: TASK_SIZE - PAGE, length: 2 * PAGE, prot: RW, fixed: true }), ENOMEM],
  ['mmap larger than the address space', (f) => f.k.mmap(f.p.pid, { length: TASK_SIZE, prot: RW }), ENOMEM],
  // docs/errors.md lists no code for a CPU access outside user space; the emulator answers EFAULT.
  ['CPU load crossing TASK_SIZE', (f) => f.k.read(f.p.pid, TASK_SIZE - 1, 2), EFAULT],
  ['CPU store crossing TASK_SIZE', (f) => f.k.write(f.p.pid, TASK_SIZE - 1, new Uint8Array(2)), EFAULT],
  ['pagemap crossing TASK_SIZE', (f) => f.k.pagemap(f.p.pid, TASK_SIZE - PAGE, 2), EINVAL],
];

// ---- numbers that are not non-negative safe integers ------------------------------------------------

const BAD_NUMBERS: Array<[string, number]> = [
  ['-4096', -4096],
  ['-1', -1],
  ['1.5', 1.5],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['2^53', 2 ** 53],
  ['"4096" (a string)', '4096' as unknown as number],
];

const badNumberOps: Array<[string, (f: Fx, v: number) => unknown]> = [
  ['mmap length', (f, v) => f.k.mmap(f.p.pid, { length: v, prot: RW })],
  ['mmap addr', (f, v) => f.k.mmap(f.p.pid, { addr: v, length: PAGE, prot: RW })],
  ['mmap MAP_FIXED addr', (f, v) => f.k.mmap(f.p.pid, { addr: v, length: PAGE, prot: RW, fixed: true })],
  ['mmap file offset', (f, v) => f.k.mmap(f.p.pid, { length: PAGE, prot: RW, shared: true, file: { id: f.file.id, offset: v } })],
  ['munmap addr', (f, v) => f.k.munmap(f.p.pid, v, PAGE)],
  ['munmap length', (f, v) => f.k.munmap(f.p.pid, f.rw, v)],
  ['mprotect addr', (f, v) => f.k.mprotect(f.p.pid, v, PAGE, PROT.READ)],
  ['mprotect length', (f, v) => f.k.mprotect(f.p.pid, f.rw, v, PROT.READ)],
  ['madvise addr', (f, v) => f.k.madvise(f.p.pid, v, PAGE, 'dontneed')],
  ['madvise length', (f, v) => f.k.madvise(f.p.pid, f.rw, v, 'dontneed')],
  ['msync addr', (f, v) => f.k.msync(f.p.pid, v, PAGE)],
  ['msync length', (f, v) => f.k.msync(f.p.pid, f.fileMap, v)],
  ['mremap addr', (f, v) => f.k.mremap(f.p.pid, { addr: v, length: PAGE, newLength: PAGE })],
  ['mremap length', (f, v) => f.k.mremap(f.p.pid, { addr: f.rw, length: v, newLength: PAGE })],
  ['mremap newLength', (f, v) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: v, maymove: true })],
  ['mremap newAddr', (f, v) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: PAGE, maymove: true, fixed: true, newAddr: v })],
  ['brk addr', (f, v) => f.k.brk(f.p.pid, v)],
  ['CPU load addr', (f, v) => f.k.read(f.p.pid, v, 1)],
  ['CPU load length', (f, v) => f.k.read(f.p.pid, f.rw, v)],
  ['CPU store addr', (f, v) => f.k.write(f.p.pid, v, new Uint8Array(1))],
  ['pagemap addr', (f, v) => f.k.pagemap(f.p.pid, v, 1)],
  ['pagemap pages', (f, v) => f.k.pagemap(f.p.pid, f.rw, v)],
];

// The kernel-activity and file entry points of the facade take addresses and offsets as well
// (values that could make a call loop for ever are tried in a worker thread, further down).
const FACADE_BAD_NUMBERS = BAD_NUMBERS.filter(([l]) => l !== '2^53' && l !== 'Infinity');
const badNumberFacadeOps: Array<[string, (f: Fx, v: number) => unknown]> = [
  ['migrate addr', (f, v) => f.k.migrate(f.p.pid, v, PAGE, 1)],
  ['migrate length', (f, v) => f.k.migrate(f.p.pid, f.rw, v, 1)],
  ['migrateToDevice start', (f, v) => f.k.migrateToDevice(f.p.pid, v, f.rw + PAGE, 1)],
  ['migrateToDevice end', (f, v) => f.k.migrateToDevice(f.p.pid, f.rw, v, 1)],
  ['migrateToSystem end', (f, v) => f.k.migrateToSystem(f.p.pid, f.rw, v, 1)],
  ['fileRead offset', (f, v) => f.k.fileRead(f.file.id, v, 16)],
  ['fileRead length', (f, v) => f.k.fileRead(f.file.id, 0, v)],
  ['fileWrite offset', (f, v) => f.k.fileWrite(f.file.id, v, new Uint8Array(16))],
];
/** These entry points are not syscalls: EINVAL (as migrate_vma_setup answers) is fine too. */
const BAD_OR_EINVAL = { code: expect.stringMatching(/^(DM_ERR_BAD_ADDRESS|EINVAL)$/) };

/** Runs CALLS[call] (test/helpers/kernel-call-worker.ts) in a worker; null if it did not return in time. */
async function callInWorker(call: string, timeoutMs = 4000): Promise<{ ok: boolean; code?: string; auditOk: boolean } | null> {
  const worker = tsWorker(new URL('../helpers/kernel-call-worker.ts', import.meta.url), { workerData: { call } });
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve(null), timeoutMs);
      worker.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      worker.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  } finally {
    await worker.terminate();
  }
}

describe('bad input is refused with the documented code and changes nothing', () => {
  describe('unaligned addresses: EINVAL', () => {
    it.each(unaligned)('%s', async (_name, op, match) => {
      const fx = await fixture();
      await expectRefused(fx, () => op(fx), match);
    });
  });

  describe('zero lengths', () => {
    it.each(zeroLength)('%s', async (_name, op, match) => {
      const fx = await fixture();
      await expectRefused(fx, () => op(fx), match);
    });

    it('mprotect, madvise and msync of length 0 succeed and do nothing, mapped or not', async () => {
      const fx = await fixture();
      const { k, p } = fx;
      const before = snapshot(k);
      await expect(k.mprotect(p.pid, fx.rw, 0, PROT.NONE)).resolves.toBeUndefined();
      await expect(k.mprotect(p.pid, FAR, 0, PROT.READ)).resolves.toBeUndefined();
      await expect(k.madvise(p.pid, fx.rw, 0, 'dontneed')).resolves.toEqual({ pages: 0 });
      await expect(k.madvise(p.pid, FAR, 0, 'pageout')).resolves.toEqual({ pages: 0 });
      await expect(k.msync(p.pid, FAR, 0)).resolves.toEqual({ written: 0 });
      await expect(k.read(p.pid, FAR, 0)).resolves.toHaveLength(0);
      await expect(k.write(p.pid, FAR, new Uint8Array(0))).resolves.toBeUndefined();
      expect(snapshot(k)).toEqual(before);
    });
  });

  describe('ranges that leave the user address space', () => {
    it.each(outOfRange)('%s', async (_name, op, match) => {
      const fx = await fixture();
      await expectRefused(fx, () => op(fx), match);
    });
  });

  describe('numbers that are not non-negative safe integers: DM_ERR_BAD_ADDRESS', () => {
    for (const [opName, op] of badNumberOps) {
      it.each(BAD_NUMBERS)(`${opName} = %s`, async (_label, v) => {
        const fx = await fixture();
        await expectRefused(fx, () => op(fx, v), BAD);
      });
    }
  });

  describe('kernel-activity and file entry points validate their numbers too', () => {
    for (const [opName, op] of badNumberFacadeOps) {
      it.each(FACADE_BAD_NUMBERS)(`${opName} = %s`, async (_label, v) => {
        const fx = await fixture();
        await expectRefused(fx, () => op(fx, v), BAD_OR_EINVAL);
      });
    }

    it.each([
      'migrateToSystem start=-4096',
      'migrateToSystem start=-1',
      'migrateToSystem end=Infinity',
      'migrateToSystem end=2^53',
      'migrateToDevice end=Infinity',
      'migrate length=Infinity',
      'fileWrite offset=Infinity',
      'read length=2^53',
    ])('%s returns promptly with a refusal (run in a worker thread)', async (call) => {
      const res = await callInWorker(call);
      expect(res, `${call} did not return within 4 s (a synchronous loop over the range?)`).not.toBeNull();
      expect(res!.ok, `${call} was accepted`).toBe(false);
      expect(res!.code).toMatch(/^(DM_ERR_BAD_ADDRESS|EINVAL|DM_ERR_TOO_LARGE)$/);
      expect(res!.auditOk).toBe(true);
    }, 15_000);

    it('migrateToSystem over the whole user address space (a valid range) returns promptly', async () => {
      const res = await callInWorker('migrateToSystem [0, TASK_SIZE)');
      expect(res, 'did not return within 4 s: migrateToSystem visits every page of the range one by one').not.toBeNull();
      expect(res).toMatchObject({ ok: true, auditOk: true });
    }, 15_000);

    it('migrateToDevice with an unaligned range is refused (EINVAL) or page-aligned, never corrupts the books', async () => {
      const fx = await fixture();
      const { k, p } = fx;
      const before = snapshot(k);
      const res = await settle(() => k.migrateToDevice(p.pid, fx.rw + 1, fx.rw + PAGE + 1, 1)).then(
        (r) => ({ ok: true as const, r }),
        (e: unknown) => ({ ok: false as const, e }),
      );
      if (!res.ok) {
        expect(res.e).toMatchObject(EINVAL);
        expect(snapshot(k)).toEqual(before);
      } else {
        for (const pg of res.r.pages) expect(pg.va % PAGE, `page va 0x${pg.va.toString(16)}`).toBe(0);
        expect(k.audit().problems).toEqual([]);
      }
      expect([...(await k.read(p.pid, fx.rw, 2 * PAGE))]).toEqual([...pattern(1), ...pattern(2)]);
      expect(k.audit().problems).toEqual([]);
    });

    it('migrate to a NUMA node that does not exist: EINVAL', async () => {
      const fx = await fixture();
      for (const node of [2, -1, 0.5]) await expectRefused(fx, () => fx.k.migrate(fx.p.pid, fx.rw, PAGE, node), EINVAL);
    });

    it('fileWrite at a negative offset does not create page-cache pages before the file', async () => {
      const fx = await fixture();
      await settle(() => fx.k.fileWrite(fx.file.id, -PAGE, new Uint8Array(16))).catch(() => undefined);
      expect([...fx.file.cache.keys()].every((i) => i >= 0)).toBe(true);
    });
  });

  describe('unknown processes and files', () => {
    const pidOps: Array<[string, (k: Kernel, pid: number | string, f: Fx) => unknown]> = [
      ['mmap', (k, pid) => k.mmap(pid, { length: PAGE, prot: RW })],
      ['munmap', (k, pid, f) => k.munmap(pid, f.rw, PAGE)],
      ['mremap', (k, pid, f) => k.mremap(pid, { addr: f.rw, length: PAGE, newLength: 2 * PAGE, maymove: true })],
      ['mprotect', (k, pid, f) => k.mprotect(pid, f.rw, PAGE, PROT.READ)],
      ['madvise', (k, pid, f) => k.madvise(pid, f.rw, PAGE, 'dontneed')],
      ['brk', (k, pid) => k.brk(pid, 0)],
      ['msync', (k, pid, f) => k.msync(pid, f.fileMap, PAGE)],
      ['clearRefs', (k, pid) => k.clearRefs(pid, 'soft-dirty')],
      ['pagemap', (k, pid, f) => k.pagemap(pid, f.rw, 1)],
      ['read', (k, pid, f) => k.read(pid, f.rw, 1)],
      ['write', (k, pid, f) => k.write(pid, f.rw, new Uint8Array(1))],
      ['fork', (k, pid) => k.fork(pid)],
      ['exit', (k, pid) => k.exit(pid)],
      ['migrate', (k, pid, f) => k.migrate(pid, f.rw, PAGE, 1)],
      ['numaBalance', (k, pid) => k.numaBalance(pid)],
      ['collapse', (k, pid, f) => k.collapse(pid, f.rw)],
      ['splitThp', (k, pid, f) => k.splitThp(pid, f.rw)],
      ['oomKill', (k, pid) => k.oomKill(pid)],
      ['migrateToDevice', (k, pid, f) => k.migrateToDevice(pid, f.rw, f.rw + PAGE, 1)],
      ['migrateToSystem', (k, pid, f) => k.migrateToSystem(pid, f.rw, f.rw + PAGE, 1)],
      ['rangeFault', (k, pid, f) => k.rangeFault(pid, { start: f.rw, end: f.rw + PAGE, pfns: new Uint32Array(1), defaultFlags: 0, pfnFlagsMask: 0 } as never)],
    ];

    it.each(pidOps)('%s of an unknown pid, an unknown name, or an exited process: DM_ERR_NO_SUCH_PROCESS', async (_name, op) => {
      const fx = await fixture();
      const gone = fx.k.createProcess('gone');
      await fx.k.exit(gone.pid);
      for (const pid of [99999, 'nobody', gone.pid, -1, 1.5]) {
        await expectRefused(fx, () => op(fx.k, pid, fx), { code: 'DM_ERR_NO_SUCH_PROCESS' });
      }
    });

    it.each(pidOps.filter(([name]) => name !== 'pagemap'))(
      '%s reports an unknown pid by rejecting its promise, not by throwing synchronously',
      async (_name, op) => {
        const fx = await fixture();
        let threw: unknown = null;
        let promise: unknown;
        try {
          promise = op(fx.k, 99999, fx);
        } catch (e) {
          threw = e;
        }
        expect(threw, 'threw synchronously').toBeNull();
        await expect(promise).rejects.toMatchObject({ code: 'DM_ERR_NO_SUCH_PROCESS' });
      },
    );

    it('mmap of an unknown file id, or of a shmem object id: DM_ERR_NO_SUCH_FILE', async () => {
      const fx = await fixture();
      const shmemId = fx.k.files.list().find((f) => f.kind === 'shmem')!.id;
      for (const id of [999, shmemId]) {
        await expectRefused(fx, () => fx.k.mmap(fx.p.pid, { length: PAGE, prot: RW, shared: true, file: { id } }), { code: 'DM_ERR_NO_SUCH_FILE' });
        await expectRefused(fx, () => fx.k.mmap(fx.p.pid, { length: PAGE, prot: PROT.READ, file: { id } }), { code: 'DM_ERR_NO_SUCH_FILE' });
        await expectRefused(fx, () => fx.k.fileRead(id, 0, 1), { code: 'DM_ERR_NO_SUCH_FILE' });
        await expectRefused(fx, () => fx.k.fileWrite(id, 0, new Uint8Array(1)), { code: 'DM_ERR_NO_SUCH_FILE' });
      }
    });

    it('a second process with a taken name: DM_ERR_NAME_TAKEN', async () => {
      const fx = await fixture();
      const before = snapshot(fx.k);
      expect(() => fx.k.createProcess('p')).toThrow(expect.objectContaining({ code: 'DM_ERR_NAME_TAKEN' }));
      expect(snapshot(fx.k)).toEqual(before);
    });
  });

  describe('mremap flags and ranges', () => {
    const cases: Case[] = [
      ['MREMAP_FIXED without MREMAP_MAYMOVE', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: PAGE, fixed: true, newAddr: FAR }), EINVAL],
      ['MREMAP_DONTUNMAP without MREMAP_MAYMOVE', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: PAGE, dontunmap: true }), EINVAL],
      ['MREMAP_DONTUNMAP with a different new length', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: PAGE, newLength: 2 * PAGE, maymove: true, dontunmap: true }), EINVAL],
      ['MREMAP_DONTUNMAP shrinking', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: 2 * PAGE, newLength: PAGE, maymove: true, dontunmap: true }), EINVAL],
      ['MREMAP_FIXED onto the old range', (f) => f.k.mremap(f.p.pid, { addr: f.rw, length: 2 * PAGE, newLength: 2 * PAGE, maymove: true, fixed: true, newAddr: f.rw + PAGE }), EINVAL],
      ['an unmapped old range', (f) => f.k.mremap(f.p.pid, { addr: FAR, length: PAGE, newLength: 2 * PAGE, maymove: true }), EFAULT],
      ['an old range that runs into a hole', (f) => f.k.mremap(f.p.pid, { addr: f.holey, length: 4 * PAGE, newLength: 4 * PAGE, maymove: true, fixed: true, newAddr: FAR }), EFAULT],
      ['an old range that spans two VMAs', (f) => f.k.mremap(f.p.pid, { addr: f.split, length: 4 * PAGE, newLength: 8 * PAGE, maymove: true }), EFAULT],
      ['growing in place into a mapped page without MREMAP_MAYMOVE', (f) => f.k.mremap(f.p.pid, { addr: f.split, length: 2 * PAGE, newLength: 3 * PAGE }), ENOMEM],
    ];
    it.each(cases)('%s', async (_name, op, match) => {
      const fx = await fixture();
      await expectRefused(fx, () => op(fx), match);
    });
  });

  it('mprotect over a hole follows do_mprotect_pkey: the part before the hole changes, then ENOMEM', async () => {
    const f = await fixture();
    await expect(f.k.mprotect(f.p.pid, f.holey, 6 * PAGE, PROT.READ)).rejects.toMatchObject({ code: 'ENOMEM' });
    const prots = [0, 1, 2, 3, 4, 5].map((i) => f.p.mm.vmas.find(f.holey + i * PAGE)?.prot ?? null);
    expect(prots).toEqual([PROT.READ, PROT.READ, null, RW, RW, RW]);
    await expect(f.k.write(f.p.pid, f.holey, new Uint8Array([1]))).rejects.toMatchObject({ code: 'SIGSEGV' });
    expect(f.k.audit().problems).toEqual([]);
  });

  describe('mprotect, madvise, msync, clear_refs', () => {
    const cases: Case[] = [
      ['mprotect from a hole', (f) => f.k.mprotect(f.p.pid, f.holey + 2 * PAGE, 4 * PAGE, PROT.NONE), ENOMEM],
      ['mprotect of an unmapped range', (f) => f.k.mprotect(f.p.pid, FAR, PAGE, PROT.READ), ENOMEM],
      ['mprotect with unknown bits (8)', (f) => f.k.mprotect(f.p.pid, f.rw, PAGE, 8), EINVAL],
      ['mprotect with prot -1', (f) => f.k.mprotect(f.p.pid, f.rw, PAGE, -1), EINVAL],
      ['mprotect with prot 1.5', (f) => f.k.mprotect(f.p.pid, f.rw, PAGE, 1.5), EINVAL],
      ['mmap with unknown prot bits', (f) => f.k.mmap(f.p.pid, { length: PAGE, prot: 16 }), EINVAL],
      ['mmap MAP_HUGEPAGE of a shared mapping', (f) => f.k.mmap(f.p.pid, { length: 2 * MiB, prot: RW, shared: true, hugepage: true }), EINVAL],
      ['madvise with an unknown advice', (f) => f.k.madvise(f.p.pid, f.rw, PAGE, 'bogus' as never), EINVAL],
      ['madvise with an upper-case advice', (f) => f.k.madvise(f.p.pid, f.rw, PAGE, 'DONTNEED' as never), EINVAL],
      ['madvise of an unmapped range', (f) => f.k.madvise(f.p.pid, FAR, PAGE, 'dontneed'), ENOMEM],
      ['madvise of the hole only', (f) => f.k.madvise(f.p.pid, f.holey + 2 * PAGE, PAGE, 'pageout'), ENOMEM],
      ['MADV_FREE on a shared file mapping', (f) => f.k.madvise(f.p.pid, f.fileMap, PAGE, 'free'), EINVAL],
      ['MADV_FREE on a private file mapping', (f) => f.k.madvise(f.p.pid, f.privFileMap, PAGE, 'free'), EINVAL],
      ['MADV_FREE on shared anonymous memory', (f) => f.k.madvise(f.p.pid, f.shm, 4 * PAGE, 'free'), EINVAL],
      ['msync over a hole', (f) => f.k.msync(f.p.pid, f.holey, 6 * PAGE), ENOMEM],
      ['msync of an unmapped range', (f) => f.k.msync(f.p.pid, FAR, PAGE), ENOMEM],
      ['clear_refs with an unknown mode', (f) => f.k.clearRefs(f.p.pid, '5' as never), EINVAL],
      ['a CPU access larger than the limit', (f) => f.k.read(f.p.pid, f.rw, 64 * MiB + 1), { code: 'DM_ERR_TOO_LARGE' }],
      ['a pagemap read larger than the limit', (f) => f.k.pagemap(f.p.pid, f.rw, (1 << 20) + 1), { code: 'DM_ERR_TOO_LARGE' }],
    ];
    it.each(cases)('%s', async (_name, op, match) => {
      const fx = await fixture();
      await expectRefused(fx, () => op(fx), match);
    });

    it('MADV_FREE over anonymous memory followed by a file mapping advises nothing', async () => {
      const fx = await fixture();
      const { k, p } = fx;
      // An anonymous VMA directly below a file VMA.
      const anon = await k.mmap(p.pid, { addr: fx.fileMap - 2 * PAGE, length: 2 * PAGE, prot: RW, fixed: true });
      await k.write(p.pid, anon, pattern(0x77, 2 * PAGE));
      await expectRefused(fx, () => k.madvise(p.pid, anon, 3 * PAGE, 'free'), EINVAL);
      expect([...(await k.read(p.pid, anon, 2 * PAGE))].every((b) => b === 0x77)).toBe(true);
    });
  });

  describe('CPU protection violations: SIGSEGV with si_code, and nothing changes', () => {
    const segv = (siCode: string, addr: (f: Fx) => number) => (f: Fx) => ({ code: 'SIGSEGV', details: { si_code: siCode, addr: addr(f) } });
    const cases: Array<[string, (fx: Fx) => unknown, (fx: Fx) => Record<string, unknown>]> = [
      ['store to a read-only mapping', (f) => f.k.write(f.p.pid, f.ro + 10, new Uint8Array([1])), segv('SEGV_ACCERR', (f) => f.ro)],
      ['store to a PROT_NONE mapping', (f) => f.k.write(f.p.pid, f.none, new Uint8Array([1])), segv('SEGV_ACCERR', (f) => f.none)],
      ['load from a PROT_NONE mapping', (f) => f.k.read(f.p.pid, f.none + PAGE, 8), segv('SEGV_ACCERR', (f) => f.none + PAGE)],
      ['load from a hole', (f) => f.k.read(f.p.pid, f.holey + 2 * PAGE + 5, 1), segv('SEGV_MAPERR', (f) => f.holey + 2 * PAGE)],
      ['store far from any mapping', (f) => f.k.write(f.p.pid, FAR, new Uint8Array([1])), segv('SEGV_MAPERR', () => FAR)],
      ['store spanning a writable and a read-only page', (f) => f.k.write(f.p.pid, f.split + 2 * PAGE - 4, new Uint8Array(8).fill(9)), segv('SEGV_ACCERR', (f) => f.split + 2 * PAGE)],
      ['store spanning a writable page and a hole', (f) => f.k.write(f.p.pid, f.holey + 2 * PAGE - 4, new Uint8Array(8).fill(9)), segv('SEGV_MAPERR', (f) => f.holey + 2 * PAGE)],
      ['store over many writable pages ending in a read-only one', (f) => f.k.write(f.p.pid, f.split, new Uint8Array(3 * PAGE).fill(9)), segv('SEGV_ACCERR', (f) => f.split + 2 * PAGE)],
      ['load spanning a readable and a PROT_NONE page', (f) => f.k.read(f.p.pid, f.none - 4, 8), segv('SEGV_ACCERR', (f) => f.none)],
      ['store to a read-only private file mapping', (f) => f.k.write(f.p.pid, f.privFileMap, new Uint8Array([1])), segv('SEGV_ACCERR', (f) => f.privFileMap)],
      ['store to the swapped-out page of a read-only range', (f) => f.k.write(f.p.pid, f.ro + 3 * PAGE, new Uint8Array([1])), segv('SEGV_ACCERR', (f) => f.ro + 3 * PAGE)],
    ];
    it.each(cases)('%s', async (_name, op, match) => {
      const fx = await fixture();
      if (_name.includes('swapped-out')) await fx.k.madvise(fx.p.pid, fx.ro + 3 * PAGE, PAGE, 'pageout');
      // "load spanning a readable and a PROT_NONE page" needs a readable page right below `none`.
      if (_name.includes('PROT_NONE page')) expect(fx.p.mm.vmas.find(fx.none - 4)?.readable).toBe(true);
      const fileBefore = fx.k.fileRead(fx.file.id, 0, fx.file.size);
      await expectRefused(fx, () => op(fx), match(fx));
      expect(fx.k.fileRead(fx.file.id, 0, fx.file.size)).toEqual(fileBefore);
    });

    it('the contents around a refused store are intact', async () => {
      const fx = await fixture();
      const { k, p } = fx;
      await expect(k.write(p.pid, fx.split + PAGE, new Uint8Array(2 * PAGE).fill(1))).rejects.toMatchObject({ code: 'SIGSEGV' });
      expect([...(await k.read(p.pid, fx.split, 4 * PAGE))].every((b) => b === 0x44)).toBe(true);
    });
  });

  describe('access past the end of a file mapping: SIGBUS', () => {
    it('load and store of a page past EOF (shared and private mappings) raise SIGBUS and change nothing', async () => {
      const fx = await fixture();
      const { k, p } = fx;
      await expectRefused(fx, () => k.read(p.pid, fx.fileMap + 3 * PAGE, 1), { code: 'SIGBUS' });
      await expectRefused(fx, () => k.write(p.pid, fx.fileMap + 4 * PAGE + 7, new Uint8Array([1])), { code: 'SIGBUS' });
      await expectRefused(fx, () => k.read(p.pid, fx.privFileMap + 3 * PAGE, 8), { code: 'SIGBUS' });
      expect(fx.file.size).toBe(2 * PAGE + 100);
    });

    it('the partial last page is accessible (zeros past EOF)', async () => {
      const fx = await fixture();
      const got = await fx.k.read(fx.p.pid, fx.fileMap + 2 * PAGE, PAGE);
      expect([...got.subarray(0, 100)].every((b) => b === 0x5a)).toBe(true);
      expect([...got.subarray(100)].every((b) => b === 0)).toBe(true);
    });

    it('a store spanning the last file page and a page past EOF raises SIGBUS and writes nothing', async () => {
      const fx = await fixture();
      const { k, p } = fx;
      await k.read(p.pid, fx.fileMap + 2 * PAGE, 1); // fault the last page in first
      await expectRefused(fx, () => k.write(p.pid, fx.fileMap + 3 * PAGE - 4, new Uint8Array(8).fill(0xee)), { code: 'SIGBUS' });
      expect([...k.fileRead(fx.file.id, 2 * PAGE, 100)].every((b) => b === 0x5a)).toBe(true);
      expect([...(await k.read(p.pid, fx.fileMap + 3 * PAGE - 4, 4))]).toEqual([0, 0, 0, 0]);
    });
  });
});

// ---- exhausted memory -------------------------------------------------------------------------------

/** A machine with 2 MiB of RAM (512 frames, some reserved) and 16 pages of swap. */
function tinyKernel(): Kernel {
  return new Kernel({ memoryBytes: 2 * MiB, numaNodes: 1, swapBytes: 16 * PAGE, deviceMemoryBytes: 0, bootId: 9 });
}

async function waitGone(k: Kernel, pid: number): Promise<void> {
  for (let i = 0; i < 200 && k.findProcess(pid); i++) await new Promise((r) => setTimeout(r, 5));
  expect(k.findProcess(pid), `process ${pid} still exists`).toBeUndefined();
}

describe('exhausted memory', () => {
  it('a process that outgrows RAM and swap is OOM-killed; its failing store leaves balanced books', async () => {
    const k = tinyKernel();
    const p = k.createProcess('hog');
    const a = await k.mmap(p.pid, { length: 1024 * PAGE, prot: RW });
    let failed: { code?: string } | null = null;
    let n = 0;
    for (; n < 1024; n++) {
      try {
        await k.write(p.pid, a + n * PAGE, pattern(n & 0xff));
      } catch (e) {
        failed = e as { code?: string };
        break;
      }
    }
    expect(failed, 'the hog never ran out of memory').not.toBeNull();
    expect(['SIGSEGV', 'ENOMEM', 'DM_ERR_NO_SUCH_PROCESS', 'DM_ERR_PROCESS_EXITING']).toContain(failed!.code);
    expect(n).toBeGreaterThan(400); // RAM + swap were really used
    expect(k.stats.oomKills).toBe(1);
    expect(p.oomKilled).toBe(true);
    await waitGone(k, p.pid);
    await expect(settle(() => k.write(p.pid, a, new Uint8Array(1)))).rejects.toMatchObject({ code: 'DM_ERR_NO_SUCH_PROCESS' });
    const audit = k.audit();
    expect(audit.problems).toEqual([]);
    expect(audit.swapSlotsInUse).toBe(0);
    expect(audit.framesInUse).toBe(0);
  });

  it('the OOM killer takes the largest process, so a small one can allocate', async () => {
    const k = tinyKernel();
    const hog = k.createProcess('hog');
    const small = k.createProcess('small');
    const h = await k.mmap(hog.pid, { length: 1024 * PAGE, prot: RW });
    // Fill until fewer than 16 frames and swap slots are left together.
    for (let i = 0; k.mem.freeFrames() + k.swap.free() >= 16; i++) await k.write(hog.pid, h + i * PAGE, pattern(1));
    expect(k.stats.oomKills).toBe(0);
    const s = await k.mmap(small.pid, { length: 64 * PAGE, prot: RW });
    const data = pattern(0x3c, 64 * PAGE);
    await k.write(small.pid, s, data);
    expect(k.stats.oomKills).toBe(1);
    expect(hog.oomKilled).toBe(true);
    expect(small.oomKilled).toBe(false);
    await waitGone(k, hog.pid);
    expect(Buffer.from(await k.read(small.pid, s, 64 * PAGE)).equals(Buffer.from(data))).toBe(true);
    expect(k.audit().problems).toEqual([]);
  });

  it('fork with RAM full of reclaimable pages reclaims instead of failing', async () => {
    const k = new Kernel({ memoryBytes: 4 * MiB, swapBytes: 16 * MiB, bootId: 10 });
    const p = k.createProcess('p');
    const a = await k.mmap(p.pid, { length: 2048 * PAGE, prot: RW });
    for (let i = 0; i < 2048 && k.mem.freeFrames() > 0; i++) await k.write(p.pid, a + i * PAGE, pattern(1, 1));
    expect(k.mem.freeFrames()).toBe(0);
    expect(k.swap.free()).toBeGreaterThan(1000);
    const child = await k.fork(p.pid);
    expect((await k.read(child.pid, a, 1))[0]).toBe(1);
    expect(k.stats.oomKills).toBe(0);
    expect(k.audit().problems).toEqual([]);
  });

  describe('without an OOM victim (the OOM hook finds nobody): ENOMEM', () => {
    async function exhausted(): Promise<{ k: Kernel; p: Process; a: number; n: number }> {
      const k = tinyKernel();
      k.pressure!.oom = async () => false;
      const p = k.createProcess('p');
      const a = await k.mmap(p.pid, { length: 1024 * PAGE, prot: RW });
      let n = 0;
      for (; n < 1024; n++) {
        const r = await settle(() => k.write(p.pid, a + n * PAGE, pattern((n % 250) + 1))).then(
          () => null,
          (e: { code?: string }) => e,
        );
        if (r) {
          expect(r).toMatchObject({ code: 'ENOMEM' });
          break;
        }
      }
      expect(n).toBeGreaterThan(400);
      expect(n).toBeLessThan(1024);
      return { k, p, a, n };
    }

    it('the failing store maps nothing and the books balance; earlier data survives', async () => {
      const { k, p, a, n } = await exhausted();
      expect(k.stats.enomem).toBeGreaterThan(0);
      expect(k.stats.oomKills).toBe(0);
      const e = k.pagemap(p.pid, a + n * PAGE, 1)[0];
      expect(e.present || e.swapped).toBe(false);
      expect(k.audit().problems).toEqual([]);
      // Retrying fails the same way, changing nothing.
      const before = snapshot(k);
      await expect(k.write(p.pid, a + n * PAGE, pattern(1))).rejects.toMatchObject({ code: 'ENOMEM' });
      expect(snapshot(k)).toEqual(before);
      // Free the first half, then everything else must read back.
      const half = Math.floor(n / 2);
      await k.munmap(p.pid, a, half * PAGE);
      for (let i = half; i < n; i++) {
        const got = await k.read(p.pid, a + i * PAGE, PAGE);
        expect(got.every((b) => b === (i % 250) + 1), `page ${i}`).toBe(true);
      }
      expect(k.audit().problems).toEqual([]);
    });

    it('fork fails with ENOMEM and leaves no child behind', async () => {
      const { k, p } = await exhausted();
      const before = snapshot(k);
      await expect(k.fork(p.pid)).rejects.toMatchObject({ code: 'ENOMEM' });
      expect(k.liveProcesses().map((q) => q.pid)).toEqual([p.pid]);
      expect(snapshot(k)).toEqual(before);
    });

    it('a store into a fresh mapping fails with ENOMEM and leaves the mapping empty', async () => {
      const { k, p } = await exhausted();
      const b = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
      const before = snapshot(k);
      await expect(k.write(p.pid, b, pattern(5))).rejects.toMatchObject({ code: 'ENOMEM' });
      expect(snapshot(k)).toEqual(before);
    });

    it('mremap that cannot get page-table frames fails with ENOMEM and leaves the maps unchanged', async () => {
      const { k, p, a } = await exhausted();
      const before = snapshot(k);
      await expect(k.mremap(p.pid, { addr: a + 4 * PAGE, length: 400 * PAGE, newLength: 400 * PAGE, maymove: true, fixed: true, newAddr: FAR })).rejects.toMatchObject({
        code: 'ENOMEM',
      });
      expect(snapshot(k)).toEqual(before);
    });
  });
});
