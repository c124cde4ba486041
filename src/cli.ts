#!/usr/bin/env node
/**
 * devmirror command line: `devmirror serve` runs the service (the default command).
 */
import { pino } from 'pino';
import { loadConfig } from './config.js';
import { DevmirrorError } from './errors.js';
import { buildServer } from './http/server.js';
import { Service } from './service.js';

const USAGE = `usage: devmirror <command>

commands:
  serve        run the kernel service (HTTP API on HOST:PORT); the default
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
    deadlineMs: cfg.ackDeadlineMs,
    channel: { maxPayload: cfg.channelMaxFrameBytes },
    log: (level, msg, data) => log[level]({ ...data }, msg),
  });
  const app = await buildServer(svc, { logger: log });
  await app.listen({ host: cfg.host, port: cfg.port });
  await svc.start();
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : cfg.port;
  log.info({ bootId: svc.bootId, host: cfg.host, port }, 'devmirror kernel ready');
  process.stdout.write(`devmirror: listening on http://${cfg.host}:${port}/ (health: /healthz)\n`);
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const timer = setTimeout(() => process.exit(1), 10_000);
    timer.unref();
    await svc.stop();
    await app.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

async function main(argv: string[]): Promise<void> {
  const cmd = argv[0] ?? 'serve';
  switch (cmd) {
    case 'serve':
      return serve();
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
  if (e instanceof DevmirrorError) process.stderr.write(`devmirror: ${e.code}: ${e.message}\n`);
  else process.stderr.write(`devmirror: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
