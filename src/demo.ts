/**
 * The default demo of `npm start` (scenarios/demo.json; DEVMIRROR_DEMO=0 turns it off): a process
 * named `demo`, one device of each kind mirroring it with its DMA engine running, and a light
 * background workload (writes, madvise, mprotect toggles, clear_refs, pageout) so that every device
 * sees the common events. The workload runs one step per period, in order, round robin.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DevmirrorError } from './errors.js';
import { PROT } from './kernel/vma.js';
import type { Service } from './service.js';
import type { DeviceKind, EventPolicy } from './devices/protocol.js';

const PAGE = 4096;

export interface Scenario {
  process: string;
  mappings: Array<{ name: string; length: number; prot: Array<'read' | 'write' | 'exec'>; populate?: boolean }>;
  devices: Array<{
    kind: DeviceKind;
    name: string;
    policy?: EventPolicy;
    window: string;
    mr?: string;
    memslot?: string;
    dma?: Record<string, unknown>;
  }>;
  workload: {
    periodMs: number;
    steps: Array<{ op: 'write' | 'madvise' | 'mprotect-toggle' | 'clear_refs'; mapping?: string; pages?: number; advice?: string; mode?: string }>;
  };
}

export function loadScenario(path?: string): Scenario {
  const file = path ?? fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../scenarios/demo.json' : '../scenarios/demo.json', import.meta.url));
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Scenario;
  } catch (e) {
    throw new DevmirrorError('DM_ERR_CONFIG', `cannot read the demo scenario ${file}: ${(e as Error).message}`);
  }
}

export interface Demo {
  pid: number;
  devices: number[];
  steps: number;
  stop(): void;
}

const protBits = (names: readonly string[]): number =>
  names.reduce<number>((p, n) => p | (n === 'read' ? PROT.READ : n === 'write' ? PROT.WRITE : n === 'exec' ? PROT.EXEC : 0), PROT.NONE);

export async function startDemo(svc: Service, sc: Scenario = loadScenario()): Promise<Demo> {
  const k = svc.kernel;
  const p = k.createProcess(sc.process);
  const maps = new Map<string, { addr: number; length: number; prot: number }>();
  for (const m of sc.mappings) {
    const prot = protBits(m.prot);
    const addr = await k.mmap(p.pid, { length: m.length, prot, populate: m.populate ?? false, name: m.name });
    maps.set(m.name, { addr, length: m.length, prot });
  }
  const map = (name?: string) => {
    const m = maps.get(name ?? '');
    if (!m) throw new DevmirrorError('DM_ERR_CONFIG', `scenario: no mapping named ${name}`);
    return m;
  };
  const ids: number[] = [];
  for (const d of sc.devices) {
    const w = map(d.window);
    const options: Record<string, unknown> = {};
    if (d.mr) options.mrs = [{ addr: map(d.mr).addr, length: map(d.mr).length }];
    if (d.memslot) options.memslots = [{ id: 0, baseGfn: 0x100000, npages: map(d.memslot).length / PAGE, hva: map(d.memslot).addr }];
    const dev = await svc.devices.create({ kind: d.kind, name: d.name, pid: p.pid, policy: d.policy, options });
    if (d.dma) await dev.command('dma', { ...d.dma, start: w.addr, end: w.addr + w.length }, 10_000);
    ids.push(dev.id);
  }
  let step = 0;
  let busy = false;
  let stopped = false;
  const rnd = (m: { addr: number; length: number }, pages: number) => m.addr + Math.floor(Math.random() * (m.length / PAGE - pages + 1)) * PAGE;
  const run = async (): Promise<void> => {
    const s = sc.workload.steps[step++ % sc.workload.steps.length];
    switch (s.op) {
      case 'write': {
        const m = map(s.mapping);
        const n = s.pages ?? 1;
        await k.write(p.pid, rnd(m, n), new Uint8Array(n * PAGE).fill(step & 0xff));
        break;
      }
      case 'madvise': {
        const m = map(s.mapping);
        const n = s.pages ?? 1;
        await k.madvise(p.pid, rnd(m, n), n * PAGE, (s.advice ?? 'dontneed') as never);
        break;
      }
      case 'mprotect-toggle': {
        const m = map(s.mapping);
        const n = s.pages ?? 1;
        const a = rnd(m, n);
        await k.mprotect(p.pid, a, n * PAGE, m.prot & ~PROT.WRITE);
        await k.mprotect(p.pid, a, n * PAGE, m.prot);
        break;
      }
      case 'clear_refs':
        await k.clearRefs(p.pid, (s.mode ?? 'soft-dirty') as never);
        break;
    }
  };
  const timer = setInterval(() => {
    if (busy || stopped || p.mm.exiting) return;
    busy = true;
    run()
      .catch(() => undefined) // a step may race a device fault or eviction: the next one goes on
      .finally(() => (busy = false));
  }, sc.workload.periodMs);
  timer.unref();
  return {
    pid: p.pid,
    devices: ids,
    get steps() {
      return step;
    },
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
