#!/usr/bin/env node
/**
 * devmirror command line: `devmirror serve` runs the service (the default command);
 * `devmirror device` runs one device personality as an external client of the notifier channel.
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { loadConfig } from './config.js';
import { DevmirrorError } from './errors.js';
import { buildServer } from './http/server.js';
import { Service } from './service.js';
import { runExternalDevice } from './client/run-device.js';
import { resolveTarget, windowOptions } from './client/resolve.js';
import { hostname } from 'node:os';
import { startDemo, type Demo } from './demo.js';
import { benchMain } from './loadgen/cli.js';
import { replayMain, soakMain } from './soak/cli.js';
import { exploreMain } from './explore/cli.js';
import { conformanceMain } from './conformance/cli.js';
import { triggerMain } from './client/trigger-cli.js';
import { CHANNEL_PATH } from './channel/channel-server.js';
import { traceMain } from './trace/cli.js';
import { DEVICE_KINDS, EVENT_POLICIES, type DeviceKind, type EventPolicy } from './devices/protocol.js';

const USAGE = `usage: devmirror <command>

commands:
  serve        run the kernel service (HTTP API on HOST:PORT); the default
  device       run an external device client until interrupted:
                 --kind gpu|rdma|kvm|dmirror --url ws://HOST:PORT[/v1/notifier/ws]
                 --token T (or DEVMIRROR_TOKEN) (--pid N | --process NAME [--window MAPPING])
                 [--name NAME (default KIND-HOSTNAME)] [--policy faithful|aware|blind]
                 [--options JSON] [--dma JSON (start the DMA engine, e.g. {"rate":1000})]
                 --process and --window are looked up through the kernel's HTTP API at every
                 (re)attachment; --window makes the named mapping the DMA window (and the rdma MR,
                 the kvm memslot)
  bench        load-test invalidation fan-out (options: devmirror bench --help, docs/benchmarks.md)
  soak         chaos soak: every device kind, random syscalls and kernel activity, injected
               faults, checked for lost writes, stale accesses, leaks (devmirror soak --help,
               docs/reliability.md)
  replay FILE  run a soak record again with its seed (how often its problems come back), or an
               explorer reproduction step for step
  explore SCN  run a scenario under many seeded interleavings; shrink and save the first failure
               (devmirror explore --help, docs/explore.md)
  conformance  check a device against the mirror contract (scripted scenarios, pass/fail table):
                 --kind K (--url ws://... | --command "CMD" | --builtin worker|external) [--json]
                 (devmirror conformance --help, docs/conformance.md)
  trigger ORIGIN  produce one invalidation origin on a range and list the invalidations:
               --url http://HOST:PORT [--token T] --pid N --addr A --length L [--node N]
  trace        download a running service's trace for https://ui.perfetto.dev:
                 --url http://HOST:PORT [--token T] [--out FILE] [--pid N] (docs/trace.md)
  help         this text

configuration comes from the environment: see docs/configuration.md`;

async function serve(): Promise<void> {
  const cfg = loadConfig();
  const log = pino({ level: cfg.logLevel, name: 'devmirror' });
  const svc = new Service({
    kernel: {
      memoryBytes: cfg.memoryBytes,
      deviceMemoryBytes: cfg.deviceMemoryBytes,
      swapBytes: cfg.swapBytes,
      numaNodes: cfg.numaNodes,
      maxProcesses: cfg.maxProcesses,
      thp: cfg.thp,
    },
    tokens: cfg.tokens,
    apiAuth: cfg.apiAuth,
    deadlineMs: cfg.ackDeadlineMs,
    progress: { watchdogMs: cfg.progressWatchdogMs, retryBudget: cfg.progressRetryBudget },
    channel: { maxPayload: cfg.channelMaxFrameBytes },
    logger: log,
    traceEvents: cfg.traceEvents,
  });
  const app = await buildServer(svc, { logger: log });
  await app.listen({ host: cfg.host, port: cfg.port });
  await svc.start();
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : cfg.port;
  let demo: Demo | null = null;
  if (cfg.demo) {
    demo = await startDemo(svc);
    log.info({ pid: demo.pid, devices: demo.devices }, 'demo process and devices started (DEVMIRROR_DEMO=0 turns them off)');
  }
  log.info({ bootId: svc.bootId, host: cfg.host, port }, 'devmirror kernel ready');
  process.stdout.write(`devmirror: listening on http://${cfg.host}:${port}/ (health: /healthz)\n`);
  process.stdout.write(`devmirror: dashboard at http://${cfg.host}:${port}/  (API docs /docs, metrics /metrics, notifier channel ws://${cfg.host}:${port}/v1/notifier/ws)\n`);
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const timer = setTimeout(() => process.exit(1), 10_000);
    timer.unref();
    demo?.stop();
    await svc.stop();
    await app.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

async function device(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      kind: { type: 'string' },
      url: { type: 'string' },
      token: { type: 'string' },
      pid: { type: 'string' },
      process: { type: 'string' },
      window: { type: 'string' },
      name: { type: 'string' },
      policy: { type: 'string' },
      options: { type: 'string' },
      dma: { type: 'string' },
    },
    strict: true,
  });
  const bad = (m: string): never => {
    throw new DevmirrorError('DM_ERR_VALIDATION', `${m}\n${USAGE}`);
  };
  if (!values.kind || !DEVICE_KINDS.includes(values.kind as DeviceKind)) bad('--kind must be one of gpu, rdma, kvm, dmirror');
  if (!values.url) bad('--url is required');
  if (values.process === undefined && (!values.pid || !/^\d+$/.test(values.pid))) bad('give --pid N (a process id) or --process NAME');
  if (values.process !== undefined && values.pid !== undefined) bad('give --pid or --process, not both');
  if (values.window !== undefined && values.process === undefined) bad('--window needs --process');
  const policy = values.policy ?? 'faithful';
  if (!EVENT_POLICIES.includes(policy as EventPolicy)) bad('--policy must be faithful, aware or blind');
  const parse = (what: string, j: string | undefined): Record<string, unknown> => {
    if (!j) return {};
    try {
      return JSON.parse(j) as Record<string, unknown>;
    } catch {
      return bad(`${what} is not JSON`);
    }
  };
  const url = new URL(values.url!);
  if (url.pathname === '/' || url.pathname === '') url.pathname = CHANNEL_PATH;
  const log = pino({ level: process.env.LOG_LEVEL ?? 'info', name: 'devmirror-device' });
  const kind = values.kind as DeviceKind;
  const dmaBase = parse('--dma', values.dma);
  // Presented to the channel and, for --process lookups, to an API that requires tokens.
  const token = values.token ?? process.env.DEVMIRROR_TOKEN ?? 'devmirror-local';
  // The DMA window of the current attachment (the named mapping moves when the kernel restarts).
  let dma = dmaBase;
  const resolve = values.process
    ? async (): Promise<{ pid: number; options?: Record<string, unknown> }> => {
        const r = await resolveTarget(url.toString(), values.process!, values.window, token);
        dma = r.window && Object.keys(dmaBase).length ? { start: r.window.start, end: r.window.end, ...dmaBase } : dmaBase;
        return { pid: r.pid, options: r.window ? windowOptions(kind, r.window) : {} };
      }
    : undefined;
  const dev = await runExternalDevice({
    url: url.toString(),
    token,
    kind,
    pid: Number(values.pid ?? 0),
    resolve,
    // Unique per container when scaled out (compose gives every replica its own hostname).
    name: values.name ?? `${kind}-${hostname()}`,
    policy: policy as EventPolicy,
    options: parse('--options', values.options),
    log: (level, msg, data) => log[level]({ ...data }, msg),
  });
  if (Object.keys(dma).length) await dev.host.command('dma', dma);
  dev.client.on('attached', (n: number) => {
    process.stdout.write(`devmirror device: re-attached as client ${dev.client.clientId} (attachment ${n})\n`);
    if (Object.keys(dma).length) void dev.host.command('dma', dma);
  });
  log.info({ clientId: dev.client.clientId, kind, pid: dev.host.pid }, 'device attached');
  process.stdout.write(`devmirror device: ${kind} attached to pid ${dev.host.pid} as client ${dev.client.clientId}\n`);
  const stop = async (): Promise<void> => {
    await dev.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

async function main(argv: string[]): Promise<void> {
  const cmd = argv[0] ?? 'serve';
  switch (cmd) {
    case 'serve':
      return serve();
    case 'device':
      return device(argv.slice(1));
    case 'bench':
      await benchMain(argv.slice(1));
      // benchMain sets exitCode 1 when a load run ends with sanitizer findings.
      process.exit(process.exitCode ?? 0);
    case 'soak':
      process.exit(await soakMain(argv.slice(1)));
    case 'replay':
      process.exit(await replayMain(argv.slice(1)));
    case 'explore':
      process.exit(await exploreMain(argv.slice(1)));
    case 'conformance':
      process.exit(await conformanceMain(argv.slice(1)));
    case 'trigger':
      process.exit(await triggerMain(argv.slice(1)));
    case 'trace':
      await traceMain(argv.slice(1));
      return;
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE + '\n');
      return;
    default:
      process.stderr.write(`devmirror: unknown command "${cmd}"\n${USAGE}\n`);
      process.exit(2);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  const sys = (e as { code?: string }).code;
  if (e instanceof DevmirrorError) process.stderr.write(`devmirror: ${e.code}: ${e.message}\n`);
  else if (sys === 'ECONNREFUSED' || sys === 'ENOTFOUND' || sys === 'EHOSTUNREACH' || sys === 'ETIMEDOUT') {
    // The peer is not there: say so, without a stack.
    process.stderr.write(`devmirror: DM_ERR_UNREACHABLE: ${(e as Error).message}\n`);
  }
  else process.stderr.write(`devmirror: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
