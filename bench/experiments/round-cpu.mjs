/**
 * Experiment: the CPU one in-process invalidation round costs each side, in ONE thread, so no cache
 * line crosses cores and the figure moves by a few percent between runs instead of tens (the
 * two-thread round of bench:handshake is mostly line transfers and waiting). The real classes on a
 * real mailbox; it reaches into private members (post, writeEnd, insertInterval, request) to drive
 * them without a worker, so it follows the code it measures, not a stable interface.
 *
 *   kernel          Kernel.notify + notifyEnd of a one-page CLEAR through a WorkerDevice whose
 *                   calls are answered the moment they are posted (the answer word set by this
 *                   thread) and whose ends are taken at once: the kernel's side alone
 *   kernel+device   the same with the real device side on the same mailbox: a WorkerHost and the
 *                   dmirror personality (62 of 64 pages mirrored, sanitizer on) pump each call
 *                   right after its post and each end right after its write
 *   device          calls and ends written straight into the mailbox 32 at a time, then pumped:
 *                   the device's side alone (the writing included)
 *
 *   npm run build && node bench/experiments/round-cpu.mjs [mode ...]   (default: all three)
 *
 * Prints nanoseconds per round (per call and end for `device`): min and median of 7 passes.
 * Used in docs/benchmarks.md (bench:handshake, where the N = 1 round goes).
 */
import { Kernel, PROT } from '../../dist/src/kernel/kernel.js';
import { WorkerDevice } from '../../dist/src/devices/worker-device.js';
import { WorkerAckGroup } from '../../dist/src/devices/ack-group.js';
import { WorkerHost } from '../../dist/workers/runtime/worker-host.js';
import { PERSONALITIES } from '../../dist/workers/personalities.js';
import * as L from '../../dist/src/kernel/layout.js';

const PAGE = 4096;
const modes = process.argv.length > 2 ? process.argv.slice(2) : ['kernel', 'kernel+device', 'device'];

async function setup(withHost) {
  const k = new Kernel({ memoryBytes: 64 << 20 });
  const p = k.createProcess('bench');
  const a = await k.mmap(p.pid, { length: 64 * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(64 * PAGE).fill(7));
  const group = new WorkerAckGroup();
  const dev = new WorkerDevice(k, group, 1, { kind: 'dmirror', name: 'x', process: p, policy: 'faithful', options: {}, deadlineMs: 60_000 });
  dev.state = 'running';
  let host = null;
  let subId = 0;
  if (withHost) {
    host = new WorkerHost({ deviceId: 1, kind: 'dmirror', name: 'x', pid: p.pid, policy: 'faithful', options: {}, mailbox: dev.mailboxSab, kc: group.kcSab, meta: k.mem.handles.meta, data: k.mem.handles.data, bootId: k.bootId, ringStart: 0 });
    host.request = async (m) => {
      if (m.t !== 'insert') throw new Error(`unexpected request ${m.t}`);
      subId = dev.insertInterval(m.start, m.length, m.label);
      return { id: subId, seq: dev.subs.get(subId).invalidateSeq };
    };
    const device = PERSONALITIES.dmirror(host);
    await device.attach();
    for (let i = 2; i < 64; i++) device.pt.set(Math.floor(a / PAGE) + i, { pfn: 100 + i, write: true, atomic: false });
  } else subId = dev.insertInterval(0, 2 ** 64 - PAGE, 'dmirror');
  return { k, p, a, dev, host, subId };
}

function timed(fn, n) {
  fn(Math.max(1000, n / 3)); // warm-up
  const res = [];
  for (let pass = 0; pass < 7; pass++) {
    const t = process.hrtime.bigint();
    fn(n);
    res.push(Number(process.hrtime.bigint() - t) / n);
  }
  res.sort((x, y) => x - y);
  return `min ${res[0].toFixed(1)} ns, median ${res[3].toFixed(1)} ns`;
}

for (const mode of modes) {
  if (mode === 'kernel' || mode === 'kernel+device') {
    const { k, p, a, dev, host } = await setup(mode === 'kernel+device');
    const post = dev.post;
    dev.post = function (...args) {
      const ack = post.apply(this, args);
      if (ack) {
        if (host) host.pump();
        else this.mailbox[L.MB_CALLS_OFFSET + ack.slot * L.CALL_SLOT_WORDS + L.CS.ANSWER] = L.ANSWER.OK;
      }
      return ack;
    };
    const writeEnd = dev.writeEnd;
    dev.writeEnd = function (...args) {
      writeEnd.apply(this, args);
      if (host) host.pump();
      else this.mailbox[L.MB.END_TAIL] = this.endHead;
    };
    const rounds = (n) => {
      for (let i = 0; i < n; i++) {
        const r = k.notify(p.mm, 1, a, a + PAGE, 'madvise');
        if (r instanceof Promise) throw new Error('the round went asynchronous');
        k.notifyEnd(p.mm, r);
      }
    };
    console.log(`${mode.padEnd(14)} per round: ${timed(rounds, 1_000_000)}`);
  } else if (mode === 'device') {
    const { p, a, dev, host, subId } = await setup(true);
    const mb = dev.mailbox;
    let callHead = 0;
    let endHead = 0;
    let id = 1;
    const { CS, ES } = L;
    const [startLo, startHi, endLo, endHi] = [L.addrLo(a), L.addrHi(a), L.addrLo(a + PAGE), L.addrHi(a + PAGE)];
    const batch = (n) => {
      for (let j = 0; j < n; j++) {
        const b = L.MB_CALLS_OFFSET + (callHead & (L.CALL_SLOTS - 1)) * L.CALL_SLOT_WORDS;
        mb[b + CS.OP] = L.CALL_OP.INVALIDATE;
        mb[b + CS.SUB] = subId;
        mb[b + CS.START_LO] = startLo;
        mb[b + CS.START_HI] = startHi;
        mb[b + CS.END_LO] = endLo;
        mb[b + CS.END_HI] = endHi;
        mb[b + CS.EVENT] = 1;
        mb[b + CS.FLAGS] = 1;
        mb[b + CS.OWNER] = -1;
        mb[b + CS.CUR_SEQ] = 3;
        mb[b + CS.PID] = p.pid;
        mb[b + CS.ORIGIN] = 4;
        mb[b + CS.ANSWER] = 0;
        mb[b + CS.TICK] = 2 * (id + j);
        mb[b + CS.ID] = id + j;
        callHead = (callHead + 1) | 0;
        Atomics.store(mb, b + CS.SEQ, callHead);
      }
      host.pump();
      // The kernel publishes an end only after the call's answer: write them after the pump.
      for (let j = 0; j < n; j++) {
        const b = L.MB_ENDS_OFFSET + (endHead & (L.END_SLOTS - 1)) * L.END_SLOT_WORDS;
        mb[b + ES.SUB] = subId;
        mb[b + ES.START_LO] = startLo;
        mb[b + ES.START_HI] = startHi;
        mb[b + ES.END_LO] = endLo;
        mb[b + ES.END_HI] = endHi;
        mb[b + ES.EVENT] = 1;
        mb[b + ES.FLAGS] = 1;
        mb[b + ES.PID] = p.pid;
        mb[b + ES.TICK] = 2 * (id + j) + 1;
        mb[b + ES.ID] = id + j;
        endHead = (endHead + 1) | 0;
        Atomics.store(mb, b + ES.SEQ, endHead);
      }
      host.pump();
      id += n;
    };
    const calls = (n) => {
      for (let i = 0; i < n / 32; i++) batch(32);
    };
    console.log(`${mode.padEnd(14)} per call and end: ${timed(calls, 640_000)}`);
  } else throw new Error(`unknown mode ${mode}`);
}
process.exit(0);
