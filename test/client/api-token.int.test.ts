/**
 * The command-line clients against a service whose API requires tokens (issue #8): name lookups
 * (`devmirror device --process/--window`), `devmirror bench --target`, and the `devmirror device`
 * command itself, each with its token (--token or DEVMIRROR_TOKEN) and refused without it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { PROT } from '../../src/kernel/kernel.js';
import { resolveTarget } from '../../src/client/resolve.js';
import { apiRequest } from '../../src/client/api.js';
import { runRemote, type RemoteOptions } from '../../src/loadgen/remote.js';
import { parseBenchArgs } from '../../src/loadgen/cli.js';
import { eventually } from '../helpers/eventually.js';

const TOKEN = 'cli-client-token';
let svc: Service;
let close: () => Promise<void>;
let http = '';
let ws = '';
let pid = 0;
let heap = 0;

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024 }, deadlineMs: 60_000, tokens: `${TOKEN}=target;other-token-1=*` });
  const app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  await svc.start();
  close = () => app.close();
  const port = (app.server.address() as { port: number }).port;
  http = `http://127.0.0.1:${port}`;
  ws = `ws://127.0.0.1:${port}/v1/notifier/ws`;
  const k = svc.kernel;
  pid = k.createProcess('target').pid;
  heap = await k.mmap(pid, { length: 64 * 4096, prot: PROT.READ | PROT.WRITE, populate: true, name: 'heap' });
  k.createProcess('not-granted');
  const dev = await svc.devices.create({ kind: 'dmirror', pid });
  await dev.command('read', { addr: heap, npages: 64 });
});
afterAll(async () => {
  await svc.stop();
  await close();
});

describe('command-line clients and API tokens', () => {
  it('apiRequest sends the token; a refusal says how to give one', async () => {
    await expect(apiRequest(http, 'GET', '/v1/processes')).rejects.toMatchObject({ code: 'DM_ERR_UNAUTHORIZED', message: expect.stringContaining('--token') });
    const r = await apiRequest<{ items: Array<{ name: string }> }>({ base: http, token: TOKEN }, 'GET', '/v1/processes');
    expect(r.items.map((p) => p.name)).toEqual(['target']);
  });

  it('name lookups (devmirror device --process/--window) use the token', async () => {
    await expect(resolveTarget(ws, 'target', 'heap')).rejects.toMatchObject({ code: 'DM_ERR_UNAUTHORIZED' });
    expect(await resolveTarget(ws, 'target', 'heap', TOKEN)).toEqual({ pid, window: { start: heap, end: heap + 64 * 4096 } });
    // A process the token does not grant is not found (it is not listed).
    await expect(resolveTarget(ws, 'not-granted', undefined, TOKEN)).rejects.toMatchObject({ code: 'DM_ERR_NO_SUCH_PROCESS' });
  });

  it('bench --target loads the service with the token, and keeps it out of its report', async () => {
    const o: RemoteOptions = { target: http, process: 'target', window: 'heap', workload: 'mixed', ops: 12, rangePages: 4, areaPages: 16, seed: 1, concurrency: 2 };
    await expect(runRemote(o)).rejects.toMatchObject({ code: 'DM_ERR_UNAUTHORIZED' });
    const r = await runRemote({ ...o, token: TOKEN });
    expect(r.ops).toBe(12);
    expect(r.errors).toEqual({});
    expect(r.devices.some((d) => d.kind === 'dmirror' && d.calls > 0)).toBe(true);
    expect(JSON.stringify(r)).not.toContain(TOKEN);
    // --token, or DEVMIRROR_TOKEN.
    expect(parseBenchArgs(['--target', http, '--process', 'target', '--token', TOKEN]).remote?.token).toBe(TOKEN);
    const saved = process.env.DEVMIRROR_TOKEN;
    process.env.DEVMIRROR_TOKEN = 'from-env-token';
    try {
      expect(parseBenchArgs(['--target', http, '--process', 'target']).remote?.token).toBe('from-env-token');
    } finally {
      if (saved === undefined) delete process.env.DEVMIRROR_TOKEN;
      else process.env.DEVMIRROR_TOKEN = saved;
    }
    expect(() => parseBenchArgs(['--token', TOKEN])).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
  });

  it('devmirror device --process --window attaches with --token through the API lookups and the channel', async () => {
    let child: ChildProcess | null = null;
    let out = '';
    try {
      const root = join(import.meta.dirname, '..', '..');
      child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/cli.ts'), 'device', '--kind', 'dmirror', '--url', ws.replace('/v1/notifier/ws', ''), '--token', TOKEN, '--process', 'target', '--window', 'heap', '--name', 'cli-dev'], {
        cwd: root,
        env: { ...process.env, LOG_LEVEL: 'silent', DEVMIRROR_TOKEN: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      await eventually(() => expect(out).toContain(`attached to pid ${pid}`), 60_000, 100);
      const dev = svc.channel.list().find((d) => d.name === 'cli-dev');
      expect(dev?.state).toBe('running');
      expect(dev?.grant?.token).toBe(TOKEN);
    } finally {
      child?.kill('SIGTERM');
      if (child && child.exitCode === null) await new Promise((r) => child!.once('exit', r));
    }
  }, 90_000);
});
