/**
 * The compose monitoring profile's files, checked against the service: Prometheus scrapes the
 * kernel's /metrics, and every Grafana panel queries the provisioned datasource and only metrics
 * the kernel exports. (The container test scrapes for real with Prometheus; Grafana has no Debian
 * package and no registry image can be pulled here, so its dashboard is checked this way.)
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { PROT } from '../../src/kernel/kernel.js';

const svc = new Service({ kernel: { memoryBytes: 32 * 1024 * 1024 }, deadlineMs: 60_000 });
afterAll(() => svc.stop());

describe('monitoring profile', () => {
  it('Prometheus scrapes the kernel service\'s /metrics', () => {
    const y = readFileSync('docker/prometheus/prometheus.yml', 'utf8');
    expect(y).toMatch(/metrics_path:\s*\/metrics/);
    expect(y).toMatch(/targets:\s*\["kernel:8080"\]/);
    const compose = readFileSync('docker/compose.yaml', 'utf8');
    expect(compose).toMatch(/prometheus:[\s\S]*profiles: \["monitoring"\]/);
    expect(compose).toMatch(/grafana:[\s\S]*profiles: \["monitoring"\]/);
  });

  it('every Grafana panel queries the provisioned datasource and metrics the kernel exports', async () => {
    const app = await buildServer(svc, { logger: false });
    try {
      // Something to export: a device, an invalidation.
      const k = svc.kernel;
      const p = k.createProcess('mon');
      const a = await k.mmap(p.pid, { length: 4 * 4096, prot: PROT.READ | PROT.WRITE, populate: true });
      const dev = await svc.devices.create({ kind: 'dmirror', pid: p.pid });
      await dev.command('read', { addr: a, npages: 4 });
      await k.munmap(p.pid, a, 4 * 4096);
      const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      const exported = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
      const uid = /uid:\s*(\S+)/.exec(readFileSync('docker/grafana/provisioning/datasources/prometheus.yml', 'utf8'))![1];
      const provider = readFileSync('docker/grafana/provisioning/dashboards/devmirror.yml', 'utf8');
      expect(provider).toContain('path: /var/lib/grafana/dashboards');
      const dash = JSON.parse(readFileSync('docker/grafana/dashboards/devmirror.json', 'utf8')) as {
        uid: string;
        panels: Array<{ title: string; datasource: { uid: string }; targets: Array<{ expr: string }> }>;
      };
      expect(dash.panels.length).toBeGreaterThan(5);
      const used = new Set<string>();
      for (const panel of dash.panels) {
        expect(panel.datasource.uid, panel.title).toBe(uid);
        expect(panel.targets.length, panel.title).toBeGreaterThan(0);
        for (const t of panel.targets) {
          for (const m of t.expr.matchAll(/devmirror_[a-z_]+/g)) {
            const base = m[0].replace(/_(bucket|sum|count)$/, '');
            expect(exported.has(base), `${panel.title}: ${m[0]} is not exported`).toBe(true);
            used.add(base);
          }
        }
      }
      // The headline series are on the dashboard.
      for (const m of ['devmirror_invalidations_total', 'devmirror_invalidation_seconds', 'devmirror_sanitizer_findings']) expect(used).toContain(m);
    } finally {
      await app.close();
    }
  });
});
