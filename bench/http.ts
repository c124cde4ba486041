/**
 * bench:http — the control plane under load (autocannon), against `devmirror serve` in its own
 * process with the demo: a process `demo` with all four devices attached (gpu, rdma, kvm, dmirror,
 * DMA engines running, the demo's light workload on).
 *
 * 1. mmap + munmap pairs (64 KiB, read/write) in the demo process: each munmap sends UNMAP to the
 *    devices whose subscriptions cover it (kvm's whole-mm subscription always).
 * 2. pagemap reads of 64 pages of the demo's heap.
 *
 * Options: --seconds=10 --connections=8 --json=path
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { machine, table } from './lib/stats.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const SECONDS = Number(args.get('seconds') ?? 10);
const CONNECTIONS = Number(args.get('connections') ?? 8);
const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

interface Run {
  name: string;
  requests: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  p99_9: number;
  max: number;
  non2xx: number;
  errors: number;
}

async function load(name: string, url: string, requests: autocannon.Request[]): Promise<Run> {
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, requests });
  return {
    name,
    requests: r.requests.total,
    rps: Math.round(r.requests.average),
    p50: r.latency.p50,
    p90: r.latency.p90,
    p99: r.latency.p99,
    p99_9: r.latency.p99_9,
    max: r.latency.max,
    non2xx: r.non2xx,
    errors: r.errors,
  };
}

async function main(): Promise<void> {
  const child = spawn(process.execPath, [cli, 'serve'], { env: { ...process.env, PORT: '0', LOG_LEVEL: 'warn', DEVMIRROR_DEMO: '1' }, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on http:\/\/[^:]+:(\d+)\//.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', () => reject(new Error('server exited')));
    });
    const base = `http://127.0.0.1:${port}`;
    const procs = (await (await fetch(`${base}/v1/processes`)).json()) as { items: Array<{ pid: number; name: string }> };
    const pid = procs.items.find((p) => p.name === 'demo')!.pid;
    const maps = (await (await fetch(`${base}/v1/processes/${pid}/maps`)).json()) as { items: Array<{ start: number; end: number }> };
    const heap = maps.items.reduce((a, b) => (b.end - b.start > a.end - a.start ? b : a));
    const devices = (await (await fetch(`${base}/v1/devices`)).json()) as { items: Array<{ kind: string; state: string }> };
    const config = {
      bench: 'http',
      machine: machine(),
      server: 'devmirror serve in its own process, DEVMIRROR_DEMO=1 (demo process, 4 device workers with DMA running, light workload), LOG_LEVEL=warn',
      devices: devices.items.map((d) => `${d.kind}:${d.state}`),
      load: `autocannon in this process, ${CONNECTIONS} connections, ${SECONDS} s per run`,
    };
    console.log(JSON.stringify(config, null, 2));
    const json = { 'content-type': 'application/json' };
    const runs: Run[] = [];
    runs.push(
      await load('mmap + munmap (64 KiB)', base, [
        {
          method: 'POST',
          path: `/v1/processes/${pid}/mmap`,
          headers: json,
          body: JSON.stringify({ length: 65536, prot: ['read', 'write'] }),
          onResponse: (status: number, body: string, context: Record<string, unknown>) => {
            if (status === 201 || status === 200) context.addr = JSON.parse(body).addr;
          },
        },
        {
          method: 'POST',
          path: `/v1/processes/${pid}/munmap`,
          headers: json,
          setupRequest: (req: autocannon.Request, context: Record<string, unknown>) => ({ ...req, body: JSON.stringify({ addr: context.addr, length: 65536 }) }),
        },
      ] as autocannon.Request[]),
    );
    runs.push(await load('pagemap, 64 pages', base, [{ method: 'GET', path: `/v1/processes/${pid}/pagemap?addr=${heap.start}&pages=64` }]));
    const after = (await (await fetch(`${base}/v1/devices`)).json()) as { items: Array<{ name: string; state: string; sanitizer: { checked: number; findings: number } }> };
    console.log(
      '\n' +
        table(
          runs.map((r) => ({
            run: r.name,
            requests: r.requests,
            'req/s': r.rps.toLocaleString('en-US'),
            p50: `${r.p50} ms`,
            p90: `${r.p90} ms`,
            p99: `${r.p99} ms`,
            p99_9: `${r.p99_9} ms`,
            max: `${r.max} ms`,
            non2xx: r.non2xx,
            errors: r.errors,
          })),
        ),
    );
    console.log('\ndevices after the load: ' + after.items.map((d) => `${d.name} ${d.state} checked=${d.sanitizer.checked} findings=${d.sanitizer.findings}`).join('; '));
    const out = args.get('json');
    if (out) writeFileSync(out, JSON.stringify({ config, runs, devices: after.items }, null, 2));
  } finally {
    child.kill('SIGINT');
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
