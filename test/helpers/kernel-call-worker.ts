/**
 * Runs one kernel call with a bad argument in a worker thread, so a test can time it out if the
 * call never returns (a synchronous infinite loop would otherwise freeze the test runner).
 * Posts { ok, code?, auditOk }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Kernel, PROT } from '../../src/kernel/kernel.js';

const PAGE = 4096;

type Call = (k: Kernel, pid: number, a: number) => Promise<unknown> | unknown;

export const CALLS: Record<string, Call> = {
  'migrateToSystem start=-4096': (k, pid, a) => k.migrateToSystem(pid, -4096, a + PAGE, 1),
  'migrateToSystem start=-1': (k, pid, a) => k.migrateToSystem(pid, -1, a + PAGE, 1),
  'migrateToSystem [0, TASK_SIZE)': (k, pid) => k.migrateToSystem(pid, 0, 2 ** 47, 1),
  'migrateToSystem end=Infinity': (k, pid, a) => k.migrateToSystem(pid, a, Infinity, 1),
  'migrateToSystem end=2^53': (k, pid, a) => k.migrateToSystem(pid, a, 2 ** 53, 1),
  'migrateToDevice end=Infinity': (k, pid, a) => k.migrateToDevice(pid, a, Infinity, 1),
  'migrate length=Infinity': (k, pid, a) => k.migrate(pid, a, Infinity, 1),
  'fileWrite offset=Infinity': (k) => k.fileWrite(1, Infinity, new Uint8Array(4)),
  'read length=2^53': (k, pid, a) => k.read(pid, a, 2 ** 53),
};

async function main(): Promise<void> {
  const { call } = workerData as { call: string };
  const k = new Kernel({ memoryBytes: 8 * 1024 * 1024, swapBytes: 8 * 1024 * 1024, deviceMemoryBytes: 1024 * 1024, bootId: 3 });
  k.createFile(4 * PAGE);
  const p = k.createProcess('p');
  const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(8 * PAGE).fill(1));
  let out: { ok: boolean; code?: string };
  try {
    await CALLS[call](k, p.pid, a);
    out = { ok: true };
  } catch (e) {
    out = { ok: false, code: (e as { code?: string }).code ?? String(e) };
  }
  parentPort!.postMessage({ ...out, auditOk: k.audit().ok });
}

if (parentPort) void main();
