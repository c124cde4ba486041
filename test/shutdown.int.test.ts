/**
 * Graceful shutdown of `devmirror serve` on SIGINT/SIGTERM: with the demo's four device workers and
 * an external client connected, the process closes the client (1001), stops the workers and exits 0
 * within the bounded delay.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DeviceClient } from '../src/client/device-client.js';

const root = fileURLToPath(new URL('../', import.meta.url));

describe('graceful shutdown', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`exits 0 on ${signal}, closing external clients with 1001`, async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], { cwd: root, env: { ...process.env, PORT: '0', LOG_LEVEL: 'warn', DEVMIRROR_DEMO: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
      const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      try {
        const port = await new Promise<number>((resolve, reject) => {
          let out = '';
          child.stdout!.on('data', (d: Buffer) => {
            out += d.toString();
            const m = /listening on http:\/\/[^:]+:(\d+)\//.exec(out);
            if (m) resolve(Number(m[1]));
          });
          child.once('exit', () => reject(new Error(`exited early: ${out}`)));
        });
        const c = new DeviceClient({ url: `ws://127.0.0.1:${port}/v1/notifier/ws`, token: 'devmirror-local' });
        const w = await c.connect();
        await c.subscribeMm({ pid: w.pids[0] });
        const closed = new Promise<number>((r) => c.once('close', (code: number) => r(code)));
        const t0 = Date.now();
        child.kill(signal);
        expect(await closed).toBe(1001);
        expect(await exit).toBe(0);
        expect(Date.now() - t0).toBeLessThan(10_000); // the service's own bound is 10 s
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  }
});
