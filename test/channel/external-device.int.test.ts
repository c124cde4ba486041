/**
 * The server's record of an external device counts refaults from what the device says: an aware
 * gpu over the channel reports with its acknowledgement that it kept its reads through a downgrade
 * (InvalidateAck.kept_reads), so pages it kept and re-mapped with its range are no refaults, as
 * for a worker device (test/devices/policy.int.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DEFAULT_TOKEN } from '../../src/channel/tokens.js';
import type { ChannelServer } from '../../src/channel/channel-server.js';
import { runExternalDevice, type RunningDevice } from '../../src/client/run-device.js';
import type { EventPolicy } from '../../src/devices/protocol.js';
import { eventually } from '../helpers/eventually.js';
import { openChannel } from '../helpers/channel.js';

const PAGE = 4096;
const PAGES = 16;
let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
  cleanup = [];
});

async function system(policies: EventPolicy[]): Promise<{ k: Kernel; pid: number; a: number; channel: ChannelServer; devs: RunningDevice[] }> {
  const k = new Kernel({ memoryBytes: 32 << 20 });
  const p = k.createProcess('app');
  const a = await k.mmap(p.pid, { length: PAGES * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, a, new Uint8Array(PAGES * PAGE).fill(9));
  const { channel, url } = await openChannel(k, cleanup);
  const devs: RunningDevice[] = [];
  for (const policy of policies) {
    const d = await runExternalDevice({ url, token: DEFAULT_TOKEN, kind: 'gpu', pid: p.pid, policy, name: `gpu-${policy}`, options: { granularityPages: PAGES } });
    cleanup.push(() => d.stop());
    devs.push(d);
  }
  await eventually(() => expect(channel.list().length).toBe(policies.length));
  return { k, pid: p.pid, a, channel, devs };
}

describe('external device refaults', () => {
  it('an aware gpu that kept its reads through a downgrade refaults only what a CLEAR took; a blind one refaults all', async () => {
    const { k, pid, a, channel, devs } = await system(['aware', 'blind']);
    const readAll = async (d: RunningDevice): Promise<void> => {
      for (let i = 0; i < PAGES; i++) expect(await d.device.dma.access(a + i * PAGE, false)).toBe(true);
    };
    for (const d of devs) await readAll(d);
    await k.mprotect(pid, a, PAGES * PAGE, PROT.READ); // aware: downgrade, kept_reads on the ack
    await k.madvise(pid, a, PAGE, 'dontneed'); // CLEAR of page 0: both lose it
    for (const d of devs) await readAll(d); // the gpu faults page 0 in with its whole range
    const rec = (name: string) => channel.list().find((x) => x.name === name)!.sanitizer.stats;
    expect(rec('gpu-aware').refaults).toBe(1);
    expect(rec('gpu-aware').refaultCauses).toEqual({ 'CLEAR:madvise': 1 });
    expect(rec('gpu-blind').refaults).toBe(PAGES);
    expect(rec('gpu-blind').findings + rec('gpu-aware').findings).toBe(0);
  });
});
