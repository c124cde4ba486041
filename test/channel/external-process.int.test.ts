/**
 * External device clients in their own processes: the personalities run unchanged over the socket
 * (`devmirror device`), a deliberately buggy client written here is caught by the sanitizer, and a
 * client survives a restart of the server by reconnecting and attaching again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { PROT } from '../../src/kernel/kernel.js';
import type { ExternalDevice } from '../../src/channel/external-device.js';
import { startHarness, type Harness } from './helpers.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const RW = PROT.READ | PROT.WRITE;
const root = fileURLToPath(new URL('../../', import.meta.url));
let h: Harness | null = null;
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null) c.kill('SIGKILL');
  }
  await h?.close();
  h = null;
});

function run(script: string, args: string[]): ChildProcess & { out: string[] } {
  const c = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } }) as ChildProcess & { out: string[] };
  c.out = [];
  c.stdout!.on('data', (d: Buffer) => c.out.push(...d.toString().split('\n').filter(Boolean)));
  c.stderr!.on('data', (d: Buffer) => c.out.push(...d.toString().split('\n').filter(Boolean)));
  children.push(c);
  return c;
}

function device(url: string, kind: string, pid: number, extra: string[] = []) {
  return run('src/cli.ts', ['device', '--kind', kind, '--url', url, '--pid', String(pid), '--name', `${kind}-ext`, ...extra]);
}

/** Waits until the CLI says it attached (`line` appears) and returns the server's view of it. */
async function attached(hh: Harness, c: { out: string[] }, name: string, line = 'attached to pid'): Promise<ExternalDevice> {
  let dev: ExternalDevice | undefined;
  await eventually(() => {
    dev = hh.svc.channel.list().find((d) => d.name === name && d.alive);
    return dev !== undefined && c.out.some((l) => l.includes(line));
  }, 30_000, 50);
  return dev!;
}

describe('external device processes', () => {
  it('dmirror runs unchanged in another process: reads through DMA, acknowledges an UNMAP, zero findings', async () => {
    h = await startHarness();
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: RW });
    await k.write(p.pid, a, new Uint8Array(8 * PAGE).fill(0x42));
    const cli = device(`http://127.0.0.1:${h.port}`, 'dmirror', p.pid);
    const dev = await attached(h, cli, 'dmirror-ext');
    const r = await dev.command<{ ret: number; cpages: number; faults: number; data: Uint8Array }>('read', { addr: a, npages: 4 });
    expect(r.cpages).toBe(4);
    // Page data crosses the socket as bytes (command-json), as it does a worker's postMessage.
    expect(r.data).toBeInstanceOf(Uint8Array);
    expect(r.data.length).toBe(4 * PAGE);
    expect(r.data.every((b) => b === 0x42)).toBe(true);
    expect(r.faults).toBe(1);
    await k.munmap(p.pid, a, 8 * PAGE);
    expect(dev.handshake.acks).toBeGreaterThanOrEqual(1);
    expect(dev.sanitizer.stats.checked).toBe(4);
    expect(dev.sanitizer.stats.findings).toBe(0);
  });

  for (const kind of ['gpu', 'rdma', 'kvm'] as const) {
    it(`${kind} runs unchanged in another process: a DMA sweep faults in, an invalidation is acknowledged, zero findings`, async () => {
      h = await startHarness();
      const k = h.svc.kernel;
      const p = k.createProcess('app');
      const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: RW });
      await k.write(p.pid, a, new Uint8Array(16 * PAGE).fill(7));
      const opts = kind === 'rdma' ? { mrs: [{ addr: a, length: 16 * PAGE }] } : kind === 'kvm' ? { memslots: [{ id: 0, baseGfn: 0, npages: 16, hva: a }] } : {};
      const cli = device(`ws://127.0.0.1:${h.port}/v1/notifier/ws`, kind, p.pid, ['--options', JSON.stringify(opts)]);
      const dev = await attached(h, cli, `${kind}-ext`);
      const s = await dev.command<{ ok: number; failed: number; faults: number }>('dma-sweep', { addr: a, npages: 8, write: true });
      expect(s.ok).toBe(8);
      // gpu: one retry fault validates the whole SVM range; kvm: one vCPU fault per page; rdma:
      // registration already mapped every present page (writable VMA), so nothing faults.
      expect(s.faults).toBe({ gpu: 1, kvm: 8, rdma: 0 }[kind]);
      const acks = dev.handshake.acks;
      await k.madvise(p.pid, a, 4 * PAGE, 'dontneed');
      expect(dev.handshake.acks).toBeGreaterThan(acks);
      const again = await dev.command<{ ok: number; faults: number }>('dma-sweep', { addr: a, npages: 8, write: false });
      expect(again.ok).toBe(8);
      expect(again.faults).toBeGreaterThanOrEqual(1); // refaulted what the CLEAR took
      expect(dev.sanitizer.stats.checked).toBe(16);
      expect(dev.sanitizer.stats.findings).toBe(0);
    });
  }

  it('a buggy client process that keeps using a page after acknowledging is caught by the sanitizer', async () => {
    h = await startHarness();
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    const a = await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
    await k.write(p.pid, a, new Uint8Array(4 * PAGE).fill(1));
    const c = run('test/channel/fixtures/buggy-client.ts', [h.url, String(p.pid), String(a)]);
    await eventually(() => c.out.includes('mirrored'), 30_000, 50);
    const dev = h.svc.channel.list().find((d) => d.name === 'buggy-ext')!;
    await k.madvise(p.pid, a, PAGE, 'pageout');
    await eventually(() => c.out.some((l) => l.startsWith('late-dma')), 10_000, 20);
    expect(dev.sanitizer.stats.findings).toBe(1);
    expect(['stale', 'lost-write']).toContain(dev.findings[0].kind);
    expect(c.out).toContain(`late-dma finding=${dev.findings[0].kind}`);
    expect(dev.findings[0].va).toBe(a);
  });

  it('a client reconnects after the server restarts and attaches again under the new boot id', async () => {
    h = await startHarness();
    const port = h.port;
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    await k.mmap(p.pid, { length: 4 * PAGE, prot: RW });
    const cli = device(`ws://127.0.0.1:${port}`, 'kvm', p.pid, ['--options', JSON.stringify({ memslots: [] })]);
    await attached(h, cli, 'kvm-ext');
    const oldBoot = k.bootId;
    await h.close();
    // A new kernel on the same port (its first process gets the same pid).
    h = await startHarness({}, port);
    const k2 = h.svc.kernel;
    const p2 = k2.createProcess('app');
    expect(p2.pid).toBe(p.pid);
    expect(k2.bootId).not.toBe(oldBoot);
    const dev = await attached(h, cli, 'kvm-ext', 're-attached');
    expect(dev.subs.size).toBe(1); // kvm's whole-mm subscription, made again
    expect(dev.subs.values().next().value!.pid).toBe(p2.pid);
  });

  it('after a restart a client that drops its mirror reads correct data with no finding; one that reuses a mapping from the previous boot is caught', async () => {
    h = await startHarness();
    const port = h.port;
    const k = h.svc.kernel;
    const p = k.createProcess('app');
    const a = await k.mmap(p.pid, { length: 8 * PAGE, prot: RW });
    await k.write(p.pid, a, new Uint8Array(8 * PAGE).fill(0x11));
    const good = device(`ws://127.0.0.1:${port}`, 'dmirror', p.pid);
    await attached(h, good, 'dmirror-ext');
    const bad = run('test/channel/fixtures/stale-boot-client.ts', [`ws://127.0.0.1:${port}/v1/notifier/ws`, String(p.pid), String(a)]);
    await eventually(() => bad.out.some((l) => l.startsWith('mirrored')), 30_000, 50);
    const oldBoot = k.bootId;
    await h.close();
    h = await startHarness({}, port);
    const k2 = h.svc.kernel;
    const p2 = k2.createProcess('app');
    expect(p2.pid).toBe(p.pid);
    expect(k2.bootId).not.toBe(oldBoot);
    const a2 = await k2.mmap(p2.pid, { length: 8 * PAGE, prot: RW });
    expect(a2).toBe(a); // the same address, backed by other frames of another boot
    await k2.write(p2.pid, a2, new Uint8Array(8 * PAGE).fill(0x22));
    // The buggy client writes through its old translation: the new kernel's sanitizer catches it.
    await eventually(() => bad.out.some((l) => l.startsWith('stale-boot-dma')), 30_000, 50);
    expect(bad.out).toContain('reconnected bootChanged=true');
    const stale = h.svc.channel.list().find((d) => d.name === 'stale-boot')!;
    expect(stale.findings.length).toBeGreaterThanOrEqual(1);
    expect(['unmapped', 'wrong-pfn', 'stale']).toContain(stale.findings[0].kind);
    expect(stale.findings[0].va).toBe(a);
    // The SDK's device dropped everything and attached again: it reads this boot's data, cleanly.
    const dev = await attached(h, good, 'dmirror-ext', 're-attached');
    const r = await dev.command<{ cpages: number; data: Uint8Array }>('read', { addr: a2, npages: 8 });
    expect(r.cpages).toBe(8);
    expect(r.data.every((b) => b === 0x22)).toBe(true);
    expect(dev.sanitizer.stats.findings).toBe(0);
    expect(dev.sanitizer.stats.checked).toBeGreaterThanOrEqual(8);
  });
});
