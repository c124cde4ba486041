/**
 * The compose system for real (`npm run test:containers`, run by .ci/run after the other tests):
 * starts a Docker daemon if none runs, imports a base image made from this machine's Node
 * (no registry is reachable here), builds docker/Dockerfile from a staged host build, validates
 * docker/compose.yaml, brings the stack up, waits for the kernel's health check, checks through the
 * HTTP API that the three external devices are connected and acknowledging invalidations, runs the
 * load generator to completion and checks its report, then tears everything down and stops the
 * daemon it started.
 *
 * Where Docker cannot run, the test says why and skips; under CI=true it fails instead.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';

const ROOT = join(import.meta.dirname, '..', '..');
const has = (cmd: string, args: string[]): boolean => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const dockerInfo = (): boolean => has('docker', ['info']);

/** Why Docker cannot be used here, or null if it can (possibly after starting a daemon). */
function unavailable(): string | null {
  if (!has('docker', ['--version'])) return 'the docker CLI is not installed (apt-get install docker.io)';
  if (!has('docker-compose', ['version'])) return 'docker-compose is not installed (apt-get install docker-compose)';
  if (!dockerInfo() && !has('sh', ['-c', 'command -v dockerd'])) return 'no Docker daemon runs and dockerd is not installed';
  if (!dockerInfo() && process.getuid?.() !== 0) return 'no Docker daemon runs and starting one needs root';
  return null;
}

const reason = unavailable();
if (reason && process.env.CI === 'true') throw new Error(`Docker is required under CI=true: ${reason}`);

// The monitoring profile's Prometheus, from the Debian package (no registry image here). Grafana
// has no Debian package: its provisioning is validated with the compose file only.
const hasPrometheus = has('sh', ['-c', 'command -v prometheus']);
if (!hasPrometheus && process.env.CI === 'true') throw new Error('prometheus is required under CI=true (apt-get install prometheus)');
const PROM_IMAGE = 'devmirror-prometheus:test';

const PROJECT = `devmirror-test-${process.pid}`;
const IMAGE = `devmirror:test-${process.pid}`;
const BASE = 'devmirror-base:test';
const OPS = 60;
let daemon: ChildProcess | null = null;
let reports = '';
let port = 0;

const env = (): NodeJS.ProcessEnv => ({
  ...process.env,
  COMPOSE_FILE: 'docker/compose.yaml',
  COMPOSE_PROJECT_NAME: PROJECT,
  DEVMIRROR_IMAGE: IMAGE,
  NODE_IMAGE: BASE,
  DEVMIRROR_PORT: '0', // an ephemeral host port, read back with `docker-compose port`
  DEVMIRROR_REPORTS: reports,
  LOADGEN_OPS: String(OPS),
  PROMETHEUS_IMAGE: PROM_IMAGE,
  PROMETHEUS_PORT: '0',
  DOCKER_BUILDKIT: '0', // the classic builder: no buildx needed
});
const run = (cmd: string, args: string[], timeout = 300_000): string => execFileSync(cmd, args, { cwd: ROOT, env: env(), encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
const compose = (...args: string[]): string => run('docker-compose', args);

async function startDaemon(): Promise<void> {
  if (dockerInfo()) return;
  // Defaults first; where they fail (no iptables, no overlayfs), the options machine-facts lists.
  for (const extra of [[], ['--iptables=false', '--storage-driver=vfs']]) {
    const d = spawn('dockerd', extra, { stdio: 'ignore', detached: true });
    daemon = d;
    for (let i = 0; i < 60 && d.exitCode === null; i++) {
      if (dockerInfo()) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    d.kill('SIGTERM');
    daemon = null;
  }
  throw new Error('dockerd did not start (with defaults, nor with --iptables=false --storage-driver=vfs)');
}

// The stack's API requires the token its clients use (DEVMIRROR_TOKENS is set: DEVMIRROR_API_AUTH=auto).
const TOKEN = /^DEVMIRROR_TOKEN=(.*)$/m.exec(readFileSync(join(ROOT, 'docker/devmirror.env.example'), 'utf8'))![1].trim();

async function api<T>(path: string, init?: RequestInit): Promise<T> {
  const headers = { ...(init?.headers as Record<string, string> | undefined), authorization: `Bearer ${TOKEN}` };
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers, signal: AbortSignal.timeout(10_000) });
  expect(r.ok, `${path}: HTTP ${r.status}`).toBe(true);
  return (await r.json()) as T;
}

interface Dev {
  name: string;
  kind: string;
  transport: string;
  state: string;
  handshake: Record<string, number>;
}

describe.skipIf(reason !== null)('docker compose: the heterogeneous system in containers', () => {
  beforeAll(async () => {
    await startDaemon();
    reports = mkdtempSync(join(tmpdir(), 'devmirror-reports-'));
    chmodSync(reports, 0o777); // the containers run as uid 1000
    run('scripts/docker-base.sh', [BASE]);
    run('scripts/docker-prebuilt.sh', []);
    run('docker', ['build', '-q', '-f', 'docker/Dockerfile', '--build-arg', `NODE_IMAGE=${BASE}`, '-t', IMAGE, '.'], 600_000);
  }, 900_000);

  afterAll(async () => {
    if (reason) return;
    try {
      compose('--profile', 'monitoring', 'down', '-v', '--remove-orphans', '--timeout', '20');
    } finally {
      spawnSync('docker', ['rmi', '-f', IMAGE, PROM_IMAGE], { stdio: 'ignore' });
      spawnSync('docker', ['image', 'prune', '-f', '--filter', 'label=devmirror.stage=app'], { stdio: 'ignore' });
      if (reports) rmSync(reports, { recursive: true, force: true });
      if (daemon) {
        const d = daemon;
        const exited = new Promise((r) => d.once('exit', r));
        d.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
      }
    }
  }, 120_000);

  it('validates the compose file with docker-compose 1.29 (and compose v2 where installed)', () => {
    compose('config', '-q');
    const config = compose('config');
    for (const s of ['kernel:', 'gpu:', 'rdma:', 'kvm:', 'loadgen:']) expect(config).toContain(s);
    expect(config).toContain('condition: service_healthy');
    if (has('docker', ['compose', 'version'])) run('docker', ['compose', 'config', '-q']);
  });

  it('brings the kernel up healthy with three external devices connected and acknowledging', async () => {
    compose('up', '-d', '--no-build', 'kernel', 'gpu', 'rdma', 'kvm');
    port = Number(compose('port', 'kernel', '8080').trim().split(':').pop());
    expect(port).toBeGreaterThan(0);
    const kernelId = compose('ps', '-q', 'kernel').trim();
    await eventually(() => {
      expect(run('docker', ['inspect', '-f', '{{.State.Health.Status}}', kernelId]).trim()).toBe('healthy');
    }, 120_000, 500);
    const external = async (): Promise<Dev[]> => (await api<{ items: Dev[] }>('/v1/devices')).items.filter((d) => d.transport === 'external');
    await eventually(async () => {
      const ext = await external();
      expect(ext.map((d) => d.kind).sort()).toEqual(['gpu', 'kvm', 'rdma']);
      expect(ext.every((d) => d.state === 'running')).toBe(true);
    }, 120_000, 500);
    // The API refuses a request without the token; the probes and metrics need none.
    expect((await fetch(`http://127.0.0.1:${port}/v1/processes`)).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    // An invalidation of the demo's heap reaches every external device, and each acknowledges it.
    const demo = (await api<{ items: Array<{ pid: number; name: string }> }>('/v1/processes')).items.find((p) => p.name === 'demo')!;
    const heap = (await api<{ items: Array<{ start: number; end: number; name: string | null }> }>(`/v1/processes/${demo.pid}/maps`)).items.find((m) => m.name === 'heap')!;
    const before = new Map((await external()).map((d) => [d.name, d.handshake.acks]));
    await eventually(async () => {
      await api(`/v1/processes/${demo.pid}/madvise`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ addr: heap.start, length: heap.end - heap.start, advice: 'dontneed' }) });
      for (const d of await external()) {
        expect(d.handshake.acks, `${d.name} acknowledged`).toBeGreaterThan(before.get(d.name) ?? 0);
        expect(d.handshake.acks).toBe(d.handshake.starts - (d.handshake.refused ?? 0));
      }
    }, 60_000, 1000);
  }, 300_000);

  it('runs the load generator to completion and writes its report', async () => {
    // Attached: returns when the one-shot loadgen exits; its exit code says whether it failed.
    const r = spawnSync('docker-compose', ['run', '--rm', '--no-deps', 'loadgen'], { cwd: ROOT, env: env(), encoding: 'utf8', timeout: 300_000 });
    expect(r.status, `loadgen exited ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`).toBe(0);
    const report = JSON.parse(readFileSync(join(reports, 'loadgen.json'), 'utf8')) as {
      ops: number;
      errors: Record<string, number>;
      totals: { calls: number; answered: number; findings: number; devicesNotRunning: number };
      devices: Array<{ name: string; kind: string; transport: string; calls: number; answered: number; refused: number }>;
      latency: Array<{ op: string; count: number }>;
    };
    expect(report.ops).toBe(OPS);
    expect(report.errors).toEqual({});
    expect(report.totals.findings).toBe(0);
    expect(report.totals.devicesNotRunning).toBe(0);
    const ext = report.devices.filter((d) => d.transport === 'external');
    expect(ext.map((d) => d.kind).sort()).toEqual(['gpu', 'kvm', 'rdma']);
    // Every call was answered (a start can be in flight at the snapshots: the demo workload runs on).
    for (const d of report.devices) expect(Math.abs(d.calls - d.answered - d.refused), d.name).toBeLessThanOrEqual(2);
    expect(ext.every((d) => d.answered > 0)).toBe(true);
    expect(report.latency.map((l) => l.op).sort()).toEqual(['clear_refs soft-dirty', 'madvise DONTNEED', 'mprotect RO', 'mprotect RW']);
    expect(existsSync(join(reports, 'loadgen.html'))).toBe(true);
    expect(readFileSync(join(reports, 'loadgen.html'), 'utf8')).toContain('<svg');
  }, 300_000);

  it.skipIf(!hasPrometheus)('monitoring profile: Prometheus scrapes the kernel\'s /metrics', async () => {
    run('scripts/docker-prometheus-image.sh', [PROM_IMAGE]);
    compose('--profile', 'monitoring', 'up', '-d', '--no-build', '--no-deps', 'prometheus');
    const promPort = Number(compose('port', 'prometheus', '9090').trim().split(':').pop());
    await eventually(async () => {
      const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=devmirror_devices`, { signal: AbortSignal.timeout(5000) });
      const j = (await r.json()) as { data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
      // The scrape worked: the kernel's per-kind device gauge is there, with its external devices.
      const total = j.data.result.reduce((x, m) => x + Number(m.value[1]), 0);
      expect(total).toBeGreaterThanOrEqual(7); // four demo workers and three external clients
    }, 120_000, 1000);
  }, 300_000);

  it('scales out with unique device names, and the clients re-attach after the kernel restarts', async () => {
    compose('up', '-d', '--no-build', '--scale', 'gpu=2', 'gpu');
    const external = async (): Promise<Dev[]> => (await api<{ items: Dev[] }>('/v1/devices')).items.filter((d) => d.transport === 'external');
    await eventually(async () => {
      const ext = await external();
      expect(ext.filter((d) => d.kind === 'gpu' && d.state === 'running')).toHaveLength(2);
      expect(new Set(ext.map((d) => d.name)).size).toBe(ext.length);
    }, 120_000, 500);
    const boot = (await api<{ bootId: string }>('/healthz')).bootId;
    compose('restart', '--timeout', '20', 'kernel');
    await eventually(async () => {
      // A restarted container may get another ephemeral host port.
      port = Number(compose('port', 'kernel', '8080').trim().split(':').pop());
      expect((await api<{ bootId: string }>('/healthz')).bootId).not.toBe(boot);
      const ext = await external();
      // The new kernel has its own demo process; every client found it by name and attached again.
      expect(ext.filter((d) => d.state === 'running').map((d) => d.kind).sort()).toEqual(['gpu', 'gpu', 'kvm', 'rdma']);
    }, 120_000, 1000);
  }, 300_000);
});

// A visible reason instead of a silent pass.
describe.skipIf(reason === null)('docker compose (unavailable here)', () => {
  it.skip(`skipped: ${reason}`, () => undefined);
});
