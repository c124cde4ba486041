/**
 * An external personality's commands wait until it has attached (run-device holds them): after a
 * reconnection the server may send a command as soon as the new session is welcomed, and the
 * personality must not run it with its subscription and mirror half built.
 */
import { describe, expect, it } from 'vitest';
import { SocketHost } from '../../workers/runtime/socket-host.js';
import type { DeviceClient } from '../../src/client/device-client.js';

function fakeClient(): { client: DeviceClient; handlers: Map<string, (args: Record<string, unknown>) => unknown> } {
  const handlers = new Map<string, (args: Record<string, unknown>) => unknown>();
  const noop = (): void => undefined;
  const client = { onInvalidateStart: noop, onInvalidateEnd: noop, onRelease: noop, onYoung: noop, onCommand: (n: string, h: (a: Record<string, unknown>) => unknown) => handlers.set(n, h), clientId: 7 };
  return { client: client as unknown as DeviceClient, handlers };
}

const settled = async (p: Promise<unknown>): Promise<boolean> => {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  return done;
};

describe('SocketHost command hold', () => {
  it('runs a held command only once the personality has attached', async () => {
    const { client, handlers } = fakeClient();
    const host = new SocketHost(client, { pid: 1, kind: 'dmirror', name: 'd', policy: 'faithful', options: {} });
    host.holdCommands();
    let ran = 0;
    host.onCommand('read', () => ++ran);
    const p = Promise.resolve(handlers.get('read')!({}));
    expect(await settled(p)).toBe(false);
    expect(ran).toBe(0);
    host.attached();
    await expect(p).resolves.toBe(1);
    // Later commands run at once.
    await expect(Promise.resolve(handlers.get('read')!({}))).resolves.toBe(2);
  });

  it('fails held and later commands with the attach error, and runs commands at once without a hold', async () => {
    const { client, handlers } = fakeClient();
    const host = new SocketHost(client, { pid: 1, kind: 'dmirror', name: 'd', policy: 'faithful', options: {} });
    host.holdCommands();
    host.onCommand('read', () => 'ran');
    const p = Promise.resolve(handlers.get('read')!({}));
    host.attached(new Error('d: this attachment ended (attaching failed: no such process)'));
    await expect(p).rejects.toThrow(/attachment ended/);
    await expect(Promise.resolve(handlers.get('read')!({}))).rejects.toThrow(/attachment ended/);

    const other = fakeClient();
    const free = new SocketHost(other.client, { pid: 1, kind: 'dmirror', name: 'e', policy: 'faithful', options: {} });
    free.onCommand('read', () => 'ran');
    await expect(Promise.resolve(other.handlers.get('read')!({}))).resolves.toBe('ran');
  });
});
