/**
 * The demo of npm start (scenarios/demo.json): four devices of different kinds mirror the demo
 * process, its workload makes them see the common events, and every device stays sanitizer-clean.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Service } from '../src/service.js';
import { loadScenario, startDemo, type Demo } from '../src/demo.js';
import { eventually } from './helpers/eventually.js';

let svc: Service | null = null;
let demo: Demo | null = null;
afterEach(async () => {
  demo?.stop();
  await svc?.stop();
  svc = demo = null;
});

describe('demo scenario', () => {
  it('runs one device of each kind over the demo process; every device sees invalidations, none has findings', async () => {
    svc = new Service({ deadlineMs: 60_000 });
    const sc = loadScenario();
    sc.workload.periodMs = 20; // the same steps, faster
    demo = await startDemo(svc, sc);
    expect(svc.kernel.process('demo').pid).toBe(demo.pid);
    expect(svc.devices.list().map((d) => d.kind).sort()).toEqual(['dmirror', 'gpu', 'kvm', 'rdma']);
    await eventually(() => demo!.steps >= 2 * sc.workload.steps.length, 30_000);
    const events = new Set(svc.events.query({ limit: 10_000 }).items.map((e: { event: string }) => e.event));
    for (const e of ['CLEAR', 'PROTECTION_VMA', 'SOFT_DIRTY']) expect(events, e).toContain(e);
    await eventually(async () => {
      for (const d of svc!.devices.list()) {
        await d.refresh();
        expect(d.state, d.name).toBe('running');
        expect(d.counters.invalidations ?? 0, d.name).toBeGreaterThan(0);
        expect(d.sanitizer.checked, d.name).toBeGreaterThan(0);
      }
    }, 30_000, 200);
    for (const d of svc.devices.list()) expect(d.sanitizer.findings, d.name).toBe(0);
  });
});
