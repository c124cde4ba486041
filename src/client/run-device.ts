/**
 * Runs one device personality (gpu, rdma, kvm, dmirror) as an external client of the notifier
 * channel: the same code as a device worker, over a SocketHost. The connection is retried with
 * backoff; after every reconnection (the server dropped this client's subscriptions when the
 * connection ended, and a new boot id means a restarted kernel) the personality is rebuilt and
 * attached again, from an empty mirror.
 */
import { DeviceClient } from './device-client.js';
import { SocketHost } from '../../workers/runtime/socket-host.js';
import { PERSONALITIES } from '../../workers/personalities.js';
import type { Device } from '../../workers/runtime/device.js';
import type { DeviceKind, EventPolicy } from '../devices/protocol.js';
import { DevmirrorError } from '../errors.js';

export interface ExternalDeviceOptions {
  url: string;
  token?: string;
  kind: DeviceKind;
  pid: number;
  /**
   * Called before every attachment (the first and after each reconnection): the pid and options to
   * attach with then, overriding `pid` and `options` (a process found by name gets a new pid when
   * the kernel restarts).
   */
  resolve?: () => Promise<{ pid: number; options?: Record<string, unknown> }>;
  name?: string;
  policy?: EventPolicy;
  options?: Record<string, unknown>;
  /** Stats to the server every this many ms (default 1000). */
  statsMs?: number;
  log?: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>) => void;
}

export interface RunningDevice {
  readonly client: DeviceClient;
  /** The current host and personality (replaced after a reconnection). */
  host: SocketHost;
  device: Device;
  /** Attachments so far (1 + reconnections that re-attached). */
  attachments: number;
  stop(): Promise<void>;
}

export async function runExternalDevice(o: ExternalDeviceOptions): Promise<RunningDevice> {
  const make = PERSONALITIES[o.kind];
  if (!make) throw new DevmirrorError('DM_ERR_VALIDATION', `unknown device kind ${o.kind}`);
  const log = o.log ?? (() => undefined);
  const name = o.name ?? `${o.kind}-ext`;
  const client = new DeviceClient({ url: o.url, token: o.token, name, kind: o.kind, reconnect: true });
  /**
   * Builds after `after` (the connection, for the first build). The server lists this client from
   * its Welcome on: commands sent before the personality has registered its handlers (while the
   * target is resolved, the personality built and attached) wait for it instead of being answered
   * 'unknown command'. The hold is set before `after` settles: a command may follow the Welcome in
   * the same chunk, before any code awaiting the connection runs.
   */
  const build = (after: Promise<unknown> = Promise.resolve()): Promise<{ host: SocketHost; device: Device }> => {
    const built = after.then(buildOnce);
    client.holdCommands(built);
    return built;
  };
  const buildOnce = async (): Promise<{ host: SocketHost; device: Device }> => {
    const r = o.resolve ? await o.resolve() : { pid: o.pid, options: o.options };
    const host = new SocketHost(client, { pid: r.pid, kind: o.kind, name, policy: o.policy ?? 'faithful', options: { ...o.options, ...r.options }, log });
    host.holdCommands();
    const device = make(host);
    host.mirrorSummary = () => device.summary();
    host.dmaStop = () => device.dma.stop();
    try {
      await device.attach();
    } catch (e) {
      // Commands held for this attempt fail as an ended attachment's do (the next attempt follows).
      host.detach();
      host.attached(new DevmirrorError('DM_ERR_CONFLICT', `${name}: this attachment ended (attaching failed: ${(e as Error).message})`));
      throw e;
    }
    host.attached();
    return { host, device };
  };
  const first = await build(client.connect());
  const running: RunningDevice = {
    client,
    host: first.host,
    device: first.device,
    attachments: 1,
    async stop() {
      clearInterval(stats);
      running.device.dma.stop();
      await client.close();
    },
  };
  // After a reconnection: attach again; a restarted server may not have the process yet, so a
  // failed attach is retried (every 500 ms) for as long as this connection lasts.
  let generation = 0;
  const reattach = (gen: number): void => {
    if (gen !== generation || !client.connected) return;
    build().then(
      (b) => {
        running.host = b.host;
        running.device = b.device;
        running.attachments++;
        client.emit('attached', running.attachments);
      },
      (e: Error) => {
        log('warn', 'attach after reconnection failed; retrying', { err: e.message });
        setTimeout(() => reattach(gen), 500).unref();
      },
    );
  };
  client.on('reconnected', ({ bootChanged }: { bootChanged: boolean }) => {
    log('info', 'reconnected: attaching again', { bootChanged });
    // The old personality's requests in flight (a DMA access faulting, deferred work) must not
    // reach the new session with the old session's translations: its host refuses them from now.
    running.host.detach();
    reattach(++generation);
  });
  client.on('fatal', (e: Error) => log('error', e.message));
  const stats = setInterval(() => {
    if (client.connected) running.host.reportStats();
  }, o.statsMs ?? 1000);
  stats.unref();
  return running;
}
