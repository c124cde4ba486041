/**
 * The system the N = 1 round experiments measure (round-layers.mjs, kernel-ab.mjs): one kernel of
 * the build at `root`, one process with 64 pages mapped and written, and one dmirror worker that
 * mirrors them all (so each round's one-page CLEAR reaches it through its mailbox).
 */
const PAGE = 4096;

/** Builds it from `root`'s dist/ (a path: two builds load as two module graphs). */
export async function oneDmirror(root) {
  const { Kernel, PROT } = await import(`${root}/dist/src/kernel/kernel.js`);
  const { DeviceManager } = await import(`${root}/dist/src/devices/device-manager.js`);
  const k = new Kernel({ memoryBytes: 64 << 20 });
  const p = k.createProcess('bench');
  const mgr = new DeviceManager(k, { deadlineMs: 60_000 });
  const a = await k.mmap(p.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(64 * PAGE).fill(7));
  const d = await mgr.create({ kind: 'dmirror', pid: p.pid });
  await d.command('read', { addr: a, npages: 64 });
  return { k, p, mgr, a, d };
}
