/**
 * The server lists an external device from its Welcome on, before the personality behind it has
 * registered its command handlers: the target is still being resolved, the personality built and
 * attached. A command sent in that gap (the soak adopting a restarted client and stopping its DMA
 * at once) must wait for the personality, not be answered 'unknown command'; after a reconnection
 * likewise, and it must not run on the old personality.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kernel, PROT } from '../../src/kernel/kernel.js';
import { DEFAULT_TOKEN } from '../../src/channel/tokens.js';
import { runExternalDevice } from '../../src/client/run-device.js';
import type { ExternalDevice } from '../../src/channel/external-device.js';
import { eventually } from '../helpers/eventually.js';
import { openChannel } from '../helpers/channel.js';

let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
  cleanup = [];
});

/** A gate the test opens: resolve() of the device waits on it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

const ticks = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setTimeout(r, 5));
};

describe('external device: commands before the personality is attached', () => {
  it('a command sent while the target is resolved waits and then runs on the attached personality, after a reconnection too', async () => {
    const k = new Kernel({ memoryBytes: 16 << 20 });
    const p = k.createProcess('app');
    await k.mmap(p.pid, { length: 16 * 4096, prot: PROT.READ | PROT.WRITE });
    const { channel, url } = await openChannel(k, cleanup);

    let g = gate();
    let resolves = 0;
    const running = runExternalDevice({
      url,
      token: DEFAULT_TOKEN,
      kind: 'dmirror',
      pid: p.pid,
      name: 'late',
      resolve: async () => {
        resolves++;
        await g.wait;
        return { pid: p.pid };
      },
    });
    // Listed (welcomed) while its resolve() still waits: no handler is registered yet.
    const listed = async (not?: ExternalDevice): Promise<ExternalDevice> => {
      let d: ExternalDevice | undefined;
      await eventually(() => {
        d = channel.list().find((x) => x.name === 'late' && x.alive && x !== not);
        expect(d).toBeDefined();
      });
      return d!;
    };
    const first = await listed();
    await eventually(() => expect(resolves).toBe(1));
    let answered = false;
    const counters = first.command<Record<string, number>>('counters', {}, 30_000).finally(() => (answered = true));
    const quiesced = first.command<{ journal: unknown[] }>('dma-quiesce', {}, 30_000);
    await ticks(10);
    expect(answered).toBe(false); // held, not refused
    g.open();
    const dev = await running;
    cleanup.push(() => dev.stop());
    // The dmirror personality's own counters: the command ran on it, not on a stand-in.
    expect(await counters).toMatchObject({ invalidations_zapped: 0, inv_pages_unmapped: 0 });
    expect(Array.isArray((await quiesced).journal)).toBe(true);
    const firstDevice = dev.device;

    // The server drops the session: the client reconnects, and is listed again before attaching.
    g = gate();
    const reattached = new Promise<number>((r) => dev.client.once('attached', r));
    for (const s of channel.sessions) s.close(1011, 'test: dropped');
    const second = await listed(first);
    await eventually(() => expect(resolves).toBe(2));
    let secondAnswered = false;
    const bug = second.command<unknown>('bug', { bug: null }, 30_000).finally(() => (secondAnswered = true));
    await ticks(10);
    expect(secondAnswered).toBe(false);
    g.open();
    expect(await reattached).toBe(2);
    await expect(bug).resolves.toBe(null);
    expect(dev.device).not.toBe(firstDevice);
    // Commands after attachment run at once.
    await expect(second.command('bug', { bug: null }, 30_000)).resolves.toBe(null);
  });
});
