/**
 * devmirror conformance as a command: exit codes (0 pass, 1 fail, 2 usage), the --json document,
 * --command launching `node dist/src/cli.js device ...`, and --url against a device attached to a
 * running service. Runs the compiled CLI (`npm run build` first).
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, type Harness } from '../channel/helpers.js';

const CLI = 'dist/src/cli.js';

function run(args: string[], timeoutMs = 150_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'conformance', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('devmirror conformance (CLI)', () => {
  it('exits 2 on usage errors', async () => {
    for (const args of [[], ['--kind', 'tpu'], ['--kind', 'gpu', '--builtin', 'thread'], ['--kind', 'gpu', '--bug', 'be-wrong'], ['--kind', 'gpu', '--only', 'nope'], ['--kind', 'gpu', '--url', 'ws://x:1', '--builtin', 'worker']]) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain('DM_ERR_VALIDATION');
    }
  });

  it('exits 0 and prints the --json document when the checks pass', async () => {
    const r = await run(['--kind', 'dmirror', '--only', 'soft-dirty,event:CLEAR', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ passed: true, kind: 'dmirror', mode: 'builtin-worker', transport: 'worker', bug: null });
    expect(j.checks.map((c: { id: string }) => c.id)).toEqual(['soft-dirty', 'event:CLEAR']);
    for (const c of j.checks) {
      expect(Object.keys(c).sort()).toEqual(['attempts', 'evidence', 'id', 'ms', 'result', 'title']);
      expect(c.result).toBe('pass');
    }
  });

  it('exits 1 with a table naming the failed check and its evidence', async () => {
    const r = await run(['--kind', 'gpu', '--bug', 'ignore-event:SOFT_DIRTY', '--only', 'soft-dirty']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/soft-dirty\s+FAIL\s+finding write-ro va=0x[0-9a-f]+ pfn=\d+/);
    expect(r.stdout).toContain('FAIL: 0 passed, 1 failed');
  });

  it('--command launches a client process with the service address and checks it', async () => {
    const cmd = `${JSON.stringify(process.execPath)} ${CLI} device --kind rdma --url {url} --token {token} --process {process} --window {window} --name cmd-rdma`;
    const r = await run(['--kind', 'rdma', '--command', cmd, '--only', 'window,event:CLEAR,reconnect,restart', '--json']);
    const j = JSON.parse(r.stdout);
    expect(j.checks.map((c: { result: string }) => c.result), r.stdout).toEqual(['pass', 'pass', 'pass', 'pass']);
    // The restart: a new boot id, the same pid (a fresh kernel's first process), a new session.
    expect(j.checks[3].evidence).toMatch(/kernel restarted \(boot \d+ -> \d+, pid (\d+) -> \1\); reattached as device #\d+/);
    expect(j).toMatchObject({ passed: true, mode: 'command', transport: 'external' });
    expect(r.code).toBe(0);
  });

  it('--command fails with DM_ERR_ATTACH_TIMEOUT when the client exits without attaching', async () => {
    const r = await run(['--kind', 'gpu', '--command', `${JSON.stringify(process.execPath)} -e "process.exit(3)"`, '--attach-ms', '5000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('DM_ERR_ATTACH_TIMEOUT');
  });

  describe('--url against a running service', () => {
    let h: Harness;
    beforeAll(async () => {
      h = await startHarness();
      const p = await h.svc.kernel.createProcess('app');
      await h.svc.kernel.mmap(p.pid, { length: 32 * 4096, prot: 3, populate: true, name: 'buf' });
      await h.svc.devices.create({ kind: 'gpu', name: 'gpu-under-test', pid: p.pid });
    });
    afterAll(async () => {
      await h?.close();
    });

    it('finds the device by kind, drives it through the API, and passes', async () => {
      const r = await run(['--kind', 'gpu', '--url', h.url, '--window', 'buf', '--skip', 'release,read-retry', '--json']);
      const j = JSON.parse(r.stdout);
      expect(j.checks.filter((c: { result: string }) => c.result === 'fail'), r.stdout).toEqual([]);
      expect(j).toMatchObject({ passed: true, mode: 'url', transport: 'worker', device: { name: 'gpu-under-test' }, window: { name: 'buf' } });
      expect(r.code).toBe(0);
    });

    it('names no device when none of the kind is attached', async () => {
      const r = await run(['--kind', 'kvm', '--url', h.url]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('DM_ERR_NO_SUCH_DEVICE');
    });
  });
});
