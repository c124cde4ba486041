import type { FastifyInstance } from 'fastify';
import { Service, type ServiceOptions } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { DeviceClient, type DeviceClientOptions } from '../../src/client/device-client.js';

export interface Harness {
  svc: Service;
  app: FastifyInstance;
  url: string;
  port: number;
  clients: DeviceClient[];
  client(o?: Partial<DeviceClientOptions>): DeviceClient;
  close(): Promise<void>;
}

/** A service with its HTTP server on an ephemeral port; always close it. */
export async function startHarness(opts: ServiceOptions = {}, port0 = 0): Promise<Harness> {
  const svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 }, ...opts });
  const app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: port0 });
  await svc.start();
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const url = `ws://127.0.0.1:${port}/v1/notifier/ws`;
  const clients: DeviceClient[] = [];
  return {
    svc,
    app,
    url,
    port,
    clients,
    client(o = {}) {
      const c = new DeviceClient({ url, token: 'devmirror-local', kind: 'test', ...o });
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) await c.close().catch(() => undefined);
      await svc.stop();
      await app.close();
    },
  };
}

/** Resolves when the client's socket closes, with the close code. */
export function closed(c: DeviceClient): Promise<{ code: number; reason: string }> {
  return new Promise((r) => c.once('close', (code: number, reason: string) => r({ code, reason })));
}
