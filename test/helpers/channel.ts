/**
 * A bare notifier channel for a kernel (no control plane): a ChannelServer on a plain HTTP server
 * listening on an ephemeral loopback port. Its shutdown is pushed onto `cleanup` (run in reverse:
 * the channel closes before the HTTP server).
 */
import { createServer } from 'node:http';
import type { Kernel } from '../../src/kernel/kernel.js';
import { ChannelServer, CHANNEL_PATH } from '../../src/channel/channel-server.js';

export async function openChannel(k: Kernel, cleanup: Array<() => Promise<void>>): Promise<{ channel: ChannelServer; url: string }> {
  const channel = new ChannelServer(k, { limits: { deadlineMs: 60_000 } });
  const http = createServer((_req, res) => res.writeHead(404).end());
  channel.attach(http);
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  cleanup.push(() => new Promise<void>((r) => http.close(() => r())));
  cleanup.push(() => channel.close());
  return { channel, url: `ws://127.0.0.1:${(http.address() as { port: number }).port}${CHANNEL_PATH}` };
}
