/**
 * Device workers subscribe through the notifier channel when the kernel serves one; their
 * invalidations, answers and ends stay on the shared-memory mailbox.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PROT } from '../../src/kernel/kernel.js';
import { DeviceClient } from '../../src/client/device-client.js';
import { startHarness, type Harness } from './helpers.js';

const PAGE = 4096;
let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('device workers on the channel', () => {
  it('a worker subscribes over the WebSocket and still answers on its mailbox', async () => {
    h = await startHarness();
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: PROT.READ | PROT.WRITE });
    await k.write(p.pid, a, new Uint8Array(8 * PAGE).fill(5));
    const dev = await h.svc.devices.create({ kind: 'dmirror', pid: p.pid });
    const session = [...h.svc.channel.sessions].find((s) => s.worker?.id === dev.id);
    expect(session, 'the worker has a channel session').toBeDefined();
    expect(session!.device).toBeNull(); // not an external device: no socket acknowledgements
    expect(p.mm.notifier.itree.size).toBe(1); // dmirror's subscription, made through the channel
    const r = await dev.command<{ cpages: number }>('read', { addr: a, npages: 4 });
    expect(r.cpages).toBe(4);
    const calls = dev.handshake.calls;
    await k.munmap(p.pid, a, 8 * PAGE);
    expect(dev.handshake.calls).toBeGreaterThan(calls); // the start went to the mailbox
    await dev.refresh();
    expect(dev.sanitizer.checked).toBe(4);
    expect(dev.sanitizer.findings).toBe(0);
    expect(h.svc.channel.list()).toHaveLength(0); // no external device was created
  });

  it('refuses a forged worker token', async () => {
    h = await startHarness();
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    const dev = await h.svc.devices.create({ kind: 'dmirror', pid: p.pid });
    const forged = `worker:${dev.id}:${'0'.repeat(32)}`;
    const c = new DeviceClient({ url: h.url, token: forged });
    await expect(c.connect()).rejects.toMatchObject({ code: 'DM_ERR_UNAUTHORIZED' });
  });
});
