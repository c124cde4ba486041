import { describe, it, expect } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { recordingMm, recordingInterval, MiB, PAGE, fill } from '../helpers/recorder.js';

describe('smoke', () => {
  it('mmap touch munmap', async () => {
    const k = new Kernel();
    const p = k.createProcess('a');
    const { sub, calls } = recordingMm();
    p.mm.notifier.register(sub);
    const addr = await k.mmap(p.pid, { length: MiB, prot: PROT.READ | PROT.WRITE });
    const data = fill(MiB, 7);
    await k.write(p.pid, addr, data);
    const back = await k.read(p.pid, addr, MiB);
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
    expect(calls).toEqual([]);
    await k.munmap(p.pid, addr, MiB);
    expect(calls.map((c) => c.op + ':' + c.event)).toEqual(['start:UNMAP', 'end:UNMAP']);
    expect(k.audit().problems).toEqual([]);
    await k.exit(p.pid);
    expect(k.audit().problems).toEqual([]);
  });
});
